"""ProgressWatch: when a stage counts as stalled, and when the broker lost data."""

from prometheus_client import CollectorRegistry, generate_latest

from callpulse.pipeline.progress import ProgressCollector, ProgressWatch


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_records_waiting_without_progress_for_30_s_is_stalled_and_progress_clears_it():
    clock = Clock()
    watch = ProgressWatch(stalled_after=30.0, clock=clock)
    watch.observe("aggregate", 2, 964, 1998)
    clock.now = 29.9
    watch.observe("aggregate", 2, 964, 2010)  # more records arrive, the position stays
    assert watch.stalled() == {"route": [], "aggregate": []}
    clock.now = 30.0
    watch.observe("aggregate", 2, 964, 2020)
    assert watch.stalled() == {"route": [], "aggregate": [2]}
    assert watch.problems() == ["aggregate stage: no progress for 30 s or more on input partition(s) 2 with records waiting"]
    clock.now = 31.0
    watch.observe("aggregate", 2, 965, 2020)  # one record further
    assert watch.stalled()["aggregate"] == [] and watch.problems() == []


def test_a_caught_up_partition_is_never_stalled_however_long_it_is_quiet():
    clock = Clock()
    watch = ProgressWatch(stalled_after=30.0, clock=clock)
    for t in range(0, 600, 10):
        clock.now = float(t)
        watch.observe("route", 0, 500, 500)
    assert watch.stalled()["route"] == []
    # records arrive after a quiet hour: the 30 s count from when they are waiting, not from the last move
    clock.now = 600.0
    watch.observe("route", 0, 500, 510)
    clock.now = 629.0
    watch.observe("route", 0, 500, 510)
    assert watch.stalled()["route"] == []


def test_partitions_no_longer_owned_are_forgotten():
    clock = Clock()
    watch = ProgressWatch(stalled_after=30.0, clock=clock)
    watch.observe("route", 0, 1, 9)
    watch.observe("route", 1, 1, 9)
    clock.now = 40.0
    watch.observe("route", 0, 1, 9)
    watch.observe("route", 1, 1, 9)
    watch.retain("route", {1})
    assert watch.stalled()["route"] == [1]


def test_end_offset_going_back_is_data_lost_and_is_exported():
    clock = Clock()
    watch = ProgressWatch(clock=clock)
    watch.observe("route", 3, 1200, 1200)
    watch.observe("route", 3, 1200, 40)  # a broker without storage restarted
    assert watch.data_lost == {"route": 0, "aggregate": 0}  # not yet: it may be a leader change
    clock.now = 9.0
    watch.observe("route", 3, 1200, 45)
    assert watch.data_lost == {"route": 0, "aggregate": 0}
    clock.now = 10.0
    watch.observe("route", 3, 1200, 46)
    assert watch.data_lost == {"route": 1, "aggregate": 0}
    assert watch.problems() == [("route: the end offset of input partition 3 went back from 1200 to 46: the broker lost "
                                 "records; numbers built from them are not in the log any more")]
    registry = CollectorRegistry()
    registry.register(ProgressCollector(watch))
    text = generate_latest(registry).decode()
    assert 'callcenter_broker_data_lost_total{stage="route"} 1.0' in text
    assert 'callcenter_pipeline_stalled_partitions{stage="aggregate"} 0.0' in text


def test_a_new_leaders_lagging_end_offset_is_not_data_lost():
    # After a leader change in a Kafka cluster the new leader's high watermark can lag the old one's
    # for a moment: the end offset read goes back and comes back. Not a loss: no page.
    clock = Clock()
    watch = ProgressWatch(clock=clock)
    watch.observe("aggregate", 0, 500, 500)
    watch.probed("aggregate", 0, 500)
    clock.now = 1.0
    watch.observe("aggregate", 0, 480, 480)
    watch.probed("aggregate", 0, 480)
    clock.now = 6.0
    watch.observe("aggregate", 0, 500, 505)
    watch.probed("aggregate", 0, 505)
    clock.now = 60.0
    watch.observe("aggregate", 0, 505, 505)
    watch.probed("aggregate", 0, 505)
    assert watch.data_lost == {"route": 0, "aggregate": 0} and watch.problems() == []


