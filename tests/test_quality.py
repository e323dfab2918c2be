"""Quality, outbound, callbacks and cost per call (issue 15): the formulas against hand-computed
cases, the queue model's attribution rules, the export, the config checks and the dead letters."""

from dataclasses import replace

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callpulse import events as ev
from callpulse.config import ConfigError, load_config
from callpulse.export.metrics import PipelineHealth, QueueCollector
from callpulse.kpi import quality
from callpulse.kpi.model import QueueModel
from helpers import call, epoch, event

T0 = epoch("2026-12-01T09:00:00Z")  # a Tuesday


def make_model(**overrides) -> QueueModel:
    cfg = replace(load_config(None, {}).queue("sales"), interval_minutes=(15,), **overrides)
    return QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(5, 10, 20))


def feed(model: QueueModel, events: list[dict]) -> None:
    for e in sorted(events, key=lambda e: e["time"]):
        model.apply(e, epoch(e["time"]))


def handled(call_id: str, t: float, agent: str = "a1") -> list[dict]:
    """A call answered at t + 5 and ended at t + 65."""
    return call("sales", call_id, t, "answered", t + 5, agent=agent) + [
        event("call.ended", t + 65, queue="sales", call_id=call_id, agent_id=agent)]


# ---- the formulas, by hand -------------------------------------------------------------------

def test_csat_top_two_box_and_mean():
    answers = {1: 1, 2: 1, 3: 2, 4: 3, 5: 3}  # 10 answers, 6 of them 4 or 5
    assert quality.csat_ratio(answers) == pytest.approx(0.6)
    assert quality.csat_average_score(answers) == pytest.approx((1 + 2 + 6 + 12 + 15) / 10)
    assert quality.csat_ratio({}) is None and quality.csat_average_score({s: 0 for s in range(1, 6)}) is None


def test_nps_counts_promoters_minus_detractors_and_ignores_passives():
    # 10 answers: promoters 9, 10, 10, 9, 9 (5); passives 7, 8, 8 (3); detractors 6, 0 (2) -> 30
    answers = {9: 3, 10: 2, 7: 1, 8: 2, 6: 1, 0: 1}
    assert quality.net_promoter_score(answers) == pytest.approx(30.0)
    assert quality.net_promoter_score({0: 4, 10: 1}) == pytest.approx(-60.0)
    assert quality.net_promoter_score({7: 5, 8: 5}) == 0.0  # only passives
    assert quality.net_promoter_score({}) is None


def test_fcr_connect_rate_outbound_abandons_callbacks_and_cost():
    assert quality.first_call_resolution(17, 3) == pytest.approx(0.85)
    assert quality.first_call_resolution(0, 0) is None
    assert quality.connect_rate(60, 100) == pytest.approx(0.6)
    # 400 live answers, 391 reached an agent within 2 s: 9 abandoned, 2.25 %, under the 3 % cap
    assert quality.outbound_abandon_rate(400, 391) == pytest.approx(0.0225)
    assert quality.outbound_abandon_rate(0, 0) is None
    assert quality.callback_completion_rate(45, 50) == pytest.approx(0.9)
    # 3 agents logged in for 8 h at 25 EUR an hour, 120 calls handled: 600 / 120 = 5 EUR a call
    assert quality.cost_per_handled_call(3 * 8 * 3600, 25.0, 120) == pytest.approx(5.0)
    assert quality.cost_per_handled_call(3600, 25.0, 0) is None


# ---- the model: surveys ---------------------------------------------------------------------

def test_surveys_count_at_their_own_time_in_the_queue_and_are_linked_to_handled_calls():
    m = make_model()
    feed(m, handled("c1", T0) + handled("c2", T0 + 10) + [
        event("call.survey", T0 + 200, queue="sales", call_id="c1", csat=5, nps=10, resolved=True),
        event("call.survey", T0 + 210, queue="sales", call_id="c2", csat=2, nps=6, resolved=False),
        event("call.survey", T0 + 220, queue="sales", call_id="never-seen", csat=4),
        # 40 minutes later, after the 09:00-09:15 interval closed: counted in 09:30-09:45
        event("call.survey", T0 + 2400, queue="sales", call_id="c1", nps=9),
    ])
    q = m.read(T0 + 2400)["windows"]["1h"]["quality"]
    assert q["surveys"] == 4 and q["surveys_unlinked"] == 1
    assert q["csat_answers_by_score"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}
    assert q["csat_ratio"] == pytest.approx(2 / 3)
    assert q["csat_average_score"] == pytest.approx(11 / 3)
    assert q["net_promoter_score"] == pytest.approx(100 * (2 - 1) / 3)
    assert q["first_call_resolution_ratio"] == pytest.approx(0.5)
    assert m.read(T0 + 2400)["windows"]["5m"]["quality"]["surveys"] == 1  # only the late one
    records = {r["start"][11:16]: r for r in m.closed_intervals if r["interval_minutes"] == 15}
    assert records["09:00"]["quality"]["surveys"] == 3
    assert records["09:00"]["quality"]["csat_answers_by_score"]["5"] == 1  # a whole number in the record
    assert isinstance(records["09:00"]["quality"]["surveys"], int)
    assert "09:30" not in records  # still open: the late survey changes no closed record
    assert m.intervals.open[15][T0 + 1800][1][m.index["surveys"]] == 1


