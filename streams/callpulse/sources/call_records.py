"""Per-call record files (one row per call, as many ACDs and research data sets export them).

Data flow: a `RecordLayout` reads one file layout into layout-neutral `CallRecord`s (instants as
epoch seconds, already reconciled onto one timeline); `record_events` maps any record to canonical
events; `import_events` does both for a file and returns the events in time order with the skips.
Supporting a new CSV layout means writing one more `RecordLayout`: the event mapping is shared.

A record becomes, in this order (each part only when the record has it):

    call.ivr_entered (queue = the record's queue, so IVR arrivals can be counted per queue)
    call.ivr_left    (result to_queue / self_served / abandoned; queue = where it went)
    call.offered     (queue, priority)
    call.answered (wait_seconds = answered - offered) + call.ended      or      call.abandoned

Event ids are `event_id(source, call_id, <kind>)`, so re-importing a file (from any path) gives
the same ids and the worker counts nothing twice.

The one layout so far is the Technion "Anonymous Bank" call center (Israel, 1999): see
`AnonymousBank` for how each quirk of that file is handled, and why.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from . import Skips, event_id, make_event

log = logging.getLogger(__name__)

Outcome = Literal["answered", "abandoned", "ivr_only", "ignored"]

# call.answered requires an agent_id; a call the source says was served by nobody it can name
# gets this placeholder (call.ended, where agent_id is optional, leaves it out).
UNKNOWN_AGENT = "unknown"

# Skip reason of a record whose IVR exit is before its IVR entry: its queue part is still imported.
IVR_OUT_OF_ORDER = "ivr_left before ivr_entered: IVR events left out"


# ---- the layout-neutral record --------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """A row a layout could not read (the reason is a short fixed text, the example says where)."""

    reason: str
    example: str = ""


@dataclass
class CallRecord:
    """One call as a record file describes it. Instants are epoch seconds on one timeline.

    outcome: "answered" (an agent served it), "abandoned" (hung up while queued), "ivr_only"
    (served in the IVR or left there without reaching a queue: see `ivr_result`), "ignored" (not a
    real call, see `ignored_because`; kept so counts of every record can still be made).
    """

    call_id: str
    queue: str | None
    outcome: Outcome
    ivr_entered: float | None = None
    ivr_left: float | None = None
    ivr_result: str | None = None  # "self_served" or "abandoned" for ivr_only; to_queue is implied
    queued_at: float | None = None  # None: never reached a queue
    wait_ended: float | None = None  # answered or abandoned at
    service_started: float | None = None  # conversation start, on the same clock as wait_ended
    service_ended: float | None = None
    agent_id: str | None = None  # None: unknown
    priority: int | None = None
    ivr: str | None = None
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict)
    ignored_because: str | None = None


class RecordLayout(Protocol):
    """How to read one file layout. `read` yields a record or a Skip per data row, in file order."""

    name: str  # also the default event `source`
    default_timezone: str  # IANA name of the local time the file's clock times are in

    def read(self, path: str | Path, timezone: str) -> Iterator[CallRecord | Skip]: ...


# ---- records -> canonical events ------------------------------------------------------------


def ivr_out_of_order(record: CallRecord) -> bool:
    """True when the record's IVR exit is before its entry (its IVR part cannot be trusted)."""
    return record.ivr_entered is not None and record.ivr_left is not None and record.ivr_left < record.ivr_entered


def record_events(record: CallRecord, source: str) -> list[dict]:
    """The canonical events of one record, in the order they happened (nothing for "ignored")."""
    if record.outcome == "ignored":
        return []
    call_id = record.call_id

    def event(kind: str, t: float, **fields) -> dict:
        return make_event(f"call.{kind}", t, source, event_id(source, call_id, kind), call_id=call_id, **fields)

    attributes = record.attributes or None
    events = []
    if record.ivr_entered is not None and not ivr_out_of_order(record):
        events.append(event("ivr_entered", record.ivr_entered, queue=record.queue, ivr=record.ivr, attributes=attributes))
        if record.ivr_left is not None:
            queued = record.queued_at is not None
            result = "to_queue" if queued else (record.ivr_result or "abandoned")
            events.append(event("ivr_left", record.ivr_left, result=result, ivr=record.ivr,
                                queue=record.queue if queued else None))
    if record.queued_at is None or record.queue is None:
        return events
    queue = record.queue
    events.append(event("offered", record.queued_at, queue=queue, priority=record.priority, attributes=attributes))
    if record.wait_ended is None:
        return events  # still waiting when the file was written
    if record.outcome == "answered":
        # wait_seconds: the wait the queue computes from call.offered (for Anonymous Bank, q_time).
        events.append(event("answered", record.wait_ended, queue=queue, agent_id=record.agent_id or UNKNOWN_AGENT,
                            wait_seconds=_wait_seconds(record.queued_at, record.wait_ended)))
        if record.service_ended is not None:
            events.append(event("ended", record.service_ended, queue=queue, agent_id=record.agent_id))
    elif record.outcome == "abandoned":
        events.append(event("abandoned", record.wait_ended, queue=queue))
    return events


