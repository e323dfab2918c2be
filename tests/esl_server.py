"""A scripted FreeSWITCH event socket for the tests: real TCP on 127.0.0.1, real ESL framing.

It speaks what mod_event_socket speaks to an inbound client: ``auth/request`` on connect, the
password check (``-ERR invalid`` then a ``text/disconnect-notice`` and a close on a wrong one),
``event plain ...`` subscriptions, ``api`` commands answered from tables kept the way mod_callcenter
keeps them (``strepoch``, ``callcenter_config queue list | queue list members <q> | agent list |
tier list``), and scripted ``callcenter::info`` events with correct Content-Length and URL-encoded
values. The tables are updated by the scripted events themselves (a small emulation of
mod_callcenter's members/agents tables), so a client that reconnects and re-syncs sees what a real
switch would show.

A script is a list of `Step`s played in order. A step waits until a client is connected and has
finished its sync (it has sent `ready_command`); `offline` steps do not wait and their events reach
nobody (as on a real switch when no client is connected). `drop_after` cuts the connection abruptly
after the step; `refuse_after_drop` makes the next connections close at once (for backoff tests).

The event builders at the end fire the headers mod_callcenter.c fires for each CC-Action.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from urllib.parse import quote

CORE_UUID = "6e2f4d0a-1b7c-4e0f-9a55-0c3d2b1a9f00"
DISCONNECT_NOTICE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"

MEMBER_COLUMNS = ("queue", "instance_id", "uuid", "session_uuid", "cid_number", "cid_name", "system_epoch",
                  "joined_epoch", "rejoined_epoch", "bridge_epoch", "abandoned_epoch", "base_score", "skill_score",
                  "serving_agent", "serving_system", "state", "score")
AGENT_COLUMNS = ("name", "instance_id", "uuid", "type", "contact", "status", "state", "max_no_answer", "wrap_up_time",
                 "reject_delay_time", "busy_delay_time", "no_answer_delay_time", "last_bridge_start", "last_bridge_end",
                 "last_offered_call", "last_status_change", "no_answer_count", "calls_answered", "talk_time",
                 "ready_time", "external_calls_count")
TIER_COLUMNS = ("queue", "agent", "state", "level", "position")
QUEUE_COLUMNS = ("name", "strategy", "moh_sound", "time_base_score", "tier_rules_apply", "tier_rule_wait_second",
                 "tier_rule_wait_multiply_level", "tier_rule_no_agent_no_wait", "discard_abandoned_after",
                 "abandoned_resume_allowed", "max_wait_time", "max_wait_time_with_no_agent",
                 "max_wait_time_with_no_agent_time_reached", "record_template", "calls_answered", "calls_abandoned",
                 "ring_progressively_delay", "skip_agents_with_external_calls", "agent_no_answer_status")


def frame(headers: dict[str, str], body: bytes = b"") -> bytes:
    """An outer ESL frame: header lines (not encoded), blank line, then the body."""
    if body:
        headers = {**headers, "Content-Length": str(len(body))}
    return "".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\n" + body


def event_frame(headers: dict[str, str]) -> bytes:
    body = "".join(f"{k}: {quote(v, safe='')}\n" for k, v in headers.items()).encode() + b"\n"
    return frame({"Content-Length": str(len(body)), "Content-Type": "text/event-plain"}, body)


def table(columns: tuple[str, ...], rows: list[dict[str, str]]) -> str:
    """A callcenter_config list answer: header row only when there are rows, then +OK."""
    if not rows:
        return "+OK\n"
    lines = ["|".join(columns)] + ["|".join(str(row.get(c, "")) for c in columns) for row in rows]
    return "\n".join(lines) + "\n+OK\n"


@dataclass
class Step:
    t: float
    headers: dict[str, str]
    offline: bool = False
    drop_after: bool = False


@dataclass
class CallcenterTables:
    """mod_callcenter's members / agents / tiers tables, kept up to date by the scripted events."""

    now: float
    queues: list[str]
    agents: dict[str, dict[str, str]] = field(default_factory=dict)
    tiers: list[dict[str, str]] = field(default_factory=list)
    members: list[dict[str, str]] = field(default_factory=list)

    def add_agent(self, name: str, status: str, state: str = "Waiting", wrap_up_time: int = 0,
                  contact: str = "", last_status_change: float | None = None) -> None:
        row = {c: "0" for c in AGENT_COLUMNS}
        row.update(name=name, instance_id="single_box", uuid="", type="callback", status=status, state=state,
                   contact=contact or f"[call_timeout=10]user/{name}", wrap_up_time=str(wrap_up_time),
                   last_status_change=str(int(last_status_change if last_status_change is not None else self.now - 600)))
        self.agents[name] = row

    def add_tier(self, queue: str, agent: str, level: int = 1, position: int = 1) -> None:
        self.tiers.append({"queue": queue, "agent": agent, "state": "Ready", "level": str(level), "position": str(position)})

    def add_member(self, queue: str, uuid: str, session: str, joined: float, cid_number: str = "", cid_name: str = "",
                   state: str = "Waiting", serving_agent: str = "", bridge_epoch: float = 0) -> None:
        row = {c: "0" for c in MEMBER_COLUMNS}
        row.update(queue=queue, instance_id="single_box", uuid=uuid, session_uuid=session, cid_number=cid_number,
                   cid_name=cid_name, system_epoch=str(int(joined)), joined_epoch=str(int(joined)),
                   serving_agent=serving_agent, serving_system="single_box" if serving_agent else "", state=state,
                   bridge_epoch=str(int(bridge_epoch)))
        self.members.append(row)

    def _member(self, uuid: str) -> dict[str, str] | None:
        return next((m for m in self.members if m["uuid"] == uuid), None)

    def apply(self, h: dict[str, str], t: float) -> None:
        """What mod_callcenter writes to its tables when it fires this event."""
        self.now = t
        action, second = h.get("CC-Action", ""), str(int(t))
        member, agent = self._member(h.get("CC-Member-UUID", "")), self.agents.get(h.get("CC-Agent", ""))
        if action in ("member-queue-start", "member-queue-resume") and member is None:
            self.add_member(h["CC-Queue"], h["CC-Member-UUID"], h["CC-Member-Session-UUID"], t,
                            h.get("CC-Member-CID-Number", ""), h.get("CC-Member-CID-Name", ""))
        elif action == "agent-offering" and member is not None:
            member.update(state="Trying", serving_agent=h["CC-Agent"], serving_system="single_box")
        elif action == "bridge-agent-start" and member is not None:
            member.update(state="Answered", bridge_epoch=second, serving_agent=h["CC-Agent"])
            if agent:
                agent["last_bridge_start"] = second
        elif action == "bridge-agent-fail" and member is not None:
            member.update(state="Waiting", serving_agent="", serving_system="")
        elif action == "bridge-agent-end":
            if h.get("CC-Agent-Bridged", "true") == "true":
                self.members = [m for m in self.members if m["uuid"] != h.get("CC-Member-UUID")]
                if agent:
                    agent["last_bridge_end"] = second
        elif action == "member-queue-end" and h.get("CC-Cause") == "Cancel" and member is not None:
            member.update(state="Abandoned", session_uuid="", abandoned_epoch=second)
        elif action == "agent-status-change" and agent:
            agent.update(status=h["CC-Agent-Status"], last_status_change=second)
        elif action == "agent-state-change" and agent:
            agent["state"] = h["CC-Agent-State"]

    def api(self, command: str) -> str:
        words = command.split()
        if words == ["strepoch"]:
            return str(int(math.floor(self.now)))
        if not words or words[0] != "callcenter_config":
            return f"-ERR {words[0] if words else ''} Command not found!\n"
        rest = words[1:]
        if rest == ["queue", "list"]:
            rows = [{c: "0" for c in QUEUE_COLUMNS} | {"name": q, "strategy": "longest-idle-agent"} for q in self.queues]
            return table(QUEUE_COLUMNS, rows)
        if rest[:3] == ["queue", "list", "members"] and len(rest) == 4:
            now = int(self.now)
            rows = [m | {"score": str(now - int(m["joined_epoch"]))} for m in self.members if m["queue"] == rest[3]]
            return table(MEMBER_COLUMNS, rows)
        if rest == ["agent", "list"]:
            return table(AGENT_COLUMNS, list(self.agents.values()))
        if rest == ["tier", "list"]:
            return table(TIER_COLUMNS, self.tiers)
        return "-ERR Invalid!\n"


