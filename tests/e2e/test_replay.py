"""Replaying real history through the real pipeline: `callpulse replay` into the broker, a worker,
the intervals topic, and `callpulse report` out again.

February 1999 of the Technion "Anonymous Bank" (33,344 per-call records): every 6-minute
interval report of every queue must equal a plain computation over the file written here, and
that computation must reproduce the third party's count of every 6-minute interval of the month
(february1999_6min_counts.csv, all 6,720 of them).
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harness import LOGS, value
from helpers import epoch, event

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
BANK = DATA / "anonymous_bank"
ISRAEL = ZoneInfo("Asia/Jerusalem")
BIN = 6  # minutes


# ---- the plain computation: the file's own fields, read with the csv module ------------------

def _tod(text: str) -> int:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + int(s)


def _near(previous: datetime, tod: int) -> datetime:
    """The local instant with time of day `tod` nearest to `previous` (calls cross midnight)."""
    base = datetime.combine(previous.date(), datetime.min.time(), ISRAEL)
    options = [base + timedelta(days=d, seconds=tod) for d in (-1, 0, 1)]
    return min(options, key=lambda t: abs((t - previous).total_seconds()))


def bank_rows() -> list[dict]:
    with open(BANK / "february1999.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def bin_of(t: datetime) -> tuple[str, int]:
    """Left-closed 6-minute bin of a local instant: (local date, index from 0)."""
    t = t.astimezone(ISRAEL)
    return t.date().isoformat(), (t.hour * 60 + t.minute) // BIN


def plain_bins(rows: list[dict]) -> dict[tuple[str, str, int], dict[str, float]]:
    """Per (queue, local date, bin): what the interval reports must say. Waits are q_time and talk
    is ser_time (the file's own durations); a call that went straight to an agent (q_start, q_exit
    and q_time all zero, outcome AGENT) waited 0 s from its IVR exit."""
    out: dict = defaultdict(lambda: defaultdict(float))
    for r in rows:
        if r["outcome"] == "PHANTOM":
            continue
        day = date(1900 + int(r["date"][:2]), int(r["date"][2:4]), int(r["date"][4:6]))
        entry = datetime.combine(day, datetime.min.time(), ISRAEL) + timedelta(seconds=_tod(r["vru_entry"]))
        vru_exit = _near(entry, _tod(r["vru_exit"]))
        never_queued = r["q_start"] == r["q_exit"] == "0:00:00" and r["q_time"] == "0"
        if never_queued and r["outcome"] != "AGENT":
            continue  # hung up in the IVR: never offered to a queue
        offered, wait = (vru_exit, 0) if never_queued else (_near(vru_exit, _tod(r["q_start"])), int(r["q_time"]))
        ended_wait = offered + timedelta(seconds=wait)
        q = r["type"]
        out[(q, *bin_of(offered))]["offered"] += 1
        cell = out[(q, *bin_of(ended_wait))]
        if r["outcome"] == "AGENT":
            cell["answered"] += 1
            cell["answer_wait_seconds"] += wait
            cell["answered_within_10"] += wait <= 10
            cell["answered_within_20"] += wait <= 20
            talk = int(r["ser_time"])
            end = out[(q, *bin_of(ended_wait + timedelta(seconds=talk)))]
            end["handled"] += 1
            end["talk_seconds"] += talk
        else:
            cell["abandoned"] += 1
            cell["abandon_wait_seconds"] += wait
            cell["short_abandoned"] += wait <= 5
    return out


def test_the_plain_computation_reproduces_the_third_party_counts():
    """Ties this file's parsing to an independent source: all records (PHANTOM included) by
    vru_entry in right-closed 6-minute intervals, as the data README documents."""
    counts: dict = defaultdict(int)
    for r in bank_rows():
        seconds = _tod(r["vru_entry"])
        counts[(f"1999-{r['date'][2:4]}-{r['date'][4:6]}", max(1, math.ceil(seconds / 360)))] += 1
    with open(BANK / "february1999_6min_counts.csv", newline="") as f:
        oracle = {(row["date"], int(row["interval"])): int(row["calls"]) for row in csv.DictReader(f)}
    assert len(oracle) == 6720
    assert {k: counts.get(k, 0) for k in oracle} == oracle
    assert sum(counts.values()) == sum(oracle.values()) == 33344


FIELDS = ("offered", "answered", "abandoned", "short_abandoned", "handled")


def as_cells(record: dict) -> dict[str, float]:
    cells = {name: record[name] for name in FIELDS}
    cells["answered_within_10"] = record["answered_within"]["10"]
    cells["answered_within_20"] = record["answered_within"]["20"]
    for name in ("answer_wait_seconds", "abandon_wait_seconds", "talk_seconds"):
        cells[name] = record["seconds"][name]
    return cells


@pytest.mark.pipeline_env(CALLPULSE_CONFIG=str(Path(__file__).with_name("bank.toml")))
def test_february_1999_replay_matches_the_file_in_every_6_minute_interval(pipeline, tmp_path):
    worker = pipeline.start_worker()
    replay = subprocess.run(
        [sys.executable, "-m", "callpulse", "replay", str(BANK / "february1999.tsv")],
        env=pipeline.env, capture_output=True, text=True, timeout=600,
    )
    assert replay.returncode == 0, replay.stderr
    summary = replay.stderr
    assert "155,498 events published" in summary, summary
    # the third party's other figures: 278 PHANTOM records; 23 with a negative vru_time after them
    assert "      278  phantom" in summary and "       23  ivr_left before ivr_entered" in summary, summary
    assert "33,043  call.ivr_entered" in summary, summary  # 33,344 - 278 - 23

    # Live traffic after a backfill moves every queue's watermark on, which closes the last
    # intervals of the history; without it they close by the stream clock minutes later. An agent
    # nobody knew logging out changes no count.
    pipeline.produce([event("agent.logged_out", epoch("1999-03-01T01:00:00+02:00"), agent_id="end-of-replay",
                            queues=["PS", "PE", "IN", "NE", "NW", "TT"])])
    expected = plain_bins(bank_rows())
    with_calls = {k for k, cells in expected.items() if any(cells.values())}

    def complete(records: dict) -> bool:
        have = {(q, *bin_of(datetime.fromtimestamp(start, ISRAEL))) for (q, m, start), r in records.items()
                if m == BIN and r["final"] and any(as_cells(r).values())}
        return with_calls <= have

    records = pipeline.interval_records(complete, timeout=300)
    got = {(q, *bin_of(datetime.fromtimestamp(start, ISRAEL))): as_cells(r)
           for (q, m, start), r in records.items() if m == BIN}
    mismatches = []
    for key in sorted(set(expected) | set(got)):
        want = {name: expected[key].get(name, 0) for name in as_cells(next(iter(records.values())))} if key in expected else None
        have = got.get(key)
        if want is None:
            if any(have.values()):
                mismatches.append((key, "unexpected", have))
        elif have is None:
            if any(want.values()):
                mismatches.append((key, want, "missing"))
        elif any(abs(want[n] - have[n]) > 1e-6 for n in want):
            mismatches.append((key, want, have))
    assert not mismatches, f"{len(mismatches)} intervals differ, first: {mismatches[:3]}"
    feb = [k for k in got if k[1].startswith("1999-02")]
    assert all(r["final"] for (q, m, start), r in records.items() if m == BIN and start < epoch("1999-03-01T00:00:00+02:00"))
    assert len({k[0] for k in feb}) == 6 and len(feb) >= 6720  # PS, the busiest queue, has every interval

    # the worker's own totals agree too
    totals = defaultdict(float)
    for (q, _, _), cells in expected.items():
        totals[q] += cells.get("offered", 0)
    samples = worker.samples()
    for queue, offered in totals.items():
        assert value(samples, "callcenter_calls_offered_total", queue=queue) == offered

    # and `callpulse report` exports the same numbers as CSV
    out = tmp_path / "intervals.csv"
    report = subprocess.run(
        [sys.executable, "-m", "callpulse", "report", "--format", "csv", "--interval-minutes", "6",
         "--since", "1999-02-01", "--until", "1999-02-28", "-o", str(out)],
        env=pipeline.env, capture_output=True, text=True, timeout=300,
    )
    assert report.returncode == 0, report.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(feb)
    for row in rows:
        key = (row["queue"], *bin_of(datetime.fromisoformat(row["interval_start"])))
        want = expected.get(key, {})
        assert int(row["offered"]) == want.get("offered", 0) and int(row["answered"]) == want.get("answered", 0), row
        assert row["interval_start"].endswith("+02:00") and row["interval_minutes"] == "6"
        if want.get("answered"):
            asa = want["answer_wait_seconds"] / want["answered"]
            assert float(row["average_answer_wait_seconds"]) == pytest.approx(asa, rel=1e-5)
        else:
            assert row["average_answer_wait_seconds"] == ""
    (LOGS / "february1999-replay-summary.txt").write_text(summary)
