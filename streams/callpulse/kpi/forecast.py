"""Forecast vs actual: a workforce-management forecast per queue and interval, compared live.

The forecast is a CSV file of the kind WFM tools export: one row per queue and interval with the
forecast offered calls, and optionally the forecast AHT and the planned agents. Column names are
matched case-insensitively against common spellings (FORECAST_COLUMNS); other columns are ignored.
Times are local wall-clock times in the queue's own time zone (an ISO time with a UTC offset is
taken as that instant). The interval length is the most common step between a queue's rows (or
length of the end column's) and must be one of the queue's `interval_minutes`, whose interval
counters supply the actual side. A problem leaves out its queue (or, if the file cannot be read
at all, the file) and is reported; it never stops the worker (ForecastFile).

Compared for the current interval and the queue's business day, at the stream clock, over the
intervals the forecast has a row for:
- forecast to date: each interval's forecast times the share of it that has passed since the
  queue's data began;
- WAPE (weighted absolute percentage error) of offered calls over the ended intervals:
  sum |actual - forecast| / sum actual, the accuracy measure WFM teams report (0 = perfect);
- reforecast of the rest of the day: its remaining forecast scaled by actual / forecast to date,
  once the forecast to date reaches MIN_TO_DATE_CALLS (too few calls would scale by noise).
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .intervals import interval_bounds

log = logging.getLogger(__name__)

# A ratio or reforecast needs this many forecast calls to date: 3 calls against 1 forecast is
# no 300 % day, and scaling the rest of the day by it would be a made-up number.
MIN_TO_DATE_CALLS = 10.0

# Field -> accepted column names, after lower-casing and turning every run of other characters
# than letters and digits into "_" ("AHT (sec)" -> "aht_sec", "Interval Start" -> "interval_start").
FORECAST_COLUMNS: dict[str, tuple[str, ...]] = {
    "queue": ("queue", "queue_id", "queue_name", "skill", "skill_name", "skill_group", "split", "split_skill"),
    "date": ("date", "day", "interval_date"),
    "start": ("interval_start", "interval", "start", "start_time", "interval_start_time", "time", "period_start",
              "datetime", "timestamp"),
    "end": ("interval_end", "end", "end_time", "interval_end_time", "period_end"),
    "offered": ("offered", "offered_calls", "calls_offered", "calls", "volume", "contacts", "forecast_calls",
                "forecast_offered", "forecast_contacts", "forecast_volume", "forecasted_calls", "forecasted_contacts",
                "fcst_calls", "fcst_volume"),
    "aht": ("aht", "aht_seconds", "aht_sec", "aht_s", "handle_time", "average_handle_time", "avg_handle_time",
            "forecast_aht", "forecasted_aht", "fcst_aht"),
    "planned": ("planned_agents", "planned", "planned_staff", "planned_fte", "scheduled", "scheduled_agents",
                "scheduled_staff", "scheduled_fte", "agents", "staff", "fte"),
}
REQUIRED_COLUMNS = ("queue", "start", "offered")


class ForecastError(ValueError):
    """An unusable forecast file; the message starts with `file:line`. The command line reports it
    as a configuration error (the file is named by `stream.forecast_file`)."""


@dataclass(frozen=True)
class ForecastInterval:
    start: float  # epoch seconds
    end: float
    offered: float
    aht: float | None  # seconds
    planned: float | None  # agents


@dataclass(frozen=True)
class QueueForecast:
    queue: str
    minutes: int
    intervals: tuple[ForecastInterval, ...]  # sorted by start
    starts: tuple[float, ...] = field(init=False, repr=False, compare=False)  # for bisect

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", tuple(i.start for i in self.intervals))

    def starting_in(self, low: float, high: float) -> tuple[ForecastInterval, ...]:
        """The intervals that start in [low, high): a file may hold weeks of them."""
        return self.intervals[bisect.bisect_left(self.starts, low):bisect.bisect_left(self.starts, high)]


# ---- reading the file ----------------------------------------------------------------------

def _column_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _columns(header: list[str], where: str) -> dict[str, int]:
    by_key = {_column_key(h): i for i, h in enumerate(header)}
    out: dict[str, int] = {}
    for meaning, names in FORECAST_COLUMNS.items():
        found = [n for n in names if n in by_key]
        if len(found) > 1:
            raise ForecastError(f"{where}: columns {', '.join(header[by_key[n]] for n in found)} all mean {meaning}; keep one")
        if found:
            out[meaning] = by_key[found[0]]
    missing = [f for f in REQUIRED_COLUMNS if f not in out]
    if missing:
        raise ForecastError(f"{where}: no column for {', '.join(missing)}; the header is {header}. Accepted names: "
                            + "; ".join(f"{f}: {', '.join(FORECAST_COLUMNS[f])}" for f in missing))
    return out


_GROUPED_BY_DOTS = re.compile(r"\d{1,3}(\.\d{3})+(,\d*)?")


def _number(text: str, what: str, where: str, decimal_comma: bool) -> float:
    """A number as WFM exports write it. In a ';' file (a European locale) the comma is the
    decimal mark and '.' may group thousands (1.234,5); "1.234" alone could be either, so it is
    refused. Elsewhere a comma can only be a thousands separator or a foreign decimal: refused."""
    s = text.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    if decimal_comma:
        if _GROUPED_BY_DOTS.fullmatch(s):
            if "," not in s:
                raise ForecastError(f"{where}: {what} {text!r} is ambiguous in a ';' file (1.234 = 1234 or 1,234?); "
                                    "write it without thousands separators")
            s = s.replace(".", "")
        s = s.replace(",", ".")
    elif "," in s:
        raise ForecastError(f"{where}: {what} must be a number without thousands separators, got {text!r}")
    try:
        value = float(s)
    except ValueError:
        raise ForecastError(f"{where}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ForecastError(f"{where}: {what} must be a finite number >= 0, got {text!r}")
    return value


def _seconds(text: str, where: str, decimal_comma: bool) -> float:
    """AHT in seconds, or as m:ss / h:mm:ss."""
    if ":" in text:
        parts = text.strip().split(":")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ForecastError(f"{where}: AHT must be seconds or m:ss, got {text!r}") from None
        if len(values) > 3 or any(v < 0 for v in values) or any(v >= 60 for v in values[1:]):
            raise ForecastError(f"{where}: AHT must be seconds or m:ss, got {text!r}")
        return sum(v * 60 ** i for i, v in enumerate(reversed(values)))
    return _number(text, "AHT", where, decimal_comma)


_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%Y%m%d")


def _date(text: str, where: str) -> date:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            pass
    raise ForecastError(f"{where}: date must be YYYY-MM-DD (or YYYY/MM/DD, DD.MM.YYYY), got {text!r}")


_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")  # HH:MM or HH:MM:SS


def _wall_time(text: str, where: str) -> tuple[int, int]:
    """(hour, minute) of "HH:MM" or "HH:MM:SS" (seconds must be 0)."""
    m = _TIME_OF_DAY.fullmatch(text.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59 or int(m.group(3) or 0) != 0:
        raise ForecastError(f"{where}: time must be HH:MM on a whole minute, got {text!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass
class _Row:
    line: int
    wall: datetime | None  # naive local start; None when the file gave an instant
    instant: float | None  # start when the file gave a UTC offset
    end_wall: datetime | None
    offered: float
    aht: float | None
    planned: float | None


def _start(row: list[str], cols: dict[str, int], where: str) -> tuple[datetime | None, float | None]:
    text = row[cols["start"]].strip()
    if "date" in cols:
        day = _date(row[cols["date"]], where)
        if _TIME_OF_DAY.fullmatch(text):
            h, m = _wall_time(text, where)
            return datetime(day.year, day.month, day.day, h, m), None
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1) if " " in text else text)
    except ValueError:
        raise ForecastError(f"{where}: interval start must be HH:MM with a date column, or a date and time "
                            f"like 2026-12-01 08:15, got {text!r}") from None
    if parsed.second or parsed.microsecond:
        raise ForecastError(f"{where}: interval start must be on a whole minute, got {text!r}")
    if parsed.tzinfo is not None:
        return None, parsed.timestamp()
    return parsed, None


def _end_wall(row: list[str], cols: dict[str, int], start: datetime | None, where: str) -> datetime | None:
    if "end" not in cols or start is None or not row[cols["end"]].strip():
        return None
    text = row[cols["end"]].strip()
    if _TIME_OF_DAY.fullmatch(text):
        h, m = (0, 0) if text.startswith("24:") else _wall_time(text, where)
        end = datetime.combine(start.date(), datetime.min.time()).replace(hour=h, minute=m)
        return end if end > start else end + timedelta(days=1)  # 23:45-00:00
    return _start([text], {"start": 0}, where)[0]


def _local_instant(wall: datetime, zone: ZoneInfo, repeat: bool) -> float | None:
    """Epoch of a local wall time, None if the clocks skip it; `repeat`: its second occurrence
    (the repeated hour of an autumn change, listed twice by tools that export it)."""
    instant = wall.replace(tzinfo=zone, fold=1 if repeat else 0).timestamp()
    if datetime.fromtimestamp(instant, zone).replace(tzinfo=None) != wall:
        return None
    return instant


def read_forecast(path: str | os.PathLike[str], config: Any,
                  problems: list[str] | None = None) -> dict[str, QueueForecast]:
    """Parse a forecast file; the queues' time zones and interval lengths come from `config`.
    Raises ForecastError naming the file and line of the problem; with `problems`, a problem in
    one queue's rows is added there instead and only that queue is left out."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ForecastError(f"{name}: cannot read the forecast file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError as exc:
        raise ForecastError(f"{name}: not UTF-8 text (byte {exc.start}); export the forecast as UTF-8 CSV") from None
    return parse_forecast(text, config, name, problems)