def _wait_seconds(offered: float, answered: float) -> float:
    """call.answered's `wait_seconds`: answered - offered as the model computes it from the two
    events' times, which are written to the millisecond (so the two always agree), never negative."""
    return max(0, math.floor(answered * 1000.0 + 0.5) - math.floor(offered * 1000.0 + 0.5)) / 1000.0


def read_records(path: str | Path, layout: RecordLayout, timezone: str | None = None) -> Iterator[CallRecord | Skip]:
    """Every row of the file as the layout reads it, ignored records included, in file order."""
    return layout.read(path, timezone or layout.default_timezone)


def import_events(path: str | Path, layout: RecordLayout, timezone: str | None = None,
                  source: str | None = None) -> tuple[list[dict], Skips]:
    """All events of a record file in time order (ties keep file order), and what was skipped."""
    source = source or layout.name
    events: list[dict] = []
    skips = Skips()
    for item in read_records(path, layout, timezone):
        if isinstance(item, Skip):
            skips.add(item.reason, item.example)
            continue
        if item.outcome == "ignored":
            skips.add(item.ignored_because or "ignored", item.call_id)
            continue
        if ivr_out_of_order(item):
            skips.add(IVR_OUT_OF_ORDER, item.call_id)
        events.extend(record_events(item, source))
    # `time` is fixed-width UTC ("1999-02-01T05:02:47.000Z"), so text order is time order; the
    # sort is stable, so the events of one call keep their order when they share an instant.
    events.sort(key=lambda e: e["time"])
    for line in skips.lines():
        log.info("%s: skipped %s", Path(path).name, line.strip())
    return events, skips


# ---- the Technion "Anonymous Bank" layout ---------------------------------------------------

_ONE_DAY = timedelta(days=1)
_HALF_DAY = 12 * 3600


def _seconds_of_day(text: str) -> int:
    """'H:MM:SS' -> seconds since midnight."""
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= seconds < 60):
        raise ValueError(f"bad time of day {text!r}")
    return hours * 3600 + minutes * 60 + seconds


def _yymmdd(text: str) -> date:
    """'990201' -> 1999-02-01 (years 70-99 are 19xx, 00-69 are 20xx)."""
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"bad date {text!r}")
    yy = int(text[:2])
    return date(1900 + yy if yy >= 70 else 2000 + yy, int(text[2:4]), int(text[4:6]))


def _nearest_wall(previous: datetime, seconds_of_day: int) -> datetime:
    """The local wall time at `seconds_of_day` nearest to `previous` (naive, local): the same day,
    the next one (the call crossed midnight) or the day before (a clock a little behind, just
    after midnight). No step of a call takes 12 hours, so nearest is unambiguous."""
    candidate = datetime.combine(previous.date(), time()) + timedelta(seconds=seconds_of_day)
    gap = (candidate - previous).total_seconds()
    if gap < -_HALF_DAY:
        return candidate + _ONE_DAY
    if gap > _HALF_DAY:
        return candidate - _ONE_DAY
    return candidate


