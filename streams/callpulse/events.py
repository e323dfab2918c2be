"""Decoding, validation and routing of canonical events (first stage of the pipeline).

Raw Kafka messages come in with any key. Each one is parsed, validated against
`schemas/event-v1.schema.json`, checked against the wall clock for far-future times, and routed to
the queues it concerns. Valid events travel on as their *original bytes*, packed per queue into one
batch message (see `pack`), so the second stage can put the exact bytes in a dead letter too.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import fastjsonschema
import orjson

# streams/callpulse/schemas is a link to the top-level schemas/ directory, so the schema is found in
# a checkout and is copied into wheels as package data.
SCHEMA_PATH = Path(__file__).parent / "schemas" / "event-v1.schema.json"

# Reasons an event is rejected to the dead-letter topic (label values of events_rejected_total).
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
UNKNOWN_TYPE = "unknown_type"
SCHEMA_VIOLATION = "schema_violation"
FUTURE_TIME = "future_time"
TOO_LATE = "too_late"
UNMATCHED = "unmatched_outcome"
REJECT_REASONS = (MALFORMED_JSON, NOT_AN_OBJECT, UNKNOWN_TYPE, SCHEMA_VIOLATION, FUTURE_TIME, TOO_LATE, UNMATCHED)


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    return orjson.loads(path.read_bytes())


def compile_validators(schema: dict) -> dict[str, Callable[[dict], object]]:
    """One fastjsonschema validator per event type, for the draft 2020-12 schema.

    fastjsonschema implements drafts 4, 6 and 7; the schema uses only keywords whose meaning is the
    same in draft 7 and 2020-12 (tests check both validators agree on every example), so it is
    compiled as draft 7. The schema picks each type's rules with `allOf: [{if type == X, then ...}]`;
    fastjsonschema evaluates a failing `if` by raising and catching an exception, 22 of them per
    event, so each type gets the schema with only its own `then` block: the same rules, 10x faster.
    """
    validators = {}
    for block in schema["allOf"]:
        kind = block["if"]["properties"]["type"]["const"]
        for_type = {k: v for k, v in schema.items() if k != "allOf"}
        for_type["$schema"] = "http://json-schema.org/draft-07/schema#"
        for_type["allOf"] = [block["then"]]
        validators[kind] = fastjsonschema.compile(for_type, use_formats=False)
    return validators


def parse_time(text: str) -> float:
    """RFC 3339 time (validated by the schema) to epoch seconds."""
    return datetime.fromisoformat(text).timestamp()


def format_time(t: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds, e.g. ``2026-11-23T09:15:02.125Z``: the
    form every producer of callpulse (simulator, adapters) writes."""
    ms = math.floor(t * 1000.0 + 0.5)
    sec = ms // 1000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{ms - sec * 1000:03d}Z"


def redact_phone(number: str) -> str:
    """A caller number as it may appear in a log line: a short stable hash, never the digits."""
    return "caller#" + hashlib.sha256(number.encode()).hexdigest()[:10]


@dataclass
class Rejected:
    reason: str
    detail: str
    raw: bytes

    def dead_letter(self, stage: str) -> bytes:
        """The dead-letter message: reason, detail, when, and the original bytes (as text, or base64)."""
        record = {
            "reason": self.reason,
            "detail": self.detail,
            "stage": stage,
            "rejected_at": datetime.fromtimestamp(time.time()).astimezone().isoformat(timespec="milliseconds"),
        }
        try:
            record["original"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            record["original_base64"] = base64.b64encode(self.raw).decode()
        return orjson.dumps(record)


class Valid(NamedTuple):
    """A valid event as the first stage holds it: its time, where it came from, where it goes."""

    time: float  # event time, epoch seconds
    offset: int  # offset in its input partition
    raw: bytes  # the original message
    queues: tuple[str, ...]  # the queues it applies to
    type: str


class Router:
    """Validates raw messages and finds the queue(s) each valid one concerns."""

    def __init__(self, schema: dict | None = None, max_future_seconds: float = 300.0, clock: Callable[[], float] = time.time):
        schema = schema or load_schema()
        self.validators = compile_validators(schema)
        self.known_types = frozenset(schema["properties"]["type"]["enum"])
        missing = self.known_types - set(self.validators)
        if missing:
            raise ValueError(f"schema has no rules for event types {sorted(missing)}")
        self.max_future = max_future_seconds
        self.clock = clock

    def check(self, raw: bytes) -> tuple[dict | None, Rejected | None]:
        """Parse and validate one message: (event, None) or (None, why it was rejected)."""
        event, _, rejected = self._check(raw)
        return event, rejected

    def _check(self, raw: bytes) -> tuple[dict | None, float, Rejected | None]:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, 0.0, Rejected(MALFORMED_JSON, str(exc), raw)
        if not isinstance(event, dict):
            return None, 0.0, Rejected(NOT_AN_OBJECT, f"expected a JSON object, got {type(event).__name__}", raw)
        kind = event.get("type")
        if not isinstance(kind, str) or kind not in self.known_types:
            return None, 0.0, Rejected(UNKNOWN_TYPE, f"unknown event type {kind!r}", raw)
        try:
            self.validators[kind](event)
        except fastjsonschema.JsonSchemaValueException as exc:
            return None, 0.0, Rejected(SCHEMA_VIOLATION, exc.message, raw)
        try:
            event_time = parse_time(event["time"])
        except ValueError as exc:
            return None, 0.0, Rejected(SCHEMA_VIOLATION, f"data.time: {exc}", raw)
        if event_time > self.clock() + self.max_future:
            return None, 0.0, Rejected(FUTURE_TIME, f"time {event['time']} is more than {self.max_future:g} s ahead of this worker's clock", raw)
        return event, event_time, None

    def validate(self, records: Iterable[tuple[int, bytes]]) -> tuple[list[Valid], list[Rejected]]:
        """Check (offset, message) pairs of one input partition: the valid events, the rejected ones."""
        valid, rejected = [], []
        for offset, raw in records:
            event, event_time, why = self._check(raw)
            if why is not None:
                rejected.append(why)
            else:
                valid.append(Valid(event_time, offset, raw, tuple(queues_of(event)), event["type"]))
        return valid, rejected


def by_queue(events: Iterable[Valid]) -> dict[str, list[bytes]]:
    """Original messages grouped by queue, each group in event-time order.

    The events come from several input partitions; sorting undoes the disorder between them (stable:
    ties keep their order). An agent event lands in every queue it concerns.
    """
    timed: dict[str, list[tuple[float, bytes]]] = {}
    for e in events:
        for queue in e.queues:
            timed.setdefault(queue, []).append((e.time, e.raw))
    out = {}
    for queue, items in timed.items():
        items.sort(key=lambda item: item[0])
        out[queue] = [raw for _, raw in items]
    return out


def queues_of(event: dict) -> list[str]:
    """The queues an event applies to: its `queue`, or every queue in an agent event's `queues`."""
    queue = event.get("queue")
    if event["type"].startswith("agent."):
        queues = list(event.get("queues") or ())
        if queue is not None and queue not in queues:
            queues.append(queue)
        return queues
    if event["type"] == "call.ivr_left":  # the queue named there is where the call goes next
        return []
    return [queue] if queue is not None else []


# ---- batch framing: many original messages in one Kafka message, each length-prefixed ---------

_LENGTH = struct.Struct(">I")


def pack(raws: Iterable[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(raw)) + raw for raw in raws)


def unpack(blob: bytes) -> Iterator[bytes]:
    view, pos, end = memoryview(blob), 0, len(blob)
    while pos < end:
        (size,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        yield bytes(view[pos : pos + size])
        pos += size
