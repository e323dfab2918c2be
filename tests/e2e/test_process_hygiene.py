"""Process hygiene (issue 13): nothing `callpulse demo` or an e2e pytest session started outlives
it, not even after a SIGKILL, which no signal handler or `finally` sees. Real processes, no mocks;
the process tree is read from /proc (Linux only, like the PR_SET_PDEATHSIG it tests)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from callpulse.tools.broker import free_port

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux only")]

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN = 5.0  # seconds for the kernel to kill and close the children after their parent's SIGKILL


# ---- /proc ---------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) of a live process, None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces and ")"
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> dict[tuple[int, int], str]:
    """Every descendant of `root` as {(pid, start time): command line}; the start time tells a
    process from a later one that got the same pid."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[1], []).append((int(entry), stat[2]))
    out, todo = {}, [root]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            out[(pid, start)] = _cmdline(pid)
            todo.append(pid)
    return out


def running(process: tuple[int, int]) -> bool:
    """The process still runs (a zombie has exited and released its ports; init reaps it)."""
    stat = _stat(process[0])
    return stat is not None and stat[2] == process[1] and stat[0] not in ("Z", "X")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def kill_leftovers(processes) -> None:
    """Clean up after a failed assertion: SIGKILL what is still running (only what we recorded)."""
    for process in processes:
        if running(process):
            try:
                os.kill(process[0], signal.SIGKILL)
            except ProcessLookupError:
                pass


def assert_all_gone(processes: dict[tuple[int, int], str], ports: list[int]) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline:
        alive = {p: cmd for p, cmd in processes.items() if running(p)}
        busy = [port for port in ports if listening(port)]
        if not alive and not busy:
            return
        time.sleep(0.1)
    lines = [f"  pid {pid}: {cmd}" for (pid, _), cmd in alive.items()]
    raise AssertionError(f"{GONE_WITHIN:g} s after the parent's end, still running:\n" + "\n".join(lines)
                         + f"\nports still listening: {busy}")


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what}: exited with {process.returncode}; log:\n{log_tail(log)}")
        if result := predicate():
            return result
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:g} s; log:\n{log_tail(log)}")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPULSE_")}
    return dict(env, PYTHONUNBUFFERED="1", NO_COLOR="1")


def assert_stopped_by_parent(processes: dict[tuple[int, int], str]) -> None:
    """Right when the parent has exited, its children are gone already: it stopped them itself
    (the kernel's PDEATHSIG would kill them only after, as a SIGKILL)."""
    alive = [f"  pid {pid}: {cmd}" for (pid, start), cmd in processes.items() if running((pid, start))]
    assert not alive, "the parent exited before these:\n" + "\n".join(alive)


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


# ---- the tests -----------------------------------------------------------------------------

BY_SIGNAL = pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])


@BY_SIGNAL
def test_a_killed_demo_leaves_no_process_and_no_port_behind(tmp_path, sig):
    """`callpulse demo` killed with SIGKILL: its broker, worker and simulator die with it and free
    their ports (they used to keep running and keep port 6066 busy for the next demo). With
    SIGTERM the demo stops them itself, like on Ctrl-C, and exits with 0."""
    broker_port, web_port = free_port(), free_port()
    cli = Path(sys.executable).with_name("callpulse")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "callpulse"]
    log = tmp_path / "demo.out"
    # The wallboard draws to stdout, a file here: the demo needs no terminal.
    with open(log, "wb") as out:
        demo = subprocess.Popen([*command, "demo", "--broker-port", str(broker_port), "--web-port", str(web_port)],
                                cwd=tmp_path, env=_environment(), stdout=out, stderr=subprocess.STDOUT)
    seen: dict[tuple[int, int], str] = {}
    try:
        def started():  # the worker answers and the simulator (started after it) runs
            seen.update(descendants(demo.pid))
            return healthy(web_port) and any(" simulate " in cmd for cmd in seen.values())

        wait_until(started, 90, "the demo's worker and simulator", demo, log)
        seen.update(descendants(demo.pid))
        commands = " | ".join(seen.values())
        assert "tansu" in commands and "callpulse worker" in commands and "callpulse simulate" in commands, commands
        assert listening(broker_port) and listening(web_port)

        demo.send_signal(sig)
        if sig == signal.SIGTERM:  # three children, each up to 10 s from SIGTERM to SIGKILL
            assert demo.wait(40) == 0, log_tail(log)
            assert "stopping the simulator, the worker and the broker" in log_tail(log)
            assert_stopped_by_parent(seen)
        else:
            demo.wait(10)
        assert_all_gone(seen, [broker_port, web_port])
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        kill_leftovers(seen)


