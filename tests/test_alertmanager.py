"""deploy/alertmanager/alertmanager.yml: valid for Alertmanager 0.25, routes as documented, and its
inhibition rules work in a real Alertmanager.

Needs `amtool` and `prometheus-alertmanager` (Debian package prometheus-alertmanager). A missing
binary fails these tests: they are never skipped.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from helpers import require_tool
from stack import Alertmanager

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("amtool", "the Debian package prometheus-alertmanager (`make tools` installs it)"), *args], capture_output=True, text=True, timeout=60)


def receivers_for(labels: dict[str, str]) -> list[str]:
    """Receivers `amtool config routes test` picks for an alert with these labels."""
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}",
                    *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(",")


# ---- static checks ------------------------------------------------------------------------------

def test_check_config_passes():
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "4 inhibit rules" in result.stdout


def test_grouping_and_timing_are_as_documented():
    route = yaml.safe_load(CONFIG.read_text())["route"]
    assert route["group_by"] == ["alertname", "queue"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "4h")
    by_receiver = {r["receiver"]: r for r in route["routes"]}
    assert by_receiver["pager"]["repeat_interval"] == "4h"
    assert by_receiver["ticket"]["repeat_interval"] == "23h55m"
    # A stalled feed is grouped by alertname only (one page for all queues), in the pager route
    # and in the team route; the children inherit their parent's receiver.
    for receiver in ("pager", "sales-slack"):
        (child,) = by_receiver[receiver]["routes"]
        assert child == {"matchers": ['alertname = "CallCenterEventFeedStalled"'], "group_by": ["alertname"]}
    # The last child is a catch-all to the default receiver.
    assert route["routes"][-1] == {"receiver": route["receiver"]} == {"receiver": "callpulse-webhook"}


def test_every_receiver_sends_resolved():
    receivers = yaml.safe_load(CONFIG.read_text())["receivers"]
    integrations = [c for r in receivers for key, configs in r.items() if key.endswith("_configs") for c in configs]
    assert len(integrations) == 4
    assert all(c.get("send_resolved") is True for c in integrations)


@pytest.mark.parametrize(
    "labels, expected",
    [
        # critical = page
        ({"alertname": "CallCenterServiceLevelBelowTarget", "severity": "critical", "queue": "support",
          "threshold": "20"}, ["pager"]),
        ({"alertname": "CallCenterWorkerDown", "severity": "critical", "instance": "worker-1:6066"}, ["pager"]),
        # warning = ticket
        ({"alertname": "CallCenterCallsWaitingHigh", "severity": "warning", "queue": "support"}, ["ticket"]),
        ({"alertname": "CallCenterEventsRejected", "severity": "warning", "instance": "worker-2:6066",
          "reason": "schema_violation"}, ["ticket"]),
        # team routing: the team's Slack channel, and still the page or ticket
        ({"alertname": "CallCenterOldestWaitHigh", "severity": "warning", "queue": "sales", "team": "sales"},
         ["sales-slack", "ticket"]),
        ({"alertname": "CallCenterEventFeedStalled", "severity": "critical", "queue": "sales", "team": "sales"},
         ["sales-slack", "pager"]),
        ({"team": "sales", "severity": "critical"}, ["sales-slack", "pager"]),
        # another team has no channel of its own (yet): only the severity route
        ({"alertname": "CallCenterOldestWaitHigh", "severity": "warning", "queue": "billing", "team": "billing"},
         ["ticket"]),
        # no severity, or an unknown one: the default webhook, never dropped
        ({"alertname": "SomethingElse", "queue": "support"}, ["callpulse-webhook"]),
        ({"alertname": "SomethingElse", "severity": "info"}, ["callpulse-webhook"]),
        ({}, ["callpulse-webhook"]),
        # ... also when a team route has already taken it: the team channel AND the webhook
        ({"team": "sales", "alertname": "X"}, ["sales-slack", "callpulse-webhook"]),
        ({"alertname": "SomethingElse", "severity": "info", "queue": "sales", "team": "sales"},
         ["sales-slack", "callpulse-webhook"]),
        # "no callpulse target at all" has no instance label: still a page
        ({"alertname": "CallCenterWorkerDown", "severity": "critical", "job": "callpulse"}, ["pager"]),
    ],
)
def test_routes(labels, expected):
    assert receivers_for(labels) == expected


def test_slack_templates_render(tmp_path):
    """The inline Slack title and text are valid Go templates (Alertmanager parses them only when it
    sends, so a typo would otherwise surface as a failed notification at 3 a.m.)."""
    receivers = {r["name"]: r for r in yaml.safe_load(CONFIG.read_text())["receivers"]}
    slack = receivers["sales-slack"]["slack_configs"][0]
    data = {
        "receiver": "sales-slack", "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "CallCenterOldestWaitHigh", "queue": "sales", "severity": "warning"},
            "annotations": {"summary": "Oldest call in sales waits 4m", "description": "Limit is 2m.",
                            "runbook_url": "https://example.com/runbook#callcenteroldestwaithigh"},
            "startsAt": "2026-01-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090", "fingerprint": "0123456789abcdef",
        }],
        "groupLabels": {"alertname": "CallCenterOldestWaitHigh", "queue": "sales"},
        "commonLabels": {"alertname": "CallCenterOldestWaitHigh", "queue": "sales", "severity": "warning"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
    }
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    rendered = {}
    for field in ("title", "text"):
        result = amtool("template", "render", "--template.glob=/dev/null", f"--template.text={slack[field]}",
                        f"--template.data={data_file}")
        assert result.returncode == 0, result.stderr
        rendered[field] = result.stdout
    assert rendered["title"].startswith("[FIRING] CallCenterOldestWaitHigh sales")
    assert "Oldest call in sales waits 4m" in rendered["text"]
    assert "Runbook: https://example.com/runbook#callcenteroldestwaithigh" in rendered["text"]


# ---- a real Alertmanager: inhibition --------------------------------------------------------------

def http(url: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager on a free loopback port with the example config, clustering off; a
    fresh one per test, so one test's source alerts cannot mute another's. Yields its base URL."""
    server = Alertmanager(tmp_path, yaml.safe_load(CONFIG.read_text()))
    try:
        yield server.url
    finally:
        server.stop()


