"""Chaos run: live traffic through several workers of one group while workers are killed, restarted,
and the group is scaled down and up; then every queue must be exported by exactly one worker with
the exact totals of what was produced.

Used by tests/chaos/test_chaos.py (the CI mode) and from the command line for the long mode:

    python tests/chaos/chaos.py --kills 60 --seconds 600      # `make chaos`

Traffic: calls of `queues` queues timed now, sent when their time comes (about `rate` events/s),
keyed by queue as the adapters key them (publish.event_key). Every call ends within
MAX_WAIT + MAX_TALK seconds, so after the traffic stops offering new calls the totals are final.
The expected numbers are computed here from the events as sent, with the worker's own time parser.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "tests")]

from callpulse.events import parse_time, unpack
from callpulse.pipeline.publish import event_key
from callpulse.tools.broker import EmbeddedBroker, free_port
from callpulse.tools.procs import spawn
from harness import LOGS, Pipeline
from helpers import iso

THRESHOLDS = (10, 20)
SHORT_ABANDON = 5
MAX_WAIT, MAX_TALK = 25.0, 12.0
SURVEY_SHARE, MAX_SURVEY_DELAY = 0.3, 5.0  # handled calls whose caller answers a survey, and when
OUTBOUND_SHARE = 0.05  # outbound attempts per inbound call, each connected to an agent
INTERVAL_MINUTES = 1
SIGTERM_LIMIT_SECONDS = 10.0  # a worker asked to stop must be gone within this
CONFIG = f"""# written by tests/chaos/chaos.py
[queue_defaults]
thresholds_seconds = [{THRESHOLDS[0]}, {THRESHOLDS[1]}]
short_abandon_seconds = {SHORT_ABANDON}
interval_minutes = [{INTERVAL_MINUTES}]
"""
COUNTED = ("offered", "answered", "abandoned", "short_abandoned", "handled",
           "answered_within:10", "answered_within:20", "abandoned_within:10", "abandoned_within:20",
           "surveys", "surveys_unlinked", "outbound_live_connects", *(f"csat:{score}" for score in range(1, 6)))


@dataclass
class Expected:
    """What was produced, per queue: totals, talk seconds, and counts per interval start."""
    totals: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    intervals: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    last_event_time: dict = field(default_factory=lambda: defaultdict(float))
    agents: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))  # agent -> totals

    def count(self, queue: str, name: str, t: float, amount: float = 1.0) -> None:
        self.totals[queue][name] += amount
        self.last_event_time[queue] = max(self.last_event_time[queue], t)
        start = t // (INTERVAL_MINUTES * 60) * INTERVAL_MINUTES * 60  # UTC intervals
        self.intervals[(queue, start)][name] += amount


class Traffic:
    """Calls timed now, sent by a thread of its own at about `rate` events/s."""

    def __init__(self, config, queues: int, rate: float, seed: int):
        self.config = config
        self.queues = [f"q{n:02d}" for n in range(queues)]
        self.rate = rate
        self.random = random.Random(seed)
        self.expected = Expected()
        self.sent = 0
        self._due: list[tuple[float, int, dict]] = []
        self._ids = itertools.count()
        self._run = f"chaos-{seed}-{int(time.time())}"
        self._offering = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._offering.set()
        self._thread.start()

    def stop_offering(self) -> None:
        self._offering.clear()

    def join(self, timeout: float) -> None:
        """Wait until every call offered has ended and been sent."""
        self._thread.join(timeout)
        if self.error:
            raise self.error
        assert not self._thread.is_alive(), "traffic did not finish"

    def _event(self, kind: str, t: float, **fields) -> dict:
        return {"schema_version": 1, "event_id": f"{self._run}-{next(self._ids)}", "type": kind,
                "time": iso(t), "source": "chaos", **fields}

    def _new_call(self, now: float) -> None:
        r, queue = self.random, self.random.choice(self.queues)
        call_id = f"{self._run}-c{next(self._ids)}"
        offered = self._event("call.offered", now, queue=queue, call_id=call_id)
        wait = round(r.uniform(0, MAX_WAIT), 3)
        at = now + wait
        ends = [offered]
        if r.random() < 0.8:
            agent = f"a{r.randrange(200)}"
            answered = self._event("call.answered", at, queue=queue, call_id=call_id, agent_id=agent)
            talk_end = at + round(r.uniform(1, MAX_TALK), 3)
            ends += [answered, self._event("call.ended", talk_end, queue=queue, call_id=call_id, agent_id=agent)]
            if r.random() < SURVEY_SHARE:
                survey_at = talk_end + round(r.uniform(0.5, MAX_SURVEY_DELAY), 3)
                ends.append(self._event("call.survey", survey_at, queue=queue, call_id=call_id, agent_id=agent,
                                        csat=r.randint(1, 5)))
        else:
            ends.append(self._event("call.abandoned", at, queue=queue, call_id=call_id))
        if r.random() < OUTBOUND_SHARE:
            ends.append(self._event("call.outbound_attempt", now, queue=queue, call_id=f"{call_id}-out",
                                    result="connected", agent_id=f"a{r.randrange(200)}", campaign="chaos"))
        for e in ends:
            heapq.heappush(self._due, (parse_time(e["time"]), next(self._ids), e))
        self._account(ends)

    def _account(self, events: list[dict]) -> None:
        """The expected counts of one call, by the rules in README "How the numbers are defined"."""
        exp, times = self.expected, [parse_time(e["time"]) for e in events]
        queue = events[0]["queue"]
        exp.count(queue, "offered", times[0])
        wait = times[1] - times[0]
        outcome = "answered" if events[1]["type"] == "call.answered" else "abandoned"
        exp.count(queue, outcome, times[1])
        for t in THRESHOLDS:
            if wait <= t:
                exp.count(queue, f"{outcome}_within:{t}", times[1])
        if outcome == "abandoned" and wait <= SHORT_ABANDON:
            exp.count(queue, "short_abandoned", times[1])
        if outcome == "answered":
            exp.count(queue, "handled", times[2])
            exp.count(queue, "talk_seconds", times[2], times[2] - times[1])
            agent = exp.agents[events[1]["agent_id"]]  # its own key's model (kpi/agents.py)
            agent["answered"] += 1
            agent["handled"] += 1
            agent["talk_seconds"] += times[2] - times[1]
        for e, t in zip(events, times):
            if e["type"] == "call.survey":  # linked to its call: surveys_unlinked stays 0
                exp.count(queue, "surveys", t)
                exp.count(queue, f"csat:{e['csat']}", t)
                exp.agents[e["agent_id"]]["surveys"] += 1
            elif e["type"] == "call.outbound_attempt":
                exp.count(queue, "outbound_live_connects", t)

    async def _main(self) -> None:
        from callpulse.pipeline.publish import producer_for

        producer = producer_for(self.config)
        await producer.start()
        # 80 % answered (3 events, a survey for SURVEY_SHARE of them), 20 % abandoned (2), outbound
        calls_per_second = self.rate / (2.8 + 0.8 * SURVEY_SHARE + OUTBOUND_SHARE)
        started, offered = time.time(), 0
        try:
            while True:
                now = time.time()
                if self._offering.is_set():
                    while offered < (now - started) * calls_per_second:
                        self._new_call(now)
                        offered += 1
                elif not self._due:
                    break  # every call offered has ended
                while self._due and self._due[0][0] <= now:
                    _, _, e = heapq.heappop(self._due)
                    await producer.send(self.config.kafka.topic_events, orjson.dumps(e), key=event_key(e))
                    self.sent += 1
                await asyncio.sleep(0.01)
            await producer.flush()
        except Exception as exc:  # noqa: BLE001 - any failure of the thread is re-raised by join()
            self.error = exc
        finally:
            await producer.stop()


class ChaosWorker:
    """A worker process that can be killed and started again on the same port and log."""

    def __init__(self, pipeline: Pipeline, number: int):
        self.pipeline, self.number = pipeline, number
        self.port = free_port()
        self.log = LOGS / f"{pipeline.name}-worker{number}.log"
        self.process: subprocess.Popen | None = None
        self.log_start = 0  # where this run of the worker began writing its log
        self.failed: dict[str, str] = {}  # path -> the latest failed request's error (diagnostics)

    def start(self) -> None:
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        env = dict(self.pipeline.env, CALLPULSE_WEB_PORT=str(self.port))
        with open(self.log, "ab") as log:  # the child keeps its own copy of the file descriptor
            self.process = spawn([sys.executable, "-m", "callpulse", "worker", "--loglevel", "info"],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int, wait: float = 30.0) -> float:
        """Send `sig`; returns the seconds until the process was gone (killed after `wait`)."""
        began = time.monotonic()
        if self.alive:
            self.process.send_signal(sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return time.monotonic() - began

    def get(self, path: str, timeout: float = 5.0) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as response:
                return response.read()
        except OSError as exc:  # also an HTTP error status (urllib's HTTPError)
            self.failed[path] = repr(exc)[:200]
            return None


def exported(workers: list[ChaosWorker]) -> tuple[dict, dict]:
    """Per queue, the workers exporting it and the numbers of the (first) one, from /metrics."""
    owners: dict[str, list[int]] = defaultdict(list)
    numbers: dict[str, dict] = {}
    names = {
        "callcenter_calls_offered_total": "offered", "callcenter_calls_answered_total": "answered",
        "callcenter_calls_abandoned_total": "abandoned", "callcenter_calls_short_abandoned_total": "short_abandoned",
        "callcenter_calls_handled_total": "handled", "callcenter_surveys_total": "surveys",
        "callcenter_surveys_unlinked_total": "surveys_unlinked",
        "callcenter_outbound_live_connects_total": "outbound_live_connects",
    }
    for w in workers:
        text = w.get("/metrics") if w.alive else None
        if text is None:
            continue
        mine: dict[str, dict] = defaultdict(dict)
        for family in text_string_to_metric_families(text.decode()):
            for s in family.samples:
                queue = s.labels.get("queue")
                if queue is None:
                    continue
                if s.name in names:
                    mine[queue][names[s.name]] = s.value
                elif s.name == "callcenter_calls_answered_within_threshold_total":
                    mine[queue][f"answered_within:{s.labels['threshold']}"] = s.value
                elif s.name == "callcenter_calls_abandoned_within_threshold_total":
                    mine[queue][f"abandoned_within:{s.labels['threshold']}"] = s.value
                elif s.name == "callcenter_survey_csat_answers_total":
                    mine[queue][f"csat:{s.labels['score']}"] = s.value
                elif s.name == "callcenter_handle_seconds_total" and s.labels["phase"] == "talk":
                    mine[queue]["talk_seconds"] = s.value
                elif s.name == "callcenter_window_calls" and s.labels["window"] == "1h":
                    mine[queue][f"1h:{s.labels['outcome']}"] = s.value
        for queue, values in mine.items():
            owners[queue].append(w.number)
            numbers.setdefault(queue, values)
    return owners, numbers


AGENT_COUNTED = ("answered", "handled", "surveys")


def agents_exported(workers: list[ChaosWorker]) -> tuple[dict, dict]:
    """Per agent, the workers that have it in /api/agents and the totals of the (first) one."""
    owners: dict[str, list[int]] = defaultdict(list)
    numbers: dict[str, dict] = {}
    for w in workers:
        body = w.get("/api/agents") if w.alive else None
        if body is None:
            continue
        for agent in orjson.loads(body)["agents"]:
            owners[agent["agent_id"]].append(w.number)
            numbers.setdefault(agent["agent_id"], agent["totals"])
    return owners, numbers


def agent_differences(expected: Expected, owners: dict, numbers: dict) -> list[str]:
    """Every way the agents' totals in /api/agents differ from what was produced (empty: exact)."""
    out = []
    for agent, want in sorted(expected.agents.items()):
        if len(owners.get(agent, [])) != 1:
            out.append(f"agent {agent}: in /api/agents of workers {owners.get(agent, [])}")
            continue
        got = numbers[agent]
        for name in AGENT_COUNTED:
            if got.get(name) != want.get(name, 0.0):
                out.append(f"agent {agent}: {name} {got.get(name)} != {want.get(name, 0.0)}")
        if abs(got["talk_seconds"] - want["talk_seconds"]) > 1e-6 * max(1.0, want["talk_seconds"]):
            out.append(f"agent {agent}: talk seconds {got['talk_seconds']} != {want['talk_seconds']}")
    return out


