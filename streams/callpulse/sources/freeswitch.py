"""FreeSWITCH mod_callcenter -> canonical events, over the event socket (inbound ESL, plain events).

The protocol (mod_event_socket): on connect the switch sends ``Content-Type: auth/request``; the
client answers ``auth <password>`` and gets a ``command/reply`` whose ``Reply-Text`` is
``+OK accepted`` or ``-ERR invalid``. ``event plain HEARTBEAT CUSTOM callcenter::info`` subscribes
(``+OK event listener enabled plain``); ``api <command>`` is answered by an ``api/response`` frame.
Every frame is a block of ``Name: value`` lines ended by a blank line, followed by a body of exactly
``Content-Length`` bytes when that header is present. An event's body (``text/event-plain``) is
itself a header block whose values are URL-encoded, possibly followed by the event's own body.

Every event carries ``Event-Date-Timestamp`` (microseconds since the epoch): that is the time of the
canonical events it becomes. mod_callcenter's ``CC-*-Time`` headers are whole epoch seconds; they
are used only to rebuild what was missed (an offer whose ``member-queue-start`` was never seen).

Mapping of ``callcenter::info`` events (``CC-Action``), as read in ``mod_callcenter.c``:

| CC-Action | condition | canonical events |
|---|---|---|
| `member-queue-start`, `member-queue-resume` | | `call.offered` (call_id = `CC-Member-Session-UUID`, the caller's channel) |
| `agent-offering` | | `call.ringing` (`attempt` = n-th offer of this caller in this queue) |
| `bridge-agent-fail` | | `call.ring_no_answer` (same `attempt`, `ring_seconds`, `hangup_cause` attribute) |
| `bridge-agent-start` | | agent `on_call`; `call.answered` once the bridge is confirmed (below) |
| `agent-state-change` | `In a queue call` | confirms the bridge: `call.answered` at the `bridge-agent-start` time, `wait_seconds` = that time minus the `call.offered` time |
| `bridge-agent-end` | bridged | `call.answered` if not yet confirmed, `call.ended`; agent `wrap_up` (wrap-up time > 0 or *On Demand*) else `available` |
| `bridge-agent-end` | `CC-Agent-Bridged: false` | no outcome (the caller waits on, or a `member-queue-end` follows); agent `available` |
| `member-queue-end` | `Terminated` | nothing new (`call.ended` only if `bridge-agent-end` was missed) |
| `member-queue-end` | `Cancel` + `NONE` or `BREAK_OUT` | `call.abandoned` |
| `member-queue-end` | `Cancel` + `TIMEOUT` / `EXIT_WITH_KEY` / `NO_AGENT_TIMEOUT` | `call.flowed_out` reason `timeout` / `exit_key` / `no_agents` |
| `agent-status-change` | `Available`, `Available (On Demand)` | `agent.state_changed` `available` (after `agent.logged_in` when it was `Logged Out`) |
| `agent-status-change` | `On Break` | `agent.state_changed` `not_ready`, reason `On Break` |
| `agent-status-change` | `Logged Out` | `agent.logged_out` |
| `agent-state-change` | `Idle` | `wrap_up` after a call (*On Demand* agents), else `not_ready` reason `Idle` |
| `agent-state-change` | `Waiting` | ends an *On Demand* wrap-up: `call.wrapup_ended` + `available` |
| (wrap-up timer) | bridge end + agent's `wrap_up_time` | `call.wrapup_ended` + `available` |
| `members-count` and the rest | | nothing (counted in `Skips`) |

Why ``NONE`` and ``BREAK_OUT`` are abandons: ``callcenter_function`` sets ``BREAK_OUT`` when the wait
loop ends with no agent found and no timeout or exit key, i.e. the caller's channel stopped being
ready (hung up; a transfer of the waiting caller by the switch looks the same). ``NONE`` survives to
a ``Cancel`` only when an agent *was* found but the caller's channel was already down: the caller hung
up while the agent was being connected, and never talked to anyone. That is also why ``call.answered``
waits for the bridge to be confirmed: ``bridge-agent-start`` is fired *before* the bridge is tried.

Agent events need the agent's queues: they come from ``callcenter_config tier list`` at each
(re)connection plus the queues of the calls the agent is offered. Agents in no monitored queue are
tracked but produce nothing (counted in `Skips`).

Event ids are name-based (`event_id`) on stable fields, so a reconnection, a re-sync or a replay of a
capture never mints a new id for the same fact: a call's offer, answer, end and wait outcome from
(queue, member UUID, session UUID); rings and agent changes from the FreeSWITCH event's own
timestamp and sequence number. The ids already published are remembered (bounded) and not sent again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

from . import Batch, Skips, event_id, make_event

log = logging.getLogger(__name__)

CALLCENTER_SUBCLASS = "callcenter::info"
SUBSCRIBE_COMMAND = "event plain HEARTBEAT CUSTOM callcenter::info"  # heartbeats: liveness and clock


class FreeswitchError(Exception):
    """A problem talking to FreeSWITCH."""


class FreeswitchAuthError(FreeswitchError):
    """The event socket refused us (password or ACL): fatal, retrying would not help."""


class FreeswitchApiError(FreeswitchError):
    """A `callcenter_config` command failed (mod_callcenter not loaded?): fatal."""


class ConnectionLost(FreeswitchError):
    """The connection ended or broke: the live source reconnects."""


# ---- 1. ESL framing (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One event-socket frame: its (outer, not URL-encoded) headers and its body."""

    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")