def test_a_stage_that_stops_reporting_is_stalled_by_the_clock_and_the_probe():
    # A stage stuck inside a call does not observe itself: the probe's end offsets and the clock
    # must still make it stalled.
    clock = Clock()
    watch = ProgressWatch(stalled_after=30.0, clock=clock)
    watch.observe("route", 1, 700, 700)  # its last own report: caught up
    clock.now = 100.0
    watch.probed("route", 1, 760)  # records arrive; the stage never reports again
    clock.now = 129.0
    assert watch.stalled()["route"] == []
    clock.now = 130.0
    assert watch.stalled()["route"] == [1]
    assert watch.problems() == ["route stage: no progress for 30 s or more on input partition(s) 1 with records waiting"]
    # a partition the stage does not own is not the probe's to add
    watch.probed("route", 5, 999)
    assert watch.stalled()["route"] == [1]


def test_a_held_partition_whose_consumer_sees_no_new_records_is_stalled_by_the_probe():
    # A paused partition is not fetched: its consumer's end offset stays where it was when it was
    # caught up, and every reading of the stage says "caught up". The probe's end offsets say otherwise.
    clock = Clock()
    watch = ProgressWatch(stalled_after=30.0, clock=clock)
    for t in range(0, 121):
        clock.now = float(t)
        watch.observe("route", 0, 700, 700)  # the stage's own (stale) view
        if t % 5 == 0:
            watch.probed("route", 0, 700 + 10 * t)
    assert watch.stalled()["route"] == [0]


def test_one_loss_seen_by_the_stage_and_the_probe_counts_once():
    clock = Clock()
    watch = ProgressWatch(clock=clock)
    watch.observe("route", 2, 900, 900)
    watch.probed("route", 2, 900)
    for t in (1.0, 6.0, 11.0, 16.0):
        clock.now = t
        watch.observe("route", 2, 0, 40 + int(t))
        watch.probed("route", 2, 41 + int(t))
    assert watch.data_lost == {"route": 1, "aggregate": 0}


def test_a_partition_owned_without_a_completed_recovery_is_reported_after_30_s_through_rebalances():
    clock = Clock()
    watch = ProgressWatch(stalled_after=30.0, clock=clock)
    watch.recovering("aggregate", {0, 1})
    clock.now = 20.0
    watch.recovering("aggregate", {1, 3})  # a rebalance: 0 went, 3 came, 1 stayed unrecovered
    assert watch.problems() == [] and watch.unrecovered_seconds("aggregate") == {1: 20.0, 3: 0.0}
    clock.now = 30.0
    assert watch.stalled() == {"route": [], "aggregate": [1]}
    assert watch.problems() == ["aggregate stage: input partition(s) 1 assigned here 30 s ago or more and not "
                                "recovered yet: their queues are not exported"]
    registry = CollectorRegistry()
    registry.register(ProgressCollector(watch))
    assert 'callcenter_pipeline_stalled_partitions{stage="aggregate"} 1.0' in generate_latest(registry).decode()
    watch.recovering("aggregate", {3})  # 1 recovered
    clock.now = 60.0
    assert watch.stalled()["aggregate"] == [3]
    watch.recovering("aggregate", set())
    assert watch.problems() == [] and watch.unrecovered_seconds("aggregate") == {}


def test_a_partition_both_stalled_and_unrecovered_is_counted_once_and_named_once():
    clock = Clock()
    watch = ProgressWatch(stalled_after=30.0, clock=clock)
    watch.observe("aggregate", 2, 100, 200)  # applied up to 100 while owned before
    watch.recovering("aggregate", {2})  # owned again, its recovery not complete
    clock.now = 31.0
    watch.observe("aggregate", 2, 100, 250)
    assert watch.stalled()["aggregate"] == [2]
    assert [p for p in watch.problems() if "no progress" in p] == []
    assert len(watch.problems()) == 1 and "not recovered yet" in watch.problems()[0]
