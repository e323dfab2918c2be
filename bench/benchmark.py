"""Benchmark one callpulse worker on the embedded broker; prints figures, asserts nothing.

1. Throughput and memory: N simulated events (history, rate_scale 50: a large center) are loaded
   into the events topic first; then one worker is started and timed from its first processed
   event to its last. Worker RSS is read at 10 % and at 100 % of the events.
2. Latency: the simulator feeds live traffic at a steady rate while probe calls are sent one at a
   time; each probe's latency is send -> visible in a /metrics scrape (polled every 5 ms).

Usage: python bench/benchmark.py [--events 1000000] [--rate 500] [--probes 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "streams")]

from datetime import UTC

from callpulse.config import load_config  # noqa: E402
from callpulse.pipeline.topics import create_topics  # noqa: E402
from callpulse.tools.broker import EmbeddedBroker, free_port  # noqa: E402
from callpulse.tools.simulator import event_time, simulate  # noqa: E402

LOGS = ROOT / "var" / "bench"


def scrape(url: str) -> dict[str, float]:
    """Unlabelled and summed samples of a few pipeline counters from /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("callcenter_events_total", "callcenter_events_applied_total", "callcenter_events_rejected_total"):
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def produce(bootstrap: str, topic: str, values) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=512 * 1024)
    await producer.start()
    n = 0
    try:
        for n, (key, value) in enumerate(values, 1):  # noqa: B007 (n: the count, returned)
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return n


