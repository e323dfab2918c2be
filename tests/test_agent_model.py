"""AgentModel (issue 15): one agent's state and day totals against a hand-computed shift."""

import datetime

import orjson
import pytest

from callpulse.config import DEFAULT_SCORECARD
from callpulse.kpi.agents import AgentModel, AgentSettings, day_view, occupancy, utilization
from callpulse.kpi.model import DUPLICATE, TOO_LATE
from helpers import epoch, event

T0 = epoch("2026-12-01T08:00:00Z")  # 11:00 in Moscow


def zones(queue):
    return {"продажи": ("Europe/Moscow", datetime.time(0, 0), (15, 30)), None: ("UTC", datetime.time(0, 0), (15,))}.get(
        queue, ("Asia/Shanghai", datetime.time(6, 0), (30,)))


SETTINGS = AgentSettings(zones, lateness_seconds=60.0)


def make(settings: AgentSettings = SETTINGS) -> AgentModel:
    return AgentModel("a1", settings)


def feed(model: AgentModel, events: list[dict]) -> list[str]:
    return [model.apply(e, epoch(e["time"])) for e in sorted(events, key=lambda e: e["time"])]


def shift() -> list[dict]:
    """Logged in at T0 (10 min login), available, two calls, a 15-minute break, a third call
    still going at T0 + 3600:
      call c1: answered +600, hold +700..+760, ended +900, wrap-up until +960 (talk 240, hold 60, wrap 60)
      call c2: a ring no answer at +1000, answered +1200, transferred +1500, wrap-up until +1530
      break +1800..+2700; call c3 answered +3000, on hold since +3500
    """
    q = {"queue": "продажи"}
    a = {"agent_id": "a1"}
    return [
        event("agent.logged_in", T0, queues=["продажи", "billing"], agent_name="Анна", **a),
        event("agent.state_changed", T0 + 300, queues=["продажи", "billing"], state="available", **a),
        event("call.answered", T0 + 600, call_id="c1", **q, **a),
        event("agent.state_changed", T0 + 600, queues=["продажи", "billing"], state="on_call", **a),
        event("call.hold_started", T0 + 700, call_id="c1", **q, **a),
        event("call.hold_ended", T0 + 760, call_id="c1", **q, **a),
        event("call.ended", T0 + 900, call_id="c1", **q, **a),
        event("agent.state_changed", T0 + 900, queues=["продажи", "billing"], state="wrap_up", **a),
        event("call.disposition", T0 + 950, call_id="c1", code="sale", **q, **a),
        event("call.wrapup_ended", T0 + 960, call_id="c1", **q, **a),
        event("agent.state_changed", T0 + 960, queues=["продажи", "billing"], state="available", **a),
        event("call.ring_no_answer", T0 + 1000, call_id="c2", queue="billing", **a),
        event("call.answered", T0 + 1200, call_id="c2", queue="billing", **a),
        event("agent.state_changed", T0 + 1200, queues=["продажи", "billing"], state="on_call", **a),
        event("call.transferred", T0 + 1500, call_id="c2", queue="billing", **a),
        event("agent.state_changed", T0 + 1500, queues=["продажи", "billing"], state="wrap_up", **a),
        event("call.wrapup_ended", T0 + 1530, call_id="c2", queue="billing", **a),
        event("agent.state_changed", T0 + 1530, queues=["продажи", "billing"], state="available", **a),
        event("call.survey", T0 + 1600, call_id="c1", csat=5, nps=9, resolved=True, **q, **a),
        event("call.survey", T0 + 1700, call_id="c2", csat=2, resolved=False, queue="billing", **a),
        event("agent.state_changed", T0 + 1800, queues=["продажи", "billing"], state="not_ready", reason="обед", **a),
        event("agent.state_changed", T0 + 2700, queues=["продажи", "billing"], state="available", **a),
        event("call.answered", T0 + 3000, call_id="c3", **q, **a),
        event("agent.state_changed", T0 + 3000, queues=["продажи", "billing"], state="on_call", **a),
        event("call.hold_started", T0 + 3500, call_id="c3", **q, **a),
    ]


