"""Forecast vs actual: reading WFM forecast files, the comparison against hand-computed numbers,
through the real model and exporter, and reloading on change."""

from __future__ import annotations

import os
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callpulse.config import load_config
from callpulse.export.metrics import PipelineHealth, QueueCollector
from callpulse.kpi.forecast import (
    MIN_TO_DATE_CALLS,
    ForecastError,
    ForecastFile,
    compare,
    parse_forecast,
    read_forecast,
)
from callpulse.kpi.model import QueueModel
from callpulse.pipeline.state import QueueStates, StreamClock
from helpers import call, epoch, event

CFG = load_config(None, {})
UTC = ZoneInfo("UTC")
HEADER = "queue,date,interval_start,offered,aht_seconds,planned_agents\n"


def at(text: str) -> float:
    """Epoch of a UTC wall time on 2026-12-01, "HH:MM[:SS]"."""
    return epoch(f"2026-12-01T{text}+00:00")


# ---- reading files ---------------------------------------------------------------------------

def test_the_canonical_columns():
    f = parse_forecast(HEADER + "support,2026-12-01,09:00,20,180,5\nsupport,2026-12-01,09:15,40,170.5,6\n", CFG)
    q = f["support"]
    assert q.minutes == 15
    assert [(i.start, i.end, i.offered, i.aht, i.planned) for i in q.intervals] == [
        (at("09:00"), at("09:15"), 20.0, 180.0, 5.0), (at("09:15"), at("09:30"), 40.0, 170.5, 6.0)]


def test_a_wfm_export_with_other_names_semicolons_decimal_commas_and_mm_ss():
    # The kind of file a WFM tool writes in a European locale: a byte-order mark is stripped by
    # read_forecast; here the text after it.
    text = ("Skill;Date;Interval Start;Interval End;Forecast Calls;AHT;Scheduled Agents;Service Level %\n"
            "sales;01.12.2026;09:00;09:30;12,5;3:05;4,5;80\n"
            "sales;01.12.2026;09:30;10:00;7;0:02:50;3;80\n")
    q = parse_forecast(text, CFG)["sales"]
    assert q.minutes == 30
    assert [(i.offered, i.aht, i.planned) for i in q.intervals] == [(12.5, 185.0, 4.5), (7.0, 170.0, 3.0)]
    # a third of the first 30-minute interval has passed at 09:10
    got = compare(q, {}, at("09:10"), at("00:00"), at("00:00") + 86400)
    assert got["day"]["forecast_offered_to_date"] == pytest.approx(12.5 / 3)


def test_times_are_local_to_each_queue_and_an_offset_is_an_instant():
    cfg = load_config(None, {})
    from dataclasses import replace

    from callpulse.config import Config
    cfg = Config(queues={"sales": replace(cfg.queue("sales"), timezone="Europe/Moscow")})
    text = ("queue,interval_start,offered\n"
            "sales,2026-12-01 09:00,10\nsales,2026-12-01 09:15,10\n"
            "support,2026-12-01T09:00:00+03:00,5\nsupport,2026-12-01T09:15:00+03:00,5\n")
    f = parse_forecast(text, cfg)
    assert f["sales"].intervals[0].start == at("06:00")  # 09:00 in Moscow (UTC+3)
    assert f["support"].intervals[0].start == at("06:00")  # support is UTC; the offset decides


def test_the_repeated_hour_of_an_autumn_change_is_two_intervals():
    from dataclasses import replace

    from callpulse.config import Config
    cfg = Config(queues={"q": replace(CFG.queue("q"), timezone="Europe/Berlin", interval_minutes=(60,))})
    text = "queue,date,interval_start,offered\n" + "".join(
        f"q,2026-10-25,{h},{n}\n" for h, n in (("01:00", 1), ("02:00", 2), ("02:00", 3), ("03:00", 4)))
    q = parse_forecast(text, cfg)["q"]
    starts = [datetime.fromtimestamp(i.start, UTC).strftime("%H:%M") for i in q.intervals]
    assert starts == ["23:00", "00:00", "01:00", "02:00"]  # UTC; 02:00 CEST then 02:00 CET
    assert [i.offered for i in q.intervals] == [1, 2, 3, 4]


