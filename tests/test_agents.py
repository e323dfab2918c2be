"""The pipeline's stages without a broker: the first stage's routing function with its outbound
topics mocked, and the Faust aggregate agent driven through `agent.test_context()`."""

from __future__ import annotations

import math
import time
from unittest.mock import AsyncMock

import orjson
import pytest

from callpulse import events as ev
from callpulse.app import create_app
from callpulse.config import load_config

from helpers import call, event


@pytest.fixture
def pipeline(tmp_path):
    p = create_app(load_config(None, {"CALLPULSE_DATA_DIR": str(tmp_path)}))
    p.app.conf.store = "memory://"
    p.app.finalize()
    p.app.flow_control.resume()  # without it put() waits forever
    p.batches_topic.send = AsyncMock()
    p.dead_letter_topic.send = AsyncMock()
    p.app.producer.flush = AsyncMock()  # no broker: the changelog flush after each batch is a no-op
    return p


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
    horizon, low_marks = await pipeline.send_ready({"p0": (1, 5), "p1": (12, 12)}, others=[])
    offsets = pipeline.aligner.commit_offsets({"p0": 1, "p1": 12})
    sent = [orjson.loads(r)["call_id"] for c in pipeline.batches_topic.send.await_args_list for r in ev.unpack(c.kwargs["value"])]
    assert sent == ["c1"] and horizon == pytest.approx(now - 300, abs=0.001)
    assert offsets == {"p0": 1, "p1": 10}  # p1 is committed only up to its first held event
    assert pipeline.aligner.to_hold(horizon, paused=set()) == {"p1"}
    # p0 catches up: everything is released in event-time order
    pipeline.batches_topic.send.reset_mock()
    await pipeline.take({"p0": [(1, orjson.dumps(early[1]))]})
    await pipeline.send_ready({"p0": (2, 2), "p1": (12, 12)}, others=[])
    offsets = pipeline.aligner.commit_offsets({"p0": 2, "p1": 12})
    sent = [orjson.loads(r)["type"] for c in pipeline.batches_topic.send.await_args_list for r in ev.unpack(c.kwargs["value"])]
    assert sent == ["call.answered", "call.offered", "call.answered"]
    assert offsets == {"p0": 2, "p1": 12}


async def test_the_fetch_wait_patch_still_applies():
    """Faust hard-codes fetch_max_wait_ms=1500; app.py patches the consumer factory (see there)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from callpulse.app import FETCH_MAX_WAIT_MS

    assert getattr(AIOKafkaConsumerThread._create_worker_consumer, "callpulse_patched", False)
    import aiokafka

    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers="localhost:1")
    assert hasattr(consumer, "_fetch_max_wait_ms")  # the attribute the patch sets still exists
    assert FETCH_MAX_WAIT_MS <= 100


async def test_aggregate_applies_batches_writes_the_table_and_skips_redeliveries(pipeline):
    now = time.time()
    batch = ev.pack(orjson.dumps(e) for e in call("sales", "c1", now - 20, "answered", now - 12))
    async with pipeline.aggregate.test_context() as agent:
        agent.sent_offset = 5  # the test wrapper numbers the messages it puts from here
        await agent.put(batch, key=b"sales", partition=0)
        agent.sent_offset = 5
        await agent.put(batch, key=b"sales", partition=0)  # the same message again (a redelivery)
    view = pipeline.states.models["sales"].read(now)
    assert (view["totals"]["offered"], view["totals"]["answered"]) == (1, 1)
    assert view["totals"]["answered_within:10"] == 1
    keys = [k for k in pipeline.state_table.data.keys()]
    assert b"sales\x00b0000000000000005" in keys  # the batch record, keyed by its offset
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


async def test_route_waits_for_other_workers_partitions(pipeline):
    now = time.time()
    calls = [call("sales", f"c{i}", now - 600 + 20 * i, "answered", now - 595 + 20 * i) for i in range(10)]
    await pipeline.take({"p0": [(i, orjson.dumps(e)) for i, e in enumerate(sum(calls, []))]})
    caught_up = {"p0": (20, 20)}

    def sent_times():
        return [ev.parse_time(orjson.loads(r)["time"]) for c in pipeline.batches_topic.send.await_args_list for r in ev.unpack(c.kwargs["value"])]

    await pipeline.send_ready(caught_up, others=[-math.inf])  # another worker's partition is unknown yet
    assert sent_times() == []
    await pipeline.send_ready(caught_up, others=[now - 550])  # it is at now - 550: pass up to 30 s past that
    assert max(sent_times()) <= now - 520 and len(sent_times()) == 9  # offers and answers from now - 600 to now - 520
    await pipeline.send_ready(caught_up, others=[math.inf])  # it caught up: pass the rest
    times = sent_times()
    assert len(times) == 20 and times[9:] == sorted(times[9:])
    assert pipeline.batches_topic.send.await_count == 2  # one message per queue each time
