"""The pipeline's stages without a broker: the first stage's routing function with its outbound
topics mocked, and the Faust aggregate agent driven through `agent.test_context()`."""

from __future__ import annotations

import asyncio
import math
import time
from unittest.mock import AsyncMock

import orjson
import pytest
from faust.types import TP

from callpulse import events as ev
from callpulse.config import load_config
from callpulse.pipeline.app import create_app
from helpers import call, event


def delivery(error: Exception | None = None) -> asyncio.Future:
    """A producer's delivery future, resolved as a broker would: acknowledged, or failed."""
    future = asyncio.get_running_loop().create_future()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
    return future


@pytest.fixture
def pipeline(tmp_path):
    p = create_app(load_config(None, {"CALLPULSE_DATA_DIR": str(tmp_path)}))
    p.app.conf.store = "memory://"
    p.app.finalize()
    p.app.flow_control.resume()  # without it put() waits forever
    # no broker: every write is delivered at once
    p.batches_topic.send = AsyncMock(side_effect=lambda **kwargs: delivery())
    p.dead_letter_topic.send = AsyncMock(side_effect=lambda **kwargs: delivery())
    p.state_table.send_changelog = lambda partition, key, value: delivery()
    p.app.producer.flush = AsyncMock()
    p.accepting.add(0)  # as if recovery of batches partition 0 had completed,
    p.next_offset[0] = 0  # with nothing acknowledged before
    return p


def queue_batches(pipeline) -> list:
    """The batch messages the first stage sent to queues (not to agents: events.agent_key)."""
    return [c for c in pipeline.batches_topic.send.await_args_list if not c.kwargs["key"].startswith(b"\xff")]


async def test_route_validates_and_packs_per_queue(pipeline):
    now = time.time()
    good = call("sales", "c1", now - 20, "answered", now - 12) + [
        event("agent.state_changed", now - 5, agent_id="a1", queues=["sales", "support"], state="available")]
    # read from two input partitions, the answer's partition first; both are caught up
    fetched = {"p0": [(7, orjson.dumps(good[1])), (8, orjson.dumps(good[2]))], "p1": [(3, orjson.dumps(good[0])), (4, b"{broken")]}
    await pipeline.take(fetched)
    horizon, _ = await pipeline.send_ready({"p0": (9, 9), "p1": (5, 5)}, others=[])  # every partition caught up
    sent = {c.kwargs["key"]: list(ev.unpack(c.kwargs["value"])) for c in pipeline.batches_topic.send.await_args_list}
    # every event of a queue arrives in that queue's batch, in event-time order; the agent event goes to both queues
    sales = [orjson.loads(r) for b in [sent[b"sales"]] for r in b]
    assert [e["type"] for e in sales] == ["call.offered", "call.answered", "agent.state_changed"]
    assert [orjson.loads(r)["type"] for r in sent[b"support"]] == ["agent.state_changed"]
    # and every event naming an agent goes to the agent's own key as well, in event-time order
    assert [orjson.loads(r)["type"] for r in sent[ev.key_bytes(ev.agent_key("a1"))]] == ["call.answered", "agent.state_changed"]
    assert len(sent) == 3
    letter = orjson.loads(pipeline.dead_letter_topic.send.await_args.kwargs["value"])
    assert (letter["reason"], letter["original"]) == ("malformed_json", "{broken")
    assert pipeline.health.events["call.offered"] == 1
    assert pipeline.health.rejected["malformed_json"] == 1
    assert horizon == math.inf and pipeline.aligner.commit_offsets({"p0": 9, "p1": 5}) == {"p0": 9, "p1": 5}