def parse_forecast(text: str, config: Any, name: str = "<forecast>",
                   problems: list[str] | None = None) -> dict[str, QueueForecast]:
    """read_forecast() of text already read."""
    lines = text.splitlines(keepends=True)
    first = 1
    if lines and re.fullmatch(r"sep=.\s*", lines[0], re.I):  # Excel's delimiter line
        delimiter, lines, first = lines[0][4], lines[1:], 2
    else:
        delimiter = max(",;\t|", key=(lines[0] if lines else "").count)
    decimal_comma = delimiter == ";"
    reader = csv.reader(lines, delimiter=delimiter)
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise ForecastError(f"{name}:{first}: empty file; expected a header like queue,date,interval_start,offered")
    cols = _columns(header, f"{name}:{first}")
    rows: dict[str, list[_Row]] = {}
    broken: dict[str, ForecastError] = {}  # queue -> its first problem
    for line, row in enumerate(reader, start=first + 1):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{name}:{line}"
        queue = row[cols["queue"]].strip() if len(row) > cols["queue"] else ""
        try:
            if len(row) < len(header):
                raise ForecastError(f"{where}: {len(row)} fields, the header has {len(header)}")
            if not queue:
                raise ForecastError(f"{where}: empty queue")
            rows.setdefault(queue, []).append(_row(row, cols, line, where, decimal_comma))
        except ForecastError as exc:
            if problems is None:
                raise
            broken.setdefault(queue, exc)
    out = {}
    for queue, queue_rows in rows.items():
        try:
            if queue in broken:
                raise broken.pop(queue)
            out[queue] = _queue_forecast(queue, queue_rows, config.queue(queue), name)
        except ForecastError as exc:
            if problems is None:
                raise
            problems.append(f"{exc}; queue {queue!r} left out")
    for queue, error in broken.items():  # queues none of whose rows could be read, rows of no queue
        assert problems is not None  # broken is only filled when problems are collected
        problems.append(f"{error}; {f'queue {queue!r}' if queue else 'row'} left out")
    return out


