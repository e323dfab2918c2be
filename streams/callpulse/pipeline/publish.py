"""Sending canonical events to the events topic: the simulator, replays and the live adapters.

Every producer keys events by queue (falling back to agent, then call), which keeps a queue's
events in order within one partition; callpulse itself would accept any key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable

import orjson

from ..sources import Batch


def event_key(event: dict) -> bytes | None:
    return (event.get("queue") or event.get("agent_id") or event.get("call_id") or "").encode() or None


def producer_for(config):
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**config.kafka.client_kwargs(), linger_ms=20, max_batch_size=256 * 1024)


async def publish(config, events: Iterable[dict], *, send_at: Callable[[dict], float] | None = None,
                  on_sent: Callable[[int], None] | None = None) -> int:
    """Send events in order; returns how many. `send_at(event)` gives the wall-clock time an event
    is due (it is held until then; None or a past time sends at once); `on_sent(n)` is called with
    the running count, for progress displays."""
    producer = producer_for(config)
    await producer.start()
    sent = 0
    try:
        for event in events:
            if send_at is not None:
                delay = send_at(event) - time.time()
                if delay > 0.005:  # shorter waits are not worth a flush round trip
                    await producer.flush()
                    await asyncio.sleep(delay)
            await producer.send(config.kafka.topic_events, orjson.dumps(event), key=event_key(event))
            sent += 1
            if on_sent is not None and sent % 500 == 0:
                on_sent(sent)
        await producer.flush()
        if on_sent is not None:
            on_sent(sent)
    finally:
        await producer.stop()
    return sent


async def publish_live(config, batches: AsyncIterator[Batch], *, on_sent: Callable[[int], None] | None = None) -> int:
    """Send a live source's batches as they come; after each flush, run the batch's commit (its
    checkpoint), so a restart resumes after what reached Kafka and repeats at most a batch (the
    worker drops repeated event ids). Runs until the source ends or the task is cancelled."""
    producer = producer_for(config)
    await producer.start()
    sent = 0
    try:
        async for batch in batches:
            for event in batch.events:
                await producer.send(config.kafka.topic_events, orjson.dumps(event), key=event_key(event))
            await producer.flush()
            sent += len(batch.events)
            if batch.commit is not None:
                batch.commit()
            if on_sent is not None and batch.events:
                on_sent(sent)
    finally:
        await producer.stop()
    return sent
