"""Event-time alignment of the first stage's input partitions (align.py), without a broker."""

import math

from callpulse.events import Valid
from callpulse.pipeline.align import EventTimeAligner, SharedProgress, encode_report


def events(times: list[float], first_offset: int = 0) -> list[Valid]:
    return [Valid(t, first_offset + i, b"e%d" % (first_offset + i), ("q",), "call.offered") for i, t in enumerate(times)]


def test_low_marks():
    a = EventTimeAligner(max_ahead=30)
    a.add(0, events([1000, 1010]))
    a.add(1, events([2000, 1500]))
    a.release(horizon=1000)  # passes 1000 and 1010
    marks = a.low_marks({0: (2, 50), 1: (2, 2), 2: (5, 5), 3: (None, None), 4: (0, 10)})
    assert marks[0] == 1010  # unread records: about as new as the newest read
    assert marks[1] == 1500  # caught up, but holds events from 1500 on
    assert marks[2] == math.inf  # caught up, nothing held
    assert marks[3] == -math.inf  # not fetched yet
    assert marks[4] == -math.inf  # unread records, none read yet


def test_release_passes_events_up_to_max_ahead_past_the_horizon_and_holds_the_rest():
    a = EventTimeAligner(max_ahead=30)
    a.add(0, events([1000, 1005]))
    a.add(1, events([1020, 1040, 1025, 1060], first_offset=100))  # out of order within the partition
    released = a.release(horizon=1005)
    assert sorted(e.time for e in released) == [1000, 1005, 1020, 1025]
    assert [e.time for e in a.held[1]] == [1040, 1060]
    # commits stop at the first held event; a partition with nothing held commits its position
    assert a.commit_offsets({0: 2, 1: 104}) == {0: 2, 1: 101}
    assert sorted(e.time for e in a.release(horizon=math.inf)) == [1040, 1060]
    assert a.commit_offsets({0: 2, 1: 104}) == {0: 2, 1: 104}


def test_nothing_passes_while_a_partition_is_unknown():
    a = EventTimeAligner(max_ahead=30)
    a.add(0, events([1000]))
    assert a.release(horizon=-math.inf) == []


def test_partitions_far_ahead_are_paused_and_resume_within_half_the_distance():
    a = EventTimeAligner(max_ahead=30)
    a.add(0, events([1000]))
    a.add(1, events([1031]))
    a.add(2, events([1030]))
    assert a.to_hold(horizon=1000, paused=set()) == {1}
    assert a.to_hold(horizon=1010, paused={1}) == {1}  # 21 s ahead: more than 15
    assert a.to_hold(horizon=1016, paused={1}) == set()  # 15 s: resumes
    assert a.to_hold(horizon=-math.inf, paused=set()) == {0, 1, 2}  # let the unknown partition be read
    assert a.to_hold(horizon=math.inf, paused={0, 1, 2}) == set()


def test_the_partition_at_the_horizon_is_never_paused():
    a = EventTimeAligner(max_ahead=30)
    a.add(0, events([1000]))
    a.add(1, events([5000]))
    progress = {0: (1, 10), 1: (1, 10)}
    horizon = min(a.low_marks(progress).values())
    assert horizon == 1000 and 0 not in a.to_hold(horizon, paused={0, 1})


def test_revoked_partitions_are_forgotten_with_their_held_events():
    a = EventTimeAligner(max_ahead=30)
    a.add(0, events([1000]))
    a.add(1, events([2000]))
    a.forget([1])
    assert set(a.held) == {0} and set(a.newest) == {0}


def test_other_workers_partitions_count_by_their_owners_latest_fresh_report():
    shared = SharedProgress(ttl=5)
    shared.update(b"2", encode_report(900.0, at=100.0))
    shared.update(b"3", encode_report(math.inf, at=100.0))
    shared.update(b"4", encode_report(-math.inf, at=100.0))
    assert shared.low_mark(2, now=104, not_before=99) == 900.0
    assert shared.low_mark(3, now=104, not_before=99) == math.inf
    assert shared.low_mark(4, now=104, not_before=99) == -math.inf
    assert shared.low_mark(7, now=104, not_before=99) == -math.inf  # never reported
    assert shared.low_mark(2, now=106, not_before=99) == -math.inf  # its owner stopped reporting
    assert shared.low_mark(3, now=104, not_before=101) == -math.inf  # sent before our last rebalance: maybe by a previous owner
    shared.update(b"2", encode_report(1100.0, at=105.0))
    assert shared.low_mark(2, now=106, not_before=99) == 1100.0