async def test_route_holds_back_a_partition_ahead_of_one_with_unread_records(pipeline):
    now = time.time()
    assert pipeline.config.stream.lateness_seconds == 60  # partitions may be 30 s apart
    early = call("sales", "c1", now - 300, "answered", now - 290)
    later = call("sales", "c2", now - 250, "answered", now - 240)
    fetched = {"p0": [(0, orjson.dumps(early[0]))], "p1": [(10, orjson.dumps(later[0])), (11, orjson.dumps(later[1]))]}
    # p0 has more to read (position 1 < highwater 5), so p1's events 50 s ahead of it wait
    await pipeline.take(fetched)
    horizon, _ = await pipeline.send_ready({"p0": (1, 5), "p1": (12, 12)}, others=[])
    offsets = pipeline.aligner.commit_offsets({"p0": 1, "p1": 12})
    sent = [orjson.loads(r)["call_id"] for c in queue_batches(pipeline) for r in ev.unpack(c.kwargs["value"])]
    assert sent == ["c1"] and horizon == pytest.approx(now - 300, abs=0.001)
    assert offsets == {"p0": 1, "p1": 10}  # p1 is committed only up to its first held event
    assert pipeline.aligner.to_hold(horizon, paused=set()) == {"p1"}
    # p0 catches up: everything is released in event-time order
    pipeline.batches_topic.send.reset_mock()
    await pipeline.take({"p0": [(1, orjson.dumps(early[1]))]})
    await pipeline.send_ready({"p0": (2, 2), "p1": (12, 12)}, others=[])
    offsets = pipeline.aligner.commit_offsets({"p0": 2, "p1": 12})
    sent = [orjson.loads(r)["type"] for c in queue_batches(pipeline) for r in ev.unpack(c.kwargs["value"])]
    assert sent == ["call.answered", "call.offered", "call.answered"]
    assert offsets == {"p0": 2, "p1": 12}


