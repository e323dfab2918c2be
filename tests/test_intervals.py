"""Interval reports: alignment in local time (DST, odd offsets), hand-computed records, closing,
quiet intervals, snapshots, and the config key."""

import zlib
from dataclasses import replace
from zoneinfo import ZoneInfo

import orjson
import pytest

from callpulse.config import ConfigError, load_config
from callpulse.kpi.intervals import MAX_QUIET_SECONDS, interval_bounds, local_iso
from callpulse.kpi.model import QueueModel
from helpers import call, epoch, event


def iso_z(t: float) -> str:
    from helpers import iso

    return iso(t)


def bounds_local(text: str, minutes: int, zone: str) -> tuple[str, str]:
    z = ZoneInfo(zone)
    start, end = interval_bounds(epoch(text), minutes, z)
    return local_iso(start, z), local_iso(end, z)


def test_intervals_align_to_local_midnight_of_the_queue():
    assert bounds_local("2026-11-23T08:07:30Z", 15, "UTC") == ("2026-11-23T08:00:00+00:00", "2026-11-23T08:15:00+00:00")
    # Moscow is UTC+3 all year: 05:29:59Z is 08:29:59 local
    assert bounds_local("2026-11-23T05:29:59Z", 30, "Europe/Moscow") == ("2026-11-23T08:00:00+03:00", "2026-11-23T08:30:00+03:00")
    # Kathmandu is UTC+05:45: intervals still start at local :00 / :15, i.e. at :15 / :30 UTC
    assert bounds_local("2026-11-23T02:20:00Z", 15, "Asia/Kathmandu") == ("2026-11-23T08:00:00+05:45", "2026-11-23T08:15:00+05:45")
    # a boundary instant belongs to the interval it starts
    assert bounds_local("2026-11-23T08:15:00Z", 15, "UTC")[0] == "2026-11-23T08:15:00+00:00"
    assert bounds_local("2026-11-23T00:00:00Z", 6, "UTC") == ("2026-11-23T00:00:00+00:00", "2026-11-23T00:06:00+00:00")


def test_daylight_saving_changes_follow_the_wall_clock():
    # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; the 02:00-02:15 interval happens twice
    first = bounds_local("2026-10-25T00:05:00Z", 15, "Europe/Berlin")
    second = bounds_local("2026-10-25T01:05:00Z", 15, "Europe/Berlin")
    assert first == ("2026-10-25T02:00:00+02:00", "2026-10-25T02:15:00+02:00")
    assert second == ("2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; the interval before the gap ends where 03:00 starts
    assert bounds_local("2026-03-29T00:50:00Z", 15, "Europe/Berlin") == ("2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00")
    # Lord Howe goes back 30 minutes at 02:00 (+11:00 -> +10:30): 01:30-02:00 happens twice, so
    # the wall-clock interval 01:00-02:00 lasts 90 minutes, and every instant is in exactly one
    for t in (epoch("2026-04-04T14:40:00Z"), epoch("2026-04-04T15:10:00Z")):
        assert bounds_local(iso_z(t), 60, "Australia/Lord_Howe") == ("2026-04-05T01:00:00+11:00", "2026-04-05T02:00:00+10:30")
    # 6-minute intervals around the Berlin spring gap: every instant of the day is covered once
    zone = ZoneInfo("Europe/Berlin")
    day = epoch("2026-03-28T23:00:00Z")
    cursor, seen = day, 0
    while cursor < day + 86400 - 3600:
        start, end = interval_bounds(cursor, 6, zone)
        assert start == cursor and end > start
        for t in (start, (start + end) / 2, end - 0.001):
            assert interval_bounds(t, 6, zone) == (start, end)
        cursor, seen = end, seen + 1
    assert seen == 230  # a 23-hour day: 230 six-minute intervals


def model(**overrides) -> QueueModel:
    cfg = replace(load_config(None, {}).queue("sales"), **overrides)
    return QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(5, 10, 20))


