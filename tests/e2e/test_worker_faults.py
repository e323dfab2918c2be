"""Worker faults, with a real broker and real worker processes: a worker whose second-stage
recovery fails or never completes must say so and stop (an orchestrator starts it again), never
sit in the group owning partitions whose queues it neither applies nor exports while /healthz
says ok; and a worker asked to stop is gone within its deadline even when Faust's own stop hangs.
The faults are made inside the worker process by a patch applied before it starts: Faust's
recovery hangs are real (faust-streaming #21, #74) but cannot be made on demand."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from test_broker_faults import urlopen_status

from callpulse.tools.broker import free_port
from callpulse.tools.procs import spawn
from harness import LOGS, Pipeline, wait_for
from helpers import call

pytestmark = pytest.mark.e2e


def patched_worker(pipeline: Pipeline, name: str, patch: str) -> tuple[subprocess.Popen, str, object]:
    """A worker process that runs `patch` (Python) before `callpulse worker`. Returns the process,
    its URL and its log path."""
    log = LOGS / f"{pipeline.name}-{name}.log"
    port = free_port()
    code = f"{patch}\nimport sys\nfrom callpulse.cli import main\nsys.exit(main(['worker', '--loglevel', 'info']))\n"
    with open(log, "wb") as out:
        process = spawn([sys.executable, "-c", code], env=dict(pipeline.env, CALLPULSE_WEB_PORT=str(port)),
                        stdout=out, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}", log


def exit_code(process: subprocess.Popen, timeout: float, log) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the worker kept running for {timeout:g} s, see {log}") from None


def test_a_model_that_cannot_be_rebuilt_stops_the_worker_with_the_reason(broker):
    """The rebuild runs in Faust's recovery callback, whose exceptions Faust never raises: before,
    the worker went on owning the partitions and exporting none of their queues."""
    pipeline = Pipeline(broker, "recovery-rebuild")
    first = pipeline.start_worker()
    now = time.time()
    pipeline.produce([e for n in range(10) for e in call("sales", f"c{n}", now - 60 + n, "answered", now - 55 + n)])
    wait_for(lambda: b'queue="sales"' in (first.get("/metrics") or b""), timeout=60, message="sales exported")
    first.process.send_signal(signal.SIGTERM)  # leaves the group: the next worker need not wait for its session to time out
    first.process.wait(30)
    patch = ("import callpulse.pipeline.state as state\n"
             "def _rebuild(self, queue, entry):\n"
             "    raise RuntimeError('test: this model cannot be rebuilt')\n"
             "state.QueueStates._rebuild = _rebuild\n")
    process, _, log = patched_worker(pipeline, "rebuild-fails", patch)
    code = exit_code(process, 60, log)
    text = log.read_text(errors="replace")
    assert code != 0
    # rebuilt from the table Faust recovered, or from the changelog tail read after it (complete_recovery)
    assert ("could not be rebuilt from the changelog; stopping this worker" in text
            or re.search(r"recovery of partitions \[.*\] failed .*; stopping this worker", text)), text[-3000:]
    assert "test: this model cannot be rebuilt" in text


def test_a_recovery_that_never_completes_is_reported_then_stops_the_worker(broker):
    """Faust finishes its recovery but never calls the worker's recovery callback (as when its
    recovery hangs): /healthz reports the partitions within the stall time, and the worker stops
    once RECOVERY_STUCK_SECONDS passed without progress (both shortened for the test). Its stop
    hangs too (Faust's consumer stop, as in the test below): it still exits in time, non-zero."""
    pipeline = Pipeline(broker, "recovery-stuck")
    patch = ("import asyncio\n"
             "import faust.tables.base\n"
             "import faust.transport.drivers.aiokafka as drivers\n"
             "import callpulse.pipeline.app as app\n"  # creates the worker's app
             "async def never(self):\n"
             "    pass\n"
             "async def hang(self):\n"
             "    await asyncio.sleep(3600)\n"
             "faust.tables.base.Collection.call_recover_callbacks = never\n"
             "drivers.AIOKafkaConsumerThread.on_thread_stop = hang\n"
             "app.pipeline.watch.stalled_after = 5.0\n"
             "app.RECOVERY_STUCK_SECONDS = 12.0\n")
    process, url, log = patched_worker(pipeline, "never-recovered", patch)
    try:
        wait_for(lambda: "not recovered yet" in urlopen_status(url + "/healthz")[1], timeout=60,
                 message="/healthz reports the partitions not recovered")
        status, body = urlopen_status(url + "/healthz")
        assert status == 503 and "assigned here 5 s ago or more and not recovered yet" in body, (status, body)
        assert process.poll() is None  # reported first, stopped later
        code = exit_code(process, 60, log)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text(errors="replace")
    stopped = re.search(r"partition\(s\) \[[0-9, ]+\] owned for (\d+) s without a completed recovery", text)
    assert stopped and int(stopped.group(1)) >= 12, text[-3000:]
    assert "stopping so that a fresh start recovers them" in text
    assert "exiting now with code 1" in text and code == 1


def test_a_worker_whose_stop_hangs_exits_within_the_deadline_after_sigterm(broker):
    """Faust's consumer waits for a group join in progress before it stops (12 s seen in a chaos
    run); here its stop hangs for good. SIGTERM must still end the worker within 10 s."""
    pipeline = Pipeline(broker, "stop-hangs")
    patch = ("import asyncio\n"
             "import faust.transport.drivers.aiokafka as drivers\n"
             "async def hang(self):\n"
             "    await asyncio.sleep(3600)\n"
             "drivers.AIOKafkaConsumerThread.on_thread_stop = hang\n")
    process, url, log = patched_worker(pipeline, "worker", patch)
    try:
        wait_for(lambda: "Worker]: Ready" in log.read_text(errors="replace"), timeout=60, message="the worker is ready")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = exit_code(process, 30, log)
        took = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text(errors="replace")
    assert took <= 10.0, f"{took:.1f} s, see {log}"
    assert "exiting now with code 0 (nothing unwritten was acknowledged)" in text, text[-3000:]
    assert code == 0
