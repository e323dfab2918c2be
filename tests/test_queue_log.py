"""Asterisk queue_log adapter: parsing, the mapping of every event, and the real files.

The real files are checked against their own fields: a plain split of each line (no use of the
adapter) gives per queue the offered / answered / abandoned / timeout counts and the hold, talk and
abandon-wait sums, which must equal what QueueModel folds from the adapter's events.
"""

from __future__ import annotations

import io
import re
import shutil
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from callpulse.config import load_config
from callpulse.events import Router, parse_time, queues_of
from callpulse.kpi.model import TOO_LATE, QueueModel
from callpulse.sources import event_id
from callpulse.sources.queue_log import (
    MalformedLine,
    QueueLogMapper,
    parse_fields,
    parse_line,
    parse_row,
    read_file,
    read_rows,
    read_stream,
)

REPO = Path(__file__).resolve().parents[1]
_DATA = REPO.parent / "shared" / "data"
DATA = (_DATA if _DATA.exists() else Path("/work/shared/data")) / "queue_log"
# Named here (not globbed) so that missing data fails these tests instead of collecting none.
FILES = [
    "freepbx_2022_20220707.queue_log",
    "freepbx_2022_20220801.queue_log",
    "freepbx_2022_20220901.queue_log",
    "freepbx_2022_20221005.queue_log",
    "freepbx_2022_current.queue_log",
    "support_sales_2023.queue_log",
    "us_it_helpdesk_2018.queue_log",
    "wazo_docs_examples.queue_log",
]
NUL_FILES = ["freepbx_2022_20220801.queue_log", "freepbx_2022_20221005.queue_log", "freepbx_2022_current.queue_log"]
SOURCE = "asterisk:test"
ROUTER = Router(max_future_seconds=float("inf"))
T = 1700000000  # epoch of the hand-written logs


def import_bytes(data: bytes, **options) -> tuple[list[dict], object]:
    imported = read_stream(io.BytesIO(data), SOURCE, **options)
    return list(imported), imported.skips


def lines_text(text: str) -> bytes:
    return "\n".join(line.strip() for line in text.strip().splitlines()).encode() + b"\n"


def fold(events: list[dict]) -> dict[str, QueueModel]:
    """The events folded per queue through the real model, as the worker does."""
    cfg = load_config(None)
    models: dict[str, QueueModel] = {}
    for e in events:
        t = parse_time(e["time"])
        for queue in queues_of(e):
            model = models.get(queue)
            if model is None:
                model = models[queue] = QueueModel(cfg.queue(queue), lateness_seconds=60.0, histogram_bounds=[10, 20])
            assert model.apply(e, t) != TOO_LATE, e
    return models


def totals(model: QueueModel) -> dict:
    return model.read(model.watermark)["totals"]


# ---- parsing ----------------------------------------------------------------------------------


def test_parse_line_fields_and_tolerances():
    r = parse_line("1543602753|1543602660.197|IT|Agent/1127|CONNECT|76|1543602746.232|6\r\n")
    assert (r.time, r.call_id, r.queue, r.agent, r.event) == (1543602753.0, "1543602660.197", "IT", "Agent/1127", "CONNECT")
    assert r.data == ("76", "1543602746.232", "6")
    assert r.field(1) == "76" and r.field(5) == ""
    # Missing trailing fields, a trailing empty field and NULs change nothing.
    short = parse_line("1655723969|MANAGER|500|SIP/1001|ADDMEMBER")
    assert short.data == () and short.text == parse_line("1655723969|MANAGER|500|SIP/1001|ADDMEMBER|").text
    assert parse_line("\x00\x001655723969|NONE|500|Sathish|UNPAUSE|").text == "1655723969|NONE|500|Sathish|UNPAUSE"


@pytest.mark.parametrize("line, reason", [
    ("1543602753|1543602660.197|IT|Agent/1127", "malformed:too_few_fields"),
    ("garbage", "malformed:too_few_fields"),
    ("15436O2753|1543602660.197|IT|NONE|ENTERQUEUE||c|1", "malformed:bad_epoch"),
    ("-5|1543602660.197|IT|NONE|ENTERQUEUE||c|1", "malformed:bad_epoch"),
    ("|1543602660.197|IT|NONE|ENTERQUEUE||c|1", "malformed:bad_epoch"),
])
def test_parse_line_rejects_malformed(line, reason):
    with pytest.raises(MalformedLine) as err:
        parse_line(line)
    assert err.value.reason == reason


def test_realtime_row_forms_give_the_same_record_and_ids_as_the_file_line():
    line = parse_line("1341401601|1341401601.24|q1|NONE|ENTERQUEUE||1000|1")
    as_fields = parse_fields(1341401601, "1341401601.24", "q1", "NONE", "ENTERQUEUE", "", "1000", "1", "", "")
    as_dict = parse_row({"time": "2012-07-04 11:33:21", "callid": "1341401601.24", "queuename": "q1",
                         "agent": "NONE", "event": "ENTERQUEUE", "data1": "", "data2": "1000", "data3": "1",
                         "data4": None, "data5": None})
    as_tuple = parse_row(("1341401601", "1341401601.24", "q1", "NONE", "ENTERQUEUE", "", "1000", "1"))
    old_data_column = parse_row({"time": 1341401601, "callid": "1341401601.24", "queuename": "q1", "agent": "NONE",
                                 "event": "ENTERQUEUE", "data": "|1000|1"})
    assert as_fields == line and as_dict == line and as_tuple == line and old_data_column == line
    # A realtime time with microseconds in a local zone (Wazo's sample: 2012-07-04 07:33:21.165823, UTC-4).
    local = parse_row({"time": "2012-07-04 07:33:21.165823", "callid": "1341401601.24", "queuename": "q1",
                       "agent": "NONE", "event": "ENTERQUEUE"}, timezone="America/Montreal")
    assert local.time == pytest.approx(1341401601.165823)
    events, skips = read_rows([("1341401601", "1341401601.24", "q1", "NONE", "ENTERQUEUE", "", "1000", "1"),
                               ("not a time", "x", "q1", "NONE", "ABANDON")], SOURCE)
    assert events[0]["event_id"] == event_id(SOURCE, "1341401601|1341401601.24|q1|NONE|ENTERQUEUE||1000|1", 0)
    assert skips.counts == {"malformed:bad_epoch": 1}


