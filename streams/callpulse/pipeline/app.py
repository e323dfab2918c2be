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
import threading
import time
from collections.abc import Awaitable
from collections.abc import Set as AbstractSet
from types import SimpleNamespace
from typing import cast

import faust
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError
from faust.tables.manager import TableManager
from faust.transport.consumer import Consumer as FaustConsumer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from .. import events as ev
from ..config import Config, load_config
from ..export.metrics import PipelineHealth, QueueCollector
from .align import EventTimeAligner, SharedProgress, encode_report
from .progress import ProgressCollector, ProgressWatch
from .state import QueueStates, record_offset
from .topics import STATE_TABLE, partition_mismatches, progress_topic_name, topic_plan

log = logging.getLogger("callpulse")
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
# How long a write may take to reach the broker (after the producer's own retries) before the
# worker gives up and stops (see `delivered`).
DELIVERY_TIMEOUT_SECONDS = 120.0
# How often the worker checks that the broker answers and still holds what was read (see probe_broker).
BROKER_PROBE_SECONDS = 5.0
# Batch messages beyond the next expected one are fetched before the recovery's seek and dropped
# (the seek reads them again); still no expected one after this long, the worker stops.
AHEAD_OF_SEEK_TIMEOUT_SECONDS = 30.0
# No batch message of a recovered partition reached the idle agent for this long, outside a
# rebalance, with the broker answering and holding more: the fetch is frozen and the worker stops
# (stop_if_fetch_frozen).
FETCH_FROZEN_SECONDS = 60.0
# A batches partition owned this long without a completed recovery (its queues not exported), or a
# rebalance that has not ended for this long, with neither Faust's changelog reading nor our own
# recovery step moving, the broker answering: the recovery is stuck and the worker stops
# (stop_if_recovery_stuck).
RECOVERY_STUCK_SECONDS = 90.0
AGENT_IDLE = "waiting for the next batch message"
# How often the first stage reports its partitions' progress to the other workers (align.py).
PROGRESS_REPORT_SECONDS = 0.05
# How often the forecast file is checked for changes (one stat() call).
FORECAST_CHECK_SECONDS = 5.0
# A worker still stopping this long after its stop began exits at once (see _patch_stop_deadline):
# within the 10 s the README promises.
STOP_DEADLINE_SECONDS = 8.0