def start_worker(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(env, CALLPULSE_WEB_PORT=str(port), CALLPULSE_WEB_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "callpulse", "worker", "--loglevel", "warn"],
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("worker did not start")


def pipeline_env(broker: EmbeddedBroker, name: str, **extra) -> dict:
    env = dict(os.environ, CALLPULSE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, CALLPULSE_APP_ID=f"bench-{name}",
               CALLPULSE_TOPIC_EVENTS=f"{name}-events", CALLPULSE_TOPIC_BATCHES=f"{name}-batches",
               CALLPULSE_TOPIC_DEAD_LETTER=f"{name}-dead-letter", CALLPULSE_TOPIC_INTERVALS=f"{name}-intervals", CALLPULSE_TOPIC_AGENT_INTERVALS=f"{name}-agent-intervals", CALLPULSE_DATA_DIR=str(LOGS / name), **extra)
    asyncio.run(create_topics(load_config(None, env)))
    return env


def throughput_run(broker: EmbeddedBroker, n_events: int, run: int) -> dict:
    name = f"tp{run}"
    # A replay of hours of history at full speed with the default settings (60 s lateness): the
    # events are keyed by sequence number, so every queue's events are spread over all partitions
    # and stage 1's event-time alignment must keep them within the lateness ("rejected" shows it).
    env = pipeline_env(broker, name)
    # History that ends a minute ago: a first pass measures the event-time span of N events.
    def generate(start: float):
        return itertools.islice(simulate("normal", seed=run, start=start, duration_seconds=float("inf"),
                                         rate_scale=50), n_events)

    # The arrival profile follows the time of day of `start`, so the span depends on the start:
    # move the start back until the last event is in the past (future events would be rejected).
    start = time.time() - 3600
    for _ in range(10):
        last = None
        for last in generate(start):  # noqa: B007 (last: the final event)
            pass
        overshoot = event_time(last) - (time.time() - 60)
        if overshoot <= 0:
            break
        start -= overshoot + 3600
    events = generate(start)
    t = time.perf_counter()
    values = ((str(i).encode(), orjson.dumps(e)) for i, e in enumerate(events))
    sent = asyncio.run(produce(broker.bootstrap, f"{name}-events", values))
    print(f"  loaded {sent:,} events in {time.perf_counter() - t:.1f} s", flush=True)
    proc, url = start_worker(env, LOGS / f"{name}-worker.log")
    try:
        while scrape(url).get("callcenter_events_total", 0) == 0:
            time.sleep(0.05)
        started = time.perf_counter()
        rss_early = None
        last_applied, last_change = -1.0, time.perf_counter()
        while True:
            m = scrape(url)
            done = m.get("callcenter_events_total", 0) + m.get("callcenter_events_rejected_total", 0)
            if rss_early is None and done >= sent * 0.1:
                rss_early = rss_mb(proc.pid)
            if done >= sent:
                if m.get("callcenter_events_applied_total", 0) != last_applied:
                    last_applied, last_change = m["callcenter_events_applied_total"], time.perf_counter()
                elif time.perf_counter() - last_change > 10.0:  # second stage settled
                    break
            time.sleep(0.5)  # a scrape costs the worker tens of ms: poll gently
        elapsed = last_change - started
        return {"events": sent, "seconds": elapsed, "rate": sent / elapsed, "rss_early_mb": rss_early,
                "rss_end_mb": rss_mb(proc.pid), "applied": last_applied, "rejected": m.get("callcenter_events_rejected_total", 0)}
    finally:
        proc.terminate()
        proc.wait()


def latency_run(broker: EmbeddedBroker, rate: float, probes: int) -> list[float]:
    env = pipeline_env(broker, "lat")
    proc, url = start_worker(env, LOGS / "lat-worker.log")
    stop = threading.Event()

    async def background():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        await producer.start()
        try:
            # live traffic: simulated events re-timed to "now", sent at `rate` per second
            source = simulate("normal", seed=7, start=time.time(), duration_seconds=float("inf"), rate_scale=20)
            t0 = time.perf_counter()
            for n, e in enumerate(source):
                if stop.is_set():
                    break
                due = t0 + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                e["time"] = _iso(time.time())
                await producer.send("lat-events", orjson.dumps(e), key=str(n).encode())
        finally:
            await producer.stop()

    thread = threading.Thread(target=lambda: asyncio.run(background()), daemon=True)
    thread.start()
    latencies: list[float] = []

    async def probe_loop():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await producer.start()
        try:
            # let the worker join its groups and the background traffic reach its steady rate
            while scrape(url).get("callcenter_events_applied_total", 0) == 0:
                await asyncio.sleep(0.5)
            await asyncio.sleep(5)
            for i in range(probes):
                before = _probe_count(url)
                event = {"schema_version": 1, "event_id": f"probe-{i}", "type": "call.offered", "time": _iso(time.time()),
                         "source": "bench", "queue": "probe", "call_id": f"probe-{i}"}
                sent_at = time.perf_counter()
                await producer.send_and_wait("lat-events", orjson.dumps(event), key=b"probe")
                while _probe_count(url) <= before:
                    await asyncio.sleep(0.005)
                latencies.append(time.perf_counter() - sent_at)
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()

    try:
        asyncio.run(probe_loop())
    finally:
        stop.set()
        thread.join(5)
        proc.terminate()
        proc.wait()
    return latencies


def _probe_count(url: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith('callcenter_calls_offered_total{queue="probe"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _iso(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs (the median is reported; 0: latency only)")
    parser.add_argument("--rate", type=float, default=500.0, help="steady live rate for the latency run")
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()
    LOGS.mkdir(parents=True, exist_ok=True)
    runs = []
    for run in range(args.repeat):
        # A fresh broker per run: the embedded one keeps every event in memory, and runs on a
        # broker shared with earlier runs were up to 20 % slower than the first.
        with EmbeddedBroker(log_path=LOGS / f"broker-{run}.log") as broker:
            print(f"throughput run {run + 1}/{args.repeat}: {args.events:,} events", flush=True)
            r = throughput_run(broker, args.events, run)
            runs.append(r)
            print(f"  {r['rate']:,.0f} events/s ({r['seconds']:.1f} s); RSS {r['rss_early_mb']:.0f} MB at 10 % -> "
                  f"{r['rss_end_mb']:.0f} MB at 100 % (growth {r['rss_end_mb'] - r['rss_early_mb']:+.0f} MB); "
                  f"{r['applied']:,.0f} applied, {r['rejected']:,.0f} rejected", flush=True)
    if runs:
        rates = [r["rate"] for r in runs]
        growth = [r["rss_end_mb"] - r["rss_early_mb"] for r in runs]
        print(f"THROUGHPUT median {statistics.median(rates):,.0f} events/s over {len(runs)} run(s) "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f}); target >= 10,000")
        print(f"MEMORY growth median {statistics.median(growth):+.0f} MB from 10 % to 100 % of {args.events:,} events; target < 50 MB")
    # And a fresh broker for the latency run.
    with EmbeddedBroker(log_path=LOGS / "broker-latency.log") as broker:
        print(f"latency run: {args.rate:g} events/s live, {args.probes} probes", flush=True)
        lat = sorted(latency_run(broker, args.rate, args.probes))
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"LATENCY event -> /metrics p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms "
              f"over {len(lat)} probes; target p99 <= 500 ms")


if __name__ == "__main__":
    main()
