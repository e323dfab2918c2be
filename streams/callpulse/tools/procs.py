"""Child processes that never outlive their parent, and their orderly stop.

`spawn` is `subprocess.Popen` plus, on Linux, prctl(PR_SET_PDEATHSIG, SIGKILL) in the child: the
kernel kills the child when its parent dies, even by SIGKILL, which no signal handler, `finally`
or atexit sees. Used by `callpulse demo` (broker, worker, simulator) and the e2e harness (broker,
workers, Prometheus, Alertmanager).

Every child also gets its own session (start_new_session): Ctrl-C in a terminal reaches only the
parent, which then stops its children in order (the simulator and the workers before the broker
they talk to) instead of all of them dying at once. Before PDEATHSIG that separation is what let
children outlive a killed parent; now the kernel ends them anyway.

PDEATHSIG fires when the parent *thread* that forked the child exits, not the process. Children are
therefore forked from the main thread (which lives as long as the process); `spawn` called from
another thread hands the fork to one long-lived daemon thread, so a child never dies with a short
thread (a thread pool's, say) while the process still runs.

The death signal reaches the direct children only (a grandchild gets none); none of the programs
started this way (Tansu, the callpulse commands, Prometheus, Alertmanager) forks helpers of its own,
and `stop` signals a child's whole process group anyway.

Other POSIX systems (macOS, the BSDs) have no PDEATHSIG: there `spawn` is a plain Popen in its own
session, and only the parent's clean stop (Ctrl-C, SIGTERM: `stop`) ends the children; a SIGKILLed
parent leaves them running.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

__all__ = ["PDEATHSIG_SUPPORTED", "spawn", "stop", "stop_all", "terminate_as_interrupt"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


def _load_prctl() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # libc (glibc or musl) is in the process already
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


_prctl = _load_prctl()  # looked up here, in the parent: the child between fork and exec only calls it
PDEATHSIG_SUPPORTED = _prctl is not None


def _die_with(parent: int) -> Callable[[], None]:
    """The child's preexec_fn: SIGKILL when the parent dies; exit at once if it already has."""
    prctl = _prctl
    assert prctl is not None  # spawn asks for this only when PDEATHSIG_SUPPORTED

    def preexec() -> None:
        # Kept across execve (not for set-uid binaries). Should it fail (a seccomp filter, say) the
        # child runs on without it, as on other systems.
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork() and prctl(): the child was then re-parented (to
        # init or a subreaper) and no death signal will ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


_requests: queue.SimpleQueue | None = None  # (args, kwargs, Future) for the forking thread
_requests_lock = threading.Lock()


def _forker(requests: queue.SimpleQueue) -> None:
    while True:
        args, kwargs, result = requests.get()
        try:
            result.set_result(subprocess.Popen(args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 (raised again in the caller's thread)
            result.set_exception(exc)


def _popen_in_long_lived_thread(args, kwargs) -> subprocess.Popen:
    global _requests
    with _requests_lock:
        if _requests is None:
            _requests = queue.SimpleQueue()
            threading.Thread(target=_forker, args=(_requests,), name="callpulse-spawn", daemon=True).start()
    result: Future = Future()
    _requests.put((args, kwargs, result))
    return result.result()


def spawn(args, **kwargs) -> subprocess.Popen:
    """`subprocess.Popen(args, **kwargs)` in a new session, killed by the kernel when this process
    dies (Linux; see the module docstring)."""
    kwargs.setdefault("start_new_session", True)
    if not PDEATHSIG_SUPPORTED:
        return subprocess.Popen(args, **kwargs)
    if kwargs.get("preexec_fn") is not None:
        raise ValueError("spawn sets preexec_fn itself")
    kwargs["preexec_fn"] = _die_with(os.getpid())
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(args, **kwargs)
    return _popen_in_long_lived_thread(args, kwargs)


def _signal(process: subprocess.Popen, sig: int) -> None:
    """`sig` to the child, and to its process group if it leads one (its own session: `spawn`)."""
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    except ProcessLookupError:  # exited meanwhile
        pass


def stop(process: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM, up to `timeout` seconds to exit, then SIGKILL; the exit code."""
    if process is None:
        return None
    stop_all([process], timeout)
    return process.returncode


def stop_all(processes, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to all at once, up to `timeout` seconds in all for them to exit, then SIGKILL."""
    running = [p for p in processes if p is not None and p.poll() is None]
    for process in running:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            process.wait()


def terminate_as_interrupt(signum, frame) -> None:
    """A SIGTERM handler: raise KeyboardInterrupt in the main thread, so SIGTERM takes Ctrl-C's
    path (its `finally` blocks and fixture teardowns stop the children). A second SIGTERM while they
    stop interrupts that stop; the kernel (PDEATHSIG) then ends what is left when the process exits."""
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