def _patch_fetch_max_wait() -> None:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "callpulse_patched", False):
        return

    def create_worker_consumer(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
        return consumer

    create_worker_consumer.callpulse_patched = True  # type: ignore[attr-defined]  # a marker: patch once
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


_patch_fetch_max_wait()


def _patch_seek_uncommitted_to_beginning() -> None:
    """Messages Faust skips around a rebalance (its flow stopped, or fetched under an earlier
    assignment) are read again only because it then seeks each partition to its committed offset.
    A partition with nothing committed is not sought at all (aiokafka seeks only to an offset above
    0), so what was skipped there was never read: the chaos run lost a partition's first 50 batch
    messages. This seeks such a partition of a stream topic (acknowledged messages: not a
    changelog) to its beginning, which is where its reading starts anyway."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    seek_to_committed = AIOKafkaConsumerThread.seek_to_committed
    if getattr(seek_to_committed, "callpulse_patched", False):
        return

    async def seek_to_committed_or_beginning(self):
        committed = await seek_to_committed(self)
        uncommitted = [tp for tp, offset in committed.items()
                       if (offset is None or offset <= 0) and self.app.topics.acks_enabled_for(tp.topic)]
        if uncommitted:
            await self.call_thread(self._ensure_consumer().seek_to_beginning, *uncommitted)
        return committed

    seek_to_committed_or_beginning.callpulse_patched = True  # type: ignore[attr-defined]  # a marker: patch once
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed_or_beginning  # type: ignore[method-assign]


_patch_seek_uncommitted_to_beginning()


def _patch_stop_deadline() -> None:
    """A worker that begins to stop (SIGTERM, SIGINT, or its own stop on an error) exits at the
    latest STOP_DEADLINE_SECONDS later, with exit code 1 after an error and 0 otherwise. Faust's
    consumer waits for a group join in progress before it leaves the group (12 s seen in a chaos
    run), beyond what an orchestrator's grace period may allow. Exiting without leaving costs the
    group a session timeout and loses nothing: nothing is acknowledged before it is written, the
    same guarantee that makes a SIGKILL safe (the chaos run kills 20 times)."""
    from mode.worker import Worker

    schedule, stop_and_shutdown = Worker._schedule_shutdown, Worker.stop_and_shutdown
    if getattr(schedule, "callpulse_patched", False):
        return
    armed: list[threading.Timer] = []

    def arm(worker: Worker) -> None:
        if armed:
            return

        def exit_now() -> None:
            code = 1 if worker.crash_reason else 0
            log.warning("still stopping %.0f s after the stop began; exiting now with code %d (nothing unwritten "
                        "was acknowledged)", STOP_DEADLINE_SECONDS, code)
            os._exit(code)

        deadline = threading.Timer(STOP_DEADLINE_SECONDS, exit_now)
        deadline.daemon = True  # a stop that ends in time exits with it
        deadline.start()
        armed.append(deadline)

    def schedule_shutdown(self, signum):  # a stop signal
        arm(self)
        schedule(self, signum)

    def stop_and_shutdown_in_time(self):  # every way out of the worker, a crash included
        arm(self)
        stop_and_shutdown(self)

    schedule_shutdown.callpulse_patched = True  # type: ignore[attr-defined]  # a marker: patch once
    Worker._schedule_shutdown = schedule_shutdown  # type: ignore[method-assign]
    Worker.stop_and_shutdown = stop_and_shutdown_in_time  # type: ignore[method-assign]


_patch_stop_deadline()


def broker_credentials(kafka) -> faust.types.auth.CredentialsArg | None:
    """Faust credentials for the configured security protocol (None for PLAINTEXT).

    TLS and SASL settings are first tried against a bootstrap server (config.check_broker_access):
    a certificate or login the broker refuses raises ConfigError naming the setting, and the worker
    stops with that message (`callpulse` exits 2) instead of Faust failing with a bare connection
    error. The password is never logged."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    from ..config import check_broker_access

    checked = check_broker_access(kafka)
    if checked is None:
        log.warning("no bootstrap server of %s answered; the %s settings were not checked before start",
                    kafka.bootstrap_servers, kafka.security_protocol)
    else:
        log.info("broker access checked: %s", checked)
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
        # Faust compares the offset its recovery last read from a changelog partition with the end
        # offset the broker reports, and stops the worker when the first is higher. That check is
        # for an on-disk store whose files outlived their topic; our store is memory, and a broker
        # that under-reports the end offset (see complete_recovery) trips it on a healthy
        # partition. complete_recovery checks the rebuilt state against the committed offsets.
        recovery_consistency_check=False,
        autodiscover=False,
        # Each message of the batches topic holds up to batch_max_events events: a small stream
        # buffer keeps a fast first stage from parking hundreds of MB of batches in memory.
        stream_buffer_maxsize=64,
        # Stopping or rebalancing, do not wait for the agent to acknowledge what it holds: it
        # acknowledges in groups (see `aggregate`), and a group cut short by the stop would never
        # be. Unacknowledged batch messages are read again by the next owner and skipped by offset.
        stream_wait_empty=False,
    )
    batches_topic = app.topic(kafka.topic_batches, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    dead_letter_topic = app.topic(kafka.topic_dead_letter, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    intervals_topic = app.topic(kafka.topic_intervals, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    agent_intervals_topic = app.topic(kafka.topic_agent_intervals, key_serializer="raw", value_serializer="raw",
                                      partitions=kafka.partitions)
    state_table = app.Table(STATE_TABLE, key_type=bytes, value_type=bytes, partitions=kafka.partitions, default=None)

    router = ev.Router(max_future_seconds=stream.max_future_seconds, contacts=config.repeat_caller_contacts())
    states = QueueStates(config)
    health = PipelineHealth(router.known_types)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(states, health))
    watch = ProgressWatch()
    registry.register(ProgressCollector(watch))
    # Second stage: the offset after the newest batch message handled, per owned batches partition.
    handled: dict[int, int] = {}
    agent_queue: list = []  # the second stage's input queue, for diagnostics
    agent_step = ["not started"]  # what the second stage's agent is doing, for diagnostics
    stall_logged: set[int] = set()  # stalled second-stage partitions already logged
    # per batches partition: monotonic time a message of it last reached the agent, or it became accepting
    last_delivery: dict[int, float] = {}
    # Batches partitions whose models are complete: from the end of each recovery (resume_models)
    # to the next revocation. Batch messages of other partitions are neither applied nor
    # acknowledged: they were delivered before or during a rebalance, and are read again from the
    # committed offset by whoever owns the partition once its recovery is complete.
    accepting: set[int] = set()
    states.ready = accepting  # only these partitions' queues are exported
    next_offset: dict[int, int] = {}  # per accepting partition: the batch message to apply next
    ahead_since: dict[int, float] = {}  # per partition: since when only messages beyond next_offset came
    rebalances = [0]  # revocations so far: a recovery callback that outlived its rebalance stops
    rebalance_began: list[float | None] = [None]  # monotonic time of the revocation not yet followed by an assignment
    assigned_at = [time.monotonic()]  # monotonic time of the latest assignment
    # Faust's changelog records still to read, and when that last changed or our recovery step ran
    recovery_moved = [-1, time.monotonic()]
    # resume_models steps running, by the revocation count they began at: until when each may take
    # (its waits are bounded; stop_if_recovery_stuck counts the current one as progress until then)
    resuming: dict[int, float] = {}

    # Every send below returns its delivery future. Offsets are committed (first stage) and batch
    # messages acknowledged (second stage) only once the futures of everything they caused resolved
    # without error: producer.flush() alone returns even when a delivery failed.
    mask = stream.dead_letter_mask_callers  # caller numbers in dead letters, see [stream] in the config

    async def dead_letter(rejected: list[ev.Rejected], stage: str) -> list[Awaitable]:
        return [await dead_letter_topic.send(key=r.reason.encode(), value=r.dead_letter(stage, mask_callers=mask))
                for r in rejected]

    async def publish_intervals(records: list[dict]) -> list[Awaitable]:
        """Queue interval records to the intervals topic, agents' (they name an agent_id) to theirs."""
        futures = []
        for topic, of_agents in ((intervals_topic, False), (agent_intervals_topic, True)):
            selected = [r for r in records if ("agent_id" in r) == of_agents]
            futures += [await topic.send(key=key, value=value) for key, value in states.interval_messages(selected)]
        return futures

    async def delivered(futures: list, what: str) -> None:
        """Wait until every write of `futures` reached the broker. A write that failed (after the
        producer's own retries) cannot be taken back from the state it came from: the worker stops,
        and its successor starts again from what was acknowledged, so nothing is lost or counted twice."""
        await app.producer.flush()
        try:
            await asyncio.wait_for(asyncio.gather(*futures), DELIVERY_TIMEOUT_SECONDS)
        except Exception as exc:
            log.critical("%s: a write did not reach the broker (%r); stopping this worker so that its "
                         "partitions restart from the last acknowledged state", what, exc)
            await app.crash(exc)
            raise
        futures.clear()

    aligner = EventTimeAligner(max_ahead=stream.lateness_seconds / 2)
    shared_progress = SharedProgress()
    progress_topic = app.topic(progress_topic_name(stream.app_id), key_serializer="raw", value_serializer="raw", partitions=1)

    async def take(fetched: dict) -> list[Awaitable]:
        """First stage, step 1 for one poll: validate; dead-letter the invalid, hold the valid.
        fetched: {partition: [(offset, raw), ...]}. Returns the dead letters' delivery futures."""
        rejected = []
        for partition, records in fetched.items():
            valid, bad = router.validate(records)
            aligner.add(partition, valid)
            health.count_valid(valid)
            rejected += bad
        health.count_rejected(rejected)
        return await dead_letter(rejected, "route")

    committed: dict = {}  # the first stage's committed offsets, as far as it knows them

    async def send_ready(progress: dict, others: list[float], sent: list | None = None) -> tuple[float, dict]:
        """Step 2: send the held events within reach of the event-time horizon (align.py), one
        message per queue in event-time order. progress: {partition: (position, highwater)} of the
        partitions read here; others: the low marks of all other partitions; sent: gets the
        delivery futures if given. Returns the horizon and the low marks of the partitions read here."""
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
        for key, raws in ev.by_queue(ready).items():  # queues and agents (events.keys_of)
            future = await batches_topic.send(key=ev.key_bytes(key), value=ev.pack(raws))
            if sent is not None:
                sent.append(future)
        return horizon, low_marks

    class Rebalance(ConsumerRebalanceListener):
        """The first stage's view of its group. Held events, positions and commits must all belong
        to one assignment: aiokafka still reports the old assignment and positions between a
        revocation and the next assignment, and a commit made then from those positions skipped
        the held events just forgotten (1,000 events lost at a time in the chaos run)."""

        assigned_at = math.inf  # other workers' reports count only from the last rebalance on
        changes = 0  # revocations and assignments so far
        assigned = False  # between an assignment and the next revocation

        async def on_partitions_revoked(self, revoked):
            aligner.forget(revoked)  # read again from the committed offset by the next owner
            Rebalance.changes += 1
            Rebalance.assigned = False

        async def on_partitions_assigned(self, assigned):
            Rebalance.assigned_at = time.time()
            Rebalance.changes += 1
            Rebalance.assigned = True

    async def topic_problems() -> list[str]:
        """Every topic the worker needs must exist with the planned partition count: the batches
        topic and the changelog must be partitioned alike, or a queue's state lands in a partition
        its owner never reads."""

        plan = {name: n for name, n in topic_plan(config).items() if "__assignor" not in name}  # Faust makes that one
        admin = AIOKafkaAdminClient(**kafka.client_kwargs())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            problems = [f"topic {name!r} does not exist" for name in plan if name not in existing]
            present = {name: n for name, n in plan.items() if name in existing}
            for topic, have, want in await partition_mismatches(admin, present):
                setting = " (kafka.partitions)" if want == kafka.partitions else ""
                problems.append(f"topic {topic!r} has {have} partitions, the config says {want}{setting}")
        finally:
            await admin.close()
        return problems

    async def restart_from_committed(consumer: AIOKafkaConsumer) -> bool:
        """Start the new assignment afresh: nothing held, every partition read again from its
        committed offset, whatever aiokafka had fetched or returned meanwhile. False if the
        assignment changed again while we asked for the offsets."""
        aligner.forget(list(aligner.newest))
        committed.clear()
        try:
            for tp in consumer.assignment():
                offset = await consumer.committed(tp)
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
                    committed[tp] = offset
        except IllegalStateError:
            return False
        return True

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
        problems = await topic_problems()
        if problems:
            message = ("the topics do not match the config:\n  " + "\n  ".join(problems)
                       + "\nrun `callpulse topics create` (it creates missing topics; a topic with another partition "
                       "count must be deleted and created again, or kafka.partitions changed to match)")
            log.critical(message)
            await app.crash(RuntimeError(message))
            return
        reports = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS, **kafka.client_kwargs())
        await reports.start()
        reports.assign([TopicPartition(progress_topic.get_topic_name(), 0)])
        await reports.seek_to_end()  # reports sent before our first assignment would not count anyway
        consumer.subscribe([kafka.topic_events], listener=Rebalance())
        await consumer.start()
        sent: list[Awaitable] = []  # not yet known to be delivered
        reported_at = 0.0
        try:
            started_at = -1  # Rebalance.changes when reading last started from the committed offsets
            while not app.should_stop:
                assignment = Rebalance.changes
                if assignment != started_at:
                    if Rebalance.assigned and await restart_from_committed(consumer) and assignment == Rebalance.changes:
                        started_at = assignment
                    else:
                        await asyncio.sleep(0.05)  # the group is still rebalancing
                    continue
                fetched = await consumer.getmany(timeout_ms=int(stream.batch_max_seconds * 1000), max_records=stream.batch_max_events)
                if assignment != Rebalance.changes:
                    continue  # fetched under an assignment that is gone: read again after the next one
                sent += await take({tp: [(r.offset, r.value) for r in records] for tp, records in fetched.items()})
                for records in (await reports.getmany(timeout_ms=0)).values():
                    for r in records:
                        shared_progress.update(r.key, r.value)
                try:
                    progress = await read_progress(consumer)
                except IllegalStateError:
                    continue  # a rebalance took a partition away meanwhile; the new owner reads it again
                aligner.forget([tp for tp in list(aligner.newest) if tp not in progress])  # revoked while we read
                watch.retain("route", {tp.partition for tp in progress})
                for tp, (position, highwater) in progress.items():
                    if position is not None and highwater is not None:
                        watch.observe("route", tp.partition, position, highwater)
                now = time.time()
                everyone = consumer.partitions_for_topic(kafka.topic_events) or {None}  # None: not known yet
                owned = {tp.partition for tp in progress}
                others = [shared_progress.low_mark(p, now, Rebalance.assigned_at) for p in everyone - owned]
                horizon, low_marks = await send_ready(progress, others, sent)
                # Reports are for the other workers of the group: none while this one reads every partition.
                if everyone - owned and now - reported_at >= PROGRESS_REPORT_SECONDS:
                    for tp, low in low_marks.items():
                        await progress_topic.send(key=b"%d" % tp.partition, value=encode_report(low, now))
                    reported_at = now
                positions = {tp: position for tp, (position, _) in progress.items() if position is not None}
                offsets = aligner.commit_offsets(positions)
                offsets = {tp: o for tp, o in offsets.items() if committed.get(tp) != o}
                if offsets:
                    await delivered(sent, "first stage")
                # Commit only if the assignment is still the one the positions and held events
                # belong to (see Rebalance).
                if assignment != Rebalance.changes:
                    committed.clear()
                elif offsets:
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
    async def aggregate(stream_) -> None:  # stream_: a faust Stream (StreamT lacks noack)
        """Second stage: apply each queue batch to its model, write its changelog record.

        Messages are acknowledged by hand (an acknowledged message's offset may be committed), only
        after everything they wrote reached the broker (see `delivered`): for up to
        AGGREGATE_ACK_EVERY messages at once while more are waiting, at once when none is. Waiting
        after every message halved throughput on the embedded broker; trusting Faust to flush
        before it commits lost counts when a worker was stopped with SIGTERM in our tests.
        """
        manual = stream_.noack()
        waiting = manual.channel.queue  # messages already delivered to this agent
        agent_queue[:] = [waiting]
        agent_step[0] = AGENT_IDLE
        unacked = []
        pending: list[Awaitable] = []  # delivery futures of the unacknowledged messages' writes
        async for event in manual.events():
            message = event.message
            last_delivery[message.partition] = time.monotonic()
            agent_step[0] = f"ordering batch {message.offset} of partition {message.partition}"
            if await in_order(message):
                agent_step[0] = f"applying batch {message.offset} of partition {message.partition}"
                await apply(message, pending)
                unacked.append(event)
            if unacked and (len(unacked) >= AGGREGATE_ACK_EVERY or waiting.empty()):
                agent_step[0] = f"waiting for {len(pending)} write(s) to reach the broker"
                await delivered(pending, "second stage")
                agent_step[0] = f"acknowledging {len(unacked)} batch message(s)"
                for done in unacked:
                    if done.message.partition in accepting:  # else revoked meanwhile: the new owner reads it again
                        await manual.ack(done)
                unacked.clear()
            agent_step[0] = AGENT_IDLE

    async def in_order(message) -> bool:
        """Whether to apply this batch message now. A partition's messages are applied strictly in
        offset order from where the recovery found its reading starts (the committed offset, or the
        log's start; never the first message that happens to come, see start_offsets): a model skips a
        batch offset it has passed, so one applied out of order would hide the ones before it for
        good. A message that arrives while its partition's recovery is still running waits for
        it; one of a revoked partition, or from before the seek, is left to be read again. So is
        one beyond the expected one, fetched before the seek; if the expected one still has not
        come after AHEAD_OF_SEEK_TIMEOUT_SECONDS, messages were lost on the way: the worker stops
        (its successor reads from the committed offset) rather than seek inside Faust, whose
        gap bookkeeping would then commit past batches not applied yet."""
        partition = message.partition
        # `rebalancing` ends only after Faust sought the current assignment's partitions
        while partition not in accepting or not cast(FaustConsumer, app.consumer).flow_active or app.rebalancing:
            if message.tp not in app.consumer.assignment():
                return False  # revoked: its owner reads it again from the committed offset
            await asyncio.sleep(0.05)
        if message.generation_id is not None and message.generation_id != app.consumer_generation_id:
            return False  # fetched under an earlier assignment (waited here meanwhile): read again after the seek
        expected = next_offset[partition]  # set by the recovery: the committed offset, or the log's start
        if message.offset < expected:
            return False  # from before the seek: read again, or already applied
        if message.offset > expected:
            # Fetched before the seek (it set the position back, not what was already fetched):
            # the seek delivers it again after the expected ones. Not acknowledged: Faust would
            # commit past the expected ones once they are.
            since = ahead_since.setdefault(partition, time.monotonic())
            if time.monotonic() - since < AHEAD_OF_SEEK_TIMEOUT_SECONDS:
                return False
            reason = (f"second stage: batch message {expected} of partition {partition} did not arrive in "
                      f"{AHEAD_OF_SEEK_TIMEOUT_SECONDS:.0f} s, only later ones (now {message.offset}); stopping so "
                      f"that the partition is read again from its committed offset")
            log.critical(reason)
            await app.crash(RuntimeError(reason))
            return False
        ahead_since.pop(partition, None)
        next_offset[partition] = message.offset + 1
        return True

    def store(key: bytes, value: bytes | None) -> None:
        """Set or delete (None) a key in the table's store, without a changelog write."""
        if value is None:
            state_table.data.pop(key, None)
        else:
            state_table.data[key] = value

    async def apply(message, pending: list) -> None:
        """Apply one batch message; its writes' delivery futures go to `pending`."""
        handled[message.partition] = message.offset + 1
        result = states.apply_batch(ev.key_text(message.key), message.partition, message.offset, ev.unpack(message.value))
        if result is None:  # redelivered after a crash, its effect is already in the state
            return
        for key, value in states.changelog_writes(result):
            # what `state_table[key] = value` does, keeping the delivery future
            store(key, value)
            pending.append(state_table.send_changelog(message.partition, key, value))
        health.count_batch(result)
        pending += await dead_letter(result.rejected, "aggregate")
        pending += await publish_intervals(result.intervals)

    @app.timer(interval=1.0)
    async def watch_aggregate() -> None:
        await check_aggregate_progress()

    async def check_aggregate_progress() -> None:
        """Second stage progress, read beside the agent (a stuck agent cannot report itself)."""
        owned = {tp.partition: tp for tp in app.consumer.assignment() if tp.topic == kafka.topic_batches}
        watch.retain("aggregate", set(owned))
        watch.recovering("aggregate", set(owned) - accepting)
        await stop_if_recovery_stuck(owned)
        for partition, tp in owned.items():
            try:
                end = app.consumer.highwater(tp)
            except AssertionError:  # revoked since assignment() (aiokafka asserts): next tick
                return
            if end is not None and partition in handled:
                watch.observe("aggregate", partition, handled[partition], end)
        stalled = set(watch.stalled()["aggregate"])  # also judged by the broker probe between ticks
        if stalled - stall_logged:
            log.error("second stage stalled on partition(s) %s: %s", sorted(stalled), fetch_diagnostics(owned, stalled))
        stall_logged.clear()
        stall_logged.update(stalled)
        await stop_if_fetch_frozen(owned, stalled)

    def fetch_diagnostics(owned: dict, partitions: set[int]) -> str:
        """What the agent does and what Faust and aiokafka hold about these batches partitions."""
        consumer = cast(FaustConsumer, app.consumer)
        kafka_consumer = getattr(getattr(consumer, "_thread", None), "_consumer", None)
        states_ = getattr(getattr(kafka_consumer, "_subscription", None), "subscription", None)
        assignment = getattr(states_, "assignment", None)
        parts = []
        for partition in sorted(partitions):
            tp = owned.get(partition)
            if tp is None:
                parts.append(f"p{partition} not assigned")
                continue
            where = [name for name, held in (("active", consumer._active_partitions or ()),
                                             ("paused", consumer._paused_partitions),
                                             ("buffered", consumer._buffered_partitions)) if tp in held]
            state = assignment.state_value(tp) if assignment is not None else None
            kafka_side = ("no aiokafka state" if state is None else
                          f"aiokafka position {getattr(state, '_position', '?')} ({getattr(state, '_status', '?')}), "
                          f"paused {getattr(state, 'paused', '?')}, fetched and not yet taken "
                          f"{tp in getattr(getattr(kafka_consumer, '_fetcher', None), '_records', ())}")
            parts.append(f"p{partition}: faust {'/'.join(where) or 'neither active nor paused'}, read offset "
                         f"{consumer._read_offset.get(tp)}, committed {consumer._committed_offset.get(tp)}, "
                         f"{kafka_side}, handled {handled.get(partition)}, next {next_offset.get(partition)}")
        return (f"agent {agent_step[0]}; flow active {consumer.flow_active}, rebalancing {app.rebalancing}, "
                f"accepting {sorted(accepting)}, agent queue {agent_queue[0].qsize() if agent_queue else -1}, "
                f"unacked {len(consumer._unacked_messages)}; " + "; ".join(parts))

    async def stop_if_fetch_frozen(owned: dict, stalled: set[int]) -> None:
        """Seen in two 60-kill chaos runs: after a rebalance during recovery, no batch message of a
        partition reached the idle agent any more, outside any rebalance, although the broker held
        more; the worker sat frozen. The cause inside Faust is not known, and seeking inside Faust
        could commit past batches not applied yet (its gap bookkeeping, see in_order), so the worker
        stops instead: the partition's next owner, or this worker restarted, reads it again from
        its committed offset. Judged only while the broker answers, so an outage is no reason."""
        if (not stalled or agent_step[0] != AGENT_IDLE or app.rebalancing or watch.unanswered_since is not None
                or not cast(FaustConsumer, app.consumer).flow_active):
            return
        now = time.monotonic()
        frozen = sorted(p for p in stalled if p in owned and p in accepting
                        and now - last_delivery.get(p, now) >= FETCH_FROZEN_SECONDS)
        if frozen:
            reason = (f"second stage: no batch message of partition(s) {frozen} reached the agent for "
                      f"{FETCH_FROZEN_SECONDS:.0f} s although the broker has more; stopping so that they are read "
                      f"again from their committed offsets ({fetch_diagnostics(owned, set(frozen))})")
            log.critical(reason)
            await app.crash(RuntimeError(reason))

    async def stop_if_recovery_stuck(owned: dict) -> None:
        """A recovery that never completes leaves the worker owning partitions it neither applies
        nor exports, answering its web requests as if healthy: Faust's recovery has hung before
        (faust-streaming #21, #74), and an exception in its recovery callback is never raised
        (it runs the callbacks as tasks nobody awaits). /healthz reports such partitions after 30 s
        (progress.py); after RECOVERY_STUCK_SECONDS without any progress of the changelog reading
        either, the worker stops so that an orchestrator starts it afresh and the group rebalances.
        Judged only while the broker answers, so an outage is no reason."""
        now = time.monotonic()
        recovery = cast(TableManager, app.tables).recovery
        remaining = recovery.active_remaining_total()
        # progress: Faust reads the changelog, or our own recovery step runs; an outage counts from its end
        step_until = resuming.get(rebalances[0], -math.inf)  # this assignment's own recovery step
        if remaining != recovery_moved[0] or watch.unanswered_since is not None or now < step_until:
            recovery_moved[:] = [remaining, now]
        if app.should_stop or now - recovery_moved[1] < RECOVERY_STUCK_SECONDS:
            return
        # A partition counts from when it was last found not exporting, through rebalances (as on
        # /healthz), but only once the latest assignment is as old: a storm of overtaken
        # recoveries is left to end by itself.
        settled = now - assigned_at[0] >= RECOVERY_STUCK_SECONDS
        waited = {p: seconds for p, seconds in watch.unrecovered_seconds("aggregate").items()
                  if settled and p in owned and seconds >= RECOVERY_STUCK_SECONDS}
        began = rebalance_began[0]
        if waited:
            what = f"partition(s) {sorted(waited)} owned for {max(waited.values()):.0f} s without a completed recovery"
        elif began is not None and now - began >= RECOVERY_STUCK_SECONDS:
            what = f"a rebalance began {now - began:.0f} s ago and has not ended"
        else:
            return
        reason = (f"second stage: {what}, and no changelog record read for {now - recovery_moved[1]:.0f} s; "
                  f"stopping so that a fresh start recovers them (Faust in recovery {recovery.in_recovery}, "
                  f"changelog records remaining {remaining}; {fetch_diagnostics(owned, set(waited))})")
        log.critical(reason)
        await app.crash(RuntimeError(reason))

    probe_state: dict = {"clients": None}

    async def probe_clients() -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if app.should_stop:  # close_probe_clients has run or is about to: make none it would miss
            raise RuntimeError("the worker is stopping")
        if probe_state["clients"] is None:
            admin = AIOKafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=4000)
            consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, request_timeout_ms=4000,
                                        **kafka.client_kwargs())
            probe_state["clients"] = (admin, consumer)
            await admin.start()
            await consumer.start()
        return probe_state["clients"]

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # Faust types receivers as (sender, *args, signal=...)
    async def close_probe_clients(sender=None, **kwargs) -> None:
        clients, probe_state["clients"] = probe_state["clients"], None
        for client in clients or ():
            try:
                await asyncio.wait_for(client.close() if hasattr(client, "close") else client.stop(), 2)
            except Exception as exc:  # noqa: BLE001 - closing a client of a broker that does not answer
                log.debug("closing a broker probe client: %r", exc)

    @app.timer(interval=BROKER_PROBE_SECONDS)
    async def probe_broker() -> None:
        """Does the broker answer, and does it still hold what the stages read? A broker restarted
        without its storage (the embedded one keeps everything in memory) answers with the topics
        gone or shorter: say so, the numbers are no longer backed by the log."""
        topics = {"route": kafka.topic_events, "aggregate": kafka.topic_batches}
        try:
            admin, consumer = await asyncio.wait_for(probe_clients(), BROKER_PROBE_SECONDS)
            existing = set(await asyncio.wait_for(admin.list_topics(), BROKER_PROBE_SECONDS))
            tps = [TopicPartition(t, p) for t in topics.values() if t in existing for p in range(kafka.partitions)]
            ends = await asyncio.wait_for(consumer.end_offsets(tps), BROKER_PROBE_SECONDS) if tps else {}
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out, or not ready: new clients next time
            await close_probe_clients()
            watch.answered(False)
            log.debug("broker probe failed: %r", exc)
            return
        watch.answered(True)
        for stage, topic in topics.items():
            if topic not in existing:
                watch.lost(stage, f"{stage}: topic {topic!r} no longer exists on the broker: the records read from "
                                  f"it are lost; numbers built from them are not in the log any more")
        for tp, end in ends.items():
            watch.probed("route" if tp.topic == kafka.topic_events else "aggregate", tp.partition, end)

    @app.timer(interval=1.0)
    async def publish_due_intervals() -> None:
        """Interval records no event triggers: after a rebuild, and for queues gone quiet."""
        await delivered(await publish_intervals(states.due_interval_records()), "interval records")

    @app.timer(interval=FORECAST_CHECK_SECONDS)
    async def reload_forecast() -> None:
        """Load the forecast file again when it changed; parsed in a thread (weeks of intervals for
        hundreds of queues take seconds), the new forecast swapped in whole."""
        if states.forecast is not None:
            await asyncio.get_running_loop().run_in_executor(None, states.forecast.reload_if_changed)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as above
    async def park_models(sender, revoked, **kwargs) -> None:
        rebalances[0] += 1
        if rebalance_began[0] is None:
            rebalance_began[0] = time.monotonic()
        accepting.clear()
        states.park()  # nothing is exported while the group rebalances

    owned_before: set[int] = set()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # as above
    async def note_assignment(sender, assigned, **kwargs) -> None:
        """Every assignment counts, also one whose recovery is overtaken before it completes here
        (resume_models then never runs for it): a partition it did not give to this worker may
        have been worked on elsewhere meanwhile, so its model is not kept nor its tail trusted."""
        nonlocal owned_before
        rebalance_began[0], assigned_at[0] = None, time.monotonic()
        partitions = {tp.partition for tp in assigned if tp.topic == kafka.topic_batches}
        owned_before &= partitions
        states.assigned(partitions)

    @state_table.on_recover
    async def resume_models() -> None:
        """After recovery (start-up and every rebalance): keep, rebuild or forget each queue."""
        rebalance = rebalances[0]
        try:
            await recover_models(rebalance)
        finally:
            resuming.pop(rebalance, None)

    async def recover_models(rebalance: int) -> None:
        nonlocal owned_before
        if stale_recovery():
            log.info("second stage: a recovery finished after the next assignment arrived; waiting for that one's")
            return
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == kafka.topic_batches}
        # complete_recovery may read each partition's changelog tail for up to its timeout
        tails_seconds = len(owned) * (CHANGELOG_TAIL_TIMEOUT_SECONDS + 30.0)
        resuming[rebalance] = time.monotonic() + 60.0 + tails_seconds  # with the two 30 s waits below
        # Faust neither awaits errors of this callback nor cancels it when the next rebalance
        # starts: an error would leave the agent waiting for good, so it stops the worker; and a
        # callback overtaken by a rebalance must not mark its (stale) partitions as complete.
        try:
            rebuilt = states.resume(owned, list(state_table.data.items()))
        except Exception as exc:  # noqa: BLE001 - a model that cannot be rebuilt: see above
            log.exception("second stage: the models of partitions %s could not be rebuilt from the changelog; "
                          "stopping this worker", sorted(owned))
            await app.crash(exc)
            return
        # Models of partitions not owned now are gone: should this recovery be overtaken, they count
        # as new the next time (their changelog tail read again), whatever happens below.
        owned_before &= owned
        try:
            committed = await asyncio.wait_for(committed_batch_offsets(owned), 30)
            start = await asyncio.wait_for(start_offsets(committed), 30)
            kept = owned & owned_before
            await asyncio.wait_for(complete_recovery(owned, committed, kept), tails_seconds)
        except Exception as exc:  # noqa: BLE001 - any error: see above
            if rebalance != rebalances[0]:
                return  # overtaken: the next recovery starts afresh
            log.critical("second stage: recovery of partitions %s failed (%r); stopping this worker", sorted(owned), exc)
            await app.crash(exc)
            return
        if rebalance != rebalances[0] or stale_recovery():
            log.warning("second stage: a rebalance started during the recovery of partitions %s", sorted(owned))
            return
        owned_before = owned
        for partition, offset in start.items():
            handled[partition] = next_offset[partition] = offset
            ahead_since.pop(partition, None)
            last_delivery[partition] = time.monotonic()
        accepting.update(owned)
        log.info("own %d queue(s) and agent(s) on partitions %s; rebuilt from the changelog: %s; per partition (batch "
                 "to apply first, newest applied, model kept or new): %s", len(states.models), sorted(owned),
                 ", ".join(ev.display_key(key) for key in rebuilt) or "none", ", ".join(
                     f"p{p} ({start[p]}, {states.newest_batch(p)}, {'kept' if p in kept else 'new'})"
                     for p in sorted(owned)))

    def stale_recovery() -> bool:
        """Whether a newer assignment waits for its recovery. Faust (0.15.3) can complete the
        recovery of an assignment after the next one arrived: its wait for the changelog swallows
        the "rebalance again" signal, and the table callbacks it starts then run on their own while
        the next recovery reads. Seen in the 60-kill chaos run: a model made from a half-read
        table, batches applied before the seek."""
        return cast(TableManager, app.tables).recovery.signal_recovery_start.is_set()

    async def committed_batch_offsets(partitions: set[int]) -> dict[int, int]:
        """The second stage's committed offset of each batches partition (0 where none is)."""
        if not partitions:
            return {}
        admin = AIOKafkaAdminClient(**kafka.client_kwargs())
        try:
            await admin.start()
            batch_tps = [TopicPartition(kafka.topic_batches, p) for p in sorted(partitions)]
            committed = await admin.list_consumer_group_offsets(app.conf.id, partitions=batch_tps)
        finally:
            await admin.close()
        return {tp.partition: max(meta.offset, 0) for tp, meta in committed.items()}

    async def start_offsets(committed: dict[int, int]) -> dict[int, int]:
        """Where each batches partition's reading starts: its committed offset, or the log's start
        where that is later (none committed, or retention deleted past it), as the consumer resets."""
        if not committed:
            return {}
        tps = [TopicPartition(kafka.topic_batches, p) for p in sorted(committed)]
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **kafka.client_kwargs())
        try:
            await consumer.start()
            earliest = await consumer.beginning_offsets(tps)
        finally:
            await consumer.stop()
        return {tp.partition: max(committed[tp.partition], earliest[tp]) for tp in tps}

    async def complete_recovery(partitions: set[int], committed: dict[int, int] | None = None,
                                kept: AbstractSet[int] = frozenset()) -> None:
        """Check that the state of every owned partition reaches as far as its batches partition
        was acknowledged, and read its changelog again when it does not.

        A partition rebuilt from the table can fall short: Faust recovers a table up to the end
        offset the broker reports when recovery starts, and some Kafka-protocol brokers under-report
        it (Tansu 0.6.0 reports the base offset of the last record batch plus one), so the newest
        records are silently left out. A model kept from the previous assignment (`kept`) could fall
        short too, if another worker applied batches of its partition in an assignment this worker
        never received (a member dropped from the group while it rejoins; not seen so far). Every
        batch message applied writes a record and is acknowledged only after that record is
        flushed, so the committed offset says which record must be there.
        """
        if committed is None:
            committed = await committed_batch_offsets(partitions)
        for partition in sorted(partitions):
            last_acknowledged = committed[partition] - 1
            newest = states.newest_batch(partition)
            if newest >= last_acknowledged:
                continue
            if partition in kept:
                log.warning("partition %d: the model kept here applied batches up to %d, but batch %d was "
                            "acknowledged (by another worker meanwhile); rebuilding it from the changelog",
                            partition, newest, last_acknowledged)
            else:
                log.warning("changelog recovery of partition %d ended before batch %d, which the previous owner "
                            "acknowledged (newest found: %d); reading the changelog again",
                            partition, last_acknowledged, newest)
            records = await read_changelog(partition, last_acknowledged)
            for key, value in records.items():
                store(key, value)
            states.rebuild_partition(partition, records.items())
            if states.newest_batch(partition) < last_acknowledged:
                log.error("partition %d: the changelog holds no record of batch %d after %d s; its queues may miss "
                          "events", partition, last_acknowledged, CHANGELOG_TAIL_TIMEOUT_SECONDS)

    async def read_changelog(partition: int, batch_offset: int) -> dict[bytes, bytes | None]:
        """The latest value of every key in one changelog partition, read from its start until a
        record for `batch_offset` (or a later one) has been seen and a fetch comes back empty. Ends
        by fetching, not at the end offset the broker reports, which is what could not be trusted."""
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    **kafka.client_kwargs())
        latest: dict[bytes, bytes | None] = {}
        try:
            await consumer.start()
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

    @app.page("/api/agents")
    async def agents_json(web, request):
        """Every agent of this worker's partitions (query `queue=` keeps those serving it, or
        whose call in progress is in it)."""
        now, agents = states.read_agents(request.query.get("queue"))
        body = {"worker": f"{socket.gethostname()}:{stream.web_port}", "generated_at": states.wall(), "clock": now,
                "agents": agents}
        return web.bytes(orjson.dumps(body), headers={"Content-Type": "application/json"})

    @app.page("/livez")
    async def livez(web, request):
        """Liveness for an orchestrator: the process and its web server answer. /healthz is for
        readiness and alerts: restarting workers does not help when the broker is down."""
        return web.bytes(b"ok\n", headers={"Content-Type": "text/plain"})

    @app.page("/healthz")
    async def healthz(web, request):
        problems = watch.problems()
        if problems:
            return web.bytes("".join(f"{p}\n" for p in problems).encode(), status=503,
                             headers={"Content-Type": "text/plain; charset=utf-8"})
        return web.bytes(b"ok\n", headers={"Content-Type": "text/plain"})

    return SimpleNamespace(
        app=app, config=config, states=states, health=health, registry=registry, router=router,
        batches_topic=batches_topic, dead_letter_topic=dead_letter_topic, intervals_topic=intervals_topic, aligner=aligner,
        state_table=state_table, take=take, send_ready=send_ready, aggregate=aggregate,
        complete_recovery=complete_recovery, resume_models=resume_models, watch=watch, accepting=accepting,
        next_offset=next_offset, check_aggregate_progress=check_aggregate_progress, agent_step=agent_step,
        last_delivery=last_delivery, rebalance_began=rebalance_began, assigned_at=assigned_at, resuming=resuming,
        rebalances=rebalances,
    )


def json_view(view: dict) -> dict:
    """A queue's read() view with the histogram objects turned into plain data."""
    out = {k: v for k, v in view.items() if not k.endswith("_histogram")}
    for name in ("answer_wait_histogram", "abandon_wait_histogram"):
        hist = view[name]
        out[name] = {"buckets": [[b if b != float("inf") else "+Inf", n] for b, n in hist.cumulative()], "sum": hist.sum}
    return out


pipeline = create_app(load_config())
app = pipeline.app  # `faust -A callpulse.pipeline.app worker` finds it here (`callpulse worker` runs it)
