"""End-to-end harness: a real Kafka-protocol broker (Tansu) and real `callpulse worker` processes.

One broker serves the whole session; every test gets its own app id (consumer group) and topics,
so tests never see each other's data.

Every process is started with callpulse.tools.procs.spawn from pytest's main thread: in its own session,
and on Linux killed by the kernel when pytest dies, even by SIGKILL. On SIGTERM pytest stops like on
Ctrl-C (conftest.py), and the fixtures' teardown stops the workers, then the broker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from callpulse.config import load_config
from callpulse.pipeline.topics import create_topics
from callpulse.tools.broker import EmbeddedBroker, free_port
from callpulse.tools.procs import spawn, stop_all

LOGS = Path(__file__).resolve().parents[2] / "var" / "test-logs"


class Pipeline:
    """One isolated callpulse deployment (topics + consumer group) on the shared broker."""

    def __init__(self, broker: EmbeddedBroker, name: str, partitions: int = 4, **env):
        self.name = name
        self.env = dict(
            os.environ,
            CALLPULSE_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            CALLPULSE_APP_ID=f"cp-{name}",
            CALLPULSE_TOPIC_EVENTS=f"{name}-events",
            CALLPULSE_TOPIC_BATCHES=f"{name}-batches",
            CALLPULSE_TOPIC_DEAD_LETTER=f"{name}-dead-letter",
            CALLPULSE_TOPIC_INTERVALS=f"{name}-intervals",
            CALLPULSE_TOPIC_AGENT_INTERVALS=f"{name}-agent-intervals",
            CALLPULSE_PARTITIONS=str(partitions),
            CALLPULSE_WEB_HOST="127.0.0.1",
            CALLPULSE_DATA_DIR=str(LOGS / name),
            PYTHONUNBUFFERED="1",
            **env,
        )
        self.config = load_config(None, self.env)
        asyncio.run(create_topics(self.config))
        self.workers: list[Worker] = []

    def start_worker(self) -> Worker:
        worker = Worker(self, len(self.workers) + 1)
        self.workers.append(worker)
        return worker.start()

    def produce(self, events: list, raw: bool = False) -> None:
        asyncio.run(self._produce([e if raw else orjson.dumps(e) for e in events]))

    async def _produce(self, values: list[bytes]) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.config.kafka.bootstrap_servers, linger_ms=5)
        await producer.start()
        try:
            for n, value in enumerate(values):
                await producer.send(self.config.kafka.topic_events, value, key=str(n).encode())
            await producer.flush()
        finally:
            await producer.stop()

    def dead_letters(self, expected: int, timeout: float = 30.0) -> list[dict]:
        records = asyncio.run(self._read(self.config.kafka.topic_dead_letter, expected, timeout))
        return [orjson.loads(value) for _, value in records]

    def interval_records(self, predicate, timeout: float = 120.0) -> dict[tuple, dict]:
        """The latest interval record per (queue, minutes, start epoch), read with the report
        command's reader until `predicate(records)` holds (workers publish them as intervals close)."""
        from callpulse.tools.report import read_records

        found: dict[tuple, dict] = {}

        def ready():
            found.clear()
            for record in asyncio.run(read_records(self.config)):
                found[(record["queue"], record["interval_minutes"], record["start_epoch"])] = record
            return predicate(found)

        wait_for(ready, timeout=timeout, interval=2.0, message="interval records")
        return found

    async def _read(self, topic: str, expected: float, timeout: float) -> list[tuple[bytes, bytes | None]]:
        """(key, value) of the topic's records from the start: `expected` of them, or what came
        within `timeout` seconds."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.config.kafka.bootstrap_servers,
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
        await consumer.start()
        out: list[tuple[bytes, bytes | None]] = []
        try:
            deadline = time.monotonic() + timeout
            while len(out) < expected and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    out += [(r.key, r.value) for r in records]
        finally:
            await consumer.stop()
        return out

    def changelog_summary(self, queue: str) -> dict:
        """What a worker taking over `queue` would rebuild it from (for failure messages): the
        snapshot's offset and answered total, and the batch records after it."""
        import zlib

        from callpulse import events as ev
        from callpulse.pipeline.state import SNAPSHOT, _split_record, split_key
        from callpulse.pipeline.topics import changelog_topic_name

        topic = changelog_topic_name(self.config.stream.app_id)
        latest = dict(asyncio.run(self._read(topic, expected=float("inf"), timeout=3.0)))
        out = {"snapshot_offset": None, "snapshot_answered": None, "batches": {}}
        for key, value in latest.items():
            if value is None or split_key(key)[0] != queue:
                continue
            _, kind, offset = split_key(key)
            header, payload = _split_record(value)
            if kind == SNAPSHOT:
                state = orjson.loads(zlib.decompress(payload))
                out["snapshot_offset"] = header["offset"]
                out["snapshot_answered"] = state["totals"][state["fields"].index("answered")]
            else:
                out["batches"][offset] = sum(1 for raw in ev.unpack(payload) if b'"call.answered"' in raw)
        out["answered_after_snapshot"] = sum(n for o, n in out["batches"].items() if o > (out["snapshot_offset"] or -1))
        out["batches"] = sorted(out["batches"])
        return out

    def stop(self) -> None:
        """SIGTERM to every worker, up to 10 s for them to exit, then SIGKILL."""
        stop_all([w.process for w in self.workers])


class Worker:
    def __init__(self, pipeline: Pipeline, number: int):
        self.pipeline = pipeline
        self.port = free_port()
        self.log = LOGS / f"{pipeline.name}-worker{number}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Worker:
        env = dict(self.pipeline.env, CALLPULSE_WEB_PORT=str(self.port))
        with open(self.log, "ab") as log:  # the worker has its own copy of the descriptor
            self.process = spawn([sys.executable, "-m", "callpulse", "worker", "--loglevel", "info"],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited early, see {self.log}"
            if self.get("/healthz") is not None:
                return self
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready in {timeout} s, see {self.log}")

    def get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.read()
        except OSError:
            return None

    def metrics_text(self) -> str:
        return (self.get("/metrics") or b"").decode()

    def samples(self) -> dict[tuple, float]:
        """Every sample of /metrics as {(name, sorted label items): value}."""
        out = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def queues(self) -> set[str]:
        return {dict(labels)["queue"] for (name, labels) in self.samples() if name == "callcenter_calls_offered_total"}

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.5, message: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}; last value: {last!r}")