def post_alerts(base: str, *label_sets: dict[str, str]) -> None:
    now = datetime.now(UTC)
    http(base + "/api/v2/alerts", [
        {"labels": labels, "annotations": {"summary": "test"},
         "startsAt": (now - timedelta(minutes=1)).isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat(),
         "generatorURL": "http://prometheus.test/graph"}
        for labels in label_sets
    ])


def inhibited_by(base: str, expected_count: int, settle) -> dict[tuple, list[str]]:
    """{sorted label items: status.inhibitedBy} of every alert, polled until `settle(states)` holds or
    15 s passed (the inhibitor learns of new source alerts asynchronously)."""
    deadline = time.monotonic() + 15
    while True:
        states = {key(a["labels"]): a["status"]["inhibitedBy"] for a in http(base + "/api/v2/alerts")}
        if (len(states) == expected_count and settle(states)) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def check_inhibition(base: str, sources: list[dict], muted: list[dict], kept: list[dict]) -> None:
    everything = sources + muted + kept
    post_alerts(base, *everything)
    states = inhibited_by(base, len(everything), lambda s: all(s.get(key(m)) for m in muted))
    assert len(states) == len(everything), states
    for labels in muted:
        assert states[key(labels)], f"expected inhibited: {labels}\n{states}"
    for labels in sources + kept:
        assert states[key(labels)] == [], f"expected not inhibited: {labels}\n{states}"


def test_stalled_feed_inhibits_service_level_of_the_same_queue_only(alertmanager):
    check_inhibition(
        alertmanager,
        sources=[{"alertname": "CallCenterEventFeedStalled", "severity": "critical", "queue": "sales",
                  "team": "sales"}],
        muted=[
            {"alertname": "CallCenterServiceLevelBelowTarget", "severity": "critical", "queue": "sales",
             "threshold": "20", "team": "sales"},
            {"alertname": "CallCenterOldestWaitHigh", "severity": "warning", "queue": "sales", "team": "sales"},
            {"alertname": "CallCenterErrorBudgetBurn", "severity": "critical", "queue": "sales", "threshold": "10",
             "team": "sales"},
            {"alertname": "CallCenterUnderstaffed", "severity": "warning", "queue": "sales", "team": "sales"},
        ],
        kept=[
            # another queue
            {"alertname": "CallCenterServiceLevelBelowTarget", "severity": "critical", "queue": "support",
             "threshold": "20"},
            # not a consequence of a stalled feed
            {"alertname": "CallCenterCallsWaitingNoAgents", "severity": "critical", "queue": "sales",
             "team": "sales"},
        ],
    )


def test_critical_burn_inhibits_the_warning_of_the_same_queue_and_threshold(alertmanager):
    burn = "CallCenterErrorBudgetBurn"
    check_inhibition(
        alertmanager,
        sources=[{"alertname": burn, "severity": "critical", "queue": "sales", "threshold": "20"}],
        muted=[{"alertname": burn, "severity": "warning", "queue": "sales", "threshold": "20"}],
        kept=[
            {"alertname": burn, "severity": "warning", "queue": "sales", "threshold": "10"},
            {"alertname": burn, "severity": "warning", "queue": "support", "threshold": "20"},
            # same queue, another alert
            {"alertname": "CallCenterAbandonRateHigh", "severity": "warning", "queue": "sales"},
        ],
    )


