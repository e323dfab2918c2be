"""The live adapters as their users run them: `callpulse ami` and `callpulse freeswitch` processes
against the scripted servers of the unit tests (real loopback TCP, real line protocols), publishing
to the broker, a worker counting. Expected numbers are the scripts' hand-computed ones. A replay of
the session each adapter recorded must then count nothing twice."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from harness import LOGS, value, wait_for


class ServerThread:
    """An asyncio loop in a thread, for a scripted server while the test drives processes."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server_thread():
    t = ServerThread()
    yield t
    t.close()


def start_adapter(pipeline, name: str, args: list[str], **env) -> subprocess.Popen:
    log = open(LOGS / f"{pipeline.name}-{name}.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "callpulse", *args], env=dict(pipeline.env, **env),
                               stdout=log, stderr=subprocess.STDOUT)
    STARTED.append(process)
    return process


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_adapter_left_behind():
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(30)


def totals(worker, queue: str) -> dict[str, float | None]:
    s = worker.samples()
    out = {name: value(s, f"callcenter_calls_{name}_total", queue=queue)
           for name in ("offered", "answered", "abandoned", "handled")}
    out["flowed_out"] = sum(v for (name, labels), v in s.items()  # by reason
                            if name == "callcenter_calls_flowed_out_total" and ("queue", queue) in labels)
    return out


def wait_for_totals(worker, queue: str, want: dict, timeout: float = 60.0) -> None:
    seen = {}

    def reached():
        seen.update(totals(worker, queue))
        return seen == want

    try:
        wait_for(reached, timeout=timeout, message=f"the calls of {queue} in the worker")
    except AssertionError:
        raise AssertionError(f"{queue}: wanted {want}, the worker has {seen}") from None


def processed(worker) -> float:
    """Events the second stage has dealt with, per queue they concern: applied, dropped as a
    repeated id, or refused as older than the lateness allows."""
    s = worker.samples()
    return sum(value(s, name) or 0 for name in ("callcenter_events_applied_total", "callcenter_events_duplicate_total")) \
        + (value(s, "callcenter_events_rejected_total", reason="too_late") or 0)


def validated(worker) -> float:
    """Events the first stage has validated (an event that concerns no queue stops there)."""
    return sum(v for (name, _), v in worker.samples().items() if name == "callcenter_events_total")


