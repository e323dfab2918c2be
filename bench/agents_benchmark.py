"""Benchmark the per-agent part of one callpulse worker on the embedded broker; prints figures, asserts nothing.

The issue's target: 1,000 agents over 200 queues, >= 10,000 events/s per worker with agents on, and
GET /api/agents for 1,000 agents answering in <= 50 ms (median).

Traffic: the simulator has one five-queue center built in (its queues are not configurable), so
200 queues are 40 independent copies ("divisions") of it, each with its own seed and its queue and
agent ids suffixed "-NN", merged in event-time order (bench/soak.py's `division`). Every event the
simulator writes is kept (IVR, offers, rings, answers, holds, ends, wrap-ups, dispositions, surveys,
outbound attempts, agent log-ins and state changes: its ratios), and each event naming an agent
also carries an `agent_name`, as an ACD's would. The simulator staffs every half hour from its
forecast, so the agents are set by the arrival rate: `rate_scale` is searched (on division 0, all
divisions staff alike) so that the N events, timed from 08:00 UTC of a past day, name about
--agents agents; the exact count is printed.

1. Throughput and memory (as bench/benchmark.py does): the N events are loaded into the events
   topic first (keyed by sequence number, so every queue's events are spread over all partitions);
   then one worker is started and timed from its first processed event to its last. Worker RSS is
   read at 10 % and 100 % of the events. Unlike bench/benchmark.py this does not scrape /metrics
   while the worker works (with 200 queues a scrape costs it a few hundred ms, and twice a second
   took more than half of its time): progress is the consumer groups' committed offsets, and the
   times are those the worker stamped on what it wrote: its first batch message (stage 1) to its
   last batch record in the changelog (stage 2). The batch records are also counted against the
   applications expected (an event applies once per queue and once to its agent's shard).
2. /api/agents: on the same worker, once everything is applied, GET /api/agents (all agents) and
   GET /api/agents?queue=X (X cycling over the queues), --requests each on one keep-alive
   connection, one at a time: median and p95 in ms, agents returned and JSON size.

A fresh broker per run; the median over --repeat runs is reported. The figure lines start with
`agents events/s:` and `api/agents median ms:` so they can be quoted.

Usage: python bench/agents_benchmark.py [--events 300000] [--repeat 3] [--agents 1000] [--queues 200]
       [--requests 50] [--agent-metrics] [--loglevel info] [--py-spy] [--streams DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import http.client
import itertools
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from benchmark import LOGS, ROOT, pipeline_env, produce, rss_mb, scrape  # also puts streams/ on sys.path
from soak import division

from callpulse import events as ev  # after benchmark: it puts streams/ on sys.path
from callpulse.config import load_config
from callpulse.pipeline.topics import changelog_topic_name
from callpulse.tools.broker import EmbeddedBroker, free_port
from callpulse.tools.simulator import QUEUES

STREAMS = ROOT / "streams"
SETTLE_SECONDS = 8.0  # no second-stage commit for this long (Faust commits every 2.8 s): done
RUN_TIMEOUT_SECONDS = 1800
DAY = 86400.0
START_HOUR = 8  # UTC: the simulator's morning ramp; its intraday curve peaks at 10:45 and 15:15
SPAN_HOURS = 16.0  # the most event time the N events may take (a search keeps them within it)


# ---- traffic ---------------------------------------------------------------------------------

def traffic_start() -> float:
    """08:00 UTC two days ago: a past day (no event is in the future), the same time of day every run."""
    return math.floor(time.time() / DAY) * DAY - 2 * DAY + START_HOUR * 3600


def named(events):
    """Every event that names an agent also carries the agent's display name."""
    for e in events:
        agent = e.get("agent_id")
        if agent is not None:
            e["agent_name"] = "Agent " + agent.removeprefix("agent-")
        yield e


def traffic(n_events: int, divisions: int, start: float, rate_scale: float, seed: int):
    width = len(str(divisions - 1))
    merged = heapq.merge(*(division(k, seed, start, SPAN_HOURS, rate_scale, width) for k in range(divisions)),
                         key=lambda e: e["time"])
    return named(itertools.islice(merged, n_events))


def agents_of_division(n_events: int, start: float, rate_scale: float, seed: int) -> int:
    """Agents division 0 names in its share (1/divisions) of the N events."""
    agents = set()
    for e in itertools.islice(division(0, seed, start, SPAN_HOURS, rate_scale, 1), n_events):
        agent = e.get("agent_id")
        if agent is not None:
            agents.add(agent)
    return len(agents)


