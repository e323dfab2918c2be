"""Asterisk Manager Interface (AMI): the queue events of Asterisk 12 and later, live, as canonical events.

Data flow, which is also the order of this module:

1. `AmiParser` splits what the server sends into messages: ``Key: Value`` lines ended by an empty
   line, after a one-line greeting ``Asterisk Call Manager/X.Y.Z``.
2. `AmiMapper` turns queue events into canonical events. It remembers what it needs to: the calls in
   the queues (one *stay* per call and queue), the queue members and their pause state.
3. `AmiStream` routes one connection's messages: events to the mapper, the answer to ``QueueStatus``
   as a snapshot of the queues, the answer to ``Ping`` as a reading of the server's clock.
4. `parse_capture` replays a recorded transcript (the bytes the server sent); `AmiSource` is the live
   client: login, snapshot, events, keepalive, reconnect with backoff.

Mapping (the README's table):

| AMI event | canonical events |
|---|---|
| QueueCallerJoin | `call.offered` |
| AgentCalled | `call.ringing` (`attempt`: the n-th ring of this call in this queue) |
| AgentRingNoAnswer | `call.ring_no_answer` (`ring_seconds` = RingTime / 1000: Asterisk sends ms) |
| AgentDump | `call.ring_no_answer` with `attributes.ami_event = "AgentDump"` (the member hung up before being bridged; the caller keeps waiting) |
| AgentConnect | `call.answered` (`wait_seconds` = its time minus the stay's `call.offered` time), and `agent.state_changed` `on_call` in every queue of the member |
| AgentComplete, Reason caller / agent | `call.ended` (`ended_by` caller / agent), the member's state after the call |
| AgentComplete, Reason transfer | `call.transferred`, the member's state after the call |
| QueueCallerAbandon | `call.abandoned` |
| QueueCallerLeave | nothing when the stay was answered or abandoned; otherwise, once no AgentConnect came within `leave_grace_seconds`, `call.flowed_out`: reason `timeout` / `no_agents` when a ``VarSet`` of ``QUEUESTATUS`` said TIMEOUT / LEAVEEMPTY or LEAVEUNAVAIL, else `other` |
| Hold / Unhold of either leg of an answered queue call | `call.hold_started` / `call.hold_ended` |
| QueueMemberAdded / QueueMemberRemoved | `agent.queue_joined` + `agent.state_changed` / `agent.queue_left` |
| QueueMemberPause Paused 1 / 0 | `agent.state_changed` `not_ready` (reason: PausedReason, else Reason, else `paused`) / `available` |
| QueueMemberStatus Status 4 or 5 (invalid, unavailable) and back | `agent.state_changed` `not_ready` reason `unavailable` / the state it had |
| QueueStatus at each login: QueueEntry | `call.offered` at now - Wait, with the id the live QueueCallerJoin has, only for stays the mapper does not know |
| QueueStatus: QueueMember | `agent.queue_joined` / `agent.queue_left` / `agent.state_changed` for what changed since the mapper last knew |
| QueueStatus: a stay the mapper has waiting that is no longer listed | `call.flowed_out` reason `other`, `attributes.ami_resync = true` (it ended while we were disconnected) |

A member's state is derived, per queue: `on_call` while it is bridged to a queue call (from any
queue: it cannot take another one), else `not_ready` `unavailable` while its device is unavailable,
else `not_ready` with the pause reason while paused in that queue, else `available`. Only changes
are sent; `queues` lists the queues where the state became that value (Asterisk pauses per queue).

Choices the canonical contract leaves open:
- `call_id` is the caller channel's Uniqueid: the same as queue_log's callid, and the only id that
  QueueStatus lists for a waiting call (it has no Linkedid).
- `agent_id` is the member name (MemberName, Name in QueueStatus), which is also what queue_log
  calls the agent; `agent_id_from="interface"` uses the interface (``PJSIP/1001``) instead, and then
  the member name, when it differs from the interface, is the `agent_name` of every event that names
  that member. No other header is used for a name: the channel snapshots' CallerIDName and
  ConnectedLineName (with or without the ``Dest`` prefix) describe channels and can hold the caller's.
- Why QueueCallerLeave is deferred: app_queue sends it for *every* stay that ends, and for an
  answered call it comes just *before* AgentConnect. Only a leave that no AgentConnect follows (and
  that no QueueCallerAbandon preceded) is a flow-out. The wait for the connect is in event time (the
  next event's Timestamp, or the server clock when idle), so replaying a capture gives the same result.
- Event ids: call events are ``(type, queue, Uniqueid, stay number, attempt...)``. Uniqueids never
  repeat, so the ids are globally unique without the time, and the snapshot's `call.offered` for a
  waiting call gets the same id as its live QueueCallerJoin. Agent events also hash their event
  time and a per-member counter (a member's states repeat; its Interface does not change).
- The `caller` number is only sent with ``include_caller=True`` (personal data: leave it out unless
  needed downstream), and never logged.
- Not mapped: wrap-up (Asterisk's wrapuptime sends no event when it ends), queue_log-only details
  (transfer kind, exit key), Asterisk 11 and older (Join/Leave events).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import Batch, Skips, event_id, format_time, make_event

log = logging.getLogger(__name__)

GREETING_PREFIX = "Asterisk Call Manager/"

# Events of the answer to Action: QueueStatus (they carry its ActionID).
SNAPSHOT_EVENTS = frozenset(("QueueParams", "QueueMember", "QueueEntry", "QueueStatusComplete"))

# QUEUESTATUS channel variable (set by app_queue as the call leaves) -> call.flowed_out reason.
FLOW_OUT_REASON_BY_QUEUESTATUS = {"TIMEOUT": "timeout", "LEAVEEMPTY": "no_agents", "LEAVEUNAVAIL": "no_agents"}

# Device states of QueueMemberStatus in which the member cannot take calls.
UNAVAILABLE_DEVICE_STATES = frozenset(("4", "5"))  # AST_DEVICE_INVALID, AST_DEVICE_UNAVAILABLE


class AmiProtocolError(Exception):
    """The peer does not speak AMI as expected (no greeting, no answer): worth a reconnect."""


class AmiAuthError(Exception):
    """The server refused the login: a configuration error, never retried."""


# ---- 1. the line protocol ----------------------------------------------------------------------

class AmiParser:
    """Splits a byte stream into AMI messages, whatever the read boundaries.

    A message is a dict of its headers with lower-cased keys (AMI keys are case-insensitive in
    practice: ``Uniqueid``/``UniqueID``). A value keeps everything after the first ``:`` and one
    space, so values may contain ``: ``. A key sent several times (``Output:``, ``ChanVariable:``)
    keeps all its values, joined by newlines. Lines that are not ``Key: Value`` (the body of an old
    ``Response: Follows`` command answer) go to ``_output``. The greeting line becomes
    ``{"_greeting": "Asterisk Call Manager/5.0.2"}``; one that arrives in the middle of a message,
    even glued to a cut line (a capture of a connection that was lost), drops the cut message and
    counts it in `truncated`.
    """

    def __init__(self, max_message_bytes: int = 1 << 20):
        self.max_message_bytes = max_message_bytes
        self.truncated = 0
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._size = 0

    def feed(self, data: bytes) -> list[dict[str, str]]:
        self._buffer += data
        messages: list[dict[str, str]] = []
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end]).rstrip(b"\r").decode("utf-8", "replace")
            start = end + 1
            greeting = line.find(GREETING_PREFIX)
            if not line:
                if self._lines:
                    messages.append(_headers(self._lines))
                    self._lines, self._size = [], 0
            elif greeting >= 0 and ":" not in line[greeting:]:
                if self._lines or greeting > 0:  # a message cut off, the greeting glued to its last line
                    self.truncated += 1
                    self._lines, self._size = [], 0
                messages.append({"_greeting": line[greeting:]})
            else:
                self._lines.append(line)
                self._size += len(line)
        del self._buffer[:start]
        if self._size + len(self._buffer) > self.max_message_bytes:
            raise AmiProtocolError(f"an AMI message longer than {self.max_message_bytes} bytes")
        return messages


def _headers(lines: list[str]) -> dict[str, str]:
    message: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or not key or " " in key:
            key, value = "_output", line
        else:
            key = key.lower()
            value = value[1:] if value.startswith(" ") else value
        message[key] = f"{message[key]}\n{value}" if key in message else value
    return message


def encode_action(action: str, headers: dict[str, str]) -> bytes:
    """One AMI action: ``Action: <action>``, the headers, an empty line."""
    lines = [f"Action: {action}"] + [f"{key}: {value}" for key, value in headers.items()]
    if any("\r" in line or "\n" in line for line in lines):
        raise ValueError("AMI header values cannot contain line breaks")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def header_time(message: dict[str, str]) -> float | None:
    """The ``Timestamp:`` header (manager.conf ``timestampevents=yes``) as epoch seconds."""
    text = message.get("timestamp")
    if not text:
        return None
    try:
        t = float(text)
    except ValueError:
        return None
    return t if math.isfinite(t) else None


# ---- 2. the mapping ----------------------------------------------------------------------------

@dataclass
class _Stay:
    """One call's stay in one queue, from QueueCallerJoin (or the snapshot) to its outcome."""

    queue: str
    call_id: str
    number: int  # 1 for the call's first stay in this queue, 2 if it came back, ...
    since: float  # event time of the last thing that happened to it
    offered_at: float | None = None  # the time of its call.offered; None when that time was a guess
    connected: bool = False
    agent: str | None = None
    agent_leg: str | None = None  # the member channel's Uniqueid (Hold events may name it)
    rings: int = 0  # AgentCalled so far
    ring_of_agent: dict[str, int] = field(default_factory=dict)  # agent -> attempt number of its last ring
    holds: int = 0
    on_hold: bool = False
    left_at: float | None = None  # QueueCallerLeave seen; the outcome waits for a possible AgentConnect
    queue_status: str | None = None  # QUEUESTATUS set on the channel, if VarSet events come