def test_realtime_rows_with_microseconds_keep_their_own_times():
    rows = [("2012-07-04 11:33:21.165823", "c1", "q1", "NONE", "ENTERQUEUE", "", "1000", "1"),
            ("2012-07-04 11:33:23.085718", "c1", "q1", "Agent/3001", "CONNECT", "2", "c1b", "1")]
    events, _ = read_rows(rows, SOURCE)
    offered, answered = (parse_time(e["time"]) for e in events[:2])
    assert answered - offered == pytest.approx(1.92, abs=0.001)  # not the holdtime field's 2


def test_read_rows_sorts_rows_before_mapping():
    rows = [(T + 9, "c1", "q", "PJSIP/1", "CONNECT", "9", "c2", "1"), (T, "c1", "q", "NONE", "ENTERQUEUE", "", "x", "1")]
    events, _ = read_rows(rows, SOURCE)
    assert [(e["type"], parse_time(e["time"]) - T) for e in events] == [
        ("call.offered", 0), ("call.answered", 9), ("agent.state_changed", 9)]


# ---- mapping, event by event (hand-written log, hand-computed expectations) ---------------------

SCRIPT = f"""
{T}|NONE|NONE|NONE|QUEUESTART|
{T}|MANAGER|sales|PJSIP/100|ADDMEMBER|
{T}|MANAGER|support|PJSIP/100|ADDMEMBER|
{T + 1}|NONE|sales|PJSIP/100|UNPAUSE|
{T + 10}|c1|sales|NONE|ENTERQUEUE||+15551234567|1
{T + 15}|c1|sales|PJSIP/100|RINGNOANSWER|5000
{T + 21}|c1|sales|PJSIP/100|RINGNOANSWER|4500
{T + 30}|c1|sales|PJSIP/100|CONNECT|19|c1b|3
{T + 40}|NONE|NONE|PJSIP/100|PAUSEALL|
{T + 40}|NONE|sales|PJSIP/100|PAUSE|lunch
{T + 40}|NONE|support|PJSIP/100|PAUSE|lunch
{T + 90}|c1|sales|PJSIP/100|COMPLETECALLER|19|60|1
{T + 100}|NONE|NONE|PJSIP/100|UNPAUSEALL|
{T + 110}|c2|sales|NONE|ENTERQUEUE||x|1
{T + 125}|c2|sales|NONE|EXITWITHKEY|5|1|1|15
{T + 130}|c3|sales|NONE|JOINEMPTY|
{T + 131}|c4|sales|NONE|FULL|
{T + 132}|c5|sales|NONE|CLOSED|
{T + 140}|c6|sales|NONE|ENTERQUEUE||x|1
{T + 150}|c6|sales|NONE|EXITEMPTY|1|1|10
{T + 160}|c7|sales|NONE|ENTERQUEUE||x|1
{T + 170}|c7|sales|NONE|WITHDRAW|1|1|10|moved
{T + 180}|c8|sales|NONE|ENTERQUEUE||x|1
{T + 190}|c8|sales|PJSIP/100|CONNECT|10|c8b|2
{T + 200}|c8|sales|PJSIP/100|BLINDTRANSFER|5551234567|from-internal|10|10|1
{T + 210}|c9|sales|NONE|ENTERQUEUE||x|1
{T + 215}|c9|sales|PJSIP/100|CONNECT|5|c9b|2
{T + 230}|c9|sales|PJSIP/100|ATTENDEDTRANSFER|BRIDGE|b1|5|15|1
{T + 240}|c10|sales|NONE|ENTERQUEUE||x|1
{T + 250}|c10|sales|NONE|EXITWITHTIMEOUT|1|1|10
{T + 260}|c11|sales|NONE|ENTERQUEUE||x|1
{T + 261}|c11|sales|PJSIP/100|RINGCANCELED|1193
{T + 262}|c11|sales|NONE|ABANDON|1|1|2
{T + 270}|c12|sales|NONE|ENTERQUEUE||x|1
{T + 275}|c12|sales|PJSIP/100|CONNECT|5|c12b|2
{T + 280}|c12|sales|PJSIP/100|TRANSFER|200|from-internal|5|5|1
{T + 300}|MANAGER|support|PJSIP/100|REMOVEMEMBER|
{T + 310}|NONE|NONE|Agent/7|AGENTLOGIN|PJSIP/7
{T + 320}|NONE|NONE|Agent/7|AGENTLOGOFF|PJSIP/7|10
{T + 330}|c13|NONE|Agent/7|OUTANSWER|5559876543|COMPLETEAGENT
"""


def summary(e: dict) -> tuple:
    keep = ("queue", "call_id", "agent_id", "queues", "state", "reason", "attempt", "ring_seconds", "ended_by",
            "kind", "target", "result", "attributes", "caller")
    return (e["type"], round(parse_time(e["time"]) - T, 3), {k: e[k] for k in keep if k in e})