async def test_the_fetch_wait_patch_still_applies():
    """Faust hard-codes fetch_max_wait_ms=1500; app.py patches the consumer factory (see there)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from callpulse.pipeline.app import FETCH_MAX_WAIT_MS

    assert getattr(AIOKafkaConsumerThread._create_worker_consumer, "callpulse_patched", False)
    import aiokafka

    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="localhost:1")
    assert hasattr(consumer, "_fetch_max_wait_ms")  # the attribute the patch sets still exists
    assert FETCH_MAX_WAIT_MS <= 100


async def test_a_stream_partition_with_nothing_committed_is_sought_to_its_beginning(pipeline):
    """Faust skips what was fetched between resuming the partitions and its seek to the committed
    offsets, and aiokafka does not seek a partition with none committed: app.py seeks such a
    partition of a stream topic to its beginning (see there). Without it the chaos run lost the
    first 50 batch messages of a partition. Changelog partitions (not acknowledged) are left alone."""
    from aiokafka import TopicPartition
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    batches, changelog = pipeline.batches_topic.get_topic_name(), pipeline.state_table.changelog_topic.get_topic_name()
    committed = {TopicPartition(batches, 0): None, TopicPartition(batches, 1): 7, TopicPartition(batches, 2): 0,
                 TopicPartition(changelog, 0): None}
    sought = []

    class Consumer:  # the aiokafka consumer, as far as the seek uses it
        async def seek_to_committed(self):
            return committed

        async def seek_to_beginning(self, *partitions):
            sought.extend(partitions)

    async def call_thread(method, *args):
        return await method(*args)

    pipeline.app.topics.add(pipeline.batches_topic)  # what the worker's agent subscribes to
    await pipeline.app.topics._update_indices()
    assert pipeline.app.topics.acks_enabled_for(batches) and not pipeline.app.topics.acks_enabled_for(changelog)
    thread = pipeline.app.consumer._thread
    thread._ensure_consumer, thread.call_thread = Consumer, call_thread
    assert await AIOKafkaConsumerThread.seek_to_committed(thread) == committed
    assert sorted(tp.partition for tp in sought) == [0, 2] and {tp.topic for tp in sought} == {batches}


async def test_aggregate_applies_batches_writes_the_table_and_skips_redeliveries(pipeline):
    now = time.time()
    batch = ev.pack(orjson.dumps(e) for e in call("sales", "c1", now - 20, "answered", now - 12))
    pipeline.next_offset[0] = 5  # acknowledged up to 4 before
    async with pipeline.aggregate.test_context() as agent:
        agent.sent_offset = 5  # the test wrapper numbers the messages it puts from here
        await agent.put(batch, key=b"sales", partition=0)
        agent.sent_offset = 5
        await agent.put(batch, key=b"sales", partition=0)  # the same message again (a redelivery)
    view = pipeline.states.models["sales"].read(now)
    assert (view["totals"]["offered"], view["totals"]["answered"]) == (1, 1)
    assert view["totals"]["answered_within:10"] == 1
    assert b"sales\x00b0000000000000005" in pipeline.state_table.data  # the batch record, keyed by its offset
    assert pipeline.health.duplicates == 0  # skipped by offset before any event was looked at


async def test_aggregate_acknowledges_batches_only_after_flushing_their_changelog_writes(pipeline, monkeypatch):
    import faust

    order = []
    pipeline.app.producer.flush = AsyncMock(side_effect=lambda: order.append("flush"))
    ack = faust.Stream.ack

    async def recording_ack(self, event):
        order.append(("ack", event.message.offset))
        return await ack(self, event)

    monkeypatch.setattr(faust.Stream, "ack", recording_ack)
    now = time.time()
    async with pipeline.aggregate.test_context() as agent:
        for n in range(3):
            await agent.put(ev.pack(orjson.dumps(e) for e in call("sales", f"c{n}", now - 20, "answered", now - 12)), key=b"sales", partition=0)
    # nothing else was waiting after each message, so each was flushed and acknowledged at once
    assert order == ["flush", ("ack", 0), "flush", ("ack", 1), "flush", ("ack", 2)]


async def test_a_stalled_second_stage_is_logged_once_with_what_its_agent_is_doing(pipeline, monkeypatch, caplog):
    """The broker probe can judge a partition stalled between two progress checks: the
    diagnostics are logged once for each newly stalled partition, whoever judged it first."""
    batches_tp = TP(pipeline.batches_topic.get_topic_name(), 0)
    monkeypatch.setattr(pipeline.app.consumer, "assignment", lambda: {batches_tp})
    monkeypatch.setattr(pipeline.app.consumer, "highwater", lambda tp: 9)
    monkeypatch.setattr(pipeline.watch, "stalled", lambda: {"route": [], "aggregate": [0]})
    with caplog.at_level("ERROR", logger="callpulse"):
        await pipeline.check_aggregate_progress()
        await pipeline.check_aggregate_progress()
    logged = [r.getMessage() for r in caplog.records if "second stage stalled" in r.getMessage()]
    assert len(logged) == 1 and "on partition(s) [0]: agent not started" in logged[0], logged


async def test_a_worker_whose_idle_agent_gets_no_message_of_a_stalled_partition_for_a_minute_stops(
        pipeline, monkeypatch, caplog):
    """Seen twice in 60-kill chaos runs: after a rebalance during recovery, no batch message of a
    partition reached the idle agent although the broker had more, and the worker stayed frozen.
    After FETCH_FROZEN_SECONDS of that (outside a rebalance, the broker answering, the partition
    recovered) the worker stops, naming the partitions and what Faust and aiokafka held, so that
    the partition is read again from its committed offset. Not within the minute (the agent notes
    every message it gets of each partition, applied or dropped), nor while the agent is busy, nor
    during a broker outage, nor for a partition whose recovery is not complete."""
    import callpulse.pipeline.app
    from callpulse.pipeline.app import AGENT_IDLE

    crash = pipeline.app.crash = AsyncMock()
    clock = [1000.0]
    monkeypatch.setattr(callpulse.pipeline.app.time, "monotonic", lambda: clock[0])
    batches_tp = TP(pipeline.batches_topic.get_topic_name(), 0)
    other_tp = TP(pipeline.batches_topic.get_topic_name(), 1)
    consumer = pipeline.app.consumer
    monkeypatch.setattr(consumer, "assignment", lambda: {batches_tp, other_tp})
    monkeypatch.setattr(consumer, "highwater", lambda tp: 9)
    monkeypatch.setattr(pipeline.watch, "stalled", lambda: {"route": [], "aggregate": [0, 1]})
    pipeline.last_delivery[0] = clock[0]  # as resume_models sets it: partition 0 accepting from now on
    assert 1 not in pipeline.accepting  # partition 1's recovery is not complete: never judged
    pipeline.agent_step[0] = AGENT_IDLE
    clock[0] += 59
    await pipeline.check_aggregate_progress()
    assert not crash.called, "within the minute"
    clock[0] += 2
    pipeline.agent_step[0] = "waiting for 2 write(s) to reach the broker"
    await pipeline.check_aggregate_progress()
    assert not crash.called, "a busy agent is not idle for want of messages"
    pipeline.agent_step[0] = AGENT_IDLE
    pipeline.watch.unanswered_since = clock[0] - 10
    await pipeline.check_aggregate_progress()
    assert not crash.called, "the broker does not answer: an outage, reported as such"
    pipeline.watch.unanswered_since = None
    with caplog.at_level("CRITICAL", logger="callpulse"):
        await pipeline.check_aggregate_progress()
    assert crash.call_count == 1
    stopped = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert len(stopped) == 1 and "no batch message of partition(s) [0] reached the agent for 60 s" in stopped[0]
    assert "p0: faust" in stopped[0] and "read offset" in stopped[0], stopped


async def test_aggregate_leaves_batches_of_partitions_still_recovering_alone(pipeline, monkeypatch):
    """A batch message of a partition whose recovery has not completed (or that was revoked) is
    neither applied nor acknowledged: the owner reads it again from the committed offset."""
    import faust

    acked = []
    ack = faust.Stream.ack

    async def recording_ack(self, event):
        acked.append((event.message.partition, event.message.offset))
        return await ack(self, event)

    monkeypatch.setattr(faust.Stream, "ack", recording_ack)
    monkeypatch.setattr(pipeline.app.consumer, "assignment", lambda: set())  # partition 1 was revoked
    pipeline.next_offset[0] = 1  # the test wrapper numbers messages across partitions: 0 goes to partition 1
    now = time.time()
    async with pipeline.aggregate.test_context() as agent:
        for partition, queue in ((1, "support"), (0, "sales")):
            await agent.put(ev.pack(orjson.dumps(e) for e in call(queue, "c1", now - 20, "answered", now - 12)),
                            key=queue.encode(), partition=partition)
    assert list(pipeline.states.models) == ["sales"] and acked == [(0, 1)]


async def test_aggregate_applies_a_partition_in_offset_order_and_stops_on_a_lasting_gap(pipeline, monkeypatch):
    """Messages from before the recovery's seek are skipped, behind the expected offset or ahead
    of it (the seek delivers them again, in order). If the expected one does not come within
    AHEAD_OF_SEEK_TIMEOUT_SECONDS, messages were lost on the way: the worker stops, and its
    successor reads the partition again from the committed offset. Applied out of order, a later
    batch would make the model skip the earlier one for good."""
    import callpulse.pipeline.app

    monkeypatch.setattr(callpulse.pipeline.app, "AHEAD_OF_SEEK_TIMEOUT_SECONDS", 0.5)
    crash = pipeline.app.crash = AsyncMock()
    now = time.time()

    def batch(n):
        return ev.pack(orjson.dumps(e) for e in call("sales", f"c{n}", now - 20, "answered", now - 12))

    async with pipeline.aggregate.test_context() as agent:
        agent.sent_offset = 0
        await agent.put(batch(0), key=b"sales", partition=0)  # offset 0
        await agent.put(batch(1), key=b"sales", partition=0)  # offset 1
        agent.sent_offset = 1
        await agent.put(batch(1), key=b"sales", partition=0)  # 1 again: skipped
        agent.sent_offset = 3
        await agent.put(batch(3), key=b"sales", partition=0)  # 3 before 2: left to be read again
        agent.sent_offset = 2
        await agent.put(batch(2), key=b"sales", partition=0)  # 2
        await agent.put(batch(3), key=b"sales", partition=0)  # 3 again, in order now
        assert crash.await_count == 0
        agent.sent_offset = 5
        await agent.put(batch(5), key=b"sales", partition=0)  # 5: 4 is missing
        await asyncio.sleep(0.6)
        agent.sent_offset = 6
        await agent.put(batch(6), key=b"sales", partition=0)  # 4 still missing
    assert crash.await_count == 1 and "batch message 4 of partition 0 did not arrive" in str(crash.await_args.args[0])
    assert pipeline.states.models["sales"].read(now)["totals"]["offered"] == 4


async def test_aggregate_starts_a_partition_where_its_recovery_says_not_at_the_first_message(pipeline):
    """The first batch message after a recovery may come from beyond the partition's start (the
    ones before it skipped while Faust resumed): it waits for the start, which the recovery took
    from the committed offset or the log's beginning. Taken as the start, it hid the ones before."""
    now = time.time()

    def batch(n):
        return ev.pack(orjson.dumps(e) for e in call("sales", f"c{n}", now - 20, "answered", now - 12))

    async with pipeline.aggregate.test_context() as agent:
        agent.sent_offset = 2
        await agent.put(batch(2), key=b"sales", partition=0)  # 0 and 1 not seen yet: left to be read again
        assert "sales" not in pipeline.states.models
        agent.sent_offset = 0
        for n in range(3):
            await agent.put(batch(n), key=b"sales", partition=0)
    assert pipeline.states.models["sales"].read(now)["totals"]["offered"] == 3