def differences(expected: Expected, owners: dict, numbers: dict) -> list[str]:
    """Every way the exported numbers differ from what was produced (empty: exact)."""
    out = []
    for queue, want in sorted(expected.totals.items()):
        if len(owners.get(queue, [])) != 1:
            out.append(f"{queue}: exported by workers {owners.get(queue, [])}")
            continue
        got = numbers[queue]
        for name in COUNTED:
            if got.get(name) != want.get(name, 0.0):
                out.append(f"{queue}: {name} {got.get(name)} != {want.get(name, 0.0)}")
        for name in ("offered", "answered", "abandoned", "handled"):  # the run is shorter than 1 h
            if got.get(f"1h:{name}") != want.get(name, 0.0):
                out.append(f"{queue}: window 1h {name} {got.get(f'1h:{name}')} != {want.get(name, 0.0)}")
        if abs(got.get("talk_seconds", 0.0) - want.get("talk_seconds", 0.0)) > 1e-6 * max(1.0, want.get("talk_seconds", 0.0)):
            out.append(f"{queue}: talk seconds {got.get('talk_seconds')} != {want.get('talk_seconds')}")
    return out


def lost_and_twice(expected: Expected, numbers: dict) -> tuple[int, int]:
    """Calls missing and calls counted twice, over every counted field of every queue."""
    lost = twice = 0
    for queue, want in expected.totals.items():
        got = numbers.get(queue, {})
        for name in COUNTED:
            delta = got.get(name, 0.0) - want.get(name, 0.0)
            lost += max(0, -round(delta))
            twice += max(0, round(delta))
    return lost, twice


