"""Dashboards as code: the committed JSON is what the generator writes, and it follows the house rules.

Regenerate after changing grafana/*.py: `python -m grafana.generate` (then commit the JSON).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import require_tool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grafana import generate  # noqa: E402
from grafana.lint import (  # noqa: E402
    iter_panels,
    metric_names,
    panel_queries,
    render_query,
    uses_rate_interval_everywhere,
    variables_used,
)

DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
RECORDING_RULES = ROOT / "deploy" / "prometheus" / "rules" / "recording.rules.yml"

UIDS = {
    "wallboard.json": "callpulse-wallboard",
    "queue.json": "callpulse-queue",
    "agents.json": "callpulse-agents",
    "pipeline.json": "callpulse-pipeline",
}

# Metrics the worker exports (README "Metric reference" and the issue-3 contract), without the
# `callcenter_` prefix. Counters carry `_total`; histograms are listed by base name.
GAUGES = {
    "calls_waiting", "oldest_call_wait_seconds", "calls_waiting_over_threshold", "agents", "calls_orphaned",
    "window_calls", "window_calls_within_threshold", "service_level_ratio", "answer_rate_ratio",
    "abandon_rate_ratio", "average_answer_wait_seconds", "average_abandon_wait_seconds",
    "average_handle_seconds", "occupancy_ratio", "service_level_target_ratio",
    "short_abandon_threshold_seconds", "queue_info", "last_event_timestamp_seconds", "input_partitions_held",
    "queue_open", "calls_waiting_limit", "oldest_call_wait_limit_seconds", "abandon_rate_limit_ratio",
    "short_abandon_rate_limit_ratio", "event_stall_limit_seconds", "alert_min_calls",
    "agents_not_ready",  # {queue, reason}
    "staffing_arrivals_per_second", "staffing_handle_seconds", "staffing_patience_seconds", "agents_staffed",
    "agents_required", "agents_required_gap", "projected_service_level_ratio", "projected_answer_wait_seconds",
    "projected_abandon_rate_ratio",
    "agents_short", "understaffed_seconds", "understaffed_limit_agents", "understaffed_limit_seconds",
    "forecast_offered_calls", "forecast_offered_to_date_calls", "actual_offered_calls", "offered_vs_forecast_ratio",
    "forecast_handle_seconds", "actual_handle_seconds", "forecast_planned_agents", "forecast_wape_ratio",
    "reforecast_offered_calls", "forecast_loaded_timestamp_seconds",
    # issue 15, slice 1 (quality, outbound, callbacks, cost per call): window gauges {queue, window}
    "csat_ratio", "csat_average_score", "net_promoter_score", "first_call_resolution_ratio",
    "outbound_connect_rate_ratio", "outbound_abandon_rate_ratio", "callback_completion_rate_ratio",
    "average_callback_wait_seconds", "cost_per_handled_call",
    # ... live and config gauges
    "callbacks_open", "callbacks_open_over_limit", "outbound_abandon_30d_ratio", "outbound_live_connects_30d",
    "outbound_abandon_limit_ratio", "callback_open_limit_seconds", "cost_per_agent_hour",
}
COUNTERS = {
    "calls_offered_total", "calls_answered_total", "calls_abandoned_total", "calls_short_abandoned_total",
    "calls_handled_total", "calls_flowed_out_total", "calls_answered_within_threshold_total",
    "calls_abandoned_within_threshold_total", "handle_seconds_total", "events_total", "events_rejected_total",
    "events_applied_total", "events_duplicate_total", "events_late_total", "forecast_load_errors_total",
    # issue 15, slice 1
    "surveys_total", "survey_csat_answers_total", "survey_nps_answers_total", "survey_resolved_answers_total",
    "surveys_unlinked_total", "outbound_attempts_total", "outbound_live_connects_total",
    "outbound_agent_connects_total", "callbacks_requested_total", "callbacks_completed_total",
    "callbacks_unmatched_total", "callback_wait_seconds_total", "agent_logged_in_seconds_total",
}
HISTOGRAMS = {"answer_wait_seconds", "abandon_wait_seconds", "event_lag_seconds"}
KNOWN_METRICS = (
    {f"callcenter_{n}" for n in GAUGES | COUNTERS}
    | {f"callcenter_{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
    | {"up"}
)
# Recording rules fixed by the contract (deploy/prometheus/rules/recording.rules.yml defines them).
BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
CONTRACT_RECORDS = (
    {"queue:callcenter_service_level_by_formula:ratio", "queue:callcenter_service_level:ratio"}
    | {f"queue:callcenter_service_level_error:ratio_rate{w}" for w in BURN_WINDOWS}
    | {f"queue:callcenter_service_level_calls:increase{w}" for w in BURN_WINDOWS}
    | {f"queue:callcenter_error_budget_burn_rate:rate{w}" for w in BURN_WINDOWS}
    # issue 15: survey KPIs over 1d and 7d, outbound and callbacks over 1d
    | {f"queue:callcenter_{kpi}{w}" for w in ("1d", "7d")
       for kpi in ("csat:ratio_rate", "csat_score:mean", "net_promoter_score:ratio_rate",
                   "first_call_resolution:ratio_rate", "survey_csat_answers:increase",
                   "survey_nps_answers:increase", "survey_resolved_answers:increase")}
    | {"queue:callcenter_outbound_connect:ratio_rate1d", "queue:callcenter_outbound_abandon:ratio_rate1d",
       "queue:callcenter_callback_completion:ratio_rate1d"}
)
ALLOWED_VARIABLES = {"__rate_interval", "queue", "window"}


def load_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict]:
    found = load_dashboards()
    assert found, f"no dashboards in {DASHBOARD_DIR}: run python -m grafana.generate"
    return found


def content_panels(dashboard: dict) -> list[dict]:
    return [p for p in iter_panels(dashboard) if p.get("type") != "row"]


def variable(dashboard: dict, name: str) -> dict | None:
    return next((v for v in dashboard.get("templating", {}).get("list", []) if v.get("name") == name), None)


# --- generated files ------------------------------------------------------------------------------

def test_committed_json_is_what_the_generator_writes(tmp_path):
    generate.write(tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in sorted(tmp_path.glob("*.json"))}
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(DASHBOARD_DIR.glob("*.json"))}
    assert sorted(fresh) == sorted(committed), "dashboard files differ: run python -m grafana.generate"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} out of date: run python -m grafana.generate and commit the JSON"


def test_output_is_sorted_indented_and_deterministic(tmp_path):
    generate.write(tmp_path / "a")
    generate.write(tmp_path / "b")
    for path in sorted((tmp_path / "a").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert text == (tmp_path / "b" / path.name).read_text(encoding="utf-8"), path.name
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n", path.name


def test_uids_are_unique_and_stable(dashboards):
    assert {name: d["uid"] for name, d in dashboards.items()} == UIDS
    for name, d in dashboards.items():
        ids = [p["id"] for p in iter_panels(d)]
        assert ids == list(range(1, len(ids) + 1)), f"{name}: panel ids must be 1..n in layout order"


# --- lint -----------------------------------------------------------------------------------------

def test_every_panel_has_a_unit_and_a_description(dashboards):
    missing = [
        (name, p.get("title"))
        for name, d in dashboards.items() for p in content_panels(d)
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit") or not p.get("description", "").strip()
    ]
    assert not missing, f"panels without unit or description: {missing}"


def test_every_panel_and_target_uses_the_datasource_variable(dashboards):
    wrong = []
    for name, d in dashboards.items():
        for p in content_panels(d):
            if p.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
                wrong.append((name, p.get("title"), "panel", p.get("datasource")))
            assert p.get("targets"), f"{name}: panel {p.get('title')!r} has no query"
            for t in p["targets"]:
                if t.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
                    wrong.append((name, p.get("title"), t.get("refId"), t.get("datasource")))
        queue = variable(d, "queue")
        if queue and queue.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
            wrong.append((name, "variable queue", queue.get("datasource")))
    assert not wrong, f"hard-coded data sources: {wrong}"


def test_every_rate_and_increase_uses_rate_interval(dashboards):
    bad = [(name, title, call) for name, d in dashboards.items()
           for title, expr in panel_queries(d) for call in uses_rate_interval_everywhere(expr)]
    assert not bad, f"use [$__rate_interval]: {bad}"


def test_every_dashboard_has_the_datasource_and_queue_variables(dashboards):
    for name, d in dashboards.items():
        ds = variable(d, "datasource")
        assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", name
        queue = variable(d, "queue")
        assert queue and queue["type"] == "query", name
        assert queue["query"] == "label_values(callcenter_queue_info, queue)", name
        assert queue["multi"] is True and queue["includeAll"] is True, name


def test_queries_use_only_known_variables_and_render(dashboards):
    for name, d in dashboards.items():
        defined = {v["name"] for v in d["templating"]["list"]} | {"__rate_interval"}
        for title, expr in panel_queries(d):
            used = variables_used(expr)
            assert used <= ALLOWED_VARIABLES, f"{name} {title!r}: {used - ALLOWED_VARIABLES} in {expr}"
            assert used <= defined, f"{name} {title!r}: {used - defined} is not a variable of the dashboard"
            if "queue" in used:
                assert 'queue=~"$queue"' in expr and 'queue="$queue"' not in expr, \
                    f"{name} {title!r}: $queue is multi-valued, match it with =~"
            rendered = render_query(expr)
            # nothing of Grafana's left; "$1" (a label_replace capture group) is PromQL's own
            assert not variables_used(rendered) and not re.search(r"\$(?![0-9])", rendered), rendered


def test_every_metric_name_is_exported_or_recorded(dashboards):
    unknown = []
    for name, d in dashboards.items():
        for title, expr in panel_queries(d):
            names = metric_names(expr)
            assert names, f"{name} {title!r}: no metric found in {expr}"
            unknown += [(name, title, m) for m in names if m not in KNOWN_METRICS and m not in CONTRACT_RECORDS]
    assert not unknown, f"metric names neither exported nor recorded (typo?): {unknown}"


def test_recorded_series_are_defined_by_the_recording_rules(dashboards):
    """Each recorded name a panel reads is one the contract fixes and, once the rules file exists,
    one it defines."""
    defined = set(CONTRACT_RECORDS)
    if RECORDING_RULES.exists():
        rules = yaml.safe_load(RECORDING_RULES.read_text(encoding="utf-8"))
        defined &= {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    used = {m for d in dashboards.values() for _, expr in panel_queries(d) for m in metric_names(expr) if ":" in m}
    assert used, "the dashboards should read recorded series"
    assert used <= defined, f"not defined in {RECORDING_RULES.relative_to(ROOT)}: {sorted(used - defined)}"


def test_every_query_is_valid_promql(dashboards, tmp_path):
    promtool = require_tool("promtool", "the Debian package prometheus (`make tools` installs it)")
    rules = [{"record": f"grafana_check:q{i}", "expr": render_query(expr)}
             for i, (_, expr) in enumerate(q for d in dashboards.values() for q in panel_queries(d))]
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- dashboards -----------------------------------------------------------------------------------

def test_wallboard_is_a_5s_kiosk_board_with_a_row_per_queue(dashboards):
    d = dashboards["wallboard.json"]
    assert d["refresh"] == "5s"
    rows = [p for p in d["panels"] if p["type"] == "row"]
    assert len(rows) == 1 and rows[0].get("repeat") == "queue" and not rows[0]["collapsed"]
    tiles = content_panels(d)
    assert {p["type"] for p in tiles} == {"stat"}
    assert all(p["gridPos"]["h"] >= 5 and p["gridPos"]["w"] >= 2 for p in tiles), "tiles too small for a TV"
    assert sum(p["gridPos"]["w"] for p in tiles) == 24 and {p["gridPos"]["y"] for p in tiles} == {1}
    assert all(t.get("instant") for p in tiles for t in p["targets"]), "tiles show the latest value"
    window = variable(d, "window")
    assert window and window["current"]["value"] == "15m"
    # every tile reads one series per queue (max by queue...) even while two workers export it
    for p in tiles:
        for t in p["targets"]:
            assert re.search(r"max by \(queue[,)]", t["expr"]), (p["title"], t["expr"])


def wallboard_tile(dashboards, title: str) -> dict:
    (tile,) = [p for p in content_panels(dashboards["wallboard.json"]) if p["title"] == title]
    return tile


def test_wallboard_service_level_follows_each_queues_thresholds(dashboards):
    """One stat panel per queue row with one value per threshold the queue has a target for; no
    threshold is written into the dashboard (a queue set up for 15 s and 30 s must not show "–")."""
    for _, expr in panel_queries(dashboards["wallboard.json"]):
        assert "threshold=" not in expr and "threshold!" not in expr, f"hard-coded threshold in {expr}"
    sl = wallboard_tile(dashboards, "Service level")
    defaults = sl["fieldConfig"]["defaults"]
    assert defaults["unit"] == "percentunit" and defaults["decimals"] == 1 and defaults["min"] == 0
    assert defaults["thresholds"]["mode"] == "percentage"
    assert [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"]] == \
        [(None, "red"), (90.0, "orange"), (100.0, "green")], "green from 100 % of the target (max)"
    assert sl["options"]["textMode"] == "value_and_name", "each value is named SL <T> s"
    reference, value = (t["expr"] for t in sl["targets"])
    assert "callcenter_service_level_target_ratio" in reference and '"kind", "reference"' in reference
    assert "queue:callcenter_service_level:ratio" in value and '"kind", "value"' in value
    assert 'window="$window"' in value

    # The transformations refer to what the queries produce.
    steps = {t["id"]: t["options"] for t in sl["transformations"]}
    assert list(steps) == ["joinByLabels", "convertFieldType", "sortBy", "rowsToFields", "filterFieldsByName"]
    assert steps["joinByLabels"] == {"value": "kind", "join": ["threshold", "tile"]}
    for expr in (reference, value):
        assert "max by (queue, threshold)" in expr and '"tile", "SL $1 s", "threshold", "(.+)"' in expr
    assert steps["convertFieldType"]["conversions"] == [{"targetField": "threshold", "destinationType": "number"}]
    assert steps["sortBy"]["sort"] == [{"field": "threshold", "desc": False}]
    handlers = {m["fieldName"]: m["handlerKey"] for m in steps["rowsToFields"]["mappings"]}
    assert handlers == {"tile": "field.name", "value": "field.value", "reference": "max", "threshold": "__ignore"}
    # Grafana anchors a pattern that is not /.../: it must keep "SL 15 s" and drop the columns of
    # the joined table, which is what is left when no threshold has a value.
    pattern = re.compile("^" + steps["filterFieldsByName"]["include"]["pattern"] + "$")
    assert pattern.match("SL 15 s") and pattern.match("SL 7.5 s")
    assert not any(pattern.match(name) for name in ("threshold", "tile", "value", "reference"))


def test_wallboard_service_level_queries_per_threshold(dashboards, tmp_path):
    """The two queries of the service-level panel, run by promtool on a queue configured for 15 s
    and 30 s (no calls within the window yet for 30 s) next to another queue with 10 s and 20 s."""
    promtool = require_tool("promtool", "the Debian package prometheus (`make tools` installs it)")
    reference, value = (render_query(t["expr"], queue="utility", window="5m")
                        for t in wallboard_tile(dashboards, "Service level")["targets"])
    sl = "queue:callcenter_service_level:ratio"
    target = "callcenter_service_level_target_ratio"
    series = [
        (f'{target}{{queue="utility",threshold="15",instance="w1"}}', "0.8"),
        (f'{target}{{queue="utility",threshold="30",instance="w1"}}', "0.9"),
        # takeover overlap: the same target from a second worker
        (f'{target}{{queue="utility",threshold="30",instance="w2"}}', "0.9"),
        (f'{sl}{{queue="utility",threshold="15",window="5m",formula="SL-C"}}', "0.75"),
        (f'{sl}{{queue="utility",threshold="15",window="15m",formula="SL-C"}}', "0.5"),
        (f'{target}{{queue="sales",threshold="10"}}', "0.8"),
        (f'{sl}{{queue="sales",threshold="10",window="5m",formula="SL-C"}}', "0.9"),
    ]
    def sample(threshold, kind, v):
        return {"labels": f'{{queue="utility",threshold="{threshold}",tile="SL {threshold} s",kind="{kind}"}}',
                "value": v}
    promql_test(promtool, tmp_path / "sl.test.yml", series, [
        {"expr": reference, "eval_time": "0m",
         "exp_samples": [sample("15", "reference", 0.8), sample("30", "reference", 0.9)]},
        {"expr": value, "eval_time": "0m", "exp_samples": [sample("15", "value", 0.75)]},
    ])


def promql_test(promtool: str, path, series: list[tuple[str, str]], expr_tests: list[dict]) -> None:
    """promtool's unit test of `expr_tests` (promql_expr_test cases) over `series` ((series,
    values) pairs, one sample a minute); fails with promtool's output."""
    test = {"evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "promql_expr_test": expr_tests,
    }]}
    path.write_text(yaml.safe_dump(test, allow_unicode=True), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wallboard_oldest_wait_reads_as_a_clock(dashboards):
    oldest = wallboard_tile(dashboards, "Oldest wait")["fieldConfig"]["defaults"]
    # hh:mm:ss (00:02:05), never "2 min" for anything from 90 s to 149 s
    assert oldest["unit"] == "dthms" and "decimals" not in oldest


def test_queue_detail_shows_every_kpi(dashboards):
    used = {m for _, e in panel_queries(dashboards["queue.json"]) for m in metric_names(e)}
    for metric in (
        "queue:callcenter_service_level:ratio", "queue:callcenter_service_level_by_formula:ratio",
        "callcenter_service_level_target_ratio", "callcenter_answer_rate_ratio", "callcenter_abandon_rate_ratio",
        "callcenter_average_answer_wait_seconds", "callcenter_average_abandon_wait_seconds",
        "callcenter_average_handle_seconds", "callcenter_occupancy_ratio", "callcenter_calls_waiting",
        "callcenter_oldest_call_wait_seconds", "callcenter_calls_offered_total", "callcenter_calls_answered_total",
        "callcenter_calls_abandoned_total", "callcenter_calls_flowed_out_total",
        "callcenter_answer_wait_seconds_bucket", "callcenter_abandon_wait_seconds_bucket",
        "queue:callcenter_error_budget_burn_rate:rate1h",
    ):
        assert metric in used, metric


STAFFING_PANELS = {  # title -> (panel type, unit, metrics it must read)
    "Agents short now": ("stat", "short", {"callcenter_agents_short", "callcenter_understaffed_limit_agents"}),
    "Short for": ("stat", "dthms", {"callcenter_understaffed_seconds", "callcenter_understaffed_limit_seconds"}),
    "Agents required vs staffed": ("timeseries", "short", {
        "callcenter_agents_required", "callcenter_agents_staffed", "callcenter_forecast_planned_agents"}),
    "Projected vs actual service level": ("timeseries", "percentunit", {
        "callcenter_projected_service_level_ratio", "callcenter_service_level_ratio",
        "callcenter_service_level_target_ratio"}),
    "Projected vs actual ASA": ("timeseries", "s", {
        "callcenter_projected_answer_wait_seconds", "callcenter_average_answer_wait_seconds"}),
    "Projected vs actual abandon rate": ("timeseries", "percentunit", {
        "callcenter_projected_abandon_rate_ratio", "callcenter_abandon_rate_ratio"}),
    "Staffing inputs": ("timeseries", "suffix: calls/h", {
        "callcenter_staffing_arrivals_per_second", "callcenter_staffing_handle_seconds",
        "callcenter_staffing_patience_seconds"}),
    "Offered today vs forecast": ("timeseries", "short", {
        "callcenter_actual_offered_calls", "callcenter_forecast_offered_to_date_calls",
        "callcenter_forecast_offered_calls", "callcenter_reforecast_offered_calls"}),
    "Offered this interval vs forecast": ("timeseries", "short", {
        "callcenter_actual_offered_calls", "callcenter_forecast_offered_to_date_calls",
        "callcenter_forecast_offered_calls"}),
    "Forecast accuracy today": ("stat", "percentunit", {
        "callcenter_offered_vs_forecast_ratio", "callcenter_forecast_wape_ratio"}),
}


def staffing_row(dashboard: dict) -> list[dict]:
    """The panels between the row "Staffing" and the next row."""
    panels, inside = [], False
    for p in dashboard["panels"]:
        if p["type"] == "row":
            inside = p["title"] == "Staffing"
        elif inside:
            panels.append(p)
    return panels


def test_queue_detail_has_a_staffing_row(dashboards):
    d = dashboards["queue.json"]
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows[:2] == ["Service level", "Staffing"], "staffing right under the service level"
    panels = staffing_row(d)
    assert [p["title"] for p in panels] == list(STAFFING_PANELS)
    for p in panels:
        kind, unit, metrics = STAFFING_PANELS[p["title"]]
        assert p["type"] == kind and p["fieldConfig"]["defaults"]["unit"] == unit, p["title"]
        exprs = [t["expr"] for t in p["targets"]]
        assert metrics <= {m for e in exprs for m in metric_names(e)}, p["title"]
        # one series per queue (and model/threshold) even while two workers export it
        assert all(re.search(r"max by \(queue[,)]", e) for e in exprs), (p["title"], exprs)
        if kind == "stat":
            assert all(t["instant"] for t in p["targets"]), p["title"]
    assert sum(p["gridPos"]["w"] for p in panels) == 3 * 24, "three full lines"
    by_title = {p["title"]: p for p in panels}
    # the arrival rate is shown per hour, AHT and patience in seconds on the right axis
    inputs = by_title["Staffing inputs"]
    assert inputs["targets"][0]["expr"].endswith(" * 3600")
    for o in inputs["fieldConfig"]["overrides"]:
        assert {(q["id"], q["value"]) for q in o["properties"]} == {("unit", "s"), ("custom.axisPlacement", "right")}
    assert [o["matcher"]["options"] for o in inputs["fieldConfig"]["overrides"]] == ["B", "C"]
    # the actual side of the projections is the 15m window, like the arrival rate
    for title in ("Projected vs actual service level", "Projected vs actual ASA", "Projected vs actual abandon rate"):
        assert 'window="15m"' in by_title[title]["targets"][1]["expr"], title
    assert 'model="erlang_a"' in by_title["Projected vs actual abandon rate"]["targets"][0]["expr"]
    for title in ("Offered today vs forecast", "Forecast accuracy today"):
        assert all('period="day"' in t["expr"] for t in by_title[title]["targets"]
                   if "wape" not in t["expr"]), title
    assert all('period="interval"' in t["expr"] for t in by_title["Offered this interval vs forecast"]["targets"])
    # WAPE has its own colours: lower is better
    accuracy = by_title["Forecast accuracy today"]
    (wape,) = accuracy["fieldConfig"]["overrides"]
    assert wape["matcher"]["options"] == "B" and "wape" in accuracy["targets"][1]["expr"]
    assert [s["color"] for s in wape["properties"][0]["value"]["steps"]] == ["green", "orange", "red"]


def test_agents_short_is_coloured_against_each_queues_limit(dashboards):
    short = next(p for p in staffing_row(dashboards["queue.json"]) if p["title"] == "Agents short now")
    defaults = short["fieldConfig"]["defaults"]
    assert defaults["thresholds"]["mode"] == "percentage" and defaults["min"] == 0 and defaults["max"] == 2
    # percent of the queue's limit: 0 or a surplus green, 1 agent short orange (whatever the limit), the limit red
    steps = [(s["value"], s["color"]) for s in defaults["thresholds"]["steps"]]
    assert steps[0] == (None, "green") and steps[-1] == (100.0, "red") and steps[1][1] == "orange"
    assert 0 < steps[1][0] <= 100 / 1000, "1 agent short of a limit of up to 1000 is orange"
    ids = [t["id"] for t in short["transformations"]]
    assert ids == ["joinByLabels", "sortBy", "rowsToFields", "filterFieldsByName"], "queue ids are not numbers"
    pattern = re.compile("^" + short["transformations"][-1]["options"]["include"]["pattern"] + "$")
    assert pattern.match("support") and pattern.match("客服") and pattern.match("queue-2")
    assert not any(pattern.match(name) for name in ("queue", "tile", "value", "reference"))


def test_staffing_tiles_queries(dashboards, tmp_path):
    """The two queries of "Agents short now" on two queues, one exported by two workers during a
    takeover and one with its understaffed alert off (no limit): one value per queue, named by it."""
    promtool = require_tool("promtool", "the Debian package prometheus (`make tools` installs it)")
    short = next(p for p in staffing_row(dashboards["queue.json"]) if p["title"] == "Agents short now")
    reference, value = (render_query(t["expr"]) for t in short["targets"])
    series = [
        ('callcenter_agents_short{queue="support",instance="w1"}', "3"),
        ('callcenter_agents_short{queue="support",instance="w2"}', "3"),
        ('callcenter_understaffed_limit_agents{queue="support",instance="w1"}', "2"),
        ('callcenter_understaffed_limit_agents{queue="support",instance="w2"}', "2"),
        ('callcenter_agents_short{queue="客服",instance="w1"}', "-1"),
    ]

    def sample(queue, kind, v):
        return {"labels": f'{{queue="{queue}",tile="{queue}",kind="{kind}"}}', "value": v}
    promql_test(promtool, tmp_path / "short.test.yml", series, [
        {"expr": reference, "eval_time": "0m", "exp_samples": [sample("support", "reference", 2)]},
        {"expr": value, "eval_time": "0m",
         "exp_samples": [sample("support", "value", 3), sample("客服", "value", -1)]},
    ])


def test_agents_and_pipeline_dashboards(dashboards):
    agents = {m for _, e in panel_queries(dashboards["agents.json"]) for m in metric_names(e)}
    assert {"callcenter_agents", "callcenter_agents_not_ready"} <= agents
    pipeline = {m for _, e in panel_queries(dashboards["pipeline.json"]) for m in metric_names(e)}
    assert {"callcenter_events_total", "callcenter_events_applied_total", "callcenter_event_lag_seconds_bucket",
            "callcenter_events_duplicate_total", "callcenter_events_late_total", "callcenter_events_rejected_total",
            "callcenter_calls_orphaned", "callcenter_last_event_timestamp_seconds",
            "callcenter_input_partitions_held", "callcenter_forecast_loaded_timestamp_seconds",
            "callcenter_forecast_load_errors_total", "up"} <= pipeline


QUALITY_PANELS = {  # title -> (panel type, unit, metrics it must read)
    "CSAT by window": ("bargauge", "percentunit", {
        "callcenter_csat_ratio", "queue:callcenter_csat:ratio_rate1d", "queue:callcenter_csat:ratio_rate7d"}),
    "NPS by window": ("bargauge", "none", {
        "callcenter_net_promoter_score", "queue:callcenter_net_promoter_score:ratio_rate1d",
        "queue:callcenter_net_promoter_score:ratio_rate7d"}),
    "First-call resolution by window": ("bargauge", "percentunit", {
        "callcenter_first_call_resolution_ratio", "queue:callcenter_first_call_resolution:ratio_rate1d",
        "queue:callcenter_first_call_resolution:ratio_rate7d"}),
    "Repeat-caller FCR by window": ("bargauge", "percentunit", {
        "callcenter_first_call_resolution_ratio", "queue:callcenter_first_call_resolution:ratio_rate1d",
        "queue:callcenter_first_call_resolution:ratio_rate7d"}),
    "CSAT and FCR over time": ("timeseries", "percentunit", {
        "callcenter_csat_ratio", "queue:callcenter_csat:ratio_rate7d", "callcenter_first_call_resolution_ratio",
        "queue:callcenter_first_call_resolution:ratio_rate7d"}),
    "NPS over time": ("timeseries", "none", {
        "callcenter_net_promoter_score", "queue:callcenter_net_promoter_score:ratio_rate7d"}),
    "Mean CSAT score": ("timeseries", "none", {"callcenter_csat_average_score", "queue:callcenter_csat_score:mean7d"}),
    "Survey answers, last 7 days": ("bargauge", "short", {
        "queue:callcenter_survey_csat_answers:increase7d", "queue:callcenter_survey_nps_answers:increase7d",
        "queue:callcenter_survey_resolved_answers:increase7d"}),
    "Outbound connect rate": ("timeseries", "percentunit", {
        "callcenter_outbound_connect_rate_ratio", "queue:callcenter_outbound_connect:ratio_rate1d"}),
    "Outbound abandon rate": ("timeseries", "percentunit", {
        "callcenter_outbound_abandon_rate_ratio", "queue:callcenter_outbound_abandon:ratio_rate1d",
        "callcenter_outbound_abandon_limit_ratio"}),
    "Outbound abandon rate, 30 days, by campaign": ("timeseries", "percentunit", {
        "callcenter_outbound_abandon_30d_ratio", "callcenter_outbound_abandon_limit_ratio"}),
    "Callbacks open": ("timeseries", "short", {"callcenter_callbacks_open", "callcenter_callbacks_open_over_limit"}),
    "Callback completion rate": ("timeseries", "percentunit", {
        "callcenter_callback_completion_rate_ratio", "queue:callcenter_callback_completion:ratio_rate1d"}),
    "Average callback wait": ("timeseries", "s", {"callcenter_average_callback_wait_seconds"}),
    "Cost per handled call today": ("timeseries", "short", {"callcenter_cost_per_handled_call"}),
}


def row_panels(dashboard: dict, title: str) -> list[dict]:
    """The panels between the row `title` and the next row."""
    panels, inside = [], False
    for p in dashboard["panels"]:
        if p["type"] == "row":
            inside = p["title"] == title
        elif inside:
            panels.append(p)
    return panels


def test_queue_detail_has_a_quality_row(dashboards):
    panels = row_panels(dashboards["queue.json"], "Quality")
    assert [p["title"] for p in panels] == list(QUALITY_PANELS)
    for p in panels:
        kind, unit, metrics = QUALITY_PANELS[p["title"]]
        assert p["type"] == kind and p["fieldConfig"]["defaults"]["unit"] == unit, p["title"]
        exprs = [t["expr"] for t in p["targets"]]
        assert metrics <= {m for e in exprs for m in metric_names(e)}, p["title"]
        # one series per queue (and campaign/currency) even while two workers export it
        assert all(re.search(r"max by \(queue[,)]", e) for e in exprs), (p["title"], exprs)
        if kind == "bargauge":
            assert all(t["instant"] for t in p["targets"]), p["title"]
    assert sum(p["gridPos"]["w"] for p in panels) == 4 * 24, "four full lines"
    by_title = {p["title"]: p for p in panels}
    # "by window": the worker's five windows in order, then the recorded 1d and 7d
    for title in ("CSAT by window", "NPS by window", "First-call resolution by window", "Repeat-caller FCR by window"):
        targets = by_title[title]["targets"]
        windows = [re.search(r'window="([^"]+)"', t["expr"]).group(1) for t in targets[:5]]
        assert windows == ["5m", "15m", "30m", "1h", "today"], title
        assert [t["legendFormat"].split()[-1] for t in targets] == windows + ["1d", "7d"], title
        assert targets[5]["expr"].count(":ratio_rate1d") == 1 and targets[6]["expr"].count(":ratio_rate7d") == 1
    fcr = by_title["First-call resolution by window"]["targets"] + by_title["CSAT and FCR over time"]["targets"]
    assert all('method="survey"' in t["expr"] for t in fcr if "first_call_resolution" in t["expr"])
    repeat = by_title["Repeat-caller FCR by window"]["targets"]
    assert all('method="repeat_caller"' in t["expr"] for t in repeat)
    nps = by_title["NPS by window"]["fieldConfig"]["defaults"]
    assert (nps["min"], nps["max"]) == (-100, 100)
    # the worker computes the cost for today only; the 30-day rate is per campaign
    assert 'window="today"' in by_title["Cost per handled call today"]["targets"][0]["expr"]
    assert "max by (queue, campaign)" in by_title["Outbound abandon rate, 30 days, by campaign"]["targets"][0]["expr"]


AGENT_METRICS = {"callcenter_agents", "callcenter_agents_not_ready", "callcenter_occupancy_ratio",
                 "callcenter_agent_logged_in_seconds_total"}


def test_agents_row_uses_only_per_queue_aggregates(dashboards):
    d = dashboards["agents.json"]
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == ["All selected queues", "Agents", "$queue"], "the repeated row must stay last"
    panels = row_panels(d, "Agents")
    assert [p["title"] for p in panels] == ["Agents logged in", "Not ready share", "Not ready by reason now"]
    assert sum(p["gridPos"]["w"] for p in panels) == 24
    used = {m for p in panels for t in p["targets"] for m in metric_names(t["expr"])}
    assert used == {"callcenter_agents", "callcenter_agents_not_ready", "callcenter_agent_logged_in_seconds_total"}
    # no dashboard reads a per-agent series (agent ids stay out of the dashboards)
    every = {m for dash in dashboards.values() for _, e in panel_queries(dash) for m in metric_names(e)}
    assert not {m for m in every if m.startswith("callcenter_agent_") and m not in AGENT_METRICS}
    assert {m for _, e in panel_queries(d) for m in metric_names(e)} <= AGENT_METRICS


def test_agents_row_queries(dashboards, tmp_path):
    """"Agents logged in" (now) and "Not ready share" on a queue exported by two workers during a
    takeover (not doubled), and a queue with nobody logged in (no share, not 0 %)."""
    promtool = require_tool("promtool", "the Debian package prometheus (`make tools` installs it)")
    panels = {p["title"]: p for p in row_panels(dashboards["agents.json"], "Agents")}
    logged_in = render_query(panels["Agents logged in"]["targets"][0]["expr"])
    share = render_query(panels["Not ready share"]["targets"][0]["expr"])
    series = []
    for instance in ("w1", "w2"):
        for state, n in (("available", "2"), ("on_call", "3"), ("wrap_up", "1"), ("not_ready", "2")):
            series.append((f'callcenter_agents{{queue="support",state="{state}",instance="{instance}"}}', n))
    for state in ("available", "on_call", "wrap_up", "not_ready"):
        series.append((f'callcenter_agents{{queue="night",state="{state}",instance="w1"}}', "0"))
    promql_test(promtool, tmp_path / "agents.test.yml", series, [
        {"expr": logged_in, "eval_time": "0m",
         "exp_samples": [{"labels": '{queue="support"}', "value": 8}, {"labels": '{queue="night"}', "value": 0}]},
        {"expr": share, "eval_time": "0m", "exp_samples": [{"labels": '{queue="support"}', "value": 0.25}]},
    ])


# --- provisioning ---------------------------------------------------------------------------------

def test_provisioned_datasource_is_the_dashboards_default(dashboards):
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = config["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for name, d in dashboards.items():
        assert variable(d, "datasource")["current"]["value"] == source["uid"], name


def test_dashboard_provider_serves_the_generated_files():
    config = yaml.safe_load((PROVISIONING / "dashboards" / "callpulse.yml").read_text(encoding="utf-8"))
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/callpulse"


# --- the lint helpers themselves ------------------------------------------------------------------

def test_lint_helpers_catch_what_they_should():
    assert variables_used('label_replace(x{queue=~"$queue"}, "t", "SL $1 s", "threshold", "(.+)")') == {"queue"}
    assert render_query('label_replace(x, "t", "$1", "a", "(.+)")') == 'label_replace(x, "t", "$1", "a", "(.+)")'
    assert metric_names('sum by (le, queue) (increase(foo_bucket{queue=~"$queue"}[$__rate_interval]))') == {"foo_bucket"}
    assert metric_names('time() - a{b="c"} and on(queue) q:rec:ratio') == {"a", "q:rec:ratio"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[1m])))") == {"x_bucket"}
    assert uses_rate_interval_everywhere("rate(x[5m])") and uses_rate_interval_everywhere("increase(x[$__range])")
    assert not uses_rate_interval_everywhere("sum(rate(x[$__rate_interval])) / sum(increase(y[$__rate_interval]))")
    assert render_query('x{queue=~"$queue",window="${window}"}[$__rate_interval]') == 'x{queue=~".*",window="15m"}[1m]'
    with pytest.raises(KeyError):
        render_query("x[$__range]")
