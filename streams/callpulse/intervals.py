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

import math
from datetime import datetime, timedelta
from typing import Iterator
from zoneinfo import ZoneInfo

# Empty intervals are reported (zero calls is a fact a workforce tool needs), except in a run of
# quiet time longer than this: a queue idle over a weekend, or a replay of old history followed by
# live traffic, would otherwise produce thousands of empty rows.
MAX_QUIET_SECONDS = 86400.0
# Final records are kept in the model's snapshot this long (event time), so a worker that takes
# over a queue can publish them again in case the crashed owner never got them out.
KEEP_FINAL_RECORDS_SECONDS = 3600.0


def interval_bounds(t: float, minutes: int, zone: ZoneInfo) -> tuple[float, float]:
    """[start, end) of the interval of `minutes` containing instant t. Boundaries are the instants
    at which the local wall clock reads a multiple of `minutes` after midnight, so an interval is
    `minutes` long except around a daylight-saving change that is not a multiple of it (Lord Howe
    Island's 30-minute change makes a 60-minute interval 30 or 90 minutes long)."""
    local = datetime.fromtimestamp(t, zone)
    minute_of_day = local.hour * 60 + local.minute
    floored = minute_of_day - minute_of_day % minutes
    start = local.replace(hour=floored // 60, minute=floored % 60, second=0, microsecond=0).timestamp()
    end = start + minutes * 60
    offset = local.utcoffset()
    if (start <= t < end and datetime.fromtimestamp(start, zone).utcoffset() == offset
            and datetime.fromtimestamp(end, zone).utcoffset() == offset):
        return start, end  # no change of UTC offset anywhere near: the common case
    # Near a change: collect the instants of the wall-clock boundaries within 3 hours (both
    # readings of a repeated time; none for a skipped one) and take those around t.
    reach = -(-180 // minutes)
    midnight = datetime(local.year, local.month, local.day)
    boundaries = set()
    for k in range(-reach, reach + 1):
        wall = midnight + timedelta(minutes=floored + k * minutes)
        for fold in (0, 1):
            instant = wall.replace(tzinfo=zone, fold=fold).timestamp()
            if datetime.fromtimestamp(instant, zone).replace(tzinfo=None) == wall:
                boundaries.add(instant)
    return max(b for b in boundaries if b <= t), min(b for b in boundaries if b > t)


def interval_start(t: float, minutes: int, zone: ZoneInfo) -> float:
    """Start (epoch seconds) of the interval of `minutes` containing instant t."""
    return interval_bounds(t, minutes, zone)[0]


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
        intervals closed already were counted when they closed (`open_part`)."""
        for m in self.minutes:
            cursor = max(start, self.closed_until[m] or start)
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
            opened = self.open[m]
            cursor = self.closed_until[m]
            if cursor is None:
                if not opened:
                    continue
                cursor = min(opened)
            while True:
                start, end = interval_bounds(cursor, m, self.zone)
                if end > horizon:
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
            "minutes": list(self.minutes),
            "open": {str(m): [[s, e, c] for s, (e, c) in slots.items()] for m, slots in self.open.items()},
            "closed_until": {str(m): v for m, v in self.closed_until.items()},
            "counted_until": {str(m): v for m, v in self.counted_until.items()},
        }

    def load_state(self, state: dict, remap) -> None:
        """Restore a snapshot; lengths no longer configured are dropped, new ones start empty."""
        for key, slots in state["open"].items():
            m = int(key)
            if m in self.open:
                self.open[m] = {s: (e, remap(c)) for s, e, c in slots}
                self.closed_until[m] = state["closed_until"].get(key)
        self.counted_until = {int(m): v for m, v in state["counted_until"].items() if int(m) in self.open}
        self._current = {}


def record_key(queue: str, minutes: int, start: float) -> bytes:
    """Kafka key of an interval record: one per queue, length and start (the topic is compacted)."""
    import orjson

    return orjson.dumps([queue, minutes, start])
