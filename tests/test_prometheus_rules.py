"""The Prometheus configuration, rules, rule unit tests and runbook in deploy/prometheus.

promtool (Debian package prometheus) checks the config and the rule files and runs the unit tests
in deploy/prometheus/tests; the rest are lint checks of the conventions in
deploy/prometheus/rules/alerts.rules.yml, and a mutation test: with one alert's `for:` set to 0s,
its promtool cases must fail (so the "must not fire" cases really test the `for:`). promtool
missing is a failure, not a skip: `make test` installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers import require_tool

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
CONFIG = PROM / "prometheus.yml"
RULE_FILES = sorted((PROM / "rules").glob("*.rules.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.test.yml"))
ALERTS = PROM / "rules" / "alerts.rules.yml"
RECORDING = PROM / "rules" / "recording.rules.yml"
RUNBOOK = PROM / "runbook.md"
RUNBOOK_URL = "https://github.com/callpulse/callpulse/blob/main/deploy/prometheus/runbook.md#"

# The alerts of the contract: name -> (severities, per queue?)
CONTRACT_ALERTS = {
    "CallCenterServiceLevelBelowTarget": ({"critical"}, True),
    "CallCenterErrorBudgetBurn": ({"critical", "warning"}, True),
    "CallCenterCallsWaitingHigh": ({"warning"}, True),
    "CallCenterOldestWaitHigh": ({"warning"}, True),
    "CallCenterCallsWaitingNoAgents": ({"critical"}, True),
    "CallCenterUnderstaffed": ({"warning"}, True),
    "CallCenterAbandonRateHigh": ({"warning"}, True),
    "CallCenterShortAbandonSpike": ({"warning"}, True),
    "CallCenterEventFeedStalled": ({"critical"}, True),
    "CallCenterEventLagHigh": ({"warning"}, False),
    "CallCenterEventsRejected": ({"warning"}, False),
    "CallCenterWorkerDown": ({"critical"}, False),
    "CallCenterPipelineStalled": ({"critical"}, False),
    "CallCenterBrokerDataLost": ({"critical"}, False),
    "CallCenterOutboundAbandonOverLimit": ({"warning"}, True),
    "CallCenterCallbacksOverdue": ({"warning"}, True),
}
SEVERITIES = {"critical", "warning", "info"}
SLO_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
CONTRACT_RECORDS = {
    "queue:callcenter_service_level_by_formula:ratio",
    "queue:callcenter_service_level:ratio",
    *(f"queue:callcenter_service_level_error:ratio_rate{w}" for w in SLO_WINDOWS),
    *(f"queue:callcenter_service_level_calls:increase{w}" for w in SLO_WINDOWS),
    *(f"queue:callcenter_error_budget_burn_rate:rate{w}" for w in SLO_WINDOWS),
}
# Quality (issue 15): survey KPIs over 1d and 7d, outbound and callbacks over 1d.
QUALITY_WINDOWS = ["1d", "7d"]
QUALITY_RECORDS = {
    *(f"queue:callcenter_csat:ratio_rate{w}" for w in QUALITY_WINDOWS),
    *(f"queue:callcenter_csat_score:mean{w}" for w in QUALITY_WINDOWS),
    *(f"queue:callcenter_net_promoter_score:ratio_rate{w}" for w in QUALITY_WINDOWS),
    *(f"queue:callcenter_first_call_resolution:ratio_rate{w}" for w in QUALITY_WINDOWS),
    *(f"queue:callcenter_survey_{q}_answers:increase{w}" for q in ("csat", "nps", "resolved") for w in QUALITY_WINDOWS),
    "queue:callcenter_outbound_connect:ratio_rate1d",
    "queue:callcenter_outbound_abandon:ratio_rate1d",
    "queue:callcenter_callback_completion:ratio_rate1d",
}


PROMTOOL_HOW = "the Debian package prometheus (`make tools` installs it)"


def run_promtool(*args: str) -> None:
    result = subprocess.run([require_tool("promtool", PROMTOOL_HOW), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration ("8h16m", "0s", "3d") in seconds."""
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)


