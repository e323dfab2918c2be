"""Live staffing inputs from a queue's windows: hand-computed through the real model, and unknown
below the minimum counts."""

from dataclasses import replace

import pytest

from callpulse.config import load_config
from callpulse.model import QueueModel
from callpulse.staffing import MIN_ABANDONED, live_inputs

from helpers import call, epoch, event

T0 = epoch("2026-11-23T09:00:00Z")


def fed(events):
    cfg = replace(load_config(None, {}).queue("sales"))
    m = QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(10, 20))
    for e in sorted(events, key=lambda e: e["time"]):
        m.apply(e, epoch(e["time"]))
    return m


def test_inputs_hand_computed_from_the_windows():
    evs = []
    for n in range(6):  # six answered calls, one a minute: wait 10 s, talk 170 s, wrap-up 20 s
        t = T0 + 60 * n
        evs += call("sales", f"a{n}", t, "answered", t + 10, agent=f"ag{n}")
        evs.append(event("call.ended", t + 180, queue="sales", call_id=f"a{n}", agent_id=f"ag{n}"))
        evs.append(event("call.wrapup_ended", t + 200, queue="sales", call_id=f"a{n}", agent_id=f"ag{n}"))
    for n in range(MIN_ABANDONED):  # five callers hang up after 30 s
        t = T0 + 30 + 60 * n
        evs += call("sales", f"b{n}", t, "abandoned", t + 30)
    m = fed(evs)
    inputs = live_inputs(m.read(T0 + 600)["windows"])
    assert inputs.rate == pytest.approx(11 / 900)  # 11 offered in the 15m window
    assert inputs.aht == pytest.approx(170 + 20)  # talk 170 s + wrap-up 20 s, no hold
    # patience: waits 6 x 10 s + 5 x 30 s = 210 s over 5 abandons
    assert inputs.patience == pytest.approx(210 / 5)


def test_too_few_observations_are_unknown_not_made_up():
    m = fed(call("sales", "a", T0, "answered", T0 + 5) + call("sales", "b", T0 + 10, "abandoned", T0 + 20))
    inputs = live_inputs(m.read(T0 + 60)["windows"])
    assert inputs == type(inputs)(rate=None, aht=None, patience=None)
