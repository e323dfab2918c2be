"""`callpulse report`: the interval reports of the intervals topic as CSV or JSON.

The topic holds one record per queue, interval length and interval start (it is compacted; a
record may have been sent more than once, e.g. after a worker took over a queue, and the latest
one counts). The CSV has one row per queue and interval with flat columns, the layout
workforce-management tools import (interval start in the queue's local time with its offset);
the JSON is the list of full records. A record's `final` says whether the interval is closed
(nothing can change it) or preliminary (its queue went quiet; a late event may still change it).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from datetime import date, datetime
from typing import TextIO

import orjson


async def read_records(config, timeout_seconds: float = 10.0) -> list[dict]:
    """The record that counts for every key of the intervals topic, read from its start to its
    end: the latest final one, else the latest preliminary one (a preliminary record sent late
    must not replace the final one; compaction may keep either)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = config.kafka.topic_intervals
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **config.kafka.client_kwargs())
    await consumer.start()
    latest: dict[bytes, dict] = {}
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ReportError(f"topic {topic} does not exist: run `callpulse topics create` and a worker first")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        while True:
            batch = await consumer.getmany(timeout_ms=int(timeout_seconds * 1000) if remaining else 200)
            for records in batch.values():
                for r in records:
                    _keep(latest, r.key, r.value)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if not remaining and not batch:
                # Past the end offsets the broker reported, and one more fetch found nothing: some
                # Kafka-protocol brokers under-report the end offset, so it is not trusted alone.
                break
            if remaining and not batch:
                raise ReportError(f"reading {topic} timed out with partitions {sorted(tp.partition for tp in remaining)} unfinished")
    finally:
        await consumer.stop()
    return list(latest.values())


class ReportError(Exception):
    pass


def _keep(latest: dict[bytes, dict], key: bytes, value: bytes | None) -> None:
    if value is None:  # a tombstone
        latest.pop(key, None)
        return
    record = orjson.loads(value)
    held = latest.get(key)
    if held is not None and held.get("final") and not record.get("final", True):
        return
    latest[key] = record


def select(records: Iterable[dict], *, queues: set[str] | None = None, minutes: int | None = None,
           since: date | None = None, until: date | None = None) -> list[dict]:
    """Records filtered by queue, interval length and local date range [since, until], sorted by
    queue, length and start."""
    out = []
    for r in records:
        day = datetime.fromisoformat(r["start"]).date()  # the queue's local date
        if queues and r["queue"] not in queues:
            continue
        if minutes is not None and r["interval_minutes"] != minutes:
            continue
        if (since and day < since) or (until and day > until):
            continue
        out.append(r)
    out.sort(key=lambda r: (r["queue"], r["interval_minutes"], r["start_epoch"]))
    return out


_COUNTS = ("offered", "answered", "abandoned", "short_abandoned", "flowed_out", "handled")
_SECONDS = ("answer_wait_seconds", "abandon_wait_seconds", "talk_seconds", "hold_seconds", "wrapup_seconds",
            "agent_staffed_seconds", "agent_busy_seconds")


# Issue 15's columns: (column, part of the record, key in it). Records written before have no such
# parts: their cells are empty.
_QUALITY = (
    ("surveys", "quality", "surveys"), ("csat_ratio", "quality", "csat_ratio"),
    ("csat_average_score", "quality", "csat_average_score"), ("net_promoter_score", "quality", "net_promoter_score"),
    ("first_call_resolution_ratio", "quality", "first_call_resolution_ratio"),
    ("outbound_attempts", "outbound", "attempts"), ("outbound_live_connects", "outbound", "live_connects"),
    ("outbound_agent_connects", "outbound", "agent_connects"), ("outbound_connect_rate", "outbound", "connect_rate"),
    ("outbound_abandon_rate", "outbound", "abandon_rate"), ("callbacks_requested", "callbacks", "requested"),
    ("callback_completion_rate", "callbacks", "completion_rate"),
    ("average_callback_wait_seconds", "callbacks", "average_wait_seconds"),
)


def csv_columns(records: list[dict]) -> list[str]:
    thresholds = sorted({t for r in records for t in r["answered_within"]}, key=float)
    columns = ["queue", "label", "interval_start", "interval_end", "interval_minutes", "timezone", *_COUNTS]
    columns += [f"answered_within_{t}s" for t in thresholds] + [f"abandoned_within_{t}s" for t in thresholds]
    columns += ["formula"] + [f"service_level_{t}s" for t in thresholds] + [f"target_{t}s" for t in thresholds]
    columns += ["answer_rate", "abandon_rate", "average_answer_wait_seconds", "average_abandon_wait_seconds",
                "average_handle_seconds", "occupancy", "agents_staffed_average", *_SECONDS]
    columns += [column for column, _, _ in _QUALITY]
    columns += ["callbacks_connected", "agent_logged_in_seconds", "cost_per_handled_call", "currency"]
    return columns


def csv_row(record: dict) -> dict:
    row = {
        "queue": record["queue"], "label": record["label"], "interval_start": record["start"],
        "interval_end": record["end"], "interval_minutes": record["interval_minutes"], "timezone": record["timezone"],
        "formula": record["formula"],
    }
    row.update({name: _num(record[name]) for name in _COUNTS})
    for t in record["answered_within"]:
        row[f"answered_within_{t}s"] = _num(record["answered_within"][t])
        row[f"abandoned_within_{t}s"] = _num(record["abandoned_within"][t])
        row[f"service_level_{t}s"] = _num(record["service_level"][t])
        row[f"target_{t}s"] = _num(record["targets"][t])
    for name in ("answer_rate", "abandon_rate", "average_answer_wait_seconds", "average_abandon_wait_seconds",
                 "average_handle_seconds", "occupancy", "agents_staffed_average"):
        row[name] = _num(record[name])
    row.update({name: _num(record["seconds"][name]) for name in _SECONDS})
    for column, part, key in _QUALITY:
        row[column] = _num(record.get(part, {}).get(key))
    row["callbacks_connected"] = _num(record.get("callbacks", {}).get("completed_by_result", {}).get("connected"))
    row["agent_logged_in_seconds"] = _num(record["seconds"].get("agent_logged_in_seconds"))
    row["cost_per_handled_call"] = _num(record.get("cost_per_handled_call"))
    row["currency"] = record.get("currency", "")
    return row


def _num(value) -> str:
    """Numbers as plain text: whole numbers without a fraction, others to 6 digits; undefined
    (no calls) as an empty cell, never 0."""
    if value is None:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"


def write_csv(records: list[dict], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=csv_columns(records), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(csv_row(record))


def write_json(records: list[dict], out: TextIO) -> None:
    out.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")


def run(config, *, fmt: str, queues: set[str] | None, minutes: int | None, since: date | None,
        until: date | None, out: TextIO = sys.stdout) -> int:
    """Read, select and write the records; returns how many were written."""
    import asyncio

    records = select(asyncio.run(read_records(config)), queues=queues, minutes=minutes, since=since, until=until)
    (write_csv if fmt == "csv" else write_json)(records, out)
    return len(records)