class FrameParser:
    """Bytes in, complete frames out; keeps partial frames across `feed` calls (any split works)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._headers: dict[str, str] | None = None  # headers of a frame whose body is still coming
        self._body_length = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while True:
            if self._headers is None:
                block = self._take_header_block()
                if block is None:
                    break
                headers = _parse_header_lines(block, decode_values=False)
                if not headers:
                    continue  # stray blank line between frames
                length = headers.get("Content-Length", "0").strip()
                if not length.isdigit():
                    raise FreeswitchError(f"bad Content-Length {length[:20]!r} in an event-socket frame")
                self._headers, self._body_length = headers, int(length)
            if len(self._buffer) < self._body_length:
                break
            body = bytes(self._buffer[: self._body_length])
            del self._buffer[: self._body_length]
            frames.append(Frame(self._headers, body))
            self._headers = None
        return frames

    def pending(self) -> bool:
        """True while part of a frame is buffered (a capture that ends mid-frame)."""
        return bool(self._buffer) or self._headers is not None

    def _take_header_block(self) -> bytes | None:
        """The header block up to its blank line (LF or CRLF line ends), or None if incomplete."""
        lf = self._buffer.find(b"\n\n")
        # A CRLF block end can only come first if it starts before the first LF one: bound the search
        # (a whole capture can sit in the buffer; searching all of it per frame would be quadratic).
        crlf = self._buffer.find(b"\r\n\r\n", 0, lf + 3 if lf >= 0 else len(self._buffer))
        if crlf >= 0:
            end, sep = crlf, 4
        elif lf >= 0:
            end, sep = lf, 2
        else:
            return None
        block = bytes(self._buffer[:end])
        del self._buffer[: end + sep]
        return block


def _parse_header_lines(block: bytes, decode_values: bool) -> dict[str, str]:
    headers = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        line = line.rstrip("\r")
        name, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        # FreeSWITCH URL-encodes event values with %XX only ('+' stays '+'), so no unquote_plus.
        headers[name.strip()] = unquote(value, errors="replace") if decode_values else value
    return headers


def parse_event_plain(body: bytes) -> dict[str, str]:
    """The headers of a ``text/event-plain`` body, URL-decoded; an event's own body under ``_body``."""
    head, sep, rest = body.partition(b"\n\n")
    headers = _parse_header_lines(head, decode_values=True)
    if sep and "Content-Length" in headers and headers["Content-Length"].isdigit():
        headers["_body"] = rest[: int(headers["Content-Length"])].decode("utf-8", "replace")
    return headers


def encode_event_plain(headers: Mapping[str, str]) -> bytes:
    """The inverse of `parse_event_plain` (used by tests and tools): URL-encoded header lines."""
    return b"".join(f"{k}: {quote(str(v), safe='')}\n".encode() for k, v in headers.items()) + b"\n"


# ---- 2. callcenter_config tables (pure) -----------------------------------------------------


def parse_table(text: str, free_column: str | None = None, skips: Skips | None = None) -> list[dict[str, str]]:
    """Rows of a ``callcenter_config ... list`` answer: a ``|``-separated header row, the rows, ``+OK``.

    mod_callcenter writes the header only when there is a row, so ``+OK`` alone is an empty table.
    Values are not escaped: a row with more fields than the header has ``|`` inside a value, which
    can only be put back when a single column can hold one (`free_column`: an agent's dial string,
    a caller's name); other such rows are skipped. Raises ValueError on ``-ERR`` or a missing ``+OK``.
    """
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0].startswith(("-ERR", "-USAGE")):
        raise ValueError(lines[0] if lines else "empty answer")
    if lines[-1] != "+OK":
        raise ValueError(f"answer does not end with +OK: {lines[-1][:80]!r}")
    if len(lines) == 1:
        return []
    columns = lines[0].split("|")
    rows = []
    for line in lines[1:-1]:
        fields = line.split("|")
        extra = len(fields) - len(columns)
        if extra > 0 and free_column in columns:
            at = columns.index(free_column)
            fields = fields[:at] + ["|".join(fields[at : at + extra + 1])] + fields[at + extra + 1 :]
        if len(fields) != len(columns):
            if skips is not None:
                skips.add("callcenter_config row with a '|' inside a value", columns[0])
            continue
        rows.append(dict(zip(columns, fields)))
    return rows


def classify_answer(text: str) -> str | None:
    """Which sync answer a body is, from its header row (to replay captures): now, queues,
    members, agents, tiers; None for ``+OK`` alone (an empty table) or anything else."""
    first = text.split("\n", 1)[0].strip()
    if first.isdigit():
        return "now"
    if first.startswith("name|strategy|"):
        return "queues"
    if "|session_uuid|" in first and "|joined_epoch|" in first:
        return "members"
    if first.startswith("name|") and "|contact|" in first and "|status|" in first:
        return "agents"
    if first.startswith("queue|agent|"):
        return "tiers"
    return None


@dataclass
class Snapshot:
    """What the switch holds at (re)connection: the sync's input to `CallcenterMapper.sync`."""

    now: float  # FreeSWITCH's clock (`api strepoch`), the time of the agent states it sets
    queues: list[str]  # the monitored queues whose members were listed
    members: list[dict[str, str]] = field(default_factory=list)
    agents: list[dict[str, str]] = field(default_factory=list)
    tiers: list[dict[str, str]] = field(default_factory=list)


# ---- 3. mapping callcenter::info to canonical events ----------------------------------------

AVAILABLE, ON_DEMAND, ON_BREAK, LOGGED_OUT = "Available", "Available (On Demand)", "On Break", "Logged Out"
WAITING, IN_A_QUEUE_CALL, IDLE = "Waiting", "In a queue call", "Idle"
FLOW_OUT_REASON = {"TIMEOUT": "timeout", "EXIT_WITH_KEY": "exit_key", "NO_AGENT_TIMEOUT": "no_agents"}
ABANDON_REASONS = frozenset(("NONE", "BREAK_OUT"))
WAITING_MEMBER_STATES = frozenset(("Waiting", "Trying"))  # Trying: an agent is being rung