def replay(pipeline, worker, path) -> str:
    """Run `callpulse replay` and wait until the worker has dealt with every event it published:
    the first stage has validated them all and the second stage's count has stopped moving."""
    before = validated(worker)
    done = subprocess.run([sys.executable, "-m", "callpulse", "replay", str(path)], env=pipeline.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    published = int(re.search(r": ([\d,]+) events published", done.stderr).group(1).replace(",", ""))
    assert published > 0, done.stderr
    wait_for(lambda: validated(worker) >= before + published, timeout=60, message="the replayed events validated")
    counts = [processed(worker)]

    def settled() -> bool:
        counts.append(processed(worker))
        return len(counts) >= 4 and len(set(counts[-4:])) == 1

    wait_for(settled, timeout=60, interval=1.0, message="the second stage to settle")
    return done.stderr


def test_ami_adapter_feeds_a_worker_and_its_recording_replays_without_double_counting(pipeline, server_thread, tmp_path):
    from ami_server import ScriptedAmi
    from test_ami import MEMBERS, SECRET, START, USER, call_flows

    server = server_thread.run(ScriptedAmi(USER, SECRET, call_flows(), members=MEMBERS, clock=START).start())
    worker = pipeline.start_worker()
    recording = tmp_path / "pbx1.ami"
    adapter = start_adapter(pipeline, "ami", ["ami", "--host", "127.0.0.1", "--port", str(server.port),
                                              "--username", USER, "--record", str(recording)],
                            CALLPULSE_AMI_SECRET=SECRET)
    # The script's five calls in IT: C1, C3, C4 answered (C4 transferred), C2 abandoned, C5 timed out.
    want = {"offered": 5, "answered": 3, "abandoned": 1, "flowed_out": 1, "handled": 3}
    wait_for_totals(worker, "IT", want)
    assert server.logins == [True]
    assert stop(adapter) == 0  # SIGTERM is a normal stop

    summary = replay(pipeline, worker, recording)  # the same session again, from the file
    assert "(ami)" in summary
    assert totals(worker, "IT") == want


def test_freeswitch_adapter_feeds_a_worker_and_its_recording_replays_without_double_counting(pipeline, server_thread, tmp_path):
    from esl_server import ScriptedEslServer
    from test_freeswitch import PASSWORD, Q, scenario

    tables, steps = scenario()
    server = ScriptedEslServer(PASSWORD, tables, steps)
    port = server_thread.run(server.start())
    worker = pipeline.start_worker()
    recording = tmp_path / "fs1.esl"
    adapter = start_adapter(pipeline, "freeswitch", ["freeswitch", "--port", str(port), "--queue", Q,
                                                     "--record", str(recording)],
                            CALLPULSE_ESL_PASSWORD=PASSWORD)
    # test_freeswitch.test_scenario_folds_to_hand_computed_kpis: 7 offered (one from the sync),
    # 2 answered, 2 abandoned, 3 flowed out, 2 handled.
    want = {"offered": 7, "answered": 2, "abandoned": 2, "flowed_out": 3, "handled": 2}
    wait_for_totals(worker, Q, want)
    assert stop(adapter) == 0

    summary = replay(pipeline, worker, recording)
    assert "(freeswitch)" in summary
    assert totals(worker, Q) == want


def test_a_wrong_secret_stops_the_adapter_with_a_message(pipeline, server_thread):
    from ami_server import ScriptedAmi
    from test_ami import SECRET, START, USER

    server = server_thread.run(ScriptedAmi(USER, SECRET, [], clock=START).start())
    done = subprocess.run([sys.executable, "-m", "callpulse", "ami", "--port", str(server.port), "--username", USER],
                          env=dict(pipeline.env, CALLPULSE_AMI_SECRET="wrong"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "callpulse ami:" in done.stderr
    assert "wrong" not in done.stderr  # the secret is never printed
    missing = subprocess.run([sys.executable, "-m", "callpulse", "ami", "--port", str(server.port), "--username", USER],
                             env={k: v for k, v in pipeline.env.items() if k != "CALLPULSE_AMI_SECRET"},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "CALLPULSE_AMI_SECRET" in missing.stderr
    assert os.environ.get("CALLPULSE_AMI_SECRET") is None


# ---- queue_log: follow a file that grows, rotates and survives an adapter restart -------------

def file_counts(lines: list[str], queue: str) -> dict[str, int]:
    """What a queue_log's own lines say about one queue (plain parse, not the adapter)."""
    refused = {"FULL", "JOINEMPTY", "JOINUNAVAIL", "CLOSED", "DIVERT_CA_RATIO", "DIVERT_HOLDTIME"}
    flowed = {"EXITWITHTIMEOUT", "EXITEMPTY", "LEAVEEMPTY", "EXITWITHKEY", "WITHDRAW"} | refused
    count = {"offered": 0, "answered": 0, "abandoned": 0, "flowed_out": 0}
    for line in lines:
        fields = line.split("|")
        if len(fields) < 5 or fields[2] != queue:
            continue
        kind = fields[4]
        count["offered"] += kind == "ENTERQUEUE" or kind in refused
        count["answered"] += kind == "CONNECT"
        count["abandoned"] += kind == "ABANDON"
        count["flowed_out"] += kind in flowed
    return count


def call_totals(worker, queue: str) -> dict[str, float]:
    return {k: v or 0 for k, v in totals(worker, queue).items() if k != "handled"}


def test_follow_a_growing_rotating_queue_log_across_a_restart(pipeline, tmp_path):
    from test_queue_log import DATA

    lines = (DATA / "us_it_helpdesk_2018.queue_log").read_text().splitlines(keepends=True)
    log = tmp_path / "queue_log"
    checkpoint = tmp_path / "queue_log.checkpoint.json"
    log.write_text("".join(lines[:400]))
    worker = pipeline.start_worker()
    args = ["follow", str(log), "--checkpoint", str(checkpoint), "--poll", "0.1"]
    follower = start_adapter(pipeline, "follow", args)

    def reach(n: int) -> None:
        want = file_counts(lines[:n], "IT")
        assert want["offered"] > 0
        wait_for(lambda: call_totals(worker, "IT") == want, timeout=60, message=f"the first {n} lines in the worker")

    reach(400)
    with open(log, "a") as f:  # appended while it runs, the last line in two writes
        f.write("".join(lines[400:600]) + lines[600][:10])
        f.flush()
        f.write(lines[600][10:] + "".join(lines[601:700]))
    reach(700)
    log.rename(tmp_path / "queue_log.1")  # logrotate: rename, then a new file
    log.write_text("".join(lines[700:850]))
    reach(850)
    assert stop(follower) == 0
    with open(log, "a") as f:  # written while the follower is down
        f.write("".join(lines[850:]))
    follower = start_adapter(pipeline, "follow2", args)
    reach(len(lines))
    assert stop(follower) == 0
    s = worker.samples()
    assert value(s, "callcenter_events_duplicate_total") in (None, 0.0)  # the restart re-sent nothing

    # replaying the original file (the same system: the same default source) counts nothing twice
    summary = replay(pipeline, worker, DATA / "us_it_helpdesk_2018.queue_log")
    assert "(queue_log)" in summary
    assert call_totals(worker, "IT") == file_counts(lines, "IT")