@pytest.mark.parametrize("text, message", [
    ("queue,date,offered\nq,2026-12-01,5\n", "no column for start"),
    ("queue,date,interval_start,calls,volume\nq,2026-12-01,09:00,1,2\n", "all mean offered"),
    (HEADER + "q,2026-12-01,09:00,lots,180,5\nq,2026-12-01,09:15,1,180,5\n", ":2: offered must be a number"),
    (HEADER + "q,2026-12-01,09:00,-1,180,5\nq,2026-12-01,09:15,1,180,5\n", ":2: offered must be a finite number >= 0"),
    (HEADER + "q,2026-12-01,09:00,1,180,5\nq,2026-12-01,9:05,1,180,5\n", "5-minute intervals"),
    (HEADER + "q,2026-12-01,09:00,1,180,5\nq,2026-12-01,09:20,1,180,5\nq,2026-12-01,09:40,1,1,1\n", "20-minute"),
    (HEADER + "q,2026-12-01,09:00,1,180,5\nq,2026-12-01,09:15,1,180,5\nq,2026-12-01,09:15,2,180,5\n", ":4: queue 'q' has the interval"),
    (HEADER + "q,2026-12-01,09:00,1,180,5\n", "single interval"),
    (HEADER + "q,12/01/2026,09:00,1,180,5\nq,12/01/2026,09:15,1,180,5\n", ":2: date must be YYYY-MM-DD"),
    (HEADER + "q,2026-12-01,9.00,1,180,5\n", ":2: interval start must be"),
    (HEADER + "q,2026-12-01,09:00,1\n", ":2: 4 fields, the header has 6"),
    ("", "empty file"),
])
def test_bad_files_are_refused_naming_file_and_line(text, message):
    with pytest.raises(ForecastError, match=message) as caught:
        parse_forecast(text, CFG, "wfm.csv")
    assert str(caught.value).startswith("wfm.csv:")


def test_an_interval_that_is_not_aligned_is_refused():
    text = HEADER + "q,2026-12-01,09:10,1,180,5\nq,2026-12-01,09:40,1,180,5\n"
    with pytest.raises(ForecastError, match="09:10 is not the start of a 30-minute interval"):
        parse_forecast(text, CFG, "wfm.csv")


def test_a_time_the_clocks_skip_is_refused():
    from dataclasses import replace

    from callpulse.config import Config
    cfg = Config(queues={"q": replace(CFG.queue("q"), timezone="Europe/Berlin")})
    text = HEADER + "q,2026-03-29,02:00,1,180,5\nq,2026-03-29,02:15,1,180,5\n"
    with pytest.raises(ForecastError, match="2026-03-29 02:00 does not exist in Europe/Berlin"):
        parse_forecast(text, cfg, "wfm.csv")


def test_read_forecast_strips_a_byte_order_mark_and_names_unreadable_files(tmp_path):
    path = tmp_path / "wfm.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "q,2026-12-01,09:00,1,,\nq,2026-12-01,09:15,2,,\n").encode())
    assert [i.offered for i in read_forecast(path, CFG)["q"].intervals] == [1, 2]
    with pytest.raises(ForecastError, match="cannot read the forecast file"):
        read_forecast(tmp_path / "missing.csv", CFG)
    (tmp_path / "latin1.csv").write_bytes(HEADER.encode() + "q,2026-12-01,09:00,1,,\n".encode("utf-16"))
    with pytest.raises(ForecastError, match="not UTF-8"):
        read_forecast(tmp_path / "latin1.csv", CFG)


# ---- the comparison, hand-computed ----------------------------------------------------------

FOUR = HEADER + "".join(f"support,2026-12-01,{t},{n},{aht},{p}\n" for t, n, aht, p in (
    ("09:00", 20, 200, 5), ("09:15", 40, 180, 8), ("09:30", 40, 180, 8), ("09:45", 20, 160, 4)))


def actual(end: str, offered: float, handled: float = 0.0, handle: float = 0.0):
    return (at(end), offered, handled, handle)


