"""Broker faults, with a real broker and real workers: topics that do not match the config stop the
worker with a clear message; a broker that stops answering for 30 s is reported and caught up
with exactly; a broker restarted without its data is reported loudly, never served as live."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from callpulse.tools.broker import EmbeddedBroker, free_port
from callpulse.tools.procs import spawn
from harness import LOGS, Pipeline, value, wait_for
from helpers import call

pytestmark = pytest.mark.e2e


def run_worker_until_exit(pipeline: Pipeline, name: str, timeout: float = 60.0, **env) -> tuple[int, str]:
    log = LOGS / f"{pipeline.name}-{name}.log"
    with open(log, "wb") as out:
        process = spawn([sys.executable, "-m", "callpulse", "worker", "--loglevel", "info"],
                        env=dict(pipeline.env, CALLPULSE_WEB_PORT=str(free_port()), **env), stdout=out, stderr=subprocess.STDOUT)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the worker kept running for {timeout:g} s, see {log}") from None
    return code, log.read_text(errors="replace")


def create_topic(pipeline: Pipeline, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create():
        admin = AIOKafkaAdminClient(**pipeline.config.kafka.client_kwargs())
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(create())


def test_a_missing_intervals_topic_stops_the_worker_naming_it(broker):
    pipeline = Pipeline(broker, "faults-missing")
    code, log = run_worker_until_exit(pipeline, "missing", CALLPULSE_TOPIC_INTERVALS="faults-missing-nowhere")
    assert code != 0
    assert "topic 'faults-missing-nowhere' does not exist" in log and "callpulse topics create" in log


def test_a_topic_with_another_partition_count_stops_the_worker_naming_the_setting(broker):
    pipeline = Pipeline(broker, "faults-count")
    create_topic(pipeline, "faults-count-batches-2", 2)
    code, log = run_worker_until_exit(pipeline, "count", CALLPULSE_TOPIC_BATCHES="faults-count-batches-2")
    assert code != 0
    assert "topic 'faults-count-batches-2' has 2 partitions, the config says 4 (kafka.partitions)" in log


def calls(queue: str, n: int, start: float) -> list[dict]:
    out = []
    for i in range(n):
        t = start + i * 0.5
        out += call(queue, f"{queue}-{i}", t, "answered" if i % 4 else "abandoned", t + 3 + i % 7)
    return out


def totals(worker, queue: str) -> tuple:
    samples = worker.samples()
    return tuple(value(samples, f"callcenter_calls_{o}_total", queue=queue) for o in ("offered", "answered", "abandoned"))


@pytest.fixture
def own_broker():
    LOGS.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=LOGS / "faults-broker.log").start()
    yield broker
    broker.stop()


def test_a_broker_that_does_not_answer_for_30_s_is_reported_and_caught_up_exactly(own_broker):
    pipeline = Pipeline(own_broker, "faults-pause")
    worker = pipeline.start_worker()
    now = time.time()
    pipeline.produce(calls("sales", 40, now - 60))
    wait_for(lambda: totals(worker, "sales") == (40.0, 30.0, 10.0), timeout=60, message="sales before the pause")
    assert worker.get("/healthz") == b"ok\n"
    os.kill(own_broker.process.pid, signal.SIGSTOP)  # connections stay open, nothing answers
    try:
        time.sleep(40)
        health = urlopen_status(worker.url + "/healthz")
        unanswered = value(worker.samples(), "callcenter_broker_unanswered_seconds")
    finally:
        os.kill(own_broker.process.pid, signal.SIGCONT)
    assert health[0] == 503 and "the broker has not answered for" in health[1], health
    assert unanswered >= 30
    pipeline.produce(calls("support", 30, now - 20))
    wait_for(lambda: totals(worker, "support") == (30.0, 22.0, 8.0), timeout=90, message="support after the pause")
    assert totals(worker, "sales") == (40.0, 30.0, 10.0)
    wait_for(lambda: worker.get("/healthz") == b"ok\n", timeout=30, message="healthy again")
    assert value(worker.samples(), "callcenter_broker_data_lost_total", stage="route") == 0
    assert worker.process.poll() is None


def test_a_broker_restarted_without_its_data_is_reported_loudly(own_broker):
    pipeline = Pipeline(own_broker, "faults-restart")
    worker = pipeline.start_worker()
    now = time.time()
    pipeline.produce(calls("sales", 40, now - 60))
    wait_for(lambda: totals(worker, "sales") == (40.0, 30.0, 10.0), timeout=60, message="sales before the restart")
    own_broker.stop()
    own_broker.start()  # same port, memory storage: every topic and offset is gone
    wait_for(lambda: urlopen_status(worker.url + "/healthz")[0] == 503, timeout=60, message="/healthz reports the loss")
    _, body = urlopen_status(worker.url + "/healthz")
    assert "no longer exists on the broker" in body or "went back" in body, body
    samples = worker.samples()
    assert (value(samples, "callcenter_broker_data_lost_total", stage="route") or 0) + \
           (value(samples, "callcenter_broker_data_lost_total", stage="aggregate") or 0) >= 1
    assert "the broker lost records" in worker.log.read_text() or "no longer exists" in worker.log.read_text()


def urlopen_status(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, repr(exc)
