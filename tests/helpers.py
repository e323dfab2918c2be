"""Small builders shared by the tests: canonical events at given epoch times."""

from __future__ import annotations

import itertools
import shutil
from datetime import UTC, datetime

import orjson
import pytest

_ids = itertools.count(1)


def iso(t: float) -> str:
    """Epoch seconds to an RFC 3339 UTC time with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def event(kind: str, t: float, **fields) -> dict:
    """A valid canonical event of type `kind` at epoch time t; fields add queue, call_id, ..."""
    return {"schema_version": 1, "event_id": fields.pop("event_id", f"test-{next(_ids)}"), "type": kind,
            "time": iso(t), "source": "test", **fields}


def call(queue: str, call_id: str, offered: float, outcome: str, ended: float, agent: str = "a1", **extra) -> list[dict]:
    """The events of one call's wait: call.offered then answered / abandoned / flowed_out."""
    out = [event("call.offered", offered, queue=queue, call_id=call_id)]
    if outcome == "answered":
        out.append(event("call.answered", ended, queue=queue, call_id=call_id, agent_id=agent))
    elif outcome == "abandoned":
        out.append(event("call.abandoned", ended, queue=queue, call_id=call_id))
    else:
        out.append(event("call.flowed_out", ended, queue=queue, call_id=call_id, reason=extra.get("reason", "timeout")))
    return out


def raw(ev: dict) -> bytes:
    return orjson.dumps(ev)


def require_tool(name: str, how: str = "`make tools` installs it") -> str:
    """Path of a binary the test needs. A missing one fails the test (never a skip: a skipped
    check in CI would hide a broken install)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {how}", pytrace=False)
    return path