def _row(row: list[str], cols: dict[str, int], line: int, where: str, decimal_comma: bool) -> _Row:
    wall, instant = _start(row, cols, where)
    optional = {f: row[cols[f]].strip() if f in cols else "" for f in ("aht", "planned")}
    aht = _seconds(optional["aht"], where, decimal_comma) if optional["aht"] else None
    return _Row(
        line, wall, instant, _end_wall(row, cols, wall, where),
        _number(row[cols["offered"]], "offered", where, decimal_comma),
        aht or None,  # WFM tools write 0 for an interval without calls
        _number(optional["planned"], "planned agents", where, decimal_comma) if optional["planned"] else None)


def _length(queue: str, rows: list[_Row], name: str) -> int:
    """Interval length in minutes: the most common of the end column's lengths, else of the steps
    between starts (the rows around a daylight-saving change differ on the wall clock)."""
    lengths = [round((r.end_wall - r.wall).total_seconds() / 60) for r in rows if r.end_wall and r.wall]
    if not lengths:
        walls = [r.wall for r in rows if r.wall is not None]
        starts = sorted(set(walls)) if walls else sorted({datetime.fromtimestamp(r.instant, UTC) for r in rows})  # type: ignore[arg-type]
        lengths = [round((b - a).total_seconds() / 60) for a, b in zip(starts, starts[1:])]
    lengths = [n for n in lengths if n > 0]
    if not lengths:
        raise ForecastError(f"{name}:{rows[0].line}: queue {queue!r} has a single interval and no end column: "
                            "its length is unknown")
    return Counter(lengths).most_common(1)[0][0]


