"""The whole monitoring path with real processes: simulator (surge drill) → broker → worker →
Prometheus (the rules of deploy/prometheus) → Alertmanager (deploy/alertmanager) → a webhook.

One stack serves the module; the tests run in file order on the same traffic:
1. before the surge, no service-level page is delivered;
2. every Grafana panel's query returns data from the real Prometheus;
3. the surge drives support's service level below target: the page reaches the webhook;
4. after the surge, the alert resolves and the resolution is delivered.
Only the alerts' `for:` durations and Alertmanager's timers are shortened (see stack.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import types

import pytest

from grafana.dashboards import build_all, panel_queries, render_query
from harness import LOGS, Pipeline, wait_for
from helpers import event
from stack import FOR_IN_TESTS, Alertmanager, Prometheus, WebhookReceiver, alertmanager_config_for_tests, write_forecast

pytestmark = pytest.mark.e2e

QUEUE, THRESHOLD, TARGET = "support", "20", 0.8
SURGE_IN, SURGE_SECONDS = 20.0, 180.0
# Twenty minutes of history (simulated from 14:30, so the surge meets the afternoon peak): at
# least one 15-minute forecast interval has ended with 5 minutes or more of calls in it, so the
# forecast's WAPE (over the day's ended intervals) has a value, and some queue has had the 5
# abandons that make the callers' patience known (Erlang A) before the surge begins.
HISTORY, HOUR_OF_DAY = 1200, 14.5
ALERT = "CallCenterServiceLevelBelowTarget"


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory):
    work = tmp_path_factory.mktemp("monitoring")
    with contextlib.ExitStack() as cleanup:  # whatever started is stopped, also when a later part fails
        # A forecast of the simulated traffic (without the surge) for the forecast panels.
        forecast = write_forecast(work / "forecast.csv", time.time() - HISTORY, HOUR_OF_DAY)
        # A cost per agent-hour, for the cost-per-call panel (0, the default, turns it off), and a
        # 2-minute repeat-caller period with a hash key, so that calls are checked within the run
        # (the simulator repeats 12 % of its callers) and the repeat-caller FCR panel has data.
        config = work / "callpulse.toml"
        config.write_text('[queue_defaults]\ncost_per_agent_hour = 20.0\ncurrency = "EUR"\nrepeat_caller_seconds = 120\n',
                          encoding="utf-8")
        pipeline = Pipeline(broker, "monitoring", CALLPULSE_FORECAST_FILE=str(forecast), CALLPULSE_CONFIG=str(config),
                            CALLPULSE_CALLER_HASH_KEY="monitoring-test-caller-key")
        cleanup.callback(pipeline.stop)
        worker = pipeline.start_worker()
        webhook = WebhookReceiver()
        cleanup.callback(webhook.close)
        alertmanager = Alertmanager(work / "alertmanager", alertmanager_config_for_tests(webhook))
        cleanup.callback(alertmanager.stop)
        prometheus = Prometheus(work / "prometheus", [f"127.0.0.1:{worker.port}"], f"127.0.0.1:{alertmanager.port}")
        cleanup.callback(prometheus.stop)
        # Twenty minutes of normal traffic as history, then 35 minutes of live traffic with a
        # 3-minute surge of support and 客服 starting SURGE_IN seconds from now; afternoon traffic
        # whatever the time.
        surge_start = time.time() + SURGE_IN
        simulator = subprocess.Popen(
            [sys.executable, "-m", "callpulse", "simulate", "--scenario", "surge", "--seed", "1",
             "--hour-of-day", str(HOUR_OF_DAY), "--backfill", str(HISTORY), "--duration", str(HISTORY + 2100),
             "--surge-in", str(SURGE_IN), "--surge-duration", str(SURGE_SECONDS)],
            env=pipeline.env, stdout=open(LOGS / "monitoring-simulator.log", "ab"), stderr=subprocess.STDOUT)
        cleanup.callback(lambda: (simulator.terminate(), simulator.wait(10)))
        # The simulator's callbacks are rare (a few a day) and its surveys few in a short run: a
        # drill of connected callbacks and NPS answers every 10 s, so those panels have data too.
        drill = CallbackAndSurveyDrill(pipeline)
        cleanup.callback(drill.stop)
        yield types.SimpleNamespace(pipeline=pipeline, worker=worker, webhook=webhook, prometheus=prometheus,
                                    alertmanager=alertmanager, surge_start=surge_start)


class CallbackAndSurveyDrill:
    """Every 10 s in queue 客服: a callback requested 30 s ago and connected now, and a survey with
    CSAT, NPS and resolved answers (events of the live stream clock, in a thread of their own)."""

    def __init__(self, pipeline):
        self.pipeline, self.done = pipeline, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.done.wait(10.0):
            n += 1
            now = time.time()
            self.pipeline.produce([
                event("call.callback_requested", now - 30, queue="客服", call_id=f"drill-cb{n}", callback_id=f"drill-cb{n}"),
                event("call.callback_completed", now, queue="客服", call_id=f"drill-cb{n}", callback_id=f"drill-cb{n}",
                      result="connected"),
                event("call.survey", now, queue="客服", call_id=f"drill-s{n}", csat=4 + n % 2, nps=6 + n % 5,
                      resolved=n % 3 > 0),
            ])

    def stop(self) -> None:
        self.done.set()
        self.thread.join(15)


def sl_alerts(stack, status: str) -> list[dict]:
    return [a for a in stack.webhook.alerts() if a["labels"].get("alertname") == ALERT
            and a["labels"].get("queue") == QUEUE and a["labels"].get("threshold") == THRESHOLD
            and a["status"] == status]


def test_rules_load_and_nothing_pages_before_the_surge(stack):
    wait_for(lambda: stack.prometheus.query('up{job="callpulse"} == 1'), timeout=30, message="first scrape")
    wait_for(lambda: stack.prometheus.query(f'queue:callcenter_service_level:ratio{{queue="{QUEUE}",window="5m"}}'),
             timeout=60, message="recorded service level of support")
    assert stack.prometheus.rule_health() == []
    time.sleep(max(0.0, stack.surge_start - time.time()))
    assert [a for a in stack.webhook.alerts() if a["labels"].get("alertname") == ALERT] == []


def test_every_dashboard_query_returns_data(stack):
    # The surge is under way: callers wait, agents are busy, flow-outs start.
    queries = [(dashboard["title"], title, render_query(expr))
               for dashboard in build_all() for title, expr in panel_queries(dashboard)]
    assert len(queries) > 30

    def empty():
        return [(d, t, q) for d, t, q in queries if not stack.prometheus.query(q)]

    missing = empty()
    deadline = time.monotonic() + 120
    while missing and time.monotonic() < deadline:
        time.sleep(5)
        missing = empty()
    assert missing == [], "panels without data:\n" + "\n".join(f"{d} / {t}: {q}" for d, t, q in missing)


def test_the_service_level_page_is_delivered(stack):
    firing = wait_for(lambda: sl_alerts(stack, "firing"), timeout=600, interval=1,
                      message=f"{ALERT} for {QUEUE} at the webhook")
    alert = firing[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"].endswith("#" + ALERT.lower())
    assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    assert alert["receiver"] == "pager", "a critical alert is routed to the pager receiver"
    # When the breach became visible: the first scrape of the worker's own 5m service level below
    # target (Prometheus scrapes every second here).
    first_breach = stack.prometheus.first_time(
        f'callcenter_service_level_ratio{{queue="{QUEUE}",window="5m",threshold="{THRESHOLD}"}} < {TARGET}',
        stack.surge_start, alert["received"])
    assert first_breach is not None and first_breach < alert["received"]
    print(f"\n{ALERT} {QUEUE}/{THRESHOLD}: service level below target at the worker "
          f"{first_breach - stack.surge_start:.0f} s after the surge began; page delivered to "
          f"'{alert['receiver']}' {alert['received'] - first_breach:.1f} s after that (for: {FOR_IN_TESTS} in this test)")


def test_the_page_resolves_after_the_surge(stack):
    resolved = wait_for(lambda: sl_alerts(stack, "resolved"), timeout=900, interval=2,
                        message=f"{ALERT} for {QUEUE} resolved at the webhook")
    surge_end = stack.surge_start + SURGE_SECONDS
    assert resolved[0]["received"] > surge_end
    print(f"\nresolved notice delivered {resolved[0]['received'] - surge_end:.0f} s after the surge ended")