@dataclass
class _Member:
    """A queue member (agent) in one queue."""

    paused: bool = False
    reason: str | None = None
    unavailable: bool = False
    published: tuple[str, str | None] | None = None  # the state last sent for this queue


class AmiMapper:
    """AMI events -> canonical events; pure: times come with the messages, nothing reads a clock."""

    def __init__(self, source: str, skips: Skips | None = None, leave_grace_seconds: float = 5.0,
                 include_caller: bool = False, agent_id_from: str = "member_name"):
        if agent_id_from not in ("member_name", "interface"):
            raise ValueError("agent_id_from must be 'member_name' or 'interface'")
        self.source = source
        self.skips = skips if skips is not None else Skips()
        self.leave_grace = leave_grace_seconds
        self.include_caller = include_caller
        self.agent_id_from = agent_id_from
        self.stays: dict[tuple[str, str], _Stay] = {}  # open stays by (queue, call_id)
        self.stay_numbers: dict[tuple[str, str], tuple[int, float]] = {}  # (queue, call_id) -> (stays so far, last time)
        self.open_by_channel: dict[str, _Stay] = {}  # call_id or member leg -> open stay (VarSet, Hold)
        self.members: dict[str, dict[str, _Member]] = {}  # agent -> queue -> member
        self.in_call: dict[str, set[str]] = {}  # agent -> the calls it is bridged to
        self.agent_events: dict[str, int] = {}  # agent -> events sent about it (part of their ids)
        self.agent_names: dict[str, str] = {}  # agent -> its MemberName, when that is not its id
        self._pruned_at = -math.inf

    # ---- live events ------------------------------------------------------------------------

    def uses(self, name: str) -> bool:
        """Whether events of this name mean anything here; the others are counted as skipped,
        except those known to mean nothing for queues (IGNORED_EVENTS)."""
        if name in _EVENT_HANDLERS:
            return True
        if name not in IGNORED_EVENTS:
            self.skips.add(f"AMI event not used: {name or '(no Event header)'}")
        return False

    def map(self, message: dict[str, str], t: float) -> list[dict]:
        """Canonical events for one AMI event that happened at t (epoch seconds)."""
        out = self.flush(t)
        name = message.get("event", "")
        handler = _EVENT_HANDLERS.get(name)
        if handler is None:
            self.uses(name)
            return out
        try:
            out += handler(self, message, t)
        except (KeyError, ValueError) as exc:
            self.skips.add(f"malformed {name}", f"{name}: {exc!r}")
        return out

    def flush(self, now: float) -> list[dict]:
        """Flow-outs of stays that left the queue more than `leave_grace_seconds` before `now`."""
        out = []
        for stay, left_at in [(s, s.left_at) for s in self.stays.values()
                              if s.left_at is not None and now - s.left_at >= self.leave_grace]:
            reason = FLOW_OUT_REASON_BY_QUEUESTATUS.get(stay.queue_status or "", "other")
            out.append(self._call_event("call.flowed_out", stay, left_at, reason=reason))
            self._close(stay)
        if now - self._pruned_at >= 60.0 and math.isfinite(now):
            self._prune(now)
        return out

    def _on_join(self, m: dict[str, str], t: float) -> list[dict]:
        queue, call_id = m["queue"], m["uniqueid"]
        stay = self._open(queue, call_id, t)
        return [self._call_event("call.offered", stay, t, caller=self._caller(m))]

    def _on_agent_called(self, m: dict[str, str], t: float) -> list[dict]:
        stay = self._stay_of(m, t)
        if stay is None:
            return []
        agent = self._agent_of(m)
        stay.rings += 1
        stay.ring_of_agent[agent] = stay.rings
        return [self._call_event("call.ringing", stay, t, stay.rings, agent_id=agent, attempt=stay.rings)]

    def _on_ring_no_answer(self, m: dict[str, str], t: float) -> list[dict]:
        stay = self._stay_of(m, t)
        if stay is None:
            return []
        agent = self._agent_of(m)
        attempt = stay.ring_of_agent.get(agent)
        fields: dict = {"agent_id": agent, "attempt": attempt}
        if m["event"] == "AgentRingNoAnswer":
            fields["ring_seconds"] = max(0.0, float(m.get("ringtime") or 0)) / 1000.0  # milliseconds
        else:  # AgentDump
            fields["attributes"] = {"ami_event": "AgentDump"}
        return [self._call_event("call.ring_no_answer", stay, t, attempt or 0, m["event"], **fields)]

    def _on_connect(self, m: dict[str, str], t: float) -> list[dict]:
        agent = self._agent_of(m)
        out = self._ensure_member(agent, m["queue"], t)
        stay = self._stay_of(m, t)
        if stay is not None:
            stay.connected, stay.left_at = True, None
            stay.agent, stay.agent_leg = agent, m.get("destuniqueid") or None
            if stay.agent_leg:
                self.open_by_channel[stay.agent_leg] = stay
            # The wait the queue computes: this event's time minus the stay's call.offered time (the
            # Timestamps are finer than HoldTime, Asterisk's whole seconds of the same wait).
            wait = None if stay.offered_at is None else _wait_seconds(stay.offered_at, t)
            out.append(self._call_event("call.answered", stay, t, agent_id=agent, wait_seconds=wait))
        self.in_call.setdefault(agent, set()).add(m["uniqueid"])
        return out + self._states(agent, t)

    def _on_complete(self, m: dict[str, str], t: float) -> list[dict]:
        agent = self._agent_of(m)
        out: list[dict] = []
        stay = self.stays.get((m["queue"], m["uniqueid"]))
        if stay is not None and stay.connected:
            agent = stay.agent or agent
            if stay.on_hold:  # the call ended on hold: close the hold first
                out.append(self._call_event("call.hold_ended", stay, t, stay.holds, agent_id=agent))
            if m.get("reason") == "transfer":
                out.append(self._call_event("call.transferred", stay, t, agent_id=agent))
            else:
                ended_by = m.get("reason") if m.get("reason") in ("caller", "agent") else None
                out.append(self._call_event("call.ended", stay, t, agent_id=agent, ended_by=ended_by))
            self._close(stay)
        else:
            self.skips.add("AgentComplete of a call not seen answered", f"{m['queue']} {m['uniqueid']}")
        calls = self.in_call.get(agent, set())
        calls.discard(m["uniqueid"])
        calls.discard("snapshot")  # "in a call" from a snapshot: this was probably that call
        return out + self._states(agent, t)

    def _on_abandon(self, m: dict[str, str], t: float) -> list[dict]:
        stay = self._stay_of(m, t)
        if stay is None or stay.connected:
            return []
        event = self._call_event("call.abandoned", stay, t)
        self._close(stay)
        return [event]

    def _on_leave(self, m: dict[str, str], t: float) -> list[dict]:
        stay = self.stays.get((m["queue"], m["uniqueid"]))
        if stay is not None and not stay.connected and stay.left_at is None:
            stay.left_at = t  # see the module docstring: an AgentConnect may still follow
        return []

    def _on_varset(self, m: dict[str, str], t: float) -> list[dict]:
        if m.get("variable") == "QUEUESTATUS":
            stay = self.open_by_channel.get(m.get("uniqueid", ""))
            if stay is not None and not stay.connected:
                stay.queue_status = m.get("value")
        return []

    def _on_hold(self, m: dict[str, str], t: float) -> list[dict]:
        stay = self.open_by_channel.get(m.get("uniqueid", ""))
        if stay is None or not stay.connected:
            return []
        held = m["event"] == "Hold"
        if held == stay.on_hold:
            return []
        stay.on_hold = held
        if held:
            stay.holds += 1
            return [self._call_event("call.hold_started", stay, t, stay.holds, agent_id=stay.agent)]
        return [self._call_event("call.hold_ended", stay, t, stay.holds, agent_id=stay.agent)]

    def _on_member(self, m: dict[str, str], t: float) -> list[dict]:
        """QueueMemberAdded / Removed / Pause / Status: membership, pause and device state."""
        agent, queue, name = self._agent_of(m), m["queue"], m["event"]
        if name == "QueueMemberRemoved":
            if self.members.get(agent, {}).pop(queue, None) is None:
                return []
            return [self._agent_event("agent.queue_left", agent, t, queue=queue)]
        out = self._ensure_member(agent, queue, t)
        member = self.members[agent][queue]
        if "paused" in m:
            member.paused = m["paused"] == "1"
            member.reason = _pause_reason(m) if member.paused else None
        if "status" in m:
            member.unavailable = m["status"] in UNAVAILABLE_DEVICE_STATES
        return out + self._states(agent, t)

    # ---- the QueueStatus snapshot -----------------------------------------------------------

    def snapshot(self, members: list[dict[str, str]], entries: list[dict[str, str]], now: float) -> list[dict]:
        """Canonical events for what a QueueStatus answer (taken at `now`) shows that the mapper
        did not know: calls waiting, members added, removed, paused or in a call meanwhile.

        The snapshot covers every queue. A stay the mapper has waiting that is not listed ended
        while we could not see it: its outcome is unknown, so it is closed as a flow-out `other`
        (marked `ami_resync`) rather than left to wait as an orphan for an hour.
        """
        out = self.flush(now)
        listed: dict[str, dict[str, dict[str, str]]] = {}
        for m in members:
            try:
                listed.setdefault(self._agent_of(m), {})[m["queue"]] = m
            except KeyError as exc:
                self.skips.add("malformed QueueMember", repr(exc))
        for agent in sorted(set(self.members) | set(listed)):
            rows = listed.get(agent, {})
            for queue in sorted(set(self.members.get(agent, {})) - set(rows)):
                del self.members[agent][queue]
                out.append(self._agent_event("agent.queue_left", agent, now, queue=queue))
            for queue, row in sorted(rows.items()):
                out += self._ensure_member(agent, queue, now)
                member = self.members[agent][queue]
                member.paused = row.get("paused") == "1"
                member.reason = _pause_reason(row) if member.paused else None
                member.unavailable = row.get("status") in UNAVAILABLE_DEVICE_STATES
            if rows and all("incall" in row for row in rows.values()):  # Asterisk 16+
                calls = self.in_call.setdefault(agent, set())
                if not any(row["incall"] == "1" for row in rows.values()):
                    calls.clear()
                elif not calls:
                    calls.add("snapshot")  # in a call we did not see start
            out += self._states(agent, now)

        waiting: set[tuple[str, str]] = set()
        offers = []
        for e in entries:
            try:
                key, wait = (e["queue"], e["uniqueid"]), float(e.get("wait") or 0)
            except (KeyError, ValueError) as exc:
                self.skips.add("malformed QueueEntry", repr(exc))
                continue
            waiting.add(key)
            stay = self.stays.get(key)
            if stay is None or stay.connected:
                stay = self._open(*key, now - wait)
                if not e.get("wait"):  # no Wait: offered "now", a guess, so no wait_seconds later
                    stay.offered_at = None
                offers.append(self._call_event("call.offered", stay, now - wait, caller=self._caller(e)))
            elif stay.left_at is not None:  # left, and it is waiting again: not a flow-out after all
                stay.left_at = None
        out += sorted(offers, key=lambda e: e["time"])
        for stay in [s for key, s in self.stays.items() if key not in waiting and not s.connected]:
            reason = FLOW_OUT_REASON_BY_QUEUESTATUS.get(stay.queue_status or "", "other")
            at = stay.left_at if stay.left_at is not None else now
            attributes = None if stay.left_at is not None else {"ami_resync": True}
            out.append(self._call_event("call.flowed_out", stay, at, reason=reason, attributes=attributes))
            self._close(stay)
        return sorted(out, key=lambda e: e["time"])  # stable: same-time events keep their order

    # ---- helpers ----------------------------------------------------------------------------

    def _open(self, queue: str, call_id: str, t: float) -> _Stay:
        old = self.stays.get((queue, call_id))
        if old is not None:  # joined again without us seeing it leave
            self._close(old)
        number = self.stay_numbers.get((queue, call_id), (0, t))[0] + 1
        self.stay_numbers[(queue, call_id)] = (number, t)
        stay = _Stay(queue, call_id, number, t, offered_at=t)
        self.stays[(queue, call_id)] = stay
        self.open_by_channel[call_id] = stay
        return stay

    def _close(self, stay: _Stay) -> None:
        self.stays.pop((stay.queue, stay.call_id), None)
        for channel in (stay.call_id, stay.agent_leg):
            if channel and self.open_by_channel.get(channel) is stay:
                del self.open_by_channel[channel]

    def _stay_of(self, m: dict[str, str], t: float) -> _Stay | None:
        stay = self.stays.get((m["queue"], m["uniqueid"]))
        if stay is None:
            self.skips.add(f"{m['event']} of a call not seen entering the queue", f"{m['queue']} {m['uniqueid']}")
        else:
            stay.since = t
        return stay

    def _prune(self, now: float) -> None:
        """Forget stays and stay counters nothing happened to for a day (their end was lost)."""
        self._pruned_at = now
        for stay in [s for s in self.stays.values() if now - s.since > 86400.0]:
            self._close(stay)
        for key in [k for k, (_, last) in self.stay_numbers.items() if now - last > 86400.0 and k not in self.stays]:
            del self.stay_numbers[key]

    def _agent_of(self, m: dict[str, str]) -> str:
        interface = m.get("interface") or m.get("location") or ""
        name = m.get("membername") or m.get("name") or ""
        agent = (name or interface) if self.agent_id_from == "member_name" else (interface or name)
        if not agent:
            raise KeyError("membername/interface")
        agent = agent[:128]
        if self.agent_id_from == "interface" and interface and name:
            # The member's name (MemberName; Name in QueueStatus) is its display name when the id is
            # the interface. Asterisk sets it to the interface when none is configured: no name then.
            display = name.strip()[:128]
            if display and display != agent:
                self.agent_names[agent] = display
            else:
                self.agent_names.pop(agent, None)
        return agent

    def _caller(self, m: dict[str, str]) -> str | None:
        number = m.get("calleridnum", "")
        if not self.include_caller or number in ("", "<unknown>", "unknown"):
            return None
        return number[:64]

    def _ensure_member(self, agent: str, queue: str, t: float) -> list[dict]:
        """agent.queue_joined the first time an agent shows up in a queue."""
        queues = self.members.setdefault(agent, {})
        if queue in queues:
            return []
        queues[queue] = _Member()
        return [self._agent_event("agent.queue_joined", agent, t, queue=queue)]

    def _state_of(self, agent: str, member: _Member) -> tuple[str, str | None]:
        if self.in_call.get(agent):
            return ("on_call", None)
        if member.unavailable:
            return ("not_ready", "unavailable")
        if member.paused:
            return ("not_ready", member.reason or "paused")
        return ("available", None)

    def _states(self, agent: str, t: float) -> list[dict]:
        """agent.state_changed for the queues where the agent's derived state changed."""
        changed: dict[tuple[str, str], list[str]] = {}
        for queue, member in sorted(self.members.get(agent, {}).items()):
            state = self._state_of(agent, member)
            if state != member.published:
                member.published = state
                changed.setdefault((state[0], state[1] or ""), []).append(queue)
        return [self._agent_event("agent.state_changed", agent, t, queues=queues, state=state, reason=reason or None)
                for (state, reason), queues in sorted(changed.items())]

    def _call_event(self, kind: str, stay: _Stay, t: float, *id_parts: object, **fields) -> dict:
        eid = event_id(self.source, kind, stay.queue, stay.call_id, stay.number, *id_parts)
        agent = fields.get("agent_id")
        if agent is not None:
            fields["agent_name"] = self.agent_names.get(agent)
        return make_event(kind, t, self.source, eid, queue=stay.queue, call_id=stay.call_id, **fields)

    def _agent_event(self, kind: str, agent: str, t: float, **fields) -> dict:
        n = self.agent_events.get(agent, 0) + 1
        self.agent_events[agent] = n
        where = fields.get("queue") or ",".join(fields.get("queues", ()))
        eid = event_id(self.source, kind, agent, where, fields.get("state", ""), fields.get("reason") or "",
                       format_time(t), n)
        return make_event(kind, t, self.source, eid, agent_id=agent, agent_name=self.agent_names.get(agent), **fields)