def find_rate_scale(n_events: int, divisions: int, agents: int, start: float, seed: int) -> float:
    """The rate_scale at which division 0's share of the events names agents/divisions agents
    (bisection on a log scale; more traffic, more agents staffed, but a shorter span of time)."""
    share = max(1, n_events // divisions)
    want = agents / divisions
    lo, hi = 0.01, 20.0
    for _ in range(24):
        mid = math.sqrt(lo * hi)
        if agents_of_division(share, start, mid, seed) < want:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.02:
            break
    return hi


# ---- one run ---------------------------------------------------------------------------------

def timed_gets(url: str, paths: list[str]) -> tuple[list[float], list[int], list[int]]:
    """GET each path in turn on one keep-alive connection: seconds, agents returned, body bytes."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    seconds, counts, sizes = [], [], []
    try:
        for path in paths:
            t = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            seconds.append(time.perf_counter() - t)
            if response.status != 200:
                raise SystemExit(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
            counts.append(len(orjson.loads(body)["agents"]))
            sizes.append(len(body))
    finally:
        conn.close()
    return seconds, counts, sizes


def ms(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, out: Path) -> subprocess.Popen | None:
    """py-spy (if installed) records the worker until stopped: collapsed stacks, one line per stack."""
    exe = py_spy()
    if exe is None:
        return None
    rec = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1.0)  # let it attach
    return rec


def stop_recording(rec: subprocess.Popen | None) -> None:
    if rec is not None:
        rec.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        rec.wait(60)


# ---- progress and timing, without asking the worker ------------------------------------------
# bench/benchmark.py follows the worker by scraping /metrics twice a second; with 200 queues one
# scrape costs the worker a few hundred ms (py-spy: well over half of its time went to /metrics),
# so here progress comes from the broker (the consumer groups' committed offsets) and the times
# from the records the worker wrote (their CreateTime, the worker's wall clock).

async def committed(admin: AIOKafkaAdminClient, group: str, topic: str, partitions: int) -> int:
    """The sum of a group's committed offsets on a topic: on a fresh topic, the records it took.
    (The partitions are named: Tansu drops the connection on a request for all of them.)"""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


async def follow(bootstrap: str, app_id: str, name: str, partitions: int, sent: int, proc: subprocess.Popen,
                 log: Path) -> dict:
    """Wait until the first stage took every event and the second stage's commits stood still for
    SETTLE_SECONDS; the worker's RSS at 10 % and at the end of the first stage's progress."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    out: dict = {"rss_early_mb": None}
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        last_batches, changed = -1, time.monotonic()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the worker exited ({proc.returncode}), see {log}")
            routed = await committed(admin, f"{app_id}-router", f"{name}-events", partitions)
            if out["rss_early_mb"] is None and routed >= sent * 0.1:
                out["rss_early_mb"] = rss_mb(proc.pid)
            batches = await committed(admin, app_id, f"{name}-batches", partitions)
            if batches != last_batches:
                last_batches, changed = batches, time.monotonic()
            elif routed >= sent and batches > 0 and time.monotonic() - changed > SETTLE_SECONDS:
                break
            await asyncio.sleep(0.5)
        else:
            print(f"  WARNING: not settled after {RUN_TIMEOUT_SECONDS} s", flush=True)
        if out["rss_early_mb"] is None:  # a run too short to see 10 %
            out["rss_early_mb"] = rss_mb(proc.pid)
        out["routed"], out["batches_committed"] = routed, batches
        return out
    finally:
        await admin.close()


async def written(bootstrap: str, name: str, app_id: str, partitions: int) -> dict:
    """From the topics: when the first stage wrote its first batch message (the worker's first
    processed event), when the second stage wrote its last batch record (its last applied event),
    and how many events the batch records hold (applications: an event counts once per queue and
    once for its agent's shard)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=100, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        first_ms = None
        tps = [TopicPartition(f"{name}-batches", p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen: set[int] = set()
        for _ in range(20):  # the first record of every partition that has one
            for tp, records in (await consumer.getmany(timeout_ms=300, max_records=partitions * 50)).items():
                if records and tp.partition not in seen:
                    seen.add(tp.partition)
                    first_ms = min(records[0].timestamp, first_ms or records[0].timestamp)
            if len(seen) == partitions:
                break
        tps = [TopicPartition(changelog_topic_name(app_id), p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_ms, applications, records, empty = None, 0, 0, 0
        while empty < 2:
            got = await consumer.getmany(timeout_ms=500, max_records=20_000)
            empty = 0 if any(got.values()) else empty + 1
            for batch in got.values():
                for r in batch:
                    if r.value is None or b"\x00b" not in r.key:
                        continue  # a snapshot or a deletion: not an applied batch
                    records += 1
                    last_ms = max(r.timestamp, last_ms or r.timestamp)
                    applications += sum(1 for _ in ev.unpack(r.value.partition(b"\n")[2]))
        return {"first_ms": first_ms, "last_ms": last_ms, "applications": applications, "batch_records": records}
    finally:
        await consumer.stop()


def metrics_summary(url: str, requests: int) -> dict:
    """The pipeline counters of one /metrics scrape, and how long scrapes take (a Prometheus
    server scrapes every 5-15 s; each scrape reads every queue and agent)."""
    seconds = []
    for _ in range(requests):
        t = time.perf_counter()
        m = scrape(url)
        seconds.append(time.perf_counter() - t)
    text = urllib.request.urlopen(url + "/metrics", timeout=60).read()
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return {**m, "scrape_s": seconds, "series": series, "scrape_bytes": len(text)}


def start_worker(env: dict, log: Path, loglevel: str) -> tuple[subprocess.Popen, str]:
    """bench/benchmark.py's start_worker with a log level. At `warn` (benchmark.py's) Faust keeps its
    terminal spinner, which sets the root logger to DEBUG: every aiokafka debug line (one per message
    sent) is then formatted into a record and dropped, ~8 % of the worker's time in a py-spy profile.
    `info` is what `callpulse worker` runs at by default (deploy/ passes no --loglevel)."""
    port = free_port()
    env = dict(env, CALLPULSE_WEB_PORT=str(port), CALLPULSE_WEB_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "callpulse", "worker", "--loglevel", loglevel],
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited ({proc.returncode}), see {log}")
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("worker did not start")


def run_once(broker: EmbeddedBroker, args, run: int, rate_scale: float, start: float) -> dict:
    name = f"ag{run}"
    # The worker imports callpulse from `--streams` (default: this checkout's streams/), ahead of the
    # editable install; the benchmark itself (simulator, broker) from this checkout.
    extra = {"PYTHONPATH": os.pathsep.join(filter(None, [str(args.streams), os.environ.get("PYTHONPATH")]))}
    if args.agent_metrics:
        extra["CALLPULSE_EXPORT_AGENT_METRICS"] = "true"
    env = pipeline_env(broker, name, **extra)
    divisions = args.queues // len(QUEUES)
    agents: set[str] = set()
    queues: set[str] = set()
    types: dict[str, int] = {}
    applications = [0]  # what the second stage should apply: an event once per queue, once for its agent's shard

    def values():
        for i, e in enumerate(traffic(args.events, divisions, start, rate_scale, args.seed + run)):
            applications[0] += len(ev.keys_of(e))
            agent = e.get("agent_id")
            if agent is not None:
                agents.add(agent)
            queue = e.get("queue")
            if queue is not None:
                queues.add(queue)
            types[e["type"]] = types.get(e["type"], 0) + 1
            yield str(i).encode(), orjson.dumps(e)

    t = time.perf_counter()
    sent = asyncio.run(produce(broker.bootstrap, f"{name}-events", values()))
    print(f"  loaded {sent:,} events in {time.perf_counter() - t:.1f} s: {len(agents):,} agents, {len(queues)} queues; "
          f"{sum(v for k, v in types.items() if k.startswith('agent.')):,} agent.* events, "
          f"{sum(v for k, v in types.items() if k.startswith('call.')):,} call.* events", flush=True)
    if run == 0:
        print("  by type: " + ", ".join(f"{k} {v:,}" for k, v in sorted(types.items(), key=lambda kv: -kv[1])), flush=True)
    log = LOGS / f"{name}-worker.log"
    log.write_bytes(b"")
    proc, url = start_worker(env, log, args.loglevel)
    profiles = []
    rec = None
    if args.py_spy and run == 0:
        rec = record(proc.pid, LOGS / "agents-load.pyspy.txt")
        profiles.append(LOGS / "agents-load.pyspy.txt" if rec else "py-spy is not installed: no profile")
    try:
        config = load_config(None, env)
        progress = asyncio.run(follow(broker.bootstrap, config.stream.app_id, name, config.kafka.partitions, sent, proc, log))
        stop_recording(rec)
        rss_end = rss_mb(proc.pid)
        times = asyncio.run(written(broker.bootstrap, name, config.stream.app_id, config.kafka.partitions))
        m = metrics_summary(url, 5)
        expected = applications[0]
        elapsed = (times["last_ms"] - times["first_ms"]) / 1000 if times["first_ms"] and times["last_ms"] else float("nan")
        problems = log.read_text(errors="replace").count("Traceback")
        if problems or times["applications"] < expected or progress["routed"] < sent:
            print(f"  WARNING: {problems} traceback(s) in {log}; {progress['routed']:,} of {sent:,} events routed, "
                  f"{times['applications']:,} of {expected:,} applications in batch records: the figures are not of "
                  f"a worker that applied everything", flush=True)
        queue_names = sorted(queues)
        all_paths = ["/api/agents"] * args.requests
        queue_paths = [f"/api/agents?queue={quote(queue_names[i % len(queue_names)])}" for i in range(args.requests)]
        timed_gets(url, all_paths[:3] + queue_paths[:3])  # warm-up
        all_s, all_n, all_b = timed_gets(url, all_paths)
        q_s, q_n, q_b = timed_gets(url, queue_paths)
        rss_api = rss_mb(proc.pid)
        if args.py_spy and run == 0 and py_spy():
            rec = record(proc.pid, LOGS / "agents-api.pyspy.txt")
            timed_gets(url, all_paths + queue_paths)  # profiled, not timed
            stop_recording(rec)
            profiles.append(LOGS / "agents-api.pyspy.txt")
        return {"events": sent, "seconds": elapsed, "rate": sent / elapsed, "rss_early_mb": progress["rss_early_mb"],
                "rss_end_mb": rss_end, "rss_api_mb": rss_api, "applied": m.get("callcenter_events_applied_total", 0),
                "rejected": m.get("callcenter_events_rejected_total", 0), "applications": times["applications"],
                "expected": expected, "batch_records": times["batch_records"], "scrape_s": m["scrape_s"],
                "series": m["series"], "scrape_bytes": m["scrape_bytes"],
                "agents_sent": len(agents), "queues_sent": len(queues), "all_s": all_s, "all_n": all_n, "all_b": all_b,
                "q_s": q_s, "q_n": q_n, "q_b": q_b, "profiles": profiles}
    finally:
        proc.terminate()
        proc.wait()


# ---- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs, each on a fresh broker (the median is reported)")
    parser.add_argument("--agents", type=int, default=1000, help="agents the events should name (about; default 1,000)")
    parser.add_argument("--queues", type=int, default=200, help=f"queues, a multiple of {len(QUEUES)} (default 200)")
    parser.add_argument("--rate-scale", type=float, default=None, help="the simulator's rate_scale (default: searched for --agents)")
    parser.add_argument("--requests", type=int, default=50, help="timed GETs of /api/agents, and as many with ?queue=")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--streams", type=Path, default=STREAMS,
                        help="the folder the worker imports callpulse from (PYTHONPATH; default: this checkout's streams/), "
                             "e.g. a `git archive` export of a commit while the work tree is being edited")
    parser.add_argument("--loglevel", default="info", choices=["warn", "info"],
                        help="the worker's --loglevel (default info, as deployed; bench/benchmark.py uses warn)")
    parser.add_argument("--agent-metrics", action="store_true", help="the worker also exports per-agent series in /metrics")
    parser.add_argument("--py-spy", action="store_true",
                        help="first run: record the worker with py-spy (if installed) while it takes the events, and "
                             "while /api/agents is requested once more (not timed): var/bench/agents-*.pyspy.txt")
    args = parser.parse_args()
    if args.queues < len(QUEUES) or args.queues % len(QUEUES):
        parser.error(f"--queues must be a multiple of {len(QUEUES)}")
    LOGS.mkdir(parents=True, exist_ok=True)
    divisions = args.queues // len(QUEUES)
    start = traffic_start()
    rate_scale = args.rate_scale or find_rate_scale(args.events, divisions, args.agents, start, args.seed)
    print(f"agents benchmark: {args.events:,} events, {args.queues} queues ({divisions} divisions of the simulator's "
          f"{len(QUEUES)}-queue center, rate_scale {rate_scale:.4f}, from {time.strftime('%Y-%m-%d %H:%M', time.gmtime(start))} "
          f"UTC), about {args.agents:,} agents; {args.repeat} run(s), one worker"
          + (", per-agent metrics on" if args.agent_metrics else "") + f"; worker --loglevel {args.loglevel}, code from {args.streams}", flush=True)
    runs = []
    for run in range(args.repeat):
        with EmbeddedBroker(log_path=LOGS / f"agents-broker-{run}.log") as broker:
            print(f"run {run + 1}/{args.repeat}", flush=True)
            r = run_once(broker, args, run, rate_scale, start)
            runs.append(r)
            print(f"  {r['rate']:,.0f} events/s ({r['seconds']:.1f} s, {r['applications'] / r['seconds']:,.0f} applications/s: "
                  f"{r['applications']:,} in {r['batch_records']:,} batch records, {r['expected']:,} expected); "
                  f"{r['applied']:,.0f} applied, {r['rejected']:,.0f} rejected", flush=True)
            print(f"  RSS {r['rss_early_mb']:.0f} MB at 10 % -> {r['rss_end_mb']:.0f} MB at 100 % (growth "
                  f"{r['rss_end_mb'] - r['rss_early_mb']:+.0f} MB), {r['rss_api_mb']:.0f} MB after the API requests; "
                  f"GET /metrics (idle) median {ms(r['scrape_s'], 0.5):.0f} ms ({r['series']:,} series, "
                  f"{r['scrape_bytes'] / 1024:,.0f} KB)", flush=True)
            print(f"  GET /api/agents: median {ms(r['all_s'], 0.5):.1f} ms, p95 {ms(r['all_s'], 0.95):.1f} ms, "
                  f"max {max(r['all_s']) * 1000:.1f} ms; {statistics.median(r['all_n']):,.0f} agents "
                  f"(of {r['agents_sent']:,} sent), {statistics.median(r['all_b']) / 1024:,.0f} KB", flush=True)
            print(f"  GET /api/agents?queue=X: median {ms(r['q_s'], 0.5):.1f} ms, p95 {ms(r['q_s'], 0.95):.1f} ms, "
                  f"max {max(r['q_s']) * 1000:.1f} ms; {statistics.median(r['q_n']):,.0f} agents, "
                  f"{statistics.median(r['q_b']) / 1024:,.1f} KB (median over {len(set(r['q_n']))} queue sizes)", flush=True)
            for note in r["profiles"]:
                print(f"  py-spy: {note}", flush=True)
    if not runs:
        return
    med = statistics.median
    rates = [r["rate"] for r in runs]
    print(f"agents events/s: {med(rates):,.0f} (median of {len(runs)} run(s), min {min(rates):,.0f}, max {max(rates):,.0f}; "
          f"{med(r['agents_sent'] for r in runs):,.0f} agents, {med(r['queues_sent'] for r in runs):,.0f} queues); target >= 10,000")
    print(f"agents RSS growth MB: {med(r['rss_end_mb'] - r['rss_early_mb'] for r in runs):+.0f} "
          f"(10 % -> 100 % of {args.events:,} events; end {med(r['rss_end_mb'] for r in runs):.0f} MB)")
    print(f"metrics scrape median ms: {ms([x for r in runs for x in r['scrape_s']], 0.5):.0f} (GET /metrics once all "
          f"was applied: {args.queues} queues, {med(r['series'] for r in runs):,.0f} series"
          f"{', per-agent series on' if args.agent_metrics else ''})")
    all_s = [x for r in runs for x in r["all_s"]]
    q_s = [x for r in runs for x in r["q_s"]]
    print(f"api/agents median ms: {ms(all_s, 0.5):.1f} (p95 {ms(all_s, 0.95):.1f}; {len(all_s)} requests, "
          f"{med(r['all_n'][0] for r in runs):,.0f} agents, {med(r['all_b'][0] for r in runs) / 1024:,.0f} KB JSON); target <= 50")
    print(f"api/agents?queue median ms: {ms(q_s, 0.5):.1f} (p95 {ms(q_s, 0.95):.1f}; {len(q_s)} requests, "
          f"median {med(n for r in runs for n in r['q_n']):,.0f} agents, {med(b for r in runs for b in r['q_b']) / 1024:,.1f} KB JSON)")


if __name__ == "__main__":
    main()