def test_a_survey_a_day_after_its_call_is_unlinked():
    m = make_model()
    feed(m, handled("c1", T0) + [event("call.survey", T0 + 65 + 24 * 3600 + 61, queue="sales", call_id="c1", csat=3)])
    assert m.totals[m.index["surveys_unlinked"]] == 1


# ---- outbound ---------------------------------------------------------------------------

def attempt(call_id: str, t: float, result: str = "connected", **fields) -> dict:
    return event("call.outbound_attempt", t, queue="sales", call_id=call_id, result=result, **fields)


def test_outbound_live_connects_reach_an_agent_within_two_seconds_or_are_abandoned():
    m = make_model()
    feed(m, [
        attempt("o1", T0, agent_id="a1", campaign="renewals"),  # bridged to an agent at once
        attempt("o2", T0 + 10, campaign="renewals"),
        event("call.answered", T0 + 11.5, queue="sales", call_id="o2", agent_id="a2"),  # 1.5 s: in time
        attempt("o3", T0 + 20, campaign="renewals"),
        event("call.answered", T0 + 22.5, queue="sales", call_id="o3", agent_id="a2"),  # 2.5 s: abandoned
        attempt("o4", T0 + 30, campaign="renewals"),  # nobody came: abandoned
        event("call.answered", T0 + 39, queue="sales", call_id="o5", agent_id="a3"),  # its answer comes first
        attempt("o5", T0 + 40, campaign="winback"),  # (a second ahead of the dialer's clock)
        attempt("o6", T0 + 50, "no_answer", campaign="renewals"),
        attempt("o7", T0 + 51, "voicemail"),
    ])
    view = m.read(T0 + 120)
    o = view["windows"]["5m"]["outbound"]
    assert o["attempts"] == 7
    assert o["attempts_by_result"] == {"connected": 5, "no_answer": 1, "busy": 0, "failed": 0, "voicemail": 1, "cancelled": 0}
    assert (o["live_connects"], o["agent_connects"]) == (5, 3)  # o1, o2, o5
    assert o["connect_rate"] == pytest.approx(5 / 7)
    assert o["abandon_rate"] == pytest.approx(2 / 5)
    # outbound answers are no inbound answers, and no dead letter (no call.offered) either
    assert view["windows"]["5m"]["answered"] == 0 and view["windows"]["5m"]["offered"] == 0
    feed(m, [event("call.offered", T0 + 300, queue="sales", call_id="later")])  # moves the lateness horizon
    assert m.unmatched == [] and m.pending == {}
    assert view["outbound_30_days"] == {
        "renewals": {"live_connects": 4, "abandoned": 2, "abandon_rate": 0.5},
        "winback": {"live_connects": 1, "abandoned": 0, "abandon_rate": 0.0},
    }


def test_connected_results_are_configurable():
    m = make_model(outbound_connected_results=("connected", "voicemail"))
    feed(m, [attempt("o1", T0, "voicemail", agent_id="a1"), attempt("o2", T0 + 1, "busy")])
    assert m.read(T0 + 5)["windows"]["5m"]["outbound"]["connect_rate"] == pytest.approx(0.5)


def test_the_30_day_rule_counts_the_last_30_business_days_per_campaign():
    m = make_model(timezone="Asia/Shanghai")
    day = 24 * 3600.0
    # one abandoned live connect per day for 31 days, then one bridged one on the last day
    feed(m, [attempt(f"o{n}", T0 + n * day, campaign="c") for n in range(31)]
         + [attempt("ok", T0 + 30 * day + 5, agent_id="a1", campaign="c")])
    rule = m.read(T0 + 30 * day + 10)["outbound_30_days"]["c"]
    assert rule["live_connects"] == 31 and rule["abandoned"] == 30  # day 0 has left the 30 days
    assert len(m.campaign_days["c"]) == 30
    # a campaign that stopped dialling is forgotten once its last day has left the 30
    feed(m, [event("call.offered", T0 + 61 * day, queue="sales", call_id="much-later")])
    assert "c" not in m.campaign_days and m.read(T0 + 61 * day)["outbound_30_days"] == {}


def test_campaigns_beyond_twenty_are_summed_as_other():
    m = make_model()
    feed(m, [attempt(f"o{n}-{k}", T0 + n + k / 100, campaign=f"camp{n:02d}") for n in range(25) for k in range(n + 1)])
    rule = m.read(T0 + 60)["outbound_30_days"]
    assert len(rule) == 20 and rule["other"]["live_connects"] == sum(range(1, 7))  # camp00..camp05
    assert rule["camp24"]["live_connects"] == 25


# ---- callbacks ----------------------------------------------------------------------------

