"""The per-call record importer on the real Technion "Anonymous Bank" files (Feb and Aug 1999).

Expectations come from the third-party figures in shared/data/README.md, the third-party 6-minute
counts file, plain csv computations over the raw rows written here (no use of the importer), and
hand-computed instants for individual rows.
"""

from __future__ import annotations

import collections
import csv
import math
import shutil
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from callpulse.config import load_config
from callpulse.events import Router, parse_time
from callpulse.kpi.model import QueueModel
from callpulse.sources import event_id
from callpulse.sources.call_records import (
    IVR_OUT_OF_ORDER,
    UNKNOWN_AGENT,
    AnonymousBank,
    CallRecord,
    Skip,
    import_events,
    read_records,
)

REPO = Path(__file__).resolve().parents[1]
ISRAEL = ZoneInfo("Asia/Jerusalem")
QUEUES = ("PS", "PE", "IN", "NE", "NW", "TT")


def data_dir() -> Path:
    """shared/data next to the checkout (or the workspace copy). Missing data fails, never skips."""
    for base in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if (base / "anonymous_bank" / "february1999.tsv").is_file():
            return base / "anonymous_bank"
    pytest.fail("shared/data/anonymous_bank not found next to the repository nor in /work/shared/data", pytrace=False)


FEB = "february1999.tsv"
AUG = "august1999.tsv"


# ---- fixtures: the importer's output and the raw rows ------------------------------------------


@pytest.fixture(scope="module")
def feb_records() -> list[CallRecord]:
    items = list(read_records(data_dir() / FEB, AnonymousBank()))
    assert not [i for i in items if isinstance(i, Skip)]  # every row of the real file is readable
    return items


@pytest.fixture(scope="module")
def feb_import():
    return import_events(data_dir() / FEB, AnonymousBank())


@pytest.fixture(scope="module")
def feb_events(feb_import) -> list[dict]:
    return feb_import[0]


@pytest.fixture(scope="module")
def feb_by_call(feb_events) -> dict[str, dict[str, dict]]:
    """call_id -> event type -> event."""
    calls: dict[str, dict[str, dict]] = collections.defaultdict(dict)
    for e in feb_events:
        assert e["type"] not in calls[e["call_id"]], "a call has at most one event of each type"
        calls[e["call_id"]][e["type"]] = e
    return calls