class ScriptedEslServer:
    """The event socket of a scripted switch (see the module docstring)."""

    def __init__(self, password: str, tables: CallcenterTables, steps: list[Step], *,
                 ready_command: str = "api callcenter_config tier list", chunk_size: int | None = None,
                 refuse_after_drop: int = 0, api_override: dict[str, str] | None = None):
        self.password, self.tables, self.steps = password, tables, steps
        self.ready_command = ready_command
        self.chunk_size = chunk_size  # write frames in pieces of this many bytes (1: byte by byte)
        self.refuse_after_drop = refuse_after_drop
        self.api_override = api_override or {}
        self.connections = 0  # TCP connections accepted, refused ones included
        self.commands: list[str] = []  # every command received, passwords included (tests only)
        self.sent = bytearray()  # every byte sent to clients, in order: a capture of the sessions
        self.done = asyncio.Event()  # the whole script was played
        self._server: asyncio.base_events.Server | None = None
        self._player: asyncio.Task | None = None
        self._client: tuple[asyncio.StreamWriter, asyncio.Lock] | None = None
        self._ready = asyncio.Event()
        self._refuse = 0
        self._sequence = 5000

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._player = asyncio.create_task(self._play())
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._player is not None:
            self._player.cancel()
        if self._client is not None:
            self._client[0].transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ---- the script ----------------------------------------------------------------------

    async def _play(self) -> None:
        for i, step in enumerate(self.steps):
            if not step.offline:
                await self._ready.wait()
            headers = step.headers | {"Event-Sequence": str(self._sequence + i)}
            self.tables.apply(headers, step.t)
            if not step.offline and self._client is not None:
                await self._write(*self._client, event_frame(headers))
            if step.drop_after and self._client is not None:
                self._client[0].transport.abort()  # like a network failure: no goodbye
                self._client = None
                self._ready.clear()
                self._refuse = self.refuse_after_drop
        self.done.set()

    # ---- one connection --------------------------------------------------------------------

    async def _write(self, writer: asyncio.StreamWriter, lock: asyncio.Lock, data: bytes) -> None:
        async with lock:  # the player and the command loop share the socket: whole frames only
            if writer.transport.is_closing():
                return
            self.sent += data
            step = self.chunk_size or len(data)
            for i in range(0, len(data), step):
                writer.write(data[i : i + step])
                await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._refuse > 0:
            self._refuse -= 1
            writer.transport.abort()
            return
        lock = asyncio.Lock()
        try:
            await self._write(writer, lock, frame({"Content-Type": "auth/request"}))
            command = await self._command(reader)
            if command != f"auth {self.password}":
                await self._write(writer, lock, frame({"Content-Type": "command/reply", "Reply-Text": "-ERR invalid"}))
                await self._write(writer, lock, frame({"Content-Type": "text/disconnect-notice"}, DISCONNECT_NOTICE))
                writer.close()
                return
            await self._write(writer, lock, frame({"Content-Type": "command/reply", "Reply-Text": "+OK accepted"}))
            while True:
                command = await self._command(reader)
                if command.startswith("event plain "):
                    reply = frame({"Content-Type": "command/reply", "Reply-Text": "+OK event listener enabled plain"})
                elif command.startswith("api "):
                    text = self.api_override.get(command[4:]) or self.tables.api(command[4:])
                    reply = frame({"Content-Type": "api/response"}, text.encode())
                elif command == "exit":
                    await self._write(writer, lock, frame({"Content-Type": "command/reply", "Reply-Text": "+OK bye"}))
                    writer.close()
                    return
                else:
                    reply = frame({"Content-Type": "command/reply", "Reply-Text": "-ERR command not found"})
                await self._write(writer, lock, reply)
                if command == self.ready_command:
                    self._client = (writer, lock)
                    self._ready.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def _command(self, reader: asyncio.StreamReader) -> str:
        raw = await reader.readuntil(b"\n\n")
        command = raw.decode().strip()
        self.commands.append(command)
        return command