def _queue_forecast(queue: str, rows: list[_Row], queue_config: Any, name: str) -> QueueForecast:
    minutes = _length(queue, rows, name)
    if minutes not in queue_config.interval_minutes:
        raise ForecastError(
            f"{name}: the forecast of queue {queue!r} has {minutes}-minute intervals, but the queue's interval_minutes "
            f"are {list(queue_config.interval_minutes)}: add {minutes} to them (config queues.{queue}.interval_minutes)")
    zone = queue_config.tzinfo
    seen: dict[datetime, int] = {}
    intervals: dict[float, ForecastInterval] = {}
    for r in rows:
        where = f"{name}:{r.line}"
        if r.wall is not None:
            repeat = seen.get(r.wall, 0)
            seen[r.wall] = repeat + 1
            start = _local_instant(r.wall, zone, repeat > 0)
            if start is None:
                if r.offered == 0:
                    continue  # the skipped hour of a spring change, exported with no calls
                raise ForecastError(f"{where}: {r.wall:%Y-%m-%d %H:%M} does not exist in {zone.key} (clocks skip it), "
                                    f"but has {r.offered:g} calls")
        else:
            assert r.instant is not None  # _start() gives a row either a wall time or an instant
            start = r.instant
        bounds = interval_bounds(start, minutes, zone)
        if bounds[0] != start:
            local = datetime.fromtimestamp(start, zone)
            raise ForecastError(f"{where}: {local:%H:%M} is not the start of a {minutes}-minute interval of the day in "
                                f"{zone.key} (intervals start at midnight)")
        if start in intervals:
            raise ForecastError(f"{where}: queue {queue!r} has the interval at "
                                f"{datetime.fromtimestamp(start, zone):%Y-%m-%d %H:%M %Z} twice")
        intervals[start] = ForecastInterval(start, bounds[1], r.offered, r.aht, r.planned)
    return QueueForecast(queue, minutes, tuple(intervals[s] for s in sorted(intervals)))


class ForecastFile:
    """The forecast file in use: loaded at start and again when it has changed (size,
    modification time or inode) and then stayed the same for one more check, so a file still
    being written is not read half-way. Problems never stop the worker: a file that cannot be
    used at all leaves the previous forecast (at start: none) in use, a queue with a problem is
    left out; both are logged with file, line and reason, and counted."""

    def __init__(self, path: str | os.PathLike[str], config: Any, wall: Callable[[], float] = time.time):
        self.path = Path(path)
        self.config = config
        self.wall = wall
        self.load_errors = 0  # loads that failed, in whole or for some queue
        self.forecast: dict[str, QueueForecast] = {}
        self.loaded_at: float | None = None
        self._loaded_signature: tuple[int, int, int] | None = None
        self._pending: tuple[int, int, int] | None = None
        self._load(self._stat())

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self, signature: tuple[int, int, int] | None) -> bool:
        self._loaded_signature = signature  # a broken version is reported once, not at every check
        problems: list[str] = []
        try:
            forecast = read_forecast(self.path, self.config, problems)
        except ForecastError as exc:
            self.load_errors += 1
            log.error("forecast not loaded; %s: %s", "none in use" if self.loaded_at is None else
                      "the previous one stays in use", exc)
            return False
        for problem in problems:
            log.error("forecast: %s", problem)
        self.load_errors += bool(problems)
        self.forecast, self.loaded_at = forecast, self.wall()
        log.info("forecast loaded from %s: %d queues (%s)", self.path, len(forecast), ", ".join(sorted(forecast)))
        return True

    def reload_if_changed(self) -> bool:
        """Check the file (every few seconds); True if a new forecast is now in use."""
        signature = self._stat()
        if signature == self._loaded_signature:
            self._pending = None
            return False
        if signature != self._pending:  # changed since the last check: may still be written
            self._pending = signature
            return False
        self._pending = None
        return self._load(signature)


