"""Asterisk `queue_log` -> canonical events.

A queue_log line is ``epoch|callid|queue|agent|EVENT|data1|...|data5`` (Asterisk docs "Queue Logs",
formats in ``apps/app_queue.c``); the realtime (database) form has the same columns. This module
reads it in data-flow order:

1. `parse_line` / `parse_fields` / `parse_row`: one line or row -> a `QueueLogRecord`;
2. `QueueLogMapper.map`: one record -> canonical events, using a little per-source state (calls
   waiting per queue with their enter time, calls talking, ring attempts, each agent's queues,
   pauses and calls in progress);
3. `read_file` / `read_stream`: a whole file, NUL bytes and a partial last line included, as an
   iterator of events in time order, with a `Skips` of what was not mapped; `read_rows` does the
   same for rows of the realtime ``queue_log`` table. Live files: `follow.QueueLogFollower`.

Times. queue_log files have one-second resolution. The wait and talk of a call are taken from the line's
own fields (CONNECT holdtime, COMPLETE* talktime, ABANDON/EXIT* waittime), not from differences of
epochs: `call.answered` is timed at enter time + holdtime and `call.ended` at answer time +
talktime, so the model's waits and talks equal what Asterisk itself recorded. Asterisk computes
those fields from the same clock as the epochs, so the two differ by at most the second that ticked
between two `time()` calls; when they differ by more than `MAX_CLOCK_SLIP_SECONDS` the fields are
not trusted and the line's epoch is used (also when the call's earlier line was never seen, and
for realtime rows whose times have microseconds: their differences are more precise than the fields).
`call.answered` carries that same wait as `wait_seconds` (answer time minus enter time, so the
holdtime whenever the answer is timed from it); without the call's ENTERQUEUE it has none.

Event ids are `event_id(source, <line text>, <index of the event within the line>)`, the line
text being the line without NUL bytes, line break and trailing empty fields. The same line read
from ``queue_log`` or from the rotated ``queue_log.1`` (or as a database row) gives the same ids.
A line repeated verbatim within the same second (a real help desk log has these: two dial attempts
in one second) gets a repeat number in its id, so the second one is not dropped as a duplicate.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from . import Skips, event_id, make_event

log = logging.getLogger(__name__)

# How far a time computed from a line's fields (enter + holdtime, ...) may be from the line's epoch.
MAX_CLOCK_SLIP_SECONDS = 3.0
# Calls whose closing line never comes (a crash, a file that stops mid-call) are forgotten after this.
FORGET_CALL_AFTER_SECONDS = 24 * 3600.0
MAX_FIELD = 128  # queue, call_id, agent_id, target
MAX_REASON = 64
NO_VALUE = frozenset(("", "NONE"))  # what Asterisk writes where a line has no call, queue or agent
READ_CHUNK = 1 << 20
_NUL_RUN = re.compile(rb"\x00+")
_PHONE_LIKE = re.compile(r"\+?[0-9]{7,}")

# ---- 1. parsing ------------------------------------------------------------------------------


class MalformedLine(ValueError):
    """A line that is not ``epoch|callid|queue|agent|EVENT[|data...]``; `reason` names why."""

    def __init__(self, reason: str, example: str):
        super().__init__(reason)
        self.reason = reason
        self.example = example


@dataclass(frozen=True)
class QueueLogRecord:
    time: float  # epoch seconds
    call_id: str
    queue: str
    agent: str
    event: str  # upper case, e.g. "ENTERQUEUE"
    data: tuple[str, ...]  # data1, data2, ... (trailing empty fields dropped)
    text: str  # the normalised line text: the basis of the event ids

    def field(self, n: int) -> str:
        """data<n> (1-based), "" when the line does not have it."""
        return self.data[n - 1] if len(self.data) >= n else ""


def _safe_example(fields: Sequence[str]) -> str:
    """A line as it may appear in a Skips example or a log: data fields (which can hold caller
    numbers) are masked."""
    head = list(fields[:5])
    return "|".join(head + ["…" if f else "" for f in fields[5:]])


def _normalised_text(epoch_text: str, fields: Sequence[str]) -> str:
    fields = list(fields)
    while len(fields) > 4 and fields[-1] == "":  # keep callid|queue|agent|event, drop empty data
        fields.pop()
    return "|".join([epoch_text, *fields])


def _epoch_text(t: float) -> str:
    return str(int(t)) if t == int(t) else f"{t:.6f}".rstrip("0")


def _record(t: float, epoch_text: str, fields: Sequence[str]) -> QueueLogRecord:
    call_id, queue, agent, event = fields[0], fields[1], fields[2], fields[3]
    data = list(fields[4:])
    while data and data[-1] == "":
        data.pop()
    return QueueLogRecord(t, call_id, queue, agent, event.strip().upper(), tuple(data),
                          _normalised_text(epoch_text, fields))


def parse_line(line: str) -> QueueLogRecord:
    """One queue_log line (a trailing line break, ``\\r`` and NUL bytes are ignored).

    Missing trailing data fields are fine; fewer than the five fixed fields or an epoch that is
    not a positive number raise `MalformedLine`."""
    line = line.replace("\x00", "").rstrip("\r\n")
    fields = line.split("|")
    if len(fields) < 5:
        raise MalformedLine("malformed:too_few_fields", f"({len(fields)} fields)")
    epoch_text = fields[0].strip()
    try:
        t = float(epoch_text)
    except ValueError:
        raise MalformedLine("malformed:bad_epoch", _safe_example(fields)) from None
    if not 0 < t < 1e11:  # also rejects nan and inf
        raise MalformedLine("malformed:bad_epoch", _safe_example(fields))
    return _record(t, epoch_text, fields[1:])


def _epoch_of(value: Any, timezone: str) -> float:
    """A realtime ``time`` column: epoch (number or numeric text), a datetime, or text such as
    ``2012-07-03 15:27:23.896208``; naive times are in `timezone`."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            value = datetime.fromisoformat(text)  # raises ValueError on anything else
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=ZoneInfo(timezone))
        return value.timestamp()
    raise ValueError(f"unsupported time value {type(value).__name__}")