def test_a_shift_by_hand():
    m = make()
    feed(m, shift())
    view = m.read(T0 + 3600)
    assert (view["agent_name"], view["state"], view["reason"], view["timezone"]) == ("Анна", "on_call", None, "Europe/Moscow")
    assert view["state_seconds"] == pytest.approx(600)
    assert view["queues"] == ["продажи", "billing"]
    assert view["call"] == {"queue": "продажи", "phase": "holding", "seconds": pytest.approx(600), "calls_in_progress": 1}
    d = view["today"]
    assert (d["answered"], d["handled"], d["transfers"], d["ring_no_answers"]) == (3, 2, 1, 1)
    assert (d["talk_seconds"], d["hold_seconds"], d["wrapup_seconds"]) == (240 + 300, 60, 60 + 30)
    assert d["average_handle_seconds"] == pytest.approx((540 + 60 + 90) / 2)
    # states: not_ready (login) 300, available 300 + 240 + 270 + 300 = 1110, on_call 300 + 300 + 600,
    # wrap_up 60 + 30, not_ready (обед) 900; logged in 3600
    assert d["state_seconds"] == pytest.approx({"logged_in": 3600, "available": 1110, "on_call": 1200,
                                                "wrap_up": 90, "not_ready": 1200})
    assert d["not_ready_seconds_by_reason"] == pytest.approx({"login": 300, "обед": 900})
    # occupancy (talk + hold + wrap of ended calls) / (logged in - not ready) = 690 / 2400
    assert d["occupancy"] == pytest.approx(690 / 2400)
    assert d["utilization"] == pytest.approx(690 / 3600)
    assert d["surveys"] == 2 and d["csat_ratio"] == pytest.approx(0.5) and d["net_promoter_score"] == 100.0
    assert d["first_call_resolution_ratio"] == pytest.approx(0.5)
    assert d["dispositions"] == {"sale": 1}


def test_the_formulas():
    assert occupancy(300, 60, 90, 3600, 1200) == pytest.approx(450 / 2400)
    assert utilization(300, 60, 90, 3600) == pytest.approx(0.125)
    assert occupancy(0, 0, 0, 600, 600) is None and utilization(0, 0, 0, 0) is None


def test_today_is_the_business_day_of_the_first_queue_and_splits_states_at_its_start():
    m = make()
    # first queue "support": Asia/Shanghai, day starting 06:00 local = 22:00 UTC
    start = epoch("2026-12-01T21:00:00Z")
    feed(m, [event("agent.logged_in", start, agent_id="a1", queues=["support"]),
             event("agent.state_changed", start + 7200, agent_id="a1", queues=["support"], state="available")])
    assert m.read(start + 7200)["business_day"] == "2026-12-02"
    assert m.days["2026-12-01"]["not_ready_seconds"] == pytest.approx(3600)  # 21:00-22:00 UTC
    assert m.days["2026-12-02"]["not_ready_seconds"] == pytest.approx(3600)


def test_duplicates_too_late_and_a_snapshot_round_trip():
    events = shift()
    m = make()
    feed(m, events[:12])
    assert m.apply(events[3], epoch(events[3]["time"])) == DUPLICATE
    restored = make()
    restored.load_state(orjson.loads(orjson.dumps(m.to_state())))
    assert restored.apply(events[3], epoch(events[3]["time"])) == DUPLICATE  # ids survive the snapshot
    old = event("call.ring_no_answer", T0, call_id="x", queue="billing", agent_id="a1")
    assert restored.apply(old, T0) == TOO_LATE
    feed(m, events[12:])
    feed(restored, events[12:])
    assert restored.read(T0 + 3600) == m.read(T0 + 3600)


def test_a_logged_out_agent_and_an_end_for_another_agent():
    m = make()
    feed(m, [event("agent.logged_in", T0, agent_id="a1", queues=["продажи"]),
             event("call.answered", T0 + 10, queue="продажи", call_id="c1", agent_id="a1"),
             # a transfer by another agent of the same call does not end a1's conversation
             event("call.ended", T0 + 20, queue="продажи", call_id="c1", agent_id="a2"),
             event("call.ended", T0 + 30, queue="продажи", call_id="c1", agent_id="a1"),
             event("agent.logged_out", T0 + 100, agent_id="a1", queues=["продажи"])])
    view = m.read(T0 + 200)
    assert view["state"] == "logged_out" and view["state_seconds"] is None and view["queues"] == []
    assert view["today"]["handled"] == 1 and view["today"]["talk_seconds"] == pytest.approx(20)
    assert view["today"]["state_seconds"]["logged_in"] == pytest.approx(100)


# ---- in the second stage (pipeline/state.py) and the export ---------------------------------