def load(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict]:
    return [rule for group in load(RECORDING)["groups"] for rule in group["rules"] if "record" in rule]


def alert_cases() -> Iterator[tuple[Path, dict, dict]]:
    """(test file, test group, alert_rule_test case) of every promtool test file."""
    for path in TEST_FILES:
        for group in load(path).get("tests", []):
            for case in group.get("alert_rule_test", []):
                yield path, group, case


def is_pending_check(group: dict, case: dict) -> bool:
    """An `exp_alerts: []` case with a later case of the same alert firing in the same test group:
    it only says the alert is still pending (its `for:` has not passed), so it is no case of
    "must not fire"."""
    if case.get("exp_alerts"):
        return False
    at = seconds(case["eval_time"])
    return any(
        other["alertname"] == case["alertname"] and other.get("exp_alerts") and seconds(other["eval_time"]) > at
        for other in group.get("alert_rule_test", [])
    )


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading (lower case, punctuation dropped, spaces to -)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# ---- promtool ----------------------------------------------------------------------------------

def test_files_exist():
    assert CONFIG.is_file()
    assert ALERTS in RULE_FILES and RECORDING in RULE_FILES
    assert TEST_FILES, "no promtool unit tests in deploy/prometheus/tests"
    assert RUNBOOK.is_file()


def test_promtool_check_config():
    # relative paths: promtool resolves rule_files against the config file's directory
    run_promtool("check", "config", str(CONFIG.relative_to(ROOT)))


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(rule_file):
    run_promtool("check", "rules", str(rule_file.relative_to(ROOT)))


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(test_file):
    run_promtool("test", "rules", str(test_file.relative_to(ROOT)))


# ---- prometheus.yml ----------------------------------------------------------------------------