SLEEPER = '''
import json
import os
import time
from pathlib import Path


def test_sleeper(broker, pipeline):
    worker = pipeline.start_worker()
    started = Path(os.environ["HYGIENE_STARTED"])
    started.with_suffix(".tmp").write_text(json.dumps(
        {"broker": [broker.process.pid, broker.port], "worker": [worker.process.pid, worker.port]}))
    started.with_suffix(".tmp").rename(started)
    time.sleep(600)
'''


@BY_SIGNAL
def test_a_killed_pytest_session_leaves_no_broker_or_worker_behind(tmp_path, sig):
    """A pytest session using the e2e harness (broker and pipeline fixtures, one worker) killed
    with SIGKILL: the broker and the worker die with it. With SIGTERM pytest stops as after a
    Ctrl-C, and the fixtures' teardown stops the worker and the broker."""
    (tmp_path / "test_sleeper.py").write_text(SLEEPER)
    # -p conftest: tests/e2e/conftest.py as a plugin, all its fixtures (the session's SIGTERM
    # handling too) for a test file outside tests/e2e.
    (tmp_path / "pytest.ini").write_text(textwrap.dedent(f"""\
        [pytest]
        pythonpath = {ROOT / "tests"} {ROOT / "tests" / "e2e"} {ROOT / "streams"}
        addopts = -p no:cloudcoil -p no:cacheprovider -p conftest
        """))
    started = tmp_path / "started.json"
    log = tmp_path / "pytest.out"
    with open(log, "wb") as out:
        session = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", str(tmp_path / "test_sleeper.py")],
                                   cwd=tmp_path, env=dict(_environment(), HYGIENE_STARTED=str(started)),
                                   stdout=out, stderr=subprocess.STDOUT)
    seen: dict[tuple[int, int], str] = {}
    try:
        wait_until(started.exists, 90, "the inner session's broker and worker", session, log)
        info = json.loads(started.read_text())
        seen.update(descendants(session.pid))
        pids = {pid for pid, _ in seen}
        assert info["broker"][0] in pids and info["worker"][0] in pids, (info, seen)

        session.send_signal(sig)
        if sig == signal.SIGTERM:  # the worker, then the broker, each up to 10 s
            assert session.wait(30) == pytest.ExitCode.INTERRUPTED, log_tail(log)
            assert_stopped_by_parent(seen)
        else:
            session.wait(10)
        assert_all_gone(seen, [info["broker"][1], info["worker"][1]])
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        kill_leftovers(seen)


def test_a_child_spawned_from_a_short_lived_thread_outlives_the_thread():
    """PDEATHSIG follows the forking *thread*: spawn from another thread forks in a long-lived one,
    so the child lives on after its caller's thread has ended (and still dies with the process)."""
    from callpulse.tools.procs import spawn, stop

    result = []
    thread = threading.Thread(target=lambda: result.append(spawn(["sleep", "30"])))
    thread.start()
    thread.join()
    child = result[0]
    try:
        time.sleep(0.5)  # a death signal from the ended thread would have come by now
        assert child.poll() is None, f"the child died with its caller's thread: {child.returncode}"
    finally:
        assert stop(child) == -signal.SIGTERM