def test_callbacks_completion_wait_retries_unmatched_and_overdue():
    m = make_model(callback_open_limit_seconds=600.0)
    feed(m, [
        event("call.callback_requested", T0, queue="sales", call_id="c1", callback_id="cb1"),
        event("call.callback_requested", T0 + 5, queue="sales", call_id="c2", callback_id="cb2"),
        event("call.callback_requested", T0 + 6, queue="sales", call_id="c3"),  # no callback_id: the call's id
        event("call.callback_requested", T0 + 7, queue="sales", call_id="c1", callback_id="cb1"),  # again: once
        event("call.callback_completed", T0 + 300, queue="sales", call_id="c1", callback_id="cb1", result="no_answer"),
        event("call.callback_completed", T0 + 500, queue="sales", call_id="c1", callback_id="cb1", result="connected"),
        event("call.callback_completed", T0 + 510, queue="sales", call_id="c3", result="connected"),
        event("call.callback_completed", T0 + 520, queue="sales", call_id="x", callback_id="cbx", result="connected"),
    ])
    view = m.read(T0 + 700)
    cb = view["windows"]["15m"]["callbacks"]
    assert cb["requested"] == 3
    assert cb["completed_by_result"] == {"connected": 3, "no_answer": 1, "failed": 0, "cancelled": 0}
    assert cb["unmatched"] == 1
    assert cb["completion_rate"] == pytest.approx(1.0)  # 3 connected (one unmatched) / 3 requested
    assert cb["average_wait_seconds"] == pytest.approx((500 + 504) / 2)
    assert view["live"]["callbacks_open"] == 1  # cb2
    assert view["live"]["callbacks_open_over_limit"] == 1  # cb2 asked 695 s ago > 600
    assert m.read(T0 + 500)["live"]["callbacks_open_over_limit"] == 0


# ---- cost per handled call ----------------------------------------------------------------

def test_cost_per_handled_call_uses_logged_in_hours_including_not_ready():
    m = make_model(cost_per_agent_hour=20.0, currency="EUR")
    feed(m, [
        event("agent.logged_in", T0, agent_id="a1", queues=["sales"]),
        event("agent.state_changed", T0 + 600, agent_id="a1", queues=["sales"], state="available"),
        event("agent.state_changed", T0 + 2700, agent_id="a1", queues=["sales"], state="not_ready", reason="break"),
        event("agent.logged_out", T0 + 3600, agent_id="a1", queues=["sales"]),
        *[e for n in range(4) for e in handled(f"c{n}", T0 + 700 + n * 200)],
    ])
    view = m.read(T0 + 3600)
    today = view["windows"]["today"]
    assert today["seconds"]["agent_logged_in_seconds"] == pytest.approx(3600)
    assert today["cost_per_handled_call"] == pytest.approx(1.0 * 20.0 / 4)
    assert view["windows"]["1h"]["cost_per_handled_call"] is None  # rolling windows: not known
    assert make_model().read(T0)["windows"]["today"]["cost_per_handled_call"] is None  # no cost configured
    record = next(r for r in m.closed_intervals if r["start_epoch"] == T0)
    assert record["seconds"]["agent_logged_in_seconds"] == pytest.approx(900)


# ---- snapshots, export, config, bad input ---------------------------------------------------

def test_a_snapshot_keeps_what_later_events_need():
    m = make_model()
    feed(m, handled("c1", T0) + [
        event("call.callback_requested", T0 + 1, queue="sales", call_id="c9", callback_id="cb9"),
        attempt("o1", T0 + 30, campaign="c"),
    ])
    restored = make_model()
    restored.load_state(orjson.loads(orjson.dumps(m.to_state())))
    later = [
        event("call.survey", T0 + 100, queue="sales", call_id="c1", csat=5),
        event("call.callback_completed", T0 + 110, queue="sales", call_id="c9", callback_id="cb9", result="connected"),
        event("call.answered", T0 + 31, queue="sales", call_id="o1", agent_id="a1"),
    ]
    feed(m, later)
    feed(restored, later)
    def comparable(view: dict) -> dict:
        return {k: v for k, v in view.items() if not k.endswith("_histogram")}

    assert comparable(restored.read(T0 + 120)) == comparable(m.read(T0 + 120))
    assert restored.totals[restored.index["surveys_unlinked"]] == 0
    assert restored.totals[restored.index["outbound_agent_connects"]] == 1


