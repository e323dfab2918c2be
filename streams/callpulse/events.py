"""Decoding, validation and routing of canonical events (first stage of the pipeline).

Raw Kafka messages come in with any key. Each one is parsed, validated against
`schemas/event-v1.schema.json`, checked against the wall clock for far-future times, and routed to
the queues it concerns. Valid events travel on as their *original bytes*, packed per queue into one
batch message (see `pack`), so the second stage can put the exact bytes in a dead letter too.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

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

# The earliest event time accepted (epoch seconds): 1970-01-01T00:00:00Z. RFC 3339 and the schema
# allow any year from 0001, but no telephony event is older than the Unix epoch, and the second
# stage cannot place times in the first days of year 1 at all (its business-day and interval
# arithmetic steps a day before them, out of Python's date range). An older time is a broken
# clock: rejected as a schema violation of `time`, like a time that is no valid date.
EARLIEST_TIME = 0.0


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

    def dead_letter(self, stage: str, mask_callers: bool = False) -> bytes:
        """The dead-letter message: reason, detail, when, and the original bytes (as text, or base64).

        With mask_callers (stream.dead_letter_mask_callers), caller numbers are masked in the
        original and in the detail (`mask_callers_in`); the record then says
        ``"original_masked": true``."""
        raw, detail = (self.raw, self.detail) if not mask_callers else mask_callers_in(self.raw, self.detail)
        record: dict[str, str | bool] = {
            "reason": self.reason,
            "detail": detail,
            "stage": stage,
            "rejected_at": datetime.fromtimestamp(time.time()).astimezone().isoformat(timespec="milliseconds"),
        }
        try:
            record["original"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            record["original_base64"] = base64.b64encode(raw).decode()
        if mask_callers:
            record["original_masked"] = True
        return orjson.dumps(record)


# ---- caller numbers masked in dead letters (stream.dead_letter_mask_callers) -------------------
#
# The rule, for an original that parses as JSON (any reject but malformed_json):
#   - every field the schema declares a phone number (`$defs/phone_number`: caller, dnis), at any
#     depth, is replaced whatever it holds: "+44 20 7946 0123" becomes "***23";
#   - identifiers, times, queue names and counts (KEPT_FIELDS, at the top level) are kept, so a
#     dead letter can still be traced to its producer and call;
#   - everything else (target, which may be an external number, attributes keys and values,
#     enumerations, free texts, fields the schema does not know, whatever is inside a value of the
#     wrong type) has each phone-like run masked the same way (see PHONE_RUN);
#   the masked event is written out again as compact JSON (key order kept), so the duplicate keys,
#   spacing and escapes of the original are not kept.
# An original that is not JSON (malformed_json, non-UTF-8 bytes) cannot be masked field by field:
# every phone-like run in its bytes and in the detail is masked. Details of parsed events get the
# same replacements as the event (a detail quotes keys and values, e.g. an unknown field's name).

#: The top-level fields kept as they are by the masking: ids, times, queue names, enumerated counts.
KEPT_FIELDS = frozenset({
    "schema_version", "event_id", "time", "call_id", "agent_id", "callback_id", "queue", "queues",
    "target_queue", "priority", "attempt", "ring_seconds", "wait_seconds", "csat", "nps", "resolved",
})
# An RFC 3339 date, with its time of day if any: never a phone number (its digits are kept).
_DATE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?!\d)(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
#: A phone-like run: 6 or more digits, each separated from the next by at most two of space ( ) . - /
#: (numbers as people write them: +44 (0)20 7946-0123), optionally after a +.
PHONE_RUN = r"\+?\(?\d(?:[ ().\-/]{0,2}\d){5,}"
_RUNS = re.compile(f"(?P<date>{_DATE})|(?P<phone>{PHONE_RUN})")
_RUNS_BYTES = re.compile(_RUNS.pattern.encode())
_DIGITS = re.compile(r"\d")
MASK = "***"


def mask_number(text: str) -> str:
    """A caller number masked: MASK and its last two digits ("+44 20 7946 0123" -> "***23")."""
    return MASK + "".join(_DIGITS.findall(text)[-2:])


def mask_phone_runs(text: str, seen: dict[str, str] | None = None) -> str:
    """`text` with every phone-like run masked (dates and times are left alone); each run replaced
    goes into `seen` (clear text -> mask)."""

    def replace(match: re.Match) -> str:
        if match["date"] is not None:
            return match[0]
        masked = mask_number(match[0])
        if seen is not None:
            seen[match[0]] = masked
        return masked

    return _RUNS.sub(replace, text)


def _mask_bytes(raw: bytes) -> bytes:
    """Phone-like runs masked in bytes that are not JSON: as text if they are UTF-8 (digits of any
    script), else byte by byte (ASCII digits)."""
    try:
        return mask_phone_runs(raw.decode("utf-8")).encode()
    except UnicodeDecodeError:
        pass

    def replace(match: re.Match) -> bytes:
        if match["date"] is not None:
            return match[0]
        return mask_number(match[0].decode("ascii")).encode()

    return _RUNS_BYTES.sub(replace, raw)


@functools.cache
def phone_fields() -> frozenset[str]:
    """The fields the event schema declares phone numbers (its `$defs/phone_number`)."""
    return frozenset(name for name, spec in load_schema()["properties"].items()
                     if spec.get("$ref") == "#/$defs/phone_number")


def _mask_json(value, seen: dict[str, str], whole: bool = False):
    """A parsed JSON value with caller numbers masked. whole: the value is (inside) a phone number
    field, so every string and number in it is masked entirely, not only its phone-like runs."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (str, int, float)):
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if whole:
            seen[text] = masked = mask_number(text)
            return masked
        masked = mask_phone_runs(text, seen)
        return value if masked == text else masked
    if isinstance(value, list):
        return [_mask_json(item, seen, whole) for item in value]
    fields = phone_fields()
    return {mask_phone_runs(key, seen): _mask_json(item, seen, whole or key in fields) for key, item in value.items()}