async def test_aggregate_applies_nothing_until_faust_sought_the_assignment(pipeline, monkeypatch):
    """Between an assignment and the end of its recovery (Faust's seek to the committed offsets)
    messages fetched before may still arrive: they wait, and are applied in order afterwards."""
    class Everything:
        def __contains__(self, tp):
            return True

    monkeypatch.setattr(pipeline.app.consumer, "assignment", Everything)  # still assigned
    now = time.time()
    pipeline.app.rebalancing = True
    async with pipeline.aggregate.test_context() as agent:
        put = asyncio.ensure_future(agent.put(
            ev.pack(orjson.dumps(e) for e in call("sales", "c1", now - 20, "answered", now - 12)), key=b"sales", partition=0))
        await asyncio.sleep(0.3)
        assert "sales" not in pipeline.states.models  # waiting for the recovery to end
        pipeline.app.rebalancing = False
        await asyncio.wait_for(put, 5)
        for _ in range(50):
            if "sales" in pipeline.states.models:
                break
            await asyncio.sleep(0.1)
    assert pipeline.states.models["sales"].read(now)["totals"]["offered"] == 1


async def test_a_message_that_waited_through_a_rebalance_is_read_again_not_taken_for_a_gap(pipeline, monkeypatch):
    """Fetched under one assignment, waiting in the agent while the next one's recovery ran: after
    the seek its partition is read again from the committed offset, so this copy is dropped; taken
    for a gap, it stopped the worker (60-kill chaos run)."""

    class Everything:
        def __contains__(self, tp):
            return True

    crash = pipeline.app.crash = AsyncMock()
    monkeypatch.setattr(pipeline.app.consumer, "assignment", Everything)
    now = time.time()

    def batch(n):
        return ev.pack(orjson.dumps(e) for e in call("sales", f"c{n}", now - 20, "answered", now - 12))

    async with pipeline.aggregate.test_context() as agent:
        await agent.put(batch(0), key=b"sales", partition=0)  # offset 0, applied
        pipeline.app.rebalancing = True
        agent.sent_offset = 5
        stale = asyncio.ensure_future(agent.put(batch(5), key=b"sales", partition=0))  # prefetched far ahead
        await asyncio.sleep(0.3)
        pipeline.app.consumer_generation_id += 1  # the next assignment; Faust seeks back to offset 1
        pipeline.app.rebalancing = False
        await asyncio.wait_for(stale, 5)
        await asyncio.sleep(0.3)
        agent.sent_offset = 1
        await agent.put(batch(1), key=b"sales", partition=0)  # read again from the committed offset
    assert crash.await_count == 0
    assert pipeline.states.models["sales"].read(now)["totals"]["offered"] == 2