@dataclass
class _Call:
    """A caller in one queue (mod_callcenter's member), from its offer to the end of its wait or talk."""

    queue: str
    member: str  # CC-Member-UUID: one per callcenter app run (kept on member-queue-resume)
    session: str  # CC-Member-Session-UUID: the caller's channel, our call_id
    offered: bool = False
    offered_at: float | None = None  # the time of its call.offered; None when that was a guess (sync "now")
    attempts: int = 0
    rings: dict[str, tuple[float, int]] = field(default_factory=dict)  # agent -> (ring start, attempt)
    # (time, agent, whether the time is known rather than the sync's "now") of a bridge-agent-start
    # not yet confirmed
    held_answer: tuple[float, str, bool] | None = None
    answered: bool = False
    agent: str | None = None


@dataclass
class _WrapUp:
    until: float | None  # None: until the agent sets itself Waiting again (Available (On Demand))
    queue: str | None = None
    call_id: str | None = None


@dataclass
class _Agent:
    name: str
    status: str | None = None  # mod_callcenter's status (Available, On Break, ...); None: unknown
    cc_state: str | None = None  # mod_callcenter's state (Waiting, Receiving, In a queue call, Idle)
    wrap_up_time: float = 0.0
    call: tuple[str, str] | None = None  # (queue, member) of the call it is bridged to
    wrap: _WrapUp | None = None
    queues: set[str] = field(default_factory=set)
    published: tuple[str, str | None] | None = None  # canonical (state, reason) last sent


def _seconds(text: str | None) -> float | None:
    """A CC-*-Time / *_epoch value (whole epoch seconds); None when absent or 0."""
    try:
        value = float(text) if text else 0.0
    except ValueError:
        return None
    return value if value > 0 else None


def _wait_seconds(offered: float, answered: float) -> float:
    """call.answered's `wait_seconds`: answered - offered as the model computes it from the two
    events' times, which are written to the millisecond (so the two always agree), never negative
    (a whole-second ``CC-*-Time`` can be up to a second before a microsecond event time)."""
    return max(0, math.floor(answered * 1000.0 + 0.5) - math.floor(offered * 1000.0 + 0.5)) / 1000.0


