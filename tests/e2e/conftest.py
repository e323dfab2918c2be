"""End-to-end fixtures: one Tansu broker per session, one isolated pipeline per test.

Nothing these fixtures start outlives pytest: the processes are started with callpulse.tools.procs.spawn
(killed by the kernel when pytest dies, even by SIGKILL, on Linux), and SIGTERM makes pytest stop
like on Ctrl-C, so the teardowns below stop the workers and then the broker (SIGTERM, up to 10 s,
then SIGKILL).
"""

import itertools
import signal

import pytest

from callpulse.tools.broker import EmbeddedBroker
from callpulse.tools.procs import terminate_as_interrupt
from harness import LOGS, Pipeline

_names = itertools.count(1)


@pytest.fixture(scope="session", autouse=True)
def sigterm_stops_the_session():
    """SIGTERM as KeyboardInterrupt: pytest then runs every teardown, as after a Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, terminate_as_interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def broker(sigterm_stops_the_session):
    LOGS.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=LOGS / "broker.log") as b:
        yield b


@pytest.fixture
def pipeline(broker, request):
    name = f"t{next(_names)}-{request.node.name[:30].replace('[', '-').replace(']', '')}"
    marker = request.node.get_closest_marker("pipeline_env")
    p = Pipeline(broker, name, **(marker.kwargs if marker else {}))
    yield p
    p.stop()
