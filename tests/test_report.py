"""`callpulse report` formatting and selection, and `callpulse replay` helpers (detection,
progress, pacing); the end-to-end runs are in tests/e2e/test_replay.py."""

import csv
import io
from dataclasses import replace
from datetime import date, time
from pathlib import Path

import pytest

from callpulse.config import load_config
from callpulse.kpi.model import QueueModel
from callpulse.tools.replay import Progress, detect_format, schedule
from callpulse.tools.report import csv_columns, csv_row, select, write_csv
from helpers import call, epoch, event

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
T0 = epoch("2026-11-23T06:00:00Z")  # 09:00 in Moscow


def records(queue: str = "sales", thresholds=(10.0, 20.0)) -> list[dict]:
    cfg = replace(load_config(None, {}).queue(queue), timezone="Europe/Moscow", interval_minutes=(15,),
                  thresholds_seconds=thresholds, targets=(0.8,) * len(thresholds), formula="SL-A")
    m = QueueModel(cfg, lateness_seconds=60.0, histogram_bounds=(10, 20))
    evs = call(queue, "c1", T0 + 1, "answered", T0 + 9) + call(queue, "c2", T0 + 2, "answered", T0 + 32)
    evs += call(queue, "c3", T0 + 3, "abandoned", T0 + 4)
    evs.append(event("call.offered", T0 + 2000, queue=queue, call_id="later"))
    for e in sorted(evs, key=lambda e: e["time"]):
        m.apply(e, epoch(e["time"]))
    return m.closed_intervals


def test_csv_row_is_flat_local_and_leaves_undefined_empty():
    first, quiet = records()  # 09:00-09:15 with three calls, 09:15-09:30 quiet (closed by the later offer)
    row = csv_row(first)
    assert row["interval_start"] == "2026-11-23T09:00:00+03:00" and row["interval_end"] == "2026-11-23T09:15:00+03:00"
    assert (row["offered"], row["answered"], row["abandoned"]) == ("3", "2", "1")
    assert (row["answered_within_10s"], row["answered_within_20s"]) == ("1", "1")
    assert row["service_level_10s"] == "0.5"  # SL-A: 1 of 2 answered within 10 s
    assert row["average_answer_wait_seconds"] == "19"  # (8 + 30) / 2
    assert row["answer_rate"] == "0.666667"
    assert row["target_20s"] == "0.8" and row["formula"] == "SL-A"
    empty = csv_row(quiet)
    assert empty["offered"] == "0" and empty["service_level_10s"] == "" and empty["average_handle_seconds"] == ""


