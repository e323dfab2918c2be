"""Per-queue state: a deterministic fold over the queue's validated events, read against a clock.

`QueueModel.apply()` is the only way state changes, and it depends on nothing but the events
(never on the wall clock), so replaying the same events rebuilds the same state: this is how a
worker recovers a queue from its changelog. Reading (`QueueModel.read(now)`) is where the clock
comes in: live waits, open agent states and the rolling windows are evaluated at `now`.

Attribution (what the README documents):
- `offered` counts at the time the call entered the queue;
- answered / abandoned / flowed-out count at the time the wait ended, with the wait in seconds;
- a handled call counts when the conversation ended (`call.ended` or `call.transferred`), with its
  talk and hold seconds; wrap-up seconds count when wrap-up ended;
- agent seconds (occupancy) count in the seconds the agent spent in the state;
- a survey counts at the survey's own time (it may come hours after its call, after the call's
  interval closed), in the queue it names; a callback request and its completion, an outbound
  attempt and its agent connection each count at their own time.
Rolling windows have one-second resolution: the 5m window at clock `now` holds the events whose
time falls in the current second or the 299 before it. `today` holds the events since the start of
the queue's business day in the queue's own time zone.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from . import formulas, quality
from .intervals import KEEP_FINAL_RECORDS_SECONDS, IntervalCounters, local_iso
from .staffing import staffing_view, understaffed_since
from .windows import WINDOWS

FLOW_OUT_REASONS = ("timeout", "exit_key", "overflow", "callback", "transfer", "queue_full", "no_agents", "other")
AGENT_STATES = ("available", "on_call", "wrap_up", "not_ready")
OUTBOUND_RESULTS = ("connected", "no_answer", "busy", "failed", "voicemail", "cancelled")
CALLBACK_RESULTS = ("connected", "no_answer", "failed", "cancelled")
#: Callback results that close the request; after no_answer or failed a retry may follow.
CALLBACK_CLOSING_RESULTS = frozenset(("connected", "cancelled"))
BUSY_STATES = frozenset(("on_call", "wrap_up"))
STAFFED_STATES = frozenset(("available", "on_call", "wrap_up"))

# Outcome of applying one event.
APPLIED, LATE, DUPLICATE, TOO_LATE = "applied", "late", "duplicate", "too_late"
CONTACT = "contact"  # another queue's call.offered, applied for repeat-caller FCR only (repeat_caller_group)

log = logging.getLogger(__name__)

#: Parts of a queue's exported numbers that are computed, and contained, separately: the label
#: values of callcenter_export_errors_total{part}. model.read(): windows (rolling-window counts,
#: service levels and rates), staffing; the collector (export/metrics.py): one per group of series;
#: pipeline/state.py's read_all(): forecast (the comparison with the forecast file) and read (a queue's
#: whole read).
EXPORT_PARTS = ("read", "live", "totals", "windows", "config", "quality", "staffing", "forecast", "pipeline", "agents")


class ExportErrors:
    """Failures contained while computing a queue's numbers for export (/metrics, /api/queues):
    one queue's failing part is left out (None), the other queues and parts go on. Counted by part;
    logged once per queue and part, with the traceback, not at every scrape."""

    def __init__(self) -> None:
        self.counts = {part: 0 for part in EXPORT_PARTS}
        self.logged: set[tuple[str, str]] = set()

    def run(self, queue: str, part: str, fn, *args, default: Any = None) -> Any:
        """fn(*args), or `default` when it raised (counted and, the first time, logged)."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - containment: whatever it was, the other queues go on
            self.record(queue, part, exc)
            return default

    def record(self, queue: str, part: str, exc: BaseException) -> None:
        self.counts[part] = self.counts.get(part, 0) + 1
        if (queue, part) not in self.logged:
            self.logged.add((queue, part))
            log.error("queue %r: computing its %s numbers failed, left out of the export (logged once per "
                      'queue and part; callcenter_export_errors_total{part="%s"} counts every failure)',
                      queue, part, part, exc_info=exc)


#: The worker's one instance: QueueModel.read() and the collector count here.
EXPORT_ERRORS = ExportErrors()

# How long live entries whose closing event never came are kept (seconds of event time).
FORGET_ORPHANED_CALL_AFTER = 24 * 3600.0
FORGET_UNENDED_CONVERSATION_AFTER = 12 * 3600.0
FORGET_WRAPUP_AFTER = 3600.0
# A survey is linked to its call if the call was handled in the queue within this many seconds.
SURVEY_LINK_SECONDS = 24 * 3600.0
#: Repeat-caller FCR keeps at most this many handled calls of a queue in their period (one keyed
#: hash and one time each, about 25 bytes in the compressed snapshot): with more, a handled call is
#: not tracked but counted as untracked (callcenter_repeat_caller_untracked_calls_total). A queue
#: handling more calls per repeat_caller_seconds than this needs a shorter period.
MAX_TRACKED_CALLS = 20_000
FORGET_OPEN_CALLBACK_AFTER = 7 * 24 * 3600.0
FORGET_OUTBOUND_CALL_AFTER = 3600.0
# Business days of outbound counts kept per campaign for the regulators' 30-day abandon rule.
OUTBOUND_RULE_DAYS = 30
#: Campaign names are the dialer's free text: the campaigns with the most live connects are kept
#: as label values, the rest summed as "other".
MAX_CAMPAIGNS = 20
# Closed intervals' actual counts are kept this long (event time) for the forecast comparison of
# the business day: a business day of up to 25 hours (an autumn change), and the lateness.
KEEP_ACTUALS_SECONDS = 26 * 3600.0


def threshold_key(threshold: float) -> str:
    """The label value of a threshold: 10.0 -> "10", 7.5 -> "7.5"."""
    return format(threshold, "g")


def field_layout(thresholds: Iterable[float]) -> list[str]:
    """Names of the counters kept per second, per day and in total, for one queue."""
    fields = [
        "offered", "answered", "abandoned", "short_abandoned", "flowed_out", "handled",
        "answer_wait_seconds", "abandon_wait_seconds",
        "talk_seconds", "hold_seconds", "wrapup_seconds",
        "agent_busy_seconds", "agent_staffed_seconds", "agent_logged_in_seconds",
        "surveys", "surveys_unlinked", "fcr:resolved", "fcr:unresolved",
        "repeat_caller_checked", "repeat_caller_repeated", "repeat_caller_untracked",
        "outbound_attempts", "outbound_live_connects", "outbound_agent_connects",
        "callbacks_requested", "callbacks_unmatched", "callbacks_waited", "callback_wait_seconds",
    ]
    fields += [f"flowed_out:{reason}" for reason in FLOW_OUT_REASONS]
    fields += [f"csat:{score}" for score in quality.CSAT_SCORES]
    fields += [f"nps:{score}" for score in quality.NPS_SCORES]
    fields += [f"outbound:{result}" for result in OUTBOUND_RESULTS]
    fields += [f"callbacks_completed:{result}" for result in CALLBACK_RESULTS]
    for t in thresholds:
        fields += [f"answered_within:{threshold_key(t)}", f"abandoned_within:{threshold_key(t)}"]
    return fields


class BusinessDay:
    """Maps an instant to the queue's business date (time zone and day start are per queue)."""

    def __init__(self, timezone: str, day_start: time):
        self.zone = ZoneInfo(timezone)
        self.day_start = day_start
        self._cached = (0.0, 0.0, "")  # [start, end) of the last business day looked up, its date

    def _start_of(self, day: date) -> float:
        return datetime.combine(day, self.day_start, tzinfo=self.zone).timestamp()

    def start_of_iso(self, iso: str) -> float:
        """Start (epoch seconds) of the business day of ISO date `iso`."""
        return self._start_of(date.fromisoformat(iso))

    def bounds(self, t: float) -> tuple[float, float, str]:
        """(start, end, ISO date) of the business day containing instant t (epoch seconds)."""
        start, end, iso = self._cached
        if start <= t < end:
            return self._cached
        day = datetime.fromtimestamp(t, self.zone).date()
        start = self._start_of(day)
        if t < start:
            day -= timedelta(days=1)
            start = self._start_of(day)
        end = self._start_of(day + timedelta(days=1))
        if t >= end:  # day start later than local midnight can leave t in the next day
            day += timedelta(days=1)
            start, end = end, self._start_of(day + timedelta(days=1))
        self._cached = (start, end, day.isoformat())
        return self._cached