def _wait_seconds(offered: float, answered: float) -> float:
    """call.answered's `wait_seconds`: answered - offered as the model computes it from the two
    events' times, which are written to the millisecond (so the two always agree), never negative."""
    return max(0, math.floor(answered * 1000.0 + 0.5) - math.floor(offered * 1000.0 + 0.5)) / 1000.0


def _pause_reason(m: dict[str, str]) -> str | None:
    """PausedReason (Asterisk 13.x+), else the older Reason header; None when empty."""
    reason = (m.get("pausedreason") or m.get("reason") or "").strip()
    return reason[:64] or None


_EVENT_HANDLERS: dict[str, Callable[[AmiMapper, dict[str, str], float], list[dict]]] = {
    "QueueCallerJoin": AmiMapper._on_join,
    "AgentCalled": AmiMapper._on_agent_called,
    "AgentRingNoAnswer": AmiMapper._on_ring_no_answer,
    "AgentDump": AmiMapper._on_ring_no_answer,
    "AgentConnect": AmiMapper._on_connect,
    "AgentComplete": AmiMapper._on_complete,
    "QueueCallerAbandon": AmiMapper._on_abandon,
    "QueueCallerLeave": AmiMapper._on_leave,
    "VarSet": AmiMapper._on_varset,
    "Hold": AmiMapper._on_hold,
    "Unhold": AmiMapper._on_hold,
    "QueueMemberAdded": AmiMapper._on_member,
    "QueueMemberRemoved": AmiMapper._on_member,
    "QueueMemberPause": AmiMapper._on_member,
    "QueueMemberStatus": AmiMapper._on_member,
}

