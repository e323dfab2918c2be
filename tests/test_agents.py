"""The pipeline's stages without a broker: the first stage's routing function with its outbound
topics mocked, and the Faust aggregate agent driven through `agent.test_context()`."""

from __future__ import annotations

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
    # as if read from two input partitions: the answer's partition came first
    await pipeline.route([orjson.dumps(good[1]), orjson.dumps(good[2]), orjson.dumps(good[0]), b"{broken"])
    sent = {c.kwargs["key"]: list(ev.unpack(c.kwargs["value"])) for c in pipeline.batches_topic.send.await_args_list}
    # every event of a queue arrives in that queue's batch, in event-time order; the agent event goes to both queues
    sales = [orjson.loads(r) for b in [sent[b"sales"]] for r in b]
    assert [e["type"] for e in sales] == ["call.offered", "call.answered", "agent.state_changed"]
    assert [orjson.loads(r)["type"] for r in sent[b"support"]] == ["agent.state_changed"]
    letter = orjson.loads(pipeline.dead_letter_topic.send.await_args.kwargs["value"])
    assert (letter["reason"], letter["original"]) == ("malformed_json", "{broken")
    assert pipeline.health.events["call.offered"] == 1
    assert pipeline.health.rejected["malformed_json"] == 1


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
    pipeline.app.producer.flush.assert_awaited()  # the batch's changelog write is flushed before the next
