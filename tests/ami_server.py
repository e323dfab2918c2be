"""A scripted Asterisk Manager Interface server for the tests: real TCP on 127.0.0.1, real line protocol.

It speaks what Asterisk 16-20 send (greeting, Login, Ping with the server's Timestamp, QueueStatus
answered by QueueParams / QueueMember / QueueEntry / QueueStatusComplete, events with a Privilege
and a Timestamp header and the full channel snapshot of app_queue's events), and keeps the state a
QueueStatus answer needs (waiting calls, member rows) by applying every event of the script, also
those it does not send. It reads actions with its own small parser, independent of callpulse's.

A script is a list of `AmiEvent` and `Drop` steps, played in order once the client has its
QueueStatus answer. The server's clock is the newest time it knows (its start clock, the
Timestamps of the events applied, a `Drop`'s clock), so the client's snapshot times fit the script.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

GREETING = b"Asterisk Call Manager/9.0.0\r\n"


@dataclass
class Call:
    """A caller's channel."""

    uniqueid: str
    number: str = "+15550100000"

    @property
    def channel(self) -> str:
        return f"PJSIP/trunk-{self.uniqueid.replace('.', '')[-8:]}"


@dataclass
class Member:
    """A queue member as Asterisk describes it."""

    name: str
    interface: str

    @property
    def leg(self) -> str:  # the Uniqueid of the member's channel when a call rings it
        return f"leg-{self.name}"


@dataclass
class AmiEvent:
    name: str
    timestamp: float | None  # None: sent without a Timestamp header (timestampevents=no)
    headers: list[tuple[str, str]]

    def render(self) -> bytes:
        lines = [f"Event: {self.name}", "Privilege: agent,all"]
        if self.timestamp is not None:
            lines.append(f"Timestamp: {self.timestamp:.6f}")
        lines += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def get(self, key: str) -> str:
        return next(v for k, v in self.headers if k == key)


@dataclass
class Drop:
    """Close the connection here. `partial`: first send half of the next event (it is sent in full
    after the reconnect). `gap`: events that happen while the client is away (applied, not sent).
    `clock`: the server's clock at the reconnect. `refuse`: connections to refuse after this one."""

    partial: bool = False
    gap: list[AmiEvent] = field(default_factory=list)
    clock: float | None = None
    refuse: int = 0


# ---- event builders (fields in Asterisk's order) -----------------------------------------------

def _channel(call: Call, queue: str, prefix: str = "") -> list[tuple[str, str]]:
    return [(prefix + k, v) for k, v in [
        ("Channel", call.channel), ("ChannelState", "6"), ("ChannelStateDesc", "Up"),
        ("CallerIDNum", call.number), ("CallerIDName", "<unknown>"), ("ConnectedLineNum", "<unknown>"),
        ("ConnectedLineName", "<unknown>"), ("Language", "en"), ("AccountCode", ""), ("Context", "ext-queues"),
        ("Exten", queue), ("Priority", "7"), ("Uniqueid", call.uniqueid), ("Linkedid", call.uniqueid)]]


def _member_leg(member: Member, call: Call) -> list[tuple[str, str]]:
    return [("Dest" + k, v) for k, v in [
        ("Channel", f"{member.interface}-0000002a"), ("ChannelState", "6"), ("ChannelStateDesc", "Up"),
        ("CallerIDNum", member.interface.split("/")[-1]), ("CallerIDName", member.name),
        ("ConnectedLineNum", call.number), ("ConnectedLineName", "<unknown>"), ("Language", "en"),
        ("AccountCode", ""), ("Context", "from-internal"), ("Exten", ""), ("Priority", "1"),
        ("Uniqueid", member.leg), ("Linkedid", call.uniqueid)]]


def _agent_event(name, ts, queue, call, member, extra=()):
    headers = _channel(call, queue) + _member_leg(member, call)
    headers += [("Queue", queue), ("MemberName", member.name), ("Interface", member.interface), *extra]
    return AmiEvent(name, ts, headers)


def join(ts, queue, call, position=1, count=1):
    return AmiEvent("QueueCallerJoin", ts, _channel(call, queue) + [("Queue", queue), ("Position", str(position)),
                                                                      ("Count", str(count))])


def leave(ts, queue, call, position=1, count=0):
    return AmiEvent("QueueCallerLeave", ts, _channel(call, queue) + [("Queue", queue), ("Count", str(count)),
                                                                       ("Position", str(position))])


def abandon(ts, queue, call, hold_time, position=1, original_position=1):
    return AmiEvent("QueueCallerAbandon", ts, _channel(call, queue) + [
        ("Queue", queue), ("Position", str(position)), ("OriginalPosition", str(original_position)),
        ("HoldTime", str(hold_time))])


def agent_called(ts, queue, call, member):
    return _agent_event("AgentCalled", ts, queue, call, member)


def ring_no_answer(ts, queue, call, member, ring_ms):
    return _agent_event("AgentRingNoAnswer", ts, queue, call, member, [("RingTime", str(ring_ms))])


def agent_dump(ts, queue, call, member):
    return _agent_event("AgentDump", ts, queue, call, member)