# Known, and deliberately without a canonical meaning: not counted as skipped.
IGNORED_EVENTS = frozenset(("FullyBooted", "QueueMemberPenalty", "QueueMemberRinginuse", "SuccessfulAuth"))


# ---- 3. one connection's messages --------------------------------------------------------------

class AmiStream:
    """Routes the messages of one or more consecutive connections (a capture may hold several).

    `clock` is the time to give events without a ``Timestamp:`` header: the live client passes its
    estimate of the server's clock; a replay passes None, and such events are skipped.
    """

    def __init__(self, mapper: AmiMapper):
        self.mapper = mapper
        self.ping_time: float | None = None  # the server clock in the last Ping answer
        self._members: list[dict[str, str]] = []
        self._entries: list[dict[str, str]] = []
        self._snapshot_time: float | None = None

    def on_message(self, message: dict[str, str], clock: float | None) -> list[dict]:
        skips = self.mapper.skips
        if "_greeting" in message:  # a new connection: an unfinished snapshot is void
            self._members, self._entries, self._snapshot_time = [], [], None
            self.ping_time = None
            return []
        if "response" in message:
            if message.get("ping", "").lower() == "pong" and header_time(message) is not None:
                self.ping_time = header_time(message)
            return []
        name = message.get("event", "")
        if name in SNAPSHOT_EVENTS:
            return self._on_snapshot(name, message, clock)
        if not self.mapper.uses(name):
            return []
        t = header_time(message)
        if t is None:
            t = clock
        if t is None:
            skips.add("event without a Timestamp header (manager.conf timestampevents=no)", name or "")
            return []
        return self.mapper.map(message, t)

    def flush(self, clock: float) -> list[dict]:
        return self.mapper.flush(clock)

    def _on_snapshot(self, name: str, message: dict[str, str], clock: float | None) -> list[dict]:
        if self._snapshot_time is None:  # its first message: the snapshot is of this moment
            self._snapshot_time = self.ping_time if self.ping_time is not None else clock
        if name == "QueueMember":
            self._members.append(message)
        elif name == "QueueEntry":
            self._entries.append(message)
        elif name == "QueueStatusComplete":
            members, entries, now = self._members, self._entries, self._snapshot_time
            self._members, self._entries, self._snapshot_time = [], [], None
            if now is None:
                self.mapper.skips.add("QueueStatus answer without a time (no Ping answer before it)")
                return []
            return self.mapper.snapshot(members, entries, now)
        return []