def scrape(model: QueueModel, now: float, health: PipelineHealth | None = None) -> dict:
    registry = CollectorRegistry()

    class States:
        forecast = None

        def read_all(self):
            return now, {"sales": model.read(now)}

    registry.register(QueueCollector(States(), health or PipelineHealth(["call.offered"])))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_export_has_the_counts_and_ratios_and_no_caller_agent_or_call_labels():
    m = make_model(cost_per_agent_hour=12.5, currency="CNY")
    feed(m, handled("c1", T0) + [
        event("agent.logged_in", T0, agent_id="a1", queues=["sales"]),
        event("call.survey", T0 + 100, queue="sales", call_id="c1", csat=4, nps=9, resolved=True, caller="+8613800138000"),
        attempt("o1", T0 + 101, agent_id="a1", campaign="续约", caller="+8613800138001"),
        event("call.callback_requested", T0 + 102, queue="sales", call_id="c8", caller="+8613800138002"),
    ])
    s = scrape(m, T0 + 3600)
    assert s[("callcenter_surveys_total", (("queue", "sales"),))] == 1
    assert s[("callcenter_survey_csat_answers_total", (("queue", "sales"), ("score", "4")))] == 1
    assert s[("callcenter_survey_nps_answers_total", (("queue", "sales"), ("score", "9")))] == 1
    assert s[("callcenter_survey_resolved_answers_total", (("queue", "sales"), ("resolved", "true")))] == 1
    assert s[("callcenter_csat_ratio", (("queue", "sales"), ("window", "1h")))] == 1.0
    assert s[("callcenter_net_promoter_score", (("queue", "sales"), ("window", "today")))] == 100.0
    assert s[("callcenter_first_call_resolution_ratio", (("method", "survey"), ("queue", "sales"), ("window", "1h")))] == 1.0
    assert s[("callcenter_outbound_attempts_total", (("queue", "sales"), ("result", "connected")))] == 1
    assert s[("callcenter_outbound_abandon_30d_ratio", (("campaign", "续约"), ("queue", "sales")))] == 0.0
    assert s[("callcenter_outbound_abandon_limit_ratio", (("queue", "sales"),))] == 0.03
    assert s[("callcenter_callbacks_open", (("queue", "sales"),))] == 1
    assert s[("callcenter_callbacks_open_over_limit", (("queue", "sales"),))] == 0
    assert s[("callcenter_cost_per_agent_hour", (("currency", "CNY"), ("queue", "sales")))] == 12.5
    # logged in 3,600 s x 12.5 / 1 handled call
    assert s[("callcenter_cost_per_handled_call", (("currency", "CNY"), ("queue", "sales"), ("window", "today")))] == pytest.approx(12.5)
    assert ("callcenter_cost_per_handled_call", (("currency", "CNY"), ("queue", "sales"), ("window", "1h"))) not in s
    assert ("callcenter_csat_ratio", (("queue", "sales"), ("window", "5m"))) not in s  # no survey in it: absent
    labels = {name for _, pairs in s for name, _ in pairs}
    assert not labels & {"caller", "call_id", "agent_id", "agent", "callback_id"}
    assert not any("138001380" in value for _, pairs in s for _, value in pairs)


def test_valid_events_that_name_no_queue_are_counted_as_unrouted():
    health = PipelineHealth(["call.survey", "call.offered"])
    router = ev.Router()
    valid, _ = router.validate([(0, orjson.dumps(event("call.survey", T0, call_id="c1", csat=5))),
                                (1, orjson.dumps(event("call.survey", T0, call_id="c2", csat=5, queue="sales")))])
    health.count_valid(valid)
    s = scrape(make_model(), T0, health)
    assert s[("callcenter_events_unrouted_total", (("type", "call.survey"),))] == 1
    assert s[("callcenter_events_unrouted_total", (("type", "call.offered"),))] == 0


@pytest.mark.parametrize("fields", [{"csat": 6}, {"nps": "9"}, {"csat": 0}, {"nps": 11}, {"resolved": "yes"}, {}])
def test_a_bad_survey_is_a_schema_violation_for_the_dead_letter_topic(fields):
    raw = orjson.dumps(event("call.survey", T0, call_id="c1", queue="sales", **fields))
    valid, rejected = ev.Router().validate([(0, raw)])
    assert valid == [] and rejected[0].reason == ev.SCHEMA_VIOLATION and rejected[0].raw == raw


@pytest.mark.parametrize(("key", "value", "message"), [
    ("outbound_connected_results", ["conected"], "did you mean connected"),
    ("outbound_connected_results", [], "non-empty list"),
    ("currency", "eur", "ISO 4217"),
    ("outbound_abandon_limit", 3, "ratio in [0, 1]"),
    ("cost_per_agent_hour", -1, ">= 0"),
])
def test_config_errors_name_the_key(tmp_path, key, value, message):
    path = tmp_path / "c.toml"
    path.write_text(f"[queue_defaults]\n{key} = {orjson.dumps(value).decode()}\n")
    with pytest.raises(ConfigError, match=key) as info:
        load_config(path, {})
    assert message in str(info.value)


def test_the_interval_report_has_the_quality_outbound_callback_and_cost_columns():
    from callpulse.tools.report import csv_columns, csv_row

    m = make_model(cost_per_agent_hour=30.0, currency="RUB")
    feed(m, handled("c1", T0) + handled("c2", T0 + 100) + [
        event("agent.logged_in", T0, agent_id="a1", queues=["sales"]),
        event("call.survey", T0 + 300, queue="sales", call_id="c1", csat=5, nps=10, resolved=True),
        event("call.survey", T0 + 310, queue="sales", call_id="c2", csat=3, nps=5, resolved=False),
        attempt("o1", T0 + 320, agent_id="a1"), attempt("o2", T0 + 330, "busy"),
        event("call.callback_requested", T0 + 340, queue="sales", call_id="c5"),
        event("call.callback_completed", T0 + 400, queue="sales", call_id="c5", result="connected"),
        event("call.offered", T0 + 1000, queue="sales", call_id="closes-09:00"),
    ])
    record = next(r for r in m.closed_intervals if r["start_epoch"] == T0)
    row = csv_row(record)
    assert set(row) == set(csv_columns([record]))
    assert (row["surveys"], row["csat_ratio"], row["csat_average_score"], row["net_promoter_score"]) == ("2", "0.5", "4", "0")
    assert row["first_call_resolution_ratio"] == "0.5"
    assert (row["outbound_attempts"], row["outbound_connect_rate"], row["outbound_abandon_rate"]) == ("2", "0.5", "0")
    assert (row["callbacks_requested"], row["callbacks_connected"], row["average_callback_wait_seconds"]) == ("1", "1", "60")
    # a1 logged in the whole 15 minutes: 0.25 h x 30 RUB / 2 handled calls
    assert (row["agent_logged_in_seconds"], row["cost_per_handled_call"], row["currency"]) == ("900", "3.75", "RUB")
    old = {k: v for k, v in record.items() if k not in ("quality", "outbound", "callbacks", "cost_per_handled_call", "currency")}
    assert csv_row(old)["csat_ratio"] == "" and csv_row(old)["currency"] == ""  # records from before issue 15