def connect(ts, queue, call, member, hold_time, ring_time):
    return _agent_event("AgentConnect", ts, queue, call, member, [("RingTime", str(ring_time)),
                                                                   ("HoldTime", str(hold_time))])


def complete(ts, queue, call, member, hold_time, talk_time, reason):
    return _agent_event("AgentComplete", ts, queue, call, member, [
        ("HoldTime", str(hold_time)), ("TalkTime", str(talk_time)), ("Reason", reason)])


def hold(ts, member, call, on=True):
    """Hold / Unhold raised on the member's channel (the phone that pressed hold)."""
    headers = [(k[4:], v) for k, v in _member_leg(member, call)]  # the member leg, without "Dest"
    if on:
        headers.append(("MusicClass", "default"))
    return AmiEvent("Hold" if on else "Unhold", ts, headers)


def varset(ts, call, queue, variable, value):
    return AmiEvent("VarSet", ts, _channel(call, queue) + [("Variable", variable), ("Value", value)])


def member_event(name, ts, queue, member, paused=False, reason="", status=1, in_call=0, login_time=None,
                 extra=()):
    """QueueMemberAdded / Removed / Pause / Status with the member blob of Asterisk 16+."""
    headers = [("Queue", queue), ("MemberName", member.name), ("Interface", member.interface),
               ("StateInterface", member.interface), ("Membership", "dynamic"), ("Penalty", "0"),
               ("CallsTaken", "0"), ("LastCall", "0"), ("LastPause", str(int(ts or 0)) if paused else "0"),
               ("LoginTime", str(int(login_time if login_time is not None else (ts or 0) - 3600))),
               ("InCall", str(in_call)), ("Status", str(status)), ("Paused", "1" if paused else "0"),
               ("PausedReason", reason), ("Ringinuse", "0"), ("Wrapuptime", "0"), *extra]
    return AmiEvent(name, ts, headers)


# ---- the server --------------------------------------------------------------------------------

