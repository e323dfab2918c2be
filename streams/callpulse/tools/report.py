"""`callpulse report`: the interval reports of the intervals topic as CSV or JSON.

The topic holds one record per queue, interval length and interval start (it is compacted; a
record may have been sent more than once, e.g. after a worker took over a queue, and the latest
one counts). The CSV has one row per queue and interval with flat columns, the layout
workforce-management tools import (interval start in the queue's local time with its offset);
the JSON is the list of full records. A record's `final` says whether the interval is closed
(nothing can change it) or preliminary (its queue went quiet; a late event may still change it).

`--agents` reads the agent intervals topic instead: one row per agent and interval, or per agent
and business day (`--days`, with the scorecard's score and each measure's score), in the agent's
time zone (kpi/agents.py).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from datetime import date, datetime
from typing import TextIO

import orjson


async def read_records(config, timeout_seconds: float = 10.0, *, agents: bool = False) -> list[dict]:
    """The record that counts for every key of the intervals topic (`agents`: of the agent
    intervals topic), read from its start to its end: the latest final one, else the latest
    preliminary one (a preliminary record sent late must not replace the final one; compaction
    may keep either)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = config.kafka.topic_agent_intervals if agents else config.kafka.topic_intervals
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


# ---- agents (`--agents`: the agent intervals topic, kpi/agents.py) ----------------------------

def select_agents(records: Iterable[dict], *, agents: set[str] | None = None, minutes: int | None = None,
                  days: bool = False, since: date | None = None, until: date | None = None) -> list[dict]:
    """Agent records filtered by agent id, interval length (or day records only) and business
    date range [since, until], sorted by agent, period and start."""
    out = []
    for r in records:
        day = date.fromisoformat(r["business_day"])
        if agents and r["agent_id"] not in agents:
            continue
        if days and r["period"] != "day":
            continue
        if minutes is not None and r["interval_minutes"] != minutes:
            continue
        if (since and day < since) or (until and day > until):
            continue
        out.append(r)
    out.sort(key=lambda r: (r["agent_id"], r["period"], r["interval_minutes"] or 0, r["start_epoch"]))
    return out


_AGENT_COUNTS = ("answered", "handled", "transfers", "ring_no_answers", "talk_seconds", "hold_seconds", "wrapup_seconds",
                 "average_handle_seconds")
_AGENT_KPIS = ("occupancy", "utilization", "surveys", "csat_ratio", "csat_average_score", "net_promoter_score",
               "first_call_resolution_ratio")
_AGENT_STATES = ("logged_in", "available", "on_call", "wrap_up", "not_ready")


def agent_csv_columns(records: list[dict]) -> list[str]:
    measures = list(dict.fromkeys(m for r in records for m in (r.get("scorecard") or {}).get("measures", {})))
    thresholds = sorted({t for r in records for t in r.get("answered_within", {})}, key=float)
    return (["agent_id", "agent_name", "period", "interval_start", "interval_end", "interval_minutes", "business_day",
             "timezone", "final", *_AGENT_COUNTS] + [f"answered_within_{t}s" for t in thresholds]
            + ["answered_wait_unknown"] + [f"{s}_seconds" for s in _AGENT_STATES] + list(_AGENT_KPIS)
            + ["score"] + [f"score_{m}" for m in measures])


def agent_csv_row(record: dict) -> dict:
    row = {"agent_id": record["agent_id"], "agent_name": record["agent_name"] or "", "period": record["period"],
           "interval_start": record["start"], "interval_end": record["end"],
           "interval_minutes": _num(record["interval_minutes"]), "business_day": record["business_day"],
           "timezone": record["timezone"], "final": "true" if record["final"] else "false"}
    row.update({name: _num(record[name]) for name in (*_AGENT_COUNTS, *_AGENT_KPIS)})
    row.update({f"{s}_seconds": _num(record["state_seconds"][s]) for s in _AGENT_STATES})
    row.update({f"answered_within_{t}s": _num(n) for t, n in record.get("answered_within", {}).items()})
    row["answered_wait_unknown"] = _num(record.get("answered_wait_unknown"))
    card = record.get("scorecard") or {}
    row["score"] = _num(card.get("score"))
    for name, line in card.get("measures", {}).items():
        row[f"score_{name}"] = _num(line["score"])
    return row


def write_agent_csv(records: list[dict], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=agent_csv_columns(records), lineterminator="\n", restval="")
    writer.writeheader()
    for record in records:
        writer.writerow(agent_csv_row(record))


def write_json(records: list[dict], out: TextIO) -> None:
    out.write(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode() + "\n")


def run(config, *, fmt: str, queues: set[str] | None, minutes: int | None, since: date | None,
        until: date | None, out: TextIO = sys.stdout, agents: bool = False, agent_ids: set[str] | None = None,
        days: bool = False) -> int:
    """Read, select and write the records (`agents`: the agents' records); returns how many were written."""
    import asyncio

    if agents:
        records = select_agents(asyncio.run(read_records(config, agents=True)), agents=agent_ids, minutes=minutes,
                                days=days, since=since, until=until)
        (write_agent_csv if fmt == "csv" else write_json)(records, out)
        return len(records)
    records = select(asyncio.run(read_records(config)), queues=queues, minutes=minutes, since=since, until=until)
    (write_csv if fmt == "csv" else write_json)(records, out)
    return len(records)