def test_a_decimal_score_counts_as_its_integer_and_an_early_answer_of_a_bridged_call_is_no_dead_letter():
    m = make_model()
    raw = orjson.dumps(event("call.survey", T0, queue="sales", call_id="c1", csat=5.0, nps=0.0))
    valid, rejected = ev.Router().validate([(0, raw)])
    assert rejected == [] and len(valid) == 1  # the schema's integer admits 5.0
    m.apply(orjson.loads(raw), T0)
    assert m.totals[m.index["csat:5"]] == 1 and m.totals[m.index["nps:0"]] == 1
    feed(m, [event("call.answered", T0 + 9.5, queue="sales", call_id="o1", agent_id="a1"),
             attempt("o1", T0 + 10, agent_id="a1"),
             event("call.answered", T0 + 19.5, queue="sales", call_id="o2", agent_id="a1"),
             attempt("o2", T0 + 20, "busy"),
             event("call.offered", T0 + 200, queue="sales", call_id="moves-the-horizon")])
    assert m.unmatched == [] and m.pending == {}
    assert m.totals[m.index["outbound_agent_connects"]] == 1 and m.totals[m.index["answered"]] == 0


# ---- repeat-caller FCR ----------------------------------------------------------------------

def test_the_callers_keyed_hash():
    one = quality.caller_hash("+7 (495) 111-22-33", b"secret")
    assert one == quality.caller_hash("74951112233", b"secret")  # the digits are the caller
    assert one != quality.caller_hash("74951112233", b"other secret") and len(one) == 16
    assert "74951112233" not in one and "4951112233" not in one
    assert quality.caller_hash("anonymous", b"secret") is None
    assert quality.repeat_caller_fcr(3, 2) == pytest.approx(1 / 3) and quality.repeat_caller_fcr(0, 0) is None


def repeat_model() -> QueueModel:
    cfg = replace(load_config(None, {}).queue("sales"), interval_minutes=(15,), repeat_caller_seconds=3600.0)
    return QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(5, 10, 20), caller_key=b"secret")


def caller_calls() -> list[dict]:
    """A: handled, ends +100; its caller calls again at exactly +100 + 3600 (B): a repeat, the edge
    included. C: handled, ends +300; its caller's next call (D) is 1 s past the period: resolved.
    G: handled, ends +400; H from the same caller at +450 (applied before G's end, which comes 50 s
    late): a repeat. E withholds its number; F has none: neither is checked."""
    def offered(call_id, t, caller=None):
        return event("call.offered", t, queue="sales", call_id=call_id, **({"caller": caller} if caller else {}))

    def answered_and_ended(call_id, t, end):
        return [event("call.answered", t, queue="sales", call_id=call_id, agent_id="a1"),
                event("call.ended", end, queue="sales", call_id=call_id, agent_id="a1")]

    return [offered("A", T0, "+7 (495) 111-22-33"), *answered_and_ended("A", T0 + 10, T0 + 100),
            offered("B", T0 + 3700, "74951112233"), event("call.abandoned", T0 + 3710, queue="sales", call_id="B"),
            offered("C", T0 + 200, "555-0100"), *answered_and_ended("C", T0 + 210, T0 + 300),
            offered("D", T0 + 3901, "5550100"), event("call.abandoned", T0 + 3905, queue="sales", call_id="D"),
            offered("G", T0 + 350, "999"), event("call.answered", T0 + 360, queue="sales", call_id="G", agent_id="a1"),
            offered("H", T0 + 450, "999"), event("call.abandoned", T0 + 455, queue="sales", call_id="H"),
            event("call.ended", T0 + 400, queue="sales", call_id="G", agent_id="a1"),
            offered("E", T0 + 500, "anonymous"), *answered_and_ended("E", T0 + 510, T0 + 600),
            offered("F", T0 + 700), *answered_and_ended("F", T0 + 710, T0 + 800)]


