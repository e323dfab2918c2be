"""QueueModel: hand-computed scenarios, window edges, decay, business days, ordering, snapshots."""

import math
from dataclasses import replace

import orjson
import pytest

from callpulse.config import load_config
from callpulse.kpi.model import APPLIED, DUPLICATE, LATE, TOO_LATE, WINDOWS, QueueModel
from helpers import call, epoch, event

T0 = epoch("2026-11-23T09:00:00Z")


def make_model(**overrides) -> QueueModel:
    cfg = replace(load_config(None, {}).queue("sales"), **overrides)
    return QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(5, 10, 20, 30, 60))


def feed(model: QueueModel, events: list[dict]) -> list[str]:
    return [model.apply(e, epoch(e["time"])) for e in sorted(events, key=lambda e: e["time"])]


def scripted_calls() -> list[dict]:
    """Seven calls with known waits; see the expected values in the tests below."""
    evs = []
    evs += call("sales", "c1", T0 + 0, "answered", T0 + 8)     # wait 8: within 10 and 20
    evs += call("sales", "c2", T0 + 1, "answered", T0 + 16)    # wait 15: within 20 only
    evs += call("sales", "c3", T0 + 2, "abandoned", T0 + 5)    # wait 3: short abandon
    evs += call("sales", "c4", T0 + 3, "abandoned", T0 + 33)   # wait 30
    evs += call("sales", "c5", T0 + 4, "flowed_out", T0 + 64)  # wait 60, timeout
    evs += call("sales", "c6", T0 + 5, "answered", T0 + 30)    # wait 25
    evs.append(event("call.offered", T0 + 40, queue="sales", call_id="c7"))  # still waiting
    return evs


def test_scripted_scenario_counts_and_every_formula():
    m = make_model()
    assert set(feed(m, scripted_calls())) == {APPLIED}
    view = m.read(T0 + 70)
    w = view["windows"]["5m"]
    assert (w["offered"], w["answered"], w["abandoned"], w["short_abandoned"], w["flowed_out"]) == (7, 3, 2, 1, 1)
    assert w["answered_within"] == {"10": 1, "20": 2}
    assert w["abandoned_within"] == {"10": 1, "20": 1}
    assert w["flowed_out_by_reason"]["timeout"] == 1
    sl20 = {f: v["20"] for f, v in w["service_level_by_formula"].items()}
    assert sl20 == pytest.approx({"SL-A": 2 / 3, "SL-B": 2 / 5, "SL-C": 2 / 4, "SL-D": 2 / 4,
                                  "SL-E": 3 / 5, "SL-F": 3 / 5, "SL-G": 2 / 6})
    assert w["service_level"] == pytest.approx({"10": 1 / 4, "20": 2 / 4})  # SL-C is the default
    assert w["average_answer_wait_seconds"] == pytest.approx((8 + 15 + 25) / 3)
    assert w["average_abandon_wait_seconds"] == pytest.approx((3 + 30) / 2)
    assert w["answer_rate"] == pytest.approx(3 / 7)
    assert w["abandon_rate"] == pytest.approx(2 / 7)
    live = view["live"]
    assert live["calls_waiting"] == 1
    assert live["oldest_call_wait_seconds"] == pytest.approx(30)
    assert live["calls_waiting_over_threshold"] == {"10": 1, "20": 1}
    assert view["totals"]["offered"] == 7 and view["totals"]["answered"] == 3
    # histogram of answer waits: le=10 holds 1, le=20 holds 2, +Inf all 3
    cumulative = dict(view["answer_wait_histogram"].cumulative())
    assert (cumulative[10], cumulative[20], cumulative[math.inf]) == (1, 2, 3)