# ---- what mod_callcenter fires (header sets from mod_callcenter.c) ----------------------------


@dataclass(frozen=True)
class Member:
    """A caller in a queue: mod_callcenter's member UUID and the caller's channel UUID."""

    queue: str
    uuid: str
    session: str
    cid_number: str = "+15550100"
    cid_name: str = "Zoë Müller"


def core(t: float, action: str) -> dict[str, str]:
    """The headers every FreeSWITCH event has, then the CC-Action."""
    return {
        "Event-Name": "CUSTOM",
        "Core-UUID": CORE_UUID,
        "FreeSWITCH-Hostname": "fs1.example.net",
        "FreeSWITCH-Switchname": "fs1",
        "FreeSWITCH-IPv4": "10.0.0.5",
        "Event-Date-Timestamp": str(round(t * 1_000_000)),
        "Event-Calling-File": "mod_callcenter.c",
        "Event-Subclass": "callcenter::info",
        "CC-Action": action,
    }


def _member_headers(m: Member) -> dict[str, str]:
    return {"CC-Member-UUID": m.uuid, "CC-Member-Session-UUID": m.session,
            "CC-Member-CID-Name": m.cid_name, "CC-Member-CID-Number": m.cid_number}


def member_queue_start(t: float, m: Member) -> Step:
    return Step(t, core(t, "member-queue-start") | {"CC-Queue": m.queue, "Unique-ID": m.session} | _member_headers(m))