def test_compare_hand_computed():
    forecast = parse_forecast(FOUR, CFG)["support"]
    actuals = {
        at("08:45"): actual("09:00", 5),  # no forecast row: in the day's calls, not in the comparison
        at("09:00"): actual("09:15", 30, 28, 28 * 190),
        at("09:15"): actual("09:30", 35, 36, 36 * 200),
        at("09:30"): actual("09:45", 10, 4, 4 * 150),  # still open at 09:35
    }
    got = compare(forecast, actuals, at("09:35"), at("00:00"), at("23:59") + 60)
    to_date = 20 + 40 + 40 * 5 / 15  # the current interval is a third over
    assert got["day"]["forecast_offered"] == 120
    assert got["day"]["forecast_offered_to_date"] == pytest.approx(to_date)
    assert got["day"]["actual_offered"] == 5 + 30 + 35 + 10
    assert got["day"]["offered_vs_forecast"] == pytest.approx(75 / to_date)  # the forecast's intervals only
    assert got["day"]["forecast_handle_seconds"] == pytest.approx((20 * 200 + 40 * 180 + 40 * 180 + 20 * 160) / 120)
    assert got["day"]["actual_handle_seconds"] == pytest.approx((28 * 190 + 36 * 200 + 4 * 150) / 68)
    i = got["interval"]
    assert (i["start"], i["end"], i["forecast_offered"], i["actual_offered"]) == (at("09:30"), at("09:45"), 40, 10)
    assert i["forecast_offered_to_date"] == pytest.approx(40 / 3)
    assert i["offered_vs_forecast"] == pytest.approx(10 / (40 / 3))
    assert (i["forecast_handle_seconds"], i["actual_handle_seconds"]) == (180, 150)
    assert got["planned_agents"] == 8
    # WAPE over the forecast's ended intervals 09:00 (F 20, A 30) and 09:15 (40, 35)
    assert got["wape"] == pytest.approx((10 + 5) / (30 + 35))
    rest = (120 - to_date) * 75 / to_date
    assert got["reforecast"]["rest_of_day"] == pytest.approx(rest)
    assert got["reforecast"]["day"] == pytest.approx(75 + rest)


def test_little_data_gives_no_ratio_and_no_reforecast():
    forecast = parse_forecast(FOUR, CFG)["support"]
    # At 09:05 the forecast to date is 20 * 5/15 = 6.7 calls: below the minimum
    got = compare(forecast, {at("09:00"): actual("09:15", 9)}, at("09:05"), at("00:00"), at("23:59") + 60)
    assert got["day"]["forecast_offered_to_date"] < MIN_TO_DATE_CALLS
    assert got["day"]["offered_vs_forecast"] is None and got["reforecast"] is None
    assert got["interval"]["offered_vs_forecast"] is None
    assert got["wape"] is None  # no interval has ended
    assert got["day"]["actual_handle_seconds"] is None  # nothing handled yet


def test_calls_outside_the_forecasts_hours_leave_the_comparison_alone():
    """A forecast of opening hours only, and a trickle of calls at night: the day's calls count
    them, the ratio, WAPE and reforecast do not."""
    forecast = parse_forecast(FOUR, CFG)["support"]
    night = {at("00:00") + 900 * k: (at("00:00") + 900 * (k + 1), 3, 0, 0) for k in range(36)}  # 00:00-09:00
    on_forecast = {at("09:00"): actual("09:15", 20), at("09:15"): actual("09:30", 40)}
    got = compare(forecast, {**night, **on_forecast}, at("09:30"), at("00:00"), at("00:00") + 86400)
    assert got["day"]["actual_offered"] == 3 * 36 + 60
    assert got["day"]["offered_vs_forecast"] == 1.0 and got["wape"] == 0.0
    assert got["reforecast"]["day"] == 120


def test_outside_the_forecast_intervals_and_on_other_days():
    forecast = parse_forecast(FOUR, CFG)["support"]
    evening = compare(forecast, {}, at("18:00"), at("00:00"), at("23:59") + 60)
    assert evening["interval"] is None and evening["planned_agents"] is None
    assert evening["day"]["forecast_offered_to_date"] == 120
    assert evening["wape"] is None  # no calls at all: WAPE undefined, not 0 or infinite
    assert compare(forecast, {}, at("09:00") + 86400, at("00:00") + 86400, at("00:00") + 2 * 86400) is None


# ---- through the model, the states and the exporter -----------------------------------------

def feed(model: QueueModel, events: list[dict]) -> None:
    for e in sorted(events, key=lambda e: e["time"]):
        model.apply(e, epoch(e["time"]))


