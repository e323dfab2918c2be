"""Second stage: apply per-queue batches to the queue models and make them durable.

Agent shards are keyed and kept like queues (events.agent_key): "queue" below means either kind of
key; a shard's model is a kpi/agents.py AgentShard, exported by read_agents(), not by read_all().

Durability uses one Faust table (changelog topic) per app, with two kinds of records per queue:
- a *batch record* for every batch applied: the accepted original events, keyed by the batch's
  offset, written in the same step as the state change it causes (one changelog message, so the
  events and their effect cannot be separated by a crash);
- a *snapshot* of the whole model every `snapshot_interval_seconds`, after which batch records that
  an older snapshot already covers are deleted.
A worker that takes over a partition rebuilds each queue as snapshot + the batch records after it,
replayed through the same deterministic fold. The model remembers the newest batch offset applied,
so a batch redelivered after a crash (Kafka is at-least-once) is skipped, and event-id
deduplication inside the model catches events that the first stage sent twice.
This module knows nothing of Faust; `app.py` passes table writes through.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from .. import events as ev
from ..kpi.agents import AgentSettings, AgentShard
from ..kpi.forecast import ForecastFile, compare
from ..kpi.intervals import record_key
from ..kpi.model import APPLIED, CONTACT, EXPORT_ERRORS, LATE, TOO_LATE, QueueModel

SNAPSHOT, BATCH = b"s", b"b"
# A snapshot is also due after this many events in a queue's batch records: the in-memory table
# holds the records until a snapshot covers them, so this bounds memory at any event rate.
SNAPSHOT_EVERY_EVENTS = 10_000
# Batch records a snapshot made obsolete are deleted a few per applied batch, not all at once: a
# burst of hundreds of deletions per queue held up every producer flush, and with it the live
# numbers, for seconds every snapshot interval.
DELETIONS_PER_BATCH = 8
# Histogram bounds of waits (seconds); every configured threshold and short-abandon time is added.
WAIT_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)


class StreamClock:
    """Event-time clock of a worker: the newest event time seen, running on with the wall clock.

    Windows and live waits are read at this clock, so a replay of history is evaluated as of the
    replayed time, and a quiet queue still decays because the clock keeps moving between events.
    Before any event it is the wall clock.
    """

    def __init__(self, wall: Callable[[], float] = time.time):
        self.wall = wall
        self._anchor: tuple[float, float] | None = None  # (event time, wall time when seen)

    def observe(self, event_time: float) -> None:
        if self._anchor is None or event_time > self.now():
            self._anchor = (event_time, self.wall())

    def now(self) -> float:
        if self._anchor is None:
            return self.wall()
        event_time, seen_at = self._anchor
        return event_time + (self.wall() - seen_at)


def state_key(queue: str, kind: bytes, offset: int = 0) -> bytes:
    key = ev.key_bytes(queue) + b"\x00" + kind
    return key + b"%016d" % offset if kind == BATCH else key


def split_key(key: bytes) -> tuple[str, bytes, int]:
    queue, _, rest = key.rpartition(b"\x00")
    kind = rest[:1]
    return ev.key_text(queue), kind, int(rest[1:]) if kind == BATCH else -1


def record_offset(key: bytes, value: bytes) -> int:
    """The newest batch offset a table record accounts for: a batch record's own offset, or the
    offset a snapshot was taken at."""
    _, kind, offset = split_key(key)
    return offset if kind == BATCH else _split_record(value)[0]["offset"]


def _record(header: dict, payload: bytes) -> bytes:
    return orjson.dumps(header) + b"\n" + payload


def _split_record(value: bytes) -> tuple[dict, bytes]:
    header, _, payload = value.partition(b"\n")
    return orjson.loads(header), payload


@dataclass
class BatchResult:
    queue: str
    offset: int
    accepted: list[bytes] = field(default_factory=list)
    rejected: list[ev.Rejected] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)  # applied / late / duplicate / too_late / contact
    lags: list[float] = field(default_factory=list)  # wall clock minus event time, per applied event
    intervals: list[dict] = field(default_factory=list)  # interval records this batch closed


class QueueStates:
    """All queue models of one worker, keyed by queue, with their partition."""

    def __init__(self, config, clock: StreamClock | None = None, wall: Callable[[], float] = time.time):
        self.config = config
        self.clock = clock or StreamClock(wall)
        self.wall = wall
        self.models: dict[str, QueueModel | AgentShard] = {}
        self.partition_of: dict[str, int] = {}
        self.histogram_bounds = sorted(set(WAIT_BUCKETS) | set(config.all_thresholds()))
        agents = config.agents
        self._agent_settings = AgentSettings(
            self._agent_day, config.stream.lateness_seconds, config.stream.dedup_seconds, names=agents.names,
            scheduled_seconds=agents.scheduled_seconds, card=agents.scorecard,
            thresholds_for=lambda queue: config.queue(queue).thresholds_seconds)
        self._batches_since_snapshot: dict[str, list[int]] = {}
        self._last_snapshot: dict[str, tuple[float, int]] = {}  # queue -> (wall time, covered offset)
        self._covered_by_previous: dict[str, int] = {}
        self._obsolete: dict[str, list[int]] = {}  # batch record offsets waiting to be deleted
        self._events_since_snapshot: dict[str, int] = {}
        self._parked: dict[str, QueueModel | AgentShard] = {}  # models during a rebalance, not exported
        # Partitions whose models were kept or rebuilt at the last resume(); None before the first
        # (a worker without rebalances, as in the unit tests, owns whatever it applies).
        self.owned: set[int] | None = None
        self._owned_before: set[int] | None = None
        # Partitions whose recovery is complete (app.py shares its set); only their queues are
        # exported and publish preliminary interval records. None: every partition (as in the unit
        # tests, no rebalances). Between resume() and the end of the recovery check a model can
        # still lack the changelog's tail: shown, a counter could go back for a scrape.
        self.ready: set[int] | None = None
        self.republish: list[dict] = []  # interval records to publish again after a rebuild
        self._published: dict[tuple[str, int, float], bytes] = {}  # digest of the last interval record sent per key
        path = config.stream.forecast_file
        self.forecast = ForecastFile(path, config, wall) if path else None  # problems are logged, never raised

    def _new_model(self, queue: str) -> QueueModel | AgentShard:
        stream = self.config.stream
        if ev.is_agent_key(queue):
            return AgentShard(self._agent_settings)
        key = stream.caller_hash_key.encode() if stream.caller_hash_key else None
        return QueueModel(self.config.queue(queue), stream.lateness_seconds, self.histogram_bounds, stream.dedup_seconds,
                          caller_key=key)

    def _agent_day(self, queue: str | None) -> tuple:
        """An agent's business day and interval lengths: [agents] timezone if set, else its first
        queue's (queue_defaults' when none is known); the intervals are its first queue's."""
        cfg = self.config.queue(queue) if queue is not None else self.config.queue_defaults
        agents = self.config.agents
        if agents.timezone is not None:
            return agents.timezone, agents.business_day_start, cfg.interval_minutes
        return cfg.timezone, cfg.business_day_start, cfg.interval_minutes

    def model_for(self, queue: str, partition: int) -> QueueModel | AgentShard:
        model = self.models.get(queue)
        if model is None:
            model = self.models[queue] = self._new_model(queue)
            self.partition_of[queue] = partition
            self._last_snapshot[queue] = (self.wall(), -1)
        return model

    # ---- live processing ---------------------------------------------------------------------

    def apply_batch(self, queue: str, partition: int, offset: int, raws: Iterable[bytes]) -> BatchResult | None:
        """Apply one batch message; None when that offset was applied before (a redelivery)."""
        model = self.model_for(queue, partition)
        if offset <= model.applied_offset:
            return None
        result = BatchResult(queue, offset)
        wall_now = self.wall()
        # An agent's batch holds copies of events its queues also get: those copies decide the
        # dead letters and the processing lag; the agent's own too-late events are only counted.
        of_queue = model if isinstance(model, QueueModel) else None
        for event, t, raw, outcome in self._fold(model, raws):
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
            if outcome in (APPLIED, LATE):
                result.accepted.append(raw)
                if of_queue is not None:
                    result.lags.append(wall_now - t)
            elif outcome == CONTACT:  # kept for a rebuild; its lag is its own queue's
                result.accepted.append(raw)
            elif outcome == TOO_LATE and of_queue is not None:
                horizon = of_queue.watermark - of_queue.lateness
                result.rejected.append(ev.Rejected(ev.TOO_LATE, f"time {event['time']} is older than queue {queue!r} watermark minus lateness ({horizon:.3f})", raw))
        for event, raw in model.unmatched:
            result.rejected.append(ev.Rejected(ev.UNMATCHED, f"{event['type']} for call {event['call_id']!r} in queue {queue!r}: no call.offered within the lateness", raw))
        model.unmatched.clear()
        result.intervals, model.closed_intervals = model.closed_intervals, []
        model.applied_offset = offset
        return result

    def _fold(self, model: QueueModel | AgentShard, raws: Iterable[bytes]) -> Iterator[tuple[dict, float, bytes, str]]:
        """Apply events to a model in order (live and when rebuilding), yielding each with its outcome."""
        for raw in raws:
            event = orjson.loads(raw)
            t = ev.parse_time(event["time"])
            self.clock.observe(t)
            yield event, t, raw, model.apply(event, t, raw)

    def changelog_writes(self, result: BatchResult) -> Iterator[tuple[bytes, bytes | None]]:
        """Table writes for an applied batch: its batch record, and a snapshot when one is due."""
        queue, offset = result.queue, result.offset
        header = {"offset": offset, "partition": self.partition_of[queue]}
        yield state_key(queue, BATCH, offset), _record(header, ev.pack(result.accepted))
        obsolete = self._obsolete.get(queue)
        if obsolete:
            for old in obsolete[:DELETIONS_PER_BATCH]:
                yield state_key(queue, BATCH, old), None
            del obsolete[:DELETIONS_PER_BATCH]
        self._batches_since_snapshot.setdefault(queue, []).append(offset)
        self._events_since_snapshot[queue] = self._events_since_snapshot.get(queue, 0) + len(result.accepted)
        taken_at, _ = self._last_snapshot[queue]
        if (self.wall() - taken_at >= self.config.stream.snapshot_interval_seconds
                or self._events_since_snapshot[queue] >= SNAPSHOT_EVERY_EVENTS):
            yield from self._snapshot(queue)

    def _snapshot(self, queue: str) -> Iterator[tuple[bytes, bytes | None]]:
        model = self.models[queue]
        payload = zlib.compress(orjson.dumps(model.to_state(), option=orjson.OPT_NON_STR_KEYS), 1)
        header = {"offset": model.applied_offset, "partition": self.partition_of[queue]}
        yield state_key(queue, SNAPSHOT), _record(header, payload)
        # Only the batch records the *previous* snapshot covered become obsolete: that snapshot has
        # surely reached the broker, so no crash can leave a gap between a snapshot and the records
        # after it. They are deleted a few per batch from now on (DELETIONS_PER_BATCH).
        previous = self._covered_by_previous.get(queue, -1)
        written = self._batches_since_snapshot.get(queue, [])
        self._obsolete.setdefault(queue, []).extend(o for o in written if o <= previous)
        self._batches_since_snapshot[queue] = [o for o in written if o > previous]
        self._covered_by_previous[queue] = model.applied_offset
        self._last_snapshot[queue] = (self.wall(), model.applied_offset)
        self._events_since_snapshot[queue] = 0

    # ---- rebalancing and recovery ------------------------------------------------------------

    def park(self) -> None:
        """Partitions are being revoked: stop exporting until the new assignment is known."""
        self._parked.update(self.models)
        self.models = {}
        if self.owned is not None:
            if self._owned_before is None:  # a second revocation before resume() keeps the first's
                self._owned_before = self.owned
            self.owned = set()

    def assigned(self, partitions: set[int]) -> None:
        """An assignment arrived; its recovery may never complete here (a newer one overtakes it).
        A model is kept at the next resume() only if every assignment since the last resume()
        gave its partition to this worker: in between, another worker may have applied batches."""
        if self._owned_before is not None:
            self._owned_before &= partitions

    def resume(self, owned_partitions: set[int], records: Iterable[tuple[bytes, bytes | None]]) -> list[str]:
        """The new assignment is known and the table recovered: keep the models of partitions this
        worker owned before and still owns, rebuild those of the other owned partitions from the
        table (snapshot, then the batch records after it), forget the rest. A model of a partition
        not owned before is never kept, even if one exists: it can only come from a batch applied
        while the assignment was changing, and holds that batch alone. Returns the queues rebuilt."""
        parked, self._parked = self._parked, {}
        self.models.update(parked)
        before = self._owned_before if self._owned_before is not None else self.owned
        kept = set(owned_partitions) if before is None else set(owned_partitions) & before
        for queue in [q for q in self.models if self.partition_of.get(q) not in kept]:
            self._forget(queue)
        self.owned, self._owned_before = set(owned_partitions), None
        return self._rebuild_from(records, owned_partitions)

    def newest_batch(self, partition: int) -> int:
        """The newest batch offset applied to any queue of a partition (-1: none). Every batch
        message applied writes a record, so after a complete rebuild this is at least the offset of
        the last batch message the previous owner acknowledged."""
        offsets = [m.applied_offset for q, m in self.models.items() if self.partition_of.get(q) == partition]
        return max(offsets, default=-1)

    def rebuild_partition(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> list[str]:
        """Rebuild every queue of a partition again, from a fuller set of table records."""
        for queue in [q for q, p in self.partition_of.items() if p == partition]:
            self._forget(queue)
        return self._rebuild_from(records, {partition})

    def _rebuild_from(self, records: Iterable[tuple[bytes, bytes | None]], partitions: set[int]) -> list[str]:
        """Rebuild the queues of `partitions` that have no model yet from table records."""
        by_queue: dict[str, dict] = {}
        for key, value in records:
            if value is None:
                continue
            queue, kind, offset = split_key(key)
            header, payload = _split_record(value)
            if queue in self.models or header["partition"] not in partitions:
                continue
            entry = by_queue.setdefault(queue, {"snapshot": None, "batches": [], "partition": header["partition"]})
            if kind == SNAPSHOT:
                entry["snapshot"] = (header, payload)
            else:
                entry["batches"].append((offset, payload))
        for queue, entry in by_queue.items():
            self._rebuild(queue, entry)
        return sorted(by_queue)

    def _rebuild(self, queue: str, entry: dict) -> None:
        model = self.model_for(queue, entry["partition"])
        covered = -1
        if entry["snapshot"] is not None:
            header, payload = entry["snapshot"]
            model.load_state(orjson.loads(zlib.decompress(payload)))
            covered = header["offset"]
        batches = sorted(entry["batches"])
        for offset, payload in batches:
            if offset <= covered:
                continue
            for _ in self._fold(model, ev.unpack(payload)):
                pass
            model.applied_offset = offset
        model.unmatched.clear()  # already sent to the dead letters when first applied
        # Interval records the previous owner may have closed without getting them out: publish
        # the recent ones again (same key and content, so a compacted topic keeps one).
        self.republish.extend(record for _, record in model.final_records.values())
        model.closed_intervals.clear()
        self._batches_since_snapshot[queue] = [o for o, _ in batches]
        self._covered_by_previous[queue] = covered

    def _forget(self, queue: str) -> None:
        self.models.pop(queue, None)
        self.partition_of.pop(queue, None)
        self._batches_since_snapshot.pop(queue, None)
        self._covered_by_previous.pop(queue, None)
        self._obsolete.pop(queue, None)
        self._last_snapshot.pop(queue, None)
        self._events_since_snapshot.pop(queue, None)

    # ---- interval reports ----------------------------------------------------------------------

    def interval_messages(self, records: Iterable[dict]) -> list[tuple[bytes, bytes]]:
        """(key, value) messages for interval records, leaving out any identical to the last one
        this worker sent for the same queue and interval."""
        out = []
        for record in records:
            if "agent_id" in record:  # an agent's record (kpi/agents.py), for the agent intervals topic
                # a day is keyed by its date: a changed day start replaces its record, not adds one
                when = record["business_day"] if record["period"] == "day" else record["start_epoch"]
                key: tuple = ("agent", record["agent_id"], record["period"], record["interval_minutes"], when)
                message_key = orjson.dumps(list(key[1:]))
            else:
                key = (record["queue"], record["interval_minutes"], record["start_epoch"])
                message_key = record_key(*key)
            value = orjson.dumps(record)
            digest = hashlib.blake2b(value, digest_size=8).digest()
            if self._published.get(key) != digest:
                self._published[key] = digest
                out.append((message_key, value))
        if len(self._published) > 50_000:  # only suppresses repeats: safe to forget
            self._published.clear()
        return out

    def due_interval_records(self) -> list[dict]:
        """Records to publish without waiting for an event: ones to send again after a rebuild, and
        preliminary ones of intervals that ended (by the stream clock) in queues gone quiet."""
        now = self.clock.now()
        records, self.republish = self.republish, []
        for _, model in self._ready_models():
            records += model.pending_interval_records(now)
        for key, shard in self.models.items():
            if isinstance(shard, AgentShard) and (self.ready is None or self.partition_of.get(key) in self.ready):
                records += shard.pending_interval_records(now)
        return records

    def _ready_models(self) -> list[tuple[str, QueueModel]]:
        return sorted((queue, model) for queue, model in self.models.items() if isinstance(model, QueueModel)
                      and (self.ready is None or self.partition_of.get(queue) in self.ready))

    def read_agents(self, queue: str | None = None) -> tuple[float, list[dict]]:
        """Every agent of the partitions whose recovery completed (`queue`: those serving it, or
        with a call in progress in it), read at the stream clock, sorted by name (or id)."""
        now = self.clock.now()
        views = [view for key, model in self.models.items() if isinstance(model, AgentShard)
                 and (self.ready is None or self.partition_of.get(key) in self.ready) for view in model.read(now, queue)]
        views.sort(key=lambda v: ((v["agent_name"] or v["agent_id"]).casefold(), v["agent_id"]))
        return now, views

    # ---- reading -----------------------------------------------------------------------------

    def read_all(self) -> tuple[float, dict[str, dict]]:
        now = self.clock.now()
        views = {}
        for queue, model in self._ready_models():
            view = EXPORT_ERRORS.run(queue, "read", model.read, now)
            if view is None:  # this queue alone is left out of this read (counted, logged once)
                continue
            view["forecast"] = EXPORT_ERRORS.run(queue, "forecast", self._forecast_view, model, now)
            views[queue] = view
        return now, views

    def _forecast_view(self, model: QueueModel, now: float) -> dict | None:
        """forecast.compare() for the queue's business day at `now`, from where its data begins (a
        worker started mid-day has no actual calls before); None without a forecast."""
        queue_forecast = self.forecast.forecast.get(model.name) if self.forecast else None
        if queue_forecast is None:
            return None
        day_start, day_end, _ = model.business_day.bounds(now)
        actuals = model.interval_actuals(queue_forecast.minutes, day_start)
        return compare(queue_forecast, actuals, now, day_start, day_end, model.first_event_time)
