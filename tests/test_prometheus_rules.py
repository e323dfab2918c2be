"""The Prometheus configuration, rules, rule unit tests and runbook in deploy/prometheus.

promtool (Debian package prometheus) checks the config and the rule files and runs the unit tests
in deploy/prometheus/tests; the rest are lint checks of the conventions in
deploy/prometheus/rules/alerts.rules.yml. promtool missing is a failure, not a skip: `make test`
installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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
    "CallCenterAbandonRateHigh": ({"warning"}, True),
    "CallCenterShortAbandonSpike": ({"warning"}, True),
    "CallCenterEventFeedStalled": ({"critical"}, True),
    "CallCenterEventLagHigh": ({"warning"}, False),
    "CallCenterEventsRejected": ({"warning"}, False),
    "CallCenterWorkerDown": ({"critical"}, False),
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


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: install the Debian package prometheus (`make tools` does it)"
    return path


def run_promtool(*args: str) -> None:
    result = subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


def load(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def recording_rules() -> list[dict]:
    return [rule for group in load(RECORDING)["groups"] for rule in group["rules"] if "record" in rule]


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


def test_slo_windows_are_the_same_rule_with_another_range():
    """The seven counter-based windows are copies; a copy with a wrong range is easy to miss."""
    by_name = {rule["record"]: rule["expr"] for rule in recording_rules()}
    for stem in ("queue:callcenter_service_level_calls:increase", "queue:callcenter_service_level_error:ratio_rate",
                 "queue:callcenter_error_budget_burn_rate:rate"):
        reference = by_name[f"{stem}1h"].replace("[1h]", "[W]").replace("1h\n", "W\n").replace("1h ", "W ")
        for w in SLO_WINDOWS:
            expr = by_name[f"{stem}{w}"]
            ranges = set(re.findall(r"\[(\w+)\]", expr))
            assert ranges <= {w}, f"{stem}{w} uses ranges {ranges}"
            normalised = expr.replace(f"[{w}]", "[W]").replace(f"{w}\n", "W\n").replace(f"{w} ", "W ")
            assert normalised == reference, f"{stem}{w} differs from {stem}1h beyond the window"


def test_counters_are_summed_only_after_increase():
    """Queues move between workers (the instance label changes): never sum a counter before increase()."""
    for rule in recording_rules():
        expr = rule["expr"]
        assert not re.search(r"increase\(\s*sum", expr), f"{rule['record']}: sum inside increase()"
        for counter in re.findall(r"callcenter_\w+_total", expr):
            assert re.search(rf"increase\({counter}\[", expr), f"{rule['record']}: {counter} not under increase()"


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
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for group in load(path).get("tests", []):
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
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