class AnonymousBank:
    """Technion SEE "Anonymous Bank" per-call records (Brown et al., JASA 2005).

    TAB separated, header row, CRLF or LF. Clock times are local time of day (H:MM:SS) in Israel
    with the date (YYMMDD) of `vru_entry`; durations (vru_time, q_time, ser_time) are seconds.
    How each field and quirk becomes a `CallRecord`:

    - call_id: `call_id` repeats within a month (it is a counter per VRU line), so the record's id
      is `<date>-<vru+line>-<call_id>`, unique in both 1999 files. customer_id is left out.
    - queue: `type` (PS, PE, IN, NE, NW, TT); priority: `priority` (0/1 regular, 2 priority);
      attributes: {"vru_line": `vru+line`}; ivr: the VRU, the first four characters (AA01).
    - midnight: each clock time is put on the day that makes it nearest to the previous step
      (vru_entry -> vru_exit -> q_start). A later time that is *much* earlier is the next day; a
      time a minute earlier is a clock disagreement on the same day (negative vru_time).
    - wait and talk come from the durations, which are the queue's and the service's own
      measurements: wait_ended = q_start + q_time, service_ended = wait_ended + ser_time. The
      service clock disagrees with the queue clock (`ser_start` is usually 1-2 s before
      `q_exit`), so `ser_start`/`ser_exit` are not used as instants.
    - `q_start = q_exit = 0:00:00` and `q_time = 0`: the call never entered the queue. A q_start of
      0:00:00 with a q_time is a real queue entry at midnight (it happens).
      * outcome AGENT: the documentation says vru_exit is the "exit from VRU directly to service
        or to queue": these calls went straight to an agent who was free. They are answered
        with zero wait at vru_exit (offered and answered there), attribute direct_to_agent.
        Their share is highest when the center is quiet and lowest at the peak, their service
        times look like those of queued calls, and no queued AGENT row has q_time 0.
      * outcome HANG: hung up in the VRU -> ivr_only, ivr_result "abandoned".
    - outcome AGENT -> answered (also with server NO_SERVER: agent unknown; or ser_time 0),
      HANG -> abandoned at q_start + q_time (also the few HANG rows with service fields),
      PHANTOM -> ignored ("phantom"), read with its instants so every record can be binned.
    - negative vru_time (vru_exit before vru_entry): q_start equals vru_exit and the queue and
      service fields agree with each other, so only the IVR entry is off. The record is kept;
      `record_events` leaves its IVR events out (`ivr_out_of_order`).
    - rows are sorted by VRU line, not time: `import_events` sorts the events.
    """

    name = "anonymous_bank"
    default_timezone = "Asia/Jerusalem"
    columns = ("vru+line", "call_id", "customer_id", "priority", "type", "date", "vru_entry", "vru_exit",
               "vru_time", "q_start", "q_exit", "q_time", "outcome", "ser_start", "ser_exit", "ser_time", "server")
    outcomes: dict[str, Outcome] = {"AGENT": "answered", "HANG": "abandoned", "PHANTOM": "ignored"}

    def read(self, path: str | Path, timezone: str) -> Iterator[CallRecord | Skip]:
        zone = ZoneInfo(timezone)
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows = csv.reader(f, delimiter="\t")
            header = next(rows, [])
            missing = [c for c in self.columns if c not in header]
            if missing:
                raise ValueError(f"{path}: not an Anonymous Bank file, missing columns {missing}")
            for line_number, values in enumerate(rows, start=2):
                if not values:
                    continue  # blank line
                if len(values) != len(header):
                    yield Skip("malformed row", f"line {line_number}: {len(values)} fields, expected {len(header)}")
                    continue
                row = dict(zip(header, values))
                if row["outcome"] not in self.outcomes:
                    yield Skip("unknown outcome", f"line {line_number}: {row['outcome']!r}")
                    continue
                try:
                    yield self.parse(row, zone)
                except ValueError as exc:
                    yield Skip("malformed row", f"line {line_number}: {exc}")

    def parse(self, row: dict[str, str], zone: ZoneInfo) -> CallRecord:
        """One row (column name -> text) of a known outcome as a record; ValueError when a field
        cannot be read."""
        code = row["outcome"]
        outcome = self.outcomes[code]
        vru_line, priority = row["vru+line"], int(row["priority"])
        q_time, ser_time = int(row["q_time"]), int(row["ser_time"])
        if q_time < 0 or ser_time < 0 or not 0 <= priority <= 100:
            raise ValueError(f"q_time {q_time}, ser_time {ser_time}, priority {priority}: out of range")

        def instant(wall: datetime) -> float:
            return wall.replace(tzinfo=zone).timestamp()

        entered = datetime.combine(_yymmdd(row["date"]), time()) + timedelta(seconds=_seconds_of_day(row["vru_entry"]))
        left = _nearest_wall(entered, _seconds_of_day(row["vru_exit"]))
        record = CallRecord(
            call_id=f"{row['date']}-{vru_line}-{row['call_id']}",
            queue=row["type"] or None,
            outcome=outcome,
            ivr_entered=instant(entered),
            ivr_left=instant(left),
            priority=priority,
            ivr=vru_line[:4] if len(vru_line) == 6 else None,
            attributes={"vru_line": vru_line},
        )
        q_start = _seconds_of_day(row["q_start"])
        reached_queue = not (q_start == 0 and _seconds_of_day(row["q_exit"]) == 0 and q_time == 0)
        if reached_queue:
            record.queued_at = instant(_nearest_wall(left, q_start))
            record.wait_ended = record.queued_at + q_time
        elif code == "AGENT":  # straight from the VRU to a free agent: zero wait
            record.queued_at = record.wait_ended = record.ivr_left
            record.attributes["direct_to_agent"] = True
        elif code == "HANG":
            record.outcome, record.ivr_result = "ivr_only", "abandoned"
        if code == "PHANTOM":
            record.ignored_because = "phantom"
        elif code == "AGENT":
            assert record.wait_ended is not None  # set above: reached the queue, or straight to an agent
            server = row["server"]
            record.agent_id = None if server in ("", "NO_SERVER") else server
            record.service_started = record.wait_ended
            record.service_ended = record.wait_ended + ser_time
        return record


LAYOUTS: dict[str, RecordLayout] = {layout.name: layout for layout in (AnonymousBank(),)}