def raw_rows(name: str) -> list[dict[str, str]]:
    with open(data_dir() / name, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def feb_rows() -> list[dict[str, str]]:
    return raw_rows(FEB)


def row_call_id(row: dict[str, str]) -> str:
    return f"{row['date']}-{row['vru+line']}-{row['call_id']}"


def seconds(tod: str) -> int:
    h, m, s = map(int, tod.split(":"))
    return h * 3600 + m * 60 + s


def reached_queue(row: dict[str, str]) -> bool:
    """The file's own marker: q_start = q_exit = 0:00:00 with no q_time means no queue entry."""
    return not (row["q_start"] == "0:00:00" and row["q_exit"] == "0:00:00" and row["q_time"] == "0")


def t(event: dict) -> float:
    return parse_time(event["time"])


def local(instant: float) -> datetime:
    return datetime.fromtimestamp(instant, ISRAEL)


def check_schema(events: list[dict]) -> None:
    router = Router(max_future_seconds=float("inf"))
    bad = []
    for e in events:
        _, rejected = router.check(orjson.dumps(e))
        if rejected is not None:
            bad.append((e, rejected.reason, rejected.detail))
    assert not bad, f"{len(bad)} invalid events, first: {bad[0]}"


# ---- the third party's figures --------------------------------------------------------------


def test_february_third_party_totals(feb_records, feb_import):
    events, skips = feb_import
    assert len(feb_records) == 33_344
    phantoms = [r for r in feb_records if r.outcome == "ignored"]
    assert len(phantoms) == 278 and {r.ignored_because for r in phantoms} == {"phantom"}
    assert skips.counts["phantom"] == 278

    kept = [r for r in feb_records if r.outcome != "ignored"]
    negative_vru = [r for r in kept if r.ivr_left < r.ivr_entered]
    assert len(negative_vru) == 23
    assert skips.counts[IVR_OUT_OF_ORDER] == 23
    assert set(skips.counts) == {"phantom", IVR_OUT_OF_ORDER}

    first_week = [r for r in kept if r.ivr_left >= r.ivr_entered
                  and date(1999, 2, 1) <= local(r.ivr_entered).date() <= date(1999, 2, 7)]
    assert len(first_week) == 8_940


def test_negative_vru_time_is_the_files_vru_time(feb_records, feb_rows):
    ids = {row_call_id(r) for r in feb_rows if r["outcome"] != "PHANTOM" and int(r["vru_time"]) < 0}
    assert ids == {r.call_id for r in feb_records if r.outcome != "ignored" and r.ivr_left < r.ivr_entered}
    by_id = {r.call_id: r for r in feb_records}
    for row in feb_rows:  # vru_time is exactly vru_exit - vru_entry in this file, negative ones too
        record = by_id[row_call_id(row)]
        assert record.ivr_left - record.ivr_entered == int(row["vru_time"])


def six_minute_bins(records: list[CallRecord], right_closed: bool) -> collections.Counter:
    bins: collections.Counter = collections.Counter()
    for r in records:
        entered = local(r.ivr_entered)
        s = entered.hour * 3600 + entered.minute * 60 + entered.second
        interval = max(1, math.ceil(s / 360)) if right_closed else s // 360 + 1
        bins[(entered.date().isoformat(), interval)] += 1
    return bins


def test_six_minute_counts_reproduce_the_third_party_file(feb_records):
    with open(data_dir() / "february1999_6min_counts.csv", newline="") as f:
        oracle = {(row["date"], int(row["interval"])): int(row["calls"]) for row in csv.DictReader(f)}
    assert len(oracle) == 6_720  # 28 days x 240 intervals

    ours = six_minute_bins(feb_records, right_closed=True)  # every record, PHANTOM included
    assert set(ours) <= set(oracle)  # no record lands outside February's 240 intervals a day
    assert {key: ours.get(key, 0) for key in oracle} == oracle

    # The usual left-closed convention does not: this pins how the third party binned.
    left = six_minute_bins(feb_records, right_closed=False)
    assert sum(1 for key in oracle if left.get(key, 0) != oracle[key]) == 172


# ---- events ---------------------------------------------------------------------------------


def test_every_event_is_schema_valid_with_unique_stable_ids(feb_events, tmp_path):
    check_schema(feb_events)
    ids = [e["event_id"] for e in feb_events]
    assert len(set(ids)) == len(ids)

    # Re-importing, even a copy at another path, gives the very same events (ids included).
    copy = tmp_path / "renamed.tsv"
    shutil.copyfile(data_dir() / FEB, copy)
    again, _ = import_events(copy, AnonymousBank())
    assert again == feb_events


def test_events_are_in_time_order_and_ordered_within_each_call(feb_events, feb_by_call):
    times = [t(e) for e in feb_events]
    assert times == sorted(times)
    lifecycle = ["call.ivr_entered", "call.ivr_left", "call.offered", "call.answered", "call.abandoned", "call.ended"]
    for call_id, by_type in feb_by_call.items():
        ordered = [by_type[k] for k in lifecycle if k in by_type]
        assert [t(e) for e in ordered] == sorted(t(e) for e in ordered), call_id


def test_ivr_arrivals_per_queue_match_the_file(feb_events, feb_rows):
    expected = collections.Counter(r["type"] for r in feb_rows if r["outcome"] != "PHANTOM" and int(r["vru_time"]) >= 0)
    got = collections.Counter(e["queue"] for e in feb_events if e["type"] == "call.ivr_entered")
    assert got == expected


def plain_queue_totals(rows: list[dict[str, str]], queue: str) -> dict[str, float]:
    """Per-queue figures straight from the raw fields: AGENT rows are answered after q_time
    (0 when they went straight to an agent) and talk ser_time; HANG rows that reached the queue
    are abandoned after q_time; PHANTOM rows are left out."""
    out = collections.Counter()
    for r in rows:
        if r["type"] != queue or r["outcome"] == "PHANTOM":
            continue
        wait = int(r["q_time"])
        if r["outcome"] == "AGENT":
            out["offered"] += 1
            out["answered"] += 1
            out["answer_wait_seconds"] += wait
            out["answered_within:20"] += wait <= 20
            out["handled"] += 1
            out["talk_seconds"] += int(r["ser_time"])
        elif r["outcome"] == "HANG" and reached_queue(r):
            out["offered"] += 1
            out["abandoned"] += 1
            out["abandon_wait_seconds"] += wait
    return dict(out)


def fold(events: list[dict], queue: str) -> QueueModel:
    cfg = load_config(None, env={})
    model = QueueModel(cfg.queue(queue), lateness_seconds=60.0, histogram_bounds=[10, 20])
    for e in events:
        if e.get("queue") == queue:
            assert model.apply(e, t(e)) == "applied"
    return model


@pytest.mark.parametrize("queue", QUEUES)
def test_queue_totals_through_the_model_match_a_plain_computation(feb_events, feb_rows, queue):
    expected = plain_queue_totals(feb_rows, queue)
    model = fold(feb_events, queue)
    totals = model.read(model.watermark)["totals"]
    for name, value in expected.items():
        assert totals[name] == value, name
    assert totals["flowed_out"] == 0
    assert not model.waiting and not model.pending and not model.talking  # every wait and talk closed
    # the means a wallboard shows
    assert totals["answer_wait_seconds"] / totals["answered"] == expected["answer_wait_seconds"] / expected["answered"]
    assert totals["talk_seconds"] / totals["handled"] == expected["talk_seconds"] / expected["answered"]


def test_wait_is_q_time_and_talk_is_ser_time_despite_the_clock_skew(feb_rows, feb_by_call):
    skewed = queued_with_service = 0
    for row in feb_rows:
        if row["outcome"] != "AGENT":
            continue
        call = feb_by_call[row_call_id(row)]
        assert t(call["call.answered"]) - t(call["call.offered"]) == int(row["q_time"])
        assert t(call["call.ended"]) - t(call["call.answered"]) == int(row["ser_time"])
        if reached_queue(row) and row["ser_start"] != "0:00:00":
            queued_with_service += 1
            gap = (seconds(row["ser_start"]) - seconds(row["q_exit"])) % 86400
            skewed += gap in (86400 - 1, 86400 - 2)  # service clock 1-2 s behind the queue's
    assert skewed > queued_with_service / 2  # "usually", as the data README says: the check covers it


def test_abandoned_calls_end_after_q_time(feb_rows, feb_by_call):
    n = 0
    for row in feb_rows:
        if row["outcome"] == "HANG" and reached_queue(row):
            call = feb_by_call[row_call_id(row)]
            assert t(call["call.abandoned"]) - t(call["call.offered"]) == int(row["q_time"])
            assert "call.answered" not in call
            n += 1
    assert n > 0


def test_queue_exit_lands_on_the_files_clock(feb_rows, feb_by_call):
    """answered / abandoned are at q_start + q_time: their local time of day is the file's q_exit."""
    for row in feb_rows:
        if row["outcome"] == "PHANTOM" or not reached_queue(row):
            continue
        call = feb_by_call[row_call_id(row)]
        end = call.get("call.answered") or call["call.abandoned"]
        end_local = local(t(end))
        assert end_local.hour * 3600 + end_local.minute * 60 + end_local.second == seconds(row["q_exit"])


def test_direct_to_agent_call_34536(feb_by_call):
    # AA0101 34536, 990201: vru 7:02:47 -> 7:02:56, q_start 0:00:00, AGENT, DORIT, ser_time 166.
    # Israel is UTC+2 in February: offered and answered at vru_exit, ended 166 s later.
    call = feb_by_call["990201-AA0101-34536"]
    assert call["call.ivr_entered"]["time"] == "1999-02-01T05:02:47.000Z"
    assert call["call.ivr_left"]["time"] == "1999-02-01T05:02:56.000Z"
    assert call["call.ivr_left"]["result"] == "to_queue" and call["call.ivr_left"]["queue"] == "PS"
    assert call["call.offered"]["time"] == call["call.answered"]["time"] == "1999-02-01T05:02:56.000Z"
    assert call["call.offered"]["attributes"] == {"vru_line": "AA0101", "direct_to_agent": True}
    assert call["call.offered"]["priority"] == 0
    assert call["call.answered"]["agent_id"] == call["call.ended"]["agent_id"] == "DORIT"
    assert call["call.ended"]["time"] == "1999-02-01T05:05:42.000Z"


def test_the_data_behind_the_direct_to_agent_mapping(feb_rows):
    """Why AGENT rows without a queue entry are answered with zero wait: no queued AGENT row has
    a zero q_time (zero waits are recorded as "no queue"), and with a named agent those rows are
    about as many as the queued ones."""
    served = [r for r in feb_rows if r["outcome"] == "AGENT" and r["server"] != "NO_SERVER"]
    assert min(int(r["q_time"]) for r in served if reached_queue(r)) >= 1
    direct = sum(not reached_queue(r) for r in served)
    assert direct > 0.4 * len(served)


def test_served_without_a_server_is_answered_by_unknown(feb_rows, feb_by_call):
    no_server = [row_call_id(r) for r in feb_rows if r["outcome"] == "AGENT" and r["server"] == "NO_SERVER"]
    assert len(no_server) == 491  # the README's figure
    for call_id in no_server:
        call = feb_by_call[call_id]
        assert call["call.answered"]["agent_id"] == UNKNOWN_AGENT
        assert "agent_id" not in call["call.ended"]
    # AA0101 34537: NO_SERVER, served straight from the VRU for 5 s
    call = feb_by_call["990201-AA0101-34537"]
    assert call["call.answered"]["time"] == "1999-02-01T05:31:55.000Z"
    assert call["call.ended"]["time"] == "1999-02-01T05:32:00.000Z"


def test_served_with_ser_time_zero(feb_rows, feb_by_call):
    zero = [r for r in feb_rows if r["outcome"] == "AGENT" and r["ser_time"] == "0"]
    assert zero
    for row in zero:
        call = feb_by_call[row_call_id(row)]
        assert call["call.ended"]["time"] == call["call.answered"]["time"]


def test_hung_up_in_the_vru_never_reaches_the_queue(feb_rows, feb_by_call):
    in_vru = [r for r in feb_rows if r["outcome"] == "HANG" and not reached_queue(r)]
    assert in_vru
    for row in in_vru:
        call = feb_by_call[row_call_id(row)]
        assert set(call) == {"call.ivr_entered", "call.ivr_left"}
        assert call["call.ivr_left"]["result"] == "abandoned" and "queue" not in call["call.ivr_left"]
        assert call["call.ivr_entered"]["queue"] == row["type"]


def test_phantom_rows_give_no_events(feb_rows, feb_by_call):
    phantoms = [row_call_id(r) for r in feb_rows if r["outcome"] == "PHANTOM"]
    assert len(phantoms) == 278
    assert not any(c in feb_by_call for c in phantoms)


def test_negative_vru_time_rows_keep_their_queue_part(feb_by_call):
    # AA0102 30456, 990207: vru 9:48:14 -> 9:47:17 (-57), queue 9:47:17 -> 9:50:11 (174), KAZAV 77 s.
    call = feb_by_call["990207-AA0102-30456"]
    assert set(call) == {"call.offered", "call.answered", "call.ended"}
    assert call["call.offered"]["time"] == "1999-02-07T07:47:17.000Z"
    assert call["call.answered"]["time"] == "1999-02-07T07:50:11.000Z"
    assert call["call.ended"]["time"] == "1999-02-07T07:51:28.000Z"
    # AA0201 35509, 990221: vru -31, then hung up in the queue after 43 s
    call = feb_by_call["990221-AA0201-35509"]
    assert set(call) == {"call.offered", "call.abandoned"}
    assert t(call["call.abandoned"]) - t(call["call.offered"]) == 43


def test_midnight_crossings_get_next_day_instants(feb_rows, feb_by_call):
    # Hand-computed (UTC+2): AA0105 35608, 990210: queue 23:59:29 -> 0:00:26 next day, HANG.
    call = feb_by_call["990210-AA0105-35608"]
    assert call["call.offered"]["time"] == "1999-02-10T21:59:29.000Z"
    assert call["call.abandoned"]["time"] == "1999-02-10T22:00:26.000Z"  # 11 Feb 00:00:26 local
    # AA0102 31056, 990215: vru 23:59:54, q_start 0:00:00 *with* q_time 27: a real queue entry at
    # midnight, not the "never queued" marker. Answered at 0:00:27, AVNI, 67 s.
    call = feb_by_call["990215-AA0102-31056"]
    assert call["call.offered"]["time"] == "1999-02-15T22:00:00.000Z"
    assert call["call.answered"]["time"] == "1999-02-15T22:00:27.000Z"
    assert call["call.ended"]["time"] == "1999-02-15T22:01:34.000Z"
    # AA0102 31307, 990220: direct to DARMON at 23:59:44, talk 105 s -> ends 0:01:29 on the 21st
    # (the file's ser_exit says 0:01:28 because its ser_start is 1 s behind: 23:59:43).
    call = feb_by_call["990220-AA0102-31307"]
    assert call["call.answered"]["time"] == "1999-02-20T21:59:44.000Z"
    assert call["call.ended"]["time"] == "1999-02-20T22:01:29.000Z"

    # Every row whose queue or service clock wraps past midnight ends on the next local day.
    crossing = [r for r in feb_rows if r["outcome"] != "PHANTOM" and (
        (reached_queue(r) and seconds(r["q_exit"]) < seconds(r["q_start"]))
        or (r["ser_start"] != "0:00:00" and seconds(r["ser_exit"]) < seconds(r["ser_start"])))]
    assert {"990210-AA0105-35608", "990220-AA0102-31307"} <= {row_call_id(r) for r in crossing}
    for row in crossing:
        call = feb_by_call[row_call_id(row)]
        last = call.get("call.ended") or call["call.abandoned"]
        day = date(1999, int(row["date"][2:4]), int(row["date"][4:6]))
        assert local(t(call["call.ivr_entered"])).date() == day
        assert (local(t(last)).date() - day).days == 1


def test_call_ids_are_unique_per_record(feb_records, feb_rows):
    assert len({r["call_id"] for r in feb_rows}) < len(feb_rows)  # the file's own id repeats
    assert len({r.call_id for r in feb_records}) == len(feb_records) == 33_344


def test_timezone_and_source_are_parameters(feb_events):
    events, _ = import_events(data_dir() / FEB, AnonymousBank(), timezone="UTC", source="bank:il")
    assert {e["source"] for e in events} == {"bank:il"}
    assert not {e["event_id"] for e in events} & {e["event_id"] for e in feb_events}  # ids name the source
    israel = {(e["call_id"], e["type"]): t(e) for e in feb_events}
    as_utc = {(e["call_id"], e["type"]): t(e) for e in events}
    assert israel.keys() == as_utc.keys()
    assert {as_utc[k] - israel[k] for k in israel} == {7200.0}  # Israel is UTC+2 all February


# ---- August --------------------------------------------------------------------------------


def test_august_imports():
    records = list(read_records(data_dir() / AUG, AnonymousBank()))
    assert len(records) == 42_078 and not [r for r in records if isinstance(r, Skip)]
    events, skips = import_events(data_dir() / AUG, AnonymousBank())
    rows = raw_rows(AUG)
    assert skips.counts["phantom"] == sum(r["outcome"] == "PHANTOM" for r in rows)
    assert skips.counts[IVR_OUT_OF_ORDER] == sum(r["outcome"] != "PHANTOM" and int(r["vru_time"]) < 0 for r in rows)
    check_schema(events)
    assert len({e["event_id"] for e in events}) == len(events)
    waits = check_answer_waits(events)  # wait_seconds = answered - offered = q_time here too
    served = [r for r in rows if r["outcome"] == "AGENT"]
    assert len(waits) == len(served) and all(waits[row_call_id(r)] == int(r["q_time"]) for r in served)
    # August is summer time in Israel (UTC+3): AA0204 43678, 990801 0:10:10 local
    first = next(e for e in events if e["call_id"] == "990801-AA0204-43678")
    assert first["time"] == "1999-07-31T21:10:10.000Z"


# ---- malformed input (a small file written here, not real data) ----------------------------


HEADER = "\t".join(AnonymousBank.columns)
GOOD = "AA0101\t34536\t0\t0\tPS\t990201\t7:02:47\t7:02:56\t9\t0:00:00\t0:00:00\t0\tAGENT\t7:02:55\t7:05:41\t166\tDORIT"


def test_unreadable_rows_are_skipped_with_a_reason(tmp_path):
    path = tmp_path / "bad.tsv"
    lines = [HEADER, GOOD, "AA0101\t1\tshort row", GOOD.replace("7:02:47", "7:62:47"),
             GOOD.replace("AGENT", "TRANSFER"), GOOD.replace("\t166\t", "\t-5\t"), "", GOOD.replace("34536", "34537")]
    path.write_text("\r\n".join(lines) + "\r\n")
    events, skips = import_events(path, AnonymousBank())
    assert skips.counts == {"malformed row": 3, "unknown outcome": 1}
    assert skips.examples["malformed row"][0].startswith("line 3:")
    assert {e["call_id"] for e in events} == {"990201-AA0101-34536", "990201-AA0101-34537"}
    check_schema(events)


def test_a_file_of_another_layout_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("epoch|callid|queue\n1|2|3\n")
    with pytest.raises(ValueError, match="not an Anonymous Bank file"):
        list(read_records(path, AnonymousBank()))



# ---- wait_seconds on call.answered ------------------------------------------------------------------


def check_answer_waits(events: list[dict]) -> dict[str, float]:
    """call_id -> wait_seconds of every call.answered, after checking it is exactly the wait the model
    computes: the answer's time minus the call's call.offered time."""
    offered = {e["call_id"]: t(e) for e in events if e["type"] == "call.offered"}
    waits = {}
    for e in events:
        if e["type"] == "call.answered":
            assert e["wait_seconds"] == t(e) - offered[e["call_id"]], e
            waits[e["call_id"]] = e["wait_seconds"]
    return waits


def test_answered_wait_seconds_is_q_time_and_the_queues_wait(feb_events, feb_rows):
    waits = check_answer_waits(feb_events)
    served = [r for r in feb_rows if r["outcome"] == "AGENT"]
    assert len(waits) == len(served) == 27_162
    assert all(waits[row_call_id(r)] == int(r["q_time"]) for r in served)  # 0 for the direct-to-agent calls
    for queue in QUEUES:  # what the model folds from offered -> answered is the sum of wait_seconds
        answered = [e for e in feb_events if e["type"] == "call.answered" and e["queue"] == queue]
        model = fold(feb_events, queue)
        totals = model.read(model.watermark)["totals"]
        assert totals["answer_wait_seconds"] == sum(e["wait_seconds"] for e in answered), queue


def test_direct_to_agent_wait_seconds_is_zero(feb_by_call):
    # Straight from the VRU to a free agent: offered and answered at vru_exit, a real zero wait.
    call = feb_by_call["990201-AA0101-34536"]
    assert call["call.answered"]["wait_seconds"] == 0
    # ... and the field does not change the id: event_id(source, call_id, kind), as before.
    assert call["call.answered"]["event_id"] == event_id("anonymous_bank", "990201-AA0101-34536", "answered")