def feed(m: QueueModel, events: list[dict]) -> None:
    for e in sorted(events, key=lambda e: e["time"]):
        m.apply(e, epoch(e["time"]))


T0 = epoch("2026-11-23T09:00:00Z")


def scripted() -> list[dict]:
    evs = []
    evs += call("sales", "c1", T0 + 10, "answered", T0 + 18, agent="a1")   # wait 8
    evs += call("sales", "c2", T0 + 20, "answered", T0 + 45, agent="a2")   # wait 25
    evs += call("sales", "c3", T0 + 30, "abandoned", T0 + 33)              # wait 3: short abandon
    evs += call("sales", "c4", T0 + 890, "answered", T0 + 905, agent="a1")  # offered 09:14:50, answered 09:15:05
    evs.append(event("call.ended", T0 + 118, queue="sales", call_id="c1", agent_id="a1"))  # talk 100
    evs.append(event("call.ended", T0 + 1000, queue="sales", call_id="c4", agent_id="a1"))  # talk 95, in 09:15
    # a1 logs in at 09:00:00 and is available from then on (staffed through both intervals)
    evs.append(event("agent.state_changed", T0, agent_id="a1", queues=["sales"], state="available"))
    # a2 is staffed 09:10:00-09:20:00: 300 s in each 15-minute interval
    evs.append(event("agent.state_changed", T0 + 600, agent_id="a2", queues=["sales"], state="available"))
    evs.append(event("agent.logged_out", T0 + 1200, agent_id="a2", queues=["sales"]))
    return evs


def test_records_hand_computed_and_closed_only_after_the_lateness():
    m = model(interval_minutes=(15,), thresholds_seconds=(10.0, 20.0), targets=(0.8, 0.8), formula="SL-B",
              short_abandon_seconds=5.0)
    feed(m, scripted())
    # the watermark is 09:20:00: 09:00-09:15 closed (09:15 + 60 s lateness passed), 09:15-09:30 not
    assert [r["start"] for r in m.closed_intervals] == ["2026-11-23T09:00:00+00:00"]
    first = m.closed_intervals[0]
    assert (first["offered"], first["answered"], first["abandoned"], first["short_abandoned"]) == (4, 2, 1, 1)
    assert first["answered_within"] == {"10": 1, "20": 1}
    # SL-B at 10 s: answered within 10 / (answered + abandoned) = 1 / 3
    assert first["service_level"]["10"] == pytest.approx(1 / 3)
    assert first["average_answer_wait_seconds"] == pytest.approx((8 + 25) / 2)
    assert first["handled"] == 1 and first["seconds"]["talk_seconds"] == pytest.approx(100)
    # staffed: a1 900 s + a2 300 s; busy: nothing, state events here say available only
    assert first["seconds"]["agent_staffed_seconds"] == pytest.approx(1200)
    assert first["agents_staffed_average"] == pytest.approx(1200 / 900)
    assert first["end"] == "2026-11-23T09:15:00+00:00" and first["interval_minutes"] == 15

    # the second interval closes when an event 60 s past its end arrives
    feed(m, [event("call.offered", T0 + 1800 + 61, queue="sales", call_id="c9")])
    second = m.closed_intervals[1]
    assert second["start"] == "2026-11-23T09:15:00+00:00"
    assert (second["offered"], second["answered"], second["handled"]) == (0, 1, 1)  # c4 answered here
    assert second["answered_within"] == {"10": 0, "20": 1}  # wait 15
    assert second["seconds"]["talk_seconds"] == pytest.approx(95)
    assert second["seconds"]["agent_staffed_seconds"] == pytest.approx(900 + 300)