class CallcenterMapper:
    """Turns callcenter::info events and sync snapshots into canonical events.

    Stateful but free of I/O: the live source and `parse_capture` feed it the same way. Every list it
    returns holds only events whose id it has not returned before (the last `remember_ids` ids).
    """

    def __init__(self, source: str, queues: Iterable[str] | None = None, include_caller: bool = False,
                 remember_ids: int = 100_000, skips: Skips | None = None):
        self.source = source
        self.queues = frozenset(queues) if queues is not None else None  # None: every queue
        self.include_caller = include_caller
        self.skips = skips if skips is not None else Skips()
        self.calls: dict[tuple[str, str], _Call] = {}
        self.agents: dict[str, _Agent] = {}
        self.gauge_mismatches = 0  # members-count values that disagree with the calls we track
        self._remember = remember_ids
        self._published: OrderedDict[str, None] = OrderedDict()
        self._timed_wrapups: dict[str, float] = {}  # agent -> wrap-up end
        self._handlers = {
            "member-queue-start": self._on_member_start,
            "member-queue-resume": self._on_member_start,
            "agent-offering": self._on_offering,
            "bridge-agent-fail": self._on_bridge_fail,
            "bridge-agent-start": self._on_bridge_start,
            "bridge-agent-end": self._on_bridge_end,
            "member-queue-end": self._on_member_end,
            "agent-status-change": self._on_agent_status,
            "agent-state-change": self._on_agent_state,
            "members-count": self._on_members_count,
        }

    def monitors(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    # ---- entry points --------------------------------------------------------------------

    def map_event(self, headers: Mapping[str, str]) -> list[dict]:
        """Canonical events for one FreeSWITCH event (decoded headers), due wrap-up ends first."""
        t = self._event_time(headers)
        if t is None:
            self.skips.add("event without Event-Date-Timestamp", headers.get("CC-Action", headers.get("Event-Name", "")))
            return []
        out = self._due(t)
        if headers.get("Event-Name") == "HEARTBEAT":
            return self._fresh(out)  # only moves the clock (wrap-up timers)
        if headers.get("Event-Name") != "CUSTOM" or headers.get("Event-Subclass") != CALLCENTER_SUBCLASS:
            self.skips.add("not a callcenter::info event", headers.get("Event-Name", ""))
            return self._fresh(out)
        action = headers.get("CC-Action", "")
        handler = self._handlers.get(action)
        if handler is None:
            self.skips.add("CC-Action with no canonical event", action)
        else:
            stamp = f"{headers.get('Event-Date-Timestamp')}/{headers.get('Event-Sequence', '')}"
            try:
                out += handler(headers, t, stamp)
            except Exception as exc:  # a surprise in one event must not stop the stream
                self.skips.add("event the mapper failed on", f"{action}: {type(exc).__name__}")
                log.exception("mapping %s failed (headers not logged: they hold caller data)", action)
        return self._fresh(out)

    def due(self, now: float) -> list[dict]:
        """Wrap-up ends whose time has come by `now` (FreeSWITCH clock)."""
        return self._fresh(self._due(now))

    def sync(self, snap: Snapshot) -> list[dict]:
        """Canonical events for what a snapshot shows and was not published yet: callers already
        waiting or talking, agents' current states (at the snapshot's time), tier changes."""
        out: list[dict] = []
        trigger = ("sync", repr(snap.now))
        # Tiers first, so agent events find their queues. Tiers are authoritative: mod_callcenter
        # offers calls to agents through tiers only.
        tier_queues: dict[str, set[str]] = {}
        for row in snap.tiers:
            if self.monitors(row.get("queue", "")) and row.get("agent"):
                tier_queues.setdefault(row["agent"], set()).add(row["queue"])
        for name in sorted(set(tier_queues) | {a.name for a in self.agents.values() if a.queues}):
            out += self._set_queues(self._agent(name), tier_queues.get(name, set()), snap.now, trigger)

        present = set()
        for row in snap.members:
            queue, member, session = row.get("queue", ""), row.get("uuid", ""), row.get("session_uuid", "")
            state = row.get("state", "")
            if not (self.monitors(queue) and member and session) or state not in WAITING_MEMBER_STATES | {"Answered"}:
                continue  # Abandoned rows are history kept for abandoned-resume-allowed
            key = (queue, member)
            present.add(key)
            call = self.calls.get(key)
            if call is None or call.session != session:
                call = self.calls[key] = _Call(queue, member, session)
            if not call.offered:
                joined = _seconds(row.get("rejoined_epoch")) or _seconds(row.get("joined_epoch"))
                out += self._offer(call, joined or snap.now, row.get("cid_number"), known=joined is not None)
            if state == "Answered" and not call.answered and row.get("serving_agent"):
                bridged = _seconds(row.get("bridge_epoch"))
                call.held_answer = (bridged or snap.now, row["serving_agent"], bridged is not None)
                out += self._confirm_answer(call)
                self._agent(row["serving_agent"]).call = key

        agents_by_name = {row["name"]: row for row in snap.agents if row.get("name")}
        listed = set(snap.queues)
        for key in [k for k in self.calls if k[0] in listed and k not in present]:
            out += self._lost_while_away(self.calls[key], agents_by_name)

        for name, row in agents_by_name.items():
            agent = self._agent(name)
            agent.status, agent.cc_state = row.get("status") or None, row.get("state") or None
            agent.wrap_up_time = _seconds(row.get("wrap_up_time")) or 0.0
            bridge_end = _seconds(row.get("last_bridge_end"))
            if (agent.call is None and agent.wrap is None and bridge_end and agent.cc_state == WAITING
                    and bridge_end + agent.wrap_up_time > snap.now):
                self._start_wrap(agent, _WrapUp(bridge_end + agent.wrap_up_time))  # still in wrap-up
            out += self._publish_agent(agent, snap.now, trigger)
        return self._fresh(out)

    # ---- call events ---------------------------------------------------------------------

    def _call_of(self, h: Mapping[str, str]) -> _Call | None:
        """The tracked call the event is about (created if new), or None if it cannot be mapped."""
        queue, member, session = h.get("CC-Queue", ""), h.get("CC-Member-UUID", ""), h.get("CC-Member-Session-UUID", "")
        if not (queue and member and session):
            self.skips.add("member event without CC-Queue / CC-Member-UUID / CC-Member-Session-UUID", h.get("CC-Action", ""))
            return None
        if not self.monitors(queue):
            self.skips.add("queue not monitored", queue)
            return None
        call = self.calls.get((queue, member))
        if call is None or call.session != session:  # a resumed member comes back on a new channel
            call = self.calls[(queue, member)] = _Call(queue, member, session)
        return call

    def _offer(self, call: _Call, t: float, caller: str | None, known: bool = True) -> list[dict]:
        call.offered = True
        call.offered_at = t if known else None
        caller = caller if self.include_caller and caller and len(caller) <= 64 else None
        return [self._call_event("call.offered", t, call, "offered", caller=caller)]

    def _offer_if_missed(self, call: _Call, h: Mapping[str, str]) -> list[dict]:
        """An offer rebuilt from CC-Member-Joined-Time when member-queue-start was not seen."""
        joined = _seconds(h.get("CC-Member-Joined-Time"))
        if call.offered or joined is None:
            return []
        return self._offer(call, joined, h.get("CC-Member-CID-Number"))

    def _on_member_start(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        call = self._call_of(h)
        return self._offer(call, t, h.get("CC-Member-CID-Number")) if call else []

    def _on_offering(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        call, agent = self._call_of(h), h.get("CC-Agent", "")
        if call is None or not agent:
            return []
        out = self._learn_queue(agent, call.queue, t, stamp)
        call.attempts += 1
        call.rings[agent] = (t, call.attempts)
        out.append(self._call_event("call.ringing", t, call, "ringing", agent, stamp, agent_id=agent, attempt=call.attempts))
        return out

    def _on_bridge_fail(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        call, agent = self._call_of(h), h.get("CC-Agent", "")
        if call is None or not agent:
            return []
        out = self._offer_if_missed(call, h)
        ring = call.rings.pop(agent, None)
        if ring is None:
            call.attempts += 1
            called, aborted = _seconds(h.get("CC-Agent-Called-Time")), _seconds(h.get("CC-Agent-Aborted-Time"))
            ring_seconds = max(0.0, aborted - called) if called and aborted else None
            attempt = call.attempts
        else:
            ring_seconds, attempt = max(0.0, t - ring[0]), ring[1]
        cause = h.get("CC-Hangup-Cause", "")
        out.append(self._call_event("call.ring_no_answer", t, call, "ring_no_answer", agent, stamp, agent_id=agent,
                                    attempt=attempt, ring_seconds=None if ring_seconds is None else round(ring_seconds, 3),
                                    attributes={"hangup_cause": cause[:128]} if cause else None))
        return out

    def _on_bridge_start(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        call, name = self._call_of(h), h.get("CC-Agent", "")
        if call is None or not name:
            return []
        out = self._offer_if_missed(call, h) + self._learn_queue(name, call.queue, t, stamp)
        call.rings.pop(name, None)
        call.held_answer = (t, name, True)  # confirmed by the bridge (see the module docstring)
        agent = self._agent(name)
        out += self._end_wrap(agent, t)
        agent.call = (call.queue, call.member)
        return out + self._publish_agent(agent, t, (stamp,))

    def _on_bridge_end(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        call, name = self._call_of(h), h.get("CC-Agent", "")
        if call is None or not name:
            return []
        bridged = h.get("CC-Agent-Bridged", "true") != "false"  # older versions do not send it
        out = self._offer_if_missed(call, h)
        if bridged:
            out += self._confirm_answer(call) or self._answer_if_missed(call, h)
        agent = self._agent(name)
        if agent.call == (call.queue, call.member):
            agent.call = None
        agent.cc_state = WAITING  # mod_callcenter sets Waiting (or Idle) right after
        if call.answered:
            out.append(self._call_event("call.ended", t, call, "ended", agent_id=name))
            if agent.status == ON_DEMAND:
                self._start_wrap(agent, _WrapUp(None, call.queue, call.session))
            elif agent.wrap_up_time > 0:
                self._start_wrap(agent, _WrapUp(t + agent.wrap_up_time, call.queue, call.session))
            self._forget(call)
        else:
            call.held_answer = None  # the bridge failed: the caller waits on, or hung up (member-queue-end)
        return out + self._publish_agent(agent, t, (stamp,))

    def _on_member_end(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        call = self._call_of(h)
        if call is None:
            return []
        cause, reason = h.get("CC-Cause", ""), h.get("CC-Cancel-Reason", "NONE")
        out = self._offer_if_missed(call, h)
        if cause == "Terminated":  # after a bridged call; normally already ended by bridge-agent-end
            out += self._confirm_answer(call) or self._answer_if_missed(call, h)
            if call.answered:
                out.append(self._call_event("call.ended", t, call, "ended", agent_id=call.agent))
            self._forget(call)
        elif cause == "Cancel":
            if call.answered:
                self.skips.add("member-queue-end Cancel after a confirmed bridge", reason)
                return out
            call.held_answer = None  # an agent answered but the caller was gone: never talked
            attributes = {"cancel_reason": reason[:128]}
            if reason in FLOW_OUT_REASON:
                out.append(self._call_event("call.flowed_out", t, call, "wait_ended", reason=FLOW_OUT_REASON[reason],
                                            attributes=attributes))
            else:
                if reason not in ABANDON_REASONS:
                    self.skips.add("unknown CC-Cancel-Reason (counted as abandoned)", reason)
                out.append(self._call_event("call.abandoned", t, call, "wait_ended", attributes=attributes))
            self._forget(call)
        else:
            self.skips.add("member-queue-end with unknown CC-Cause", cause)
        return out

    def _on_members_count(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        # A gauge, not an event. It counts Waiting and Trying members, which we can compare.
        self.skips.add("members-count (a gauge, not an event)", h.get("CC-Queue", ""))
        queue = h.get("CC-Queue", "")
        if h.get("CC-Selection") == "Single-Queue" and self.monitors(queue) and h.get("CC-Count", "").isdigit():
            waiting = sum(1 for c in self.calls.values() if c.queue == queue and not c.answered and c.held_answer is None)
            if waiting != int(h["CC-Count"]):
                self.gauge_mismatches += 1
                log.debug("members-count of %s says %s waiting, %d tracked", queue, h["CC-Count"], waiting)
        return []

    def _confirm_answer(self, call: _Call) -> list[dict]:
        if call.held_answer is None or call.answered:
            return []
        t, agent, known = call.held_answer
        call.held_answer, call.answered, call.agent = None, True, agent
        # The wait the queue computes from the call's call.offered; only when both times are known.
        wait = _wait_seconds(call.offered_at, t) if known and call.offered_at is not None else None
        return [self._call_event("call.answered", t, call, "answered", agent_id=agent, wait_seconds=wait)]

    def _answer_if_missed(self, call: _Call, h: Mapping[str, str]) -> list[dict]:
        """An answer rebuilt from CC-Agent-Answered-Time when bridge-agent-start was not seen."""
        answered, agent = _seconds(h.get("CC-Agent-Answered-Time")), h.get("CC-Agent", "")
        if call.answered or answered is None or not agent:
            return []
        call.held_answer = (answered, agent, True)
        return self._confirm_answer(call)

    def _lost_while_away(self, call: _Call, agent_rows: dict[str, dict[str, str]]) -> list[dict]:
        """A tracked call the snapshot no longer shows: it ended while we were disconnected."""
        out = []
        row = agent_rows.get(call.agent or "", {})
        ended = _seconds(row.get("last_bridge_end"))
        if call.answered and ended:  # the agent's last bridge end is this call's end
            out.append(self._call_event("call.ended", ended, call, "ended", agent_id=call.agent))
        else:
            self.skips.add("call left the queue while disconnected (outcome unknown)", call.queue)
        self._forget(call)
        return out

    def _forget(self, call: _Call) -> None:
        self.calls.pop((call.queue, call.member), None)
        for agent in self.agents.values():
            if agent.call == (call.queue, call.member):
                agent.call = None

    def _call_event(self, kind: str, t: float, call: _Call, role: str, *extra_id: str, **fields) -> dict:
        ident = event_id(self.source, role, call.queue, call.member, call.session, *extra_id)
        return make_event(kind, t, self.source, ident, queue=call.queue, call_id=call.session, **fields)

    # ---- agent events --------------------------------------------------------------------

    def _agent(self, name: str) -> _Agent:
        agent = self.agents.get(name)
        if agent is None:
            agent = self.agents[name] = _Agent(name)
        return agent

    def _on_agent_status(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        name, status = h.get("CC-Agent", ""), h.get("CC-Agent-Status", "")
        if not (name and status):
            self.skips.add("agent-status-change without CC-Agent / CC-Agent-Status", name)
            return []
        agent = self._agent(name)
        out = self._end_wrap(agent, t) if status != agent.status else []  # a new status ends wrap-up
        agent.status = status
        return out + self._publish_agent(agent, t, (stamp,))

    def _on_agent_state(self, h: Mapping[str, str], t: float, stamp: str) -> list[dict]:
        name, state = h.get("CC-Agent", ""), h.get("CC-Agent-State", "")
        if not (name and state):
            self.skips.add("agent-state-change without CC-Agent / CC-Agent-State", name)
            return []
        agent = self._agent(name)
        agent.cc_state = state
        out = []
        if state == IN_A_QUEUE_CALL and agent.call in self.calls:
            out += self._confirm_answer(self.calls[agent.call])  # the bridge is up
        if state == WAITING and agent.wrap is not None and agent.wrap.until is None:
            out += self._end_wrap(agent, t)  # an On Demand agent is ready again
        return out + self._publish_agent(agent, t, (stamp,))

    @staticmethod
    def _canonical(agent: _Agent) -> tuple[str, str | None] | None:
        """The agent's canonical (state, reason), or None while its status is unknown."""
        if agent.status is None:
            return None
        if agent.status == LOGGED_OUT:
            return ("logged_out", None)
        if agent.call is not None or agent.cc_state == IN_A_QUEUE_CALL:
            return ("on_call", None)
        if agent.wrap is not None:
            return ("wrap_up", None)
        if agent.status == ON_BREAK:
            return ("not_ready", ON_BREAK)
        if agent.cc_state == IDLE:
            return ("not_ready", IDLE)
        if agent.status in (AVAILABLE, ON_DEMAND):
            return ("available", None)
        return ("not_ready", agent.status[:64])

    def _publish_agent(self, agent: _Agent, t: float, trigger: tuple[str, ...]) -> list[dict]:
        """The agent events for a change of its canonical state (nothing if it did not change)."""
        new, old = self._canonical(agent), agent.published
        if new is None or new == old:
            return []
        if not agent.queues:
            if new[0] == "logged_out" and old is None:
                agent.published = new  # known logged out: its login will be announced
            else:
                self.skips.add("agent event for an agent in no monitored queue", agent.name)
            return []
        agent.published = new
        if new[0] == "logged_out":
            return [] if old is None else [self._agent_event("agent.logged_out", t, agent, trigger)]
        out = []
        if old is not None and old[0] == "logged_out":
            out.append(self._agent_event("agent.logged_in", t, agent, trigger))
        state, reason = new
        was = f"{old[0]}/{old[1] or ''}" if old else ""  # in the id too: a re-sync in the same second differs
        out.append(self._agent_event("agent.state_changed", t, agent, (state, reason or "", was, *trigger),
                                     state=state, reason=reason))
        return out

    @staticmethod
    def _is_staffed(agent: _Agent) -> bool:
        return agent.published is not None and agent.published[0] != "logged_out"

    def _set_queues(self, agent: _Agent, queues: set[str], t: float, trigger: tuple[str, ...]) -> list[dict]:
        out = []
        for queue in sorted(agent.queues - queues):
            agent.queues.discard(queue)
            if self._is_staffed(agent):
                out.append(self._agent_event("agent.queue_left", t, agent, (queue, *trigger), queue=queue))
        for queue in sorted(queues - agent.queues):
            out += self._join_queue(agent, queue, t, trigger)
        return out

    def _learn_queue(self, name: str, queue: str, t: float, stamp: str) -> list[dict]:
        """A queue seen on a call offered to the agent (tiers are re-read only at a sync)."""
        agent = self._agent(name)
        if queue in agent.queues or not self.monitors(queue):
            return []
        return self._join_queue(agent, queue, t, (stamp,))

    def _join_queue(self, agent: _Agent, queue: str, t: float, trigger: tuple[str, ...]) -> list[dict]:
        staffed = self._is_staffed(agent)
        agent.queues.add(queue)
        if not staffed:
            return self._publish_agent(agent, t, trigger)  # its first queue: its state can be told now
        state, reason = agent.published  # type: ignore[misc]
        # queue_joined makes the agent not_ready ("joined") in that queue: restate where it stands.
        return [self._agent_event("agent.queue_joined", t, agent, (queue, *trigger), queue=queue),
                self._agent_event("agent.state_changed", t, agent, ("rejoin", queue, state, *trigger),
                                  state=state, reason=reason)]

    def _agent_event(self, kind: str, t: float, agent: _Agent, id_parts: tuple[str, ...], **fields) -> dict:
        ident = event_id(self.source, kind, agent.name, *id_parts)
        if "queue" not in fields:
            fields["queues"] = sorted(agent.queues)
        return make_event(kind, t, self.source, ident, agent_id=agent.name, **fields)

    # ---- wrap-up -------------------------------------------------------------------------

    def _start_wrap(self, agent: _Agent, wrap: _WrapUp) -> None:
        agent.wrap = wrap
        if wrap.until is not None:
            self._timed_wrapups[agent.name] = wrap.until

    def _end_wrap(self, agent: _Agent, t: float) -> list[dict]:
        """End the agent's wrap-up at t (if any): call.wrapup_ended when the call is known."""
        wrap, agent.wrap = agent.wrap, None
        self._timed_wrapups.pop(agent.name, None)
        if wrap is None or wrap.call_id is None or wrap.queue is None:
            return []
        ident = event_id(self.source, "wrapup_ended", wrap.queue, wrap.call_id, agent.name)
        return [make_event("call.wrapup_ended", t, self.source, ident,
                           queue=wrap.queue, call_id=wrap.call_id, agent_id=agent.name)]

    def _due(self, now: float) -> list[dict]:
        out = []
        for name, until in sorted(self._timed_wrapups.items(), key=lambda kv: kv[1]):
            if until > now:
                break
            agent = self.agents[name]
            out += self._end_wrap(agent, until)
            out += self._publish_agent(agent, until, ("wrap-end", repr(until)))
        return out

    # ---- helpers -------------------------------------------------------------------------

    @staticmethod
    def _event_time(h: Mapping[str, str]) -> float | None:
        stamp = h.get("Event-Date-Timestamp", "")
        return int(stamp) / 1_000_000 if stamp.isdigit() and int(stamp) > 0 else None

    def _fresh(self, events: list[dict]) -> list[dict]:
        """Drop events whose id was already returned; remember the new ones (bounded)."""
        out = []
        for event in events:
            ident = event["event_id"]
            if ident in self._published:
                continue
            self._published[ident] = None
            if len(self._published) > self._remember:
                self._published.popitem(last=False)
            out.append(event)
        return out


def by_time(events: list[dict]) -> list[dict]:
    """Events in time order; events at the same time keep their order (stable sort)."""
    return sorted(events, key=lambda e: e["time"])  # RFC 3339 UTC with ms: text order is time order


# ---- 4. replaying a capture -----------------------------------------------------------------


class _SnapshotParts:
    """Sync answers collected for one connection, assembled into a `Snapshot`."""

    def __init__(self, mapper: CallcenterMapper):
        self.mapper = mapper
        self.now: float | None = None
        self.queue_names: list[str] | None = None
        self.members: list[dict[str, str]] = []
        self.agents: list[dict[str, str]] = []
        self.tiers: list[dict[str, str]] = []

    def add(self, kind: str, text: str) -> None:
        """One answer; raises ValueError if it is an -ERR or malformed."""
        skips = self.mapper.skips
        if kind == "now":
            self.now = float(text.strip())
        elif kind == "queues":
            self.queue_names = [row["name"] for row in parse_table(text, None, skips) if row.get("name")]
        elif kind == "members":
            self.members += parse_table(text, "cid_name", skips)
        elif kind == "agents":
            self.agents += parse_table(text, "contact", skips)
        elif kind == "tiers":
            self.tiers += parse_table(text, None, skips)

    def listed_queues(self) -> list[str]:
        names = self.queue_names if self.queue_names is not None else sorted({r.get("queue", "") for r in self.members})
        return [q for q in names if q and " " not in q and self.mapper.monitors(q)]

    def snapshot(self, fallback_now: float) -> Snapshot:
        now = self.now if self.now is not None else fallback_now
        return Snapshot(now, self.listed_queues(), self.members, self.agents, self.tiers)


def parse_capture(path: str | Path, source: str, queues: Iterable[str] | None = None,
                  include_caller: bool = False, skips: Skips | None = None) -> Iterator[dict]:
    """Canonical events from a recorded event-socket transcript (the bytes the switch sent, one or
    more connections, e.g. what `FreeswitchSource(record_to=...)` writes), in time order.

    Each connection is replayed as the live source handles it: events that arrived before its last
    sync answer first, then the sync, then the rest. Times come from Event-Date-Timestamp.
    """
    mapper = CallcenterMapper(source, queues, include_caller, skips=skips)
    parser = FrameParser()
    frames = parser.feed(Path(path).read_bytes())
    if parser.pending():
        mapper.skips.add("capture ends inside a frame", str(Path(path).name))
    connections: list[list[Frame]] = []
    for frame in frames:
        if frame.content_type == "auth/request" or not connections:
            connections.append([])
        connections[-1].append(frame)
    events: list[dict] = []
    for frames_of_connection in connections:
        events += _replay_connection(mapper, frames_of_connection)
    return iter(by_time(events))


def _replay_connection(mapper: CallcenterMapper, frames: list[Frame]) -> list[dict]:
    answers = [i for i, f in enumerate(frames) if f.content_type == "api/response"]
    last_answer = answers[-1] if answers else -1
    parts, early, out = _SnapshotParts(mapper), [], []
    last_time = 0.0
    for i, frame in enumerate(frames):
        if frame.content_type == "text/event-plain":
            headers = parse_event_plain(frame.body)
            if i < last_answer:
                early.append(headers)
            else:
                out += mapper.map_event(headers)
            last_time = max(last_time, CallcenterMapper._event_time(headers) or 0.0)
        elif frame.content_type == "api/response":
            text = frame.body.decode("utf-8", "replace")
            kind = classify_answer(text)
            if kind is not None:
                try:
                    parts.add(kind, text)
                except ValueError as exc:
                    mapper.skips.add("unusable callcenter_config answer", str(exc))
        if i == last_answer:
            for headers in early:
                out += mapper.map_event(headers)
            out += mapper.sync(parts.snapshot(last_time))
    return out


# ---- 5. the live source ---------------------------------------------------------------------


def backoff_delay(failures: int, low: float, high: float, rng: random.Random) -> float:
    """Seconds to wait before reconnection attempt number failures+1: exponential from `low`,
    capped at `high`, with "equal jitter" (half fixed, half random) so many adapters restarted
    together do not reconnect in lockstep."""
    ceiling = min(high, low * math.pow(2.0, failures))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


class _Connection:
    """One event-socket connection: frames in, commands out; events that arrive while waiting for a
    reply are kept, in order, for whoever reads events next."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: BinaryIO | None):
        self.reader, self.writer, self.record = reader, writer, record
        self.parser = FrameParser()
        self.frames: deque[Frame] = deque()
        self.events: deque[Frame] = deque()

    async def frame(self) -> Frame:
        while not self.frames:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionLost("FreeSWITCH closed the connection")
            if self.record is not None:
                self.record.write(data)
                self.record.flush()
            self.frames.extend(self.parser.feed(data))
        return self.frames.popleft()

    async def reply(self, command: str, content_type: str) -> Frame:
        """Send a command and return its reply frame (replies come in command order)."""
        self.writer.write(command.encode() + b"\n\n")
        await self.writer.drain()
        while True:
            frame = await self.frame()
            if frame.content_type == content_type:
                return frame
            if frame.content_type == "text/event-plain":
                self.events.append(frame)
            elif frame.content_type == "text/disconnect-notice":
                raise ConnectionLost("FreeSWITCH sent a disconnect notice")

    async def event_frame(self, idle_timeout: float) -> Frame:
        """The next event frame; ConnectionLost on a disconnect notice or `idle_timeout` of silence."""
        while True:
            if self.events:
                return self.events.popleft()
            try:
                frame = await asyncio.wait_for(self.frame(), idle_timeout)
            except TimeoutError:
                raise ConnectionLost(f"nothing from FreeSWITCH for {idle_timeout:g} s (heartbeats off?)") from None
            if frame.content_type == "text/event-plain":
                return frame
            if frame.content_type == "text/disconnect-notice":
                raise ConnectionLost("FreeSWITCH sent a disconnect notice")

    def close(self) -> None:
        self.writer.close()


class FreeswitchSource:
    """Live source: mod_callcenter events over the FreeSWITCH event socket, as `Batch`es.

    Each connection authenticates, subscribes, then syncs (`strepoch`, `callcenter_config queue
    list`, `queue list members <queue>` for each monitored queue, `agent list`, `tier list`) so
    callers already waiting and agents already logged in are known, then streams. A lost connection
    is retried with exponential backoff and jitter and re-synced; ids never repeat (see the module
    docstring). A wrong password or a failing `callcenter_config` raises: retrying cannot help.
    There is no checkpoint (the switch keeps no history to resume from), so batches have no commit.
    """

    def __init__(self, host: str, port: int, password: str, source: str, queues: Iterable[str] | None = None,
                 reconnect_min: float = 0.5, reconnect_max: float = 30.0, *, include_caller: bool = False,
                 connect_timeout: float = 10.0, idle_timeout: float = 90.0, record_to: str | Path | None = None,
                 rng: random.Random | None = None):
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        self.host, self.port, self._password = host, port, password
        self.mapper = CallcenterMapper(source, queues, include_caller)
        self.skips = self.mapper.skips
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.connect_timeout, self.idle_timeout = connect_timeout, idle_timeout
        self.record_to = Path(record_to) if record_to is not None else None
        self.rng = rng or random.Random()
        self.connections = 0  # successful (authenticated and synced) connections
        self.reconnect_delays: list[float] = []  # every backoff slept, in order

    async def batches(self) -> AsyncIterator[Batch]:
        record = self.record_to.open("ab") if self.record_to is not None else None
        failures = 0
        try:
            while True:
                conn = None
                try:
                    conn = await self._open(record)
                    first = await self._sync(conn)
                    self.connections += 1
                    failures = 0
                    if first:
                        yield Batch(first)
                    while True:
                        frame = await conn.event_frame(self.idle_timeout)
                        events = self.mapper.map_event(parse_event_plain(frame.body))
                        if events:
                            yield Batch(by_time(events))
                except (FreeswitchAuthError, FreeswitchApiError):
                    raise
                except (OSError, EOFError, FreeswitchError) as exc:  # TimeoutError is an OSError
                    log.warning("FreeSWITCH event socket %s:%s: %s", self.host, self.port, exc)
                finally:
                    if conn is not None:
                        conn.close()
                delay = backoff_delay(failures, self.reconnect_min, self.reconnect_max, self.rng)
                failures += 1
                self.reconnect_delays.append(delay)
                log.info("reconnecting to %s:%s in %.2f s", self.host, self.port, delay)
                await asyncio.sleep(delay)
        finally:
            if record is not None:
                record.close()

    async def _open(self, record: BinaryIO | None) -> _Connection:
        """Connect, authenticate and subscribe."""
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            conn = _Connection(reader, writer, record)
            try:
                hello = await conn.frame()
                if hello.content_type == "text/rude-rejection":
                    raise FreeswitchAuthError(f"{self.host}:{self.port} refused us (event socket ACL): "
                                              f"{hello.body.decode('utf-8', 'replace').strip()}")
                if hello.content_type != "auth/request":
                    raise FreeswitchError(f"expected auth/request, got {hello.content_type or 'no Content-Type'}")
                reply = await conn.reply(f"auth {self._password}", "command/reply")
                if not reply.reply_text.startswith("+OK"):
                    raise FreeswitchAuthError(f"FreeSWITCH at {self.host}:{self.port} rejected the event socket "
                                              f"password ({reply.reply_text or 'no Reply-Text'})")
                reply = await conn.reply(SUBSCRIBE_COMMAND, "command/reply")
                if not reply.reply_text.startswith("+OK"):
                    raise FreeswitchError(f"subscription refused: {reply.reply_text}")
            except BaseException:
                conn.close()
                raise
        return conn

    async def _api(self, conn: _Connection, command: str) -> str:
        text = (await conn.reply(f"api {command}", "api/response")).body.decode("utf-8", "replace")
        if text.startswith(("-ERR", "-USAGE")):
            raise FreeswitchApiError(f"`{command}` failed on {self.host}:{self.port}: {text.splitlines()[0]}")
        return text

    async def _sync(self, conn: _Connection) -> list[dict]:
        """The first batch of a connection: events received during the sync, then the snapshot."""
        parts = _SnapshotParts(self.mapper)
        async with asyncio.timeout(self.connect_timeout * 3):
            try:
                parts.add("now", await self._api(conn, "strepoch"))
                parts.add("queues", await self._api(conn, "callcenter_config queue list"))
                listed = parts.listed_queues()
                if self.mapper.queues is not None and set(self.mapper.queues) - set(listed):
                    log.warning("queues not known to mod_callcenter (or with a space): %s",
                                ", ".join(sorted(set(self.mapper.queues) - set(listed))))
                for queue in listed:
                    parts.add("members", await self._api(conn, f"callcenter_config queue list members {queue}"))
                parts.add("agents", await self._api(conn, "callcenter_config agent list"))
                parts.add("tiers", await self._api(conn, "callcenter_config tier list"))
            except ValueError as exc:
                raise FreeswitchApiError(f"unexpected callcenter_config answer from {self.host}:{self.port}: {exc}") from exc
        events: list[dict] = []
        while conn.events:  # sent before the last answer, so older than the snapshot
            events += self.mapper.map_event(parse_event_plain(conn.events.popleft().body))
        events += self.mapper.sync(parts.snapshot(parts.now or 0.0))
        return by_time(events)