def test_every_event_maps_as_documented():
    events, skips = import_bytes(lines_text(SCRIPT))
    both = ["sales", "support"]
    assert [summary(e) for e in events] == [
        ("agent.queue_joined", 0, {"agent_id": "PJSIP/100", "queue": "sales"}),
        ("agent.queue_joined", 0, {"agent_id": "PJSIP/100", "queue": "support"}),
        ("agent.state_changed", 1, {"agent_id": "PJSIP/100", "queues": ["sales"], "state": "available"}),
        ("call.offered", 10, {"queue": "sales", "call_id": "c1"}),  # no caller by default
        ("call.ring_no_answer", 15, {"queue": "sales", "call_id": "c1", "agent_id": "PJSIP/100", "attempt": 1,
                                     "ring_seconds": 5.0}),
        ("call.ring_no_answer", 21, {"queue": "sales", "call_id": "c1", "agent_id": "PJSIP/100", "attempt": 2,
                                     "ring_seconds": 4.5}),
        # holdtime 19 from the enter time 10: answered at 29 (the line says 30), a wait of exactly 19 s.
        ("call.answered", 29, {"queue": "sales", "call_id": "c1", "agent_id": "PJSIP/100"}),
        ("agent.state_changed", 29, {"agent_id": "PJSIP/100", "queues": both, "state": "on_call"}),
        # The pauses during the call take effect when it ends: answered 29 + talktime 60 = 89.
        ("call.ended", 89, {"queue": "sales", "call_id": "c1", "agent_id": "PJSIP/100", "ended_by": "caller"}),
        ("agent.state_changed", 89, {"agent_id": "PJSIP/100", "queues": both, "state": "not_ready", "reason": "lunch"}),
        ("agent.state_changed", 100, {"agent_id": "PJSIP/100", "queues": both, "state": "available"}),
        ("call.offered", 110, {"queue": "sales", "call_id": "c2"}),
        ("call.flowed_out", 125, {"queue": "sales", "call_id": "c2", "reason": "exit_key", "attributes": {"key": "5"}}),
        ("call.offered", 130, {"queue": "sales", "call_id": "c3"}),
        ("call.flowed_out", 130, {"queue": "sales", "call_id": "c3", "reason": "no_agents",
                                  "attributes": {"asterisk_event": "JOINEMPTY"}}),
        ("call.offered", 131, {"queue": "sales", "call_id": "c4"}),
        ("call.flowed_out", 131, {"queue": "sales", "call_id": "c4", "reason": "queue_full",
                                  "attributes": {"asterisk_event": "FULL"}}),
        ("call.offered", 132, {"queue": "sales", "call_id": "c5"}),
        ("call.flowed_out", 132, {"queue": "sales", "call_id": "c5", "reason": "other",
                                  "attributes": {"asterisk_event": "CLOSED"}}),
        ("call.offered", 140, {"queue": "sales", "call_id": "c6"}),
        ("call.flowed_out", 150, {"queue": "sales", "call_id": "c6", "reason": "no_agents"}),
        ("call.offered", 160, {"queue": "sales", "call_id": "c7"}),
        ("call.flowed_out", 170, {"queue": "sales", "call_id": "c7", "reason": "other"}),
        ("call.offered", 180, {"queue": "sales", "call_id": "c8"}),
        ("call.answered", 190, {"queue": "sales", "call_id": "c8", "agent_id": "PJSIP/100"}),
        ("agent.state_changed", 190, {"agent_id": "PJSIP/100", "queues": both, "state": "on_call"}),
        # A phone-number target is personal data: left out unless asked for.
        ("call.transferred", 200, {"queue": "sales", "call_id": "c8", "agent_id": "PJSIP/100", "kind": "blind"}),
        ("agent.state_changed", 200, {"agent_id": "PJSIP/100", "queues": both, "state": "available"}),
        ("call.offered", 210, {"queue": "sales", "call_id": "c9"}),
        ("call.answered", 215, {"queue": "sales", "call_id": "c9", "agent_id": "PJSIP/100"}),
        ("agent.state_changed", 215, {"agent_id": "PJSIP/100", "queues": both, "state": "on_call"}),
        ("call.transferred", 230, {"queue": "sales", "call_id": "c9", "agent_id": "PJSIP/100", "kind": "attended",
                                   "attributes": {"method": "BRIDGE"}}),
        ("agent.state_changed", 230, {"agent_id": "PJSIP/100", "queues": both, "state": "available"}),
        ("call.offered", 240, {"queue": "sales", "call_id": "c10"}),
        ("call.flowed_out", 250, {"queue": "sales", "call_id": "c10", "reason": "timeout"}),
        ("call.offered", 260, {"queue": "sales", "call_id": "c11"}),
        ("call.ring_no_answer", 261, {"queue": "sales", "call_id": "c11", "agent_id": "PJSIP/100", "attempt": 1,
                                      "ring_seconds": 1.193, "attributes": {"canceled": True}}),
        ("call.abandoned", 262, {"queue": "sales", "call_id": "c11"}),
        ("call.offered", 270, {"queue": "sales", "call_id": "c12"}),
        ("call.answered", 275, {"queue": "sales", "call_id": "c12", "agent_id": "PJSIP/100"}),
        ("agent.state_changed", 275, {"agent_id": "PJSIP/100", "queues": both, "state": "on_call"}),
        # The old TRANSFER does not say blind or attended; an extension is kept as the target.
        ("call.transferred", 280, {"queue": "sales", "call_id": "c12", "agent_id": "PJSIP/100",
                                   "target": "200@from-internal"}),
        ("agent.state_changed", 280, {"agent_id": "PJSIP/100", "queues": both, "state": "available"}),
        ("agent.queue_left", 300, {"agent_id": "PJSIP/100", "queue": "support"}),
        ("agent.logged_in", 310, {"agent_id": "Agent/7", "queues": []}),
        ("agent.logged_out", 320, {"agent_id": "Agent/7", "queues": []}),
        ("call.outbound_attempt", 330, {"call_id": "c13", "agent_id": "Agent/7", "result": "connected"}),
    ]
    assert skips.counts == {"ignored:QUEUESTART": 1}
    for e in events:
        assert ROUTER.check(orjson.dumps(e))[1] is None, e


def test_caller_numbers_only_when_asked():
    events, _ = import_bytes(lines_text(SCRIPT), include_caller=True)
    offered = next(e for e in events if e["type"] == "call.offered")
    transfer = next(e for e in events if e["type"] == "call.transferred")
    outbound = next(e for e in events if e["type"] == "call.outbound_attempt")
    assert offered["caller"] == "+15551234567"
    assert transfer["target"] == "5551234567@from-internal"
    assert outbound["caller"] == "5559876543"
    default, _ = import_bytes(lines_text(SCRIPT))
    assert not any("5551234567" in orjson.dumps(e).decode() or "5559876543" in orjson.dumps(e).decode()
                   for e in default)


