"""Live staffing inputs from a queue's windows: hand-computed through the real model, and unknown
below the minimum counts."""

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callpulse.config import load_config
from callpulse.kpi.model import QueueModel
from callpulse.kpi.staffing import MIN_ABANDONED, live_inputs
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


def test_staffing_view_is_the_erlang_answer_for_the_live_inputs_and_staffing():
    from callpulse.kpi.erlang import agents_required, erlang_a, erlang_c
    from callpulse.kpi.staffing import staffing_view

    windows = {
        "15m": {"offered": 90, "handled": 0, "abandoned": 0, "seconds": {}},
        "1h": {"offered": 360, "handled": 300, "abandoned": 20,
               "seconds": {"talk_seconds": 300 * 150, "hold_seconds": 300 * 10, "wrapup_seconds": 300 * 20,
                           "answer_wait_seconds": 300 * 12.0, "abandon_wait_seconds": 20 * 40.0}},
    }
    agents = {"available": 2, "on_call": 15, "wrap_up": 3, "not_ready": 4}
    view = staffing_view(windows, agents, {"20": 0.8, "60": 0.9})
    rate, aht, patience = 90 / 900, 180.0, (300 * 12.0 + 20 * 40.0) / 20
    assert view["inputs"] == {"arrivals_per_second": rate, "handle_seconds": aht, "patience_seconds": patience}
    assert view["staffed"] == 20  # not_ready does not count
    c, a = view["models"]["erlang_c"], view["models"]["erlang_a"]
    assert c["required"]["20"] == agents_required(rate, aht, 20, 0.8).agents == 22
    assert a["required"]["20"] == agents_required(rate, aht, 20, 0.8, patience=patience).agents
    assert a["required"]["20"] <= c["required"]["20"]  # callers who hang up lower the need
    assert c["gap"]["20"] == 22 - 20
    assert c["projected_service_level"]["60"] == pytest.approx(erlang_c(rate, aht, 20, 60).service_level)
    assert a["projected_abandon_ratio"] == pytest.approx(erlang_a(rate, aht, 20, 20, patience).abandon_probability)
    # 18 staffed cannot carry 18 Erlangs without abandonment: Erlang C has no projection then
    tight = staffing_view(windows, {"available": 0, "on_call": 18, "wrap_up": 0}, {"20": 0.8})
    assert tight["models"]["erlang_c"]["projected_service_level"] == {}
    assert tight["models"]["erlang_a"]["projected_service_level"]["20"] < 0.8


def test_exported_as_gauges_with_a_model_label():
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from callpulse.export.metrics import PipelineHealth, QueueCollector
    from callpulse.pipeline.state import QueueStates

    cfg = load_config(None, {})
    states = QueueStates(cfg)
    evs = [event("agent.state_changed", T0, agent_id=f"ag{n}", queues=["sales"], state="available") for n in range(3)]
    for n in range(8):
        t = T0 + 60 * n
        evs += call("sales", f"a{n}", t, "answered", t + 10, agent="ag0")
        evs.append(event("call.ended", t + 100, queue="sales", call_id=f"a{n}", agent_id="ag0"))
    import orjson
    states.apply_batch("sales", 0, 0, [orjson.dumps(e) for e in sorted(evs, key=lambda e: e["time"])])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(states, PipelineHealth(frozenset())))
    text = generate_latest(registry).decode()
    assert 'callcenter_agents_required{model="erlang_c",queue="sales",threshold="20"}' in text
    assert 'callcenter_agents_staffed{queue="sales"}' in text
    assert "callcenter_staffing_patience_seconds" not in text.replace("# HELP callcenter_staffing_patience_seconds", "").replace("# TYPE callcenter_staffing_patience_seconds", "")  # no abandons: unknown
    assert 'callcenter_agents_required{model="erlang_a"' not in text  # needs the patience
    from prometheus_client.parser import text_string_to_metric_families
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    view = states.read_all()[1]["sales"]["staffing"]
    sales = (("queue", "sales"),)
    assert samples[("callcenter_agents_short", sales)] == view["agents_short"] == max(view["models"]["erlang_c"]["gap"].values())
    assert samples[("callcenter_understaffed_seconds", sales)] == 0.0  # 3 agents: not 2 short (yet)
    assert samples[("callcenter_understaffed_limit_agents", sales)] == 2.0
    assert samples[("callcenter_understaffed_limit_seconds", sales)] == 900.0


