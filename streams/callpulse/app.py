"""The Faust app: topics, the state table, the two agents, and the web pages.

Data flow:
  events topic (any key)  --route-->  batches topic (key = queue)  --aggregate-->  queue models
        |                                   |                                         |
        +-- invalid --> dead-letter topic <-+-- too late / unmatched                  +--> /metrics, /api/queues
`route` validates raw events in micro-batches and packs the valid ones per queue into one message
(so the per-message cost of Faust is paid once per queue per batch, not once per event); the
batches topic is keyed by queue, so all of a queue's events meet in one partition and one worker.
`aggregate` applies each batch to the queue's model and writes one changelog record for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from types import SimpleNamespace

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from . import events as ev
from .align import EventTimeAligner, SharedProgress, encode_report
from .config import Config, load_config
from .exporter import PipelineHealth, QueueCollector
from .state import QueueStates, record_offset

log = logging.getLogger("callpulse")
STATE_TABLE = "queue-state"
# Faust creates its consumer with fetch_max_wait_ms=1500 and no setting to change it. Apache Kafka
# answers a waiting fetch as soon as data arrives, but some Kafka-protocol brokers (Tansu among
# them) hold it for the whole wait, which adds up to 1.5 s per hop. 50 ms bounds that; the cost is
# a few idle fetch requests a second. tests/test_agents.py checks the patch still applies.
FETCH_MAX_WAIT_MS = 50
# The second stage flushes its changelog writes and acknowledges the batch messages behind them at
# least every this many messages (see `aggregate`).
AGGREGATE_ACK_EVERY = 64
# How long a worker that took over a partition waits for changelog records its recovery missed
# (see `complete_recovery`) before it goes on with what it has and logs an error.
CHANGELOG_TAIL_TIMEOUT_SECONDS = 60
# How often the first stage reports its partitions' progress to the other workers (align.py).
PROGRESS_REPORT_SECONDS = 0.05
# How often the forecast file is checked for changes (one stat() call).
FORECAST_CHECK_SECONDS = 5.0


def changelog_topic_name(app_id: str) -> str:
    """The state table's changelog topic, named as Faust names it."""
    return f"{app_id}-{STATE_TABLE}-changelog"


def progress_topic_name(app_id: str) -> str:
    """The topic where first-stage workers share their input partitions' progress (align.py)."""
    return f"{app_id}-router-progress"