def test_scripted_log_folds_to_hand_computed_totals():
    events, _ = import_bytes(lines_text(SCRIPT))
    sales = totals(fold(events)["sales"])
    # offered: c1..c12 = 12; answered c1 (19 s), c8 (10 s), c9 (5 s), c12 (5 s); abandoned c11 (2 s);
    # flowed out: c2 key, c3 no agents, c4 full, c5 closed, c6 empty, c7 withdraw, c10 timeout.
    assert sales["offered"] == 12 and sales["answered"] == 4 and sales["abandoned"] == 1 and sales["flowed_out"] == 7
    assert sales["answer_wait_seconds"] == 19 + 10 + 5 + 5
    assert sales["answered_within:10"] == 3  # 10 s counts as within 10 s (wait <= T)
    assert sales["abandon_wait_seconds"] == 2
    assert (sales["flowed_out:exit_key"], sales["flowed_out:no_agents"], sales["flowed_out:queue_full"],
            sales["flowed_out:other"], sales["flowed_out:timeout"]) == (1, 2, 1, 2, 1)
    # talk: c1 60, c8 10 (blind), c9 15 (attended), c12 5
    assert sales["handled"] == 4 and sales["talk_seconds"] == 60 + 10 + 15 + 5


def test_times_fall_back_to_the_line_epoch_when_fields_disagree_or_the_start_was_not_seen():
    log = lines_text(f"""
        {T + 30}|c1|q|PJSIP/1|CONNECT|5|c1b|1
        {T + 90}|c1|q|PJSIP/1|COMPLETEAGENT|5|60|1
        {T + 100}|c2|q|NONE|ENTERQUEUE||x|1
        {T + 150}|c2|q|PJSIP/1|CONNECT|20|c2b|1
        {T + 200}|c2|q|PJSIP/1|COMPLETEAGENT|20|49|1
    """)
    events, _ = import_bytes(log)
    times = [(e["type"], e.get("call_id"), parse_time(e["time"]) - T) for e in events if e["type"].startswith("call.")]
    assert times == [
        ("call.answered", "c1", 30),  # no ENTERQUEUE seen: the line's epoch
        ("call.ended", "c1", 90),  # 30 + 60 agrees with the epoch
        ("call.offered", "c2", 100),
        ("call.answered", "c2", 150),  # 100 + 20 = 120 is 30 s off the line's 150: the epoch wins
        ("call.ended", "c2", 199),  # 150 + 49, within a second of the line
    ]


def test_agent_aliases_apply_to_agent_fields_but_not_to_ids():
    log = lines_text(f"""
        {T}|MANAGER|500|SIP/1001|ADDMEMBER|
        {T}|NONE|500|Sathish|UNPAUSE|
        {T + 5}|MANAGER|500|SIP/1001|REMOVEMEMBER|
    """)
    plain, _ = import_bytes(log)
    aliased, _ = import_bytes(log, agent_aliases={"SIP/1001": "Sathish"})
    assert [e["agent_id"] for e in plain] == ["SIP/1001", "Sathish", "SIP/1001"]
    assert [e["agent_id"] for e in aliased] == ["Sathish", "Sathish", "Sathish"]
    assert [e["event_id"] for e in plain] == [e["event_id"] for e in aliased]


# ---- skips -------------------------------------------------------------------------------------


def test_unknown_and_malformed_lines_are_counted_not_fatal():
    log = lines_text(f"""
        {T}|c1|q|NONE|ENTERQUEUE||x|1
        {T + 1}|c1|q|NONE|FROBNICATE|1
        {T + 2}|c1|q|NONE|FROBNICATE|2
        {T + 3}|c1|q|NONE|WRAPUPSTART|5
        garbage
        {T}|c1
        xyz|c1|q|NONE|ABANDON|1|1|3
        {T + 4}|NONE|q|NONE|ABANDON|1|1|4
        {T + 5}|c1|NONE|NONE|ABANDON|1|1|5
        {T + 6}|c1|q|NONE|ABANDON|1|1|6
    """) + b"\n"  # and an empty line
    events, skips = import_bytes(log)
    assert [e["type"] for e in events] == ["call.offered", "call.abandoned"]
    assert skips.counts == {
        "unknown_event:FROBNICATE": 2, "unknown_event:WRAPUPSTART": 1, "malformed:too_few_fields": 2,
        "malformed:bad_epoch": 1, "no_call_id:ABANDON": 1, "no_queue:ABANDON": 1, "empty_line": 1,
    }


def test_skip_examples_never_show_data_fields():
    log = lines_text(f"{T}|c1|q|NONE|NEWTHING||+15551234567|1")
    _, skips = import_bytes(log)
    assert skips.examples["unknown_event:NEWTHING"] == [f"{T}|c1|q|NONE|NEWTHING||…|…"]


def test_unknown_event_is_logged_once(caplog):
    log = lines_text("\n".join(f"{T + i}|c1|q|NONE|FROBNICATE|{i}" for i in range(5)))
    with caplog.at_level("WARNING"):
        import_bytes(log)
    assert sum("FROBNICATE" in r.getMessage() for r in caplog.records) == 1


def test_nul_run_inside_a_line_acts_as_a_line_break():
    log = (f"{T}|c1|q|NONE|ENTERQUEUE||x|1\n{T + 5}|c1|q|NONE|ABAN".encode() + b"\x00" * 40
           + f"{T + 9}|c2|q|NONE|ENTERQUEUE||y|1\n".encode())
    events, skips = import_bytes(log)
    assert [(e["type"], e["call_id"]) for e in events] == [("call.offered", "c1"), ("call.offered", "c2")]
    assert skips.counts == {"nul_bytes": 1, "unknown_event:ABAN": 1}


def test_partial_last_line_is_parsed_in_batch_mode():
    events, _ = import_bytes(f"{T}|c1|q|NONE|ENTERQUEUE||x|1\n{T + 3}|c1|q|NONE|ABANDON|1|1|3".encode())
    assert [e["type"] for e in events] == ["call.offered", "call.abandoned"]


def test_identical_lines_in_one_second_get_distinct_ids():
    # As in the 2018 help desk log: two dial attempts in one second, each ending the same way.
    line = f"{T}|c1|NONE|Agent/1|OUTCONGESTION|11"
    other = f"{T}|c1|NONE|Agent/1|OUTCHANUNAVAIL|11"
    events, _ = import_bytes(lines_text(f"{line}\n{other}\n{line}\n{line}\n{T + 1}|c1|NONE|Agent/1|OUTCONGESTION|11"))
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == 5
    assert ids[0] == event_id(SOURCE, line, 0)  # a first occurrence has the plain id
    assert ids[2] == event_id(SOURCE, line, 0, "repeat:1")