def interval_differences(pipeline: Pipeline, expected: Expected, lateness: float) -> tuple[int, list[str]]:
    """Compare the final interval records of every interval its queue's watermark closed (it ended
    a lateness before the queue's last event: each queue's own, the tail of a run is sparse) with
    the counts produced in it. Returns (records compared, differences)."""
    from callpulse.tools.report import read_records

    latest = {}
    for record in asyncio.run(read_records(pipeline.config)):
        latest[(record["queue"], record["start_epoch"])] = record
    out, compared = [], 0
    for (queue, start), want in sorted(expected.intervals.items()):
        # the watermark closes intervals when it enters a new second: a second's margin
        if start + INTERVAL_MINUTES * 60 > expected.last_event_time[queue] - lateness - 1.0:
            continue
        record = latest.get((queue, start))
        if record is None or not record["final"]:
            out.append(f"{queue} {iso(start)}: {'no record' if record is None else 'not final'}")
            continue
        compared += 1
        got = {name: record[name] for name in ("offered", "answered", "abandoned", "short_abandoned", "handled")}
        for t in THRESHOLDS:
            got[f"answered_within:{t}"] = record["answered_within"][str(t)]
            got[f"abandoned_within:{t}"] = record["abandoned_within"][str(t)]
        got["surveys"], got["surveys_unlinked"] = record["quality"]["surveys"], record["quality"]["surveys_unlinked"]
        got["outbound_live_connects"] = record["outbound"]["live_connects"]
        for score, n in record["quality"]["csat_answers_by_score"].items():
            got[f"csat:{score}"] = n
        for name in COUNTED:
            if got[name] != round(want.get(name, 0.0)):
                out.append(f"{queue} {iso(start)}: {name} {got[name]} != {want.get(name, 0.0)}")
    return compared, out