class ScriptedAmi:
    def __init__(self, username: str, secret: str, script: list, members: list[tuple[str, Member]] = (),
                 waiting: list[tuple[str, Call, float]] = (), clock: float = 0.0, chunk: int | None = None,
                 answer_pings: bool = True, paused: dict[tuple[str, str], str] | None = None):
        self.username, self.secret = username, secret
        self.script = list(script)
        self.clock = clock
        self.chunk = chunk  # write in pieces of this many bytes (1: byte by byte)
        self.answer_pings = answer_pings
        self.rows: dict[tuple[str, str], dict[str, str]] = {}  # (queue, member name) -> QueueMember fields
        for queue, member in members:
            reason = (paused or {}).get((queue, member.name))
            event = member_event("QueueMemberAdded", clock - 3600, queue, member, paused=reason is not None,
                                 reason=reason or "", login_time=clock - 3600)
            self._apply(event)
        self.waiting: dict[str, list[tuple[Call, float]]] = {}
        for queue, call, since in waiting:
            self.waiting.setdefault(queue, []).append((call, since))
        self.cursor = 0  # next script step
        self.refuse = 0
        self.connections: list[float] = []  # time.monotonic() of every accepted connection
        self.logins: list[bool] = []  # one per Login: was it accepted
        self.actions: list[dict[str, str]] = []
        self.script_done = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> ScriptedAmi:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    # ---- one connection ---------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(time.monotonic())
        if self.refuse > 0:  # Asterisk down: the connection is closed at once
            self.refuse -= 1
            writer.transport.abort()
            return
        lock = asyncio.Lock()  # Asterisk never interleaves two messages on a connection
        session = {"logged_in": False, "player": None}
        try:
            await self._send(writer, lock, GREETING)
            buffer = b""
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    block, buffer = buffer.split(b"\r\n\r\n", 1)
                    action = dict(line.split(": ", 1) for line in block.decode().split("\r\n") if ": " in line)
                    self.actions.append(action)
                    if not await self._answer(action, writer, lock, session):
                        writer.close()
                        return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            player = session["player"]
            if player is not None:
                player.cancel()

    async def _answer(self, action, writer, lock, session) -> bool:
        """Answer one action; False closes the connection."""
        name, aid = action.get("Action", ""), action.get("ActionID", "")
        head = f"ActionID: {aid}\r\n" if aid else ""
        if name == "Login":
            ok = action.get("Username") == self.username and action.get("Secret") == self.secret
            self.logins.append(ok)
            if not ok:
                await self._send(writer, lock, f"Response: Error\r\n{head}Message: Authentication failed\r\n\r\n".encode())
                return False
            session["logged_in"] = True
            await self._send(writer, lock, f"Response: Success\r\n{head}Message: Authentication accepted\r\n\r\n".encode())
            await self._send(writer, lock, b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 3600\r\n"
                                           b"LastReload: 3600\r\nStatus: Fully Booted\r\n\r\n")
        elif not session["logged_in"]:
            await self._send(writer, lock, f"Response: Error\r\n{head}Message: Permission denied\r\n\r\n".encode())
        elif name == "Ping":
            if self.answer_pings:
                await self._send(writer, lock, f"Response: Success\r\n{head}Ping: Pong\r\n"
                                               f"Timestamp: {self.clock:.6f}\r\n\r\n".encode())
        elif name == "QueueStatus":
            await self._send(writer, lock, self._queue_status(head))
            if session["player"] is None:
                session["player"] = asyncio.create_task(self._play(writer, lock))
                self._tasks.add(session["player"])
        elif name == "Logoff":
            await self._send(writer, lock, f"Response: Goodbye\r\n{head}Message: Thanks for all the fish.\r\n\r\n".encode())
            return False
        else:
            await self._send(writer, lock, f"Response: Error\r\n{head}Message: Invalid/unknown command\r\n\r\n".encode())
        return True

    def _queue_status(self, head: str) -> bytes:
        out = [f"Response: Success\r\n{head}EventList: start\r\nMessage: Queue status will follow\r\n\r\n"]
        queues = sorted({q for q, _ in self.rows} | set(self.waiting))
        items = 0
        for queue in queues:
            entries = self.waiting.get(queue, [])
            out.append(f"Event: QueueParams\r\nQueue: {queue}\r\nMax: 0\r\nStrategy: ringall\r\nCalls: {len(entries)}\r\n"
                       f"Holdtime: 0\r\nTalkTime: 0\r\nCompleted: 0\r\nAbandoned: 0\r\nServiceLevel: 60\r\n"
                       f"ServicelevelPerf: 0.0\r\nServicelevelPerf2: 0.0\r\nWeight: 0\r\n{head}\r\n")
            for (q, _), row in sorted(self.rows.items()):
                if q == queue:
                    fields = [("Queue", q), ("Name", row["MemberName"]), ("Location", row["Interface"]),
                              *[(k, row[k]) for k in ("StateInterface", "Membership", "Penalty", "CallsTaken",
                                                      "LastCall", "LastPause", "LoginTime", "InCall", "Status",
                                                      "Paused", "PausedReason", "Wrapuptime")]]
                    out.append("Event: QueueMember\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + head + "\r\n")
                    items += 1
            for position, (call, since) in enumerate(entries, 1):
                out.append(f"Event: QueueEntry\r\nQueue: {queue}\r\nPosition: {position}\r\nChannel: {call.channel}\r\n"
                           f"Uniqueid: {call.uniqueid}\r\nCallerIDNum: {call.number}\r\nCallerIDName: <unknown>\r\n"
                           f"ConnectedLineNum: <unknown>\r\nConnectedLineName: <unknown>\r\n"
                           f"Wait: {int(self.clock - since)}\r\nPriority: 0\r\n{head}\r\n")
                items += 1
            items += 1
        out.append(f"Event: QueueStatusComplete\r\n{head}EventList: Complete\r\nListItems: {items}\r\n\r\n")
        return "".join(out).encode()

    async def _play(self, writer, lock) -> None:
        while self.cursor < len(self.script):
            step = self.script[self.cursor]
            self.cursor += 1
            if isinstance(step, Drop):
                for event in step.gap:
                    self._apply(event)
                if step.clock is not None:
                    self.clock = max(self.clock, step.clock)
                self.refuse = step.refuse
                nxt = self.script[self.cursor] if self.cursor < len(self.script) else None
                if step.partial and isinstance(nxt, AmiEvent):
                    data = nxt.render()
                    await self._send(writer, lock, data[: len(data) // 2])
                writer.transport.abort()
                return
            await self._send(writer, lock, step.render())
            self._apply(step)
        self.script_done.set()

    async def _send(self, writer, lock, data: bytes) -> None:
        async with lock:
            if self.chunk is None:
                writer.write(data)
                await writer.drain()
                return
            for i in range(0, len(data), self.chunk):
                writer.write(data[i:i + self.chunk])
                await writer.drain()
                await asyncio.sleep(0)  # let the client read what is there: reads end mid-message

    # ---- the state a QueueStatus answer shows -----------------------------------------------

    def _apply(self, event: AmiEvent) -> None:
        if event.timestamp is not None:
            self.clock = max(self.clock, event.timestamp)
        h = dict(event.headers)
        if event.name == "QueueCallerJoin":
            call = Call(h["Uniqueid"], h["CallerIDNum"])
            self.waiting.setdefault(h["Queue"], []).append((call, event.timestamp))
        elif event.name == "QueueCallerLeave":
            entries = self.waiting.get(h["Queue"], [])
            entries[:] = [(c, s) for c, s in entries if c.uniqueid != h["Uniqueid"]]
        elif event.name == "QueueMemberRemoved":
            self.rows.pop((h["Queue"], h["MemberName"]), None)
        elif event.name.startswith("QueueMember"):
            self.rows[(h["Queue"], h["MemberName"])] = {k: v for k, v in event.headers}
        elif event.name in ("AgentConnect", "AgentComplete"):
            row = self.rows.get((h["Queue"], h["MemberName"]))
            if row is not None:
                row["InCall"] = "1" if event.name == "AgentConnect" else "0"
                if event.name == "AgentComplete":
                    row["CallsTaken"] = str(int(row["CallsTaken"]) + 1)
                    row["LastCall"] = str(int(event.timestamp or 0))
