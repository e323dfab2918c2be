"""`callpulse demo`: embedded broker, topics, one worker, the simulator and a live terminal wallboard.

Every child is a real process (the broker, `callpulse worker`, `callpulse simulate`), started with
the same config the production commands use; Ctrl-C, SIGTERM (or --seconds) stops them all: the
simulator, then the worker, then the broker, each with SIGTERM and up to 10 s before SIGKILL.

The children run in their own sessions, so a terminal's Ctrl-C reaches only the demo, which stops
them in that order. They are started with procs.spawn from the main thread: on Linux the kernel
kills them (PR_SET_PDEATHSIG) when the demo dies, even by SIGKILL, so no worker keeps port 6066 or
the broker port busy for the next demo.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ..config import _queue_path, load_config
from .broker import EmbeddedBroker, free_port
from .procs import spawn, stop, terminate_as_interrupt
from .simulator import QUEUES, SCENARIO_PARAMS, planning_forecast


def _child(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child has its own copy of the descriptor
        return spawn([sys.executable, "-m", "callpulse", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    """Wait until the worker's web server answers (it starts after the group join and recovery)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the worker exited with code {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the worker did not answer at {url} within {timeout:g} s")


def port_or_free(port: int) -> int:
    """`port` if nothing listens there, otherwise a free one (another demo or worker may run)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a recent demo's TIME_WAIT is fine
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            other = free_port()
            print(f"port {port} is taken; using {other}")
            return other


def run_demo(args) -> int:
    from ..pipeline.topics import create_topics
    from .wallboard import run as run_wallboard

    logs = Path("var/demo")
    logs.mkdir(parents=True, exist_ok=True)
    web_port = port_or_free(args.web_port)
    broker = EmbeddedBroker(port_or_free(args.broker_port), log_path=logs / "broker.log")
    # The simulator's own planning forecast for today and tomorrow (UTC, the default queues' zone),
    # so the wallboard and /metrics show forecast vs actual.
    forecast = logs / "forecast.csv"
    forecast.unlink(missing_ok=True)
    if not SCENARIO_PARAMS[args.scenario].steady:  # a steady queue has no intraday plan
        forecast.write_text(planning_forecast(time.time() // 86400 * 86400, days=2, scenario=args.scenario),
                            encoding="utf-8")
    # The simulator first sends the last 15 minutes at once (so the windows start full): stage 1
    # aligns that replay by event time, so the default lateness does.
    env = dict(os.environ, CALLPULSE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, CALLPULSE_WEB_PORT=str(web_port),
               CALLPULSE_WEB_HOST="127.0.0.1")
    if forecast.exists():
        env["CALLPULSE_FORECAST_FILE"] = str(forecast)
    # Repeat-caller FCR needs a hash key; a demo-only one unless one is set. A call is final once
    # its repeat period passed (24 h by default): the demo's own config shortens it to 10 minutes
    # so the figure moves while one watches, and puts the simulator's queues in one repeat-caller
    # group (its repeat callers call any of them) (a config of the user's own is used as it is).
    env.setdefault("CALLPULSE_CALLER_HASH_KEY", "callpulse-demo-only-key")
    if not env.get("CALLPULSE_CONFIG"):
        demo_config = logs / "demo.toml"
        members = "".join(f'[{_queue_path(q.name)}]\nrepeat_caller_group = "demo"\n' for q in QUEUES)
        demo_config.write_text(f"# written by `callpulse demo`\n[queue_defaults]\nrepeat_caller_seconds = 600\n{members}",
                               encoding="utf-8")
        env["CALLPULSE_CONFIG"] = str(demo_config)
    children: list[subprocess.Popen] = []
    timer: threading.Timer | None = None
    # SIGTERM (systemd, docker stop, kill) takes Ctrl-C's way out: through the `finally` below.
    previous_sigterm = signal.signal(signal.SIGTERM, terminate_as_interrupt)
    try:
        print(f"starting the embedded Kafka-protocol broker (Tansu) on {broker.bootstrap} ...")
        broker.start()
        os.environ.update(env)
        asyncio.run(create_topics(load_config()))
        worker = _child(["worker"], env, logs / "worker.log")
        children.append(worker)
        url = f"http://127.0.0.1:{web_port}"
        print("starting a worker (joining the consumer group takes a few seconds) ...")
        wait_until_ready(url, worker)
        children.append(_child(["simulate", "--scenario", args.scenario], env, logs / "simulator.log"))
        print(f"\n  metrics:   {url}/metrics\n  JSON:      {url}/api/queues\n  forecast:  {forecast}\n  logs:      {logs}/\n")
        time.sleep(3)
        done = threading.Event()
        if args.seconds:
            timer = threading.Timer(args.seconds, done.set)
            timer.daemon = True  # a Ctrl-C before it fires must not wait for it at exit
            timer.start()
        run_wallboard([url], window=args.window, stop=done)
    except KeyboardInterrupt:
        pass
    finally:
        if timer:
            timer.cancel()
        print("\nstopping the simulator, the worker and the broker ...")
        for child in reversed(children):
            stop(child)
        broker.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)
    return 0