# ---- the real files ------------------------------------------------------------------------------


def file_stats(path: Path) -> dict[str, dict]:
    """Per queue, what the file's own fields say (a plain split; NUL bytes count as line breaks).
    Waits and talks count for calls whose earlier line is in the file, as only those can be folded."""
    stats: dict[str, dict] = defaultdict(lambda: {"offered": 0, "answered": 0, "abandoned": 0, "timeout": 0,
                                                  "holds": [], "talks": [], "abandon_waits": []})
    entered, connected = set(), set()
    for line in path.read_bytes().replace(b"\x00", b"\n").decode().splitlines():
        f = line.split("|")
        if len(f) < 5:
            continue
        key, event, data = (f[2], f[1]), f[4], f[5:] + [""] * 5
        s = stats[f[2]]
        if event == "ENTERQUEUE":
            s["offered"] += 1
            entered.add(key)
        elif event in ("FULL", "JOINEMPTY", "JOINUNAVAIL", "CLOSED"):
            s["offered"] += 1
        elif event == "CONNECT" and key in entered:
            s["answered"] += 1
            s["holds"].append(int(data[0]))
            connected.add(key)
        elif event == "ABANDON" and key in entered:
            s["abandoned"] += 1
            s["abandon_waits"].append(int(data[2]))
        elif event == "EXITWITHTIMEOUT" and key in entered:
            s["timeout"] += 1
        elif event in ("COMPLETECALLER", "COMPLETEAGENT") and key in connected:
            s["talks"].append(int(data[1]))
        elif event in ("BLINDTRANSFER", "ATTENDEDTRANSFER") and key in connected:
            s["talks"].append(int(data[3]))
    return {q: s for q, s in stats.items() if s["offered"]}


@pytest.mark.parametrize("name", FILES)
def test_real_file_imports_valid_events_and_folds_to_the_files_own_numbers(name):
    path = DATA / name
    imported = read_file(path, SOURCE)
    events = list(imported)
    assert events, name
    for e in events:
        assert ROUTER.check(orjson.dumps(e))[1] is None, e
    times = [parse_time(e["time"]) for e in events]
    assert times == sorted(times)
    assert not [r for r in imported.skips.counts if r.startswith(("malformed", "unknown_event"))], imported.skips.counts

    models = fold(events)
    expected = file_stats(path)  # empty for the two FreePBX files that hold only agent lines
    for queue, want in expected.items():
        got = totals(models[queue])
        assert (got["offered"], got["answered"], got["abandoned"], got["flowed_out:timeout"]) == (
            want["offered"], want["answered"], want["abandoned"], want["timeout"]), queue
        assert got["answer_wait_seconds"] == sum(want["holds"])  # so the mean hold equals CONNECT's too
        assert got["handled"] == len(want["talks"]) and got["talk_seconds"] == sum(want["talks"])
        assert got["abandon_wait_seconds"] == sum(want["abandon_waits"])
    for queue in set(models) - set(expected):  # queues only agents were seen in
        assert totals(models[queue])["offered"] == 0


def test_help_desk_2018_means_and_mid_call_end():
    """The 2018 export stops mid-call: answered calls outnumber ended ones, and the last call
    that entered is still waiting. The means are checked against the file's own fields."""
    path = DATA / "us_it_helpdesk_2018.queue_log"
    want = file_stats(path)["IT"]
    model = fold(list(read_file(path, SOURCE)))["IT"]
    got = totals(model)
    assert got["answer_wait_seconds"] / got["answered"] == pytest.approx(sum(want["holds"]) / len(want["holds"]))
    assert got["talk_seconds"] / got["handled"] == pytest.approx(sum(want["talks"]) / len(want["talks"]))
    assert got["answered"] > got["handled"]
    assert model.read(model.watermark)["live"]["calls_waiting"] >= 1
    # The member ring timeout is 10 s: no hold between 10 and 21 s, so 10 s and 20 s agree.
    assert got["answered_within:10"] == got["answered_within:20"] == sum(h <= 10 for h in want["holds"])


def test_exactly_three_files_hold_nul_bytes_and_lines_after_the_runs_are_read():
    with_nul = [name for name in FILES if b"\x00" in (DATA / name).read_bytes()]
    assert with_nul == NUL_FILES
    for name in NUL_FILES:
        data = (DATA / name).read_bytes()
        imported = read_file(DATA / name, SOURCE)
        list(imported)
        assert imported.skips.counts["nul_bytes"] == len(re.findall(rb"\x00+", data))
        # Each run here is followed by a QUEUESTART line: it is read (and known), not lost.
        assert imported.skips.counts["ignored:QUEUESTART"] == data.count(b"|QUEUESTART")
        assert imported.lines == data.replace(b"\x00", b"").count(b"\n")


@pytest.mark.parametrize("name", FILES)
def test_reimport_gives_the_same_ids_and_ids_are_unique(name, tmp_path):
    first = [e["event_id"] for e in read_file(DATA / name, SOURCE)]
    rotated = tmp_path / "queue_log.1"
    shutil.copy(DATA / name, rotated)
    second = [e["event_id"] for e in read_file(rotated, SOURCE)]
    assert set(second) == set(first)
    assert len(set(first)) == len(first)


def test_crlf_and_trailing_pipes_do_not_change_ids():
    lf = lines_text(f"{T}|MANAGER|500|SIP/1001|ADDMEMBER\n{T}|NONE|500|Sathish|UNPAUSE")
    crlf = lf.replace(b"\n", b"|\r\n")
    assert [e["event_id"] for e in import_bytes(lf)[0]] == [e["event_id"] for e in import_bytes(crlf)[0]]


def test_help_desk_members_are_logged_under_two_names():
    """A real quirk the report describes: ADDMEMBER names the interface, calls name the agent."""
    events = list(read_file(DATA / "us_it_helpdesk_2018.queue_log", SOURCE))
    joined = {e["agent_id"] for e in events if e["type"] == "agent.queue_joined"}
    answering = {e["agent_id"] for e in events if e["type"] == "call.answered"}
    assert joined and all(a.startswith("Local/") for a in joined)
    assert answering and all(a.startswith("Agent/") for a in answering)