def test_handle_time_hold_and_wrapup():
    m = make_model()
    evs = call("sales", "c1", T0, "answered", T0 + 8)
    evs += [
        event("call.hold_started", T0 + 20, queue="sales", call_id="c1", agent_id="a1"),
        event("call.hold_ended", T0 + 30, queue="sales", call_id="c1", agent_id="a1"),
        event("call.ended", T0 + 128, queue="sales", call_id="c1", agent_id="a1"),
        event("call.wrapup_ended", T0 + 148, queue="sales", call_id="c1", agent_id="a1"),
    ]
    feed(m, evs)
    totals = m.read(T0 + 150)["totals"]
    assert (totals["handled"], totals["talk_seconds"], totals["hold_seconds"], totals["wrapup_seconds"]) == (1, 110, 10, 20)
    assert m.read(T0 + 150)["windows"]["15m"]["average_handle_seconds"] == pytest.approx(140)


def test_a_conversation_end_before_its_answer_still_counts():
    # Found by the 48 h soak (its events spread over every partition): an answer and an end in the
    # same millisecond came out of stage 1's merge end first; the call was never handled.
    m = make_model()
    offered, answered, ended = call("sales", "c1", T0, "answered", T0 + 8) + [
        event("call.ended", T0 + 8, queue="sales", call_id="c1", agent_id="a1")]
    far = [event("call.ended", T0 + 30, queue="sales", call_id="other", agent_id="a1")]  # answered elsewhere
    for e in (offered, ended, answered, *far):
        m.apply(e, epoch(e["time"]))
    totals = m.read(T0 + 40)["totals"]
    assert (totals["handled"], totals["talk_seconds"]) == (1, 0)
    # an end older than the answer belongs to an earlier conversation: it does not end this one
    m.apply(event("call.ended", T0 + 50, queue="sales", call_id="c2", agent_id="a1"), T0 + 50)
    m.apply(event("call.offered", T0 + 55, queue="sales", call_id="c2"), T0 + 55)
    m.apply(event("call.answered", T0 + 60, queue="sales", call_id="c2", agent_id="a1"), T0 + 60)
    assert m.read(T0 + 61)["totals"]["handled"] == 1
    # ends never matched are forgotten after the lateness
    m.apply(event("call.offered", T0 + 200, queue="sales", call_id="c3"), T0 + 200)
    assert "other" not in m.ended_early and "c2" not in m.ended_early


def test_agent_states_and_occupancy():
    m = make_model()
    def s(t, state, **kw):
        return event("agent.state_changed", t, agent_id="a1", queues=["sales"], state=state, **kw)
    feed(m, [event("agent.logged_in", T0 - 10, agent_id="a1", queues=["sales"]),
             s(T0, "available"), s(T0 + 8, "on_call"), s(T0 + 128, "wrap_up"), s(T0 + 148, "available"),
             event("agent.logged_in", T0, agent_id="a2", queues=["sales"]),
             event("agent.state_changed", T0 + 1, agent_id="a2", queues=["sales"], state="not_ready", reason="break")])
    view = m.read(T0 + 160)
    assert view["live"]["agents"] == {"available": 1, "on_call": 0, "wrap_up": 0, "not_ready": 1}
    # a1: staffed T0..T0+160 = 160 s, busy T0+8..T0+148 = 140 s; a2 never staffed
    assert view["windows"]["5m"]["occupancy"] == pytest.approx(140 / 160)
    assert view["windows"]["today"]["occupancy"] == pytest.approx(140 / 160)
    # logged out agents disappear
    feed(m, [event("agent.logged_out", T0 + 170, agent_id="a2", queues=["sales"])])
    assert m.read(T0 + 171)["live"]["agents"]["not_ready"] == 0


def test_window_edges_one_second_resolution():
    m = make_model()
    feed(m, call("sales", "c1", T0, "answered", T0 + 5))
    # the answer at second T0+5 is in the 5m window while floor(now) - 299 <= T0+5
    assert m.read(T0 + 5 + 299.9)["windows"]["5m"]["answered"] == 1
    assert m.read(T0 + 5 + 300.0)["windows"]["5m"]["answered"] == 0
    assert m.read(T0 + 5 + 300.0)["windows"]["15m"]["answered"] == 1
    assert m.read(T0 + 5 + 3599.5)["windows"]["1h"]["answered"] == 1
    assert m.read(T0 + 5 + 3600.0)["windows"]["1h"]["answered"] == 0