def agent_offering(t: float, m: Member, agent: str) -> Step:
    return Step(t, core(t, "agent-offering") | {"CC-Queue": m.queue, "CC-Agent": agent, "CC-Agent-Type": "callback",
                                                "CC-Agent-System": "single_box"} | _member_headers(m))


def bridge_agent_start(t: float, m: Member, agent: str, joined: float, called: float) -> Step:
    return Step(t, core(t, "bridge-agent-start") | {
        "CC-Queue": m.queue, "CC-Agent": agent, "CC-Agent-System": "single_box", "CC-Agent-UUID": f"agent-leg-{m.uuid}",
        "CC-Agent-Called-Time": str(int(called)), "CC-Agent-Answered-Time": str(int(t)),
        "CC-Member-Joined-Time": str(int(joined))} | _member_headers(m))


def bridge_agent_end(t: float, m: Member, agent: str, joined: float, called: float, answered: float,
                     bridged: bool = True) -> Step:
    return Step(t, core(t, "bridge-agent-end") | {
        "CC-Queue": m.queue, "CC-Hangup-Cause": "NONE", "CC-Agent": agent, "CC-Agent-System": "single_box",
        "CC-Agent-UUID": f"agent-leg-{m.uuid}", "CC-Agent-Bridged": "true" if bridged else "false",
        "CC-Agent-Called-Time": str(int(called)), "CC-Agent-Answered-Time": str(int(answered)),
        "CC-Member-Joined-Time": str(int(joined)), "CC-Bridge-Terminated-Time": str(int(t))} | _member_headers(m))


def bridge_agent_fail(t: float, m: Member, agent: str, joined: float, called: float, cause: str = "NO_ANSWER") -> Step:
    return Step(t, core(t, "bridge-agent-fail") | {
        "CC-Queue": m.queue, "CC-Hangup-Cause": cause, "CC-Agent": agent, "CC-Agent-System": "single_box",
        "CC-Agent-Called-Time": str(int(called)), "CC-Agent-Aborted-Time": str(int(t)),
        "CC-Member-Joined-Time": str(int(joined))} | _member_headers(m))


def member_queue_end_terminated(t: float, m: Member, agent: str, joined: float, called: float, answered: float) -> Step:
    return Step(t, core(t, "member-queue-end") | {
        "CC-Queue": m.queue, "CC-Hangup-Cause": "NONE", "CC-Cause": "Terminated", "CC-Agent": agent,
        "CC-Agent-System": "single_box", "CC-Agent-UUID": f"agent-leg-{m.uuid}",
        "CC-Agent-Called-Time": str(int(called)), "CC-Agent-Answered-Time": str(int(answered)),
        "CC-Member-Leaving-Time": str(int(t)), "CC-Member-Joined-Time": str(int(joined))} | _member_headers(m))


def member_queue_end_cancel(t: float, m: Member, joined: float, reason: str) -> Step:
    return Step(t, core(t, "member-queue-end") | {
        "CC-Queue": m.queue, "CC-Member-Leaving-Time": str(int(t)), "CC-Member-Joined-Time": str(int(joined)),
        "CC-Cause": "Cancel", "CC-Cancel-Reason": reason} | _member_headers(m))


def agent_status_change(t: float, agent: str, status: str) -> Step:
    return Step(t, core(t, "agent-status-change") | {"CC-Agent": agent, "CC-Agent-Status": status})


def agent_state_change(t: float, agent: str, state: str) -> Step:
    return Step(t, core(t, "agent-state-change") | {"CC-Agent": agent, "CC-Agent-State": state})


def members_count(t: float, queue: str, count: int) -> Step:
    return Step(t, core(t, "members-count") | {"CC-Queue": queue, "CC-Count": str(count), "CC-Selection": "Single-Queue"})