def test_repeat_caller_fcr_at_the_period_edge_and_out_of_order():
    m = repeat_model()
    events = sorted(caller_calls(), key=lambda e: e["time"])
    g_end = next(e for e in events if e["type"] == "call.ended" and e["call_id"] == "G")
    events.remove(g_end)
    events.insert(events.index(next(e for e in events if e["call_id"] == "H" and e["type"] == "call.abandoned")) + 1, g_end)
    before = [e for e in events if epoch(e["time"]) < T0 + 3755]
    for e in before:
        assert m.apply(e, epoch(e["time"])) in ("applied", "late")
    # nothing is final before A's period and the lateness passed (A ended +100: +3760)
    m.apply(event("call.offered", T0 + 3755, queue="sales", call_id="probe1"), T0 + 3755)
    assert m.read(T0 + 3755)["totals"]["repeat_caller_checked"] == 0
    for e in events[len(before):]:
        m.apply(e, epoch(e["time"]))
    m.apply(event("call.offered", T0 + 5000, queue="sales", call_id="probe2"), T0 + 5000)
    q = m.read(T0 + 5000)["windows"]["today"]["quality"]
    # checked A, C, G (E and F have no caller); repeated A (B at the edge) and G (H, applied first)
    assert (q["repeat_caller_checked"], q["repeat_caller_repeated"]) == (3, 2)
    assert q["repeat_caller_fcr_ratio"] == pytest.approx(1 / 3)
    assert m.handled_callers == {}
    s = scrape(m, T0 + 5000)
    assert s[("callcenter_repeat_caller_checked_calls_total", (("queue", "sales"),))] == 3
    assert s[("callcenter_repeat_caller_repeated_calls_total", (("queue", "sales"),))] == 2
    assert s[("callcenter_first_call_resolution_ratio", (("method", "repeat_caller"), ("queue", "sales"), ("window", "today")))] == pytest.approx(1 / 3)


def test_repeat_caller_state_survives_a_snapshot_and_keeps_no_numbers():
    events = sorted(caller_calls(), key=lambda e: e["time"])
    whole, part = repeat_model(), repeat_model()
    feed(whole, events)
    feed(part, events[:9])
    state = orjson.dumps(part.to_state())
    assert b"4951112233" not in state and b"5550100" not in state and b"555-0100" not in state
    restored = repeat_model()
    restored.load_state(orjson.loads(state))
    feed(restored, events[9:])
    for m in (whole, restored):
        m.apply(event("call.offered", T0 + 5000, queue="sales", call_id="probe"), T0 + 5000)
    assert restored.read(T0 + 5000)["totals"] == whole.read(T0 + 5000)["totals"]
    assert whole.read(T0 + 5000)["totals"]["repeat_caller_checked"] == 3


def test_without_a_key_no_caller_is_hashed_or_kept():
    cfg = replace(load_config(None, {}).queue("sales"), repeat_caller_seconds=3600.0)
    m = QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(5, 10, 20))
    feed(m, caller_calls())
    assert m.call_callers == {} and m.handled_callers == {}
    assert m.read(T0 + 5000)["totals"]["repeat_caller_checked"] == 0


def test_a_call_transferred_back_into_the_queue_is_one_call_not_a_repeat():
    m = repeat_model()
    q = {"queue": "sales", "call_id": "X"}
    feed(m, [event("call.offered", T0, caller="+7 495 111-22-33", **q),
             event("call.answered", T0 + 5, agent_id="a1", **q),
             event("call.transferred", T0 + 60, agent_id="a1", **q),
             event("call.offered", T0 + 62, caller="+7 495 111-22-33", **q),
             event("call.answered", T0 + 70, agent_id="a2", **q),
             event("call.ended", T0 + 200, agent_id="a2", **q),
             event("call.offered", T0 + 9000, queue="sales", call_id="probe")])
    totals = m.read(T0 + 9000)["totals"]
    assert (totals["repeat_caller_checked"], totals["repeat_caller_repeated"]) == (1, 0)


def test_a_frequent_caller_keeps_only_the_offers_of_the_lateness():
    m = repeat_model()
    events = []
    for n in range(300):  # a switchboard number calling every 10 s, each call handled
        events += handled(f"f{n}", T0 + 10 * n)
        events[-3]["caller"] = "+49 30 1234567"  # the offer of that call
    feed(m, events[:-2])  # up to the last offer
    offers = m.recent_contacts[quality.caller_hash("+49301234567", b"secret")]
    assert len(offers) <= 7  # the offers of the last 60 s, not all 300
    assert sum(len(calls) for calls in m.handled_callers.values()) == 299  # each handled call in its period
    # each call ends 65 s after its offer: the offers from 70 s later on repeat it (all but the last 6)
    flags = [flag for calls in m.handled_callers.values() for _, flag in calls]
    assert flags.count(1.0) == 299 - 6


def test_an_offer_at_exactly_the_period_edge_counts_even_when_it_comes_last():
    m = repeat_model()
    feed(m, [event("call.offered", T0, queue="sales", call_id="A", caller="555-0100"),
             event("call.answered", T0 + 5, queue="sales", call_id="A", agent_id="a1"),
             event("call.ended", T0 + 100, queue="sales", call_id="A", agent_id="a1"),
             # the watermark reaches the edge plus the lateness before the edge's offer is applied
             event("call.offered", T0 + 100 + 3600 + 60, queue="sales", call_id="other")])
    assert m.read(T0 + 3760)["totals"]["repeat_caller_checked"] == 0  # not counted yet: the edge may still come
    m.apply(event("call.offered", T0 + 3700, queue="sales", call_id="B", caller="5550100"), T0 + 3700)
    m.apply(event("call.offered", T0 + 3800, queue="sales", call_id="later"), T0 + 3800)
    totals = m.read(T0 + 3800)["totals"]
    assert (totals["repeat_caller_checked"], totals["repeat_caller_repeated"]) == (1, 1)