def support_calls() -> list[dict]:
    """30 calls 09:00-09:15, 35 in 09:15-09:30, 10 in 09:30-09:35; each answered after 5 s,
    talk 100 s, no wrap-up event."""
    out = []
    for n, (first, count, span) in enumerate(((at("09:00"), 30, 900), (at("09:15"), 35, 900), (at("09:30"), 10, 300))):
        for k in range(count):
            t = first + k * span / count
            cid = f"c{n}-{k}"
            out += call("support", cid, t, "answered", t + 5, agent="a1")
            out.append(event("call.ended", t + 105, queue="support", call_id=cid, agent_id="a1"))
    return [e for e in out if epoch(e["time"]) <= at("09:35")]


def metrics(states: QueueStates) -> dict[tuple, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(states, PipelineHealth(["call.offered"])))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_exported_through_the_model_and_reloaded_on_change(tmp_path):
    path = tmp_path / "wfm.csv"
    path.write_text(FOUR)
    cfg = load_config(None, {"CALLPULSE_FORECAST_FILE": str(path)})
    now = [at("09:35")]
    clock = StreamClock(wall=lambda: now[0])
    states = QueueStates(cfg, clock=clock, wall=lambda: now[0])
    model = states.model_for("support", 0)
    feed(model, support_calls())
    offered_1500 = sum(1 for e in support_calls() if e["type"] == "call.offered")
    assert offered_1500 == 75
    m = metrics(states)

    def g(name, **labels):
        return m.get((f"callcenter_{name}", tuple(sorted({"queue": "support", **labels}.items()))))

    # Offered counts come from the queue's own interval counters: 30 + 35 + 10 so far today.
    assert g("actual_offered_calls", period="day") == 75
    assert g("actual_offered_calls", period="interval") == 10
    assert g("forecast_offered_calls", period="day") == 120
    assert g("forecast_offered_to_date_calls", period="day") == pytest.approx(20 + 40 + 40 / 3)
    assert g("offered_vs_forecast_ratio", period="day") == pytest.approx(75 / (60 + 40 / 3))
    assert g("forecast_wape_ratio") == pytest.approx((10 + 5) / 65)
    assert g("forecast_planned_agents") == 8
    assert g("forecast_handle_seconds", period="interval") == 180
    # Calls answered 5 s after entry, ended 100 s later: handled by 09:35 are those ended by then.
    assert g("actual_handle_seconds", period="day") == pytest.approx(100)
    assert g("reforecast_offered_calls", period="day") == pytest.approx(
        75 + (120 - (60 + 40 / 3)) * 75 / (60 + 40 / 3))
    assert m[("callcenter_forecast_loaded_timestamp_seconds", ())] == at("09:35")
    assert m[("callcenter_forecast_load_errors_total", ())] == 0
    # The same numbers in the JSON view
    view = states.read_all()[1]["support"]["forecast"]
    assert view["day"]["actual_offered"] == 75 and view["planned_agents"] == 8

    # A new version of the file is used after the next check...
    now[0] = at("09:36")
    path.write_text(FOUR.replace("09:30,40,180,8", "09:30,50,180,9"))
    os.utime(path, ns=(1, 1))  # another modification time even on a coarse file-system clock
    assert states.forecast.reload_if_changed() is False  # changed: maybe still being written
    assert states.forecast.reload_if_changed() is True  # the same at the next check: loaded
    assert metrics(states)[("callcenter_forecast_planned_agents", (("queue", "support"),))] == 9
    # ...a broken one is counted, logged, and leaves the last good forecast in use.
    path.write_text("queue;offered\n")
    for _ in range(4):  # reported once, not at every check
        assert states.forecast.reload_if_changed() is False
    m = metrics(states)
    assert m[("callcenter_forecast_load_errors_total", ())] == 1
    assert m[("callcenter_forecast_planned_agents", (("queue", "support"),))] == 9
    assert m[("callcenter_forecast_loaded_timestamp_seconds", ())] == at("09:36")


