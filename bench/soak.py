"""Soak: a simulated day at a large center's rate through ONE worker; prints figures per hour, then PASS/FAIL.

Traffic: `queues` queues as queues/5 independent copies ("divisions") of the simulator's five-queue
center, each with its own seed, its queue names suffixed "-NN" and its own agents (agent ids
suffixed too), merged into one stream in event-time order. The arrival rate is set so that the
divisions together get `calls-per-day` calls a day (calls entering the IVR; ~88 % of them reach a
queue). Default 200 queues and 40,000 calls a day: about 20 times the Anonymous Bank's busiest day
of February 1999 (1,949 calls in 6 queues, /work/shared/data/anonymous_bank), i.e. a center of
several hundred agents; about 400,000 events a day (agent state changes included).

Time: the events are timed over `hours` hours of a past UTC day, starting at midnight (the
simulator's intraday curve: night floor, peaks at 10:45 and 15:15), and produced hour by hour, as
fast as the worker takes them: the hour's events are produced (keyed by sequence number, so each
queue's events are spread over every partition, as in bench/benchmark.py), then the soak waits
until the worker has applied all of them (their batch records are in the changelog), then measures.
The worker's stream clock follows event time, so windows, intervals and the dedup and lateness
horizons run on the simulated day. Settings are the defaults (60 s lateness, 600 s dedup) except
`snapshot_interval_seconds`: that interval is wall time, and one simulated hour takes a few seconds
here, so the default 30 s would be hours of simulated time between snapshots (and hours of batch
records kept in the table); --snapshot-interval (default 1 s) keeps it at minutes of simulated time.
The other snapshot trigger, SNAPSHOT_EVERY_EVENTS (10,000 events per queue since the last
snapshot), is not reached at ~2,000 events per queue a day.

Measured at every simulated hour, without changing the worker: its RSS (/proc/<pid>/status VmRSS);
/metrics, scraped once a simulated hour after the measurement (a scrape reads every queue, as
Prometheus would, every 15 s; --no-scrape: only at the end); and the state
table's changelog topic (`<app_id>-queue-state-changelog`), read from the start by a consumer of
its own: live keys (latest value not None), live batch records (keys with b"\\x00b"), the latest
snapshot of every queue (keys ending in b"\\x00s") with its size, compressed and as JSON by part.
At the end the totals of every queue on /api/queues are compared with what was produced.

PASS/FAIL (exit code 1 on any FAIL):
- RSS growth after hour 1: the highest RSS of the later hours minus the RSS at hour 1 <= 50 MB;
- snapshot size bounded: each hour of the second half is compared with the hour between hour 3 and
  the middle of most similar traffic (events in it and the hour before, within 30 %: the rolling
  windows span an hour, agent seconds are pruned when read): the latest snapshots' parts
  that follow the load (all but interval_actuals and days, which are kept for a fixed time by design),
  per queue, may be at most 1.5 times as big (after 64 KB of slack over all queues); interval_actuals
  and days may hold no more than their retention allows (26 h of closed intervals, 3 business days).
  SKIP when no hour can be compared (short runs);
- live batch records bounded: from hour 4 on, no live batch record is older than 3 simulated hours
  (plus the simulated time of two snapshot intervals), i.e. old records are deleted as snapshots
  cover them (SKIP before hour 4);
- exact totals: offered, answered, abandoned, flowed out, handled and the wait seconds of every
  queue on /api/queues equal what was produced; nothing rejected or duplicated.

Usage: python bench/soak.py [--hours 24] [--queues 200] [--calls-per-day 40000] [--snapshot-interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import defaultdict
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "streams")]

from callpulse import events as ev
from callpulse.config import load_config
from callpulse.kpi.intervals import KEEP_FINAL_RECORDS_SECONDS
from callpulse.kpi.model import KEEP_ACTUALS_SECONDS
from callpulse.pipeline.state import SNAPSHOT_EVERY_EVENTS
from callpulse.pipeline.topics import changelog_topic_name, create_topics
from callpulse.tools.broker import EmbeddedBroker, free_port
from callpulse.tools.procs import spawn, stop
from callpulse.tools.simulator import QUEUES, arrival_profile, simulate

LOGS = ROOT / "var" / "soak"
NAME = "soak"
RSS_LIMIT_MB = 50.0
HOUR = 3600.0
# Snapshot parts kept for a fixed time by design rather than following the load.
RETAINED_PARTS = ("interval_actuals", "days")
SETTLED_HOUR = 3  # the 1 h windows and the 1 h of kept final interval records fill during the first hour(s)
SNAPSHOT_RATIO = 1.5
SNAPSHOT_SLACK = 64 * 1024  # bytes, over all queues
COMPARED = ("offered", "answered", "abandoned", "flowed_out", "handled")
COMPARED_SECONDS = ("answer_wait_seconds", "abandon_wait_seconds")


# ---- traffic ---------------------------------------------------------------------------------

def calls_per_day_at_scale_1() -> float:
    """Calls a day (IVR entries) of one simulated five-queue center at rate_scale 1: the queues'
    peak rates times the intraday curve integrated over a day."""
    curve_hours = sum(arrival_profile(m / 60.0) for m in range(24 * 60)) / 60.0
    return sum(q.rate_per_hour for q in QUEUES) * curve_hours


def division(k: int, seed: int, start: float, hours: float, rate_scale: float, width: int):
    suffix = f"-{k:0{width}d}"
    for e in simulate("normal", seed=seed * 1000 + k, start=start, duration_seconds=hours * HOUR,
                      rate_scale=rate_scale):
        q = e.get("queue")
        if q is not None:
            e["queue"] = q + suffix
        qs = e.get("queues")
        if qs is not None:
            e["queues"] = [x + suffix for x in qs]
        tq = e.get("target_queue")
        if tq is not None:
            e["target_queue"] = tq + suffix
        a = e.get("agent_id")
        if a is not None:
            e["agent_id"] = a + suffix
        yield e


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"


class Expected:
    """What was produced, counted per queue the way the model counts (model.py's attribution)."""

    def __init__(self):
        self.totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # every queue seen
        self.entered: dict[tuple[str, str], float] = {}
        self.talking: set[tuple[str, str]] = set()
        self.applications = 0  # events times the queues each concerns: what the second stage applies
        self.events = 0
        self.hour: dict[str, int] = defaultdict(int)  # events applied per queue this hour
        self.busiest_hour = 0  # most events applied to one queue in one hour

    def next_hour(self) -> None:
        self.busiest_hour = max(self.busiest_hour, max(self.hour.values(), default=0))
        self.hour.clear()

    def add(self, e: dict) -> None:
        self.events += 1
        queues = ev.queues_of(e)
        self.applications += len(queues)
        for q in queues:
            self.hour[q] += 1
            self.totals.setdefault(q, defaultdict(float))  # a queue with agent events only: zero totals
        kind = e["type"]
        if not kind.startswith("call."):
            return
        q = e.get("queue")
        if q is None:
            return
        key = (q, e["call_id"])
        tot = self.totals[q]
        if kind == "call.offered":
            if key not in self.entered:
                tot["offered"] += 1
                self.entered[key] = ev.parse_time(e["time"])
        elif kind in ("call.answered", "call.abandoned", "call.flowed_out"):
            entered = self.entered.pop(key)
            wait = max(0.0, ev.parse_time(e["time"]) - entered)
            if kind == "call.answered":
                tot["answered"] += 1
                tot["answer_wait_seconds"] += wait
                self.talking.add(key)
            elif kind == "call.abandoned":
                tot["abandoned"] += 1
                tot["abandon_wait_seconds"] += wait
            else:
                tot["flowed_out"] += 1
        elif kind in ("call.ended", "call.transferred") and key in self.talking:
            self.talking.discard(key)
            tot["handled"] += 1


# ---- the worker and what it shows -------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def scrape(url: str) -> dict[str, float]:
    """The pipeline counters of /metrics, summed over their labels (rejected also by reason)."""
    out: dict[str, float] = defaultdict(float)
    for line in get(url + "/metrics").decode().splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("callcenter_events_total", "callcenter_events_applied_total", "callcenter_events_rejected_total",
                    "callcenter_events_duplicate_total"):
            value = float(line.rsplit(" ", 1)[1])
            out[name] += value
            if name == "callcenter_events_rejected_total" and value:
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                out["rejected:" + reason] += value
    return out


def start_worker(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(env, CALLPULSE_WEB_PORT=str(port), CALLPULSE_WEB_HOST="127.0.0.1")
    with open(log, "ab") as out:
        proc = spawn([sys.executable, "-m", "callpulse", "worker", "--loglevel", "warn"],
                     env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited ({proc.returncode}), see {log}")
        try:
            get(url + "/healthz", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"the worker did not start, see {log}")


class Changelog:
    """The state table's changelog, read from the start and followed: the latest value of every key."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.size: dict[bytes, int] = {}  # live key -> len(key) + len(value)
        self.batch_hour: dict[bytes, int] = {}  # live batch record -> simulated hour it was written in
        self.snapshots: dict[str, bytes] = {}  # queue -> its latest snapshot record
        self.accepted = 0  # events in every batch record written: what the second stage applied
        self.records = self.bytes = 0  # every record, as a topic that is never compacted keeps them
        self.batches = 0  # batch records written
        self.written = defaultdict(int)  # this hour's records: snapshot, batch, delete

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                         fetch_max_wait_ms=100, max_partition_fetch_bytes=4 << 20)
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def read(self, hour: int, timeout_ms: int = 200) -> int:
        """Read what is there now; the number of records read."""
        n = 0
        for records in (await self.consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)).values():
            for r in records:
                n += 1
                self._apply(r.key, r.value, hour)
        return n

    def _apply(self, key: bytes, value: bytes | None, hour: int) -> None:
        self.records += 1
        self.bytes += len(key) + len(value or b"")
        is_batch = b"\x00b" in key
        if value is None:
            self.written["delete"] += 1
            self.size.pop(key, None)
            self.batch_hour.pop(key, None)
            return
        self.size[key] = len(key) + len(value)
        if key.endswith(b"\x00s"):
            self.written["snapshot"] += 1
            self.snapshots[key[:-2].decode()] = value
        elif is_batch:
            self.written["batch"] += 1
            self.batches += 1
            self.batch_hour.setdefault(key, hour)
            self.accepted += sum(1 for _ in ev.unpack(value.partition(b"\n")[2]))

    async def drain(self, hour: int) -> None:
        """Read until two fetches in a row come back empty."""
        empty = 0
        while empty < 2:
            empty = empty + 1 if await self.read(hour, timeout_ms=300) == 0 else 0

    def snapshot_parts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Bytes of the latest snapshots (compressed record, JSON by part, all queues) and the
        number of entries of the parts kept for a fixed time (most in any one queue)."""
        parts: dict[str, int] = defaultdict(int)
        entries = {"interval_actuals": 0, "days": 0, "final_records": 0}
        for value in self.snapshots.values():
            parts["record"] += len(value)
            state = orjson.loads(zlib.decompress(value.partition(b"\n")[2]))
            for name, part in state.items():
                parts[name] += len(orjson.dumps(part, option=orjson.OPT_NON_STR_KEYS))
            for name, most in entries.items():
                entries[name] = max(most, len(state.get(name) or ()))
        return dict(parts), entries


async def produce(producer: AIOKafkaProducer, topic: str, values: list[bytes], first_key: int) -> None:
    for n, value in enumerate(values, first_key):
        await producer.send(topic, value, key=str(n).encode())
    await producer.flush()


# ---- the run ---------------------------------------------------------------------------------

async def soak(args, broker: EmbeddedBroker) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    divisions = args.queues // len(QUEUES)
    rate_scale = args.calls_per_day / divisions / calls_per_day_at_scale_1()
    # a whole past UTC day (or `hours` of it) from midnight, ending more than an hour ago
    day_start = math.floor((time.time() - args.hours * HOUR - HOUR) / 86400) * 86400
    config_file = LOGS / "soak.toml"
    config_file.write_text(f"# written by bench/soak.py\n[stream]\nsnapshot_interval_seconds = {args.snapshot_interval:g}\n")
    env = dict(os.environ, CALLPULSE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, CALLPULSE_APP_ID=f"bench-{NAME}",
               CALLPULSE_TOPIC_EVENTS=f"{NAME}-events", CALLPULSE_TOPIC_BATCHES=f"{NAME}-batches",
               CALLPULSE_TOPIC_DEAD_LETTER=f"{NAME}-dead-letter", CALLPULSE_TOPIC_INTERVALS=f"{NAME}-intervals", CALLPULSE_TOPIC_AGENT_INTERVALS=f"{NAME}-agent-intervals",
               CALLPULSE_DATA_DIR=str(LOGS / NAME), CALLPULSE_CONFIG=str(config_file), PYTHONUNBUFFERED="1")
    config = load_config(None, env)
    await create_topics(config)
    stream = config.stream
    args.interval_minutes = config.queue_defaults.interval_minutes
    print(f"soak: {args.hours} simulated hours from {iso(day_start)[:19]}Z, {args.queues} queues "
          f"({divisions} divisions of the simulator's {len(QUEUES)}-queue center, rate_scale {rate_scale:.4f}), "
          f"{args.calls_per_day:,} calls/day, one worker, {config.kafka.partitions} partitions", flush=True)
    print(f"  settings: lateness {stream.lateness_seconds:g} s, dedup {stream.dedup_seconds:g} s, snapshot interval "
          f"{stream.snapshot_interval_seconds:g} s (wall time), SNAPSHOT_EVERY_EVENTS {SNAPSHOT_EVERY_EVENTS:,}", flush=True)

    width = len(str(divisions - 1))
    traffic = heapq.merge(*(division(k, args.seed, day_start, args.hours, rate_scale, width) for k in range(divisions)),
                          key=lambda e: e["time"])
    expected = Expected()
    worker_log = LOGS / f"{NAME}-worker.log"
    worker_log.write_bytes(b"")
    proc, url = start_worker(env, worker_log)
    changelog = Changelog(broker.bootstrap, changelog_topic_name(stream.app_id), config.kafka.partitions)
    await changelog.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50, max_batch_size=512 * 1024)
    await producer.start()
    rows: list[dict] = []
    failures: list[str] = []
    started = time.perf_counter()
    pending = next(traffic, None)
    try:
        header = (f"{'hour':>4} {'events':>9} {'ev/h':>7} {'wall s':>7} {'proc s':>6} {'RSS MB':>7} {'dRSS':>6} "
                  f"{'snap KB':>8} {'JSON KB':>8} {'snaps/h':>7} {'live batch':>10} {'oldest h':>8} "
                  f"{'live keys':>9} {'table KB':>8} {'changelog':>10} {'broker MB':>9}")
        print("  (ev/h: events produced for that simulated hour; proc s: until all were applied, hour 1's includes the "
              "worker joining its groups; snap KB / JSON KB: the latest snapshot of every queue, compressed / as JSON; "
              "live batch: batch records not yet deleted, the oldest one written `oldest h` simulated hours ago; "
              "changelog: records written so far)", flush=True)
        print(header, flush=True)
        for hour in range(1, args.hours + 1):
            boundary = iso(day_start + hour * HOUR)
            values = []
            while pending is not None and pending["time"] < boundary:
                expected.add(pending)
                values.append(orjson.dumps(pending))
                pending = next(traffic, None)
            expected.next_hour()
            await produce(producer, config.kafka.topic_events, values, expected.events - len(values))
            t0 = time.perf_counter()
            changelog.written.clear()
            deadline = time.monotonic() + args.hour_timeout
            progress_at = last_scrape = time.monotonic()
            while changelog.accepted < expected.applications:
                if proc.poll() is not None:
                    raise SystemExit(f"the worker exited ({proc.returncode}) in hour {hour}, see {worker_log}")
                if time.monotonic() > deadline:
                    failures.append(f"hour {hour}: only {changelog.accepted:,} of {expected.applications:,} event "
                                    f"applications reached the changelog in {args.hour_timeout:g} s")
                    break
                if await changelog.read(hour):
                    progress_at = time.monotonic()
                elif time.monotonic() - max(progress_at, last_scrape) > 10:
                    # stuck? rejected or duplicate events never reach the changelog
                    last_scrape = time.monotonic()
                    metrics = await asyncio.to_thread(scrape, url)
                    done = (metrics["callcenter_events_applied_total"] + metrics["callcenter_events_duplicate_total"]
                            + metrics.get("rejected:too_late", 0))
                    if done >= expected.applications:
                        break
            proc_seconds = time.perf_counter() - t0
            await changelog.drain(hour)
            rss = rss_mb(proc.pid)
            if not args.no_scrape:  # as Prometheus would (it reads every queue), once a simulated hour
                await asyncio.to_thread(scrape, url)
            parts, entries = changelog.snapshot_parts()
            live_batches = len(changelog.batch_hour)
            row = {
                "hour": hour, "events": expected.events, "events_hour": len(values),
                "events_2h": len(values) + (rows[-1]["events_hour"] if rows else 0), "wall": time.perf_counter() - started,
                "proc": proc_seconds, "rss": rss, "parts": parts, "entries": entries,
                "snapshots": changelog.written["snapshot"], "live_batches": live_batches,
                "oldest": min(changelog.batch_hour.values(), default=hour),
                "snap_queues": len(changelog.snapshots), "live_keys": len(changelog.size), "table": sum(changelog.size.values()),
                "changelog": changelog.records, "broker": rss_mb(broker.process.pid),
            }
            rows.append(row)
            print(f"{hour:>4} {row['events']:>9,} {row['events_hour']:>7,} {row['wall']:>7.0f} {proc_seconds:>6.1f} "
                  f"{rss:>7.1f} {rss - rows[0]['rss']:>+6.1f} {parts.get('record', 0) / 1024:>8.0f} "
                  f"{sum(v for k, v in parts.items() if k != 'record') / 1024:>8.0f} {row['snapshots']:>7,} "
                  f"{live_batches:>10,} {hour - row['oldest']:>8} {row['live_keys']:>9,} {row['table'] / 1024:>8.0f} "
                  f"{changelog.records:>10,} {row['broker']:>9.0f}", flush=True)
        # ---- the end: exactness ----
        body = orjson.loads(await asyncio.to_thread(get, url + "/api/queues"))
        metrics = await asyncio.to_thread(scrape, url)
        final_rss = rss_mb(proc.pid)
    finally:
        await producer.stop()
        await changelog.stop()
        stop(proc)
    wall = time.perf_counter() - started
    return report(args, rows, expected, body, metrics, changelog, failures, wall, final_rss, worker_log)


def report(args, rows, expected, body, metrics, changelog, failures, wall, final_rss, worker_log) -> int:
    steady = rows[1:] or rows  # hour 1 includes the worker joining its groups
    print(f"\nwall time {wall:.0f} s for {args.hours} simulated hours ({wall / args.hours:.1f} s per hour); "
          f"{sum(r['events_hour'] for r in steady) / sum(r['proc'] for r in steady):,.0f} events/s while processing "
          f"(hour 2 on); {expected.events:,} events, {sum(t['offered'] for t in expected.totals.values()):,.0f} calls offered "
          f"to {len(expected.totals)} queues", flush=True)
    per_queue = statistics.median(r["snapshots"] for r in steady) / max(1, len(expected.totals))
    print(f"snapshots: a median {statistics.median(r['snapshots'] for r in steady):,.0f} a simulated hour (~{per_queue:.1f} per "
          f"queue), all due to the {args.snapshot_interval:g} s wall-time interval: a simulated hour took a median "
          f"{statistics.median(r['proc'] for r in steady):.1f} s to process, and the busiest queue got {expected.busiest_hour:,} "
          f"events in its busiest hour, far from SNAPSHOT_EVERY_EVENTS ({SNAPSHOT_EVERY_EVENTS:,})")

    # the snapshots by part, at a few hours
    picks = sorted({1, *(h for h in (4, 8, 11, 16, 20) if h <= len(rows)), len(rows)})
    names = sorted({n for r in rows for n in r["parts"] if n != "record"},
                   key=lambda n: -max(r["parts"].get(n, 0) for r in rows))
    print("\nlatest snapshot of every queue, by part (KB of JSON before compression, all queues), at hours "
          + ", ".join(map(str, picks)))
    print(f"  {'part':<22}" + "".join(f"{'h' + str(h):>9}" for h in picks))
    for name in names[:12]:
        print(f"  {name:<22}" + "".join(f"{rows[h - 1]['parts'].get(name, 0) / 1024:>9.1f}" for h in picks))
    print(f"  {'(other parts)':<22}" + "".join(
        f"{sum(v for k, v in rows[h - 1]['parts'].items() if k not in names[:12] and k != 'record') / 1024:>9.1f}" for h in picks))
    print(f"  {'compressed records':<22}" + "".join(f"{rows[h - 1]['parts'].get('record', 0) / 1024:>9.1f}" for h in picks))
    print(f"  {'queues':<22}" + "".join(f"{rows[h - 1]['snap_queues']:>9}" for h in picks))

    results: list[tuple[str, str]] = []

    def check(ok: bool | None, message: str) -> None:
        results.append(("SKIP" if ok is None else "PASS" if ok else "FAIL", message))

    # 1. RSS
    base = rows[0]["rss"]
    peak = max(steady, key=lambda r: r["rss"])
    growth = peak["rss"] - base
    check(len(rows) > 1 and growth <= RSS_LIMIT_MB,
          f"RSS growth after hour 1: {growth:+.1f} MB (hour 1 {base:.1f} MB, highest {peak['rss']:.1f} MB at hour "
          f"{peak['hour']}, last {rows[-1]['rss']:.1f} MB, {final_rss:.1f} MB after the final /api/queues); limit "
          f"{RSS_LIMIT_MB:g} MB")

    busiest = max(rows, key=lambda r: r["events_hour"])
    tail = rows[-min(6, len(rows) - 1):] if len(rows) > 1 else rows
    info = (f"INFO RSS from the busiest hour (hour {busiest['hour']}, {busiest['events_hour']:,} events, "
            f"{busiest['rss']:.1f} MB) to the end: {rows[-1]['rss'] - busiest['rss']:+.1f} MB; over the last {len(tail)} "
            f"hours: {tail[-1]['rss'] - tail[0]['rss']:+.1f} MB (hour {tail[0]['hour']} to {tail[-1]['hour']})")

    # 2. snapshot size: the parts that follow the load, per queue, against an earlier hour of similar traffic
    def per_queue_load_parts(r) -> float:
        return sum(v for k, v in r["parts"].items() if k not in RETAINED_PARTS and k != "record") / max(1, r["snap_queues"])

    early = [r for r in rows[: len(rows) // 2] if r["hour"] >= SETTLED_HOUR]
    worst, compared = None, 0
    for r in rows[len(rows) // 2:]:
        similar = [e for e in early if abs(e["events_2h"] - r["events_2h"]) <= 0.3 * r["events_2h"]]
        if not similar or r["hour"] <= SETTLED_HOUR:
            continue
        match = min(similar, key=lambda e: abs(e["events_2h"] - r["events_2h"]))
        compared += 1
        ratio = (per_queue_load_parts(r) - SNAPSHOT_SLACK / max(1, r["snap_queues"])) / max(1.0, per_queue_load_parts(match))
        if worst is None or ratio > worst[0]:
            worst = (ratio, r, match)
    # closed intervals' actuals are kept KEEP_ACTUALS_SECONDS, pruned when an interval closes (one more at most)
    kept = sum(math.ceil(KEEP_ACTUALS_SECONDS / (m * 60)) + 2 for m in args.interval_minutes)
    most = {n: max(r["entries"][n] for r in rows) for n in ("interval_actuals", "days", "final_records")}
    retained_ok = most["interval_actuals"] <= kept and most["days"] <= 3
    retained = (f"most entries in one queue's snapshot: interval_actuals {most['interval_actuals']} (its "
                f"{KEEP_ACTUALS_SECONDS / HOUR:g} h retention allows {kept}), days {most['days']} (3 kept), final_records "
                f"{most['final_records']} ({KEEP_FINAL_RECORDS_SECONDS / HOUR:g} h kept)")
    if worst is None:
        check(None if retained_ok else False,
              f"snapshot size bounded: no hour after hour {len(rows) // 2} has an hour of similar traffic between hours "
              f"{SETTLED_HOUR} and {len(rows) // 2} to compare with (needs a longer run: 24 hours); {retained}")
    else:
        ratio, r, match = worst
        check(ratio <= SNAPSHOT_RATIO and retained_ok,
              f"snapshot size bounded: {compared} hours of the second half compared with the first-half hour of most "
              f"similar traffic (events in it and the hour before); worst: hour {r['hour']} ({r['events_2h']:,} events) "
              f"{per_queue_load_parts(r) / 1024:.1f} KB per queue of load-following parts vs "
              f"{per_queue_load_parts(match) / 1024:.1f} KB at hour {match['hour']} ({match['events_2h']:,} events): ratio "
              f"{ratio:.2f} (limit {SNAPSHOT_RATIO:g}, after "
              f"{SNAPSHOT_SLACK // 1024} KB of slack); {retained}")

    # 3. live batch records: none older than a few simulated hours
    per_hour = statistics.median(r["proc"] for r in steady) or 1.0
    age_limit = 3 + math.ceil(2 * args.snapshot_interval / per_hour)
    old = [(r["hour"], r["hour"] - r["oldest"]) for r in rows if r["hour"] >= 4 and r["hour"] - r["oldest"] > age_limit]
    most_live = max(rows, key=lambda r: r["live_batches"])
    check(not old if len(rows) >= 4 else None,
          f"live batch records bounded: at most {most_live['live_batches']:,} live (hour {most_live['hour']}), "
          f"{rows[-1]['live_batches']:,} at the end, of {changelog.batches:,} written; the oldest live one at most "
          f"{max(r['hour'] - r['oldest'] for r in rows)} simulated hours old (limit {age_limit}, from hour 4 on)"
          + (f"; too old at (hour, age) {old[:6]}" if old else ""))

    # 4. exactness
    queues = body["queues"]
    mismatches = []
    for q, want in sorted(expected.totals.items()):
        have = queues.get(q, {}).get("totals")
        if have is None:
            mismatches.append((q, "not on /api/queues"))
            continue
        for name in COMPARED:
            if have[name] != want.get(name, 0):
                mismatches.append((q, f"{name} {have[name]:g} != produced {want.get(name, 0):g}"))
        for name in COMPARED_SECONDS:
            if abs(have[name] - want.get(name, 0)) > 1e-6 * max(1.0, want.get(name, 0)):
                mismatches.append((q, f"{name} {have[name]:.3f} != produced {want.get(name, 0):.3f}"))
    m = metrics
    rejected = m.get("callcenter_events_rejected_total", 0)
    dupes = m.get("callcenter_events_duplicate_total", 0)
    applied = m.get("callcenter_events_applied_total", 0)
    extra = sorted(set(queues) - set(expected.totals))
    sums = {n: sum(t.get(n, 0) for t in expected.totals.values()) for n in COMPARED}
    check(not mismatches and not rejected and not dupes and applied == expected.applications and not extra,
          f"exact totals: {len(expected.totals) - len({q for q, _ in mismatches})} of {len(expected.totals)} queues on "
          f"/api/queues equal what was produced ({', '.join(f'{n} {v:,.0f}' for n, v in sums.items())}, and the answer "
          f"and abandon wait seconds); events applied {applied:,.0f} of {expected.applications:,}, rejected "
          f"{rejected:,.0f}, duplicates {dupes:,.0f}" + (f"; queues nobody produced {extra[:5]}" if extra else "")
          + (f"; first mismatches {mismatches[:5]}" if mismatches else ""))
    for message in failures:
        check(False, message)

    problems = [line for line in worker_log.read_text(errors="replace").splitlines() if "ERROR" in line or "CRITICAL" in line]
    if problems:
        print(f"\nthe worker logged {len(problems)} ERROR/CRITICAL lines, the first: {problems[0][:300]}")
    print()
    print(info)
    for verdict, message in results:
        print(f"{verdict} {message}")
    return 1 if any(verdict == "FAIL" for verdict, _ in results) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=24, help="simulated hours from midnight UTC (default 24)")
    parser.add_argument("--queues", type=int, default=200, help="queues, a multiple of 5 (default 200)")
    parser.add_argument("--calls-per-day", type=int, default=40_000, help="calls a day over all queues (default 40,000)")
    parser.add_argument("--snapshot-interval", type=float, default=1.0,
                        help="the worker's snapshot_interval_seconds, wall time (default 1; the product default is 30)")
    parser.add_argument("--no-scrape", action="store_true",
                        help="no /metrics scrape at every simulated hour (nobody reads the queues until the end)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hour-timeout", type=float, default=600.0, help="longest wait for one simulated hour (s)")
    args = parser.parse_args()
    if args.queues < len(QUEUES) or args.queues % len(QUEUES):
        parser.error(f"--queues must be a multiple of {len(QUEUES)}")
    if args.hours < 1:
        parser.error("--hours must be >= 1")
    LOGS.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=LOGS / "broker.log") as broker:
        code = asyncio.run(soak(args, broker))
    sys.exit(code)


if __name__ == "__main__":
    main()