def test_agents_short_is_the_binding_threshold_by_erlang_a_when_known():
    from callpulse.kpi.staffing import agents_short

    models = {"erlang_c": {"gap": {"10": 3, "20": 1}}, "erlang_a": {"gap": {"10": 2, "20": -1}}}
    assert agents_short(models) == (2, "erlang_a")
    models["erlang_a"]["gap"] = {}  # patience unknown
    assert agents_short(models) == (3, "erlang_c")
    models["erlang_c"]["gap"] = {}
    assert agents_short(models) == (None, None)


def test_understaffed_since_starts_lasts_and_ends():
    from callpulse.kpi.staffing import understaffed_since

    assert understaffed_since(None, 3, 2, 100.0) == 100.0  # a run starts
    assert understaffed_since(100.0, 2, 2, 160.0) == 100.0  # at the limit: still short
    assert understaffed_since(100.0, 1, 2, 170.0) is None  # below: the run ends
    assert understaffed_since(100.0, None, 2, 170.0) is None  # unknown staffing ends it too
    assert understaffed_since(100.0, 9, 0, 170.0) is None  # the alert is off
    assert understaffed_since(200.0, 9, 2, 170.0) == 200.0  # a clock behind the start keeps it
    assert understaffed_since(100.0, 9, 2, 170.0, is_open=False) is None  # closed: a break
    assert understaffed_since(100.0, 9, 2, 400.0, last_read=150.0) == 100.0  # reads 250 s apart: continuous
    assert understaffed_since(100.0, 9, 2, 500.0, last_read=150.0) == 500.0  # 350 s without a read: restarts


def understaffed_events():
    evs = []
    for n in range(6):
        t = T0 + 60 * n
        evs += call("sales", f"a{n}", t, "answered", t + 10, agent=f"ag{n}")
        evs.append(event("call.ended", t + 180, queue="sales", call_id=f"a{n}", agent_id=f"ag{n}"))
    return evs


def test_understaffed_seconds_through_the_model():
    m = fed(understaffed_events())  # no agent events: nobody staffed, so the queue is short
    first = m.read(T0 + 600)["staffing"]
    assert first["agents_short"] == first["models"]["erlang_c"]["required"]["20"] >= 2
    assert first["agents_short_model"] == "erlang_c"  # no abandons: patience unknown
    assert first["understaffed_seconds"] == 0.0
    assert m.read(T0 + 660)["staffing"]["understaffed_seconds"] == 60.0
    restored = fed([])
    restored.load_state(m.to_state())  # a takeover keeps the run going
    assert restored.read(T0 + 700)["staffing"]["understaffed_seconds"] == 100.0
    # Enough agents log in and become available: the run ends
    for k in range(first["agents_short"] - 1):
        m.apply(event("agent.state_changed", T0 + 701 + k, agent_id=f"x{k}", state="available", queues=["sales"]), T0 + 701 + k)
    assert m.read(T0 + 720)["staffing"]["agents_short"] == 1
    assert m.read(T0 + 720)["staffing"]["understaffed_seconds"] == 0.0


def test_understaffed_seconds_absent_when_off_or_unknown():
    cfg = replace(load_config(None, {}).queue("sales"), alert_understaffed_agents=0.0)
    m = QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(10, 20))
    for e in sorted(understaffed_events(), key=lambda e: e["time"]):
        m.apply(e, epoch(e["time"]))
    assert m.read(T0 + 600)["staffing"]["understaffed_seconds"] is None
    assert fed(call("sales", "a", T0, "answered", T0 + 5)).read(T0 + 60)["staffing"]["understaffed_seconds"] is None


def test_understaffed_seconds_count_only_while_open():
    """Short since 09:00 but open from 09:08 (Monday 2026-11-23): the run starts at the opening."""
    cfg = replace(load_config(None, {}).queue("sales"), open_hours=("mon-fri 09:08-18:00",))
    m = QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(10, 20))
    for e in sorted(understaffed_events(), key=lambda e: e["time"]):
        m.apply(e, epoch(e["time"]))
    closed = m.read(T0 + 420)["staffing"]
    assert closed["agents_short"] >= 2 and closed["understaffed_seconds"] == 0.0
    assert m.read(T0 + 480)["staffing"]["understaffed_seconds"] == 0.0  # opens now: the run starts
    assert m.read(T0 + 600)["staffing"]["understaffed_seconds"] == 120.0