def parse_fields(time: Any, callid: Any, queuename: Any, agent: Any, event: Any, *data: Any,
                 timezone: str = "UTC") -> QueueLogRecord:
    """One realtime queue_log row given as its columns (time, callid, queuename, agent, event,
    data1..data5). None columns count as empty. The same record as a file line gives the same ids."""
    texts = ["" if v is None else str(v) for v in (callid, queuename, agent, event, *data)]
    try:
        t = _epoch_of(time, timezone)
    except ValueError:
        raise MalformedLine("malformed:bad_epoch", _safe_example([str(time), *texts])) from None
    if not 0 < t < 1e11:
        raise MalformedLine("malformed:bad_epoch", _safe_example([str(time), *texts]))
    return _record(t, _epoch_text(t), texts)


def parse_row(row: Mapping[str, Any] | Sequence[Any], timezone: str = "UTC") -> QueueLogRecord:
    """A realtime row as a mapping (column names as in Asterisk's ``queue_log`` table; an old
    single ``data`` column holding ``a|b|c`` is split) or as a tuple in column order."""
    if isinstance(row, Mapping):
        if "data1" in row or "data" not in row:
            data: list[Any] = [row.get(f"data{i}") for i in range(1, 6)]
        else:
            data = str(row.get("data") or "").split("|")
        return parse_fields(row.get("time"), row.get("callid"), row.get("queuename"), row.get("agent"),
                            row.get("event"), *data, timezone=timezone)
    if len(row) < 5:
        raise MalformedLine("malformed:too_few_fields", f"({len(row)} fields)")
    return parse_fields(*row, timezone=timezone)


def split_nul_runs(raw_line: bytes) -> tuple[list[bytes], int]:
    """A raw line (no newline) -> the lines in it and the number of NUL runs removed.

    A crash or a copy-truncate leaves runs of zero bytes; the text before a run is usually a line
    whose end was lost, so a run counts as a line break."""
    if b"\x00" not in raw_line:
        return ([raw_line] if raw_line else []), 0
    parts = _NUL_RUN.split(raw_line)
    return [p for p in parts if p], len(parts) - 1


def decode(raw: bytes) -> str:
    """UTF-8, or Latin-1 for the odd legacy line that is not (every byte maps, nothing is lost)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# ---- 2. mapping ------------------------------------------------------------------------------

# Lines that are read and understood but carry nothing for queue KPIs.
IGNORED_EVENTS = frozenset((
    "QUEUESTART", "CONFIGRELOAD", "SYSCOMPAT", "PENALTY", "RINGINUSE", "INFO",
    # An outbound call's transfer, written after its OUTANSWER: call.transferred needs a queue, and
    # these dialplan lines name none.
    "OUTTRANSFER",
))
# Calls refused at the door (never queued): Wazo/FreePBX dialplan writes these instead of ENTERQUEUE.
REFUSED_REASONS = {
    "FULL": "queue_full", "JOINEMPTY": "no_agents", "JOINUNAVAIL": "no_agents", "CLOSED": "other",
    "DIVERT_CA_RATIO": "overflow", "DIVERT_HOLDTIME": "overflow",
}
# Waits that end without an answer: reason and which data field holds the wait in seconds.
WAIT_EXITS = {
    "EXITWITHTIMEOUT": ("timeout", 3), "EXITEMPTY": ("no_agents", 3), "LEAVEEMPTY": ("no_agents", 3),
    "EXITWITHKEY": ("exit_key", 4), "WITHDRAW": ("other", 3),
}
OUTBOUND_RESULTS = {
    "OUTANSWER": "connected", "OUTCANCEL": "cancelled", "OUTCHANUNAVAIL": "failed",
    "OUTCONGESTION": "failed", "OUTBUSY": "busy", "OUTNOANSWER": "no_answer",
}
LOGINS = frozenset(("AGENTLOGIN", "AGENTCALLBACKLOGIN"))
LOGOFFS = frozenset(("AGENTLOGOFF", "AGENTCALLBACKLOGOFF"))
TRANSFERS = frozenset(("BLINDTRANSFER", "ATTENDEDTRANSFER", "TRANSFER"))
MAX_DID = 64  # a dialled number, like the schema's phone numbers

Timed = tuple[float, dict]  # (epoch seconds, event)


def _wait_seconds(offered: float, answered: float) -> float:
    """call.answered's `wait_seconds`: answered - offered as the model computes it from the two
    events' times, which are written to the millisecond (so the two always agree), never negative."""
    return max(0, math.floor(answered * 1000.0 + 0.5) - math.floor(offered * 1000.0 + 0.5)) / 1000.0


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and value == value else None