def test_mapper_state_round_trips():
    mapper = QueueLogMapper(SOURCE)
    for line in lines_text(SCRIPT).decode().splitlines()[:9]:  # up to the first CONNECT
        mapper.map_line(line)
    restored = QueueLogMapper(SOURCE)
    restored.load_state(orjson.loads(orjson.dumps(mapper.state())))
    assert restored.state() == mapper.state()
    rest = lines_text(SCRIPT).decode().splitlines()[9:]
    assert [restored.map_line(x) for x in rest] == [mapper.map_line(x) for x in rest]


# ---- AGENTDUMP, DID, outbound lines, ATTENDEDTRANSFER LINK -----------------------------------------


def test_agentdump_is_a_missed_offer_and_the_caller_keeps_waiting():
    # app_queue writes AGENTDUMP when the member answered and hung up during the announcement played
    # to it, before the bridge: the caller stays in the queue and is offered again.
    events, skips = import_bytes(lines_text(f"""
        {T}|MANAGER|q|PJSIP/1|ADDMEMBER|
        {T}|NONE|q|Sathish|UNPAUSE|
        {T + 10}|c1|q|NONE|ENTERQUEUE||x|1
        {T + 15}|c1|q|Karthik|RINGNOANSWER|5000
        {T + 22}|c1|q|Sathish|AGENTDUMP|
        {T + 30}|c1|q|Karthik|CONNECT|20|c1b|4
        {T + 90}|c1|q|Karthik|COMPLETECALLER|20|60|1
    """))
    assert "ignored:AGENTDUMP" not in skips.counts and skips.total() == 0
    dumps = [summary(e) for e in events if e["type"] == "call.ring_no_answer"]
    assert dumps == [
        ("call.ring_no_answer", 15, {"queue": "q", "call_id": "c1", "agent_id": "Karthik", "attempt": 1,
                                     "ring_seconds": 5.0}),
        ("call.ring_no_answer", 22, {"queue": "q", "call_id": "c1", "agent_id": "Sathish", "attempt": 2,
                                     "attributes": {"asterisk_event": "AGENTDUMP"}}),
    ]
    # Sathish was never put on_call (CONNECT was not written for it): its state is left as it was.
    assert [(e["type"], round(parse_time(e["time"]) - T)) for e in events if e.get("agent_id") == "Sathish"] == [
        ("agent.state_changed", 0), ("call.ring_no_answer", 22)]
    q = totals(fold(events)["q"])
    assert (q["offered"], q["answered"], q["abandoned"], q["flowed_out"]) == (1, 1, 0, 0)
    assert q["answer_wait_seconds"] == 20  # the dump did not end the wait
    for e in events:
        assert ROUTER.check(orjson.dumps(e))[1] is None, e


def test_did_is_carried_on_the_calls_offer():
    # FreePBX writes DID (the number the call came in on: the centre's own) just before ENTERQUEUE;
    # an internal call has an empty DID.
    events, skips = import_bytes(lines_text(f"""
        {T}|c1|500|NONE|DID|7777
        {T}|c1|500|NONE|ENTERQUEUE||1001|1
        {T + 5}|c2|500|NONE|DID|
        {T + 5}|c2|500|NONE|ENTERQUEUE||1002|1
        {T + 8}|c3|500|NONE|DID|+442079460000
        {T + 8}|c3|500|NONE|JOINEMPTY|
        {T + 9}|NONE|500|NONE|DID|7777
        {T + 20}|c1|500|NONE|ABANDON|1|1|20
        {T + 30}|c1|501|NONE|ENTERQUEUE||1001|1
    """))
    assert [summary(e) for e in events if e["type"] == "call.offered"] == [
        ("call.offered", 0, {"queue": "500", "call_id": "c1", "attributes": {"did": "7777"}}),
        ("call.offered", 5, {"queue": "500", "call_id": "c2"}),
        ("call.offered", 8, {"queue": "500", "call_id": "c3", "attributes": {"did": "+442079460000"}}),
        ("call.offered", 30, {"queue": "501", "call_id": "c1"}),  # used once: no DID line for this entry
    ]
    assert skips.counts == {"no_call_id:DID": 1}
    for e in events:
        assert ROUTER.check(orjson.dumps(e))[1] is None, e


def test_outdial_gives_its_result_the_time_from_the_dial():
    events, skips = import_bytes(lines_text(f"""
        {T}|c1|NONE|Agent/1|OUTDIAL|3318
        {T + 400}|c1|NONE|Agent/1|OUTANSWER|3318|COMPLETEAGENT
        {T + 500}|c2|NONE|Agent/1|OUTDIAL|7010
        {T + 501}|c2|NONE|Agent/1|OUTCHANUNAVAIL|7010
        {T + 501}|c2|NONE|Agent/1|OUTDIAL|7010
        {T + 503}|c2|NONE|Agent/1|OUTCANCEL|7010
        {T + 600}|c3|NONE|Agent/1|OUTBUSY|1115
        {T + 610}|c1|NONE|Agent/1|OUTTRANSFER|3318|1125
    """))
    assert [summary(e) for e in events] == [
        ("call.outbound_attempt", 400, {"call_id": "c1", "agent_id": "Agent/1", "result": "connected",
                                        "attributes": {"seconds_from_dial": 400}}),
        ("call.outbound_attempt", 501, {"call_id": "c2", "agent_id": "Agent/1", "result": "failed",
                                        "attributes": {"seconds_from_dial": 1}}),
        ("call.outbound_attempt", 503, {"call_id": "c2", "agent_id": "Agent/1", "result": "cancelled",
                                        "attributes": {"seconds_from_dial": 2}}),
        ("call.outbound_attempt", 600, {"call_id": "c3", "agent_id": "Agent/1", "result": "busy"}),  # no OUTDIAL seen
    ]
    # OUTTRANSFER names no queue, which call.transferred needs: it stays a counted, ignored line.
    assert skips.counts == {"ignored:OUTTRANSFER": 1}
    for e in events:
        assert ROUTER.check(orjson.dumps(e))[1] is None, e


