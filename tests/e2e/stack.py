"""The monitoring half of the end-to-end tests: real Prometheus and Alertmanager processes (Debian
packages) configured from the files in deploy/, and a webhook receiver that records what arrives.

The production files are used as they are, with only what a test must change: scrape targets and
intervals, the Alertmanager address, receivers pointed at the local webhook (one URL path per
receiver, so the test also sees which route was taken), shorter Alertmanager timers, and the
alerts' `for:` durations shortened to FOR_IN_TESTS.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from callpulse.tools import simulator
from callpulse.tools.broker import free_port
from callpulse.tools.procs import spawn, stop
from helpers import require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FOR_IN_TESTS = "10s"


def _get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url} exited early; see {log}:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {timeout} s; see {log}")


def write_forecast(path: Path, history_start: float, hour_of_day: float) -> Path:
    """The simulator's planning forecast (simulator.planning_forecast: its own rates, intraday
    curve, AHT and planned agents, no surge) for today and tomorrow in UTC (the queues' default
    zone), for what `callpulse simulate --hour-of-day H --backfill B` sends from `history_start`
    (= now - B) on: its curve runs from hour H at `history_start`."""
    day0 = history_start // 86400 * 86400
    shift = hour_of_day * 3600 - history_start % 86400  # real time + shift = simulated time of day
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(simulator.planning_forecast(day0, days=2, shift_seconds=shift), encoding="utf-8")
    return path


def shorten_for(rules_text: str, duration: str = FOR_IN_TESTS) -> str:
    """Every `for: <duration>` of a rule file set to `duration`; nothing else changes."""
    return re.sub(r"(?m)^(\s*for:\s*)\S+", lambda m: m.group(1) + duration, rules_text)


class WebhookReceiver:
    """Records every Alertmanager notification with the wall time it arrived and the path (the
    receiver name) it was posted to."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.notifications.append({"received": time.time(),
                                                   "receiver": urllib.parse.unquote(self.path.strip("/")),
                                                   "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, receiver: str) -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(receiver)}"

    def alerts(self) -> list[dict]:
        """Every alert of every notification: its labels, status, annotations, and when and to
        which receiver the notification came."""
        with self.lock:
            return [dict(alert, received=n["received"], receiver=n["receiver"])
                    for n in self.notifications for alert in n["body"]["alerts"]]

    def close(self) -> None:
        self.server.shutdown()


def alertmanager_config_for_tests(webhook: WebhookReceiver) -> dict:
    """deploy/alertmanager/alertmanager.yml with every receiver posting to the local webhook
    (path = receiver name) and timers short enough for a test; routes and inhibitions unchanged."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    config.get("global", {}).pop("slack_api_url", None)
    config.get("global", {}).pop("slack_api_url_file", None)
    for receiver in config["receivers"]:
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": webhook.url(receiver["name"]), "send_resolved": True}]

    def fast(route: dict) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "2s"), ("repeat_interval", "1h")):
            if key in route or route is config["route"]:
                route[key] = value
        for child in route.get("routes", []):
            fast(child)

    fast(config["route"])
    return config


class Alertmanager:
    def __init__(self, workdir: Path, config: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        self.log = workdir / "alertmanager.log"
        with open(self.log, "ab") as log:  # spawn: dies with pytest, even by SIGKILL (Linux)
            self.process = spawn(
                [require_tool("prometheus-alertmanager", "the Debian package prometheus-alertmanager (`make tools` installs it)"), f"--config.file={path}", f"--storage.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT)
        _wait_ready(self.url + "/-/ready", self.process, self.log)

    def stop(self) -> None:
        stop(self.process)


class Prometheus:
    """deploy/prometheus/prometheus.yml scraping the given workers every second, evaluating the
    deploy/prometheus/rules files (with `for:` shortened) every second."""

    def __init__(self, workdir: Path, targets: list[str], alertmanager: str | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = workdir / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        for source in sorted((DEPLOY / "prometheus" / "rules").glob("*.rules.yml")):
            (rules / source.name).write_text(shorten_for(source.read_text()))
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(rules / "*.rules.yml")]
        jobs = [job for job in config["scrape_configs"] if job["job_name"] == "callpulse"]
        assert jobs, "deploy/prometheus/prometheus.yml has no job 'callpulse'"
        jobs[0].update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": targets}])
        jobs[0].pop("file_sd_configs", None)
        config["scrape_configs"] = jobs
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        else:
            config.pop("alerting", None)
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        self.log = workdir / "prometheus.log"
        with open(self.log, "ab") as log:  # spawn: dies with pytest, even by SIGKILL (Linux)
            self.process = spawn(
                [require_tool("prometheus", "the Debian package prometheus (`make tools` installs it)"), f"--config.file={path}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)
        _wait_ready(self.url + "/-/ready", self.process, self.log)

    def query(self, expr: str) -> list[dict]:
        """An instant query's result (a list of series); AssertionError naming the query if
        Prometheus refuses it."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = _get_json(url)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode(errors='replace')}") from None
        assert answer["status"] == "success", (expr, answer)
        result = answer["data"]["result"]
        return result if isinstance(result, list) else [result]

    def first_time(self, expr: str, start: float, end: float) -> float | None:
        """Unix time of the first sample in [start, end] (one-second steps) where `expr` has a
        value, e.g. the first scrape at which a gauge was below a limit."""
        url = f"{self.url}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": start, "end": end, "step": "1s"})
        times = [float(t) for series in _get_json(url)["data"]["result"] for t, _ in series["values"]]
        return min(times, default=None)

    def rule_health(self) -> list[tuple[str, str, str]]:
        """(rule name, health, last error) of every rule whose last evaluation failed (rules not
        evaluated yet are "unknown", not failed)."""
        groups = _get_json(self.url + "/api/v1/rules")["data"]["groups"]
        return [(r["name"], r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]
                if r["health"] == "err"]

    def stop(self) -> None:
        stop(self.process)
