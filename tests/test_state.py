"""QueueStates: batch records and snapshots rebuild the same state; redeliveries are skipped."""

from __future__ import annotations

import orjson

from callpulse.config import load_config
from callpulse.pipeline.state import QueueStates, StreamClock
from helpers import call, epoch, event

T0 = epoch("2026-11-23T09:00:00Z")


class FakeWall:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_states(wall: FakeWall, **env) -> QueueStates:
    config = load_config(None, {"CALLPULSE_DATA_DIR": "/tmp", **env})
    return QueueStates(config, StreamClock(wall), wall)


def batches(n_calls: int, queue: str = "sales") -> list[list[bytes]]:
    """Calls in groups of five per batch."""
    out = []
    for start in range(0, n_calls, 5):
        evs = []
        for j in range(start, min(start + 5, n_calls)):
            evs += call(queue, f"{queue}-{j}", T0 + j * 10, "answered" if j % 3 else "abandoned", T0 + j * 10 + j % 30)
        out.append([orjson.dumps(e) for e in evs])
    return out


def run(states: QueueStates, table: dict, queue: str, partition: int, items: list[list[bytes]], first_offset: int = 0):
    for offset, raws in enumerate(items, first_offset):
        result = states.apply_batch(queue, partition, offset, raws)
        if result is None:
            continue
        for key, value in states.changelog_writes(result):
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value


def test_rebuild_from_batch_records_and_snapshots_gives_the_same_view():
    wall = FakeWall(T0 + 2000)
    live, table = make_states(wall, CALLPULSE_DEDUP_SECONDS="5000"), {}
    items = batches(120)
    for i in range(0, len(items), 3):  # a snapshot is due every 30 s of wall time
        run(live, table, "sales", 2, items[i:i + 3], first_offset=i)
        wall.t += 20
    assert any(k.endswith(b"\x00s") for k in table), "a snapshot was written"
    assert len([k for k in table if b"\x00b" in k]) < len(items), "covered batch records were deleted"
    recovered = make_states(wall, CALLPULSE_DEDUP_SECONDS="5000")
    assert recovered.resume({2}, table.items()) == ["sales"]
    now = T0 + 700
    assert _plain(recovered.models["sales"].read(now)) == _plain(live.models["sales"].read(now))
    # the recovered worker skips a redelivered batch and deduplicates a re-routed one
    assert recovered.apply_batch("sales", 2, len(items) - 1, items[-1]) is None
    again = recovered.apply_batch("sales", 2, len(items), items[-1])
    assert again.outcomes == {"duplicate": len(items[-1])}


def test_resume_keeps_owned_models_and_forgets_lost_partitions():
    wall = FakeWall(T0 + 1000)
    states, table = make_states(wall), {}
    run(states, table, "sales", 1, batches(10, "sales"))
    run(states, table, "support", 3, batches(10, "support"))
    kept = states.models["sales"]
    states.park()
    assert states.models == {}  # nothing exported during the rebalance
    assert states.resume({1}, table.items()) == []  # sales kept in memory, support's partition lost
    assert states.models == {"sales": kept}
    assert states.resume({1, 3}, table.items()) == ["support"]  # support's partition came back


def test_only_queues_of_partitions_whose_recovery_completed_are_exported_or_publish_intervals():
    """Between resume() and the end of the recovery check a rebuilt model may lack the changelog's
    tail: exported, its counters would go back for a scrape; its preliminary interval records
    would land after the final ones the previous owner sent."""
    wall = FakeWall(T0 + 1000)
    states, table = make_states(wall), {}
    run(states, table, "sales", 1, batches(10, "sales"))
    run(states, table, "support", 3, batches(10, "support"))
    wall.t = T0 + 7200  # both queues quiet for long: their last intervals are due as preliminary records
    states.ready = {1}
    assert sorted(states.read_all()[1]) == ["sales"]
    assert {r["queue"] for r in states.due_interval_records()} == {"sales"}
    states.ready.add(3)  # the recovery of partition 3 completed
    assert sorted(states.read_all()[1]) == ["sales", "support"]
    assert {r["queue"] for r in states.due_interval_records()} == {"support"}  # sales' were sent already


def test_a_model_made_while_the_assignment_changed_is_rebuilt_not_kept():
    """A batch of a partition this worker did not own before, applied between revocation and
    resume (a rebalance storm), must not leave a model holding that batch alone: on resume the
    queue is rebuilt from the table, history included."""
    wall = FakeWall(T0 + 1000)
    owner, table = make_states(wall), {}
    items = batches(20, "support")
    run(owner, table, "support", 3, items[:3])  # the previous owner applied three batches
    states = make_states(wall)
    states.resume({1}, table.items())  # this worker owns partition 1 only
    states.park()  # a rebalance starts ...
    run(states, table, "support", 3, items[3:4], first_offset=3)  # ... and a batch of partition 3 slips in
    assert states.resume({1, 3}, table.items()) == ["support"]
    full = make_states(wall)
    run(full, {}, "support", 3, items[:4])
    assert _plain(states.models["support"].read(T0 + 500)) == _plain(full.models["support"].read(T0 + 500))


def test_a_partition_given_away_by_an_assignment_never_resumed_here_is_rebuilt_not_kept():
    """Rebalance A gives partition 3 to another worker, which applies batches; before this worker's
    recovery of A completes, rebalance B gives partition 3 back. The model from before A must not be
    kept: it lacks what the other worker applied (Faust can overtake a recovery like that)."""
    wall = FakeWall(T0 + 1000)
    items = batches(20, "support")
    states, table = make_states(wall), {}
    states.resume({3}, [])
    run(states, table, "support", 3, items[:3])
    states.park()  # rebalance A
    states.assigned({1})  # ... gives partition 3 away; its recovery here is overtaken
    other = make_states(wall)
    other.resume({3}, table.items())
    run(other, table, "support", 3, items[3:6], first_offset=3)  # the other worker applies three more
    states.park()  # rebalance B
    states.assigned({1, 3})
    assert states.resume({1, 3}, table.items()) == ["support"]
    full = make_states(wall)
    run(full, {}, "support", 3, items[:6])
    assert _plain(states.models["support"].read(T0 + 500)) == _plain(full.models["support"].read(T0 + 500))


