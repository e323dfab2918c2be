"""The Prometheus collector on a hand-built queue: config gauges, business hours, not-ready reasons;
containment of one queue's failing part (issue 13)."""

from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import callpulse.kpi.model as model_module
from callpulse.config import load_config
from callpulse.export.metrics import PipelineHealth, QueueCollector
from callpulse.kpi.model import QueueModel
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
    def get(name, **labels):
        return r.get_sample_value(f"callcenter_{name}", {"queue": "sales", **labels})
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
    def get(reason):
        return r.get_sample_value("callcenter_agents_not_ready", {"queue": "sales", "reason": reason})
    assert get("lunch") == 2.0
    assert get("login") == 1.0  # logged in, not yet ready
    assert r.get_sample_value("callcenter_agents", {"queue": "sales", "state": "not_ready"}) == 3.0


def test_not_ready_reasons_are_capped():
    from callpulse.kpi.model import MAX_NOT_READY_REASONS, top_counts

    counts = {f"r{i:02d}": i + 1 for i in range(30)}  # r29 has 30 agents, r00 one
    top = top_counts(counts)
    assert len(top) == MAX_NOT_READY_REASONS and sum(top.values()) == sum(counts.values())
    assert top["r29"] == 30 and "r00" not in top and top["other"] == sum(range(1, 12))
    assert top_counts({"lunch": 2}) == {"lunch": 2}


# ---- containment (issue 13): one queue's failing numbers never take the scrape down ----------



def busy_queue(name: str, agents: int = 3, calls: int = 6) -> QueueModel:
    """A queue whose staffing inputs are all known: `calls` answered and handled calls and as
    many abandons in the last quarter of an hour, `agents` agents available."""
    model = QueueModel(load_config(None, {}).queue(name), lateness_seconds=60.0, histogram_bounds=(5, 10, 20))
    evs = [event("agent.state_changed", T0, agent_id=f"{name}-ag{n}", queues=[name], state="available")
           for n in range(agents)]
    for n in range(calls):
        t = T0 + 60 * n
        evs += call(name, f"{name}-a{n}", t, "answered", t + 4, agent=f"{name}-ag0")
        evs.append(event("call.ended", t + 10, queue=name, call_id=f"{name}-a{n}", agent_id=f"{name}-ag0"))
        evs += call(name, f"{name}-b{n}", t + 20, "abandoned", t + 50)
    for e in sorted(evs, key=lambda e: e["time"]):
        model.apply(e, epoch(e["time"]))
    return model


def scrape(registry: CollectorRegistry) -> dict:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def errors_of(samples: dict, part: str) -> float:
    return samples[("callcenter_export_errors_total", (("part", part),))]


def test_a_queue_whose_staffing_raises_leaves_the_other_queues_in_the_scrape(monkeypatch, caplog):
    """Issue 13: one queue's staffing raised ZeroDivisionError and /metrics answered 500 for every
    queue. Now that queue's staffing series are left out (not 0), counted in
    callcenter_export_errors_total{part="staffing"} at each scrape and logged once with the
    traceback; its other series and every series of the other queue are there."""
    broken, healthy = busy_queue("issue13-broken"), busy_queue("issue13-healthy")
    real = model_module.staffing_view

    def staffing_view(windows, agents, targets):
        if targets is broken.targets:  # the broken queue's own targets: only its staffing raises
            raise ZeroDivisionError("float division by zero")
        return real(windows, agents, targets)

    monkeypatch.setattr(model_module, "staffing_view", staffing_view)
    registry = CollectorRegistry()
    registry.register(QueueCollector(FixedStates({"issue13-broken": broken, "issue13-healthy": healthy}, T0 + 600),
                                     PipelineHealth(["call.offered"])))
    with caplog.at_level("ERROR"):
        first, second = scrape(registry), scrape(registry)
    for q, present in (("issue13-healthy", True), ("issue13-broken", False)):
        for name in ("callcenter_agents_staffed", "callcenter_staffing_arrivals_per_second", "callcenter_agents_short"):
            assert ((name, (("queue", q),)) in second) is present, (name, q)
        assert ((("callcenter_agents_required", (("model", "erlang_c"), ("queue", q), ("threshold", "20"))))
                in second) is present
        # the other parts of both queues are untouched
        assert second[("callcenter_calls_offered_total", (("queue", q),))] == 12.0
        assert second[("callcenter_service_level_ratio", (("queue", q), ("threshold", "20"), ("window", "15m")))] > 0
        assert second[("callcenter_agents", (("queue", q), ("state", "available")))] == 3.0
    assert errors_of(second, "staffing") == errors_of(first, "staffing") + 1 >= 1
    assert errors_of(second, "forecast") == errors_of(first, "forecast")  # other parts: no new errors
    logged = [r for r in caplog.records if "issue13-broken" in r.getMessage()]
    assert len(logged) == 1 and "staffing" in logged[0].getMessage()  # once, not per scrape
    assert logged[0].exc_info and logged[0].exc_info[0] is ZeroDivisionError  # with the traceback