def test_config_scrapes_the_workers_and_loads_the_rules():
    config = load(CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["callpulse"]["scrape_interval"] == "5s"
    targets = [t for sc in jobs["callpulse"]["static_configs"] for t in sc["targets"]]
    assert targets == ["worker-1:6066", "worker-2:6066"]
    assert config["rule_files"] == ["rules/*.rules.yml"]
    am = [t for a in config["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    assert am == ["alertmanager:9093"]


# ---- recording rules ---------------------------------------------------------------------------

def test_recording_rules_of_the_contract_exist():
    records = {rule["record"] for rule in recording_rules()}
    missing = CONTRACT_RECORDS - records
    assert not missing, f"recording rules missing: {sorted(missing)}"
    formulas = sorted(
        rule["labels"]["formula"]
        for rule in recording_rules()
        if rule["record"] == "queue:callcenter_service_level_by_formula:ratio"
    )
    assert formulas == [f"SL-{c}" for c in "ABCDEFG"]


def test_quality_records_exist():
    records = {rule["record"] for rule in recording_rules()}
    missing = QUALITY_RECORDS - records
    assert not missing, f"recording rules missing: {sorted(missing)}"
    fcr = [r for r in recording_rules() if r["record"].startswith("queue:callcenter_first_call_resolution:")]
    assert fcr and {r["labels"]["method"] for r in fcr} == {"survey", "repeat_caller"}, "FCR carries its method like the gauge"
    assert len(fcr) == 2 * len(QUALITY_WINDOWS)


def test_quality_windows_are_the_same_rule_with_another_range():
    """callpulse-quality-7d is callpulse-quality-1d's survey part with another range; every rule of
    a window group reads only its own window; a ratio never divides by a denominator that can be 0."""
    groups = {group["name"]: group for group in load(RECORDING)["groups"]}

    def normalised(rules: list[dict], w: str) -> list[tuple[str, str]]:
        def norm(text: str) -> str:
            text = text.replace(f"[{w}]", "[W]")
            return re.sub(rf"(:increase|:ratio_rate|:mean){w}\b", r"\1W", text)
        return [(norm(rule["record"]), norm(rule["expr"])) for rule in rules]

    for w in QUALITY_WINDOWS:
        for rule in groups[f"callpulse-quality-{w}"]["rules"]:
            ranges = set(re.findall(r"\[(\w+)\]", rule["expr"]))
            assert ranges <= {w}, f"{rule['record']} uses ranges {ranges}"
            names = set(re.findall(r":(?:increase|ratio_rate|mean)(\w+)\b", rule["record"] + " " + rule["expr"]))
            assert names <= {w}, f"{rule['record']} reads windows {names}"
            if re.search(r":(ratio_rate|mean)\w+$", rule["record"]):
                assert re.search(r"/\s*\([^()]*> 0\)\s*$", rule["expr"]), f"{rule['record']}: denominator not filtered with > 0"
    week = normalised(groups["callpulse-quality-7d"]["rules"], "7d")
    day = normalised(groups["callpulse-quality-1d"]["rules"], "1d")
    assert day[:len(week)] == week, "callpulse-quality-7d differs from the survey part of callpulse-quality-1d"
    # Long ranges, evaluated less often than every 15 s but within the 5m lookback (no gaps).
    for name in ("callpulse-quality-1d", "callpulse-quality-7d"):
        assert 60 <= seconds(groups[name]["interval"]) < 300, name


def test_slo_windows_are_the_same_rule_with_another_range():
    """The seven counter-based window groups are copies; a copy with a wrong range is easy to miss."""
    groups = {group["name"]: group["rules"] for group in load(RECORDING)["groups"]}

    def normalised(rules: list[dict], w: str) -> list[tuple[str, str]]:
        def norm(text: str) -> str:
            text = text.replace(f"[{w}]", "[W]")
            return re.sub(rf"(:increase|:ratio_rate|:rate){w}\b", r"\1W", text)
        return [(norm(rule["record"]), norm(rule["expr"])) for rule in rules]

    reference = normalised(groups["callpulse-slo-1h"], "1h")
    for w in SLO_WINDOWS:
        rules = groups[f"callpulse-slo-{w}"]
        for rule in rules:
            ranges = set(re.findall(r"\[(\w+)\]", rule["expr"]))
            assert ranges <= {w}, f"{rule['record']} uses ranges {ranges}"
            names = set(re.findall(r":(?:increase|ratio_rate|rate)(\w+)\b", rule["record"] + " " + rule["expr"]))
            assert names <= {w}, f"{rule['record']} reads windows {names}"
        assert normalised(rules, w) == reference, f"callpulse-slo-{w} differs from callpulse-slo-1h beyond the window"


def test_counters_are_recorded_once_per_queue_and_increase_reads_only_those():
    """A queue's counters move between workers (the instance label changes, and may change back):
    each raw counter is read exactly once, as `max by (queue[, threshold|reason])` recorded under
    <level>:<counter>:max, and increase() only ever reads such a recorded counter."""
    max_records: dict[str, str] = {}
    for rule in recording_rules():
        record, expr = rule["record"], rule["expr"].strip()
        counters = re.findall(r"(?<![\w:])callcenter_\w+_total(?![\w:])", expr)
        if record.endswith("_total:max"):
            level, counter, _ = record.split(":")
            labels = ", ".join(level.split("_"))
            assert expr == f"max by ({labels}) ({counter})", f"{record}: expected `max by ({labels}) ({counter})`, got {expr!r}"
            max_records[record] = counter
        else:
            assert not counters, f"{record}: reads the raw counters {counters}; use the recorded <level>:<counter>:max"
        assert not re.search(r"increase\(\s*sum", expr), f"{record}: sum inside increase()"
        for arg in re.findall(r"increase\(\s*([\w:]+)", expr):
            assert arg.endswith("_total:max"), f"{record}: increase() of {arg}, not of a recorded counter"
    recorded = set(max_records.values())
    for counter in ("callcenter_calls_answered_total", "callcenter_calls_abandoned_total",
                    "callcenter_calls_short_abandoned_total", "callcenter_calls_flowed_out_total",
                    "callcenter_calls_answered_within_threshold_total",
                    "callcenter_calls_abandoned_within_threshold_total",
                    "callcenter_survey_csat_answers_total", "callcenter_survey_nps_answers_total",
                    "callcenter_survey_resolved_answers_total", "callcenter_outbound_attempts_total",
                    "callcenter_outbound_live_connects_total", "callcenter_outbound_agent_connects_total",
                    "callcenter_callbacks_requested_total", "callcenter_callbacks_completed_total"):
        assert counter in recorded, f"{counter} is not recorded as one series per queue"
    assert max_records["queue_reason:callcenter_calls_flowed_out_total:max"] == "callcenter_calls_flowed_out_total"
    assert max_records["queue_threshold:callcenter_calls_answered_within_threshold_total:max"] == (
        "callcenter_calls_answered_within_threshold_total")


# ---- alerting rules ----------------------------------------------------------------------------

def test_alert_names_and_severities_match_the_contract():
    seen: dict[str, set[str]] = {}
    for rule in alert_rules():
        name = rule["alert"]
        assert name.startswith("CallCenter"), f"{name}: alert names start with CallCenter"
        severity = rule.get("labels", {}).get("severity")
        assert severity in SEVERITIES, f"{name}: severity {severity!r} not in {sorted(SEVERITIES)}"
        seen.setdefault(name, set()).add(severity)
    assert set(seen) == set(CONTRACT_ALERTS), f"alerts differ from the contract: {sorted(set(seen) ^ set(CONTRACT_ALERTS))}"
    for name, (severities, _) in CONTRACT_ALERTS.items():
        assert seen[name] == severities, f"{name}: severities {seen[name]}, contract says {severities}"


def test_alerts_have_annotations_and_a_runbook_section():
    anchors = {github_anchor(m) for m in re.findall(r"^## (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.M)}
    for rule in alert_rules():
        name = rule["alert"]
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: annotation {key} missing"
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), f"{name}: runbook_url {annotations['runbook_url']}"
        assert name.lower() in anchors, f"{name}: no '## {name}' section in {RUNBOOK.name}"
        if name != "CallCenterWorkerDown":  # up == 0: the value says nothing the name does not
            assert "$value" in annotations["description"], f"{name}: description does not show the value"


def test_per_queue_alerts_follow_the_conventions():
    for rule in alert_rules():
        name = rule["alert"]
        expr = rule["expr"]
        per_queue = CONTRACT_ALERTS[name][1]
        if per_queue:
            assert re.search(r"and on \(queue\)\s+callcenter_queue_open == 1\s*$", expr), (
                f"{name}: a per-queue alert must end with `and on (queue) callcenter_queue_open == 1`"
            )
            assert "group_left (team)" in expr, f"{name}: copy the team label from callcenter_queue_info"
        # limits come from the exported config gauges, never from a rule for one queue
        assert not re.search(r"\bqueue\s*=~?\s*\"", expr), f"{name}: selects a queue by name"


def test_rate_and_service_level_alerts_are_gated_on_min_calls():
    for name in ("CallCenterServiceLevelBelowTarget", "CallCenterErrorBudgetBurn",
                 "CallCenterAbandonRateHigh", "CallCenterShortAbandonSpike"):
        for rule in (r for r in alert_rules() if r["alert"] == name):
            assert "callcenter_alert_min_calls" in rule["expr"], f"{name}: no volume gate"


def test_alerts_read_service_levels_from_the_recorded_series():
    for rule in alert_rules():
        expr = rule["expr"]
        assert "window_calls_within_threshold" not in expr, f"{rule['alert']}: service level computed in the alert"
        assert not re.search(r"callcenter_calls_\w+_total", expr), f"{rule['alert']}: call counters in the alert"


def test_every_for_is_on_its_own_line():
    """The end-to-end test rewrites `for:` values line by line."""
    text = ALERTS.read_text(encoding="utf-8")
    for_lines = re.findall(r"^ +for: (\S+)$", text, re.M)
    assert len(for_lines) == len(alert_rules()), "every alert needs exactly one `for: <duration>` line"
    assert all(re.fullmatch(r"\d+[smh]", d) for d in for_lines), for_lines
    assert all("for" in rule for rule in alert_rules())


# ---- unit-test coverage ------------------------------------------------------------------------

def test_every_alert_has_a_firing_and_a_silent_promtool_case():
    """Silent cases are `exp_alerts: []` checks that are not merely pending (see is_pending_check)."""
    firing: set[str] = set()
    silent: set[str] = set()
    for _, group, case in alert_cases():
        if case.get("exp_alerts"):
            firing.add(case["alertname"])
        elif not is_pending_check(group, case):
            silent.add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert not names - firing, f"no promtool case where these fire: {sorted(names - firing)}"
    assert not names - silent, f"no promtool case where these stay silent: {sorted(names - silent)}"
    assert not (firing | silent) - names, f"tests name unknown alerts: {sorted((firing | silent) - names)}"


def test_unit_tests_list_all_labels_and_the_text_of_firing_alerts():
    """Per test file, at least one firing alert is checked with its annotations."""
    for path in TEST_FILES:
        cases = [c for g in load(path).get("tests", []) for c in g.get("alert_rule_test", [])]
        if not cases:
            continue
        expected = [a for c in cases for a in c.get("exp_alerts") or []]
        assert any(a.get("exp_annotations") for a in expected), f"{path.name}: no annotations checked"
        for alert in expected:
            labels = alert.get("exp_labels", {})
            assert "severity" in labels, f"{path.name}: exp_labels without severity: {labels}"


def rules_with_a_for() -> list[tuple[int, int, str]]:
    """(group index, rule index, id) of every alerting rule whose `for:` is not 0."""
    found = []
    for g, group in enumerate(load(ALERTS)["groups"]):
        for r, rule in enumerate(group["rules"]):
            if "alert" in rule and seconds(rule["for"]) > 0:
                found.append((g, r, f"{rule['alert']}[{rule['labels']['severity']}]"))
    return found


@pytest.mark.parametrize("g, r, rule_id", rules_with_a_for(), ids=[i for _, _, i in rules_with_a_for()])
def test_the_for_of_every_alert_is_tested(g, r, rule_id, tmp_path):
    """Mutation test: with this one rule's `for:` set to 0s, its promtool cases must fail.

    Runs the alert's own cases, without the pending checks (an `exp_alerts: []` before the same test
    group expects it firing): only a real "must not fire" case (a short dip checked at its last bad
    sample) or a firing case that lists exactly who fires can catch a `for:` that does nothing.
    """
    rules = load(ALERTS)
    rule = rules["groups"][g]["rules"][r]
    name = rule["alert"]
    rule["for"] = "0s"
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(RECORDING, tmp_path / "rules" / RECORDING.name)
    (tmp_path / "rules" / ALERTS.name).write_text(
        yaml.safe_dump(rules, allow_unicode=True, sort_keys=False, width=1000), encoding="utf-8")
    written = []
    for path in TEST_FILES:
        spec = load(path)
        kept = []
        for group in spec.get("tests", []):
            cases = [c for c in group.get("alert_rule_test", [])
                     if c["alertname"] == name and not is_pending_check(group, c)]
            if cases:
                kept.append({**{k: v for k, v in group.items() if k != "promql_expr_test"}, "alert_rule_test": cases})
        if kept:
            out = tmp_path / "tests" / path.name
            out.write_text(yaml.safe_dump({**spec, "tests": kept}, allow_unicode=True, sort_keys=False, width=1000),
                           encoding="utf-8")
            written.append(str(out))
    assert written, f"{rule_id}: no promtool case for {name}"
    result = subprocess.run([require_tool("promtool", PROMTOOL_HOW), "test", "rules", *written], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and f"alertname: {name}," in result.stdout + result.stderr, (
        f"{rule_id}: every promtool case still passes with `for: 0s`; add a case that must stay silent at the "
        f"last bad sample of a short breach\n{result.stdout}\n{result.stderr}"
    )
