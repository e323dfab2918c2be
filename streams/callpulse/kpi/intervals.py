"""Interval reports: a queue's counters over fixed intervals (15 min, 30 min, ...) of local time.

Intervals are aligned to midnight in the queue's own time zone (08:00-08:15, 08:15-08:30, ...),
so they follow its wall clock through daylight-saving changes: the repeated hour of an autumn
change gives two 01:00-01:15 intervals an hour apart, the skipped hour of a spring change none.
Counts are attributed as in the rolling windows (model.py): each at the time of its own event.
An interval closes when the queue's watermark minus its lateness has passed its end, because no
event accepted after that can fall into it; the queue's record for it is then final.

`IntervalCounters` is pure bookkeeping, fed by `QueueModel._count`; `record()` and the CSV layout
at the end turn closed counters into what `callpulse report` exports.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import orjson

# Empty intervals are reported (zero calls is a fact a workforce tool needs), except in a run of
# quiet time longer than this: a queue idle over a weekend, or a replay of old history followed by
# live traffic, would otherwise produce thousands of empty rows.
MAX_QUIET_SECONDS = 86400.0
# Final records are kept in the model's snapshot this long (event time), so a worker that takes
# over a queue can publish them again in case the crashed owner never got them out.
KEEP_FINAL_RECORDS_SECONDS = 3600.0


def interval_bounds(t: float, minutes: int, zone: ZoneInfo) -> tuple[float, float]:
    """[start, end) of the interval of `minutes` containing instant t.

    A boundary is the first instant at which the local wall clock reads a multiple of `minutes`
    after midnight: a repeated wall time (autumn) is a boundary each time it is read, one skipped
    by a spring change is replaced by the instant the change happens. So an interval is `minutes`
    long except around a daylight-saving change that is not a multiple of it, and the intervals
    of a day never overlap and leave no gap.
    """
    day = datetime.fromtimestamp(t, zone).date().toordinal()
    boundaries = _boundaries_around(zone.key, minutes, day)
    i = bisect.bisect_right(boundaries, t)
    return boundaries[i - 1], boundaries[i]


def interval_start(t: float, minutes: int, zone: ZoneInfo) -> float:
    """Start (epoch seconds) of the interval of `minutes` containing instant t."""
    return interval_bounds(t, minutes, zone)[0]


@lru_cache(maxsize=2048)
def _boundaries_around(zone_key: str, minutes: int, day: int) -> tuple[float, ...]:
    """The boundaries of local days day-1 .. day+1 (proleptic ordinals), sorted."""
    out: set[float] = set()
    for d in (day - 1, day, day + 1):
        out.update(_day_boundaries(zone_key, minutes, d))
    return tuple(sorted(out))


@lru_cache(maxsize=2048)
def _day_boundaries(zone_key: str, minutes: int, day: int) -> tuple[float, ...]:
    zone = ZoneInfo(zone_key)
    midnight = datetime.combine(date.fromordinal(day), datetime.min.time())
    out = []
    for k in range(0, 1440, minutes):
        wall = midnight + timedelta(minutes=k)
        instants = {wall.replace(tzinfo=zone, fold=fold).timestamp() for fold in (0, 1)}
        real = [i for i in instants if datetime.fromtimestamp(i, zone).replace(tzinfo=None) == wall]
        out += real if real else [_change_between(zone, min(instants), max(instants))]
    return tuple(out)


def _change_between(zone: ZoneInfo, low: float, high: float) -> float:
    """The instant in (low, high] at which the zone's UTC offset changes (a spring gap lies
    there): bisection to the second; offsets change on whole seconds."""
    before = datetime.fromtimestamp(low, zone).utcoffset()
    low, high = math.floor(low), math.ceil(high)
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return float(high)


def local_iso(t: float, zone: ZoneInfo) -> str:
    """An instant as local ISO 8601 with its UTC offset, e.g. 2026-11-23T08:15:00+03:00."""
    return datetime.fromtimestamp(t, zone).isoformat(timespec="seconds")


class IntervalCounters:
    """The counters of the intervals of one queue that are not closed yet, for every length.

    Counters are lists in the model's field layout. `closed_until[m]` is the end of the last
    closed interval of length m: nothing before it changes any more.
    """

    def __init__(self, minutes: tuple[int, ...], zone: ZoneInfo, size: int):
        self.minutes = tuple(minutes)
        self.zone = zone
        self.size = size
        self.open: dict[int, dict[float, tuple[float, list[float]]]] = {m: {} for m in self.minutes}
        self.closed_until: dict[int, float | None] = {m: None for m in self.minutes}
        self.counted_until: dict[int, float] = {}  # per length: end of the last closed interval with counts
        self._current: dict[int, tuple[float, float, list[float]]] = {}  # per length: the last slot used
        self._next_end: dict[int, float] = {}  # per length: end of the next interval to close

    def _slot(self, minutes: int, t: float) -> list[float] | None:
        """The counters of the interval containing t; None if that interval is closed already."""
        current = self._current.get(minutes)
        if current is not None and current[0] <= t < current[1]:
            return current[2]
        closed = self.closed_until[minutes]
        if closed is not None and t < closed:
            return None
        start, end = interval_bounds(t, minutes, self.zone)
        entry = self.open[minutes].get(start)
        if entry is None:
            entry = self.open[minutes][start] = (end, [0.0] * self.size)
            # before the first close, a late event can open an interval before the one close()
            # waits for: it is the next to close now (as for a model rebuilt without _next_end)
            if end < self._next_end.get(minutes, math.inf):
                self._next_end[minutes] = end
        self._current[minutes] = (start, end, entry[1])
        return entry[1]

    def add(self, t: float, increments: list[tuple[int, float]]) -> None:
        """Counters that happened at instant t."""
        for m in self.minutes:
            counters = self._slot(m, t)
            if counters is not None:
                for i, amount in increments:
                    counters[i] += amount

    def add_span(self, start: float, end: float, indexes: list[int]) -> None:
        """Seconds of a state that lasted [start, end), split at interval boundaries. Parts in
        intervals closed already were counted when they closed (the model adds the open states'
        part then). Before any interval closed, at most the last MAX_QUIET_SECONDS are kept: an
        agent left logged in over a long gap must not create an interval for every step of it."""
        for m in self.minutes:
            closed = self.closed_until[m]
            cursor = max(start, closed) if closed is not None else max(start, end - MAX_QUIET_SECONDS)
            while cursor < end:
                counters = self._slot(m, cursor)
                piece_end = min(end, self._current[m][1])
                if counters is not None:
                    for i in indexes:
                        counters[i] += piece_end - cursor
                cursor = piece_end

    def close(self, horizon: float) -> Iterator[tuple[int, float, float, list[float]]]:
        """Close, in time order, every interval that ends at or before `horizon`, the quiet ones in
        between included (up to MAX_QUIET_SECONDS after the last one with counts): yields
        (minutes, start, end, counters)."""
        for m in self.minutes:
            if horizon < self._next_end.get(m, -math.inf):
                continue  # the next interval to close has not ended: the common case, made cheap
            opened = self.open[m]
            cursor = self.closed_until[m]
            if cursor is None:
                if not opened:
                    continue
                cursor = min(opened)
            while True:
                start, end = interval_bounds(cursor, m, self.zone)
                if end > horizon:
                    self._next_end[m] = end
                    break
                entry = opened.pop(start, None)
                if entry is not None:
                    self.counted_until[m] = end
                    yield m, start, end, entry[1]
                elif start - self.counted_until.get(m, start) < MAX_QUIET_SECONDS:
                    yield m, start, end, [0.0] * self.size
                else:  # a long quiet spell: skip to the next interval with counts, or to the horizon
                    end = max(end, interval_start(min(min(opened, default=horizon), horizon), m, self.zone))
                self.closed_until[m] = cursor = end
            current = self._current.get(m)
            if current is not None and current[1] <= (self.closed_until[m] or -math.inf):
                del self._current[m]

    def pending(self, horizon: float) -> Iterator[tuple[int, float, float, list[float]]]:
        """Intervals ending at or before `horizon` that are still open (not closed by the
        watermark yet), without changing anything: for a preliminary record while the queue is
        quiet. Only intervals with counts; quiet ones are reported when they close."""
        for m in self.minutes:
            for start, (end, counters) in sorted(self.open[m].items()):
                if end <= horizon:
                    yield m, start, end, counters

    def to_state(self) -> dict:
        return {
            "open": {str(m): [[s, e, c] for s, (e, c) in slots.items()] for m, slots in self.open.items()},
            "closed_until": {str(m): v for m, v in self.closed_until.items()},
            "counted_until": {str(m): v for m, v in self.counted_until.items()},
            "zone": self.zone.key,
        }

    def load_state(self, state: dict, remap) -> None:
        """Restore a snapshot; lengths no longer configured are dropped, new ones start empty. If
        the queue's time zone changed, open counts move to the new zone's interval of their start."""
        moved = state.get("zone", self.zone.key) != self.zone.key
        for key, slots in state["open"].items():
            m = int(key)
            if m not in self.open:
                continue
            closed = state["closed_until"].get(key)
            for start, end, counters in slots:
                if moved:
                    start, end = interval_bounds(start, m, self.zone)
                    if closed is not None and start < closed:
                        closed = start  # so that close() reaches it
                _, into = self.open[m].setdefault(start, (end, [0.0] * self.size))
                for i, value in enumerate(remap(counters)):
                    into[i] += value
            self.closed_until[m] = closed
        self.counted_until = {int(m): v for m, v in state["counted_until"].items() if int(m) in self.open}
        self._current = {}
        self._next_end = {}


def record_key(queue: str, minutes: int, start: float) -> bytes:
    """Kafka key of an interval record: one per queue, length and start (the topic is compacted)."""
    return orjson.dumps([queue, minutes, start])
