"""Is the pipeline making progress? Per stage and input partition, without trusting any one cause.

A worker can stop making progress for many reasons (a partition left paused, a stage waiting for a
worker that is gone, a consumer stuck in a rebalance, a broker that lost its data). Each would show
plausible numbers frozen in time. So instead of guessing causes, each stage reports, for every input
partition it owns, the next offset it will process and the broker's end offset: a partition with
records waiting (end > next) whose next offset has not moved for `stalled_after` seconds is
*stalled*, judged on the clock at every read (a stage stuck inside a call cannot report itself;
the broker probe keeps the end offsets current). A partition whose end offset went backwards and
stayed below for `confirm_after` seconds lost data on the broker (an embedded broker restarted, a
topic deleted and created again): the numbers built from it are no longer backed by the log. The
wait is for a cluster's leader change: the new leader's high watermark can briefly lag the old one's
(so a loss that new records refill within those seconds goes unseen here; a vanished topic does not).

/healthz answers 503 while anything is stalled or data was lost, and the exporter publishes
`callcenter_pipeline_stalled_partitions{stage}` and `callcenter_broker_data_lost_total{stage}`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("callpulse")
STAGES = ("route", "aggregate")
# A partition with records waiting and no progress for this long is stalled. Longer than a group
# rebalance with recovery (about 10 s here), short enough to page before a wallboard misleads.
STALLED_AFTER_SECONDS = 30.0
# An end offset below one seen before counts as data lost once it stays below for this long.
DATA_LOST_CONFIRM_SECONDS = 10.0


@dataclass
class _Partition:
    next_offset: int
    end_offset: int
    moved_at: float  # when next_offset last changed, or records last began to wait
    probe_end: int | None = None  # the broker probe's latest end offset (see probed)
    logged_stalled: bool = False


@dataclass
class _EndOffset:
    """The highest end offset seen in a partition, and since when readings have been below it."""

    highest: int
    below_since: float | None = None


@dataclass
class ProgressWatch:
    """Progress of each stage's owned input partitions (offsets as the stage sees them)."""

    stalled_after: float = STALLED_AFTER_SECONDS
    confirm_after: float = DATA_LOST_CONFIRM_SECONDS
    clock: Callable[[], float] = time.monotonic  # a builtin: not bound as a method
    partitions: dict[tuple[str, int], _Partition] = field(default_factory=dict)
    ends: dict[tuple[str, str, int], _EndOffset] = field(default_factory=dict)  # (stage, source, partition)
    data_lost: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    lost_detail: str | None = None  # the latest loss, for /healthz
    unanswered_since: float | None = None  # when the broker stopped answering the probe (see app.py)
    # (stage, partition) -> since when it is owned and its recovery not complete (see recovering)
    unrecovered: dict[tuple[str, int], float] = field(default_factory=dict)

    def observe(self, stage: str, partition: int, next_offset: int, end_offset: int) -> None:
        """One reading: the next offset the stage will process in a partition, and the end offset."""
        now = self.clock()
        self.end_offset(stage, "input", partition, end_offset)
        seen = self.partitions.get((stage, partition))
        if seen is None:
            self.partitions[(stage, partition)] = _Partition(next_offset, end_offset, now)
            return
        # A paused partition is not fetched, so its consumer's end offset stands still: the probe's
        # may be newer (a partition held for good must show as stalled).
        if seen.probe_end is not None:
            end_offset = max(end_offset, seen.probe_end)
        was_caught_up = seen.next_offset >= seen.end_offset
        if next_offset != seen.next_offset or next_offset >= end_offset or was_caught_up:
            seen.moved_at = now  # the wait counts from the last move, or from when records began to wait
        seen.next_offset, seen.end_offset = next_offset, end_offset
        self._judge(stage, partition, seen, now)

    def probed(self, stage: str, partition: int, end_offset: int) -> None:
        """An end offset of a stage's input partition read by the broker probe: records waiting count
        even while the stage itself does not report (it observes only between its own steps)."""
        self.end_offset(stage, "probe", partition, end_offset)
        seen = self.partitions.get((stage, partition))
        if seen is None:
            return  # not owned here
        seen.probe_end = end_offset
        if end_offset > seen.end_offset:
            if seen.next_offset >= seen.end_offset:
                seen.moved_at = self.clock()  # records begin to wait
            seen.end_offset = end_offset

    def _judge(self, stage: str, partition: int, seen: _Partition, now: float) -> bool:
        """Whether the partition is stalled now; logs when that changes."""
        stalled = seen.next_offset < seen.end_offset and now - seen.moved_at >= self.stalled_after
        if stalled and not seen.logged_stalled:
            log.error("%s stage: no progress on input partition %d for %.0f s (next offset %d, end offset %d)",
                      stage, partition, now - seen.moved_at, seen.next_offset, seen.end_offset)
        elif seen.logged_stalled and not stalled:
            log.warning("%s stage: input partition %d is moving again", stage, partition)
        seen.logged_stalled = stalled
        return stalled

    def end_offset(self, stage: str, source: str, partition: int, end_offset: int) -> None:
        """Data-loss check of one reader's end offsets (`source`: the stage's consumer or the probe)."""
        now = self.clock()
        seen = self.ends.setdefault((stage, source, partition), _EndOffset(end_offset))
        if end_offset >= seen.highest:
            if seen.below_since is not None:
                log.warning("%s: the end offset of input partition %d is back at %d: a leader change, no loss",
                            stage, partition, end_offset)
            seen.highest, seen.below_since = end_offset, None
        elif seen.below_since is None:
            seen.below_since = now
        elif now - seen.below_since >= self.confirm_after:
            self.lost(stage, f"{stage}: the end offset of input partition {partition} went back from "
                             f"{seen.highest} to {end_offset}: the broker lost records; numbers built "
                             f"from them are not in the log any more")
            for other in ("input", "probe"):  # one loss, however many readers saw it
                reading = self.ends.get((stage, other, partition))
                if reading is not None:
                    reading.highest, reading.below_since = min(reading.highest, end_offset), None

    def lost(self, stage: str, detail: str) -> None:
        """Data the stage had read is gone from the broker (a topic vanished, an end offset went back)."""
        if detail != self.lost_detail:
            self.data_lost[stage] += 1
            self.lost_detail = detail
            log.error("%s; restart every worker of the group on a fresh app id or replay the sources", detail)

    def answered(self, ok: bool) -> None:
        """The broker answered the probe, or did not."""
        now = self.clock()
        if ok:
            if self.unanswered_since is not None:
                log.warning("the broker answers again after %.0f s", now - self.unanswered_since)
            self.unanswered_since = None
        elif self.unanswered_since is None:
            self.unanswered_since = now
            log.warning("the broker does not answer")

    def unanswered_seconds(self) -> float:
        return 0.0 if self.unanswered_since is None else self.clock() - self.unanswered_since

    def retain(self, stage: str, partitions: set[int]) -> None:
        """Forget the partitions a stage no longer owns (after a rebalance)."""
        for key in [k for k in self.partitions if k[0] == stage and k[1] not in partitions]:
            del self.partitions[key]
        for end_key in [k for k in self.ends if k[0] == stage and k[1] == "input" and k[2] not in partitions]:
            del self.ends[end_key]  # a new owner's consumer starts its own readings

    def recovering(self, stage: str, partitions: set[int]) -> None:
        """The stage's owned input partitions whose recovery is not complete now (their queues are not
        exported). Each counts from the first reading that found it so, through any rebalances, until
        a reading finds it recovered or not owned."""
        now = self.clock()
        for key in [k for k in self.unrecovered if k[0] == stage and k[1] not in partitions]:
            del self.unrecovered[key]
        for partition in partitions:
            self.unrecovered.setdefault((stage, partition), now)

    def unrecovered_seconds(self, stage: str) -> dict[int, float]:
        """Per owned input partition not recovered yet: for how long."""
        now = self.clock()
        return {partition: now - since for (s, partition), since in sorted(self.unrecovered.items()) if s == stage}

    def not_recovered(self) -> dict[str, list[int]]:
        """Per stage, the owned partitions not recovered for `stalled_after` seconds or more."""
        return {stage: [p for p, seconds in self.unrecovered_seconds(stage).items() if seconds >= self.stalled_after]
                for stage in STAGES}

    def _waiting_without_progress(self) -> dict[str, list[int]]:
        """Per stage, the partitions with records waiting and no progress (judged on the clock now)."""
        now = self.clock()
        out: dict[str, list[int]] = {stage: [] for stage in STAGES}
        for (stage, partition), seen in sorted(self.partitions.items()):
            if self._judge(stage, partition, seen, now):
                out[stage].append(partition)
        return out

    def stalled(self) -> dict[str, list[int]]:
        """Per stage, the partitions with records waiting and no progress, and those not recovered."""
        waiting, not_recovered = self._waiting_without_progress(), self.not_recovered()
        return {stage: sorted(set(waiting[stage]) | set(not_recovered[stage])) for stage in STAGES}

    def problems(self) -> list[str]:
        """What /healthz reports; empty when healthy. A partition both waiting and not recovered is
        named once, as not recovered."""
        waiting, not_recovered = self._waiting_without_progress(), self.not_recovered()
        out = [f"{stage} stage: no progress for {self.stalled_after:.0f} s or more on input partition(s) "
               f"{', '.join(map(str, partitions))} with records waiting"
               for stage in STAGES if (partitions := [p for p in waiting[stage] if p not in not_recovered[stage]])]
        out += [f"{stage} stage: input partition(s) {', '.join(map(str, partitions))} assigned here "
                f"{self.stalled_after:.0f} s ago or more and not recovered yet: their queues are not exported"
                for stage, partitions in not_recovered.items() if partitions]
        if self.lost_detail:
            out.append(self.lost_detail)
        if self.unanswered_seconds() >= self.stalled_after:
            out.append(f"the broker has not answered for {self.unanswered_seconds():.0f} s: the numbers are not live")
        return out


class ProgressCollector(Collector):
    def __init__(self, watch: ProgressWatch):
        self.watch = watch

    def collect(self):
        stalled = GaugeMetricFamily(
            "callcenter_pipeline_stalled_partitions",
            f"Input partitions of the stage this worker owns with records waiting and no progress for "
            f"{self.watch.stalled_after:.0f} s or more, or owned that long without a completed recovery "
            f"(0 when healthy).", labels=["stage"])
        for stage, partitions in self.watch.stalled().items():
            stalled.add_metric([stage], len(partitions))
        yield stalled
        lost = CounterMetricFamily(
            "callcenter_broker_data_lost",
            "Times an input partition's end offset went backwards (the broker lost records, e.g. an "
            "embedded broker restarted): numbers built before are not backed by the log any more.", labels=["stage"])
        for stage, n in self.watch.data_lost.items():
            lost.add_metric([stage], n)
        yield lost
        yield GaugeMetricFamily(
            "callcenter_broker_unanswered_seconds",
            "Seconds since the broker stopped answering this worker's probe (every 5 s: topic list and "
            "end offsets); 0 while it answers.", value=self.watch.unanswered_seconds())