def test_an_agents_batches_are_made_durable_and_rebuilt_like_a_queues():
    from callpulse import events as ev
    from callpulse.config import load_config
    from callpulse.pipeline.state import QueueStates, StreamClock

    clock = [T0 + 3600]

    def wall():
        clock[0] += 1.0  # a snapshot is due every 30 s of it
        return clock[0]

    config = load_config(None, {"CALLPULSE_DATA_DIR": "/tmp"})
    live, table = QueueStates(config, StreamClock(wall), wall), {}
    key = ev.agent_key("a1")
    events = shift()
    for offset, start in enumerate(range(0, len(events), 5)):
        result = live.apply_batch(key, 3, offset, [orjson.dumps(e) for e in events[start:start + 5]])
        assert result is not None and result.lags == []  # the queues' copies measure the lag
        table.update(live.changelog_writes(result))
    assert table[key.encode("utf-8", "surrogateescape") + b"\x00s"]  # a snapshot under the agent's shard
    # an event too late for the agent is not dead-lettered by its copy (the queue's copy decides)
    old = orjson.dumps(event("call.ring_no_answer", T0, queue="billing", call_id="x", agent_id="a1"))
    result = live.apply_batch(key, 3, 99, [old])
    assert result.outcomes == {"too_late": 1} and result.rejected == []
    from callpulse.export.metrics import PipelineHealth
    health = PipelineHealth([])
    health.count_batch(result)
    assert health.agent_too_late == 1 and health.rejected == {r: 0 for r in ev.REJECT_REASONS}
    table.update(live.changelog_writes(result))
    recovered = QueueStates(config, StreamClock(wall), wall)
    assert recovered.resume({3}, [(k, v) for k, v in table.items() if v is not None]) == [key]
    clock[0] += 1000
    recovered.clock, live.clock = StreamClock(lambda: T0 + 4000), StreamClock(lambda: T0 + 4000)
    assert recovered.read_agents()[1] == live.read_agents()[1]
    assert live.read_all()[1] == {}  # agents are not queues: not in /metrics' queue series
    agent = live.read_agents()[1][0]
    assert (agent["agent_id"], agent["today"]["handled"]) == ("a1", 2)


def test_queues_count_agents_not_ready_past_their_limits():
    from dataclasses import replace

    from callpulse.config import load_config
    from callpulse.kpi.model import QueueModel

    cfg = replace(load_config(None, {}).queue("sales"), not_ready_limits_seconds=(600.0, 1800.0))
    m = QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(10, 20))
    for e in [event("agent.logged_in", T0, agent_id="a1", queues=["sales"]),
              event("agent.logged_in", T0, agent_id="a2", queues=["sales"]),
              event("agent.logged_in", T0, agent_id="a3", queues=["sales"]),
              event("agent.state_changed", T0 + 100, agent_id="a2", queues=["sales"], state="available"),
              event("agent.state_changed", T0 + 1000, agent_id="a3", queues=["sales"], state="not_ready", reason="break")]:
        m.apply(e, epoch(e["time"]))
    # at T0 + 2000: a1 not ready (login) for 2000 s, a3 for 1000 s
    assert m.read(T0 + 2000)["live"]["agents_not_ready_over_limit"] == {"600": 2, "1800": 1}
    assert m.read(T0 + 1500)["live"]["agents_not_ready_over_limit"] == {"600": 1, "1800": 0}


def test_per_agent_series_only_when_asked_and_capped():
    from prometheus_client import CollectorRegistry, generate_latest

    from callpulse.config import load_config
    from callpulse.export.metrics import PipelineHealth, QueueCollector

    class States:
        forecast = None

        def __init__(self, env):
            self.config = load_config(None, env)

        def read_all(self):
            return T0, {}

        def read_agents(self):
            models = []
            for n in range(5):
                m = AgentModel(f"a{n}", SETTINGS)
                m.apply(event("agent.logged_in", T0, agent_id=f"a{n}", queues=["sales"]), T0)
                models.append(m.read(T0 + 30))
            return T0 + 30, models

    def scrape(env):
        registry = CollectorRegistry()
        registry.register(QueueCollector(States(env), PipelineHealth([])))
        return generate_latest(registry).decode()

    assert "agent=" not in scrape({})
    text = scrape({"CALLPULSE_EXPORT_AGENT_METRICS": "true", "CALLPULSE_AGENT_METRICS_LIMIT": "3"})
    assert 'callcenter_agent_state_seconds{agent="a2",state="not_ready"} 30.0' in text
    assert 'agent="a3"' not in text and "callcenter_agent_metrics_left_out 2.0" in text