def test_quiet_intervals_are_reported_with_zeros_up_to_a_day():
    m = model(interval_minutes=(30,))
    feed(m, call("sales", "a", T0, "answered", T0 + 5))
    feed(m, call("sales", "b", T0 + 3 * 3600, "answered", T0 + 3 * 3600 + 5))
    starts = [r["start"][11:16] for r in m.closed_intervals]
    # call b (12:00) is in 12:00-12:30; 11:30-12:00 is quiet and still open: the watermark minus the
    # lateness is 11:59:05
    assert starts == ["09:00", "09:30", "10:00", "10:30", "11:00"]
    assert [r["offered"] for r in m.closed_intervals] == [1, 0, 0, 0, 0]
    assert m.closed_intervals[1]["service_level"]["20"] is None  # no calls: undefined, not 0
    # three days later: a day of empty intervals at most, then the next interval with calls
    m.closed_intervals.clear()
    later = T0 + 3 * 86400
    feed(m, call("sales", "c", later, "answered", later + 5))
    feed(m, [event("call.offered", later + 1900, queue="sales", call_id="d")])
    starts = [epoch(r["start"]) for r in m.closed_intervals]
    quiet = [s for s in starts if s < later]
    last_with_calls_end = T0 + 3 * 3600 + 1800
    assert max(quiet) - last_with_calls_end == MAX_QUIET_SECONDS - 1800  # the last quiet one starts a day later, less one
    assert len(quiet) == 2 + 48  # 11:30 and 12:00 (call b), then 48 quiet half hours
    assert starts[-1] == later and m.closed_intervals[-1]["offered"] == 1


def test_pending_records_while_quiet_and_snapshot_restore_gives_the_same_records():
    m = model(interval_minutes=(15, 30))
    feed(m, scripted())
    assert m.pending_interval_records(T0 + 1200) == []  # 09:15-09:30 has not ended
    pending = m.pending_interval_records(T0 + 1800 + 61)
    assert [(r["interval_minutes"], r["start"][11:16]) for r in pending] == [(15, "09:15"), (30, "09:00")]

    # through the changelog's own encoding, in the middle of an open interval
    restored = model(interval_minutes=(15, 30))
    payload = zlib.compress(orjson.dumps(m.to_state(), option=orjson.OPT_NON_STR_KEYS), 1)
    restored.load_state(orjson.loads(zlib.decompress(payload)))
    assert restored.final_records == m.final_records
    tail = [event("call.offered", T0 + 3600, queue="sales", call_id="late")]
    m.closed_intervals.clear()
    feed(m, tail)
    feed(restored, tail)
    assert restored.closed_intervals == m.closed_intervals and len(m.closed_intervals) == 3


@pytest.mark.parametrize("value, problem", [([7], "divides a day"), ([15, 15], "twice"), ("15", "a list"),
                                            ([0], "divides a day"), ([True], "divides a day")])