def test_stream_clock_follows_event_time_and_runs_with_the_wall():
    wall = FakeWall(1000.0)
    clock = StreamClock(wall)
    assert clock.now() == 1000.0  # no events yet: the wall clock
    clock.observe(500.0)  # replaying history: the clock jumps back to event time
    wall.t += 10
    assert clock.now() == 510.0
    clock.observe(505.0)  # older than the clock: no effect
    assert clock.now() == 510.0
    clock.observe(600.0)
    assert clock.now() == 600.0


def _plain(view: dict) -> dict:
    return {k: v for k, v in view.items() if not k.endswith("histogram")}


def test_agent_event_and_unmatched_outcome_in_a_batch():
    wall = FakeWall(T0 + 1000)
    states = make_states(wall)
    raws = [orjson.dumps(e) for e in [
        event("call.answered", T0, queue="sales", call_id="ghost", agent_id="a1"),
        event("call.offered", T0 + 100, queue="sales", call_id="c1"),
    ]]
    result = states.apply_batch("sales", 0, 0, raws)
    assert [r.reason for r in result.rejected] == ["unmatched_outcome"]
    assert result.rejected[0].raw == raws[0]  # the original bytes go to the dead letters


def test_a_busy_queue_is_snapshotted_by_event_count_too(monkeypatch):
    import callpulse.pipeline.state as state_module

    monkeypatch.setattr(state_module, "SNAPSHOT_EVERY_EVENTS", 20)
    wall = FakeWall(T0 + 2000)  # the wall clock never moves: only the event count can trigger
    states, table = make_states(wall), {}
    run(states, table, "sales", 0, batches(40))  # 8 batches of 10 events
    assert any(k.endswith(b"\x00s") for k in table)
    assert len([k for k in table if b"\x00b" in k]) < 8
    recovered = make_states(wall)
    recovered.resume({0}, table.items())
    assert _plain(recovered.models["sales"].read(T0 + 500)) == _plain(states.models["sales"].read(T0 + 500))


def test_obsolete_batch_records_are_deleted_a_few_per_batch(monkeypatch):
    import callpulse.pipeline.state as state_module

    monkeypatch.setattr(state_module, "DELETIONS_PER_BATCH", 2)
    wall = FakeWall(T0 + 2000)
    states, table = make_states(wall), {}
    deletions_per_batch = []
    for offset, raws in enumerate(batches(200)):  # 40 batches; a snapshot every 10 of them
        if offset and offset % 10 == 0:
            wall.t += 31
        writes = list(states.changelog_writes(states.apply_batch("sales", 0, offset, raws)))
        deletions_per_batch.append(sum(1 for _, value in writes if value is None))
        for key, value in writes:
            if value is None:
                table.pop(key)  # raises if a record were deleted twice or never written
            else:
                table[key] = value
    assert max(deletions_per_batch) == 2  # never a burst
    # snapshots after batches 10, 20 and 30; the one after 30 made the records up to 20 (what the
    # previous snapshot covered) obsolete, and 9 batches since deleted them all
    kept = sorted(int(k[-16:]) for k in table if b"\x00b" in k)
    assert kept == list(range(21, 40))
    recovered = make_states(wall)
    recovered.resume({0}, table.items())
    assert _plain(recovered.models["sales"].read(T0 + 2500)) == _plain(states.models["sales"].read(T0 + 2500))


def test_a_recovery_that_missed_the_newest_records_is_detected_and_rebuilt_again():
    """What `complete_recovery` relies on: the newest batch offset of a partition tells whether
    the table holds the last acknowledged batch, and a fuller set of records replaces the queues."""
    from callpulse.pipeline.state import record_offset

    wall = FakeWall(T0 + 1000)
    live, table = make_states(wall), {}
    run(live, table, "sales", 1, batches(30, "sales"))  # batch offsets 0-5
    run(live, table, "support", 1, batches(30, "support"), first_offset=6)  # 6-11, same partition
    newest_key = max(table, key=lambda k: record_offset(k, table[k]))
    assert record_offset(newest_key, table[newest_key]) == 11
    missed = {k: v for k, v in table.items() if k != newest_key}  # the tail a bad end offset leaves out

    recovered = make_states(wall)
    assert recovered.resume({1}, missed.items()) == ["sales", "support"]
    assert recovered.newest_batch(1) == 10  # short of batch 11, the last acknowledged: detected
    assert recovered.newest_batch(2) == -1  # nothing on a partition without queues
    assert recovered.rebuild_partition(1, table.items()) == ["sales", "support"]
    assert recovered.newest_batch(1) == 11
    now = T0 + 700
    for queue in ("sales", "support"):
        assert _plain(recovered.models[queue].read(now)) == _plain(live.models[queue].read(now))


def test_record_offset_of_a_snapshot_is_the_batch_it_covers():
    from callpulse.pipeline.state import record_offset

    wall = FakeWall(T0 + 1000)
    states, table = make_states(wall), {}
    run(states, table, "sales", 0, batches(20)[:2])
    wall.t += 31  # a snapshot is due with the next batch
    run(states, table, "sales", 0, batches(20)[2:3], first_offset=2)
    snapshot = next(k for k in table if k.endswith(b"\x00s"))
    assert record_offset(snapshot, table[snapshot]) == 2