def test_attended_transfer_link_has_its_talktime_one_field_later():
    # ATTENDEDTRANSFER(LINK|channel 1|channel 2|holdtime|talktime|position) in Asterisk 12+. The
    # holdtime (5) read as the talktime would give an end 2 s before the line's epoch: within the
    # clock slip, so it would be used, and the talk would be 5 s instead of 7.
    events, _ = import_bytes(lines_text(f"""
        {T}|c1|q|NONE|ENTERQUEUE||x|1
        {T + 5}|c1|q|PJSIP/1|CONNECT|5|c1b|2
        {T + 12}|c1|q|PJSIP/1|ATTENDEDTRANSFER|LINK|Local/200@a-0001;1|Local/200@a-0001;2|5|7|1
    """))
    transfer = next(e for e in events if e["type"] == "call.transferred")
    assert summary(transfer) == ("call.transferred", 12, {"queue": "q", "call_id": "c1", "agent_id": "PJSIP/1",
                                                          "kind": "attended", "attributes": {"method": "LINK"}})
    assert totals(fold(events)["q"])["talk_seconds"] == 7


def test_real_files_map_agentdump_did_and_outbound_lines():
    """Every AGENTDUMP, DID and outbound line of the real files is mapped, none is a skip."""
    lines: dict[str, int] = defaultdict(int)
    did_numbers = 0
    offered_with_did = attempts = attempts_timed = 0
    skips: dict[str, int] = defaultdict(int)
    for name in FILES:
        for line in (DATA / name).read_bytes().replace(b"\x00", b"\n").decode().splitlines():
            f = line.split("|")
            if len(f) >= 5 and (f[4] in ("AGENTDUMP", "DID") or f[4].startswith("OUT")):
                lines[f[4]] += 1
                did_numbers += f[4] == "DID" and len(f) > 5 and f[5] != ""
        imported = read_file(DATA / name, SOURCE)
        for e in imported:
            attributes = e.get("attributes", {})
            offered_with_did += e["type"] == "call.offered" and "did" in attributes
            attempts += e["type"] == "call.outbound_attempt"
            attempts_timed += e["type"] == "call.outbound_attempt" and "seconds_from_dial" in attributes
        for reason, n in imported.skips.counts.items():
            skips[reason] += n
    assert dict(lines) == {"DID": 33, "OUTDIAL": 128, "OUTANSWER": 77, "OUTCANCEL": 24, "OUTCHANUNAVAIL": 18,
                           "OUTCONGESTION": 9, "OUTTRANSFER": 1}  # no AGENTDUMP in these files
    assert did_numbers == 11 and offered_with_did == 11  # 22 DID lines are empty (internal calls)
    assert attempts == attempts_timed == 128  # every result line, each after its OUTDIAL
    assert not [r for r in skips if r.endswith((":AGENTDUMP", ":DID", ":OUTDIAL")) or "did" in r]
    assert skips["ignored:OUTTRANSFER"] == 1  # see test_outdial_gives_its_result_the_time_from_the_dial


def test_real_attended_transfer_maps_to_an_attended_transfer_at_the_end_of_its_talk():
    # 1543833653|1543833609.335|IT|Agent/1128|ATTENDEDTRANSFER|||6|30|1: method and data are empty.
    events = list(read_file(DATA / "us_it_helpdesk_2018.queue_log", SOURCE))
    call = [summary(e) for e in events if e.get("call_id") == "1543833609.335"]
    answered_at = 1543833617 + 6 - T
    assert call == [
        ("call.offered", 1543833617 - T, {"queue": "IT", "call_id": "1543833609.335"}),
        ("call.answered", answered_at, {"queue": "IT", "call_id": "1543833609.335", "agent_id": "Agent/1128"}),
        ("call.transferred", answered_at + 30, {"queue": "IT", "call_id": "1543833609.335",
                                                "agent_id": "Agent/1128", "kind": "attended"}),
    ]


def test_a_state_saved_before_dids_and_dials_were_kept_still_loads():
    mapper = QueueLogMapper(SOURCE)
    for line in lines_text(SCRIPT).decode().splitlines()[:9]:
        mapper.map_line(line)
    old = mapper.state()
    del old["dids"], old["dialling"]  # what an older version saved
    restored = QueueLogMapper(SOURCE)
    restored.load_state(orjson.loads(orjson.dumps(old)))
    assert restored.state() == mapper.state()
    rest = lines_text(SCRIPT).decode().splitlines()[9:]
    assert [restored.map_line(x) for x in rest] == [mapper.map_line(x) for x in rest]
    # and the new parts round-trip
    mapper.map_line(f"{T + 400}|d1|q|NONE|DID|7777")
    mapper.map_line(f"{T + 400}|o1|NONE|Agent/7|OUTDIAL|3318")
    again = QueueLogMapper(SOURCE)
    again.load_state(orjson.loads(orjson.dumps(mapper.state())))
    assert again.state() == mapper.state() and again.dids == {"d1": ("7777", T + 400)}


# ---- wait_seconds on call.answered ------------------------------------------------------------------


def answer_waits(events: list[dict]) -> list[tuple[str, str, float | None]]:
    """(queue, call, wait_seconds) of every call.answered, after checking that wait_seconds is exactly
    the wait the model computes (answered time minus the time of the call's latest call.offered in
    that queue) and that it is left out when no offer was seen."""
    offered: dict[tuple[str, str], float] = {}
    out = []
    for e in sorted(events, key=lambda e: parse_time(e["time"])):  # stable: a line's events keep their order
        key = (e.get("queue"), e.get("call_id"))
        if e["type"] == "call.offered":
            offered[key] = parse_time(e["time"])
        elif e["type"] == "call.answered":
            entered = offered.pop(key, None)
            if entered is None:
                assert "wait_seconds" not in e, e
            else:
                assert e["wait_seconds"] == round(parse_time(e["time"]) - entered, 3), e
            assert ROUTER.check(orjson.dumps(e))[1] is None, e
            out.append((e["queue"], e["call_id"], e.get("wait_seconds")))
    return out