def _patch_fetch_max_wait() -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "callpulse_patched", False):
        return

    def create_worker_consumer(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer

    create_worker_consumer.callpulse_patched = True
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


_patch_fetch_max_wait()


def broker_credentials(kafka) -> faust.types.auth.CredentialsArg | None:
    """Faust credentials for the configured security protocol (None for PLAINTEXT)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(kafka.ssl_context())
    return faust.SASLCredentials(username=kafka.sasl_username, password=kafka.sasl_password,
                                 mechanism=kafka.sasl_mechanism, ssl_context=kafka.ssl_context())


def create_app(config: Config) -> SimpleNamespace:
    kafka, stream = config.kafka, config.stream
    os.makedirs(stream.data_dir, exist_ok=True)
    app = faust.App(
        stream.app_id,
        broker=[f"kafka://{host.strip()}" for host in kafka.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(kafka),
        store="memory://",  # state is rebuilt from the changelog topic on start and on rebalance
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        table_standby_replicas=0,  # the memory store drops standby data at each rebalance anyway
        web_bind=stream.web_host,  # the address the web server listens on
        web_host=socket.gethostname(),  # how other workers reach it
        web_port=stream.web_port,
        web_in_thread=False,
        # Faster group joins and failover than Faust's defaults (about 6 s instead of 30 s).
        broker_rebalance_timeout=5,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        datadir=stream.data_dir,
        autodiscover=False,
        # Each message of the batches topic holds up to batch_max_events events: a small stream
        # buffer keeps a fast first stage from parking hundreds of MB of batches in memory.
        stream_buffer_maxsize=64,
    )
    batches_topic = app.topic(kafka.topic_batches, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    dead_letter_topic = app.topic(kafka.topic_dead_letter, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    intervals_topic = app.topic(kafka.topic_intervals, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    state_table = app.Table(STATE_TABLE, key_type=bytes, value_type=bytes, partitions=kafka.partitions, default=None)

    router = ev.Router(max_future_seconds=stream.max_future_seconds)
    states = QueueStates(config)
    health = PipelineHealth(router.known_types)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(states, health))

    async def dead_letter(rejected: list[ev.Rejected], stage: str) -> None:
        for r in rejected:
            await dead_letter_topic.send(key=r.reason.encode(), value=r.dead_letter(stage))

    async def publish_intervals(records: list[dict]) -> None:
        for key, value in states.interval_messages(records):
            await intervals_topic.send(key=key, value=value)

    aligner = EventTimeAligner(max_ahead=stream.lateness_seconds / 2)
    shared_progress = SharedProgress()
    progress_topic = app.topic(progress_topic_name(stream.app_id), key_serializer="raw", value_serializer="raw", partitions=1)

    async def take(fetched: dict) -> None:
        """First stage, step 1 for one poll: validate; dead-letter the invalid, hold the valid.
        fetched: {partition: [(offset, raw), ...]}."""
        rejected = []
        for partition, records in fetched.items():
            valid, bad = router.validate(records)
            aligner.add(partition, valid)
            health.count_valid(valid)
            rejected += bad
        health.count_rejected(rejected)
        await dead_letter(rejected, "route")

    async def send_ready(progress: dict, others: list[float]) -> tuple[float, dict]:
        """Step 2: send the held events within reach of the event-time horizon (align.py), one
        message per queue in event-time order. progress: {partition: (position, highwater)} of the
        partitions read here; others: the low marks of all other partitions.
        Returns the horizon and the low marks of the partitions read here."""
        ready: list[ev.Valid] = []
        while True:  # passing events on raises the low marks: repeat until nothing more passes
            low_marks = aligner.low_marks(progress)
            horizon = min([*low_marks.values(), *others], default=math.inf)
            more = aligner.release(horizon)
            if not more:
                break
            ready += more
        # One message per queue even when several rounds passed: other workers' partitions are at
        # or past the final horizon, so whatever they send next is within the lateness of this.
        for queue, raws in ev.by_queue(ready).items():
            await batches_topic.send(key=queue.encode(), value=ev.pack(raws))
        return horizon, low_marks

    class Rebalance(ConsumerRebalanceListener):
        assigned_at = math.inf  # other workers' reports count only from the last rebalance on

        async def on_partitions_revoked(self, revoked):
            aligner.forget(revoked)

        async def on_partitions_assigned(self, assigned):
            Rebalance.assigned_at = time.time()

    async def read_progress(consumer: AIOKafkaConsumer) -> dict:
        progress = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            # after the partition's first fetch response its position is known: position() returns at once
            progress[tp] = (None, None) if highwater is None else (await consumer.position(tp), highwater)
        return progress

    @app.task
    async def route_events() -> None:
        """Run the first stage on a plain aiokafka consumer in its own consumer group.

        Faust's per-message stream machinery costs ~60 us a message, which alone caps a worker
        below 10,000 events/s; this stage needs no table, so it reads batches with getmany and
        commits its offsets only after everything it produced is flushed (at-least-once; the second
        stage drops redelivered events by event_id). Scaling out is the same: more workers join
        the `<app_id>-router` group and share the events topic's partitions; they agree on the
        event-time horizon through the progress topic (see align.py).
        """
        consumer = AIOKafkaConsumer(
            group_id=f"{stream.app_id}-router", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000, rebalance_timeout_ms=5_000,
            max_poll_records=stream.batch_max_events, **kafka.client_kwargs(),
        )
        reports = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS, **kafka.client_kwargs())
        await reports.start()
        missing = {kafka.topic_events, progress_topic.get_topic_name()} - await reports.topics()
        if missing:
            await reports.stop()
            raise RuntimeError(f"topic(s) {', '.join(sorted(missing))} do not exist: run `callpulse topics create` first")
        reports.assign([TopicPartition(progress_topic.get_topic_name(), 0)])
        await reports.seek_to_end()  # reports sent before our first assignment would not count anyway
        consumer.subscribe([kafka.topic_events], listener=Rebalance())
        await consumer.start()
        committed: dict = {}
        reported_at = 0.0
        try:
            while not app.should_stop:
                fetched = await consumer.getmany(timeout_ms=int(stream.batch_max_seconds * 1000), max_records=stream.batch_max_events)
                await take({tp: [(r.offset, r.value) for r in records] for tp, records in fetched.items()})
                for records in (await reports.getmany(timeout_ms=0)).values():
                    for r in records:
                        shared_progress.update(r.key, r.value)
                try:
                    progress = await read_progress(consumer)
                except IllegalStateError:
                    continue  # a rebalance took a partition away meanwhile; the new owner reads it again
                aligner.forget([tp for tp in list(aligner.newest) if tp not in progress])  # revoked while we read
                now = time.time()
                everyone = consumer.partitions_for_topic(kafka.topic_events) or {None}  # None: not known yet
                owned = {tp.partition for tp in progress}
                others = [shared_progress.low_mark(p, now, Rebalance.assigned_at) for p in everyone - owned]
                horizon, low_marks = await send_ready(progress, others)
                # Reports are for the other workers of the group: none while this one reads every partition.
                if everyone - owned and now - reported_at >= PROGRESS_REPORT_SECONDS:
                    for tp, low in low_marks.items():
                        await progress_topic.send(key=b"%d" % tp.partition, value=encode_report(low, now))
                    reported_at = now
                positions = {tp: position for tp, (position, _) in progress.items() if position is not None}
                offsets = aligner.commit_offsets(positions)
                offsets = {tp: o for tp, o in offsets.items() if committed.get(tp) != o}
                if offsets:
                    await app.producer.flush()
                    try:
                        await consumer.commit(offsets)
                        committed.update(offsets)
                    except CommitFailedError as exc:  # rebalanced meanwhile: the new owner re-reads, event ids dedup
                        log.warning("first stage could not commit, its records will be read again: %s", exc)
                paused = consumer.paused()
                hold = aligner.to_hold(horizon, paused)
                consumer.pause(*(hold - paused))
                consumer.resume(*(paused - hold))
                health.partitions_held = len(hold)
        finally:
            await consumer.stop()
            await reports.stop()

    @app.agent(batches_topic)
    async def aggregate(stream_):
        """Second stage: apply each queue batch to its model, write its changelog record.

        Messages are acknowledged by hand (an acknowledged message's offset may be committed), only
        after their changelog writes are flushed: for up to AGGREGATE_ACK_EVERY messages at once
        while more are waiting, at once when none is. Flushing after every message halved
        throughput on the embedded broker; trusting Faust to flush before it commits lost counts
        when a worker was stopped with SIGTERM in our tests.
        """
        manual = stream_.noack()
        waiting = manual.channel.queue  # messages already delivered to this agent
        unacked = []
        async for event in manual.events():
            message = event.message
            queue = message.key.decode()
            result = states.apply_batch(queue, message.partition, message.offset, ev.unpack(message.value))
            if result is not None:  # None: redelivered after a crash, its effect is already in the state
                for key, value in states.changelog_writes(result):
                    if value is None:
                        state_table.pop(key, None)
                    else:
                        state_table[key] = value
                health.count_batch(result)
                await dead_letter(result.rejected, "aggregate")
                await publish_intervals(result.intervals)
            unacked.append(event)
            if len(unacked) >= AGGREGATE_ACK_EVERY or waiting.empty():
                await app.producer.flush()
                for done in unacked:
                    await manual.ack(done)
                unacked.clear()

    @app.timer(interval=1.0)
    async def publish_due_intervals() -> None:
        """Interval records no event triggers: after a rebuild, and for queues gone quiet."""
        await publish_intervals(states.due_interval_records())

    @app.timer(interval=FORECAST_CHECK_SECONDS)
    async def reload_forecast() -> None:
        """Load the forecast file again when it changed; parsed in a thread (weeks of intervals for
        hundreds of queues take seconds), the new forecast swapped in whole."""
        if states.forecast is not None:
            await asyncio.get_running_loop().run_in_executor(None, states.forecast.reload_if_changed)

    @app.on_partitions_revoked.connect
    async def park_models(sender, revoked, **kwargs) -> None:
        states.park()  # nothing is exported while the group rebalances

    owned_before: set[int] = set()

    @state_table.on_recover
    async def resume_models() -> None:
        """After recovery (start-up and every rebalance): keep, rebuild or forget each queue."""
        nonlocal owned_before
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == kafka.topic_batches}
        rebuilt = states.resume(owned, list(state_table.data.items()))
        await complete_recovery(owned - owned_before)
        owned_before = owned
        log.info("own %d queue(s) on partitions %s; rebuilt from the changelog: %s",
                 len(states.models), sorted(owned), ", ".join(rebuilt) or "none")

    async def complete_recovery(partitions: set[int]) -> None:
        """Check that the rebuilt state of newly owned partitions reaches as far as the previous
        owner acknowledged, and read the changelog records that Faust's recovery missed if not.

        Faust recovers a table up to the end offset the broker reports when recovery starts. Some
        Kafka-protocol brokers under-report it (Tansu 0.6.0 reports the base offset of the last
        record batch plus one), and then the newest records are silently left out. Every batch
        message applied writes a record and is acknowledged only after that record is flushed, so
        the committed offset of the batches partition says which record must be there.
        """
        if not partitions:
            return
        admin = AIOKafkaAdminClient(**kafka.client_kwargs())
        await admin.start()
        try:
            batch_tps = [TopicPartition(kafka.topic_batches, p) for p in sorted(partitions)]
            committed = await admin.list_consumer_group_offsets(app.conf.id, partitions=batch_tps)
        finally:
            await admin.close()
        for tp, meta in committed.items():
            last_acknowledged = meta.offset - 1  # meta.offset is -1 when nothing was committed
            newest = states.newest_batch(tp.partition)
            if newest >= last_acknowledged:
                continue
            log.warning("changelog recovery of partition %d ended before batch %d, which the previous owner "
                        "acknowledged (newest found: %d); reading the changelog again",
                        tp.partition, last_acknowledged, newest)
            records = await read_changelog(tp.partition, last_acknowledged)
            for key, value in records.items():
                if value is None:
                    state_table.data.pop(key, None)
                else:
                    state_table.data[key] = value
            states.rebuild_partition(tp.partition, records.items())
            if states.newest_batch(tp.partition) < last_acknowledged:
                log.error("partition %d: the changelog holds no record of batch %d after %d s; its queues may miss "
                          "events", tp.partition, last_acknowledged, CHANGELOG_TAIL_TIMEOUT_SECONDS)

    async def read_changelog(partition: int, batch_offset: int) -> dict[bytes, bytes | None]:
        """The latest value of every key in one changelog partition, read from its start until a
        record for `batch_offset` (or a later one) has been seen and a fetch comes back empty. Ends
        by fetching, not at the end offset the broker reports, which is what could not be trusted."""
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    **kafka.client_kwargs())
        await consumer.start()
        latest: dict[bytes, bytes | None] = {}
        try:
            tp = TopicPartition(state_table.changelog_topic.get_topic_name(), partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + CHANGELOG_TAIL_TIMEOUT_SECONDS
            reached = False
            while time.monotonic() < deadline:
                records = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
                if not records and reached:
                    break
                for r in records:
                    latest[r.key] = r.value
                    reached = reached or (r.value is not None and record_offset(r.key, r.value) >= batch_offset)
        finally:
            await consumer.stop()
        return latest

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/queues")
    async def queues_json(web, request):
        now, views = states.read_all()
        body = {
            "worker": f"{socket.gethostname()}:{stream.web_port}",
            "generated_at": states.wall(),
            "clock": now,
            "queues": {q: json_view(v) for q, v in views.items()},
        }
        return web.bytes(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), headers={"Content-Type": "application/json"})

    @app.page("/healthz")
    async def healthz(web, request):
        return web.bytes(b"ok\n", headers={"Content-Type": "text/plain"})

    return SimpleNamespace(
        app=app, config=config, states=states, health=health, registry=registry, router=router,
        batches_topic=batches_topic, dead_letter_topic=dead_letter_topic, intervals_topic=intervals_topic, aligner=aligner,
        state_table=state_table, take=take, send_ready=send_ready, aggregate=aggregate,
        complete_recovery=complete_recovery,
    )


def json_view(view: dict) -> dict:
    """A queue's read() view with the histogram objects turned into plain data."""
    out = {k: v for k, v in view.items() if not k.endswith("_histogram")}
    for name in ("answer_wait_histogram", "abandon_wait_histogram"):
        hist = view[name]
        out[name] = {"buckets": [[b if b != float("inf") else "+Inf", n] for b, n in hist.cumulative()], "sum": hist.sum}
    return out


pipeline = create_app(load_config())
app = pipeline.app  # `faust -A callpulse.app worker` finds it here