def test_a_queue_without_forecast_exports_none_of_it(tmp_path):
    path = tmp_path / "wfm.csv"
    path.write_text(FOUR)
    states = QueueStates(load_config(None, {"CALLPULSE_FORECAST_FILE": str(path)}),
                         clock=StreamClock(wall=lambda: at("09:35")), wall=lambda: at("09:35"))
    feed(states.model_for("sales", 0), call("sales", "x", at("09:30"), "answered", at("09:31")))
    assert not [k for k in metrics(states) if "forecast" in k[0] and k[1]]


def test_a_broken_forecast_file_never_stops_the_worker(tmp_path, caplog):
    path = tmp_path / "wfm.csv"
    path.write_text("queue,offered\nq,1\n")
    states = QueueStates(load_config(None, {"CALLPULSE_FORECAST_FILE": str(path)}))
    assert states.forecast.forecast == {} and states.forecast.load_errors == 1
    assert "no column for start" in caplog.text and "none in use" in caplog.text
    assert ("callcenter_forecast_loaded_timestamp_seconds", ()) not in metrics(states)
    path.write_text(FOUR)
    os.utime(path, ns=(2, 2))
    states.forecast.reload_if_changed()
    assert states.forecast.reload_if_changed() and states.forecast.forecast["support"].minutes == 15
    missing = ForecastFile(tmp_path / "none.csv", CFG)
    assert missing.forecast == {} and missing.load_errors == 1 and "cannot read" in caplog.text


def test_one_queues_problem_leaves_out_that_queue_only(caplog):
    from dataclasses import replace

    from callpulse.config import Config
    cfg = Config(queues={"berlin": replace(CFG.queue("berlin"), timezone="Europe/Berlin"),
                         "hourly": replace(CFG.queue("hourly"), interval_minutes=(15,))})
    text = HEADER + "".join([
        "support,2026-12-01,09:00,10,180,5\n", "support,2026-12-01,09:15,12,180,5\n",
        "bad,2026-12-01,09:00,lots,180,5\n", "bad,2026-12-01,09:15,1,180,5\n",
        "hourly,2026-12-01,09:00,1,180,5\n", "hourly,2026-12-01,10:00,1,180,5\n",
        # a spring change exported with every slot: the skipped hour with no calls is left out
        *(f"berlin,2026-03-29,{h:02d}:{m:02d},{0 if h == 2 else 4},180,5\n" for h in (1, 2, 3) for m in (0, 15, 30, 45)),
    ])
    problems: list[str] = []
    got = parse_forecast(text, cfg, "wfm.csv", problems)
    assert sorted(got) == ["berlin", "support"]
    assert len(got["berlin"].intervals) == 8 and got["berlin"].minutes == 15
    assert any("wfm.csv:4: offered must be a number" in p and "queue 'bad' left out" in p for p in problems)
    assert any("'hourly' has 60-minute intervals" in p and "queue 'hourly' left out" in p for p in problems)
    assert len(problems) == 2
    with pytest.raises(ForecastError, match="offered must be a number"):
        parse_forecast(text, cfg, "wfm.csv")  # strict without a problems list
    # a skipped time with calls is a problem
    with pytest.raises(ForecastError, match="02:15 does not exist in Europe/Berlin .*but has 4 calls"):
        parse_forecast(HEADER + "berlin,2026-03-29,02:00,0,180,5\nberlin,2026-03-29,02:15,4,180,5\n", cfg, "wfm.csv")


@pytest.mark.parametrize("text, value", [
    ("queue;date;interval_start;offered\nq;2026-12-01;09:00;1.234,5\nq;2026-12-01;09:15;12,5\n", 1234.5),
    ("sep=;\nqueue;date;interval_start;offered\nq;2026-12-01;09:00;7\nq;2026-12-01;09:15;1\n", 7.0),
    ("queue\tdate\tinterval_start\toffered\nq\t2026-12-01\t09:00\t12.5\nq\t2026-12-01\t09:15\t1\n", 12.5),
])
def test_numbers_as_locales_write_them(text, value):
    assert parse_forecast(text, CFG)["q"].intervals[0].offered == value