def test_calls_overlapping_for_one_agent_are_each_handled():
    m = make()
    feed(m, [event("call.answered", T0, queue="q", call_id="c1", agent_id="a1"),
             event("call.hold_started", T0 + 10, queue="q", call_id="c1", agent_id="a1"),
             event("call.answered", T0 + 20, queue="q", call_id="c2", agent_id="a1"),  # c1 on hold
             event("call.answered", T0 + 21, queue="q", call_id="c2", agent_id="a1", event_id="again"),
             event("call.ended", T0 + 50, queue="q", call_id="c2", agent_id="a1"),
             event("call.hold_ended", T0 + 60, queue="q", call_id="c1", agent_id="a1"),
             event("call.ended", T0 + 70, queue="q", call_id="c1", agent_id="a1")])
    d = m.read(T0 + 80)["today"]
    assert (d["answered"], d["handled"]) == (2, 2)
    assert (d["talk_seconds"], d["hold_seconds"]) == (pytest.approx(20 + 30), pytest.approx(50))


def test_out_of_order_ends_older_states_and_names_and_decimal_scores():
    m = make()
    feed(m, [event("agent.logged_in", T0, agent_id="a1", queues=["q"], agent_name="Old"),
             event("agent.state_changed", T0 + 10, agent_id="a1", queues=["q", "r"], state="available", agent_name="New"),
             event("call.ended", T0 + 40, queue="q", call_id="c1", agent_id="a1"),
             event("call.survey", T0 + 50, queue="q", call_id="c1", agent_id="a1", csat=5.0, nps=9.0)])
    # older than the agent's state: neither its queues nor its name stand; the end waited for its answer
    feed(m, [event("agent.state_changed", T0 + 5, agent_id="a1", queues=["old"], state="available", agent_name="Older"),
             event("call.answered", T0 + 20, queue="q", call_id="c1", agent_id="a1")])
    view = m.read(T0 + 60)
    assert (view["queues"], view["agent_name"]) == (["q", "r"], "New")
    assert view["today"]["handled"] == 1 and view["today"]["talk_seconds"] == pytest.approx(20) and view["call"] is None
    assert view["today"]["csat_ratio"] == 1.0 and view["today"]["net_promoter_score"] == 100.0
    restored = make()
    restored.load_state(orjson.loads(orjson.dumps(m.to_state())))
    assert restored.read(T0 + 60) == view


def fresh_read(m: AgentModel, now: float) -> dict:
    """read() computed from scratch, as it was before it kept a cache: a copy of today's counters,
    the open state's seconds added to it, then day_view and the scorecard."""
    day_start, _, iso = m.business_day.bounds(now)
    today = dict(m.days.get(iso, {}))
    if m.state is not None and now > m.counted_until:
        m._state_seconds(m.state, m.reason, max(m.since, m.counted_until, day_start), now, out=today)
    view = day_view(today)
    if m.settings.card:
        view["scorecard"] = m.score(view, today)
    return view


def test_reads_kept_between_events_equal_reads_from_scratch():
    """read() keeps the part of today's view that only events change (kpi/agents.py read's cache):
    after every event of a shift, and at clock readings between them (the open state's seconds
    growing, a not-ready reason's too, a business-day change), it equals a read from scratch."""
    m = make(AgentSettings(zones, 60.0, card=DEFAULT_SCORECARD))
    events = sorted(shift(), key=lambda e: e["time"])
    events.append(event("agent.state_changed", T0 + 3700, agent_id="a1", queues=["продажи"], state="not_ready",
                        reason="перерыв"))
    checked = 0
    for e in events:
        m.apply(e, epoch(e["time"]))
        for later in (0, 1, 59, 600):  # all in the same business day: the cache of the last event's read
            now = epoch(e["time"]) + later
            for _ in range(2):  # the second read comes from the cache
                assert m.read(now)["today"] == fresh_read(m, now)
                checked += 1
    assert checked == 2 * 4 * len(events)
    for now in (T0 + 86400, T0 + 86400 + 60, T0 + 3800):  # the next business day (nothing counted in it yet), and back
        assert m.read(now)["today"] == fresh_read(m, now)
    # a read of the open not-ready state adds its seconds to its reason, not to the cached counters
    assert m.read(T0 + 3760)["today"]["not_ready_seconds_by_reason"]["перерыв"] == pytest.approx(60)
    assert "not_ready:перерыв" not in m.days[m.business_day.bounds(T0)[2]]