def _is_plain(value) -> bool:
    """A JSON scalar, or a list of scalars: what a kept field holds."""
    scalar = (str, int, float, bool, type(None))
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def mask_callers_in(raw: bytes, detail: str) -> tuple[bytes, str]:
    """The original message and the detail of a reject with caller numbers masked (rule above)."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _mask_bytes(raw), mask_phone_runs(detail)
    seen: dict[str, str] = {}
    if isinstance(event, dict):
        fields = phone_fields()
        masked = {}
        for key, value in event.items():
            if key in KEPT_FIELDS and _is_plain(value):
                masked[key] = value
            else:
                masked[mask_phone_runs(key, seen)] = _mask_json(value, seen, whole=key in fields)
    else:
        masked = _mask_json(event, seen)
    # A clear text of 1-2 characters shows no more than its mask does (the last two digits), and
    # replacing it everywhere would garble the detail.
    for clear in sorted((c for c in seen if len(c) > 2), key=len, reverse=True):
        detail = detail.replace(clear, seen[clear])
    return orjson.dumps(masked), detail


class Valid(NamedTuple):
    """A valid event as the first stage holds it: its time, where it came from, where it goes."""

    time: float  # event time, epoch seconds
    offset: int  # offset in its input partition
    raw: bytes  # the original message
    queues: tuple[str, ...]  # the keys it goes to: the queues it applies to, and its agent's key (agent_key)
    type: str

    @property
    def routed_to_a_queue(self) -> bool:
        return any(not is_agent_key(key) for key in self.queues)


class Router:
    """Validates raw messages and finds the queue(s) each valid one concerns."""

    def __init__(self, schema: dict | None = None, max_future_seconds: float = 300.0, clock: Callable[[], float] = time.time,
                 contacts: Mapping[str, tuple[str, ...]] | None = None):
        """contacts: queue -> the other queues of its repeat-caller group (Config.repeat_caller_contacts)."""
        schema = schema or load_schema()
        self.contacts = contacts or {}
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

    def _check(self, raw: bytes | None) -> tuple[dict | None, float, Rejected | None]:
        if raw is None:  # a Kafka record without a value (a tombstone): nothing to parse
            return None, 0.0, Rejected(MALFORMED_JSON, "message has no value (null)", b"")
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
        if event_time < EARLIEST_TIME:
            return None, 0.0, Rejected(SCHEMA_VIOLATION, f"data.time: {event['time']} is before 1970-01-01T00:00:00Z, the earliest time accepted", raw)
        if event_time > self.clock() + self.max_future:
            return None, 0.0, Rejected(FUTURE_TIME, f"time {event['time']} is more than {self.max_future:g} s ahead of this worker's clock", raw)
        return event, event_time, None

    def validate(self, records: Iterable[tuple[int, bytes | None]]) -> tuple[list[Valid], list[Rejected]]:
        """Check (offset, message) pairs of one input partition: the valid events, the rejected ones.
        A message may be None (a Kafka record with no value): rejected, never raised on."""
        valid, rejected = [], []
        for offset, raw in records:
            event, event_time, why = self._check(raw)
            if why is not None:
                rejected.append(why)
            else:
                assert event is not None and raw is not None  # not rejected: _check() parsed raw into an event
                valid.append(Valid(event_time, offset, raw, keys_of(event, self.contacts), event["type"]))
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


# ---- keys of the batches topic and the state table: queue names and agent shards ------------
#
# An event naming an agent goes to its agent's shard too, so one model sees all of the agent's
# events whatever queues they concern (kpi/agents.py). A shard's key is AGENT_KEY_PREFIX + its
# number (crc32 of the agent id modulo AGENT_SHARDS: stable across processes and versions;
# changing AGENT_SHARDS would orphan the agents' state). No queue name can start with the prefix:
# it is the lone surrogate U+DCFF, which no JSON text parsed by orjson holds, and on the wire
# (key_bytes, with surrogateescape) it is the byte 0xFF, which starts no UTF-8 text. Log a key
# with display_key(): a lone surrogate cannot be written to a UTF-8 log.
AGENT_KEY_PREFIX = "\udcff"
AGENT_SHARDS = 8  # a few: each is one more batch message per poll


def agent_key(agent_id: str) -> str:
    """The key of the shard an agent's events go to."""
    return f"{AGENT_KEY_PREFIX}{zlib.crc32(agent_id.encode()) % AGENT_SHARDS}"


def is_agent_key(key: str) -> bool:
    return key.startswith(AGENT_KEY_PREFIX)


def key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def key_text(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def display_key(key: str) -> str:
    """A key as a log line shows it: the queue name, or "agent shard <n>"."""
    return f"agent shard {key[len(AGENT_KEY_PREFIX):]}" if is_agent_key(key) else key


def keys_of(event: dict, contacts: Mapping[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """Where an event goes: its queues (queues_of); if it names an agent, the agent's key; and
    for a call.offered with a caller, the other queues of its queue's repeat-caller group
    (`contacts`: queue -> those queues), which track the caller's contact for FCR only."""
    keys = queues_of(event)
    if contacts and event["type"] == "call.offered" and event.get("caller"):
        keys += contacts.get(event.get("queue") or "", ())
    agent_id = event.get("agent_id")
    if agent_id is not None:
        keys.append(agent_key(agent_id))
    return tuple(keys)


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