class Histogram:
    """Cumulative histogram of waits; bucket bounds include every service-level threshold."""

    def __init__(self, bounds: Iterable[float]):
        self.bounds = sorted(set(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le semantics: value <= bound
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, count in zip(self.bounds + [math.inf], self.counts):
            running += count
            out.append((bound, running))
        return out

    def to_state(self) -> dict:
        return {"bounds": self.bounds, "counts": self.counts, "sum": self.sum}

    def load_state(self, state: dict) -> None:
        # Bounds may have changed with the config: re-bucket the old counts at their upper bounds.
        for bound, count in zip(state["bounds"] + [math.inf], state["counts"]):
            self.counts[bisect.bisect_left(self.bounds, bound)] += count
        self.sum += state["sum"]


class AgentSeconds:
    """Agent-seconds per second over the last hour, for occupancy in the rolling windows.

    A state interval [a, b) adds a fraction to its first and last second and, for the whole
    seconds between, a +1 step at the first and a -1 step after the last: O(1) per interval
    however long it is. The seconds of a window are the running sum of steps plus the fractions.
    """

    def __init__(self) -> None:
        self.fractions: dict[int, list[float]] = {}  # second -> [staffed, busy] seconds
        self.steps: dict[int, list[float]] = {}  # second -> change of [staffed, busy] agents from it on
        self.base = [0.0, 0.0]  # agents staffed / busy at the oldest kept second, from older steps
        self.oldest: int | None = None  # seconds before it are folded into `base` or dropped

    def add(self, start: float, end: float, busy: bool) -> None:
        first, last = math.floor(start), math.floor(end)
        if first == last:
            self._fraction(first, end - start, busy)
            return
        self._fraction(first, first + 1 - start, busy)
        if end > last:
            self._fraction(last, end - last, busy)
        if last > first + 1:
            self._step(first + 1, 1.0, busy)
            self._step(last, -1.0, busy)

    def _fraction(self, second: int, seconds: float, busy: bool) -> None:
        if self.oldest is not None and second < self.oldest:
            return  # before every window
        slot = self.fractions.setdefault(second, [0.0, 0.0])
        slot[0] += seconds
        if busy:
            slot[1] += seconds

    def _step(self, second: int, change: float, busy: bool) -> None:
        slot = self.base if self.oldest is not None and second < self.oldest else self.steps.setdefault(second, [0.0, 0.0])
        slot[0] += change
        if busy:
            slot[1] += change

    def window_sums(self, lows: list[int], now_second: int) -> list[tuple[float, float]]:
        """(staffed, busy) agent-seconds of closed intervals in each window [low, now_second].

        A step of +k agents at second s adds k for every second from s on, so in a window it
        adds k * (now_second - max(s, low) + 1): no loop over the seconds themselves.
        """
        self.forget_before(min(lows))
        sums = []
        for low in lows:
            length = now_second - low + 1
            staffed, busy = self.base[0] * length, self.base[1] * length
            for second, (s_change, b_change) in self.steps.items():
                if second <= now_second:
                    span = now_second - max(second, low) + 1
                    staffed += s_change * span
                    busy += b_change * span
            for second, (s_part, b_part) in self.fractions.items():
                if low <= second <= now_second:
                    staffed += s_part
                    busy += b_part
            sums.append((staffed, busy))
        return sums

    def forget_before(self, second: int) -> None:
        """Fold the steps before `second` into `base` and drop its older fractions: no window
        reaches back that far any more."""
        if self.oldest is not None and second <= self.oldest:
            return
        # Nothing is kept before `oldest`, so only [oldest, second) needs looking at.
        start = self.oldest if self.oldest is not None else min([*self.steps, *self.fractions, second])
        for old in _seconds_present(self.steps, start, second):
            step = self.steps.pop(old)
            self.base[0] += step[0]
            self.base[1] += step[1]
        for old in _seconds_present(self.fractions, start, second):
            del self.fractions[old]
        self.oldest = second

    def to_state(self) -> dict:
        return {"fractions": [[s, v] for s, v in self.fractions.items()],
                "steps": [[s, v] for s, v in self.steps.items()], "base": self.base, "oldest": self.oldest}

    def load_state(self, state: dict) -> None:
        self.fractions = {int(s): v for s, v in state["fractions"]}
        self.steps = {int(s): v for s, v in state["steps"]}
        self.base = list(state["base"])
        self.oldest = state["oldest"]


#: Not-ready reasons are the telephony system's own codes, so their number is not bounded by us:
#: the reasons of the most agents are kept as label values, the rest are summed as "other".
MAX_NOT_READY_REASONS = 20


def top_counts(counts: dict[str, Any], limit: int = MAX_NOT_READY_REASONS) -> dict[str, Any]:
    """{code: count} with at most `limit` keys, sorted: the smallest counts folded into "other"."""
    if len(counts) <= limit:
        return dict(sorted(counts.items()))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[: limit - 1])
    kept["other"] = kept.get("other", 0) + sum(n for _, n in ranked[limit - 1:])
    return dict(sorted(kept.items()))


class QueueModel:
    """Live state, cumulative counters and rolling windows of one queue."""

    def __init__(self, config: Any, lateness_seconds: float, histogram_bounds: Iterable[float],
                 dedup_seconds: float = 600.0, caller_key: bytes | None = None):
        """caller_key: the secret of the callers' keyed hash (repeat-caller FCR); None: off."""
        self.config = config
        self.caller_key = caller_key if config.repeat_caller_seconds > 0 else None
        self.name: str = config.name
        self.lateness = lateness_seconds
        self.dedup_horizon = max(dedup_seconds, lateness_seconds)
        self.thresholds: tuple[float, ...] = tuple(config.thresholds_seconds)
        self.targets = {threshold_key(t): config.target_for(t) for t in self.thresholds}  # by threshold label
        self.fields = field_layout(self.thresholds)
        self.index = {name: i for i, name in enumerate(self.fields)}
        self.business_day = BusinessDay(config.timezone, config.business_day_start)
        size = len(self.fields)
        self.totals = [0.0] * size
        self.days: dict[str, list[float]] = {}
        self.buckets: dict[int, list[float]] = {}  # second -> counters of events in that second
        self.window_sums = [[0.0] * size for _ in WINDOWS]
        self.window_low: list[int] | None = None  # first second inside each window; None: recompute
        self.answer_waits = Histogram(histogram_bounds)
        self.abandon_waits = Histogram(histogram_bounds)
        self.agent_seconds = AgentSeconds()  # closed agent states, for the rolling windows
        self.waiting: dict[str, float] = {}  # call_id -> time it entered the queue
        self.pending: dict[str, tuple[float, dict, bytes]] = {}  # wait outcome seen before its offer
        self.talking: dict[str, list] = {}  # call_id -> [answered_at, hold_started_at | None, hold_seconds]
        self.ended: dict[str, float] = {}  # call_id -> conversation end, until its wrap-up ends
        self.ended_early: dict[str, float] = {}  # call_id -> conversation end seen before its answer
        self.agents: dict[str, tuple[str, float, str | None]] = {}  # agent_id -> (state, since, reason)
        self.recent_handled: dict[str, float] = {}  # call_id -> conversation end, to link surveys (24 h)
        self.open_callbacks: dict[str, float] = {}  # callback_id (or call_id) -> time requested
        # call_id -> [time of the live connect, campaign, reached an agent]: an outbound call whose
        # call.answered may still come (and must not be taken for an inbound answer)
        self.outbound_calls: dict[str, list] = {}
        self.campaign_days: dict[str, dict[str, list[float]]] = {}  # campaign -> day -> [live, agent connects]
        # Repeat-caller FCR, by the callers' keyed hashes (never the numbers): the caller of each call
        # in progress; each caller's handled calls still in their period, [conversation end,
        # repeated 0/1], with a heap of (end, caller) to count them when the period passes; and the
        # callers' offers of the last lateness, for a handled call applied after the repeat.
        self.call_callers: dict[str, str] = {}
        self.handled_callers: dict[str, list[list[float]]] = {}
        self._maturing: list[tuple[float, str]] = []
        self.recent_contacts: dict[str, list[float]] = {}
        self._newest_contact = -math.inf  # newest contact from the group's other queues (_group_contact)
        self.seen: dict[int, set[str]] = {}  # second -> event ids applied, kept for the dedup horizon
        self.seen_ids: set[str] = set()  # the same ids in one set: a repeat is caught at any time stamp
        self.watermark = -math.inf  # newest event time applied
        self.first_event_time: float | None = None  # oldest event time applied: where the data begins
        self.applied_offset = -1  # newest batch offset applied (batches at or below it are replays)
        self.unmatched: list[tuple[dict, bytes]] = []  # outcomes whose offer never came: for the dead letters
        self.intervals = IntervalCounters(config.interval_minutes, self.business_day.zone, size)
        self.closed_intervals: list[dict] = []  # interval records closed since last taken: to publish
        # Recently closed records and the watermark they closed at (KEEP_FINAL_RECORDS_SECONDS)
        self.final_records: dict[tuple[int, float], tuple[float, dict]] = {}
        # Closed intervals' offered, handled and handle seconds by length and start, for the forecast
        # comparison of the business day (forecast.py): {minutes: {start: (end, offered, handled, handle s)}}
        self.interval_actuals_closed: dict[int, dict[float, tuple[float, float, float, float]]] = {}
        self.understaffed_since: float | None = None  # start of the current run of understaffing (read())
        self.understaffed_read_at: float | None = None  # clock of the read that last evaluated it
        self._pending_seen: tuple | None = None  # what pending_interval_records last built, and at which version
        self._version = 0  # counts applied events: preliminary records change only with it
        self._watermark_second: int | None = None  # second of the watermark (None: no event yet)
        self._seen_floor: int | None = None  # no id is kept below this second
        self._precompute_increments()

    # ---- applying events -------------------------------------------------------------------

    def apply(self, event: dict, t: float, raw: bytes = b"") -> str:
        """Fold one validated event (time t in epoch seconds) into the state; return its outcome."""
        if event["type"] == "call.offered" and event["queue"] != self.name:
            return self._group_contact(event, t)
        second = math.floor(t)
        event_id = event["event_id"]
        if event_id in self.seen_ids:
            # Checked first: a redelivered old event is a duplicate, not "too late". Any time stamp:
            # an adapter may send an id again with a time off by a second or two (queue_log).
            return DUPLICATE
        if t < self.watermark - self.lateness:
            return TOO_LATE
        ids = self.seen.get(second)
        if ids is None:
            ids = self.seen[second] = set()
        ids.add(event_id)
        self.seen_ids.add(event_id)
        self._version += 1
        if self.first_event_time is None or t < self.first_event_time:
            self.first_event_time = t
        if t > self.watermark and second != self._watermark_second:
            # The watermark enters a new second (see _expire): close the intervals its horizon
            # passes before this event counts, so an agent state it ends adds its seconds only to
            # intervals still open (not to a long quiet spell).
            self._close_intervals(t - self.lateness)
        handler = _HANDLERS.get(event["type"])
        if handler is not None:
            handler(self, event, t, raw)
        if t > self.watermark:
            self.watermark = t
            if second != self._watermark_second:
                self._watermark_second = second
                self._expire()
            return APPLIED
        return LATE if t < self.watermark else APPLIED

    def _precompute_increments(self) -> None:
        ix = self.index
        self._offered = [(ix["offered"], 1.0)]
        self._flow = {r: [(ix["flowed_out"], 1.0), (ix[f"flowed_out:{r}"], 1.0)] for r in FLOW_OUT_REASONS}
        self._answered_within = [ix[f"answered_within:{threshold_key(t)}"] for t in self.thresholds]
        self._abandoned_within = [ix[f"abandoned_within:{threshold_key(t)}"] for t in self.thresholds]

    def _count(self, t: float, increments: list[tuple[int, float]]) -> None:
        """Add counters at instant t: to its second, its business day, the totals and open windows."""
        second = math.floor(t)
        bucket = self.buckets.get(second)
        lows = self.window_low
        if bucket is None and (lows is None or second >= lows[-1]):
            bucket = self.buckets[second] = [0.0] * len(self.fields)
        day = self._day_counters(t)
        self.intervals.add(t, increments)
        totals = self.totals
        for i, amount in increments:
            totals[i] += amount
            day[i] += amount
            if bucket is not None:
                bucket[i] += amount
        if lows is not None:
            for low, sums in zip(lows, self.window_sums):
                if second >= low:
                    for i, amount in increments:
                        sums[i] += amount

    def _day_counters(self, t: float) -> list[float]:
        iso = self.business_day.bounds(t)[2]
        day = self.days.get(iso)
        if day is None:
            day = self.days[iso] = [0.0] * len(self.fields)
            for old in sorted(self.days)[:-3]:  # keep the last three business days
                del self.days[old]
        return day

    def _end_wait(self, kind: str, event: dict, t: float, entered: float) -> None:
        wait = max(0.0, t - entered)  # clocks of two subsystems may disagree by a little
        ix = self.index
        if kind == "call.answered":
            inc = [(ix["answered"], 1.0), (ix["answer_wait_seconds"], wait)]
            inc += [(i, 1.0) for i, limit in zip(self._answered_within, self.thresholds) if wait <= limit]
            self.answer_waits.observe(wait)
            self.talking[event["call_id"]] = [t, None, 0.0]
            ended_at = self.ended_early.pop(event["call_id"], None)
            if ended_at is not None and ended_at >= t:  # its end came first (out of order): settle it now
                self._on_conversation_ended(event, ended_at, b"")
        elif kind == "call.abandoned":
            self.call_callers.pop(event["call_id"], None)
            inc = [(ix["abandoned"], 1.0), (ix["abandon_wait_seconds"], wait)]
            inc += [(i, 1.0) for i, limit in zip(self._abandoned_within, self.thresholds) if wait <= limit]
            if wait <= self.config.short_abandon_seconds:
                inc.append((ix["short_abandoned"], 1.0))
            self.abandon_waits.observe(wait)
        else:  # call.flowed_out
            self.call_callers.pop(event["call_id"], None)
            inc = self._flow.get(event.get("reason", "other"), self._flow["other"])
        self._count(t, inc)

    def _on_offered(self, event: dict, t: float, raw: bytes) -> None:
        call_id = event["call_id"]
        if call_id in self.waiting:  # offered twice with different event ids: keep the first entry
            self.waiting[call_id] = min(self.waiting[call_id], t)
            return
        self._count(t, self._offered)
        if self.caller_key is not None and event.get("caller"):
            self._caller_offered(call_id, quality.caller_hash(event["caller"], self.caller_key), t)
        pending = self.pending.pop(call_id, None)
        if pending is not None:  # its outcome arrived first (out of order): settle it now
            outcome_time, outcome, _ = pending
            self._end_wait(outcome["type"], outcome, outcome_time, t)
        else:
            self.waiting[call_id] = t

    def _on_wait_ended(self, event: dict, t: float, raw: bytes) -> None:
        call_id = event["call_id"]
        if call_id in self.outbound_calls and call_id not in self.waiting:
            if event["type"] == "call.answered":
                self._outbound_answered(call_id, t)
            return  # an outbound call has no wait in the queue
        entered = self.waiting.pop(call_id, None)
        if entered is None:
            self.pending[call_id] = (t, event, raw)  # wait for the offer, up to the lateness
        else:
            self._end_wait(event["type"], event, t, entered)

    def _on_hold_started(self, event: dict, t: float, raw: bytes) -> None:
        call = self.talking.get(event["call_id"])
        if call is not None and call[1] is None:
            call[1] = t

    def _on_hold_ended(self, event: dict, t: float, raw: bytes) -> None:
        call = self.talking.get(event["call_id"])
        if call is not None and call[1] is not None:
            call[2] += max(0.0, t - call[1])
            call[1] = None

    def _on_conversation_ended(self, event: dict, t: float, raw: bytes) -> None:
        call = self.talking.pop(event["call_id"], None)
        if call is None:  # not answered here, or its answer is still to come: wait up to the lateness
            self.ended_early.setdefault(event["call_id"], t)
            return
        answered_at, hold_started, hold = call
        if hold_started is not None:
            hold += max(0.0, t - hold_started)
        talk = max(0.0, t - answered_at - hold)
        ix = self.index
        self._count(t, [(ix["handled"], 1.0), (ix["talk_seconds"], talk), (ix["hold_seconds"], hold)])
        self.ended[event["call_id"]] = t
        self.recent_handled[event["call_id"]] = t
        caller = self.call_callers.pop(event["call_id"], None)
        if caller is not None:
            self._caller_handled(caller, t)

    # ---- repeat-caller FCR -----------------------------------------------------------------------

    def _caller_offered(self, call_id: str, caller: str | None, t: float) -> None:
        """A call from `caller` at t: it repeats each handled call of that caller that ended in the
        period before t. The same call offered again (transferred back into the queue) repeats
        nothing and is tracked once."""
        if caller is None or call_id in self.recent_handled or call_id in self.call_callers:
            return  # (the same call again, its first leg handled, or not yet: no contact of its own)
        self.call_callers[call_id] = caller
        self._contact(caller, t)

    def _group_contact(self, event: dict, t: float) -> str:
        """A call.offered of another queue of this queue's repeat_caller_group (events.keys_of
        routes it here): the caller's contact repeats this queue's handled calls like an offer of
        its own, unless it is one of this queue's calls moving on (transferred after its leg here).
        Judged by this queue's lateness like its own offers (older than its watermark minus the
        lateness: nothing), but neither deduplicated (a repeat marked twice is marked once) nor
        moving the watermark. A queue gone quiet keeps only the contacts of the lateness before
        the newest one (_forget_contacts), not one per caller of the group."""
        call_id = event["call_id"]
        if self.caller_key is None or not event.get("caller") or t < self.watermark - self.lateness:
            return CONTACT
        if call_id not in self.recent_handled and call_id not in self.call_callers:
            caller = quality.caller_hash(event["caller"], self.caller_key)
            if caller is not None:
                self._contact(caller, t)
                if t > self._newest_contact:
                    second = self._newest_contact == -math.inf or math.floor(t) != math.floor(self._newest_contact)
                    self._newest_contact = t
                    if second:
                        self._forget_contacts()
        return CONTACT

    def _forget_contacts(self) -> None:
        """Offers older than the lateness before the newest event or contact seen here are
        forgotten: a handled call that ended before them comes too late to be repeated by them
        (the first stage releases events in event-time order, within the lateness)."""
        keep_from = max(self.watermark, self._newest_contact) - self.lateness
        for caller in [c for c, offers in self.recent_contacts.items() if not offers or max(offers) < keep_from]:
            del self.recent_contacts[caller]

    def _contact(self, caller: str, t: float) -> None:
        period = self.config.repeat_caller_seconds
        for handled in reversed(self.handled_callers.get(caller, ())):  # newest first
            if handled[0] + period + self.lateness < t:
                break  # the older ones ended longer ago still (give or take the lateness)
            if handled[0] < t <= handled[0] + period:
                handled[1] = 1.0
        offers = self.recent_contacts.setdefault(caller, [])
        offers.append(t)
        if len(offers) > 1:  # only the offers a handled call applied late can still find are kept
            keep_from = max(self.watermark, self._newest_contact) - self.lateness  # (see _forget_contacts)
            offers[:] = [o for o in offers if o >= keep_from]

    def _caller_handled(self, caller: str, t: float) -> None:
        if len(self._maturing) >= MAX_TRACKED_CALLS:  # keeps the queue's snapshot small (see the constant)
            self._count(t, [(self.index["repeat_caller_untracked"], 1.0)])
            return
        period = self.config.repeat_caller_seconds
        repeated = any(t < offered <= t + period for offered in self.recent_contacts.get(caller, ()))
        self.handled_callers.setdefault(caller, []).append([t, 1.0 if repeated else 0.0])
        heapq.heappush(self._maturing, (t, caller))

    def _mature_callers(self) -> None:
        """Count the handled calls whose period has passed (by the watermark minus the lateness, so
        no late offer can still repeat them): checked, and repeated or not. Counted at the watermark."""
        horizon = self.watermark - self.lateness - self.config.repeat_caller_seconds
        checked = repeated = 0.0
        while self._maturing and self._maturing[0][0] < horizon:  # an offer at exactly the edge may still come
            ended, caller = heapq.heappop(self._maturing)
            calls = self.handled_callers.get(caller, [])
            for i, (at, flag) in enumerate(calls):
                if at == ended:
                    checked, repeated = checked + 1, repeated + flag
                    del calls[i]
                    break
            if not calls:
                self.handled_callers.pop(caller, None)
        if checked:
            ix = self.index
            self._count(self.watermark, [(ix["repeat_caller_checked"], checked), (ix["repeat_caller_repeated"], repeated)])
        self._forget_contacts()

    def _on_wrapup_ended(self, event: dict, t: float, raw: bytes) -> None:
        ended_at = self.ended.pop(event["call_id"], None)
        if ended_at is not None:
            self._count(t, [(self.index["wrapup_seconds"], max(0.0, t - ended_at))])

    # ---- quality, outbound, callbacks (kpi/quality.py has the arithmetic) ----------------------

    def _on_survey(self, event: dict, t: float, raw: bytes) -> None:
        """Counted at the survey's time: it may come hours after its call, after that interval
        closed. Unlinked: its call was not handled in this queue in the 24 h before."""
        ix = self.index
        inc = [(ix["surveys"], 1.0)]
        handled_at = self.recent_handled.get(event["call_id"])
        if handled_at is None or not 0 <= t - handled_at <= SURVEY_LINK_SECONDS:
            inc.append((ix["surveys_unlinked"], 1.0))
        if "csat" in event:  # int(): the schema's integer also admits 5.0
            inc.append((ix[f"csat:{int(event['csat'])}"], 1.0))
        if "nps" in event:
            inc.append((ix[f"nps:{int(event['nps'])}"], 1.0))
        if "resolved" in event:
            inc.append((ix["fcr:resolved" if event["resolved"] else "fcr:unresolved"], 1.0))
        self._count(t, inc)

    def _on_outbound_attempt(self, event: dict, t: float, raw: bytes) -> None:
        """A live connect reaches an agent when the attempt names its agent_id (the dialer bridged
        it) or a call.answered of the call follows within outbound_abandon_seconds."""
        ix, call_id, result = self.index, event["call_id"], event["result"]
        inc = [(ix["outbound_attempts"], 1.0), (ix[f"outbound:{result}"], 1.0)]
        answer = self.pending.get(call_id)
        if answer is not None and answer[1]["type"] == "call.answered":  # came first: no inbound answer
            del self.pending[call_id]
        else:
            answer = None
        if result in self.config.outbound_connected_results:
            inc.append((ix["outbound_live_connects"], 1.0))
            campaign = event.get("campaign", "")
            self._campaign_day(campaign, t)[0] += 1.0
            call = self.outbound_calls[call_id] = [t, campaign, False]
            if "agent_id" in event:
                inc.append((ix["outbound_agent_connects"], 1.0))
                self._campaign_day(campaign, t)[1] += 1.0
                call[2] = True
            elif answer is not None:
                self._count(t, inc)
                self._outbound_answered(call_id, answer[0])
                return
        self._count(t, inc)

    def _outbound_answered(self, call_id: str, t: float) -> None:
        connected_at, campaign, reached = self.outbound_calls[call_id]
        if reached or t - connected_at > self.config.outbound_abandon_seconds:
            return  # counted already, or too late: an abandoned outbound call
        self.outbound_calls[call_id][2] = True
        self._count(t, [(self.index["outbound_agent_connects"], 1.0)])
        self._campaign_day(campaign, connected_at)[1] += 1.0

    def _campaign_day(self, campaign: str, t: float) -> list[float]:
        """[live connects, agent connects] of a campaign on t's business day; keeps 30 days."""
        days = self.campaign_days.setdefault(campaign, {})
        iso = self.business_day.bounds(t)[2]
        counts = days.get(iso)
        if counts is None:
            counts = days[iso] = [0.0, 0.0]
            oldest = _first_rule_day(iso)
            for old in [d for d in days if d < oldest]:
                del days[old]
        return counts

    def _on_callback_requested(self, event: dict, t: float, raw: bytes) -> None:
        key = event.get("callback_id") or event["call_id"]
        if key in self.open_callbacks:  # asked again while open: the first request stands
            self.open_callbacks[key] = min(self.open_callbacks[key], t)
            return
        self.open_callbacks[key] = t
        self._count(t, [(self.index["callbacks_requested"], 1.0)])

    def _on_callback_completed(self, event: dict, t: float, raw: bytes) -> None:
        """connected and cancelled close the request; no_answer and failed leave it open for a retry.
        A completion whose request is not known here counts as unmatched."""
        ix, key, result = self.index, event.get("callback_id") or event["call_id"], event["result"]
        inc = [(ix[f"callbacks_completed:{result}"], 1.0)]
        requested = self.open_callbacks.get(key)
        if requested is None:
            inc.append((ix["callbacks_unmatched"], 1.0))
        elif result in CALLBACK_CLOSING_RESULTS:
            del self.open_callbacks[key]
            if result == "connected":
                inc += [(ix["callbacks_waited"], 1.0), (ix["callback_wait_seconds"], max(0.0, t - requested))]
        self._count(t, inc)

    def _outbound_30_days(self, today: str) -> dict[str, dict]:
        """Per campaign over the last 30 business days up to `today`: live connects, abandoned and
        the abandon rate; at most MAX_CAMPAIGNS campaigns, the rest summed as "other"."""
        oldest = _first_rule_day(today)
        sums: dict[str, list[float]] = {}
        for campaign, days in self.campaign_days.items():
            live = sum(v[0] for d, v in days.items() if oldest <= d <= today)
            agent = sum(v[1] for d, v in days.items() if oldest <= d <= today)
            if live > 0:
                sums[campaign] = [live, agent]
        if len(sums) > MAX_CAMPAIGNS:
            ranked = sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0]))
            sums = dict(ranked[: MAX_CAMPAIGNS - 1])
            rest = sums.setdefault("other", [0.0, 0.0])
            for _, (live, agent) in ranked[MAX_CAMPAIGNS - 1:]:
                rest[0] += live
                rest[1] += agent
        return {campaign: {"live_connects": live, "abandoned": max(0.0, live - agent),
                           "abandon_rate": quality.outbound_abandon_rate(live, agent)}
                for campaign, (live, agent) in sorted(sums.items())}

    def _set_agent(self, agent_id: str, t: float, state: str | None, reason: str | None) -> None:
        """Close the agent's previous state at t (counting its seconds) and open the new one."""
        previous = self.agents.get(agent_id)
        if previous is not None:
            old_state, since, _ = previous
            if t < since:  # an older state change arriving late: the newer one stands
                return
            self._count_agent_seconds(old_state, since, t)
        if state is None:
            self.agents.pop(agent_id, None)
        else:
            self.agents[agent_id] = (state, t, reason)

    def _count_agent_seconds(self, state: str, start: float, end: float) -> None:
        """Seconds of a closed agent state: into the day counters (split at business-day
        boundaries) and the totals, and into `agent_seconds` for the rolling windows."""
        if end <= start:
            return
        staffed, busy = state in STAFFED_STATES, state in BUSY_STATES
        ix = self.index
        fields = [ix["agent_logged_in_seconds"]] + ([ix["agent_staffed_seconds"]] if staffed else [])
        fields += [ix["agent_busy_seconds"]] if busy else []
        cursor = start
        while cursor < end:
            piece_end = min(end, self.business_day.bounds(cursor)[1])
            day = self._day_counters(cursor)
            for i in fields:
                self.totals[i] += piece_end - cursor
                day[i] += piece_end - cursor
            cursor = piece_end
        if staffed:  # the rolling windows count staffed and busy seconds only (not logged in)
            self.agent_seconds.add(start, end, busy)
        self.intervals.add_span(start, end, fields)

    def _on_agent_state(self, event: dict, t: float, raw: bytes) -> None:
        kind = event["type"]
        if kind == "agent.state_changed":
            self._set_agent(event["agent_id"], t, event["state"], event.get("reason"))
        elif kind in ("agent.logged_in", "agent.queue_joined"):
            if kind == "agent.logged_in" or event["agent_id"] not in self.agents:
                self._set_agent(event["agent_id"], t, "not_ready", "login" if kind == "agent.logged_in" else "joined")
        else:  # agent.logged_out, agent.queue_left
            self._set_agent(event["agent_id"], t, None, None)

    def _expire(self) -> None:
        """Drop what the lateness horizon has passed; runs when the watermark enters a new second."""
        horizon = self.watermark - self.lateness
        cutoff = math.floor(self.watermark - self.dedup_horizon)
        # Ids are only ever added at seconds >= the watermark minus the lateness, never below the
        # cutoff, so pruning can resume where it stopped last time (the cutoff, not the first id
        # seen: a late event may add ids below that).
        start = self._seen_floor if self._seen_floor is not None else min(self.seen, default=cutoff)
        for second in _seconds_present(self.seen, start, cutoff):
            self.seen_ids.difference_update(self.seen.pop(second))
        self._seen_floor = cutoff
        for call_id in [c for c, (t, _, _) in self.pending.items() if t < horizon]:
            _, event, raw = self.pending.pop(call_id)
            self.unmatched.append((event, raw))
        for call_id in [c for c, t in self.ended_early.items() if t < horizon]:
            del self.ended_early[call_id]  # a call not answered in this queue (or its answer too late)
        if self.caller_key is not None and (self._maturing or self.recent_contacts):
            self._mature_callers()
        assert self._watermark_second is not None  # apply() sets it just before
        if self._watermark_second % 60 == 0:
            self._forget_stale()
        # Keep the rolling windows current with event time too, so buckets are freed even when
        # nobody reads this queue (the clock is never behind the watermark).
        self.advance(self.watermark)

    def _forget_stale(self) -> None:
        w = self.watermark
        for table, age in ((self.waiting, FORGET_ORPHANED_CALL_AFTER), (self.ended, FORGET_WRAPUP_AFTER)):
            for key in [k for k, since in table.items() if w - since > age]:
                del table[key]
        for key in [k for k, call in self.talking.items() if w - call[0] > FORGET_UNENDED_CONVERSATION_AFTER]:
            del self.talking[key]
        for table, age in ((self.recent_handled, SURVEY_LINK_SECONDS), (self.open_callbacks, FORGET_OPEN_CALLBACK_AFTER)):
            for key in [k for k, since in table.items() if w - since > age]:
                del table[key]
        for key in [k for k, call in self.outbound_calls.items() if w - call[0] > FORGET_OUTBOUND_CALL_AFTER]:
            del self.outbound_calls[key]
        for key in [k for k in self.call_callers if k not in self.waiting and k not in self.talking]:
            del self.call_callers[key]  # forgotten calls (no outcome, or an end never came)
        if self.campaign_days:  # campaigns that stopped dialling: their days leave the 30 too
            today = self.business_day.bounds(w)[2]
            oldest = _first_rule_day(today)
            for campaign, days in list(self.campaign_days.items()):
                for old in [d for d in days if d < oldest]:
                    del days[old]
                if not days:
                    del self.campaign_days[campaign]

    # ---- rolling windows -------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Move every rolling window to end at `now`, subtracting the seconds that left it."""
        now_second = math.floor(now)
        new_lows = [now_second - span + 1 for _, span in WINDOWS]
        if self.window_low is None:
            self.window_sums = [[0.0] * len(self.fields) for _ in WINDOWS]
            for second, bucket in self.buckets.items():
                for low, sums in zip(new_lows, self.window_sums):
                    if second >= low:
                        for i, value in enumerate(bucket):
                            sums[i] += value
            self.window_low = new_lows
            for second in [s for s in self.buckets if s < new_lows[-1]]:
                del self.buckets[second]
            return
        for w, (old_low, new_low) in enumerate(zip(self.window_low, new_lows)):
            if new_low <= old_low:
                continue
            sums = self.window_sums[w]
            for second in _seconds_present(self.buckets, old_low, new_low):
                for i, value in enumerate(self.buckets[second]):
                    sums[i] -= value
            if w == len(WINDOWS) - 1:  # left the longest window: no longer needed
                for second in _seconds_present(self.buckets, old_low, new_low):
                    del self.buckets[second]
            self.window_low[w] = new_low
        # Also here, not only when read: a queue nobody reads must not keep every second of the day.
        self.agent_seconds.forget_before(self.window_low[-1])

    # ---- reading ---------------------------------------------------------------------------

    def read(self, now: float) -> dict:
        """Everything exported about this queue, evaluated at clock `now` (epoch seconds)."""
        self.advance(max(now, self.watermark))
        cfg = self.config
        orphan_after = cfg.orphan_after_seconds
        waits = [now - entered for entered in self.waiting.values()]
        live_waits = [w for w in waits if w <= orphan_after]
        agents = {state: 0 for state in AGENT_STATES}
        not_ready: dict[str, int] = {}
        limits = cfg.not_ready_limits_seconds
        over_limit = {threshold_key(limit): 0 for limit in limits}
        for state, since, reason in self.agents.values():
            agents[state] = agents.get(state, 0) + 1
            if state == "not_ready":
                reason = reason or "unknown"
                not_ready[reason] = not_ready.get(reason, 0) + 1
                for limit in limits:
                    if now - since > limit:
                        over_limit[threshold_key(limit)] += 1
        live = {
            "calls_waiting": len(live_waits),
            "oldest_call_wait_seconds": max(0.0, max(live_waits, default=0.0)),
            "calls_waiting_over_threshold": {
                threshold_key(t): sum(1 for w in live_waits if w > t) for t in self.thresholds
            },
            "agents": agents,
            "agents_not_ready_by_reason": top_counts(not_ready),
            "agents_not_ready_over_limit": over_limit,
            "calls_orphaned": len(waits) - len(live_waits),
            "callbacks_open": len(self.open_callbacks),
            "callbacks_open_over_limit": (
                sum(1 for since in self.open_callbacks.values() if now - since > cfg.callback_open_limit_seconds)
                if cfg.callback_open_limit_seconds > 0 else None),
        }
        day_start, _, iso = self.business_day.bounds(now)
        opened_at = cfg.opened_at(now)
        # Each part is contained: if it fails, it is None for this read (left out of the export and
        # counted in callcenter_export_errors_total{part}); the other parts and queues go on.
        windows = EXPORT_ERRORS.run(self.name, "windows", self._windows, now, day_start, iso)
        staffing = None
        if windows is not None:  # staffing is estimated from the windows
            staffing = EXPORT_ERRORS.run(self.name, "staffing", self._staffing, windows, live["agents"], now,
                                         opened_at is not None)
        return {
            "queue": self.name,
            "label": cfg.label,
            "currency": cfg.currency,
            "cost_per_agent_hour": cfg.cost_per_agent_hour,
            "outbound_30_days": self._outbound_30_days(iso),
            "timezone": cfg.timezone,
            "formula": cfg.formula,
            "thresholds": list(self.thresholds),
            "targets": self.targets,
            "short_abandon_seconds": cfg.short_abandon_seconds,
            "business_day": iso,
            "opened_at": opened_at,
            "team": cfg.team,
            "alert_limits": {
                "calls_waiting": cfg.alert_calls_waiting,
                "oldest_wait_seconds": cfg.alert_oldest_wait_seconds,
                "abandon_rate": cfg.alert_abandon_rate,
                "short_abandon_rate": cfg.alert_short_abandon_rate,
                "event_stall_seconds": cfg.alert_event_stall_seconds,
                "min_calls": cfg.alert_min_calls,
                "understaffed_agents": cfg.alert_understaffed_agents,
                "understaffed_seconds": cfg.alert_understaffed_seconds,
                "outbound_abandon_rate": cfg.outbound_abandon_limit,
                "callback_open_seconds": cfg.callback_open_limit_seconds,
            },
            "live": live,
            "windows": windows,
            "totals": dict(zip(self.fields, self.totals)),
            "answer_wait_histogram": self.answer_waits,
            "abandon_wait_histogram": self.abandon_waits,
            "last_event_time": self.watermark if self.watermark > -math.inf else None,
            "staffing": staffing,
        }

    def _windows(self, now: float, day_start: float, iso: str) -> dict:
        """The rolling windows and today, each with its counts, service levels and rates, at `now`."""
        windows = {}
        staffed_i, busy_i = self.index["agent_staffed_seconds"], self.index["agent_busy_seconds"]
        lows = self.window_low
        assert lows is not None  # read() advanced the windows just before
        closed_states = self.agent_seconds.window_sums(lows, math.floor(now))
        for (name, _), low, sums, (staffed, busy) in zip(WINDOWS, lows, self.window_sums, closed_states):
            counters = list(sums)
            counters[staffed_i], counters[busy_i] = staffed, busy
            self._add_open_agent_states(counters, low, now)
            windows[name] = self._window_view(counters, logged_in_known=False)
        today = list(self.days.get(iso) or [0.0] * len(self.fields))
        self._add_open_agent_states(today, day_start, now)
        windows["today"] = self._window_view(today)
        return windows

    def _staffing(self, windows: dict, agents: dict[str, int], now: float, is_open: bool) -> dict:
        """staffing_view() plus how long the queue has been short of alert_understaffed_agents
        while open, by the reads seen (every scrape): None when that alert is off or the staffing
        is unknown, 0 while not short or closed. A failing staffing_view() changes nothing here."""
        view = staffing_view(windows, agents, self.targets)
        limit = self.config.alert_understaffed_agents
        self.understaffed_since = understaffed_since(self.understaffed_since, view["agents_short"], limit, now,
                                                     is_open=is_open, last_read=self.understaffed_read_at)
        self.understaffed_read_at = max(now, self.understaffed_read_at or now)
        known = limit > 0 and view["agents_short"] is not None
        view["understaffed_seconds"] = (max(0.0, now - self.understaffed_since) if self.understaffed_since is not None
                                        else 0.0 if known else None)
        return view

    def _add_open_agent_states(self, out: list[float], window_start: float, now: float) -> None:
        """Add to window counters the seconds of agent states still open at `now`."""
        ix = self.index
        busy, staffed, logged_in = ix["agent_busy_seconds"], ix["agent_staffed_seconds"], ix["agent_logged_in_seconds"]
        for state, since, _ in self.agents.values():
            seconds = now - max(since, window_start)
            if seconds > 0:
                out[logged_in] += seconds
                if state in STAFFED_STATES:
                    out[staffed] += seconds
                    if state in BUSY_STATES:
                        out[busy] += seconds

    def _window_view(self, counters: list[float], logged_in_known: bool = True) -> dict:
        """The KPIs of one window's, day's or interval's counters. logged_in_known: False for the
        rolling windows, which keep staffed and busy agent-seconds only (no cost per call there)."""
        c = dict(zip(self.fields, counters))
        answered, abandoned, offered = c["answered"], c["abandoned"], c["offered"]
        view: dict[str, Any] = {
            name: c[name] for name in ("offered", "answered", "abandoned", "short_abandoned", "flowed_out", "handled")
        }
        view["flowed_out_by_reason"] = {r: c[f"flowed_out:{r}"] for r in FLOW_OUT_REASONS}
        view["answered_within"] = {threshold_key(t): c[f"answered_within:{threshold_key(t)}"] for t in self.thresholds}
        view["abandoned_within"] = {threshold_key(t): c[f"abandoned_within:{threshold_key(t)}"] for t in self.thresholds}
        by_formula = {}
        for formula in formulas.FORMULA_TEXT:
            by_formula[formula] = {
                threshold_key(t): formulas.service_level(
                    formula,
                    answered=answered,
                    answered_within=view["answered_within"][threshold_key(t)],
                    abandoned=abandoned,
                    abandoned_within=view["abandoned_within"][threshold_key(t)],
                    short_abandoned=c["short_abandoned"],
                    flowed_out=c["flowed_out"],
                )
                for t in self.thresholds
            }
        view["service_level"] = by_formula[self.config.formula]
        view["service_level_by_formula"] = by_formula
        view["answer_rate"] = formulas.ratio(answered, offered)
        view["abandon_rate"] = formulas.ratio(abandoned, offered)
        view["average_answer_wait_seconds"] = formulas.ratio(c["answer_wait_seconds"], answered)
        view["average_abandon_wait_seconds"] = formulas.ratio(c["abandon_wait_seconds"], abandoned)
        view["average_handle_seconds"] = formulas.average_handle_seconds(
            c["handled"], c["talk_seconds"], c["hold_seconds"], c["wrapup_seconds"]
        )
        view["occupancy"] = formulas.occupancy(c["agent_busy_seconds"], c["agent_staffed_seconds"])
        view["seconds"] = {
            name: c[name]
            for name in ("answer_wait_seconds", "abandon_wait_seconds", "talk_seconds", "hold_seconds",
                         "wrapup_seconds", "agent_busy_seconds", "agent_staffed_seconds")
        }
        logged_in = c["agent_logged_in_seconds"] if logged_in_known else None
        view["seconds"]["agent_logged_in_seconds"] = logged_in
        view["quality"] = self._quality_view(c)
        view["outbound"] = self._outbound_view(c)
        view["callbacks"] = self._callbacks_view(c)
        cfg = self.config
        view["cost_per_handled_call"] = (
            quality.cost_per_handled_call(logged_in, cfg.cost_per_agent_hour, c["handled"])
            if logged_in is not None and cfg.cost_per_agent_hour > 0 else None)
        return view

    @staticmethod
    def _quality_view(c: dict[str, float]) -> dict:
        csat = {score: c[f"csat:{score}"] for score in quality.CSAT_SCORES}
        nps = {score: c[f"nps:{score}"] for score in quality.NPS_SCORES}
        resolved, unresolved = c["fcr:resolved"], c["fcr:unresolved"]
        return {
            "surveys": c["surveys"],
            "surveys_unlinked": c["surveys_unlinked"],
            "csat_answers_by_score": {str(k): v for k, v in csat.items()},
            "nps_answers_by_score": {str(k): v for k, v in nps.items()},
            "resolved_answers": {"true": resolved, "false": unresolved},
            "csat_ratio": quality.csat_ratio(csat),
            "csat_average_score": quality.csat_average_score(csat),
            "net_promoter_score": quality.net_promoter_score(nps),
            "first_call_resolution_ratio": quality.first_call_resolution(resolved, unresolved),
            "repeat_caller_checked": c["repeat_caller_checked"],
            "repeat_caller_repeated": c["repeat_caller_repeated"],
            "repeat_caller_untracked": c["repeat_caller_untracked"],
            "repeat_caller_fcr_ratio": quality.repeat_caller_fcr(c["repeat_caller_checked"], c["repeat_caller_repeated"]),
        }

    @staticmethod
    def _outbound_view(c: dict[str, float]) -> dict:
        live, agent = c["outbound_live_connects"], c["outbound_agent_connects"]
        return {
            "attempts": c["outbound_attempts"],
            "attempts_by_result": {r: c[f"outbound:{r}"] for r in OUTBOUND_RESULTS},
            "live_connects": live,
            "agent_connects": agent,
            "connect_rate": quality.connect_rate(live, c["outbound_attempts"]),
            "abandon_rate": quality.outbound_abandon_rate(live, agent),
        }

    @staticmethod
    def _callbacks_view(c: dict[str, float]) -> dict:
        connected = c["callbacks_completed:connected"]
        return {
            "requested": c["callbacks_requested"],
            "completed_by_result": {r: c[f"callbacks_completed:{r}"] for r in CALLBACK_RESULTS},
            "unmatched": c["callbacks_unmatched"],
            "completion_rate": quality.callback_completion_rate(connected, c["callbacks_requested"]),
            "average_wait_seconds": formulas.ratio(c["callback_wait_seconds"], c["callbacks_waited"]),
        }

    # ---- interval reports (intervals.py) -----------------------------------------------------

    def _close_intervals(self, horizon: float) -> None:
        """Close the intervals the lateness horizon has passed: their records are final."""
        closed_at = max(self.watermark, horizon)
        closed_any = False
        for minutes, start, end, counters in self.intervals.close(horizon):
            self.interval_actuals_closed.setdefault(minutes, {})[start] = self._actual(end, counters)
            record = self._interval_record(minutes, start, end, counters, final=True)
            self.closed_intervals.append(record)
            self.final_records[(minutes, start)] = (closed_at, record)
            closed_any = True
        if not closed_any:
            return  # the common case (once per new watermark second): prune only when intervals close
        forget_before = closed_at - KEEP_ACTUALS_SECONDS
        for actuals in self.interval_actuals_closed.values():
            for start in [s for s in actuals if s < forget_before]:
                del actuals[start]
        keep_after = closed_at - max(KEEP_FINAL_RECORDS_SECONDS, 2 * self.lateness)
        for key in [k for k, (at, _) in self.final_records.items() if at < keep_after]:
            del self.final_records[key]

    def _actual(self, end: float, counters: list[float]) -> tuple[float, float, float, float]:
        i = self.index
        handle = counters[i["talk_seconds"]] + counters[i["hold_seconds"]] + counters[i["wrapup_seconds"]]
        return end, counters[i["offered"]], counters[i["handled"]], handle

    def interval_actuals(self, minutes: int, since: float) -> dict[float, tuple[float, float, float, float]]:
        """{start: (end, offered, handled, handle seconds)} of the intervals of `minutes` that start
        at or after `since`, closed or still open: the actual side of forecast.compare()."""
        out = {s: a for s, a in self.interval_actuals_closed.get(minutes, {}).items() if s >= since}
        for start, (end, counters) in self.intervals.open.get(minutes, {}).items():
            if start >= since:
                out[start] = self._actual(end, counters)
        return out

    def pending_interval_records(self, now: float) -> list[dict]:
        """Records of intervals that ended more than the lateness before clock `now` but are not
        closed by the watermark yet, because the queue went quiet: preliminary, and final unless a
        late event still changes them."""
        due = [(m, start, end, counters) for m, start, end, counters in self.intervals.pending(now - self.lateness)
               if (m, start) not in self.final_records]
        seen = (self._version, [(m, start) for m, start, _, _ in due])
        if seen == self._pending_seen:
            return []  # nothing happened since these were built: the same records again
        self._pending_seen = seen
        return [self._interval_record(m, start, end, list(counters), final=False) for m, start, end, counters in due]

    def _interval_record(self, minutes: int, start: float, end: float, counters: list[float], final: bool) -> dict:
        """One interval's KPIs; `counters` gets the seconds of agent states still open added.
        final: closed by the watermark, nothing can change it; else preliminary (queue quiet)."""
        self._add_open_agent_states(counters, start, end)
        cfg, zone = self.config, self.business_day.zone
        view = self._window_view(counters)
        # The other formulas can be recomputed from the counts in the record; leaving them out
        # keeps a record near 1 KB.
        del view["service_level_by_formula"]
        for name in ("offered", "answered", "abandoned", "short_abandoned", "flowed_out", "handled"):
            view[name] = round(view[name])
        for name in ("flowed_out_by_reason", "answered_within", "abandoned_within"):
            view[name] = {k: round(v) for k, v in view[name].items()}
        for part in ("quality", "outbound", "callbacks"):  # their counts are whole numbers too
            view[part] = _round_counts(view[part])
        return {
            "queue": self.name,
            "label": cfg.label,
            "interval_minutes": minutes,
            "start": local_iso(start, zone),
            "end": local_iso(end, zone),
            "start_epoch": start,
            "end_epoch": end,
            "final": final,
            "timezone": cfg.timezone,
            "formula": cfg.formula,
            "thresholds": list(self.thresholds),
            "targets": self.targets,
            "short_abandon_seconds": cfg.short_abandon_seconds,
            "currency": cfg.currency,
            **view,
            "agents_staffed_average": view["seconds"]["agent_staffed_seconds"] / (end - start),
        }

    # ---- snapshots (the changelog keeps one, plus the batches applied since) -----------------

    def to_state(self) -> dict:
        return {
            "fields": self.fields,
            "totals": self.totals,
            "days": self.days,
            "buckets": [[s, b] for s, b in self.buckets.items()],
            "answer_waits": self.answer_waits.to_state(),
            "agent_seconds": self.agent_seconds.to_state(),
            "abandon_waits": self.abandon_waits.to_state(),
            "waiting": self.waiting,
            "pending": [[c, t, e, raw.decode("utf-8", "replace")] for c, (t, e, raw) in self.pending.items()],
            "talking": self.talking,
            "ended": self.ended,
            "ended_early": self.ended_early,
            "agents": self.agents,
            "seen": [[s, sorted(ids)] for s, ids in self.seen.items()],
            "watermark": self.watermark if self.watermark > -math.inf else None,
            "applied_offset": self.applied_offset,
            "intervals": self.intervals.to_state(),
            "final_records": [[at, r] for at, r in self.final_records.values()],
            "interval_actuals": [[m, s, *a] for m, by_start in self.interval_actuals_closed.items()
                                 for s, a in by_start.items()],
            "understaffed_since": self.understaffed_since,
            "understaffed_read_at": self.understaffed_read_at,
            "first_event_time": self.first_event_time,
            "recent_handled": self.recent_handled,
            "open_callbacks": self.open_callbacks,
            "outbound_calls": self.outbound_calls,
            "campaign_days": self.campaign_days,
            "call_callers": self.call_callers,
            "handled_callers": self.handled_callers,
            "recent_contacts": self.recent_contacts,
            "newest_contact": self._newest_contact if self._newest_contact > -math.inf else None,
        }

    def load_state(self, state: dict) -> None:
        """Restore a snapshot taken by to_state(), possibly under an older config (fields by name)."""
        old_fields = state["fields"]
        mapping = [(i, self.index[name]) for i, name in enumerate(old_fields) if name in self.index]

        def remap(values: list[float]) -> list[float]:
            out = [0.0] * len(self.fields)
            for old, new in mapping:
                out[new] = values[old]
            return out

        self.totals = remap(state["totals"])
        self.days = {iso: remap(v) for iso, v in state["days"].items()}
        self.buckets = {int(s): remap(v) for s, v in state["buckets"]}
        self.window_low = None
        self.answer_waits.load_state(state["answer_waits"])
        self.abandon_waits.load_state(state["abandon_waits"])
        self.agent_seconds.load_state(state["agent_seconds"])
        self.waiting = dict(state["waiting"])
        self.pending = {c: (t, e, raw.encode()) for c, t, e, raw in state["pending"]}
        self.talking = {c: list(v) for c, v in state["talking"].items()}
        self.ended = dict(state["ended"])
        self.ended_early = dict(state.get("ended_early", {}))  # snapshots from before it have none
        self.agents = {a: tuple(v) for a, v in state["agents"].items()}
        self.seen = {int(s): set(ids) for s, ids in state["seen"]}
        self.seen_ids = set().union(*self.seen.values())
        self._seen_floor = None
        self.watermark = -math.inf if state["watermark"] is None else state["watermark"]
        self._watermark_second = None if state["watermark"] is None else math.floor(self.watermark)
        self.applied_offset = state["applied_offset"]
        if "intervals" in state:  # snapshots from before interval reports have none
            self.intervals.load_state(state["intervals"], remap)
            self.final_records = {(r["interval_minutes"], r["start_epoch"]): (at, r) for at, r in state["final_records"]}
        self.interval_actuals_closed = {}
        for m, start, *actual in state.get("interval_actuals", []):  # newer than interval reports
            if m in self.intervals.open:
                self.interval_actuals_closed.setdefault(m, {})[start] = tuple(actual)
        self.understaffed_since = state.get("understaffed_since")
        self.understaffed_read_at = state.get("understaffed_read_at")
        self.first_event_time = state.get("first_event_time")  # None from older snapshots: unknown
        # Snapshots from before the quality KPIs (issue 15) have none of these.
        self.recent_handled = dict(state.get("recent_handled", {}))
        self.open_callbacks = dict(state.get("open_callbacks", {}))
        self.outbound_calls = {c: list(v) for c, v in state.get("outbound_calls", {}).items()}
        self.campaign_days = {c: {d: list(v) for d, v in days.items()} for c, days in state.get("campaign_days", {}).items()}
        self.call_callers = dict(state.get("call_callers", {}))
        self.handled_callers = {c: [list(h) for h in calls] for c, calls in state.get("handled_callers", {}).items()}
        self._maturing = [(h[0], c) for c, calls in self.handled_callers.items() for h in calls]
        heapq.heapify(self._maturing)
        self.recent_contacts = {c: list(offers) for c, offers in state.get("recent_contacts", {}).items()}
        newest_contact = state.get("newest_contact")  # (snapshots from before groups have none)
        self._newest_contact = -math.inf if newest_contact is None else newest_contact


