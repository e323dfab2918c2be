"""The Prometheus collector on a hand-built queue: config gauges, business hours, not-ready reasons."""

from dataclasses import replace

from prometheus_client import CollectorRegistry

from callpulse.config import load_config
from callpulse.exporter import PipelineHealth, QueueCollector
from callpulse.model import QueueModel

from helpers import call, epoch, event

T0 = epoch("2026-12-01T09:00:00Z")  # a Tuesday


class FixedStates:
    """What QueueCollector reads: read_all() -> (now, {queue: view}), and the forecast file."""

    forecast = None

    def __init__(self, models: dict, now: float):
        self.models, self.now = models, now

    def read_all(self):
        return self.now, {q: m.read(self.now) for q, m in self.models.items()}


def registry_for(now: float, **overrides) -> CollectorRegistry:
    cfg = replace(load_config(None, {}).queue("sales"), **overrides)
    model = QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(5, 10, 20))
    evs = call("sales", "c1", T0, "answered", T0 + 4) + [
        event("agent.logged_in", T0, agent_id="a1", queues=["sales"]),
        event("agent.logged_in", T0, agent_id="a2", queues=["sales"]),
        event("agent.logged_in", T0, agent_id="a3", queues=["sales"]),
        event("agent.state_changed", T0 + 1, agent_id="a2", queues=["sales"], state="not_ready", reason="lunch"),
        event("agent.state_changed", T0 + 1, agent_id="a3", queues=["sales"], state="not_ready", reason="lunch"),
    ]
    for e in sorted(evs, key=lambda e: e["time"]):
        model.apply(e, epoch(e["time"]))
    registry = CollectorRegistry()
    registry.register(QueueCollector(FixedStates({"sales": model}, now), PipelineHealth(["call.offered"])))
    return registry


def test_config_gauges_at_their_defaults():
    r = registry_for(T0 + 10)
    get = lambda name, **labels: r.get_sample_value(f"callcenter_{name}", {"queue": "sales", **labels})
    assert get("queue_open") == 1.0
    assert get("calls_waiting_limit") == 10.0
    assert get("oldest_call_wait_limit_seconds") == 120.0
    assert get("abandon_rate_limit_ratio") == 0.10
    assert get("short_abandon_rate_limit_ratio") == 0.10
    assert get("event_stall_limit_seconds") == 900.0
    assert get("queue_opened_timestamp_seconds") == T0 + 10 - 7 * 86400  # always open: 7 days back at most
    assert get("alert_min_calls") == 10.0
    assert get("queue_info", label="sales", formula="SL-C", timezone="UTC", team="") == 1.0


def test_closed_queue_reports_zero_and_a_limit_of_zero_is_not_exported():
    r = registry_for(T0 + 10, open_hours=("mon-fri 10:00-18:00",), alert_abandon_rate=0.0, team="sales-floor",
                     timezone="Europe/Moscow")  # 09:00 UTC is 12:00 in Moscow: open
    assert r.get_sample_value("callcenter_queue_open", {"queue": "sales"}) == 1.0
    assert r.get_sample_value("callcenter_abandon_rate_limit_ratio", {"queue": "sales"}) is None
    assert r.get_sample_value("callcenter_queue_info", {"queue": "sales", "label": "sales", "formula": "SL-C",
                                                        "timezone": "Europe/Moscow", "team": "sales-floor"}) == 1.0
    closed = registry_for(T0 + 10, open_hours=("mon-fri 10:00-18:00",))  # UTC: 09:00 is before opening
    assert closed.get_sample_value("callcenter_queue_open", {"queue": "sales"}) == 0.0
    assert closed.get_sample_value("callcenter_queue_opened_timestamp_seconds", {"queue": "sales"}) is None
    assert r.get_sample_value("callcenter_queue_opened_timestamp_seconds", {"queue": "sales"}) == T0 - 7200  # 10:00 in Moscow is 07:00 UTC
    holiday = registry_for(T0 + 10, closed_dates=("2026-12-01",))
    assert holiday.get_sample_value("callcenter_queue_open", {"queue": "sales"}) == 0.0


def test_not_ready_agents_by_reason():
    r = registry_for(T0 + 10)
    get = lambda reason: r.get_sample_value("callcenter_agents_not_ready", {"queue": "sales", "reason": reason})
    assert get("lunch") == 2.0
    assert get("login") == 1.0  # logged in, not yet ready
    assert r.get_sample_value("callcenter_agents", {"queue": "sales", "state": "not_ready"}) == 3.0


def test_not_ready_reasons_are_capped():
    from callpulse.model import MAX_NOT_READY_REASONS, _top_reasons

    counts = {f"r{i:02d}": i + 1 for i in range(30)}  # r29 has 30 agents, r00 one
    top = _top_reasons(counts)
    assert len(top) == MAX_NOT_READY_REASONS and sum(top.values()) == sum(counts.values())
    assert top["r29"] == 30 and "r00" not in top and top["other"] == sum(range(1, 12))
    assert _top_reasons({"lunch": 2}) == {"lunch": 2}