@pytest.mark.parametrize("text, message", [
    ("queue;date;interval_start;offered\nq;2026-12-01;09:00;1.234\nq;2026-12-01;09:15;1\n", "ambiguous"),
    ("queue\tdate\tinterval_start\toffered\nq\t2026-12-01\t09:00\t1,234\nq\t2026-12-01\t09:15\t1\n", "thousands"),
    (HEADER + "q,2026-12-01,09:00,1,3:65,5\nq,2026-12-01,09:15,1,180,5\n", "AHT must be seconds or m:ss"),
])
def test_numbers_that_could_be_misread_are_refused(text, message):
    with pytest.raises(ForecastError, match=message):
        parse_forecast(text, CFG)


def test_closed_interval_actuals_survive_a_snapshot_and_are_kept_26_hours():
    model = QueueModel(CFG.queue("support"), 60.0, (10, 20))
    feed(model, support_calls())
    before = model.interval_actuals(15, at("00:00"))
    assert {s: a[1] for s, a in before.items()} == {at("09:00"): 30, at("09:15"): 35, at("09:30"): 10}
    restored = QueueModel(CFG.queue("support"), 60.0, (10, 20))
    restored.load_state(model.to_state())
    assert restored.interval_actuals(15, at("00:00")) == before
    # 25 hours later (a call at 10:20 the next day closes 10:00-10:15 of that day) they are all
    # still there; 27 hours later the first ones are gone, the later ones not yet
    next_day = at("00:00") + 86400
    feed(model, call("support", "d2", next_day + 10 * 3600 + 1200, "answered", next_day + 10 * 3600 + 1205))
    assert {at("09:00"), at("09:15"), at("09:30")} <= set(model.interval_actuals_closed[15])
    feed(model, call("support", "d3", next_day + 11 * 3600 + 1800, "answered", next_day + 11 * 3600 + 1805))
    kept = model.interval_actuals_closed[15]
    assert at("09:00") not in kept and at("09:15") not in kept and next_day + 10 * 3600 + 900 in kept  # d2


def test_a_file_of_several_days_compares_only_the_business_day():
    rows = "".join(f"support,2026-12-{d:02d},{t},{n},180,5\n" for d in (1, 2, 3) for t, n in (("09:00", d), ("09:15", 10 * d)))
    forecast = parse_forecast(HEADER + rows, CFG)["support"]
    day2 = at("00:00") + 86400
    got = compare(forecast, {}, day2 + 12 * 3600, day2, day2 + 86400)
    assert got["day"]["forecast_offered"] == 2 + 20


def test_data_that_begins_mid_day_is_compared_from_where_it_begins():
    forecast = parse_forecast(FOUR, CFG)["support"]
    # The queue's first event came at 09:20 (a worker started then): 09:00-09:15 is not data,
    # 09:15-09:30 is two thirds observed.
    actuals = {at("09:15"): actual("09:30", 30), at("09:30"): actual("09:45", 10)}
    got = compare(forecast, actuals, at("09:35"), at("00:00"), at("00:00") + 86400, observed_since=at("09:20"))
    to_date = 40 * 10 / 15 + 40 * 5 / 15
    assert got["day"]["forecast_offered"] == 120  # the whole day's forecast still
    assert got["day"]["forecast_offered_to_date"] == pytest.approx(to_date)
    assert got["day"]["actual_offered"] == 40
    assert got["day"]["offered_vs_forecast"] == pytest.approx(40 / to_date)
    # 09:15-09:30 has ended, seen for two thirds: forecast 40 x 2/3 against 30 calls
    assert got["wape"] == pytest.approx(abs(30 - 40 * 10 / 15) / 30)
    assert got["reforecast"]["day"] == pytest.approx(120 * 40 / to_date)
    rest = 40 * 10 / 15 + 20
    assert got["reforecast"]["rest_of_day"] == pytest.approx(rest * 40 / to_date)
    # An observed start before the day's changes nothing
    whole = compare(forecast, actuals, at("09:35"), at("00:00"), at("00:00") + 86400)
    assert compare(forecast, actuals, at("09:35"), at("00:00"), at("00:00") + 86400, observed_since=at("00:00") - 5) == whole


def test_the_model_knows_where_its_data_begins_across_a_snapshot():
    model = QueueModel(CFG.queue("support"), 60.0, (10, 20))
    assert model.first_event_time is None
    feed(model, support_calls())
    assert model.first_event_time == at("09:00")
    restored = QueueModel(CFG.queue("support"), 60.0, (10, 20))
    restored.load_state(model.to_state())
    assert restored.first_event_time == at("09:00")
