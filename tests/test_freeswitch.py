"""The FreeSWITCH mod_callcenter adapter: ESL framing, the mapping, the sync, reconnection, replay.

The live tests run `FreeswitchSource` against `esl_server.ScriptedEslServer` over real loopback TCP.
The scenario below is written in mod_callcenter's own event sequences (see esl_server's builders);
its expected KPIs are computed by hand in `test_scenario_folds_to_hand_computed_kpis`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import orjson
import pytest
from esl_server import (
    CallcenterTables,
    Member,
    ScriptedEslServer,
    agent_offering,
    agent_state_change,
    agent_status_change,
    bridge_agent_end,
    bridge_agent_fail,
    bridge_agent_start,
    core,
    event_frame,
    frame,
    member_queue_end_cancel,
    member_queue_end_terminated,
    member_queue_start,
    members_count,
)

from callpulse.config import load_config
from callpulse.events import Router, parse_time
from callpulse.kpi.model import QueueModel
from callpulse.sources import Skips, event_id
from callpulse.sources.freeswitch import (
    CallcenterMapper,
    FrameParser,
    FreeswitchApiError,
    FreeswitchAuthError,
    FreeswitchSource,
    Snapshot,
    backoff_delay,
    by_time,
    classify_answer,
    encode_event_plain,
    parse_capture,
    parse_event_plain,
    parse_table,
)

T0 = 1_795_000_000.0  # the switch's clock when the adapter first connects
Q, SALES = "support@default", "sales@default"
A1, A2, A3, A9 = "1001@default", "1002@default", "1003@default", "2001@default"
PASSWORD = "ClueCon-test"
SOURCE = "freeswitch:fs1"

M0 = Member(Q, "m0-member", "s0-session")  # already waiting when the adapter connects
MA, MB, MC = Member(Q, "ma-member", "sa-session"), Member(Q, "mb-member", "sb-session"), Member(Q, "mc-member", "sc-session")
MD, ME, MF = Member(Q, "md-member", "sd-session"), Member(Q, "me-member", "se-session"), Member(Q, "mf-member", "sf-session")
MS = Member(SALES, "ms-member", "ss-session")


def scenario(drop: bool = False) -> tuple[CallcenterTables, list]:
    """The switch's tables at T0 and the events that follow (times in seconds after T0).

    With drop=True the connection is cut mid-call (A talking to 1001, B waiting) and caller C joins
    while nobody is connected: its member-queue-start reaches no one, the re-sync must find it.
    """
    tables = CallcenterTables(now=T0, queues=[Q, SALES])
    tables.add_agent(A1, "Available", wrap_up_time=10,
                     contact="{call_timeout=10}sofia/internal/1001@10.0.0.7|sofia/gateway/backup/1001")
    tables.add_agent(A2, "Available")
    tables.add_agent(A3, "On Break")
    tables.add_agent(A9, "Available")
    for agent in (A1, A2, A3):
        tables.add_tier(Q, agent)
    tables.add_tier(SALES, A9)
    tables.add_member(Q, M0.uuid, M0.session, joined=T0 - 15, cid_number=M0.cid_number, cid_name="Ann | Bob")

    t = lambda s: T0 + s  # noqa: E731
    steps = [
        agent_offering(t(2.0), M0, A1), agent_state_change(t(2.0), A1, "Receiving"),
        bridge_agent_start(t(4.25), M0, A1, joined=t(-15), called=t(2)),
        agent_state_change(t(4.3), A1, "In a queue call"),
        member_queue_start(t(10.1), MA), members_count(t(10.1), Q, 1),
        agent_offering(t(11.0), MA, A2), agent_state_change(t(11.0), A2, "Receiving"),
        bridge_agent_fail(t(21.0), MA, A2, joined=t(10), called=t(11)),
        agent_state_change(t(21.01), A2, "Waiting"),
        bridge_agent_end(t(30.0), M0, A1, joined=t(-15), called=t(2), answered=t(4)),
        member_queue_end_terminated(t(30.01), M0, A1, joined=t(-15), called=t(2), answered=t(4)),
        agent_state_change(t(30.02), A1, "Waiting"),
        member_queue_start(t(35.0), MS),  # another queue: not monitored
        member_queue_start(t(40.0), MB),
        agent_offering(t(41.0), MA, A1), agent_state_change(t(41.0), A1, "Receiving"),
        bridge_agent_start(t(43.5), MA, A1, joined=t(10), called=t(41)),
        agent_state_change(t(43.55), A1, "In a queue call"),
        member_queue_start(t(45.0), MC),
        member_queue_end_cancel(t(47.5), MB, joined=t(40), reason="NONE"),
        member_queue_start(t(50.0), MD),
        member_queue_end_cancel(t(57.0), MC, joined=t(45), reason="BREAK_OUT"),
        member_queue_start(t(60.0), ME),
        member_queue_start(t(62.0), MF),
        member_queue_end_cancel(t(65.0), ME, joined=t(60), reason="EXIT_WITH_KEY"),
        agent_status_change(t(70.0), A2, "On Break"),
        member_queue_end_cancel(t(72.0), MF, joined=t(62), reason="NO_AGENT_TIMEOUT"),
        agent_status_change(t(80.0), A3, "Available"),
        bridge_agent_end(t(103.5), MA, A1, joined=t(10), called=t(41), answered=t(43)),
        member_queue_end_terminated(t(103.51), MA, A1, joined=t(10), called=t(41), answered=t(43)),
        agent_state_change(t(103.52), A1, "Waiting"),
        member_queue_end_cancel(t(110.0), MD, joined=t(50), reason="TIMEOUT"),
        agent_status_change(t(120.0), A3, "Logged Out"),  # the last step: the tests wait for it
    ]
    if drop:
        at = next(i for i, s in enumerate(steps) if s.headers.get("CC-Agent-State") == "In a queue call" and s.t == t(43.55))
        steps[at].drop_after = True
        steps[at + 1].offline = True  # C joins while nobody listens
    return tables, steps


def finished(events: list[dict]) -> bool:
    return any(e["type"] == "agent.logged_out" and e["agent_id"] == A3 for e in events)


async def collect(source: FreeswitchSource, until=finished, timeout: float = 20.0) -> list[dict]:
    """Batches from the source until `until(events)` holds (or fail after `timeout` seconds)."""
    events: list[dict] = []
    async with asyncio.timeout(timeout):
        async with contextlib.aclosing(source.batches()) as batches:
            async for batch in batches:
                assert batch.commit is None
                events.extend(batch.events)
                if until(events):
                    break
    return events


async def run(drop: bool = False, **server_options) -> tuple[list[dict], ScriptedEslServer, FreeswitchSource]:
    tables, steps = scenario(drop)
    server = ScriptedEslServer(PASSWORD, tables, steps, **server_options)
    port = await server.start()
    source = FreeswitchSource("127.0.0.1", port, PASSWORD, SOURCE, queues=[Q], reconnect_min=0.02,
                              reconnect_max=1.0, rng=random.Random(7))
    try:
        events = await collect(source)
    finally:
        await server.stop()
    return events, server, source


def assert_schema_valid(events: list[dict]) -> None:
    router = Router(max_future_seconds=float("inf"))
    for e in events:
        _, rejected = router.check(orjson.dumps(e))
        assert rejected is None, (e, rejected and rejected.detail)


def fold(events: list[dict], queue: str = Q) -> tuple[QueueModel, dict]:
    cfg = load_config(None)
    model = QueueModel(cfg.queue(queue), lateness_seconds=60.0, histogram_bounds=[10, 20])
    for e in by_time(events):
        if e.get("queue") == queue or queue in e.get("queues", ()):
            model.apply(e, parse_time(e["time"]))
    return model, model.read(model.watermark)


def of(events: list[dict], kind: str, **fields) -> list[dict]:
    return [e for e in events if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]


def canonical(events: list[dict]) -> list[bytes]:
    return sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in events)


# ---- the live source against the scripted switch ----------------------------------------------


@pytest.fixture(scope="module")
def live_run() -> tuple[list[dict], ScriptedEslServer, FreeswitchSource]:
    return asyncio.run(run())


def test_every_event_is_schema_valid_and_ids_are_unique(live_run):
    events, _, _ = live_run
    assert_schema_valid(events)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))
    assert {e["source"] for e in events} == {SOURCE}
    assert all("caller" not in e for e in events)  # personal data is left out by default


def test_scenario_folds_to_hand_computed_kpis(live_run):
    events, _, _ = live_run
    model, view = fold(events)
    totals = view["totals"]
    # Offered: M0 (from the sync), A, B, C, D, E, F.
    assert totals["offered"] == 7
    # Answered: M0 at +4.25 after joining at -15 (19.25 s); A at +43.5 after +10.1 (33.4 s).
    assert totals["answered"] == 2
    assert totals["answer_wait_seconds"] == pytest.approx(19.25 + 33.4)
    assert totals["answered_within:10"] == 0 and totals["answered_within:20"] == 1
    # Abandoned: B (Cancel/NONE, 47.5 - 40 = 7.5 s), C (BREAK_OUT, 57 - 45 = 12 s).
    assert totals["abandoned"] == 2
    assert totals["abandon_wait_seconds"] == pytest.approx(7.5 + 12.0)
    assert totals["abandoned_within:10"] == 1 and totals["short_abandoned"] == 0
    # Flowed out: D timeout, E exit key, F no agents.
    assert totals["flowed_out"] == 3
    assert (totals["flowed_out:timeout"], totals["flowed_out:exit_key"], totals["flowed_out:no_agents"]) == (1, 1, 1)
    # Handled: M0 talked 30 - 4.25 = 25.75 s, A 103.5 - 43.5 = 60 s.
    assert totals["handled"] == 2
    assert totals["talk_seconds"] == pytest.approx(25.75 + 60.0)
    # 1001 has wrap_up_time 10: wrap-up ends at +40 and +113.5, 10 s each.
    assert totals["wrapup_seconds"] == pytest.approx(20.0)
    live = view["live"]
    assert live["calls_waiting"] == 0
    # 1001 available after its wrap-up, 1002 on break, 1003 logged out.
    assert live["agents"] == {"available": 1, "on_call": 0, "wrap_up": 0, "not_ready": 1}
    assert live["agents_not_ready_by_reason"] == {"On Break": 1}
    assert model.unmatched == []


def test_ring_failure_then_answer(live_run):
    events, _, _ = live_run
    rings = of(events, "call.ringing", call_id=MA.session)
    assert [(e["agent_id"], e["attempt"]) for e in rings] == [(A2, 1), (A1, 2)]
    [no_answer] = of(events, "call.ring_no_answer", call_id=MA.session)
    assert (no_answer["agent_id"], no_answer["attempt"], no_answer["ring_seconds"]) == (A2, 1, 10.0)
    assert no_answer["attributes"] == {"hangup_cause": "NO_ANSWER"}
    [answered] = of(events, "call.answered", call_id=MA.session)
    assert answered["agent_id"] == A1 and parse_time(answered["time"]) == pytest.approx(T0 + 43.5)


def test_outcomes_carry_the_cancel_reason(live_run):
    events, _, _ = live_run
    by_call = {e["call_id"]: e for e in events if e["type"] in ("call.abandoned", "call.flowed_out")}
    assert {c: (e["type"], e.get("reason"), e["attributes"]["cancel_reason"]) for c, e in by_call.items()} == {
        MB.session: ("call.abandoned", None, "NONE"),
        MC.session: ("call.abandoned", None, "BREAK_OUT"),
        MD.session: ("call.flowed_out", "timeout", "TIMEOUT"),
        ME.session: ("call.flowed_out", "exit_key", "EXIT_WITH_KEY"),
        MF.session: ("call.flowed_out", "no_agents", "NO_AGENT_TIMEOUT"),
    }


def test_agent_states_follow_status_and_calls(live_run):
    events, _, _ = live_run
    agent_events = [(round(parse_time(e["time"]) - T0, 2), e["type"], e.get("state"), e.get("reason"))
                    for e in by_time(events) if e.get("agent_id") == A1 and e["type"].startswith("agent.")]
    assert agent_events == [
        (0.0, "agent.state_changed", "available", None),  # the sync
        (4.25, "agent.state_changed", "on_call", None),
        (30.0, "agent.state_changed", "wrap_up", None),
        (40.0, "agent.state_changed", "available", None),  # bridge end + wrap_up_time
        (43.5, "agent.state_changed", "on_call", None),
        (103.5, "agent.state_changed", "wrap_up", None),
        (113.5, "agent.state_changed", "available", None),
    ]
    [brk] = of(events, "agent.state_changed", agent_id=A2, state="not_ready")
    assert brk["reason"] == "On Break" and brk["queues"] == [Q]
    assert [e["type"] for e in by_time(events) if e.get("agent_id") == A3] == [
        "agent.state_changed", "agent.state_changed", "agent.logged_out"]  # On Break, available, out
    wrapups = of(events, "call.wrapup_ended", agent_id=A1)
    assert sorted((e["call_id"], parse_time(e["time"]) - T0) for e in wrapups) == [
        (M0.session, pytest.approx(40.0)), (MA.session, pytest.approx(113.5))]


def test_a_member_waiting_at_start_is_known_from_the_sync(live_run):
    events, _, _ = live_run
    [offered] = of(events, "call.offered", call_id=M0.session)
    assert offered["queue"] == Q and parse_time(offered["time"]) == T0 - 15  # its joined_epoch
    # ... and the agents already logged in, at the switch's time (strepoch), with their tiers.
    sync_states = {e["agent_id"]: (e["state"], e.get("reason")) for e in events
                   if e["type"] == "agent.state_changed" and parse_time(e["time"]) == T0}
    assert sync_states == {A1: ("available", None), A2: ("available", None), A3: ("not_ready", "On Break")}


def test_what_is_not_mapped_is_counted(live_run):
    events, _, source = live_run
    assert not [e for e in events if e.get("queue") == SALES or e.get("agent_id") == A9]
    assert source.skips.counts["queue not monitored"] == 1  # the sales caller
    assert source.skips.counts["members-count (a gauge, not an event)"] == 1
    assert source.skips.counts["agent event for an agent in no monitored queue"] >= 1  # 2001 at the sync
    assert source.mapper.gauge_mismatches == 0  # CC-Count 1 = A waiting at +10.1


def test_the_switch_saw_a_real_client(live_run):
    _, server, source = live_run
    assert server.commands[:3] == [f"auth {PASSWORD}", "event plain HEARTBEAT CUSTOM callcenter::info", "api strepoch"]
    assert f"api callcenter_config queue list members {Q}" in server.commands
    assert f"api callcenter_config queue list members {SALES}" not in server.commands  # not monitored
    assert server.connections == 1 and source.connections == 1 and source.reconnect_delays == []


async def test_a_dropped_connection_reconnects_resyncs_and_loses_nothing(live_run):
    reference, _, _ = live_run
    events, server, source = await run(drop=True, refuse_after_drop=2)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "duplicates after the reconnection"
    assert canonical(events) == canonical(reference), "the run with a drop differs from the run without"
    # C's member-queue-start was sent to nobody: its offer comes from the re-sync (joined_epoch).
    [offered] = of(events, "call.offered", call_id=MC.session)
    assert parse_time(offered["time"]) == T0 + 45
    # Two refused reconnections, then success: three growing backoffs (equal jitter, base 0.02 s).
    assert server.connections == 4 and source.connections == 2
    d = source.reconnect_delays
    assert len(d) == 3
    assert 0.01 <= d[0] <= 0.02 and 0.02 <= d[1] <= 0.04 and 0.04 <= d[2] <= 0.08
    assert server.commands.count("api callcenter_config agent list") == 2  # synced twice


async def test_wrong_password_fails_loudly_without_retrying():
    tables, steps = scenario()
    server = ScriptedEslServer(PASSWORD, tables, steps)
    port = await server.start()
    source = FreeswitchSource("127.0.0.1", port, "not-the-password", SOURCE, reconnect_min=0.01)
    try:
        with pytest.raises(FreeswitchAuthError, match="rejected the event socket password") as caught:
            await collect(source, timeout=5.0)
    finally:
        await server.stop()
    assert "not-the-password" not in str(caught.value)
    assert server.connections == 1 and source.reconnect_delays == []


async def test_a_missing_mod_callcenter_fails_loudly():
    tables, steps = scenario()
    server = ScriptedEslServer(PASSWORD, tables, steps,
                               api_override={"callcenter_config queue list": "-ERR callcenter_config Command not found!\n"})
    port = await server.start()
    source = FreeswitchSource("127.0.0.1", port, PASSWORD, SOURCE, reconnect_min=0.01)
    try:
        with pytest.raises(FreeswitchApiError, match="Command not found"):
            await collect(source, timeout=5.0)
    finally:
        await server.stop()
    assert server.connections == 1


async def test_byte_by_byte_writes_parse(live_run):
    reference, _, _ = live_run
    events, server, _ = await run(chunk_size=1)
    assert canonical(events) == canonical(reference)


async def test_a_recorded_session_replays_to_the_same_events(live_run, tmp_path):
    reference, _, _ = live_run
    events, server, _ = await run(drop=True, refuse_after_drop=0)
    capture = tmp_path / "fs1.esl"
    capture.write_bytes(bytes(server.sent))
    replayed = list(parse_capture(capture, SOURCE, queues=[Q]))
    assert canonical(replayed) == canonical(events) == canonical(reference)
    assert replayed == by_time(replayed)  # a finite source comes in time order


async def test_the_source_records_what_it_received(tmp_path):
    tables, steps = scenario()
    server = ScriptedEslServer(PASSWORD, tables, steps)
    port = await server.start()
    record = tmp_path / "recorded.esl"
    source = FreeswitchSource("127.0.0.1", port, PASSWORD, SOURCE, queues=[Q], record_to=record)
    try:
        events = await collect(source)
    finally:
        await server.stop()
    # The recording holds at least every frame up to the last event, and replays to the same events.
    assert record.read_bytes() == bytes(server.sent)[: len(record.read_bytes())]
    assert canonical(parse_capture(record, SOURCE, queues=[Q])) == canonical(events)


# ---- framing (pure) ---------------------------------------------------------------------------


def test_frames_split_anywhere_parse_the_same():
    stream = (b"Content-Type: auth/request\r\n\r\n"  # CRLF line ends are accepted too
              + frame({"Content-Type": "command/reply", "Reply-Text": "+OK accepted"})
              + frame({"Content-Type": "api/response"}, b"1795000000")
              + event_frame({"Event-Name": "HEARTBEAT", "Event-Date-Timestamp": "1795000000000000"})
              + b"Content-Type: text/disconnect-notice\r\nContent-Length: 4\r\n\r\nbye\n")
    whole = FrameParser().feed(stream)
    parser = FrameParser()
    pieces = [f for i in range(len(stream)) for f in parser.feed(stream[i : i + 1])]
    assert pieces == whole and not parser.pending()
    assert [f.content_type for f in whole] == ["auth/request", "command/reply", "api/response", "text/event-plain",
                                               "text/disconnect-notice"]
    assert whole[1].reply_text == "+OK accepted" and whole[2].body == b"1795000000" and whole[4].body == b"bye\n"
    partial = FrameParser()
    assert partial.feed(stream[:-2]) == whole[:4] and partial.pending()


def test_event_plain_values_are_url_decoded():
    body = (b"Event-Name: CUSTOM\nEvent-Subclass: callcenter%3A%3Ainfo\nCC-Queue: support%40default\n"
            b"CC-Agent-Status: Available%20(On%20Demand)\nCC-Member-CID-Name: Zo%C3%AB%20M%C3%BCller\n"
            b"CC-Member-CID-Number: %2B15550100\nPlus: a+b\nContent-Length: 5\n\nhello")
    h = parse_event_plain(body)
    assert h["Event-Subclass"] == "callcenter::info" and h["CC-Queue"] == "support@default"
    assert h["CC-Agent-Status"] == "Available (On Demand)" and h["CC-Member-CID-Name"] == "Zoë Müller"
    assert h["CC-Member-CID-Number"] == "+15550100" and h["Plus"] == "a+b"  # '+' is not a space in FreeSWITCH
    assert h["_body"] == "hello"
    assert parse_event_plain(encode_event_plain({"CC-Queue": "a b|c"})) == {"CC-Queue": "a b|c"}


def test_callcenter_tables_parse():
    agents = ("name|instance_id|uuid|type|contact|status|state\n"
              "1001@default|single_box||callback|{t=10}sofia/a/1001|sofia/b/1001|Available|Waiting\n"
              "1002@default|single_box||callback|user/1002|On Break|Idle\n+OK\n")
    rows = parse_table(agents, free_column="contact")
    assert [(r["name"], r["contact"], r["status"]) for r in rows] == [
        ("1001@default", "{t=10}sofia/a/1001|sofia/b/1001", "Available"), ("1002@default", "user/1002", "On Break")]
    skips = Skips()
    assert parse_table(agents, free_column=None, skips=skips) == rows[1:]
    assert skips.counts == {"callcenter_config row with a '|' inside a value": 1}
    assert parse_table("+OK\n") == []  # mod_callcenter prints no header row for an empty table
    with pytest.raises(ValueError, match="-ERR"):
        parse_table("-ERR Invalid!\n")
    with pytest.raises(ValueError, match="does not end with"):
        parse_table("queue|agent\nq|a\n")
    assert [classify_answer(t) for t in ("1795000000", agents, "queue|agent|state|level|position\n+OK\n", "+OK\n")] == [
        "now", "agents", "tiers", None]


def test_backoff_grows_with_jitter_and_is_capped():
    rng = random.Random(1)
    for failures in range(12):
        ceiling = min(30.0, 0.5 * 2 ** failures)
        delays = [backoff_delay(failures, 0.5, 30.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # really jittered


# ---- mapping (pure) ---------------------------------------------------------------------------


def feed(mapper: CallcenterMapper, steps, tables: CallcenterTables | None = None) -> list[dict]:
    """Map scripted steps as the live source would (through the real encoding); `tables` follow."""
    out = []
    for i, step in enumerate(steps):
        headers = step.headers | {"Event-Sequence": str(i)}
        if tables is not None:
            tables.apply(headers, step.t)
        out += mapper.map_event(parse_event_plain(encode_event_plain(headers)))
    return out


def snapshot_of(tables: CallcenterTables) -> Snapshot:
    """What the sync commands return from these tables, through the real table parser."""
    return Snapshot(float(tables.api("strepoch")), [Q],
                    parse_table(tables.api(f"callcenter_config queue list members {Q}"), "cid_name"),
                    parse_table(tables.api("callcenter_config agent list"), "contact"),
                    parse_table(tables.api("callcenter_config tier list")))


def synced_mapper(agents: dict[str, tuple[str, str, int]], now: float = T0) -> tuple[CallcenterMapper, list[dict]]:
    mapper = CallcenterMapper(SOURCE, [Q])
    rows = [{"name": n, "status": s, "state": st, "wrap_up_time": str(w), "last_bridge_end": "0"}
            for n, (s, st, w) in agents.items()]
    tiers = [{"queue": Q, "agent": n} for n in agents]
    return mapper, mapper.sync(Snapshot(now, [Q], [], rows, tiers))


def test_caller_gone_while_the_agent_is_connected_is_an_abandon():
    """The real NONE sequence: bridge-agent-start, the caller hangs up before the bridge
    (member-queue-end Cancel/NONE), bridge-agent-end with CC-Agent-Bridged: false."""
    mapper, _ = synced_mapper({A1: ("Available", "Waiting", 0)})
    m = Member(Q, "m1", "s1")
    out = feed(mapper, [member_queue_start(T0 + 1, m), agent_offering(T0 + 2, m, A1),
                        bridge_agent_start(T0 + 6, m, A1, joined=T0 + 1, called=T0 + 2),
                        member_queue_end_cancel(T0 + 6.2, m, joined=T0 + 1, reason="NONE"),
                        bridge_agent_end(T0 + 6.3, m, A1, joined=T0 + 1, called=T0 + 2, answered=T0 + 6, bridged=False),
                        agent_state_change(T0 + 6.31, A1, "Waiting")])
    assert [e["type"] for e in out] == ["call.offered", "call.ringing", "agent.state_changed", "call.abandoned",
                                        "agent.state_changed"]
    assert [e["state"] for e in out if e["type"] == "agent.state_changed"] == ["on_call", "available"]
    assert_schema_valid(out)


def test_on_demand_agent_wraps_up_until_it_is_waiting_again():
    mapper, _ = synced_mapper({A1: ("Available (On Demand)", "Waiting", 0)})
    m = Member(Q, "m1", "s1")
    out = feed(mapper, [member_queue_start(T0 + 1, m), bridge_agent_start(T0 + 3, m, A1, joined=T0 + 1, called=T0 + 2),
                        agent_state_change(T0 + 3.1, A1, "In a queue call"),
                        bridge_agent_end(T0 + 50, m, A1, joined=T0 + 1, called=T0 + 2, answered=T0 + 3),
                        agent_state_change(T0 + 50.01, A1, "Idle"),  # mod_callcenter, after an On Demand call
                        agent_state_change(T0 + 95, A1, "Waiting")])  # the agent is ready again
    states = [(e["time"], e["state"]) for e in out if e["type"] == "agent.state_changed"]
    assert [s for _, s in states] == ["on_call", "wrap_up", "available"]
    [wrapup] = of(out, "call.wrapup_ended")
    assert parse_time(wrapup["time"]) == T0 + 95
    _, view = fold(out)
    assert view["totals"]["wrapup_seconds"] == pytest.approx(45.0) and view["totals"]["talk_seconds"] == pytest.approx(47.0)


def test_missed_start_is_rebuilt_from_the_later_events_headers():
    mapper, _ = synced_mapper({A1: ("Available", "Waiting", 0)})
    m = Member(Q, "m1", "s1")
    out = feed(mapper, [bridge_agent_start(T0 + 30.4, m, A1, joined=T0 + 12, called=T0 + 28),
                        agent_state_change(T0 + 30.5, A1, "In a queue call")])
    [offered] = of(out, "call.offered")
    assert parse_time(offered["time"]) == T0 + 12  # CC-Member-Joined-Time
    _, view = fold(out)
    assert view["totals"]["answer_wait_seconds"] == pytest.approx(18.4)


def test_a_restarted_adapter_resyncing_mid_call_counts_nothing_twice():
    """A fresh mapper (the adapter restarted) syncing while A talks and B waits re-announces them with
    the ids already published, in the same second, so the model drops them as duplicates."""
    tables, steps = scenario()
    cut = next(i for i, s in enumerate(steps) if s.t == T0 + 43.55) + 1
    first = CallcenterMapper(SOURCE, [Q])
    before = first.sync(snapshot_of(tables)) + feed(first, steps[:cut], tables)
    after = CallcenterMapper(SOURCE, [Q]).sync(snapshot_of(tables))
    calls_after = [e for e in after if e["type"].startswith("call.")]
    assert sorted((e["type"], e["call_id"]) for e in calls_after) == [
        ("call.answered", MA.session), ("call.offered", MA.session), ("call.offered", MB.session)]
    assert {e["event_id"] for e in calls_after} <= {e["event_id"] for e in before}
    model = QueueModel(load_config(None).queue(Q), lateness_seconds=60.0, histogram_bounds=[10, 20])
    for e in by_time(before) + by_time(after):  # the restarted adapter's events arrive after the others
        model.apply(e, parse_time(e["time"]))
    totals = model.read(model.watermark)["totals"]
    assert (totals["offered"], totals["answered"]) == (3, 2)  # M0, A, B offered; M0 and A answered
    assert totals["answer_wait_seconds"] == pytest.approx(19.25 + 33.4)


def test_the_same_capture_gives_the_same_ids_every_time(tmp_path):
    tables, steps = scenario()
    capture = tmp_path / "c.esl"
    capture.write_bytes(frame({"Content-Type": "auth/request"}) + b"".join(event_frame(s.headers) for s in steps))
    once, twice = list(parse_capture(capture, SOURCE)), list(parse_capture(capture, SOURCE))
    assert once == twice and len(once) > 20


def test_heartbeats_move_the_wrap_up_clock():
    mapper, _ = synced_mapper({A1: ("Available", "Waiting", 10)})
    m = Member(Q, "m1", "s1")
    feed(mapper, [member_queue_start(T0 + 1, m), bridge_agent_start(T0 + 3, m, A1, joined=T0 + 1, called=T0 + 2),
                  agent_state_change(T0 + 3.1, A1, "In a queue call"),
                  bridge_agent_end(T0 + 20, m, A1, joined=T0 + 1, called=T0 + 2, answered=T0 + 3)])
    heartbeat = {"Event-Name": "HEARTBEAT", "Event-Date-Timestamp": str(round((T0 + 25) * 1e6))}
    assert mapper.map_event(heartbeat) == []  # wrap-up runs until +30
    later = mapper.map_event(heartbeat | {"Event-Date-Timestamp": str(round((T0 + 40) * 1e6))})
    assert [(e["type"], parse_time(e["time"]) - T0) for e in later] == [("call.wrapup_ended", 30.0),
                                                                       ("agent.state_changed", 30.0)]


def test_events_without_time_or_of_other_kinds_are_skipped():
    mapper = CallcenterMapper(SOURCE)
    assert mapper.map_event({"Event-Name": "CUSTOM", "Event-Subclass": "callcenter::info", "CC-Action": "agent-offering"}) == []
    assert mapper.map_event(core(T0, "agent-add") | {"CC-Agent": A1}) == []
    assert mapper.map_event({"Event-Name": "CHANNEL_ANSWER", "Event-Date-Timestamp": "1795000000000000"}) == []
    assert mapper.skips.counts == {"event without Event-Date-Timestamp": 1, "CC-Action with no canonical event": 1,
                                   "not a callcenter::info event": 1}


# ---- wait_seconds on call.answered ------------------------------------------------------------


def answer_waits(events: list[dict]) -> list[tuple[str, float | None]]:
    """(call, wait_seconds) of every call.answered, after checking that wait_seconds is exactly the
    wait the model computes (the answer's time minus the call's call.offered time, clamped at 0 as the
    model clamps it) and that every event is schema-valid."""
    assert_schema_valid(events)
    offered: dict[tuple[str, str], float] = {}
    out = []
    for e in events:  # as emitted: an answer can be timed before its offer (see the m3 case below)
        key = (e.get("queue"), e.get("call_id"))
        if e["type"] == "call.offered":
            offered[key] = parse_time(e["time"])
        elif e["type"] == "call.answered":
            if "wait_seconds" in e:
                assert e["wait_seconds"] == max(0.0, round(parse_time(e["time"]) - offered[key], 3)), e
            out.append((e["call_id"], e.get("wait_seconds")))
    return out


def test_answered_carries_the_wait_from_the_offer(live_run):
    events, _, _ = live_run
    # M0: joined at -15 (the sync's joined_epoch), bridged at +4.25; A: joined at +10.1, bridged at +43.5.
    assert answer_waits(events) == [(M0.session, 19.25), (MA.session, 33.4)]
    _, view = fold(events)
    assert view["totals"]["answer_wait_seconds"] == pytest.approx(sum(e["wait_seconds"] for e in of(events, "call.answered")))


async def test_wait_seconds_survives_a_dropped_connection(live_run):
    events, _, _ = await run(drop=True, refuse_after_drop=0)
    assert answer_waits(events) == answer_waits(live_run[0])


def test_wait_seconds_of_a_rebuilt_offer_or_answer():
    mapper, _ = synced_mapper({A1: ("Available", "Waiting", 0), A2: ("Available", "Waiting", 0)})
    m1, m2, m3 = Member(Q, "m1", "s1"), Member(Q, "m2", "s2"), Member(Q, "m3", "s3")
    out = feed(mapper, [
        # m1: member-queue-start missed, offered at CC-Member-Joined-Time (+12), bridged at +30.4
        bridge_agent_start(T0 + 30.4, m1, A1, joined=T0 + 12, called=T0 + 28),
        agent_state_change(T0 + 30.5, A1, "In a queue call"),
        # m2: bridge-agent-start missed, answered at CC-Agent-Answered-Time (+41) after an offer at +31.6
        member_queue_start(T0 + 31.6, m2),
        bridge_agent_end(T0 + 60, m2, A2, joined=T0 + 31, called=T0 + 39, answered=T0 + 41),
        # m3: the same, answered in the second it was offered: the whole-second answer time (+61) is
        # before the offer (+61.7); the model counts a wait of 0, and so does wait_seconds.
        member_queue_start(T0 + 61.7, m3),
        bridge_agent_end(T0 + 90, m3, A2, joined=T0 + 61, called=T0 + 61, answered=T0 + 61),
    ])
    assert answer_waits(out) == [(m1.session, 18.4), (m2.session, 9.4), (m3.session, 0.0)]
    _, view = fold(out)
    assert view["totals"]["answer_wait_seconds"] == pytest.approx(18.4 + 9.4 + 0.0)


def test_no_wait_seconds_when_the_sync_does_not_know_a_time():
    mapper = CallcenterMapper(SOURCE, [Q])
    def member(n: str, **row: str) -> dict[str, str]:
        return {"queue": Q, "uuid": f"m{n}", "session_uuid": f"s{n}", "state": "Answered", "serving_agent": A1} | row
    rows = [member("1", joined_epoch=str(int(T0 - 20)), bridge_epoch=str(int(T0 - 5))),  # both known
            member("2", joined_epoch="0", bridge_epoch=str(int(T0 - 5))),  # joined unknown: offered "now"
            member("3", joined_epoch=str(int(T0 - 20)), bridge_epoch="0")]  # bridge unknown: answered "now"
    out = mapper.sync(Snapshot(T0, [Q], rows, [], [{"queue": Q, "agent": A1}]))
    assert answer_waits(out) == [("s1", 15.0), ("s2", None), ("s3", None)]


def test_wait_seconds_leaves_the_ids_as_they_were(live_run):
    events, _, _ = live_run
    for e in of(events, "call.answered"):
        member = next(m for m in (M0, MA) if m.session == e["call_id"])
        assert e["event_id"] == event_id(SOURCE, "answered", Q, member.uuid, member.session)