def test_quiet_queue_decays_to_zero_as_the_clock_moves():
    m = make_model()
    feed(m, scripted_calls())
    early = m.read(T0 + 70)["windows"]
    assert early["5m"]["offered"] == 7 and early["1h"]["offered"] == 7
    late = m.read(T0 + 4000)["windows"]
    for name in ("5m", "15m", "30m", "1h"):
        assert late[name]["offered"] == 0 and late[name]["service_level"]["20"] is None
    assert late["today"]["offered"] == 7  # still the same business day
    assert m.buckets == {}  # seconds older than the longest window are freed


def test_late_event_inside_an_open_window_is_placed_by_its_time():
    m = make_model()
    feed(m, call("sales", "c1", T0, "answered", T0 + 5) + [event("call.offered", T0 + 80, queue="sales", call_id="c3")])
    m.read(T0 + 100)  # the windows are open and tracking now
    late = call("sales", "c2", T0 + 50, "answered", T0 + 70)  # both older than the newest event (T0+80)
    assert [m.apply(e, epoch(e["time"])) for e in late] == [LATE, LATE]
    w = m.read(T0 + 100)["windows"]["5m"]
    assert (w["offered"], w["answered"], w["answered_within"]["20"]) == (3, 2, 2)
    # c2's answer (second T0+70) leaves the 5m window 300 s later, c1's (T0+5) earlier
    assert m.read(T0 + 369)["windows"]["5m"]["answered"] == 1
    assert m.read(T0 + 370)["windows"]["5m"]["answered"] == 0


def test_out_of_order_within_lateness():
    m = make_model()
    offered, answered = call("sales", "c1", T0, "answered", T0 + 12)
    assert m.apply(answered, T0 + 12) == APPLIED  # outcome first: held until its offer comes
    assert m.read(T0 + 13)["windows"]["5m"]["answered"] == 0
    assert m.apply(offered, T0) == LATE
    w = m.read(T0 + 13)["windows"]["5m"]
    assert (w["offered"], w["answered"], w["answered_within"]) == (1, 1, {"10": 0, "20": 1})
    assert m.read(T0 + 13)["live"]["calls_waiting"] == 0


def test_too_late_and_unmatched_and_duplicates():
    m = make_model()
    first = call("sales", "c1", T0, "answered", T0 + 5)
    feed(m, first)
    assert m.apply(first[0], T0) == DUPLICATE  # same event id again
    assert m.apply(event("call.offered", T0 + 200, queue="sales", call_id="c2"), T0 + 200) == APPLIED
    old = event("call.offered", T0 + 100, queue="sales", call_id="c3")
    assert m.apply(old, T0 + 100) == TOO_LATE  # 100 s behind the newest event, lateness 60 s
    assert m.apply(first[0], T0) == DUPLICATE  # older than the lateness, still known by its id
    orphan_answer = event("call.answered", T0 + 210, queue="sales", call_id="never-offered", agent_id="a1")
    m.apply(orphan_answer, T0 + 210)
    assert m.unmatched == []
    m.apply(event("call.offered", T0 + 290, queue="sales", call_id="c4"), T0 + 290)
    assert [e["call_id"] for e, _ in m.unmatched] == ["never-offered"]
    assert m.read(T0 + 291)["totals"]["answered"] == 1