# ---- comparing with the actual counts ------------------------------------------------------

def _ratio(actual: float, forecast: float) -> float | None:
    return actual / forecast if forecast >= MIN_TO_DATE_CALLS else None


def _weighted_aht(rows: list[tuple[float, float | None]]) -> float | None:
    """Call-weighted mean AHT of (calls, aht) pairs that have one."""
    calls = sum(n for n, aht in rows if aht is not None)
    return sum(n * aht for n, aht in rows if aht is not None) / calls if calls > 0 else None


def compare(forecast: QueueForecast, actuals: dict[float, tuple[float, float, float, float]], now: float,
            day_start: float, day_end: float, observed_since: float | None = None) -> dict | None:
    """Forecast vs actual at clock `now` for the business day [day_start, day_end).

    actuals: interval start -> (end, offered, handled, handle seconds) of the queue's intervals of
    forecast.minutes, up to now. observed_since: when the queue's data begins, if after the day's
    start (a worker first started mid-day): forecasts then count only for the part of the day seen.
    The ratio, WAPE and reforecast compare only intervals the forecast has a row for (a forecast
    of opening hours says nothing of calls at night); the actual offered calls of the day are all
    of them. None when the forecast has nothing for this day.
    """
    day = forecast.starting_in(day_start, day_end)
    if not day:
        return None
    since = day_start if observed_since is None else max(day_start, observed_since)

    def seen(f: ForecastInterval) -> float:
        """Share of the interval between `since` and now."""
        return max(0.0, min(now, f.end) - max(f.start, since)) / (f.end - f.start)

    so_far = {s: a for s, a in actuals.items() if day_start <= s <= now and a[0] > since}
    covered = [(f, so_far.get(f.start, (f.end, 0.0, 0.0, 0.0))[1]) for f in day if seen(f) > 0]
    forecast_day = sum(f.offered for f in day)
    forecast_to_date = sum(f.offered * seen(f) for f, _ in covered)
    actual_covered = sum(offered for _, offered in covered)
    handled_day = sum(a[2] for a in so_far.values())
    out: dict[str, Any] = {
        "interval_minutes": forecast.minutes,
        "day": {
            "forecast_offered": forecast_day,
            "forecast_offered_to_date": forecast_to_date,
            "actual_offered": sum(a[1] for a in so_far.values()),
            "offered_vs_forecast": _ratio(actual_covered, forecast_to_date),
            "forecast_handle_seconds": _weighted_aht([(f.offered, f.aht) for f in day]),
            "actual_handle_seconds": sum(a[3] for a in so_far.values()) / handled_day if handled_day else None,
        },
        "interval": None,
        "planned_agents": None,
    }
    current = next((f for f in day if f.start <= now < f.end), None)
    if current is not None:
        _, offered, handled, handle_seconds = actuals.get(current.start, (current.end, 0.0, 0.0, 0.0))
        to_date = current.offered * seen(current)
        out["interval"] = {
            "start": current.start,
            "end": current.end,
            "forecast_offered": current.offered,
            "forecast_offered_to_date": to_date,
            "actual_offered": offered,
            "offered_vs_forecast": _ratio(offered, to_date),
            "forecast_handle_seconds": current.aht,
            "actual_handle_seconds": handle_seconds / handled if handled else None,
        }
        out["planned_agents"] = current.planned
    # WAPE over the forecast's ended intervals (the first one seen only in part: its forecast
    # for that part)
    ended = [(f.offered * seen(f), offered) for f, offered in covered if f.end <= now]
    total = sum(a for _, a in ended)
    out["wape"] = sum(abs(a - f) for f, a in ended) / total if total > 0 else None
    scale = _ratio(actual_covered, forecast_to_date)
    if scale is None:
        out["reforecast"] = None
    else:
        rest = sum(f.offered * max(0.0, f.end - max(f.start, now)) / (f.end - f.start) for f in day)
        # actual + rest x scale; with data from the day's start that is forecast_day x scale, and
        # a part of the day before the data began is estimated at the same deviation
        out["reforecast"] = {"rest_of_day": rest * scale, "day": forecast_day * scale}
    return out