async def test_a_recovery_completed_after_the_next_assignment_is_ignored(pipeline, monkeypatch):
    """Faust 0.15.3 can finish an assignment's recovery (and run the table callbacks) after the next
    assignment arrived; those callbacks must not mark partitions ready while the next recovery reads."""
    pipeline.accepting.clear()
    monkeypatch.setattr(pipeline.app.assignor, "assigned_actives", lambda: {TP(pipeline.config.kafka.topic_batches, 0)})
    pipeline.app.tables.recovery.signal_recovery_start.set()  # the next assignment waits for its recovery
    crash = pipeline.app.crash = AsyncMock()
    await asyncio.wait_for(pipeline.resume_models(), 5)  # at once: no broker asked (there is none here)
    assert pipeline.accepting == set() and crash.await_count == 0


async def test_aggregate_does_not_acknowledge_a_batch_whose_changelog_write_failed(pipeline, monkeypatch):
    """producer.flush() returns when the producer has given up on a write, failed or not: the
    delivery future says which. A batch whose changelog record never reached the broker must stay
    unacknowledged (so its offset is never committed), and the worker stops so that the partition
    is rebuilt from what the broker holds."""
    import faust
    from aiokafka.errors import KafkaTimeoutError

    acked = []
    ack = faust.Stream.ack

    async def recording_ack(self, event):
        acked.append(event.message.offset)
        return await ack(self, event)

    monkeypatch.setattr(faust.Stream, "ack", recording_ack)
    crash = pipeline.app.crash = AsyncMock()
    failing = {"batch": 1}  # the second batch's changelog write times out on its way to the broker
    writes = []

    def send_changelog(partition, key, value):
        writes.append(key)
        batch = sum(1 for k in writes if b"\x00b" in k) - 1
        return delivery(KafkaTimeoutError() if batch == failing["batch"] and b"\x00b" in key else None)

    pipeline.state_table.send_changelog = send_changelog
    now = time.time()
    with pytest.raises(KafkaTimeoutError):
        async with pipeline.aggregate.test_context() as agent:
            for n in range(3):
                await agent.put(ev.pack(orjson.dumps(e) for e in call("sales", f"c{n}", now - 20, "answered", now - 12)),
                                key=b"sales", partition=0)
    assert acked == [0]  # the first batch was delivered and acknowledged; the second never
    assert crash.await_count == 1 and isinstance(crash.await_args.args[0], KafkaTimeoutError)