@pytest.mark.parametrize("zone,day_start,boundary", [
    ("Asia/Shanghai", "00:00", "2026-11-23T16:00:00Z"),   # midnight in Shanghai (UTC+8)
    ("Europe/Moscow", "06:00", "2026-11-24T03:00:00Z"),   # 06:00 in Moscow (UTC+3)
])
def test_today_follows_the_queues_time_zone_and_day_start(zone, day_start, boundary):
    from datetime import time as dtime
    h, mnt = map(int, day_start.split(":"))
    m = make_model(timezone=zone, business_day_start=dtime(h, mnt))
    b = epoch(boundary)
    feed(m, call("sales", "before", b - 30, "answered", b - 1) + call("sales", "after", b + 1, "answered", b + 2))
    before = m.read(b - 0.5)["windows"]["today"]
    assert (before["offered"], before["answered"]) == (1, 1)
    after = m.read(b + 10)["windows"]["today"]
    assert (after["offered"], after["answered"]) == (1, 1)  # only the call after the boundary
    assert m.read(b + 10)["windows"]["5m"]["answered"] == 2  # rolling windows ignore the day


def test_orphaned_calls_leave_the_waiting_count():
    m = make_model(orphan_after_seconds=600)
    feed(m, [event("call.offered", T0, queue="sales", call_id="lost")])
    assert m.read(T0 + 599)["live"]["calls_waiting"] == 1
    live = m.read(T0 + 601)["live"]
    assert (live["calls_waiting"], live["calls_orphaned"], live["oldest_call_wait_seconds"]) == (0, 1, 0)


def test_snapshot_round_trip_gives_the_same_view():
    m = make_model()
    evs = scripted_calls()
    feed(m, evs)
    state = orjson.loads(orjson.dumps(m.to_state(), option=orjson.OPT_NON_STR_KEYS))
    copy = make_model()
    copy.load_state(state)
    assert _comparable(copy.read(T0 + 70)) == _comparable(m.read(T0 + 70))
    assert copy.apply(evs[-1], epoch(evs[-1]["time"])) == DUPLICATE  # it keeps deduplicating
    assert dict(copy.answer_waits.cumulative()) == dict(m.answer_waits.cumulative())


def _comparable(view):
    return {k: v for k, v in view.items() if not k.endswith("histogram")}


def test_occupancy_of_long_states_is_cut_at_the_window_edge():
    m = make_model()
    def s(t, state):
        return event("agent.state_changed", t, agent_id="a1", queues=["sales"], state=state)
    feed(m, [s(T0, "available"), s(T0 + 1000, "on_call"), s(T0 + 1100, "wrap_up")])
    w = m.read(T0 + 1100.5)["windows"]["5m"]  # seconds T0+801 .. T0+1100
    # available 801..1000 = 199 s, on_call 1000..1100 = 100 s, wrap-up still open: 0.5 s
    assert w["occupancy"] == pytest.approx(100.5 / 299.5)
    assert m.read(T0 + 1100.5)["windows"]["1h"]["occupancy"] == pytest.approx(100.5 / 1100.5)