def test_service_level_inhibits_the_slow_burn_of_the_same_queue_and_threshold(alertmanager):
    check_inhibition(
        alertmanager,
        sources=[{"alertname": "CallCenterServiceLevelBelowTarget", "severity": "critical", "queue": "billing",
                  "threshold": "10"}],
        muted=[{"alertname": "CallCenterErrorBudgetBurn", "severity": "warning", "queue": "billing",
                "threshold": "10"}],
        kept=[
            {"alertname": "CallCenterErrorBudgetBurn", "severity": "warning", "queue": "billing", "threshold": "20"},
            {"alertname": "CallCenterErrorBudgetBurn", "severity": "critical", "queue": "billing", "threshold": "10"},
        ],
    )


def test_nobody_staffed_inhibits_the_waiting_tickets_of_the_same_queue(alertmanager):
    check_inhibition(
        alertmanager,
        sources=[{"alertname": "CallCenterCallsWaitingNoAgents", "severity": "critical", "queue": "sales",
                  "team": "sales"}],
        muted=[
            {"alertname": "CallCenterCallsWaitingHigh", "severity": "warning", "queue": "sales", "team": "sales"},
            {"alertname": "CallCenterOldestWaitHigh", "severity": "warning", "queue": "sales", "team": "sales"},
            {"alertname": "CallCenterUnderstaffed", "severity": "warning", "queue": "sales", "team": "sales"},
        ],
        kept=[
            # another queue
            {"alertname": "CallCenterCallsWaitingHigh", "severity": "warning", "queue": "support"},
            {"alertname": "CallCenterUnderstaffed", "severity": "warning", "queue": "support"},
            # not a waiting ticket: the service-level page and the abandon ticket still go out
            {"alertname": "CallCenterServiceLevelBelowTarget", "severity": "critical", "queue": "sales",
             "threshold": "20", "team": "sales"},
            {"alertname": "CallCenterAbandonRateHigh", "severity": "warning", "queue": "sales", "team": "sales"},
        ],
    )


def test_worker_down_mutes_nothing(alertmanager):
    """No inhibition has CallCenterWorkerDown as its source, neither per instance nor in the
    "no target at all" form without an instance label."""
    check_inhibition(
        alertmanager,
        sources=[{"alertname": "CallCenterWorkerDown", "severity": "critical", "instance": "worker-1:6066"},
                 {"alertname": "CallCenterWorkerDown", "severity": "critical", "job": "callpulse"}],
        muted=[],
        kept=[
            {"alertname": "CallCenterEventLagHigh", "severity": "warning", "instance": "worker-1:6066"},
            {"alertname": "CallCenterEventLagHigh", "severity": "warning", "instance": "worker-2:6066"},
            {"alertname": "CallCenterEventFeedStalled", "severity": "critical", "queue": "sales"},
        ],
    )


# ---- a real Alertmanager: grouping ----------------------------------------------------------------

def groups_by_receiver(base: str, expected_alerts: int) -> dict[str, list[tuple[dict, list[str]]]]:
    """{receiver: [(group labels, sorted queues of its alerts), ...]} from /api/v2/alerts/groups,
    polled until the groups hold `expected_alerts` alert copies or 15 s passed."""
    deadline = time.monotonic() + 15
    while True:
        groups = http(base + "/api/v2/alerts/groups")
        if sum(len(g["alerts"]) for g in groups) >= expected_alerts or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out: dict[str, list] = {}
    for g in groups:
        out.setdefault(g["receiver"]["name"], []).append(
            (g["labels"], sorted(a["labels"].get("queue", "") for a in g["alerts"])))
    return {name: sorted(gs, key=lambda x: sorted(x[0].items())) for name, gs in out.items()}


def test_a_stalled_feed_is_one_notification_per_receiver(alertmanager):
    stalled = "CallCenterEventFeedStalled"
    below = "CallCenterServiceLevelBelowTarget"
    post_alerts(
        alertmanager,
        {"alertname": stalled, "severity": "critical", "queue": "sales", "team": "sales"},
        {"alertname": stalled, "severity": "critical", "queue": "sales-vip", "team": "sales"},
        {"alertname": stalled, "severity": "critical", "queue": "support"},
        {"alertname": below, "severity": "critical", "queue": "support", "threshold": "20"},
        {"alertname": below, "severity": "critical", "queue": "billing", "threshold": "20"},
    )
    # pager: 3 stalled + 2 service level; sales-slack: the 2 stalled sales queues
    groups = groups_by_receiver(alertmanager, expected_alerts=7)
    assert groups == {
        "pager": [
            ({"alertname": stalled}, ["sales", "sales-vip", "support"]),
            ({"alertname": below, "queue": "billing"}, ["billing"]),
            ({"alertname": below, "queue": "support"}, ["support"]),
        ],
        "sales-slack": [({"alertname": stalled}, ["sales", "sales-vip"])],
    }