async def _group_lag(config) -> list[str]:
    """Committed offset against end offset of both consumer groups, per partition (diagnostics)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    kafka, out = config.kafka, []
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    consumer = AIOKafkaConsumer(**kafka.client_kwargs())
    await admin.start()
    await consumer.start()
    try:
        for group, topic in ((f"{config.stream.app_id}-router", kafka.topic_events), (config.stream.app_id, kafka.topic_batches)):
            tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            ends = await consumer.end_offsets(tps)
            out.append(f"{group} on {topic}: " + ", ".join(
                f"p{tp.partition} {committed[tp].offset}/{ends[tp]}" for tp in tps))
        ids = await _batched_event_ids(consumer, kafka)
        out.append(f"distinct events in the batches topic: {len(ids)}")
        logged = set()
        changelog = f"{config.stream.app_id}-queue-state-changelog"
        async for r in _read_all(consumer, changelog, kafka.partitions):
            if r.value is not None and b"\x00b" in r.key:
                logged.update(orjson.loads(raw)["event_id"] for raw in unpack(r.value.partition(b"\n")[2]))
        out.append(f"distinct events in the changelog's batch records: {len(logged)}, "
                   f"of the batches topic's missing there: {len(ids - logged)}")
        unapplied: dict[int, list[int]] = defaultdict(list)
        async for r in _read_all(consumer, kafka.topic_batches, kafka.partitions):
            if not {orjson.loads(raw)["event_id"] for raw in unpack(r.value)} & logged:
                unapplied[r.partition].append(r.offset)
        for partition, offsets in sorted(unapplied.items()):
            out.append(f"batches p{partition}: {len(offsets)} message(s) with no event in the changelog, offsets "
                       + ", ".join(f"{a}-{b}" for a, b in _ranges(offsets)[:10]))
        missing: dict[int, list[int]] = defaultdict(list)
        times: dict[tuple[int, int], str] = {}
        async for r in _read_all(consumer, kafka.topic_events, kafka.partitions):
            event = orjson.loads(r.value)
            if event["event_id"] not in ids:
                missing[r.partition].append(r.offset)
                times[(r.partition, r.offset)] = event["time"]
        for partition, offsets in sorted(missing.items()):
            out.append(f"events p{partition}: {len(offsets)} never reached the batches topic, offset ranges "
                       + ", ".join(f"{a}-{b} ({times[(partition, a)]})" for a, b in _ranges(offsets)[:10]))
        out.append("dead letters by reason: " + (", ".join(
            f"{reason} {n}" for reason, n in sorted((await _dead_letter_reasons(consumer, kafka)).items())) or "none"))
    finally:
        await consumer.stop()
        await admin.close()
    return out


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for o in sorted(offsets):
        if out and o == out[-1][1] + 1:
            out[-1] = (out[-1][0], o)
        else:
            out.append((o, o))
    return out


async def _read_all(consumer, topic: str, partitions: int):
    """Every record of a topic, read from the start until fetches come back empty (diagnostics)."""
    from aiokafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    empty = 0
    while empty < 3:
        batches = await consumer.getmany(timeout_ms=500)
        empty = 0 if batches else empty + 1
        for records in batches.values():
            for record in records:
                yield record


async def _batched_event_ids(consumer, kafka) -> set[str]:
    ids = set()
    async for r in _read_all(consumer, kafka.topic_batches, kafka.partitions):
        ids.update(orjson.loads(raw)["event_id"] for raw in unpack(r.value))
    return ids


async def _dead_letter_reasons(consumer, kafka) -> dict[str, int]:
    """How many dead letters of each reason the dead-letter topic holds (diagnostics)."""
    reasons: dict[str, int] = defaultdict(int)
    async for r in _read_all(consumer, kafka.topic_dead_letter, kafka.partitions):
        reasons[r.key.decode()] += 1
    return reasons


#: What a worker logs when it stops itself on a frozen fetch (pipeline/app.py, stop_if_fetch_frozen):
#: by design, so that Compose or Kubernetes restart it and its partitions are read again.
FROZEN_FETCH_STOP = b"reached the agent for 60 s although the broker has more; stopping"
STUCK_RECOVERY_STOP = b"stopping so that a fresh start recovers them"


def restart_self_stopped(pool: list[ChaosWorker], result: Result) -> None:
    """Restart workers that exited by themselves, as an orchestrator would. A stop on a frozen
    fetch or a stuck recovery is the designed reaction (counted in the figures; the totals must
    still be exact); any other exit is a finding."""
    for w in pool:
        if w.alive or w.process is None:
            continue
        with open(w.log, "rb") as f:
            f.seek(w.log_start)
            text = f.read()
        if FROZEN_FETCH_STOP in text:
            result.frozen_fetch_stops += 1
        elif STUCK_RECOVERY_STOP in text:
            result.stuck_recovery_stops += 1
        else:
            result.problems.append(f"worker {w.number} exited by itself (exit code {w.process.returncode}), see {w.log}")
        w.start()


def worker_states(pool: list[ChaosWorker], owners: dict) -> list[str]:
    """One line per worker for a failed run's diagnostics: running or not, what /healthz says, how
    many queues it exports, and the last line of its log."""
    out = []
    for w in pool:
        health = w.get("/healthz") if w.alive else None
        health_text = "no answer" if health is None else health.decode(errors="replace").strip().replace("\n", "; ")
        exported_here = sum(1 for exporters in owners.values() if w.number in exporters)
        lines = w.log.read_text(errors="replace").splitlines() if w.log.exists() else []
        out.append(f"worker {w.number}: {'running' if w.alive else 'not running'}, /healthz: {health_text[:300]}, "
                   f"exports {exported_here} queue(s), latest failed requests: {w.failed or 'none'}, "
                   f"last log line: {(lines[-1] if lines else '')[:300]}")
    return out


def rebalances(workers: list[ChaosWorker]) -> int:
    """Recoveries completed, over all workers' logs (each logs one line per assignment it resumes)."""
    pattern = re.compile(rb"own \d+ queue\(s\) and agent\(s\) on partitions")
    return sum(len(pattern.findall(w.log.read_bytes())) for w in workers if w.log.exists())


