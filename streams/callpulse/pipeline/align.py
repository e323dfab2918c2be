"""Event-time alignment of the first stage's input partitions.

A queue's events can arrive on several partitions of the events topic (call events keyed by queue,
agent events keyed by agent, or no key at all). When the first stage reads a backlog (a replay, or a
worker catching up after downtime), Kafka hands out partitions at uneven speeds: one poll can bring
an hour of one partition's history before a single record of another. Passed on as read, the
second stage would find the slow partition's events older than the queue's newest event minus the
lateness, and reject them.

So the first stage merges its partitions by event time, within a tolerance `max_ahead`:
- each partition has a *low mark*: the oldest event time it may still pass on. That is the oldest
  event held back from it, or, while it has unread records, the newest event time read from it
  (what is still unread is about that old or newer); +inf when neither; -inf (unknown) while its
  position is unknown (just assigned) or it has unread records but no event read yet;
- the *horizon* is the lowest low mark of all partitions; events up to `max_ahead` past it are
  passed on, in event-time order, the rest is held. Passing events on raises the low marks, so
  this repeats until nothing more passes. With every partition caught up the horizon is +inf:
  live traffic is never delayed;
- a partition whose newest event is more than `max_ahead` past the horizon is paused, so what is
  held stays small, and resumed within `max_ahead / 2` (the gap keeps it from flapping: a pause
  drops the records already prefetched for that partition).
Everything passed on later is at least the horizon (less the disorder inside a partition), and
everything passed on so far at most `max_ahead` past it: with `max_ahead` half the lateness, events
in one partition may be out of order by the other half. Offsets are committed only up to the first
event still held, so a crash loses nothing.

With several workers, each reads some of the partitions, and a queue's events from all of them meet
in the second stage, so the horizon must cover every partition. Each worker publishes its
partitions' low marks to a small *progress topic* (key = partition, a minute of retention) many times a second
and reads everyone's: a partition it does not own counts by its owner's latest report. A report sent
before this worker's last rebalance may come from a previous owner (who may have read further than
the new one, which starts again from the committed offset), and one older than a few seconds from a
stopped worker: either way that partition counts as unknown until its current owner reports.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable

import orjson

from ..events import Valid

# (position, highwater) of an assigned partition: the next offset to read and the offset after the
# last record on the broker; highwater is None until the first fetch response for the partition.
Progress = tuple[int | None, int | None]
# A progress report older than this (by the reader's wall clock) no longer counts.
REPORT_TTL_SECONDS = 5.0


class EventTimeAligner:
    """Held events and newest event time of each partition this worker reads."""

    def __init__(self, max_ahead: float):
        self.max_ahead = max_ahead
        self.held: dict[Hashable, list[Valid]] = {}  # per partition, in event-time order
        self.newest: dict[Hashable, float] = {}  # newest event time read per partition

    def add(self, partition: Hashable, events: list[Valid]) -> None:
        """Valid events just read from a partition, in offset order."""
        if events:
            held = self.held.setdefault(partition, [])
            held.extend(events)
            held.sort(key=_time)  # nearly sorted already: linear; stable, so offset order within a time
            self.newest[partition] = max(self.newest.get(partition, -math.inf), held[-1].time)

    def low_marks(self, progress: dict[Hashable, Progress]) -> dict[Hashable, float]:
        """The low mark of each partition read here (see the module doc)."""
        marks = {}
        for partition, (position, highwater) in progress.items():
            held = self.held.get(partition)
            low = held[0].time if held else math.inf
            if position is None or highwater is None:
                low = -math.inf
            elif position < highwater:
                low = min(low, self.newest.get(partition, -math.inf))
            marks[partition] = low
        return marks

    def release(self, horizon: float) -> list[Valid]:
        """Take the held events that are at most max_ahead past the horizon."""
        limit = horizon + self.max_ahead
        out: list[Valid] = []
        for events in self.held.values():
            ready = bisect.bisect_right(events, limit, key=_time)
            if ready:
                out += events[:ready]
                del events[:ready]
        return out

    def commit_offsets(self, positions: dict[Hashable, int]) -> dict[Hashable, int]:
        """Offsets safe to commit: each partition's first held event, else its read position."""
        offsets = {}
        for partition, position in positions.items():
            events = self.held.get(partition)
            offsets[partition] = min(e.offset for e in events) if events else position
        return offsets

    def to_hold(self, horizon: float, paused: Iterable[Hashable]) -> set[Hashable]:
        """Partitions to keep paused: read too far past the horizon (hysteresis for paused ones)."""
        paused = set(paused)
        return {p for p, t in self.newest.items()
                if t - horizon > (self.max_ahead / 2 if p in paused else self.max_ahead)}

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Partitions revoked in a rebalance: their held events will be read again by the new owner."""
        for partition in partitions:
            self.held.pop(partition, None)
            self.newest.pop(partition, None)


def _time(event: Valid) -> float:
    return event.time


def encode_report(low: float, at: float) -> bytes:
    """A progress report: a partition's low mark (JSON has no infinities) and when it was sent."""
    if math.isinf(low):
        return orjson.dumps({"low": None, "caught_up": low > 0, "at": at})
    return orjson.dumps({"low": low, "at": at})


class SharedProgress:
    """The latest progress report of every input partition, as read from the progress topic."""

    def __init__(self, ttl: float = REPORT_TTL_SECONDS):
        self.ttl = ttl
        self.reports: dict[int, tuple[float, float]] = {}  # partition -> (low mark, sent at)

    def update(self, key: bytes, value: bytes) -> None:
        report = orjson.loads(value)
        low = report["low"] if report["low"] is not None else (math.inf if report["caught_up"] else -math.inf)
        self.reports[int(key)] = (low, report["at"])

    def low_mark(self, partition: int, now: float, not_before: float) -> float:
        """The partition's reported low mark if reported since not_before (this worker's last
        rebalance) and within the time to live; else -inf (unknown)."""
        low, at = self.reports.get(partition, (-math.inf, -math.inf))
        return low if not_before <= at and now - at <= self.ttl else -math.inf