# ---- 4a. replay of a capture -------------------------------------------------------------------

def parse_capture(path: str | Path, source: str, skips: Skips | None = None, leave_grace_seconds: float = 5.0,
                  include_caller: bool = False, agent_id_from: str = "member_name") -> Iterator[dict]:
    """Canonical events from a recorded AMI transcript (the raw bytes the server sent, e.g. the
    `capture_path` of `AmiSource`), in time order. Event times are the Timestamp headers; events
    without one are skipped. A QueueStatus answer is used when a Ping answer (which carries the
    server's clock) precedes it, as `AmiSource` sends one just before.

    The mapper's output is in time order but for flow-outs, which are decided up to
    `leave_grace_seconds` after the leave they are dated at; a small heap holds events until the
    capture is that far (plus a margin for QueueStatus's whole-second waits) past them.
    """
    skips = skips if skips is not None else Skips()
    mapper = AmiMapper(source, skips, leave_grace_seconds, include_caller, agent_id_from)
    stream = AmiStream(mapper)
    parser = AmiParser()
    held: list[tuple[str, int, dict]] = []  # a heap by time (the text: one format, UTC, ms), then arrival
    arrival = itertools.count()
    newest = -math.inf  # the newest Timestamp read so far
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            for message in parser.feed(chunk):
                newest = max(newest, header_time(message) or -math.inf)
                for event in stream.on_message(message, None):
                    heapq.heappush(held, (event["time"], next(arrival), event))
            if held and newest > -math.inf:
                release = format_time(newest - leave_grace_seconds - 2.0)
                while held and held[0][0] <= release:
                    yield heapq.heappop(held)[2]
    for event in mapper.flush(math.inf):  # the capture is over: leaves still pending are flow-outs
        heapq.heappush(held, (event["time"], next(arrival), event))
    while held:
        yield heapq.heappop(held)[2]
    for _ in range(parser.truncated):
        skips.add("message cut by a lost connection")


