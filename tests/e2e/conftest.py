"""End-to-end fixtures: one Tansu broker per session, one isolated pipeline per test."""

import itertools

import pytest

from callpulse.broker import EmbeddedBroker
from harness import LOGS, Pipeline

_names = itertools.count(1)


@pytest.fixture(scope="session")
def broker():
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
