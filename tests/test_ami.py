"""The AMI adapter: its parser, its mapping, and the live client against a scripted Asterisk
Manager Interface server (tests/ami_server.py) on real loopback TCP. Expected numbers are worked out
by hand from the script's timestamps."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from ami_server import (
    Call,
    Drop,
    Member,
    ScriptedAmi,
    abandon,
    agent_called,
    agent_dump,
    complete,
    connect,
    hold,
    join,
    leave,
    member_event,
    ring_no_answer,
    varset,
)

from callpulse.config import load_config
from callpulse.events import Router, parse_time, queues_of
from callpulse.kpi.model import QueueModel
from callpulse.sources import Skips, event_id
from callpulse.sources.ami import AmiAuthError, AmiMapper, AmiParser, AmiSource, AmiStream, backoff_delay, parse_capture

T0 = parse_time("2026-01-05T09:00:00.000Z")
SOURCE = "asterisk:pbx1"
USER, SECRET = "callpulse", "s3cret"
ALICE, BOB, CAROL = Member("alice", "PJSIP/1001"), Member("bob", "PJSIP/1002"), Member("carol", "PJSIP/1003")
MEMBERS = [("IT", ALICE), ("sales", ALICE), ("IT", BOB), ("IT", CAROL)]
C0, C1, C2, C3, C4, C5 = (Call(f"1767603600.{n}", f"+1555010{n:04d}") for n in (100, 101, 102, 103, 104, 105))


# ---- helpers -----------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def ami_server(script, **kwargs):
    server = await ScriptedAmi(USER, SECRET, script, **kwargs).start()
    try:
        yield server
    finally:
        await server.close()


def ami_source(server, secret=SECRET, **kwargs) -> AmiSource:
    kwargs.setdefault("rng", lambda: 0.5)
    return AmiSource("127.0.0.1", server.port, USER, secret, SOURCE, reconnect_min=0.05, reconnect_max=0.4, **kwargs)


async def run(source: AmiSource, until, timeout: float = 10.0) -> list[dict]:
    """Events from the source until `until(events)` holds; fails after `timeout` seconds."""
    events: list[dict] = []
    batches = source.batches()

    async def consume():
        async for batch in batches:
            events.extend(batch.events)
            if until(events):
                return

    try:
        await asyncio.wait_for(consume(), timeout)
    except TimeoutError:
        pytest.fail(f"condition not met within {timeout} s; got {[short(e) for e in events]}")
    finally:
        await batches.aclose()
    return events


def reached(offset: float):
    return lambda events: any(parse_time(e["time"]) >= T0 + offset for e in events)


def short(e: dict) -> tuple:
    """An event as (type, seconds after T0, the call or agent, what else it says)."""
    t = round(parse_time(e["time"]) - T0, 3)
    who = e.get("call_id") or e["agent_id"]
    rest = {k: e[k] for k in ("queue", "agent_id", "attempt", "ring_seconds", "ended_by", "reason", "state",
                              "queues", "attributes") if k in e}
    if "call_id" in e and rest["queue"] == "IT":  # the scripted calls are all in IT
        del rest["queue"]
    if rest.get("agent_id") == who:
        del rest["agent_id"]
    return (e["type"], t, who, rest)


def assert_valid(events: list[dict]) -> None:
    router = Router(max_future_seconds=float("inf"))
    for e in events:
        _, rejected = router.check(orjson.dumps(e))
        assert rejected is None, (e, rejected and rejected.detail)
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids), "duplicate event ids"


def fold(events: list[dict], queue: str) -> dict:
    model = QueueModel(load_config(None).queue(queue), lateness_seconds=60.0, histogram_bounds=[10, 20])
    for e in sorted((e for e in events if queue in queues_of(e)), key=lambda e: parse_time(e["time"])):
        assert model.apply(e, parse_time(e["time"])) in ("applied", "late")
    return model.read(model.watermark)


# ---- the scripted day: five calls in queue IT -------------------------------------------------

def call_flows() -> list:
    return [
        # C1: rings alice, answered after 6 s, talks 120 s, the caller hangs up.
        join(T0, "IT", C1),
        agent_called(T0 + 2, "IT", C1, ALICE),
        leave(T0 + 6, "IT", C1),  # app_queue sends the leave just before the connect
        connect(T0 + 6, "IT", C1, ALICE, hold_time=6, ring_time=4),
        # C2: hangs up after 15 s.
        join(T0 + 10, "IT", C2),
        abandon(T0 + 25, "IT", C2, hold_time=15),
        leave(T0 + 25, "IT", C2),
        # C3: bob does not answer (15 s ring), carol answers after 20 s, talks 60 s, hangs up.
        join(T0 + 30, "IT", C3),
        agent_called(T0 + 31, "IT", C3, BOB),
        ring_no_answer(T0 + 46, "IT", C3, BOB, ring_ms=15000),
        agent_called(T0 + 47, "IT", C3, CAROL),
        leave(T0 + 50, "IT", C3),
        connect(T0 + 50, "IT", C3, CAROL, hold_time=20, ring_time=3),
        # C4: bob answers after 4 s, puts the caller on hold for 10 s, transfers at 124 s.
        join(T0 + 60, "IT", C4),
        agent_called(T0 + 61, "IT", C4, BOB),
        leave(T0 + 64, "IT", C4),
        connect(T0 + 64, "IT", C4, BOB, hold_time=4, ring_time=3),
        hold(T0 + 80, BOB, C4),
        member_event("QueueMemberPause", T0 + 85, "IT", CAROL, paused=True, reason="break", in_call=1),
        hold(T0 + 90, BOB, C4, on=False),
        complete(T0 + 110, "IT", C3, CAROL, hold_time=20, talk_time=60, reason="agent"),
        complete(T0 + 124, "IT", C4, BOB, hold_time=4, talk_time=60, reason="transfer"),
        complete(T0 + 126, "IT", C1, ALICE, hold_time=6, talk_time=120, reason="caller"),
        # bob goes to lunch, his phone drops off and comes back; carol's break ends.
        member_event("QueueMemberPause", T0 + 130, "IT", BOB, paused=True, reason="lunch"),
        member_event("QueueMemberStatus", T0 + 135, "IT", BOB, paused=True, reason="lunch", status=5),
        join(T0 + 140, "IT", C5),
        member_event("QueueMemberStatus", T0 + 145, "IT", BOB, paused=True, reason="lunch", status=1),
        member_event("QueueMemberPause", T0 + 150, "IT", CAROL, paused=False),
        # C5: times out after 30 s (no AgentConnect follows its leave).
        varset(T0 + 170, C5, "IT", "QUEUESTATUS", "TIMEOUT"),
        leave(T0 + 170, "IT", C5),
        member_event("QueueMemberPause", T0 + 200, "IT", BOB, paused=False),
    ]


START = T0 - 60  # the server clock when the client connects (its snapshot time)

EXPECTED_CALL_FLOWS = [
    # the QueueStatus snapshot at login
    ("agent.queue_joined", -60, "alice", {"queue": "IT"}),
    ("agent.queue_joined", -60, "alice", {"queue": "sales"}),
    ("agent.state_changed", -60, "alice", {"state": "available", "queues": ["IT", "sales"]}),
    ("agent.queue_joined", -60, "bob", {"queue": "IT"}),
    ("agent.state_changed", -60, "bob", {"state": "available", "queues": ["IT"]}),
    ("agent.queue_joined", -60, "carol", {"queue": "IT"}),
    ("agent.state_changed", -60, "carol", {"state": "available", "queues": ["IT"]}),
    # the events
    ("call.offered", 0, C1.uniqueid, {}),
    ("call.ringing", 2, C1.uniqueid, {"agent_id": "alice", "attempt": 1}),
    ("call.answered", 6, C1.uniqueid, {"agent_id": "alice"}),
    ("agent.state_changed", 6, "alice", {"state": "on_call", "queues": ["IT", "sales"]}),
    ("call.offered", 10, C2.uniqueid, {}),
    ("call.abandoned", 25, C2.uniqueid, {}),
    ("call.offered", 30, C3.uniqueid, {}),
    ("call.ringing", 31, C3.uniqueid, {"agent_id": "bob", "attempt": 1}),
    ("call.ring_no_answer", 46, C3.uniqueid, {"agent_id": "bob", "attempt": 1, "ring_seconds": 15.0}),
    ("call.ringing", 47, C3.uniqueid, {"agent_id": "carol", "attempt": 2}),
    ("call.answered", 50, C3.uniqueid, {"agent_id": "carol"}),
    ("agent.state_changed", 50, "carol", {"state": "on_call", "queues": ["IT"]}),
    ("call.offered", 60, C4.uniqueid, {}),
    ("call.ringing", 61, C4.uniqueid, {"agent_id": "bob", "attempt": 1}),
    ("call.answered", 64, C4.uniqueid, {"agent_id": "bob"}),
    ("agent.state_changed", 64, "bob", {"state": "on_call", "queues": ["IT"]}),
    ("call.hold_started", 80, C4.uniqueid, {"agent_id": "bob"}),
    # (carol pauses at 85 s while on the call: she stays on_call until it ends)
    ("call.hold_ended", 90, C4.uniqueid, {"agent_id": "bob"}),
    ("call.ended", 110, C3.uniqueid, {"agent_id": "carol", "ended_by": "agent"}),
    ("agent.state_changed", 110, "carol", {"state": "not_ready", "reason": "break", "queues": ["IT"]}),
    ("call.transferred", 124, C4.uniqueid, {"agent_id": "bob"}),
    ("agent.state_changed", 124, "bob", {"state": "available", "queues": ["IT"]}),
    ("call.ended", 126, C1.uniqueid, {"agent_id": "alice", "ended_by": "caller"}),
    ("agent.state_changed", 126, "alice", {"state": "available", "queues": ["IT", "sales"]}),
    ("agent.state_changed", 130, "bob", {"state": "not_ready", "reason": "lunch", "queues": ["IT"]}),
    ("agent.state_changed", 135, "bob", {"state": "not_ready", "reason": "unavailable", "queues": ["IT"]}),
    ("call.offered", 140, C5.uniqueid, {}),
    ("agent.state_changed", 145, "bob", {"state": "not_ready", "reason": "lunch", "queues": ["IT"]}),
    ("agent.state_changed", 150, "carol", {"state": "available", "queues": ["IT"]}),
    # C5's leave is a flow-out once the next event shows no AgentConnect came
    ("call.flowed_out", 170, C5.uniqueid, {"reason": "timeout"}),
    ("agent.state_changed", 200, "bob", {"state": "available", "queues": ["IT"]}),
]


def answer_waits(events: list[dict]) -> list[tuple[str, float | None]]:
    """(call, wait_seconds) of every call.answered, after checking that wait_seconds is exactly the
    wait the model computes: the answer's time minus the time of the stay's call.offered."""
    offered: dict[tuple[str, str], float] = {}
    out = []
    for e in events:
        key = (e.get("queue"), e.get("call_id"))
        if e["type"] == "call.offered":
            offered[key] = parse_time(e["time"])
        elif e["type"] == "call.answered":
            entered = offered.pop(key)  # the mapper answers only stays it has offered
            if "wait_seconds" in e:
                assert e["wait_seconds"] == round(parse_time(e["time"]) - entered, 3), e
            out.append((e["call_id"], e.get("wait_seconds")))
    return out


def check_call_flows(events: list[dict]) -> None:
    assert [short(e) for e in events] == EXPECTED_CALL_FLOWS
    assert_valid(events)
    # wait_seconds is the AgentConnect time minus the QueueCallerJoin time (equal to HoldTime here)
    assert answer_waits(events) == [(C1.uniqueid, 6), (C3.uniqueid, 20), (C4.uniqueid, 4)]
    assert all(e["source"] == SOURCE and "caller" not in e for e in events)  # no caller numbers by default

    it = fold(events, "IT")
    totals = it["totals"]
    assert (totals["offered"], totals["answered"], totals["abandoned"], totals["flowed_out"]) == (5, 3, 1, 1)
    assert totals["flowed_out:timeout"] == 1
    assert totals["answer_wait_seconds"] == pytest.approx(6 + 20 + 4)
    assert totals["abandon_wait_seconds"] == pytest.approx(15)
    assert (totals["answered_within:10"], totals["answered_within:20"]) == (2, 3)  # waits 6, 20, 4
    assert (totals["abandoned_within:10"], totals["abandoned_within:20"]) == (0, 1)
    assert totals["handled"] == 3
    assert totals["talk_seconds"] == pytest.approx(120 + 60 + (124 - 64 - 10))
    assert totals["hold_seconds"] == pytest.approx(10)
    assert totals["agent_busy_seconds"] == pytest.approx(120 + 60 + 60)  # on_call: alice, carol, bob
    assert it["live"]["calls_waiting"] == 0
    assert it["live"]["agents"] == {"available": 3, "on_call": 0, "wrap_up": 0, "not_ready": 0}
    sales = fold(events, "sales")
    assert sales["totals"]["offered"] == 0 and sales["totals"]["agent_busy_seconds"] == pytest.approx(120)


# ---- the line protocol -------------------------------------------------------------------------

TRANSCRIPT = (
    b"Asterisk Call Manager/9.0.0\r\n"
    b"Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n"
    b"Event: VarSet\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/x-1\r\nVariable: URL\r\n"
    b"Value: http://example.test/a?b=c: d\r\nUniqueid: 1.1\r\n\r\n"
    b"Response: Success\r\nActionID: 2\r\nMessage: Command output follows\r\n"
    b"Output: Name/username   Host\r\nOutput: 1001/1001       (Unspecified)\r\n\r\n"
    b"Response: Follows\r\nPrivilege: Command\r\nActionID: 3\r\n"
    b"1001/1001       (Unspecified)  D  Yes\r\n--END COMMAND--\r\n\r\n"
    b"Event: QueueCallerJoin\nQueue: \xe5\xae\xa2\xe6\x9c\x8d\nUniqueid: 1.2\nCount: \n\n"  # bare LF, UTF-8
)


def test_parser_splits_messages_whatever_the_read_boundaries():
    whole = AmiParser().feed(TRANSCRIPT)
    parser = AmiParser()
    byte_by_byte = [m for i in range(len(TRANSCRIPT)) for m in parser.feed(TRANSCRIPT[i:i + 1])]
    assert byte_by_byte == whole
    greeting, login, varset_, output, follows, joined = whole
    assert greeting == {"_greeting": "Asterisk Call Manager/9.0.0"}
    assert login == {"response": "Success", "actionid": "1", "message": "Authentication accepted"}
    assert varset_["value"] == "http://example.test/a?b=c: d"  # everything after the first ": "
    assert output["output"] == "Name/username   Host\n1001/1001       (Unspecified)"
    assert follows["_output"] == "1001/1001       (Unspecified)  D  Yes\n--END COMMAND--"
    assert joined == {"event": "QueueCallerJoin", "queue": "客服", "uniqueid": "1.2", "count": ""}


@pytest.mark.parametrize("cut", [b"Queue: IT\r\n", b"Queue: IT\r\nUniq"])  # cut after a line, or within one
def test_a_greeting_in_the_middle_of_a_message_drops_the_cut_message(cut):
    parser = AmiParser()
    messages = parser.feed(b"Event: AgentConnect\r\n" + cut + b"Asterisk Call Manager/9.0.0\r\n"
                           b"Event: FullyBooted\r\n\r\n")
    assert parser.truncated == 1
    assert messages == [{"_greeting": "Asterisk Call Manager/9.0.0"}, {"event": "FullyBooted"}]


def test_backoff_doubles_from_the_minimum_up_to_the_maximum_plus_jitter():
    assert [backoff_delay(n, 0.5, 30.0, 0.0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(2, 0.5, 30.0, 0.999) == pytest.approx(2 * 1.24975)
    assert backoff_delay(10_000, 0.5, 30.0, 0.5) == pytest.approx(30 * 1.125)


# ---- the mapping on its own --------------------------------------------------------------------

def as_message(event) -> dict[str, str]:
    """A scripted event as the parser gives it."""
    return AmiParser().feed(event.render())[0]


def test_agent_dump_is_a_failed_ring_and_a_leave_without_connect_flows_out():
    mapper = AmiMapper(SOURCE, leave_grace_seconds=5.0)
    for m in MEMBERS:
        mapper.map(as_message(member_event("QueueMemberAdded", T0 - 10, m[0], m[1])), T0 - 10)
    script = [join(T0, "IT", C1), agent_called(T0 + 1, "IT", C1, BOB), agent_dump(T0 + 3, "IT", C1, BOB),
              agent_called(T0 + 4, "IT", C1, ALICE), leave(T0 + 9, "IT", C1), connect(T0 + 9, "IT", C1, ALICE, 9, 5),
              join(T0 + 20, "IT", C2), leave(T0 + 50, "IT", C2), join(T0 + 54, "IT", C3), join(T0 + 56, "IT", C4)]
    events = [e for s in script for e in mapper.map(as_message(s), s.timestamp) if e["type"].startswith("call.")]
    assert [short(e) for e in events] == [
        ("call.offered", 0, C1.uniqueid, {}),
        ("call.ringing", 1, C1.uniqueid, {"agent_id": "bob", "attempt": 1}),
        ("call.ring_no_answer", 3, C1.uniqueid, {"agent_id": "bob", "attempt": 1, "attributes": {"ami_event": "AgentDump"}}),
        ("call.ringing", 4, C1.uniqueid, {"agent_id": "alice", "attempt": 2}),
        ("call.answered", 9, C1.uniqueid, {"agent_id": "alice"}),  # the leave before it is no flow-out
        ("call.offered", 20, C2.uniqueid, {}),
        ("call.offered", 54, C3.uniqueid, {}),  # 4 s after C2's leave: still within the grace
        ("call.flowed_out", 50, C2.uniqueid, {"reason": "other"}),  # no QUEUESTATUS seen: reason unknown
        ("call.offered", 56, C4.uniqueid, {}),
    ]
    assert_valid(events)


def test_a_caller_re_entering_the_same_queue_gets_new_ids():
    mapper = AmiMapper(SOURCE)
    first = [mapper.map(as_message(s), s.timestamp) for s in (join(T0, "IT", C1), leave(T0 + 30, "IT", C1))]
    again = mapper.map(as_message(join(T0 + 40, "IT", C1)), T0 + 40)  # flushes the first stay too
    ids = [e["event_id"] for batch in first + [again] for e in batch]
    assert [e["type"] for e in again] == ["call.flowed_out", "call.offered"]
    assert len(set(ids)) == len(ids) == 3


def test_caller_numbers_only_on_request():
    message = as_message(join(T0, "IT", C1))
    assert "caller" not in AmiMapper(SOURCE).map(message, T0)[0]
    assert AmiMapper(SOURCE, include_caller=True).map(message, T0)[0]["caller"] == C1.number


def test_events_without_timestamp_use_the_clock_live_and_are_skipped_in_a_replay(tmp_path):
    untimed = join(None, "IT", C1)
    live = AmiStream(AmiMapper(SOURCE)).on_message(as_message(untimed), clock=T0 + 1.5)
    assert [short(e) for e in live] == [("call.offered", 1.5, C1.uniqueid, {})]
    capture = tmp_path / "untimed.ami"
    capture.write_bytes(b"Asterisk Call Manager/9.0.0\r\n" + untimed.render() + join(T0 + 2, "IT", C2).render())
    skips = Skips()
    assert [short(e) for e in parse_capture(capture, SOURCE, skips)] == [("call.offered", 2, C2.uniqueid, {})]
    assert skips.counts == {"event without a Timestamp header (manager.conf timestampevents=no)": 1}


# ---- the live client ---------------------------------------------------------------------------

async def test_call_flows_become_the_right_canonical_events(tmp_path):
    capture = tmp_path / "pbx1.ami"
    async with ami_server(call_flows(), members=MEMBERS, clock=START) as server:
        events = await run(ami_source(server, capture_path=capture), reached(200))
    check_call_flows(events)
    # The capture of what the server sent replays to the same events, ids included.
    assert list(parse_capture(capture, SOURCE)) == events


async def test_byte_by_byte_writes_parse_the_same(tmp_path):
    async with ami_server(call_flows(), members=MEMBERS, clock=START, chunk=1) as server:
        events = await run(ami_source(server), reached(200), timeout=60.0)
    check_call_flows(events)


async def test_a_call_already_waiting_at_login_comes_from_queue_status_with_its_live_id():
    tail = [agent_called(T0 + 2, "IT", C0, ALICE), leave(T0 + 5, "IT", C0),
            connect(T0 + 5, "IT", C0, ALICE, hold_time=35, ring_time=3),
            complete(T0 + 65, "IT", C0, ALICE, hold_time=35, talk_time=60, reason="caller"),
            member_event("QueueMemberPause", T0 + 70, "IT", BOB, paused=False)]
    members = [("IT", ALICE), ("IT", BOB)]
    async with ami_server(tail, members=members, waiting=[("IT", C0, T0 - 30)], clock=T0,
                          paused={("IT", "bob"): "training"}) as server:
        synced = await run(ami_source(server), reached(70))
    assert [short(e) for e in synced[:5]] == [
        ("call.offered", -30, C0.uniqueid, {}),  # now (the Ping's Timestamp) - Wait
        ("agent.queue_joined", 0, "alice", {"queue": "IT"}),
        ("agent.state_changed", 0, "alice", {"state": "available", "queues": ["IT"]}),
        ("agent.queue_joined", 0, "bob", {"queue": "IT"}),
        ("agent.state_changed", 0, "bob", {"state": "not_ready", "reason": "training", "queues": ["IT"]}),
    ]
    assert_valid(synced)
    totals = fold(synced, "IT")["totals"]
    assert (totals["offered"], totals["answered"], totals["answer_wait_seconds"], totals["talk_seconds"]) == (1, 1, 35, 60)
    assert answer_waits(synced) == [(C0.uniqueid, 35)]  # from the snapshot's offer at now - Wait

    # The same call seen joining live: the same ids for all its events.
    async with ami_server([join(T0 - 30, "IT", C0)] + tail, members=members, clock=T0 - 31,
                          paused={("IT", "bob"): "training"}) as server:
        live = await run(ami_source(server), reached(70))
    def call_ids(events):
        return {e["type"]: e["event_id"] for e in events if e.get("call_id") == C0.uniqueid}
    assert call_ids(synced) == call_ids(live)
    assert set(call_ids(live)) == {"call.offered", "call.ringing", "call.answered", "call.ended"}
    assert answer_waits(live) == [(C0.uniqueid, 35)]


async def test_a_dropped_connection_reconnects_with_backoff_and_loses_or_repeats_nothing(tmp_path):
    async with ami_server(call_flows(), members=MEMBERS, clock=START) as server:
        without_drop = await run(ami_source(server), reached(200))

    script = call_flows()
    script.insert(2, Drop(partial=True, refuse=2))  # mid-call: after C1 rang alice, half an event sent
    capture = tmp_path / "dropped.ami"
    async with ami_server(script, members=MEMBERS, clock=START) as server:
        source = ami_source(server, capture_path=capture)
        with_drop = await run(source, reached(200))
        connections = server.connections
    assert with_drop == without_drop  # same events, same ids, same times, same order
    check_call_flows(with_drop)
    assert source.logins == 2 and len(connections) == 4  # two connections refused in between
    # Backoff: the drop came after a login (failure count 0), then two failed attempts.
    assert source.reconnect_delays[:3] == pytest.approx([0.05 * 1.125, 0.1 * 1.125, 0.2 * 1.125])
    gaps = [b - a for a, b in zip(connections, connections[1:])]
    assert all(gap >= delay for gap, delay in zip(gaps, source.reconnect_delays))
    # The capture holds both sessions and the cut message; its replay gives the same events.
    skips = Skips()
    assert list(parse_capture(capture, SOURCE, skips)) == with_drop
    assert skips.counts.get("message cut by a lost connection") == 1


async def test_a_call_that_joined_while_disconnected_comes_from_the_snapshot_with_its_live_id():
    def script(during_gap):
        gap_join = join(T0 + 3, "IT", C2)
        return [join(T0, "IT", C1), agent_called(T0 + 1, "IT", C1, ALICE),
                *([Drop(gap=[gap_join], clock=T0 + 5.5)] if during_gap else [gap_join]),
                leave(T0 + 6, "IT", C1), connect(T0 + 6, "IT", C1, ALICE, hold_time=6, ring_time=5),
                abandon(T0 + 8, "IT", C2, hold_time=5), leave(T0 + 8, "IT", C2),
                complete(T0 + 40, "IT", C1, ALICE, hold_time=6, talk_time=34, reason="caller"),
                member_event("QueueMemberPause", T0 + 60, "IT", BOB, paused=True, reason="meeting")]

    async with ami_server(script(False), members=MEMBERS, clock=START) as server:
        live = await run(ami_source(server), reached(60))
    async with ami_server(script(True), members=MEMBERS, clock=START) as server:
        resynced = await run(ami_source(server), reached(60))
    assert_valid(resynced)
    assert [e["event_id"] for e in resynced] == [e["event_id"] for e in live]
    def offered(events):
        return next(e for e in events if e["type"] == "call.offered" and e["call_id"] == C2.uniqueid)
    # At the reconnect the server clock says 5.5 s and Wait (whole seconds) is 2: offered at 3.5 s.
    assert parse_time(offered(live)["time"]) == T0 + 3
    assert parse_time(offered(resynced)["time"]) == T0 + 3.5
    differ = [(a, b) for a, b in zip(live, resynced) if a != b]
    assert differ == [(offered(live), offered(resynced))]
    for events, wait in ((live, 5.0), (resynced, 4.5)):
        totals = fold(events, "IT")["totals"]
        assert (totals["offered"], totals["answered"], totals["abandoned"]) == (2, 1, 1)
        assert totals["abandon_wait_seconds"] == pytest.approx(wait)


async def test_a_wrong_password_fails_loudly_and_is_not_retried():
    async with ami_server([], members=MEMBERS, clock=START) as server:
        source = ami_source(server, secret="wrong")
        with pytest.raises(AmiAuthError, match="refused: Authentication failed"):
            await asyncio.wait_for(source.batches().__anext__(), 5.0)
        assert server.logins == [False] and len(server.connections) == 1


async def test_a_silent_connection_is_pinged_then_given_up_and_reconnected():
    async with ami_server([], members=MEMBERS, clock=START, answer_pings=False) as server:
        source = ami_source(server, ping_interval=0.2, ping_timeout=0.3)
        batches = source.batches()

        async def consume():
            async for _ in batches:
                pass

        task = asyncio.create_task(consume())
        try:
            async def reconnected():
                while len(server.connections) < 2:
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(reconnected(), 5.0)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await batches.aclose()
    pings = [a["ActionID"] for a in server.actions if a.get("Action") == "Ping"]
    assert any(p.startswith("callpulse-keepalive") for p in pings)
    assert source.logins == 2


async def test_a_leave_is_a_flow_out_after_the_grace_even_when_nothing_else_happens():
    script = [join(T0, "IT", C1), varset(T0 + 30, C1, "IT", "QUEUESTATUS", "LEAVEEMPTY"), leave(T0 + 30, "IT", C1)]
    async with ami_server(script, members=[("IT", BOB)], clock=START) as server:
        events = await run(ami_source(server, leave_grace_seconds=0.3),
                           lambda events: any(e["type"] == "call.flowed_out" for e in events))
    assert [short(e) for e in events if e["type"].startswith("call.")] == [
        ("call.offered", 0, C1.uniqueid, {}), ("call.flowed_out", 30, C1.uniqueid, {"reason": "no_agents"})]
    assert_valid(events)


# ---- agent_name ----------------------------------------------------------------------------------

def test_member_name_is_the_agent_name_when_members_are_named_by_interface():
    """agent_id_from="interface": the member name is the display name (agent_name) of every event that
    names that member; a member whose MemberName is its interface (Asterisk's default) gets none."""
    dave = Member("PJSIP/1004", "PJSIP/1004")  # no name configured: Asterisk uses the interface
    zoe = Member("Zoë Ångström", "PJSIP/1005")
    mapper = AmiMapper(SOURCE, agent_id_from="interface")
    script = [member_event("QueueMemberAdded", T0 - 10, "IT", zoe), member_event("QueueMemberAdded", T0 - 10, "IT", dave),
              join(T0, "IT", C1), agent_called(T0 + 1, "IT", C1, dave), agent_dump(T0 + 2, "IT", C1, dave),
              agent_called(T0 + 3, "IT", C1, zoe), leave(T0 + 5, "IT", C1), connect(T0 + 5, "IT", C1, zoe, 5, 2),
              hold(T0 + 10, zoe, C1), hold(T0 + 20, zoe, C1, on=False),
              complete(T0 + 65, "IT", C1, zoe, hold_time=5, talk_time=60, reason="agent"),
              member_event("QueueMemberPause", T0 + 70, "IT", zoe, paused=True, reason="lunch")]
    events = [e for s in script for e in mapper.map(as_message(s), s.timestamp)]
    named = [(e["type"], e["agent_id"], e.get("agent_name")) for e in events if "agent_id" in e]
    assert named == [
        ("agent.queue_joined", "PJSIP/1005", "Zoë Ångström"),
        ("agent.state_changed", "PJSIP/1005", "Zoë Ångström"),
        ("agent.queue_joined", "PJSIP/1004", None),
        ("agent.state_changed", "PJSIP/1004", None),
        ("call.ringing", "PJSIP/1004", None),
        ("call.ring_no_answer", "PJSIP/1004", None),
        ("call.ringing", "PJSIP/1005", "Zoë Ångström"),
        ("call.answered", "PJSIP/1005", "Zoë Ångström"),
        ("agent.state_changed", "PJSIP/1005", "Zoë Ångström"),
        ("call.hold_started", "PJSIP/1005", "Zoë Ångström"),
        ("call.hold_ended", "PJSIP/1005", "Zoë Ångström"),
        ("call.ended", "PJSIP/1005", "Zoë Ångström"),
        ("agent.state_changed", "PJSIP/1005", "Zoë Ångström"),
        ("agent.state_changed", "PJSIP/1005", "Zoë Ångström"),
    ]
    assert not any("agent_name" in e for e in events if "agent_id" not in e)  # never on caller-only events
    assert_valid(events)
    # The name never enters the ids: the same script without names gives the same ids.
    plain = AmiMapper(SOURCE, agent_id_from="interface")
    anonymous = {"Zoë Ångström": "PJSIP/1005"}
    ids = []
    for s in script:
        message = as_message(s)
        if message.get("membername") in anonymous:
            message["membername"] = anonymous[message["membername"]]
        ids += [e["event_id"] for e in plain.map(message, s.timestamp)]
    assert ids == [e["event_id"] for e in events]


def test_no_agent_name_when_members_are_named_by_member_name():
    mapper = AmiMapper(SOURCE)  # agent_id = MemberName: there is no other name to show
    script = [member_event("QueueMemberAdded", T0 - 10, "IT", ALICE), join(T0, "IT", C1),
              agent_called(T0 + 1, "IT", C1, ALICE), connect(T0 + 3, "IT", C1, ALICE, 3, 2)]
    events = [e for s in script for e in mapper.map(as_message(s), s.timestamp)]
    assert [e["agent_id"] for e in events if "agent_id" in e] == ["alice"] * 5
    assert not any("agent_name" in e for e in events)


def test_queue_status_names_members_too():
    """QueueStatus lists a member as Name / Location (older) or Interface: the snapshot's events
    carry the name as well."""
    mapper = AmiMapper(SOURCE, agent_id_from="interface")
    rows = [{"event": "QueueMember", "queue": "IT", "name": "Bob Marley", "location": "PJSIP/1002", "status": "1",
             "paused": "0"}]
    events = mapper.snapshot(rows, [], T0)
    assert [(e["type"], e["agent_id"], e.get("agent_name")) for e in events] == [
        ("agent.queue_joined", "PJSIP/1002", "Bob Marley"), ("agent.state_changed", "PJSIP/1002", "Bob Marley")]
    assert_valid(events)


# ---- wait_seconds on call.answered -------------------------------------------------------------

def test_wait_seconds_is_the_answer_time_minus_the_offer_time_not_the_whole_second_holdtime():
    mapper = AmiMapper(SOURCE)
    script = [join(T0 + 0.25, "IT", C1), agent_called(T0 + 2, "IT", C1, ALICE), leave(T0 + 6.8, "IT", C1),
              connect(T0 + 6.8, "IT", C1, ALICE, hold_time=6, ring_time=4)]  # HoldTime: whole seconds
    events = [e for s in script for e in mapper.map(as_message(s), s.timestamp)]
    assert answer_waits(events) == [(C1.uniqueid, 6.55)]
    assert_valid(events)
    totals = fold(events, "IT")["totals"]
    assert totals["answer_wait_seconds"] == pytest.approx(6.55)


def test_no_wait_seconds_when_the_snapshot_gave_no_wait():
    mapper = AmiMapper(SOURCE)
    entry = {"event": "QueueEntry", "queue": "IT", "uniqueid": C1.uniqueid, "position": "1"}  # no Wait header
    offered = mapper.snapshot([], [entry], T0)
    answered = mapper.map(as_message(connect(T0 + 4, "IT", C1, ALICE, hold_time=30, ring_time=4)), T0 + 4)
    events = offered + answered
    assert [e["type"] for e in events if e["type"].startswith("call.")] == ["call.offered", "call.answered"]
    assert answer_waits(events) == [(C1.uniqueid, None)]  # offered "now" is a guess: no wait_seconds
    assert_valid(events)


def test_wait_seconds_leaves_the_event_ids_as_they_were():
    mapper = AmiMapper(SOURCE)
    script = [join(T0, "IT", C1), connect(T0 + 6, "IT", C1, ALICE, hold_time=6, ring_time=4)]
    answered = next(e for s in script for e in mapper.map(as_message(s), s.timestamp) if e["type"] == "call.answered")
    assert answered["wait_seconds"] == 6
    assert answered["event_id"] == event_id(SOURCE, "call.answered", "IT", C1.uniqueid, 1)