# ---- 4b. the live client -----------------------------------------------------------------------

def backoff_delay(failures: int, low: float, high: float, jitter: float) -> float:
    """Seconds before reconnect number `failures` + 1: `low` doubled per failure up to `high`,
    plus up to 25 % (`jitter` in [0, 1)) so that many collectors do not reconnect in step."""
    return min(high, low * 2.0 ** min(failures, 60)) * (1.0 + 0.25 * jitter)


class ServerClock:
    """The Asterisk server's clock as seen from here: the newest time it told us (a Ping answer, an
    event's Timestamp) plus the time elapsed locally since. Before it said anything: our wall clock."""

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.wall, self.monotonic = wall, monotonic
        self._anchor: tuple[float, float] | None = None  # (server time, local monotonic time)

    def now(self) -> float:
        if self._anchor is None:
            return self.wall()
        server, local = self._anchor
        return server + (self.monotonic() - local)

    def observe(self, server_time: float) -> None:
        if self._anchor is None or server_time > self.now():
            self._anchor = (server_time, self.monotonic())


class RecentIds:
    """The last `size` event ids sent: a second guard against resending after a reconnect."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self.dropped = 0
        self._ids: OrderedDict[str, None] = OrderedDict()

    def fresh(self, events: list[dict]) -> list[dict]:
        out = []
        for e in events:
            if e["event_id"] in self._ids:
                self.dropped += 1
                continue
            self._ids[e["event_id"]] = None
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)
            out.append(e)
        return out


def _ends_mid_line(path: Path) -> bool:
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        if f.seek(0, 2) > 0:
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    return False


class AmiSource:
    """Live canonical events from an Asterisk server's AMI.

    Each connection: greeting, ``Login`` (a refusal raises `AmiAuthError`: a wrong password must be
    fixed, not retried for ever), ``Ping`` (the server's clock) and ``QueueStatus`` (the snapshot),
    then events. A ``Ping`` is sent after `ping_interval` seconds of silence; no data for a further
    `ping_timeout` counts as a lost connection. A lost connection is retried after `backoff_delay`
    (the failure count starts over after each successful login), and the snapshot brings the
    mapper up to date: the mapper lives as long as the source, so nothing it already sent is sent
    again, and `RecentIds` drops any id sent before all the same.

    Events happen on the server; the batches' `commit` is None because AMI cannot replay: what
    happened while disconnected is only known through the next snapshot. `capture_path` appends
    every byte received to a file that `parse_capture` replays; it holds caller numbers (personal
    data), so protect it like the PBX's own logs.

    The manager.conf user needs ``read = agent,call`` (``dialplan`` too for flow-out reasons from
    QUEUESTATUS), no write permission, and ``timestampevents = yes`` in [general] for exact times.
    """

    def __init__(self, host: str, port: int, username: str, secret: str, source: str,
                 reconnect_min: float = 0.5, reconnect_max: float = 30.0, *,
                 events: str = "call,agent", ping_interval: float = 20.0, ping_timeout: float = 10.0,
                 connect_timeout: float = 10.0, leave_grace_seconds: float = 5.0, include_caller: bool = False,
                 agent_id_from: str = "member_name", capture_path: str | Path | None = None,
                 skips: Skips | None = None, rng: Callable[[], float] = random.random,
                 clock: ServerClock | None = None):
        self.host, self.port = host, port
        self.username, self._secret = username, secret
        self.source = source
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.events_mask = events  # AMI classes to receive; add "dialplan" for QUEUESTATUS (flow-out reasons)
        self.ping_interval, self.ping_timeout, self.connect_timeout = ping_interval, ping_timeout, connect_timeout
        self.capture_path = Path(capture_path) if capture_path else None
        self.skips = skips if skips is not None else Skips()
        self.mapper = AmiMapper(source, self.skips, leave_grace_seconds, include_caller, agent_id_from)
        self.recent = RecentIds()
        self.rng = rng
        self.clock = clock or ServerClock()
        self.logins = 0  # successful logins so far
        self.reconnect_delays: list[float] = []  # every delay waited before a reconnect
        self._action_ids = 0
        self._skip_reasons_logged: set[str] = set()

    async def batches(self) -> AsyncIterator[Batch]:
        failures = 0
        while True:
            logins_before = self.logins
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                        self.connect_timeout)
            except (TimeoutError, OSError) as exc:
                log.warning("AMI %s:%s: cannot connect (%s)", self.host, self.port, exc or type(exc).__name__)
            else:
                session = self._session(reader, writer)
                try:
                    async for events in session:
                        self._log_new_skips()
                        fresh = self.recent.fresh(events)
                        if fresh:
                            yield Batch(fresh)
                except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, AmiProtocolError, OSError) as exc:
                    log.warning("AMI %s:%s: connection lost (%s)", self.host, self.port, exc or type(exc).__name__)
                finally:
                    await session.aclose()
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            if self.logins > logins_before:
                failures = 0
            delay = backoff_delay(failures, self.reconnect_min, self.reconnect_max, self.rng())
            failures += 1
            self.reconnect_delays.append(delay)
            log.info("AMI %s:%s: reconnecting in %.2f s (failure %d in a row)", self.host, self.port, delay, failures)
            await asyncio.sleep(delay)

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> AsyncGenerator[list[dict], None]:
        """One connection, as lists of canonical events (possibly empty)."""
        parser = AmiParser()
        stream = AmiStream(self.mapper)
        capture = None
        if self.capture_path is not None:
            ends_mid_line = _ends_mid_line(self.capture_path)
            capture = open(self.capture_path, "ab")
            if ends_mid_line:  # the last connection was cut within a line: the greeting starts a new one
                capture.write(b"\r\n")
        try:
            async def read(timeout: float) -> list[dict[str, str]]:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout)
                if not data:
                    raise ConnectionError("closed by the server")
                if capture is not None:
                    capture.write(data)
                return parser.feed(data)

            # Greeting and login: within connect_timeout, or the peer is not a working AMI.
            deadline = time.monotonic() + self.connect_timeout
            pending: list[dict[str, str]] = []
            while not pending:
                pending = await read(max(0.0, deadline - time.monotonic()))
            if "_greeting" not in pending[0]:
                raise AmiProtocolError(f"no AMI greeting from {self.host}:{self.port}")
            log.info("AMI %s:%s: %s", self.host, self.port, pending.pop(0)["_greeting"])
            login_id = self._next_action_id("login")
            writer.write(encode_action("Login", {"ActionID": login_id, "Username": self.username,
                                                 "Secret": self._secret, "Events": self.events_mask}))
            await writer.drain()
            answer = None
            while answer is None:
                for i, message in enumerate(pending):
                    if message.get("actionid") == login_id and "response" in message:
                        answer, pending = message, pending[i + 1:]  # what follows it is processed below
                        break
                else:
                    pending = await read(max(0.0, deadline - time.monotonic()))
            if answer.get("response", "").lower() != "success":
                raise AmiAuthError(f"AMI login as {self.username!r} to {self.host}:{self.port} refused: "
                                   f"{answer.get('message') or answer.get('response')}")
            self.logins += 1
            log.info("AMI %s:%s: logged in as %r, asking for the queue status", self.host, self.port, self.username)
            writer.write(encode_action("Ping", {"ActionID": self._next_action_id("clock")})
                         + encode_action("QueueStatus", {"ActionID": self._next_action_id("queuestatus")}))
            await writer.drain()

            tick = max(0.05, min(self.ping_interval, self.mapper.leave_grace / 2.0))
            last_data = ping_sent = time.monotonic()
            ping_outstanding = True  # the clock Ping just sent
            messages = pending  # what came in the same read as the login answer
            while True:
                events: list[dict] = []
                for message in messages:
                    if message.get("response", "").lower() == "error":
                        log.warning("AMI %s:%s: action %s failed: %s", self.host, self.port,
                                    message.get("actionid"), message.get("message"))
                    t = header_time(message)
                    if t is not None:
                        self.clock.observe(t)
                    events += stream.on_message(message, self.clock.now())
                events += stream.flush(self.clock.now())  # flow-outs due, also when nothing came
                yield events
                try:
                    messages = await read(tick)
                    last_data, ping_outstanding = time.monotonic(), False
                except TimeoutError:
                    messages = []
                    silent = time.monotonic() - last_data
                    if ping_outstanding and time.monotonic() - ping_sent >= self.ping_timeout:
                        raise AmiProtocolError(f"nothing received for {silent:.1f} s, not even a Ping answer") from None
                    if not ping_outstanding and silent >= self.ping_interval:
                        writer.write(encode_action("Ping", {"ActionID": self._next_action_id("keepalive")}))
                        await writer.drain()
                        ping_sent, ping_outstanding = time.monotonic(), True
        finally:
            if capture is not None:
                capture.close()

    def _log_new_skips(self) -> None:
        """Log each reason for skipping once, when it first happens (the counts are in `skips`)."""
        for reason in self.skips.counts.keys() - self._skip_reasons_logged:
            self._skip_reasons_logged.add(reason)
            example = self.skips.examples.get(reason)
            log.info("AMI %s:%s: skipping: %s%s", self.host, self.port, reason, f" (e.g. {example[0]})" if example else "")

    def _next_action_id(self, what: str) -> str:
        self._action_ids += 1
        return f"callpulse-{what}-{self._action_ids}"