def test_a_target_of_one_and_zero_second_inputs_leave_the_numbers_unknown_not_the_scrape_broken():
    from callpulse.kpi.staffing import staffing_view

    windows = {
        "15m": {"offered": 90, "handled": 0, "abandoned": 0, "seconds": {}},
        "1h": {"offered": 360, "handled": 300, "abandoned": 20,
               "seconds": {"talk_seconds": 300 * 150, "hold_seconds": 0, "wrapup_seconds": 0,
                           "answer_wait_seconds": 300 * 12.0, "abandon_wait_seconds": 20 * 40.0}},
    }
    agents = {"available": 2, "on_call": 18, "wrap_up": 0}
    view = staffing_view(windows, agents, {"20": 1.0, "60": 0.9})
    for model in ("erlang_c", "erlang_a"):  # 100 % is no target any staffing reaches: no required agents
        assert list(view["models"][model]["required"]) == ["60"]
        assert set(view["models"][model]["projected_service_level"]) == {"20", "60"}
    # Whole-second sources: every call 0 s long, every caller gone within the second
    windows["1h"]["seconds"] = {"talk_seconds": 0, "hold_seconds": 0, "wrapup_seconds": 0,
                                "answer_wait_seconds": 0, "abandon_wait_seconds": 0}
    zero = staffing_view(windows, agents, {"20": 0.8})
    assert zero["inputs"]["handle_seconds"] is None and zero["inputs"]["patience_seconds"] is None
    assert zero["agents_short"] is None


# ---- issue 13: staffing never raises, whatever the windows hold -------------------------------


COUNTS = st.one_of(st.integers(0, 10), st.integers(10, 10 ** 5), st.floats(0, 1e9))
SECONDS = st.one_of(st.just(0.0), st.floats(0, 1e3), st.floats(1e3, 1e12), st.sampled_from([math.inf, math.nan]))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(offered=COUNTS, handled=COUNTS, abandoned=COUNTS,
       seconds=st.fixed_dictionaries({k: SECONDS for k in ("talk_seconds", "hold_seconds", "wrapup_seconds",
                                                           "answer_wait_seconds", "abandon_wait_seconds")}),
       agents=st.fixed_dictionaries({s: st.one_of(st.integers(0, 50), st.integers(50, 10 ** 5))
                                     for s in ("available", "on_call", "wrap_up", "not_ready")}),
       targets=st.dictionaries(st.sampled_from(["0", "10", "20", "60", "7.5"]),
                               st.one_of(st.floats(0.01, 0.999), st.just(1.0)), min_size=1, max_size=3))
def test_fuzz_staffing_view_never_raises_and_its_numbers_are_in_range(offered, handled, abandoned, seconds, agents,
                                                                      targets):
    from callpulse.kpi.staffing import staffing_view

    windows = {"15m": {"offered": offered, "handled": 0, "abandoned": 0, "seconds": {}},
               "1h": {"offered": offered, "handled": handled, "abandoned": abandoned, "seconds": seconds}}
    view = staffing_view(windows, agents, targets)
    for value in view["inputs"].values():
        assert value is None or (math.isfinite(value) and value > 0)
    staffed = view["staffed"]
    for model in view["models"].values():
        for threshold, n in model["required"].items():
            assert isinstance(n, int) and n >= 1 and model["gap"][threshold] == n - staffed
            assert 0 < targets[threshold] < 1
        for value in model["projected_service_level"].values():
            assert 0.0 <= value <= 1.0
        for name in ("projected_answer_wait_seconds", "projected_abandon_ratio"):
            assert model[name] is None or (math.isfinite(model[name]) and model[name] >= 0)
    assert view["agents_short"] is None or isinstance(view["agents_short"], int)


def test_many_agents_at_a_small_load_staff_one_and_project_no_wait():
    """Issue 13 in the staffing view: 200 agents for 5 calls in 15 minutes of 10 s each."""
    from callpulse.kpi.staffing import staffing_view

    windows = {"15m": {"offered": 5, "handled": 0, "abandoned": 0, "seconds": {}},
               "1h": {"offered": 5, "handled": 5, "abandoned": 5,
                      "seconds": {"talk_seconds": 50, "hold_seconds": 0, "wrapup_seconds": 0,
                                  "answer_wait_seconds": 20.0, "abandon_wait_seconds": 150.0}}}
    view = staffing_view(windows, {"available": 200}, {"20": 0.8})
    for model in ("erlang_c", "erlang_a"):
        m = view["models"][model]
        assert m["required"] == {"20": 1} and m["projected_service_level"] == {"20": 1.0}
        assert m["projected_abandon_ratio"] == 0.0 and m["projected_answer_wait_seconds"] == 0.0
    assert view["agents_short"] == -199