def test_csv_has_a_column_per_threshold_of_any_queue():
    both = records("a", (10.0, 20.0)) + records("b", (15.0,))
    out = io.StringIO()
    write_csv(select(both), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert csv_columns(both).count("service_level_15s") == 1
    assert [r["queue"] for r in rows] == ["a", "a", "b", "b"]
    assert rows[0]["service_level_15s"] == "" and rows[2]["service_level_15s"] == "0.5"


def test_select_filters_by_queue_length_and_local_date():
    both = records("a") + records("b")
    assert {r["queue"] for r in select(both, queues={"b"})} == {"b"}
    assert select(both, minutes=30) == []
    assert len(select(both, since=date(2026, 11, 23), until=date(2026, 11, 23))) == 4
    assert select(both, since=date(2026, 11, 24)) == []


def test_detect_format_from_the_first_bytes(tmp_path):
    assert detect_format(DATA / "anonymous_bank" / "february1999.tsv") == "anonymous_bank"
    for path in sorted((DATA / "queue_log").iterdir()):
        assert detect_format(path) == "queue_log", path
    ami = tmp_path / "capture.ami"
    ami.write_bytes(b"Asterisk Call Manager/5.0.1\r\nResponse: Success\r\n\r\n")
    assert detect_format(ami) == "ami"
    esl = tmp_path / "capture.esl"
    esl.write_bytes(b"Content-Type: auth/request\n\n")
    assert detect_format(esl) == "freeswitch"
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(ValueError, match="--format"):
        detect_format(other)


class FakeOut(io.StringIO):
    def isatty(self):
        return False


def test_progress_shows_rate_and_eta():
    now = [100.0]
    out = FakeOut()
    p = Progress(1000, out, clock=lambda: now[0])
    now[0] = 102.0
    assert p.line(250) == "[#######                       ]  25.0%  250/1,000 events  125/s  ETA 0:00:06"
    p.update(1000)
    assert out.getvalue().strip().startswith("[" + "#" * 30 + "] 100.0%")


def test_schedule_paces_at_n_times_real_time():
    evs = [event("call.offered", T0, queue="q", call_id="a"), event("call.offered", T0 + 600, queue="q", call_id="b")]
    due = schedule(evs, speed=60.0, started=1000.0)
    assert due(evs[0]) == 1000.0 and due(evs[1]) == pytest.approx(1010.0)


def test_a_late_preliminary_record_never_replaces_the_final_one():
    from callpulse.tools.report import _keep

    latest: dict = {}
    _keep(latest, b"k", b'{"final": false, "offered": 1}')
    _keep(latest, b"k", b'{"final": true, "offered": 2}')
    _keep(latest, b"k", b'{"final": false, "offered": 1}')  # sent by the timer just after the final one
    assert latest[b"k"]["offered"] == 2
    _keep(latest, b"k", b'{"final": true, "offered": 3}')  # re-sent after a takeover: the latest final counts
    assert latest[b"k"]["offered"] == 3
    _keep(latest, b"k", None)  # a tombstone deletes
    assert b"k" not in latest


def test_agent_rows_are_flat_with_the_scorecard_and_filtered_by_agent_and_day():
    from callpulse.config import DEFAULT_SCORECARD
    from callpulse.kpi.agents import AgentModel, AgentSettings
    from callpulse.tools.report import agent_csv_columns, agent_csv_row, select_agents, write_agent_csv

    settings = AgentSettings(lambda q: ("Europe/Moscow", time(0, 0), (15,)), 60.0,
                             names={"a1": "Анна"}, card=DEFAULT_SCORECARD)
    m = AgentModel("a1", settings)
    a = {"agent_id": "a1"}
    for e in [event("agent.logged_in", T0, queues=["sales"], **a),
              event("agent.state_changed", T0 + 60, queues=["sales"], state="available", **a),
              event("call.answered", T0 + 100, queue="sales", call_id="c1", **a),
              event("call.ended", T0 + 400, queue="sales", call_id="c1", **a),
              event("call.survey", T0 + 500, call_id="c1", csat=4, **a),
              event("agent.logged_out", T0 + 600, queues=["sales"], **a),
              event("agent.logged_in", T0 + 86400, queues=["sales"], **a)]:
        m.apply(e, epoch(e["time"]))
    day = [r for r in m.closed if r["period"] == "day"]
    assert len(day) == 1 and len(m.closed) == 2  # the day, and its one 15-minute interval with counts
    row = agent_csv_row(day[0])
    assert row["agent_name"] == "Анна" and row["period"] == "day" and row["interval_minutes"] == ""
    assert row["business_day"] == "2026-11-23" and row["interval_start"] == "2026-11-23T00:00:00+03:00"
    # logged in 600 s, 60 of them not ready: occupancy 300 / 540 (below the 0.75-0.90 band); CSAT 1
    assert row["handled"] == "1" and row["logged_in_seconds"] == "600" and row["csat_ratio"] == "1"
    assert row["score_csat_ratio"] == "1" and row["score_first_call_resolution_ratio"] == ""
    assert float(row["score"]) == pytest.approx(100 * (1 + (300 / 540) / 0.75) / 2)
    assert "score_occupancy" in agent_csv_columns(day)
    assert select_agents(m.closed, days=True) == day and select_agents(m.closed, agents={"b2"}) == []
    out = io.StringIO()
    write_agent_csv(select_agents(m.closed), out)
    assert list(csv.DictReader(io.StringIO(out.getvalue())))[1]["period"] == "interval"