class QueueLogMapper:
    """Turns queue_log records of one source into canonical events (see the module doc).

    `include_caller` adds ENTERQUEUE's caller id (and transfer targets that look like phone
    numbers), which are personal data: off by default. `agent_aliases` maps agent fields to the
    agent id to use, e.g. ``{"SIP/1001": "Sathish"}``: Asterisk writes ADDMEMBER/REMOVEMEMBER
    with the member's interface but every other line with its member name. `outbound_queue`: the
    queue whose outbound figures count the dial-out lines that name none (OUTDIAL's results)."""

    def __init__(self, source: str, *, include_caller: bool = False,
                 agent_aliases: Mapping[str, str] | None = None, skips: Skips | None = None,
                 outbound_queue: str | None = None):
        self.source = source
        self.include_caller = include_caller
        self.outbound_queue = outbound_queue or None
        self.agent_aliases = dict(agent_aliases or {})
        self.skips = skips if skips is not None else Skips()
        self.lines = 0  # lines read (after NUL runs were split off)
        self.last_line_time = 0.0  # epoch of the newest line mapped so far
        self._logged_reasons: set[str] = set()
        self.waiting: dict[tuple[str, str], float] = {}  # (queue, call) -> time the wait started
        self.ring_attempts: dict[tuple[str, str], int] = {}
        self.talking: dict[tuple[str, str], float] = {}  # (queue, call) -> time it was answered
        self.agent_queues: dict[str, list[str]] = {}  # agent -> queues it is known to serve
        self.paused: dict[str, dict[str, str]] = {}  # agent -> {queue: not-ready reason}
        self.on_call: dict[str, list[tuple[str, str]]] = {}  # agent -> calls it is talking on
        self.dids: dict[str, tuple[str, float]] = {}  # call -> (number it came in on, DID line time)
        self.dialling: dict[str, float] = {}  # call -> time of its last OUTDIAL, until the result line
        self._repeat_second = ""  # epoch text of the last line, and how often each text was seen in it
        self._repeats: dict[str, int] = {}
        self._pruned_hour = 0

    # -- entry points --------------------------------------------------------------------------

    def map_raw_line(self, raw_line: bytes) -> list[Timed]:
        """One raw line without its newline (NUL runs inside count as line breaks)."""
        if not raw_line:
            self.lines += 1
            self._skip("empty_line", "")
            return []
        lines, nul_runs = split_nul_runs(raw_line)
        for _ in range(nul_runs):
            self.skips.add("nul_bytes", "run of NUL bytes (crash or copy-truncate)")
        out: list[Timed] = []
        for raw in lines:
            out += self.map_line(decode(raw))
        return out

    def map_line(self, line: str) -> list[Timed]:
        self.lines += 1
        if not line.strip("\r\n\x00"):
            self._skip("empty_line", "")
            return []
        try:
            record = parse_line(line)
        except MalformedLine as bad:
            self._skip(bad.reason, bad.example)
            return []
        return self.map_timed(record)

    def map(self, record: QueueLogRecord) -> list[dict]:
        """The canonical events of one record (usually 0 to 3)."""
        return [e for _, e in self.map_timed(record)]

    def map_timed(self, record: QueueLogRecord) -> list[Timed]:
        if record.agent in self.agent_aliases:
            record = _with_agent(record, self.agent_aliases[record.agent])
        self.last_line_time = max(self.last_line_time, record.time)
        self._prune(record.time)
        handler = _HANDLERS.get(record.event)
        if handler is None:
            if record.event in IGNORED_EVENTS:
                self.skips.add(f"ignored:{record.event}")
            else:
                self._skip(f"unknown_event:{record.event}", self._example(record))
            return []
        for name, value in (("queue", record.queue), ("call_id", record.call_id), ("agent_id", record.agent)):
            if len(value) > MAX_FIELD:
                self._skip(f"field_too_long:{name}", self._example(record))
                return []
        emitter = _Emitter(self, record)
        handler(self, record, emitter)
        return emitter.events

    # -- helpers used by the handlers ----------------------------------------------------------

    def _skip(self, reason: str, example: str) -> None:
        self.skips.add(reason, example)
        if reason not in self._logged_reasons:  # once per reason, so a bad file cannot flood the log
            self._logged_reasons.add(reason)
            log.warning("queue_log %s: %s, e.g. %r (counted in skips, logged once)", self.source, reason, example)

    def _example(self, r: QueueLogRecord) -> str:
        return _safe_example(r.text.split("|"))

    def _id_parts(self, record: QueueLogRecord) -> tuple[str, ...]:
        """The record's id parts: its text, plus a repeat number if the same text already came in
        this second."""
        epoch_text = record.text.split("|", 1)[0]
        if epoch_text != self._repeat_second:
            self._repeat_second, self._repeats = epoch_text, {}
        seen = self._repeats.get(record.text, 0)
        self._repeats[record.text] = seen + 1
        return (record.text,) if seen == 0 else (record.text, f"repeat:{seen}")

    def _timed_from(self, start: float | None, seconds_text: str, line_time: float) -> float:
        """start + seconds (a duration from the line's own fields) if it agrees with the line's
        epoch within MAX_CLOCK_SLIP_SECONDS; otherwise the line's epoch. A realtime row with a
        sub-second time is more precise than the whole-second fields: its own time is used."""
        seconds = _number(seconds_text)
        if start is None or seconds is None or line_time != int(line_time):
            return line_time
        t = start + seconds
        return t if abs(t - line_time) <= MAX_CLOCK_SLIP_SECONDS else line_time

    def _learn_queue(self, agent: str, queue: str) -> None:
        if queue not in NO_VALUE:
            queues = self.agent_queues.setdefault(agent, [])
            if queue not in queues:
                queues.append(queue)

    def _queues_of(self, agent: str, queue: str) -> list[str]:
        """The queues an agent line applies to: its own queue, or all the agent's known ones."""
        if queue not in NO_VALUE:
            return [queue]
        return list(self.agent_queues.get(agent, []))

    def _release_agent(self, agent: str, call: tuple[str, str], t: float, emit: _Emitter) -> None:
        """The agent's call ended: once it has no other call, it is available in its queues, or
        not ready in those where it was paused meanwhile."""
        calls = self.on_call.get(agent, [])
        if call in calls:
            calls.remove(call)
        if calls:
            return
        self.on_call.pop(agent, None)
        paused = self.paused.get(agent, {})
        queues = self.agent_queues.get(agent, [])
        available = [q for q in queues if q not in paused]
        if available or not paused:
            emit("agent.state_changed", t, agent_id=agent, queues=available, state="available")
        by_reason: dict[str, list[str]] = {}
        for q in queues:
            if q in paused:
                by_reason.setdefault(paused[q], []).append(q)
        for reason, qs in by_reason.items():
            emit("agent.state_changed", t, agent_id=agent, queues=qs, state="not_ready", reason=reason)

    def _prune(self, now: float) -> None:
        """Once an hour of log time: forget calls whose closing line never came."""
        hour = int(now // 3600)
        if hour == self._pruned_hour:
            return
        self._pruned_hour = hour
        horizon = now - FORGET_CALL_AFTER_SECONDS
        for table in (self.waiting, self.talking):
            for key in [k for k, t in table.items() if t < horizon]:
                del table[key]
        for call in [c for c, (_, t) in self.dids.items() if t < horizon]:
            del self.dids[call]
        for call in [c for c, t in self.dialling.items() if t < horizon]:
            del self.dialling[call]
        for key in [k for k in self.ring_attempts if k not in self.waiting]:
            del self.ring_attempts[key]

    # -- state for checkpoints -----------------------------------------------------------------

    def state(self) -> dict:
        """Everything the mapper remembers, as JSON-able data (a fresh copy)."""
        return {
            "waiting": [[q, c, t] for (q, c), t in self.waiting.items()],
            "ring_attempts": [[q, c, n] for (q, c), n in self.ring_attempts.items()],
            "talking": [[q, c, t] for (q, c), t in self.talking.items()],
            "agent_queues": {a: list(qs) for a, qs in self.agent_queues.items()},
            "paused": {a: dict(p) for a, p in self.paused.items()},
            "on_call": {a: [list(call) for call in calls] for a, calls in self.on_call.items()},
            "repeats": [self._repeat_second, dict(self._repeats)],
            "dids": [[c, did, t] for c, (did, t) in self.dids.items()],
            "dialling": dict(self.dialling),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.waiting = {(q, c): t for q, c, t in state.get("waiting", [])}
        self.ring_attempts = {(q, c): n for q, c, n in state.get("ring_attempts", [])}
        self.talking = {(q, c): t for q, c, t in state.get("talking", [])}
        self.agent_queues = {a: list(qs) for a, qs in state.get("agent_queues", {}).items()}
        self.paused = {a: dict(p) for a, p in state.get("paused", {}).items()}
        self.on_call = {a: [(q, c) for q, c in calls] for a, calls in state.get("on_call", {}).items()}
        self._repeat_second, repeats = state.get("repeats", ["", {}])
        self._repeats = dict(repeats)
        # Added later: a state saved before has neither (nothing pending then).
        self.dids = {c: (did, t) for c, did, t in state.get("dids", [])}
        self.dialling = dict(state.get("dialling", {}))


def _with_agent(r: QueueLogRecord, agent: str) -> QueueLogRecord:
    # The text (and so the ids) stays the line's own.
    return QueueLogRecord(r.time, r.call_id, r.queue, agent, r.event, r.data, r.text)


class _Emitter:
    """Builds the events of one record, numbering them for their ids."""

    def __init__(self, mapper: QueueLogMapper, record: QueueLogRecord):
        self.mapper = mapper
        self.record = record
        self.events: list[Timed] = []
        self._id_parts: tuple[str, ...] | None = None

    def __call__(self, event_type: str, t: float, /, **fields: Any) -> None:
        if self._id_parts is None:
            self._id_parts = self.mapper._id_parts(self.record)
        eid = event_id(self.mapper.source, *self._id_parts[:1], len(self.events), *self._id_parts[1:])
        self.events.append((t, make_event(event_type, t, self.mapper.source, eid, **fields)))


# Handlers: one per queue_log event (or family), in the order of a call's life, then agents.


def _needs(m: QueueLogMapper, r: QueueLogRecord, *, call: bool = True, queue: bool = True, agent: bool = False) -> bool:
    """Whether the fields this event needs are there; if not, the line is counted as skipped."""
    for wanted, value, name in ((call, r.call_id, "call_id"), (queue, r.queue, "queue"), (agent, r.agent, "agent")):
        if wanted and value in NO_VALUE:
            m._skip(f"no_{name}:{r.event}", m._example(r))
            return False
    return True


def _on_enterqueue(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # ENTERQUEUE(url|callerid|position). Asterisk logs no priority, so none is sent.
    if not _needs(m, r):
        return
    key = (r.queue, r.call_id)
    m.waiting[key] = r.time
    m.ring_attempts.pop(key, None)
    caller = r.field(2)
    keep_caller = m.include_caller and 0 < len(caller) <= 64
    emit("call.offered", r.time, queue=r.queue, call_id=r.call_id, caller=caller if keep_caller else None,
         attributes=_did_attributes(m, r.call_id))


def _did_attributes(m: QueueLogMapper, call_id: str) -> dict | None:
    """The attributes of a call's call.offered: the number it came in on, if a DID line said so."""
    did = m.dids.pop(call_id, None)
    return {"did": did[0]} if did else None


def _on_did(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # DID(number): written by the FreePBX dialplan (QueueLog) just before the call enters the queue,
    # with the number the call came in on: the centre's own number, not the caller's. It is carried as
    # attributes.did on the call.offered that follows. Empty for a call dialled from inside (no DID).
    if not _needs(m, r, queue=False):
        return
    did = r.field(1).strip()
    if len(did) > MAX_DID:
        m._skip("field_too_long:did", m._example(r))
    elif did:
        m.dids[r.call_id] = (did, r.time)


def _on_refused(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # FULL / JOINEMPTY / CLOSED ...: the call came to the queue and was turned away before
    # queueing, so it is an offered call that left at once (wait 0) for that reason.
    if not _needs(m, r):
        return
    key = (r.queue, r.call_id)
    attributes = {"asterisk_event": r.event}
    if key not in m.waiting:
        emit("call.offered", r.time, queue=r.queue, call_id=r.call_id, attributes=_did_attributes(m, r.call_id))
    m.waiting.pop(key, None)
    m.ring_attempts.pop(key, None)
    emit("call.flowed_out", r.time, queue=r.queue, call_id=r.call_id, reason=REFUSED_REASONS[r.event],
         attributes=attributes)


def _next_ring_attempt(m: QueueLogMapper, r: QueueLogRecord) -> int:
    """Count one more ring attempt of the call in its queue (the member serves it); its number."""
    key = (r.queue, r.call_id)
    attempt = m.ring_attempts[key] = m.ring_attempts.get(key, 0) + 1
    m._learn_queue(r.agent, r.queue)
    return attempt


def _on_ring_ended(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # RINGNOANSWER(ms) / RINGCANCELED(ms): one ring attempt at a member ended unanswered. The
    # ring's start is not logged, so no call.ringing is sent.
    if not _needs(m, r, agent=True):
        return
    attempt = _next_ring_attempt(m, r)
    ms = _number(r.field(1))
    emit("call.ring_no_answer", r.time, queue=r.queue, call_id=r.call_id, agent_id=r.agent, attempt=attempt,
         ring_seconds=None if ms is None else ms / 1000.0,
         attributes={"canceled": True} if r.event == "RINGCANCELED" else None)


def _on_agent_dump(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # AGENTDUMP (no data): the member answered its phone and hung up during the announcement played
    # to it, before the bridge. app_queue writes it instead of CONNECT, leaves the caller in the queue
    # (it is offered to members again) and counts no call for the member. So it is one more offer
    # that ended unanswered: call.ring_no_answer. The member was never put on_call (that comes with
    # CONNECT), so its state stays what it was: no state event.
    if not _needs(m, r, agent=True):
        return
    attempt = _next_ring_attempt(m, r)
    emit("call.ring_no_answer", r.time, queue=r.queue, call_id=r.call_id, agent_id=r.agent, attempt=attempt,
         attributes={"asterisk_event": "AGENTDUMP"})


def _on_connect(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # CONNECT(holdtime|member uniqueid|ringtime)
    if not _needs(m, r, agent=True):
        return
    key = (r.queue, r.call_id)
    entered = m.waiting.pop(key, None)
    t = m._timed_from(entered, r.field(1), r.time)
    m.ring_attempts.pop(key, None)
    m.talking[key] = t
    m._learn_queue(r.agent, r.queue)
    calls = m.on_call.setdefault(r.agent, [])
    if key not in calls:
        calls.append(key)
    # wait_seconds: the wait the queue computes from this call's call.offered, i.e. the holdtime when
    # the answer is timed at enter time + holdtime (the epoch's wait when it is not, see Times). No
    # ENTERQUEUE seen: no offer to measure from, so no wait_seconds.
    emit("call.answered", t, queue=r.queue, call_id=r.call_id, agent_id=r.agent,
         wait_seconds=None if entered is None else _wait_seconds(entered, t))
    emit("agent.state_changed", t, agent_id=r.agent, queues=list(m.agent_queues[r.agent]), state="on_call")


def _on_complete(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # COMPLETECALLER / COMPLETEAGENT(holdtime|talktime|position)
    if not _needs(m, r):
        return
    key = (r.queue, r.call_id)
    t = m._timed_from(m.talking.pop(key, None), r.field(2), r.time)
    agent = None if r.agent in NO_VALUE else r.agent
    emit("call.ended", t, queue=r.queue, call_id=r.call_id, agent_id=agent,
         ended_by="caller" if r.event == "COMPLETECALLER" else "agent")
    if agent is not None:
        m._release_agent(agent, key, t, emit)


def _on_transfer(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # BLINDTRANSFER / TRANSFER(exten|context|holdtime|talktime|position),
    # ATTENDEDTRANSFER(method|method data|holdtime|talktime|position), where the method LINK has two
    # data fields (the two channels linked), so its holdtime and talktime come one field later.
    if not _needs(m, r, agent=True):
        return
    key = (r.queue, r.call_id)
    talk_field = 5 if r.event == "ATTENDEDTRANSFER" and r.field(1) == "LINK" else 4
    t = m._timed_from(m.talking.pop(key, None), r.field(talk_field), r.time)
    target = attributes = kind = None
    if r.event == "ATTENDEDTRANSFER":
        kind = "attended"
        attributes = {"method": r.field(1)} if r.field(1) else None  # BRIDGE / APP / LINK
    else:
        kind = "blind" if r.event == "BLINDTRANSFER" else None  # old TRANSFER does not say
        exten, context = r.field(1), r.field(2)
        if exten and (m.include_caller or not _PHONE_LIKE.fullmatch(exten)):
            target = (f"{exten}@{context}" if context else exten)[:MAX_FIELD]
    emit("call.transferred", t, queue=r.queue, call_id=r.call_id, agent_id=r.agent, kind=kind, target=target,
         attributes=attributes)
    m._release_agent(r.agent, key, t, emit)


def _on_abandon(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # ABANDON(position|origposition|waittime)
    if not _needs(m, r):
        return
    key = (r.queue, r.call_id)
    t = m._timed_from(m.waiting.pop(key, None), r.field(3), r.time)
    m.ring_attempts.pop(key, None)
    emit("call.abandoned", t, queue=r.queue, call_id=r.call_id)


def _on_wait_exit(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # EXITWITHTIMEOUT / EXITEMPTY (position|origposition|waittime), EXITWITHKEY(key|position|
    # origposition|waittime), WITHDRAW(position|origposition|waittime|info): the call left unanswered,
    # without the caller hanging up.
    if not _needs(m, r):
        return
    reason, wait_field = WAIT_EXITS[r.event]
    key = (r.queue, r.call_id)
    t = m._timed_from(m.waiting.pop(key, None), r.field(wait_field), r.time)
    m.ring_attempts.pop(key, None)
    key_pressed = r.field(1) if r.event == "EXITWITHKEY" and r.field(1) else None
    emit("call.flowed_out", t, queue=r.queue, call_id=r.call_id, reason=reason,
         attributes={"key": key_pressed} if key_pressed else None)


def _on_outdial(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # OUTDIAL(number): a callback-agent dialplan starts a dial-out. Its result line (below) follows
    # on the same call id and carries the outcome; the dial's time gives that attempt its duration.
    if not _needs(m, r, queue=False):
        return
    m.dialling[r.call_id] = r.time


def _on_outbound(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # OUTANSWER / OUTCANCEL / ... (number[|how it ended]): a dial-out attempt's result, written by
    # callback-agent dialplans after OUTDIAL. OUTANSWER is written when the call ends, so the time
    # from the OUTDIAL is the whole call; for the others, how long the attempt took to fail.
    if not _needs(m, r, queue=False):
        return
    number = r.field(1)
    dialled = m.dialling.pop(r.call_id, None)
    attributes = None
    if dialled is not None and 0 <= r.time - dialled <= FORGET_CALL_AFTER_SECONDS:
        attributes = {"seconds_from_dial": r.time - dialled}
    emit("call.outbound_attempt", r.time, call_id=r.call_id, result=OUTBOUND_RESULTS[r.event],
         queue=m.outbound_queue if r.queue in NO_VALUE else r.queue, agent_id=None if r.agent in NO_VALUE else r.agent,
         caller=number if m.include_caller and 0 < len(number) <= 64 else None, attributes=attributes)


def _on_member_added(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    if not _needs(m, r, call=False, agent=True):
        return
    m._learn_queue(r.agent, r.queue)
    emit("agent.queue_joined", r.time, agent_id=r.agent, queue=r.queue)


def _on_member_removed(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    if not _needs(m, r, call=False, agent=True):
        return
    queues = m.agent_queues.get(r.agent, [])
    if r.queue in queues:
        queues.remove(r.queue)
    m.paused.get(r.agent, {}).pop(r.queue, None)
    emit("agent.queue_left", r.time, agent_id=r.agent, queue=r.queue)


def _on_login(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    if not _needs(m, r, call=False, queue=False, agent=True):
        return
    m._learn_queue(r.agent, r.queue)
    emit("agent.logged_in", r.time, agent_id=r.agent, queues=list(m.agent_queues.get(r.agent, [])))


def _on_logoff(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # Memberships stay known: the member stays in its queues (unavailable) until REMOVEMEMBER.
    if not _needs(m, r, call=False, queue=False, agent=True):
        return
    m.paused.pop(r.agent, None)
    m.on_call.pop(r.agent, None)
    emit("agent.logged_out", r.time, agent_id=r.agent, queues=list(m.agent_queues.get(r.agent, [])))


def _on_pause(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    # PAUSE(reason) per queue; PAUSEALL for all queues (Asterisk then also writes one PAUSE per
    # queue, so the state is sent twice in the same second: harmless). While the agent is on a
    # call the pause only takes effect when the call ends (it stays on_call until then).
    if not _needs(m, r, call=False, queue=False, agent=True):
        return
    m._learn_queue(r.agent, r.queue)
    queues = m._queues_of(r.agent, r.queue)
    reason = (r.field(1).strip() or "paused")[:MAX_REASON]
    paused = m.paused.setdefault(r.agent, {})
    for q in queues:
        paused[q] = reason
    if r.agent not in m.on_call:
        emit("agent.state_changed", r.time, agent_id=r.agent, queues=queues, state="not_ready", reason=reason)


def _on_unpause(m: QueueLogMapper, r: QueueLogRecord, emit: _Emitter) -> None:
    if not _needs(m, r, call=False, queue=False, agent=True):
        return
    m._learn_queue(r.agent, r.queue)
    queues = m._queues_of(r.agent, r.queue)
    paused = m.paused.get(r.agent, {})
    for q in queues:
        paused.pop(q, None)
    if not paused:
        m.paused.pop(r.agent, None)
    if r.agent not in m.on_call:
        emit("agent.state_changed", r.time, agent_id=r.agent, queues=queues, state="available")


_HANDLERS = {
    "DID": _on_did,
    "ENTERQUEUE": _on_enterqueue,
    **{name: _on_refused for name in REFUSED_REASONS},
    "RINGNOANSWER": _on_ring_ended,
    "RINGCANCELED": _on_ring_ended,
    "AGENTDUMP": _on_agent_dump,
    "CONNECT": _on_connect,
    "COMPLETECALLER": _on_complete,
    "COMPLETEAGENT": _on_complete,
    **{name: _on_transfer for name in TRANSFERS},
    "ABANDON": _on_abandon,
    **{name: _on_wait_exit for name in WAIT_EXITS},
    "OUTDIAL": _on_outdial,
    **{name: _on_outbound for name in OUTBOUND_RESULTS},
    "ADDMEMBER": _on_member_added,
    "REMOVEMEMBER": _on_member_removed,
    **{name: _on_login for name in LOGINS},
    **{name: _on_logoff for name in LOGOFFS},
    "PAUSE": _on_pause,
    "PAUSEALL": _on_pause,
    "UNPAUSE": _on_unpause,
    "UNPAUSEALL": _on_unpause,
}

# ---- 3. whole files --------------------------------------------------------------------------


class InTimeOrder:
    """Puts events back in time order when no event comes more than `window` seconds before the
    newest line time seen so far (true for a time-ordered queue_log: derived times are at most
    MAX_CLOCK_SLIP_SECONDS before their line's epoch)."""

    def __init__(self, window: float = MAX_CLOCK_SLIP_SECONDS):
        self.window = window
        self._heap: list[tuple[float, int, dict]] = []
        self._seq = 0
        self._newest = float("-inf")

    def push(self, line_time: float, events: Iterable[Timed]) -> None:
        self._newest = max(self._newest, line_time)
        for t, e in events:
            heapq.heappush(self._heap, (t, self._seq, e))
            self._seq += 1

    def ready(self) -> Iterator[dict]:
        """The events no later line can precede."""
        limit = self._newest - self.window
        while self._heap and self._heap[0][0] < limit:
            yield heapq.heappop(self._heap)[2]

    def rest(self) -> Iterator[dict]:
        while self._heap:
            yield heapq.heappop(self._heap)[2]


class FileImport:
    """An iterator over the events of a queue_log stream; `skips` and `lines` are complete once
    it is exhausted."""

    def __init__(self, stream: BinaryIO, mapper: QueueLogMapper, close: bool = False):
        self.mapper = mapper
        self._stream = stream
        self._close = close
        self._events = self._generate()

    @property
    def skips(self) -> Skips:
        return self.mapper.skips

    @property
    def lines(self) -> int:
        return self.mapper.lines

    def __iter__(self) -> FileImport:
        return self

    def __next__(self) -> dict:
        return next(self._events)

    def _generate(self) -> Iterator[dict]:
        order = InTimeOrder()
        pending = bytearray()
        try:
            while True:
                chunk = self._stream.read(READ_CHUNK)
                if not chunk:
                    break
                searched = len(pending)
                # A run of NUL bytes (crash, copy-truncate) shrinks to one as it is read: it still
                # counts as one run and one line break, and a long run costs no more than its reading.
                pending += _NUL_RUN.sub(b"\x00", chunk)
                if pending.find(b"\n", searched) < 0:
                    continue  # only the new bytes are searched: a long line is not re-scanned
                *complete, rest = bytes(pending).split(b"\n")
                pending = bytearray(rest)
                for raw in complete:
                    order.push(self.mapper.last_line_time, self.mapper.map_raw_line(raw))
                    yield from order.ready()
            if pending:  # a last line without its newline is still a line in a finished file
                last_line = bytes(pending)
                order.push(self.mapper.last_line_time, self.mapper.map_raw_line(last_line))
            yield from order.rest()
        finally:
            if self._close:
                self._stream.close()


def read_stream(stream: BinaryIO, source: str, **mapper_options: Any) -> FileImport:
    """Events of a binary queue_log stream (e.g. ``io.BytesIO``); options go to QueueLogMapper."""
    return FileImport(stream, QueueLogMapper(source, **mapper_options))


def read_file(path: str | Path, source: str, **mapper_options: Any) -> FileImport:
    """Batch import of one queue_log file: an iterator of events in time order, with `.skips`.

    Options go to `QueueLogMapper` (`include_caller`, `agent_aliases`)."""
    return FileImport(open(path, "rb"), QueueLogMapper(source, **mapper_options), close=True)


def read_rows(rows: Iterable[Mapping[str, Any] | Sequence[Any]], source: str, timezone: str = "UTC",
              **mapper_options: Any) -> tuple[list[dict], Skips]:
    """Events of realtime queue_log rows (a database query's result, in any order), sorted by time."""
    mapper = QueueLogMapper(source, **mapper_options)
    records: list[QueueLogRecord] = []
    for row in rows:
        mapper.lines += 1
        try:
            records.append(parse_row(row, timezone))
        except MalformedLine as bad:
            mapper._skip(bad.reason, bad.example)
    records.sort(key=lambda r: r.time)  # the mapper needs a call's lines in order; stable for ties
    timed = [te for r in records for te in mapper.map_timed(r)]
    timed.sort(key=lambda te: te[0])  # stable: the events of one row keep their order
    return [e for _, e in timed], mapper.skips