@dataclass
class Result:
    events_sent: int = 0
    kills: int = 0
    terms: int = 0
    rebalances: int = 0
    seconds_to_exact: float | None = None
    lost: int = 0
    twice: int = 0
    intervals_compared: int = 0
    agents_compared: int = 0  # agents whose /api/agents totals matched what was produced
    frozen_fetch_stops: int = 0  # workers that stopped themselves on a frozen fetch, restarted
    stuck_recovery_stops: int = 0  # and on a recovery that did not complete (app.py stop_if_recovery_stuck)
    problems: list[str] = field(default_factory=list)
    slowest_sigterm_seconds: float = 0.0
    worker_logs: list[Path] = field(default_factory=list)

    def log_excerpts(self, lines: int = 12) -> str:
        """The last warnings and errors of every worker log: a CI clone's logs are gone after the run."""
        out = []
        for path in self.worker_logs:
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            marked = [line for line in text if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line)]
            out.append(f"--- {path.name}: last {min(lines, len(marked))} of {len(marked)} warning/error lines")
            out += [line[:300] for line in marked[-lines:]]
        return "\n".join(out)

    def report(self) -> str:
        return "\n".join([
            f"events sent: {self.events_sent}",
            f"kills (SIGKILL): {self.kills}",
            f"graceful stops (SIGTERM): {self.terms}, slowest {self.slowest_sigterm_seconds:.1f} s",
            f"rebalances (recoveries completed, all workers): {self.rebalances}",
            "time to exact totals after the last kill: "
            + (f"{self.seconds_to_exact:.1f} s" if self.seconds_to_exact is not None else "never"),
            f"interval records compared: {self.intervals_compared}",
            f"agents compared (totals in /api/agents): {self.agents_compared}",
            f"stops on a frozen fetch (restarted as an orchestrator would): {self.frozen_fetch_stops}",
            f"stops on a stuck recovery (restarted likewise): {self.stuck_recovery_stops}",
            f"events lost: {self.lost}",
            f"events counted twice: {self.twice}",
        ])