def test_answered_carries_the_holdtime_as_wait_seconds():
    events, _ = import_bytes(lines_text(SCRIPT))
    # c1 holdtime 19 (answered at 29, the line says 30), c8 10, c9 5, c12 5
    assert answer_waits(events) == [("sales", "c1", 19), ("sales", "c8", 10), ("sales", "c9", 5), ("sales", "c12", 5)]
    sales = totals(fold(events)["sales"])
    assert sales["answer_wait_seconds"] == sum(e["wait_seconds"] for e in events if e["type"] == "call.answered")


def test_wait_seconds_follows_the_answer_time_when_it_falls_back_to_the_epoch():
    events, _ = import_bytes(lines_text(f"""
        {T + 30}|c1|q|PJSIP/1|CONNECT|5|c1b|1
        {T + 100}|c2|q|NONE|ENTERQUEUE||x|1
        {T + 150}|c2|q|PJSIP/1|CONNECT|20|c2b|1
    """))
    # c1: no ENTERQUEUE seen, so no offer and no wait_seconds (never a guessed 0, nor the unchecked
    # holdtime); c2: 100 + 20 is 30 s off the line's 150, so the answer is at 150 and the wait is 50,
    # the one the queue computes.
    assert answer_waits(events) == [("q", "c1", None), ("q", "c2", 50)]


def test_realtime_rows_with_microseconds_give_the_wait_of_their_own_times():
    rows = [("2012-07-04 11:33:21.165823", "c1", "q1", "NONE", "ENTERQUEUE", "", "1000", "1"),
            ("2012-07-04 11:33:23.085718", "c1", "q1", "Agent/3001", "CONNECT", "2", "c1b", "1")]
    events, _ = read_rows(rows, SOURCE)
    assert answer_waits(events) == [("q1", "c1", 1.92)]  # 23.086 - 21.166, as the times are written


def test_wait_seconds_does_not_change_the_event_ids():
    events, _ = import_bytes(lines_text(SCRIPT))
    answered = [e for e in events if e["type"] == "call.answered"]
    # CONNECT's call.answered is the line's first event: its id is the line text and index 0.
    lines = {line.split("|")[1]: line for line in lines_text(SCRIPT).decode().splitlines() if "|CONNECT|" in line}
    assert [e["event_id"] for e in answered] == [event_id(SOURCE, lines[e["call_id"]], 0) for e in answered]
    assert all("wait_seconds" in e for e in answered)


@pytest.mark.parametrize("name", FILES)
def test_real_files_answered_wait_seconds_is_connects_holdtime(name):
    path = DATA / name
    holds: dict[tuple[str, str], list[int]] = defaultdict(list)  # a plain split of the file's CONNECT lines
    entered = set()
    for line in path.read_bytes().replace(b"\x00", b"\n").decode().splitlines():
        f = line.split("|")
        if len(f) >= 6 and f[4] == "ENTERQUEUE":
            entered.add((f[2], f[1]))
        elif len(f) >= 6 and f[4] == "CONNECT" and (f[2], f[1]) in entered:
            holds[(f[2], f[1])].append(int(f[5]))
    events = list(read_file(path, SOURCE))
    waits = answer_waits(events)
    assert all(w is not None for _, _, w in waits)  # every answered call of these files entered in the file
    assert sorted(waits) == sorted((q, c, h) for (q, c), hs in holds.items() for h in hs)
    models = fold(events)
    for queue in {q for q, _, _ in waits}:
        assert totals(models[queue])["answer_wait_seconds"] == sum(w for q, _, w in waits if q == queue)


def test_real_files_wait_seconds_is_the_holdtime_even_where_the_epochs_disagree():
    # 99 answered calls in the files. For one of them the CONNECT epoch minus the ENTERQUEUE epoch is a
    # second off the holdtime (see Times in schemas/adapters.md): its wait_seconds is the holdtime, like
    # the wait the queue computes, since the answer is timed from the holdtime.
    answered = epochs_disagree = 0
    for name in FILES:
        enter_epoch: dict[tuple[str, str], int] = {}
        connects: dict[tuple[str, str], tuple[int, int]] = {}  # -> (epoch, holdtime)
        for line in (DATA / name).read_bytes().replace(b"\x00", b"\n").decode().splitlines():
            f = line.split("|")
            if len(f) >= 6 and f[4] == "ENTERQUEUE":
                enter_epoch[(f[2], f[1])] = int(f[0])
            elif len(f) >= 6 and f[4] == "CONNECT":
                connects[(f[2], f[1])] = (int(f[0]), int(f[5]))
        for queue, call, wait in answer_waits(list(read_file(DATA / name, SOURCE))):
            epoch, hold = connects[(queue, call)]
            assert wait == hold
            answered += 1
            epochs_disagree += epoch - enter_epoch[(queue, call)] != hold
    assert (answered, epochs_disagree) == (99, 1)


def test_the_2018_dial_outs_count_in_the_outbound_queue_when_one_is_named():
    """The 2018 help desk log's callback-agent dial-outs name no queue (NONE): by default their
    attempts count in none; with outbound_queue (`--outbound-queue`) they are that queue's, and
    its connect rate is the file's OUTANSWER lines over its result lines (OUTDIAL starts each of them):
    77 / (77 + 24 + 18 + 9) = 77 / 128."""
    path = DATA / "us_it_helpdesk_2018.queue_log"
    plain = [e for e in read_file(path, SOURCE) if e["type"] == "call.outbound_attempt"]
    assert len(plain) == 128 and all("queue" not in e for e in plain)
    events = list(read_file(path, SOURCE, outbound_queue="callbacks"))
    attempts = [e for e in events if e["type"] == "call.outbound_attempt"]
    assert len(attempts) == 128 and {e["queue"] for e in attempts} == {"callbacks"}
    assert {e["event_id"] for e in attempts} == {e["event_id"] for e in plain}  # the same ids: a replay deduplicates
    model = fold(events)["callbacks"]
    got = totals(model)
    assert (got["outbound_attempts"], got["outbound_live_connects"]) == (128, 77)
    assert totals(fold(events)["IT"]).get("outbound_live_connects", 0) == 0  # the help desk queue's own figures are untouched