async def test_route_waits_for_other_workers_partitions(pipeline):
    now = time.time()
    calls = [call("sales", f"c{i}", now - 600 + 20 * i, "answered", now - 595 + 20 * i) for i in range(10)]
    await pipeline.take({"p0": [(i, orjson.dumps(e)) for i, e in enumerate(e for c in calls for e in c)]})
    caught_up = {"p0": (20, 20)}

    def sent_times():
        return [ev.parse_time(orjson.loads(r)["time"]) for c in queue_batches(pipeline) for r in ev.unpack(c.kwargs["value"])]

    await pipeline.send_ready(caught_up, others=[-math.inf])  # another worker's partition is unknown yet
    assert sent_times() == []
    await pipeline.send_ready(caught_up, others=[now - 550])  # it is at now - 550: pass up to 30 s past that
    assert max(sent_times()) <= now - 520 and len(sent_times()) == 9  # offers and answers from now - 600 to now - 520
    await pipeline.send_ready(caught_up, others=[math.inf])  # it caught up: pass the rest
    times = sent_times()
    assert len(times) == 20 and times[9:] == sorted(times[9:])
    assert len(queue_batches(pipeline)) == 2  # one message per queue each time


async def test_a_worker_owning_a_partition_whose_recovery_never_completes_stops_after_90_s(pipeline, monkeypatch, caplog):
    """A partition owned and not exported (its recovery never completed) stops the worker once
    RECOVERY_STUCK_SECONDS passed with no progress: not while Faust reads the changelog, nor while
    the worker's own recovery step runs, nor within that time of the latest assignment, nor during
    a broker outage (the time counts from its end). A rebalance that never ends stops it too."""
    import callpulse.pipeline.app
    from callpulse.pipeline.app import RECOVERY_STUCK_SECONDS

    crash = pipeline.app.crash = AsyncMock()
    clock = [1000.0]
    monkeypatch.setattr(callpulse.pipeline.app.time, "monotonic", lambda: clock[0])
    pipeline.watch.clock = lambda: clock[0]
    topic = pipeline.batches_topic.get_topic_name()
    consumer = pipeline.app.consumer
    monkeypatch.setattr(consumer, "assignment", lambda: {TP(topic, 0), TP(topic, 1)})
    monkeypatch.setattr(consumer, "highwater", lambda tp: 0)
    recovery = pipeline.app.tables.recovery
    remaining = [500]
    monkeypatch.setattr(recovery, "active_remaining_total", lambda: remaining[0])
    pipeline.assigned_at[0] = clock[0]
    assert 1 not in pipeline.accepting  # partition 0 recovered (the fixture), 1 not

    async def after(seconds: float) -> None:
        clock[0] += seconds
        await pipeline.check_aggregate_progress()

    await after(0)
    for _ in range(10):  # Faust reads the changelog slowly for 100 s
        remaining[0] -= 10
        await after(10)
    assert not crash.called, "the changelog reading moves"
    pipeline.resuming[pipeline.rebalances[0] - 1] = clock[0] + 1000  # a step left over from an earlier assignment
    pipeline.resuming[pipeline.rebalances[0]] = clock[0] + 100  # then this assignment's own step, bounded at 100 s
    await after(99)
    assert not crash.called, "the recovery step moves"
    await after(RECOVERY_STUCK_SECONDS)
    assert crash.call_count == 1, "a step past its bound is no progress, nor one of an earlier assignment"
    crash.reset_mock()
    pipeline.resuming.clear()
    remaining[0] -= 1  # Faust reads again
    pipeline.assigned_at[0] = clock[0]  # a new assignment, partition 1 still not recovered
    await after(RECOVERY_STUCK_SECONDS - 1)
    assert not crash.called, "within the time of the latest assignment"
    pipeline.watch.unanswered_since = clock[0]
    await after(5)
    pipeline.watch.unanswered_since = None
    await after(RECOVERY_STUCK_SECONDS - 1)
    assert not crash.called, "an outage: the time counts from its end"
    with caplog.at_level("CRITICAL", logger="callpulse"):
        await after(2)
    assert crash.call_count == 1
    stopped = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert "partition(s) [1] owned for" in stopped[0] and "without a completed recovery" in stopped[0], stopped

    crash.reset_mock()
    pipeline.accepting.add(1)  # everything recovered; then a revocation with no assignment after it
    pipeline.rebalance_began[0] = clock[0]
    await after(RECOVERY_STUCK_SECONDS - 1)
    assert not crash.called
    await after(2)
    assert crash.call_count == 1 and "a rebalance began" in str(crash.await_args.args[0])