def run(*, kills: int = 20, seconds: float = 150.0, rate: float = 1000.0, workers: int = 3, partitions: int = 6,
        queues: int = 40, seed: int = 1, settle_timeout: float = 180.0, broker: EmbeddedBroker | None = None,
        name: str | None = None, log=print) -> Result:
    """One chaos run on `broker` (a fresh one if None). Kills spread over `seconds`; in the middle
    the group is scaled down to one worker (SIGTERM) and back up."""
    own_broker = broker is None
    if own_broker:
        LOGS.mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(log_path=LOGS / "chaos-broker.log").start()
    name = name or f"chaos{seed}-{int(time.time()) % 100000}"
    config_path = LOGS / f"{name}.toml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(CONFIG)
    pipeline = Pipeline(broker, name, partitions=partitions, CALLPULSE_CONFIG=str(config_path))
    rng = random.Random(seed)
    pool = [ChaosWorker(pipeline, n + 1) for n in range(workers)]
    result = Result()
    traffic = Traffic(pipeline.config, queues, rate, seed)
    try:
        for w in pool:
            w.start()
        _wait_ready(pool)
        traffic.start()
        log(f"traffic at {rate:g} events/s over {queues} queues, {workers} workers, {partitions} partitions")
        time.sleep(10)
        began, scaled = time.monotonic(), False
        gap = seconds / max(kills, 1)
        last_kill = time.monotonic()
        while result.kills < kills:
            if not scaled and result.kills >= kills // 2:
                # scale 3 -> 1 -> 3: the others leave gracefully, then come back
                leaving = [w for w in pool if w.alive][1:]
                for w in leaving:
                    took = w.signal(signal.SIGTERM)
                    result.slowest_sigterm_seconds = max(result.slowest_sigterm_seconds, took)
                    result.terms += 1
                    if took > SIGTERM_LIMIT_SECONDS:
                        result.problems.append(f"worker {w.number} took {took:.1f} s to stop after SIGTERM, see {w.log}")
                log(f"{time.monotonic() - began:6.1f} s: scaled down to 1 worker")
                time.sleep(min(15.0, gap * 2))
                for w in leaving:
                    w.start()
                log(f"{time.monotonic() - began:6.1f} s: scaled back up to {workers}")
                scaled = True
                time.sleep(gap)
            victim = rng.choice([w for w in pool if w.alive] or pool)
            victim.signal(signal.SIGKILL)
            result.kills += 1
            last_kill = time.monotonic()
            log(f"{last_kill - began:6.1f} s: killed worker {victim.number} (kill {result.kills}/{kills})")
            time.sleep(rng.uniform(0.0, min(3.0, gap / 2)))
            for w in pool:
                if not w.alive:
                    w.start()
            time.sleep(max(0.5, gap - (time.monotonic() - last_kill)))
            restart_self_stopped(pool, result)
        traffic.stop_offering()
        traffic.join(timeout=MAX_WAIT + MAX_TALK + 30)
        result.events_sent = traffic.sent
        log(f"traffic done: {traffic.sent} events; waiting for exact totals")
        deadline = time.monotonic() + settle_timeout
        problems = ["not checked yet"]
        while time.monotonic() < deadline:
            restart_self_stopped(pool, result)
            owners, numbers = exported(pool)
            problems = differences(traffic.expected, owners, numbers)
            problems += agent_differences(traffic.expected, *agents_exported(pool))
            if not problems:
                result.seconds_to_exact = time.monotonic() - last_kill
                result.agents_compared = len(traffic.expected.agents)
                break
            time.sleep(1.0)
        owners, numbers = exported(pool)
        result.lost, result.twice = lost_and_twice(traffic.expected, numbers)
        if problems:
            result.problems += asyncio.run(_group_lag(pipeline.config))
            result.problems += problems[:20] + ([f"... {len(problems) - 20} more"] if len(problems) > 20 else [])
        else:
            result.intervals_compared, bad = interval_differences(
                pipeline, traffic.expected, pipeline.config.stream.lateness_seconds)
            result.problems += bad[:20]
        dead = [w.number for w in pool if not w.alive]
        if dead:
            result.problems.append(f"worker(s) {dead} not running at the end, see their logs")
        unhealthy = [w.number for w in pool if w.alive and w.get("/healthz") != b"ok\n"]
        if unhealthy:
            result.problems.append(f"worker(s) {unhealthy} do not answer ok on /healthz at the end")
        if result.problems:
            result.problems += worker_states(pool, owners)
        result.rebalances = rebalances(pool)
        result.worker_logs = [w.log for w in pool]
    finally:
        traffic.stop_offering()
        for w in pool:
            if w.alive:
                w.signal(signal.SIGKILL)
        if own_broker:
            broker.stop()
    return result


def _wait_ready(pool: list[ChaosWorker], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w.get("/healthz") is not None for w in pool):
            return
        for w in pool:
            assert w.alive, f"worker {w.number} exited at start, see {w.log}"
        time.sleep(0.3)
    raise TimeoutError("workers not ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=600.0, help="time over which the kills are spread")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--queues", type=int, default=40)
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to wait for exact totals at the end")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    args = parser.parse_args()
    result = run(kills=args.kills, seconds=args.seconds, rate=args.rate, workers=args.workers,
                 partitions=args.partitions, queues=args.queues, seed=args.seed,
                 settle_timeout=args.settle)
    print(result.report())
    for problem in result.problems:
        print("PROBLEM:", problem)
    if result.problems or result.lost or result.twice:
        print(result.log_excerpts())
    return 1 if result.problems or result.lost or result.twice else 0


if __name__ == "__main__":
    sys.exit(main())