def test_issue_13_many_agents_at_a_small_load_are_scraped():
    """The benchmark's case with the real arithmetic: 200 agents available for a trickle of calls.
    Erlang B of 200 agents underflowed to 0.0 and Erlang A divided by it."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(FixedStates({"trickle": busy_queue("trickle", agents=200)}, T0 + 600),
                                     PipelineHealth(["call.offered"])))
    samples = scrape(registry)
    for model in ("erlang_c", "erlang_a"):
        labels = (("model", model), ("queue", "trickle"), ("threshold", "20"))
        assert samples[("callcenter_projected_service_level_ratio", labels)] == 1.0
        assert samples[("callcenter_agents_required", labels)] == 1.0
        assert samples[("callcenter_agents_required_gap", labels)] == -199.0
    assert samples[("callcenter_projected_abandon_rate_ratio", (("model", "erlang_a"), ("queue", "trickle")))] == 0.0


class CorruptStates(FixedStates):
    """Views as the model gives them, with one queue's live numbers corrupted."""

    def read_all(self):
        now, views = super().read_all()
        views["corrupt"]["live"]["calls_waiting"] = None  # not a number: add_metric would raise
        return now, views


def test_a_failing_part_of_the_collector_leaves_out_only_that_part_of_that_queue():
    registry = CollectorRegistry()
    registry.register(QueueCollector(CorruptStates({"corrupt": busy_queue("corrupt"), "fine": busy_queue("fine")},
                                                   T0 + 600), PipelineHealth(["call.offered"])))
    first, second = scrape(registry), scrape(registry)
    assert second[("callcenter_calls_waiting", (("queue", "fine"),))] == 0.0
    # all of the corrupt queue's live series are left out, not only the bad one ...
    for name, labels in (("callcenter_calls_waiting", ()), ("callcenter_oldest_call_wait_seconds", ()),
                         ("callcenter_agents", (("state", "available"),))):
        assert (name, tuple(sorted((("queue", "corrupt"),) + labels))) not in second
    # ... and its other parts are there
    assert second[("callcenter_calls_offered_total", (("queue", "corrupt"),))] == 12.0
    assert ("callcenter_agents_staffed", (("queue", "corrupt"),)) in second
    assert errors_of(second, "live") == errors_of(first, "live") + 1


class UnreadableStates(FixedStates):
    def read_all(self):
        raise RuntimeError("a queue's read failed")


def test_a_failed_read_of_all_queues_still_answers_the_scrape():
    """read_all() (state.py) failing leaves every queue out but the scrape answers: the pipeline's
    own series, and the failure counted as part "read"."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(UnreadableStates({}, T0), PipelineHealth(["call.offered"])))
    first, second = scrape(registry), scrape(registry)
    assert second[("callcenter_events_total", (("type", "call.offered"),))] == 0.0
    assert errors_of(second, "read") == errors_of(first, "read") + 1
    assert not any(labels and labels[0][0] == "queue" for _, labels in second)


def test_export_errors_counter_follows_the_naming_rules():
    registry = CollectorRegistry()
    registry.register(QueueCollector(FixedStates({}, T0), PipelineHealth([])))
    text = generate_latest(registry).decode()
    assert "# TYPE callcenter_export_errors_total counter" in text
    help_line = next(line for line in text.splitlines() if line.startswith("# HELP callcenter_export_errors_total"))
    assert "left out" in help_line and "by part" in help_line
    parts = {s.labels["part"] for f in text_string_to_metric_families(text) if f.name == "callcenter_export_errors"
             for s in f.samples}
    assert parts >= {"read", "windows", "staffing", "forecast", "live", "totals", "config", "pipeline"}