def test_interval_minutes_config_is_checked(tmp_path, value, problem):
    import json

    path = tmp_path / "callpulse.toml"
    path.write_text(f"[queue_defaults]\ninterval_minutes = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(path, {})
    assert load_config(None, {}).queue("x").interval_minutes == (15, 30)


def test_every_zone_and_length_gives_contiguous_intervals_on_local_boundaries():
    """Around every UTC-offset change of 2026 in every IANA zone: intervals follow each other with
    no gap or overlap, contain the instants they are found for, and start where the local clock
    reads a multiple of the length (or where the clock jumps over such a reading)."""
    from datetime import datetime
    from zoneinfo import available_timezones

    jan1 = epoch("2026-01-01T12:00:00Z")
    checked = 0
    for name in sorted(available_timezones()):
        zone = ZoneInfo(name)
        offsets = [datetime.fromtimestamp(jan1 + d * 86400, zone).utcoffset() for d in range(366)]
        change_days = [d for d in range(365) if offsets[d] != offsets[d + 1]]
        for d in change_days:
            for minutes in (15, 60, 120, 720, 1440):
                cursor = interval_bounds(jan1 + (d - 1) * 86400, minutes, zone)[0]
                while cursor < jan1 + (d + 2) * 86400:
                    start, end = interval_bounds(cursor, minutes, zone)
                    assert start == cursor and end > start, (name, minutes, cursor)
                    assert interval_bounds(end - 0.5, minutes, zone) == (start, end), (name, minutes, start)
                    local = datetime.fromtimestamp(start, zone)
                    on_boundary = (local.hour * 60 + local.minute) % minutes == 0 and local.second == 0
                    jump = datetime.fromtimestamp(start - 1, zone).utcoffset() != local.utcoffset()
                    assert on_boundary or jump, (name, minutes, local.isoformat())
                    cursor = end
                    checked += 1
    assert checked > 10_000  # the zone database has changes to walk through


def test_an_agent_left_logged_in_over_a_long_gap_does_not_fill_the_gap_with_intervals():
    m = model(interval_minutes=(15,))
    feed(m, [event("agent.state_changed", T0, agent_id="a1", queues=["sales"], state="available")])
    feed(m, call("sales", "c1", T0 + 60, "answered", T0 + 70))
    later = T0 + 365 * 86400  # a year later the agent finally logs out: the queue's next event
    feed(m, [event("agent.logged_out", later, agent_id="a1", queues=["sales"])])
    # one day of quiet intervals after the last call at most, whichever event comes first
    assert 90 <= len(m.closed_intervals) <= 96 + 2
    assert all(r["final"] for r in m.closed_intervals)


def test_recent_final_records_are_kept_for_a_takeover_even_with_a_long_lateness():
    cfg = replace(load_config(None, {}).queue("sales"), interval_minutes=(15,))
    m = QueueModel(cfg, lateness_seconds=7200.0, histogram_bounds=(5, 10, 20))
    feed(m, call("sales", "c1", T0, "answered", T0 + 5))
    feed(m, [event("call.offered", T0 + 7200 + 900, queue="sales", call_id="c2")])
    assert [r["start"][11:16] for r in m.closed_intervals] == ["09:00"]
    assert list(m.final_records) == [(15, T0)]  # closed just now: kept, although it ended 2 h ago


def test_preliminary_records_are_marked_and_not_rebuilt_while_nothing_changes():
    m = model(interval_minutes=(15,))
    feed(m, call("sales", "c1", T0, "answered", T0 + 5))
    first = m.pending_interval_records(T0 + 900 + 61)
    assert [r["final"] for r in first] == [False]
    assert m.pending_interval_records(T0 + 900 + 62) == []  # the same record: not built again
    feed(m, [event("call.offered", T0 + 900 + 70, queue="sales", call_id="c2")])  # closes 09:00-09:15
    assert [r["final"] for r in m.closed_intervals] == [True]
    assert m.pending_interval_records(T0 + 900 + 80) == []  # final now: no preliminary any more


def test_a_late_first_event_closes_its_interval_live_as_after_a_rebuild():
    """Before any interval closed, a late event opens one before the interval close() waited for:
    the live model closes it once its end passes, as a model rebuilt from a snapshot taken before
    does (close()'s cached next end was not in the snapshot, so only the rebuilt one did)."""
    start = epoch("2026-12-01T09:00:00Z")
    cfg = replace(load_config(None, {}).queue("sales"), interval_minutes=(15,))
    live = QueueModel(cfg, lateness_seconds=20.0, histogram_bounds=(5, 10, 20))
    for e in call("sales", "c1", start + 5, "answered", start + 10):
        live.apply(e, epoch(e["time"]))
    rebuilt = QueueModel(cfg, lateness_seconds=20.0, histogram_bounds=(5, 10, 20))
    rebuilt.load_state(orjson.loads(orjson.dumps(live.to_state())))
    later = [event("call.offered", start - 5, queue="sales", call_id="c0"),  # late (within 20 s): opens 08:45
             event("call.offered", start + 26, queue="sales", call_id="c2")]  # the horizon passes 09:00
    for m in (live, rebuilt):
        for e in later:
            m.apply(e, epoch(e["time"]))
    records = [(r["start"], r["offered"], r["final"]) for r in live.closed_intervals]
    assert records == [("2026-12-01T08:45:00+00:00", 1, True)]
    assert live.closed_intervals == rebuilt.closed_intervals