def test_agent_seconds_stay_bounded_in_a_queue_nobody_reads():
    # The soak (bench/soak.py --no-scrape) grew by 141 MB in a simulated day: the per-second
    # agent-state data was trimmed only when the queue was read.
    unread, read = make_model(), make_model()
    states = ["available", "on_call", "wrap_up"]
    evs = [event("agent.state_changed", T0 + 7 * i, agent_id=f"a{i % 5}", queues=["sales"], state=states[i % 3])
           for i in range(4 * 3600 // 7)]  # four hours, a state change every 7 s
    for n, e in enumerate(evs):
        unread.apply(e, epoch(e["time"]))
        read.apply(e, epoch(e["time"]))
        if n % 50 == 0:
            read.read(epoch(e["time"]))
    kept = unread.agent_seconds
    longest = max(span for _, span in WINDOWS)
    assert min([*kept.steps, *kept.fractions]) >= epoch(evs[-1]["time"]) - longest - 1
    assert len(kept.steps) + len(kept.fractions) <= 2 * longest
    end = epoch(evs[-1]["time"]) + 0.5
    assert unread.read(end)["windows"] == read.read(end)["windows"]


def test_an_id_sent_again_with_another_time_is_still_a_duplicate():
    # e.g. a queue_log replay starting mid-call times an answer by its line instead of enter + hold
    m = make_model()
    first = event("call.offered", T0, queue="sales", call_id="c1", event_id="same")
    again = dict(first, time=event("call.offered", T0 + 2, queue="sales", call_id="c1")["time"])
    assert feed(m, [first]) == [APPLIED]
    assert m.apply(again, T0 + 2) == DUPLICATE
    assert m.read(T0 + 3)["totals"]["offered"] == 1


# ---- containment of read() (issue 13): /api/queues reads every queue through it ---------------


def staffed_model(name: str) -> QueueModel:
    m = QueueModel(load_config(None, {}).queue(name), lateness_seconds=60.0, histogram_bounds=(5, 10, 20))
    evs = [event("agent.state_changed", T0, agent_id=f"{name}-ag", queues=[name], state="available")]
    for n in range(6):
        t = T0 + 60 * n
        evs += call(name, f"{name}-a{n}", t, "answered", t + 4, agent=f"{name}-ag")
        evs.append(event("call.ended", t + 100, queue=name, call_id=f"{name}-a{n}", agent_id=f"{name}-ag"))
    feed(m, evs)
    return m


def test_a_failing_staffing_leaves_it_out_of_the_read_and_the_rest_in(monkeypatch, caplog):
    import callpulse.kpi.model as model_module

    m = staffed_model("read-staffing")
    before = m.read(T0 + 600)
    assert before["staffing"]["agents_short"] is not None
    since, read_at = m.understaffed_since, m.understaffed_read_at
    counted = model_module.EXPORT_ERRORS.counts["staffing"]

    def broken(*args):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(model_module, "staffing_view", broken)
    with caplog.at_level("ERROR"):
        views = [m.read(T0 + 660), m.read(T0 + 720)]
    for view in views:
        assert view["staffing"] is None  # unknown, not zeros
        assert view["windows"]["15m"]["offered"] == 6 and view["live"]["agents"]["available"] == 1
        assert orjson.loads(orjson.dumps(view["windows"]))  # what /api/queues serialises
    assert (m.understaffed_since, m.understaffed_read_at) == (since, read_at)  # a failed read changes no state
    assert model_module.EXPORT_ERRORS.counts["staffing"] == counted + 2
    assert len([r for r in caplog.records if "read-staffing" in r.getMessage()]) == 1


def test_failing_windows_leave_out_windows_and_staffing_only(monkeypatch):
    import callpulse.kpi.model as model_module

    m = staffed_model("read-windows")
    counted = dict(model_module.EXPORT_ERRORS.counts)

    def broken(self, counters):
        raise ArithmeticError("a service-level formula failed")

    monkeypatch.setattr(QueueModel, "_window_view", broken)
    view = m.read(T0 + 600)
    assert view["windows"] is None and view["staffing"] is None  # staffing is estimated from the windows
    assert view["totals"]["offered"] == 6 and view["live"]["calls_waiting"] == 0
    assert model_module.EXPORT_ERRORS.counts["windows"] == counted["windows"] + 1
    assert model_module.EXPORT_ERRORS.counts["staffing"] == counted["staffing"]  # not counted twice


def test_read_all_gives_every_queue_when_one_queues_staffing_fails(monkeypatch):
    """QueueStates.read_all() is what /api/queues and the wallboard read."""
    import callpulse.kpi.model as model_module
    from callpulse.pipeline.state import QueueStates

    states = QueueStates(load_config(None, {}))
    for p, name in enumerate(("api-broken", "api-fine")):
        states.models[name] = staffed_model(name)
        states.partition_of[name] = p
    real = model_module.staffing_view
    broken_targets = states.models["api-broken"].targets

    def staffing_view(windows, agents, targets):
        if targets is broken_targets:
            raise OverflowError("math range error")
        return real(windows, agents, targets)

    monkeypatch.setattr(model_module, "staffing_view", staffing_view)
    _, views = states.read_all()
    assert views["api-broken"]["staffing"] is None and views["api-fine"]["staffing"]["staffed"] == 1
    assert views["api-broken"]["totals"]["offered"] == 6 and views["api-broken"]["windows"] is not None