def test_a_late_older_offer_does_not_drop_a_newer_one_still_needed():
    m = repeat_model()
    feed(m, [event("call.offered", T0, queue="sales", call_id="A", caller="555-0100"),
             event("call.answered", T0 + 5, queue="sales", call_id="A", agent_id="a1")])
    m.apply(event("call.offered", T0 + 100, queue="sales", call_id="B", caller="5550100"), T0 + 100)
    m.apply(event("call.offered", T0 + 50, queue="sales", call_id="C", caller="5550100"), T0 + 50)  # late
    m.apply(event("call.offered", T0 + 140, queue="sales", call_id="x"), T0 + 140)  # prunes the old offers
    m.apply(event("call.ended", T0 + 90, queue="sales", call_id="A", agent_id="a1"), T0 + 90)  # A ends late
    m.apply(event("call.offered", T0 + 9000, queue="sales", call_id="probe"), T0 + 9000)
    totals = m.read(T0 + 9000)["totals"]
    assert (totals["repeat_caller_checked"], totals["repeat_caller_repeated"]) == (1, 1)  # B repeats A


def test_a_call_offered_again_before_its_first_leg_ended_is_not_its_own_repeat():
    m = repeat_model()
    q = {"queue": "sales", "call_id": "X"}
    feed(m, [event("call.offered", T0, caller="555-0100", **q), event("call.answered", T0 + 5, agent_id="a1", **q)])
    m.apply(event("call.offered", T0 + 62, caller="555-0100", **q), T0 + 62)  # applied before the transfer
    m.apply(event("call.transferred", T0 + 60, agent_id="a1", **q), T0 + 60)
    m.apply(event("call.offered", T0 + 9000, queue="sales", call_id="probe"), T0 + 9000)
    totals = m.read(T0 + 9000)["totals"]
    assert (totals["repeat_caller_checked"], totals["repeat_caller_repeated"]) == (1, 0)


# ---- repeat-caller FCR across a group of queues (repeat_caller_group) -------------------------

KEY_ENV = {"CALLPULSE_CALLER_HASH_KEY": "a-caller-key-for-tests"}
GROUP_TOML = """
[queues.sales]
repeat_caller_group = "retail"
repeat_caller_seconds = 3600
[queues.support]
repeat_caller_group = "retail"
repeat_caller_seconds = 3600
[queues.billing]
repeat_caller_seconds = 3600
"""


def group_models(tmp_path) -> tuple[dict[str, QueueModel], dict[str, tuple[str, ...]]]:
    path = tmp_path / "callpulse.toml"
    path.write_text(GROUP_TOML, encoding="utf-8")
    config = load_config(path, KEY_ENV)
    models = {q: QueueModel(config.queue(q), lateness_seconds=60.0, histogram_bounds=(5, 10, 20), caller_key=b"secret")
              for q in ("sales", "support", "billing")}
    return models, config.repeat_caller_contacts()


def route(models: dict[str, QueueModel], contacts, events: list[dict]) -> list[tuple[str, str]]:
    """Apply each event, in time order, to every queue model events.keys_of sends it to, as the
    pipeline does: (queue, outcome) per application."""
    outcomes = []
    for e in sorted(events, key=lambda e: e["time"]):
        for key in ev.keys_of(e, contacts):
            if key in models:
                outcomes.append((key, models[key].apply(e, epoch(e["time"]))))
    return outcomes


def test_a_group_routes_each_offer_with_a_caller_to_its_other_queues(tmp_path):
    _, contacts = group_models(tmp_path)
    assert contacts == {"sales": ("support",), "support": ("sales",)}  # billing is in no group
    offer = event("call.offered", T0, queue="sales", call_id="A", caller="555-0100")
    assert ev.keys_of(offer, contacts) == ("sales", "support")
    assert ev.keys_of(event("call.offered", T0, queue="sales", call_id="B"), contacts) == ("sales",)  # no caller
    assert ev.keys_of(event("call.abandoned", T0, queue="sales", call_id="A"), contacts) == ("sales",)
    assert ev.keys_of(event("call.offered", T0, queue="billing", call_id="C", caller="1"), contacts) == ("billing",)
    router = ev.Router(contacts=contacts)
    valid, rejected = router.validate([(0, orjson.dumps(offer))])
    assert rejected == [] and valid[0].queues == ("sales", "support")