#: Keys of the quality, outbound and callbacks views that hold ratios or seconds, not counts.
_NOT_COUNTS = frozenset(("csat_ratio", "csat_average_score", "net_promoter_score", "first_call_resolution_ratio",
                         "repeat_caller_fcr_ratio",
                         "connect_rate", "abandon_rate", "completion_rate", "average_wait_seconds"))


def _round_counts(view: dict) -> dict:
    """A view with its counts (floats summed in counters) as integers, its ratios as they are."""
    return {k: (_round_counts(v) if isinstance(v, dict) else v if k in _NOT_COUNTS else round(v))
            for k, v in view.items()}


def _first_rule_day(today: str) -> str:
    """The oldest business date (ISO) of the outbound 30-day rule's days that end with `today`."""
    return (date.fromisoformat(today) - timedelta(days=OUTBOUND_RULE_DAYS - 1)).isoformat()


def _seconds_present(table: dict[int, Any], start: int, stop: int) -> list[int]:
    """Keys of `table` in [start, stop), looked up second by second or by a scan, whichever is less."""
    if stop - start > len(table):
        return [s for s in table if start <= s < stop]
    return [s for s in range(start, stop) if s in table]


_HANDLERS = {
    "call.offered": QueueModel._on_offered,
    "call.answered": QueueModel._on_wait_ended,
    "call.abandoned": QueueModel._on_wait_ended,
    "call.flowed_out": QueueModel._on_wait_ended,
    "call.hold_started": QueueModel._on_hold_started,
    "call.hold_ended": QueueModel._on_hold_ended,
    "call.ended": QueueModel._on_conversation_ended,
    "call.transferred": QueueModel._on_conversation_ended,
    "call.wrapup_ended": QueueModel._on_wrapup_ended,
    "call.survey": QueueModel._on_survey,
    "call.outbound_attempt": QueueModel._on_outbound_attempt,
    "call.callback_requested": QueueModel._on_callback_requested,
    "call.callback_completed": QueueModel._on_callback_completed,
    "agent.logged_in": QueueModel._on_agent_state,
    "agent.logged_out": QueueModel._on_agent_state,
    "agent.state_changed": QueueModel._on_agent_state,
    "agent.queue_joined": QueueModel._on_agent_state,
    "agent.queue_left": QueueModel._on_agent_state,
}