def test_a_call_to_another_queue_of_the_group_repeats_a_handled_call(tmp_path):
    """By hand, period 3600 s, lateness 60 s:
      A: sales, caller 555-0100, handled (ends +65); the caller calls support at +1000 (B): A repeated.
      C: sales, caller 777, handled (ends +165); the caller calls billing at +500 (no group: not a
         repeat) and support at +165 + 3600 + 1 (D, past the period): C resolved.
      E: support, caller 888, handled (ends +265), then transferred to sales at +300 (the same call:
         not E's repeat); sales handles its leg (ends +400).
      B is handled in support (ends +1065); its caller calls sales at +2000 (F): B repeated.
    Checked: sales A, C, E's sales leg (ends +400): A repeated; support B, E's support leg: B repeated."""
    models, contacts = group_models(tmp_path)

    def in_queue(queue, call_id, t, caller, end=None):
        out = [event("call.offered", t, queue=queue, call_id=call_id, caller=caller)]
        if end is None:
            return out + [event("call.abandoned", t + 5, queue=queue, call_id=call_id)]
        return out + [event("call.answered", t + 5, queue=queue, call_id=call_id, agent_id="a1"),
                      event("call.ended", end, queue=queue, call_id=call_id, agent_id="a1")]

    events = [*in_queue("sales", "A", T0, "555-0100", end=T0 + 65),
              *in_queue("support", "B", T0 + 1000, "+5550100", end=T0 + 1065),
              *in_queue("sales", "C", T0 + 100, "777", end=T0 + 165),
              *in_queue("billing", "X", T0 + 500, "777"),
              *in_queue("support", "D", T0 + 3766, "777"),
              event("call.offered", T0 + 200, queue="support", call_id="E", caller="888"),
              event("call.answered", T0 + 205, queue="support", call_id="E", agent_id="a2"),
              event("call.transferred", T0 + 265, queue="support", call_id="E", agent_id="a2"),
              event("call.offered", T0 + 300, queue="sales", call_id="E", caller="888"),
              event("call.answered", T0 + 305, queue="sales", call_id="E", agent_id="a1"),
              event("call.ended", T0 + 400, queue="sales", call_id="E", agent_id="a1"),
              *in_queue("sales", "F", T0 + 2000, "555-0100")]
    outcomes = route(models, contacts, events)
    assert outcomes.count(("support", "contact")) == 4  # sales' offers: A, C, E, F
    assert outcomes.count(("sales", "contact")) == 3  # support's: B, D, E
    assert ("billing", "contact") not in outcomes
    later = T0 + 9000  # every period and the lateness passed
    for queue, model in models.items():
        model.apply(event("call.offered", later, queue=queue, call_id=f"probe-{queue}"), later)
    sales, support = models["sales"].read(later)["totals"], models["support"].read(later)["totals"]
    assert (sales["repeat_caller_checked"], sales["repeat_caller_repeated"]) == (3, 1)  # A, C, E; A repeated
    assert (support["repeat_caller_checked"], support["repeat_caller_repeated"]) == (2, 1)  # B, E; B repeated
    assert sales["offered"] == 5 and support["offered"] == 4  # own offers and the probe: a contact is no offer
    billing = models["billing"].read(later)["totals"]
    assert (billing["repeat_caller_checked"], billing["offered"]) == (0, 2)


def test_a_group_is_made_of_configured_queues(tmp_path):
    path = tmp_path / "callpulse.toml"
    path.write_text('[queue_defaults]\nrepeat_caller_group = "all"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^queue_defaults.repeat_caller_group: a repeat-caller group is made of configured queues"):
        load_config(path, {})
    path.write_text('[queues.sales]\nrepeat_caller_group = "solo"\n', encoding="utf-8")
    assert load_config(path, KEY_ENV).repeat_caller_contacts() == {}  # a group of one is the queue alone
    path.write_text(GROUP_TOML + '[queues.returns]\nrepeat_caller_group = "retail"\nrepeat_caller_seconds = 0\n',
                    encoding="utf-8")
    assert load_config(path, {}).repeat_caller_contacts() == {}  # no hash key: the FCR is off, nothing routed
    # returns checks no repeats (period 0): its offers go to the others, none come to it
    assert load_config(path, KEY_ENV).repeat_caller_contacts() == {
        "sales": ("support",), "support": ("sales",), "returns": ("sales", "support")}


def test_a_contact_older_than_the_lateness_is_ignored_and_a_quiet_queue_keeps_few(tmp_path):
    models, _ = group_models(tmp_path)
    sales = models["sales"]
    sales.apply(event("call.offered", T0 + 1000, queue="sales", call_id="own", caller="555-0199"), T0 + 1000)
    for n, t in enumerate((T0 + 100, T0 + 101)):  # another caller's offers in support, older than sales' lateness
        assert sales.apply(event("call.offered", t, queue="support", call_id=f"old{n}", caller="555-0100"), t) == "contact"
    sales.apply(event("call.abandoned", T0 + 1001.5, queue="sales", call_id="own"), T0 + 1001.5)  # (used to raise)
    assert quality.caller_hash("5550100", b"secret") not in sales.recent_contacts
    quiet = models["support"]  # no event of its own: 3,000 callers of sales, one a second
    for n in range(3000):
        quiet.apply(event("call.offered", T0 + n, queue="sales", call_id=f"q{n}", caller=f"+1 555 {n:04d}"), T0 + n)
    assert 55 <= len(quiet.recent_contacts) <= 62  # the lateness (60 s) before the newest, not 3,000
    restored = QueueModel(quiet.config, lateness_seconds=60.0, histogram_bounds=(5, 10, 20), caller_key=b"secret")
    restored.load_state(orjson.loads(orjson.dumps(quiet.to_state())))
    for m in (quiet, restored):  # a rebuild forgets the same contacts at the same events
        m.apply(event("call.offered", T0 + 3030, queue="sales", call_id="next", caller="+1 555 9999"), T0 + 3030)
    assert restored.recent_contacts == quiet.recent_contacts
    for n in range(500):  # one caller calling sales every 10 s: the quiet queue keeps its last minute only
        t = T0 + 4000 + 10 * n
        quiet.apply(event("call.offered", t, queue="sales", call_id=f"r{n}", caller="+1 555 0000"), t)
    assert len(quiet.recent_contacts[quality.caller_hash("+1 555 0000", b"secret")]) <= 8
