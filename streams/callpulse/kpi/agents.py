"""Per-agent state: a deterministic fold over the events that name one agent, read against a clock.

The first stage routes every event with an `agent_id` to its agent's shard as well as to its
queues (events.agent_key: AGENT_SHARDS shards by a hash of the id), so one model sees all of an
agent's events whatever queues they concern. A shard (AgentShard: the agents whose ids hash to it)
is made durable, deduplicated and taken over exactly like a queue's model; shards rather than one
key per agent keep the batch messages few: one per shard per poll, not one per agent.

Attribution, as for queues (model.py): a handled call counts when its conversation ended (the
`call.ended` or `call.transferred` naming the agent), with its talk and hold seconds; wrap-up
seconds when `call.wrapup_ended` came; state seconds in the seconds the agent spent in each state;
surveys and dispositions naming the agent at their own time. "Today" is the business day of the
agent's time zone: the first queue of the first event it applied (its `queue`, or the first of its
`queues`), so a replay decides it the same way; or, when the config sets [agents] timezone, that
zone for every agent.

Interval and day records: an agent's counters are also kept per interval (its first queue's
interval_minutes) and per business day. A period closes once the agent's watermark minus the
lateness passes its end (the same rule as a queue's intervals): its record is final, with the
state seconds up to the period's end. A period that ended while the agent was quiet gets a
preliminary record by the stream clock, as a quiet queue's does. Day records carry the
scorecard (scorecard.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import formulas, quality, scorecard
from .intervals import KEEP_FINAL_RECORDS_SECONDS, interval_bounds, interval_start, local_iso
from .model import APPLIED, DUPLICATE, LATE, TOO_LATE, BusinessDay, threshold_key, top_counts

AGENT_STATES = ("available", "on_call", "wrap_up", "not_ready")
STATE_COUNTERS = ("logged_in_seconds", *(f"{state}_seconds" for state in AGENT_STATES))  # a period's state seconds
#: The counters read() gives since the agent's first event (today's have more: state seconds, KPIs).
TOTALS = ("answered", "handled", "transfers", "ring_no_answers", "talk_seconds", "hold_seconds", "wrapup_seconds",
          "surveys")
# A conversation or wrap-up whose closing event never came is forgotten after this (event time).
FORGET_CALL_AFTER = 12 * 3600.0
DAYS_KEPT = 3  # business days of totals kept (today, and two before for late readers)
#: Not-ready reasons and disposition codes are the platform's own: the most used are kept by name
#: in a day's totals, the rest summed as "other".
MAX_CODES = 20
KEYED_KINDS = ("not_ready", "disposition", "answered_within", "csat", "nps")  # counters named kind:name
STATE_FIELDS = ("state_seconds", "not_ready_seconds_by_reason", "occupancy", "utilization")  # of day_view
DAY = 0  # the period key of business days, beside the interval lengths in minutes
#: An agent logged out and silent this long (event time, by its shard's newest event) is forgotten:
#: its periods are closed and published, its model dropped (a departed agent costs nothing).
FORGET_AGENT_AFTER = 7 * 86400.0
SWEEP_EVERY = 3600.0  # the shard looks for such agents once per hour of its event time
PENDING_BUDGET = 2000  # preliminary records a shard builds per call (once a second)
# A quiet agent's preliminary records: at most this many periods per agent per pass (a logged-in
# agent with no events has state seconds in every interval).
MAX_PENDING_PERIODS = 200


@dataclass(frozen=True)
class AgentSettings:
    """What an agent's model needs from the config."""

    #: queue (None: unknown) -> (IANA zone, business-day start, interval lengths in minutes) of an
    #: agent whose first queue it is
    day_for: Callable[[str | None], tuple[str, Any, tuple[int, ...]]]
    lateness_seconds: float
    dedup_seconds: float = 600.0
    names: Mapping[str, str] = field(default_factory=dict)  # configured display names (win over the events')
    scheduled_seconds: Callable[[str], float] = lambda agent_id: 0.0  # per day; 0: no schedule
    card: tuple[scorecard.Measure, ...] = ()
    thresholds_for: Callable[[str], tuple[float, ...]] = lambda queue: ()  # a queue's service-level thresholds


def occupancy(talk: float, hold: float, wrapup: float, logged_in: float, not_ready: float) -> float | None:
    """Agent occupancy = (talk + hold + wrap-up seconds) / (logged-in - not-ready seconds)."""
    return formulas.ratio(talk + hold + wrapup, logged_in - not_ready)


def utilization(talk: float, hold: float, wrapup: float, logged_in: float) -> float | None:
    """Agent utilization = (talk + hold + wrap-up seconds) / logged-in seconds."""
    return formulas.ratio(talk + hold + wrapup, logged_in)


class AgentModel:
    """Live state and per-day totals of one agent."""

    def __init__(self, agent_id: str, settings: AgentSettings):
        self.agent_id = agent_id
        self.settings = settings
        self.lateness = settings.lateness_seconds
        self.dedup_horizon = max(settings.dedup_seconds, settings.lateness_seconds)
        self.home_queue: str | None = None  # decides the time zone of "today" and the intervals
        self.business_day: BusinessDay | None = None
        self.minutes: tuple[int, ...] = ()  # interval lengths
        self.name: str | None = None  # agent_name from the events, the newest one
        self.named_at = -math.inf
        self.state: str | None = None  # None: logged out
        self.since = -math.inf  # when the current state (or the logout) began
        self.counted_until = -math.inf  # the current state's seconds are in the counters up to here
        self.reason: str | None = None
        self.queues: list[str] = []
        # Calls in progress, by id: [queue, answered_at, hold_started_at | None, hold seconds]. Usually
        # one; an agent can also take a call with another on hold, or events may say so.
        self.calls: dict[str, list] = {}
        self.wrapping: dict[str, float] = {}  # call_id -> conversation end, until its wrap-up ends
        # Ends seen before their answer (out of order, within the lateness): call_id -> (end event's
        # type, time), settled by the answer
        self.ended_early: dict[str, tuple[str, float]] = {}
        self.days: dict[str, dict[str, float]] = {}  # business date -> counter -> value
        self.totals: dict[str, float] = {}  # the call counters since the first event (no state seconds)
        self.seen: dict[int, list[str]] = {}  # second -> event ids applied, for the dedup horizon
        self.seen_ids: set[str] = set()
        self.watermark = -math.inf
        self.applied_offset = -1  # newest batch offset applied (the pipeline's redelivery guard)
        # (period, start) -> [end, counters] of the periods not closed yet (period: minutes; days
        # are in self.days); the first applied event's time, and per period the next one to close
        self.slots: dict[tuple[int, float], list] = {}
        self.first_time = math.inf
        self.closed_until: dict[int, float] = {}
        self._next_close = -math.inf  # no period ends before this: the common case made cheap
        self._current: dict[int, tuple[float, float, dict]] = {}  # per length: the slot last added to
        # (period, start) -> [closed at, record] of closed periods, kept a while to publish the
        # records again, unchanged, after a takeover (the crashed owner may not have sent them)
        self.final: dict[tuple[int, float], list] = {}
        self.closed: list[dict] = []  # records closed since last taken
        self._version = 0  # applied events, for the preliminary records' repeat check
        self._pending_seen: tuple[int, float] | None = None  # (version, next period end) of the last preliminary records
        self._pending_from: dict[int, float] = {}  # per period: preliminary records built up to here
        # periods a preliminary record was built for: when one closes with no counts after all (the
        # agent's late events said it had logged out), a final record of zeros replaces it. Built by
        # the stream clock's reads, so a rebuild starts it empty (a new owner replaces only its own)
        self.prelim: set[tuple[int, float]] = set()
        self._day_changes = 0  # calls of _day(), the only way into the day counters and totals
        # read()'s parts of today's view that only the counters change: ((_day_changes, date),
        # state_counts, calls_view, not-ready seconds by reason, their top_counts, totals)
        self._read_cache: tuple | None = None

    # ---- applying events -------------------------------------------------------------------

    def apply(self, event: dict, t: float, raw: bytes = b"") -> str:
        event_id = event["event_id"]
        if event_id in self.seen_ids:
            return DUPLICATE
        if t < self.watermark - self.lateness:
            return TOO_LATE
        second = math.floor(t)
        self.seen.setdefault(second, []).append(event_id)
        self.seen_ids.add(event_id)
        if self.business_day is None:
            queues = event.get("queues") or []
            self.home_queue = event.get("queue") or (queues[0] if queues else None)
            self._set_day()
        if t < self.first_time:  # periods never closed begin here
            self.first_time = t
            self._next_close = -math.inf  # an earlier period may be due now (as after a load)
        self._version += 1
        if "agent_name" in event and t >= self.named_at:  # the newest name stands
            self.name, self.named_at = event["agent_name"], t
        handler = _HANDLERS.get(event["type"])
        if handler is not None:
            handler(self, event, t)
        if t > self.watermark:
            new_second = self.watermark == -math.inf or math.floor(self.watermark) != second
            self.watermark = t
            if new_second:
                self._expire()
                self._close(t - self.lateness)
            return APPLIED
        return LATE if t < self.watermark else APPLIED

    def _set_day(self) -> None:
        zone, day_start, self.minutes = self.settings.day_for(self.home_queue)
        self.business_day = BusinessDay(zone, day_start)

    def _day(self, t: float) -> dict[str, float]:
        assert self.business_day is not None  # set by the first event
        self._day_changes += 1  # every write of day counters and totals comes through here (read's cache)
        iso = self.business_day.bounds(t)[2]
        day = self.days.get(iso)
        if day is None:
            day = self.days[iso] = {}
            closed_before = self.closed_until.get(DAY, -math.inf)  # a day not closed yet is kept for its record
            for old in sorted(self.days)[:-DAYS_KEPT]:
                if self.business_day.start_of_iso(old) < closed_before:
                    del self.days[old]
        return day

    def _slot(self, minutes: int, t: float) -> dict[str, float]:
        """The counters of the interval of `minutes` containing t."""
        current = self._current.get(minutes)
        if current is not None and current[0] <= t < current[1]:
            return current[2]
        assert self.business_day is not None
        start, end = interval_bounds(t, minutes, self.business_day.zone)
        slot = self.slots.get((minutes, start))
        if slot is None:
            slot = self.slots[(minutes, start)] = [end, {}]
        self._current[minutes] = (start, end, slot[1])
        return slot[1]

    def _add(self, t: float, **amounts: float) -> None:
        sinks = [self._day(t), self.totals] + [self._slot(m, t) for m in self.minutes]
        for name, amount in amounts.items():
            for counters in sinks:
                counters[name] = counters.get(name, 0.0) + amount

    def _add_key(self, t: float, name: str, amount: float = 1.0) -> None:
        self._add(t, **{name: amount})

    def _state_seconds(self, state: str, reason: str | None, start: float, end: float,
                       out: dict[str, float] | None = None) -> None:
        """Seconds of a state [start, end) into the day counters split at business-day bounds, and
        into the interval counters split at theirs; or all into `out` (a view being read)."""
        assert self.business_day is not None
        names = state_counter_names(state, reason)
        if out is not None:
            _add_seconds(out, names, end - start)
            return
        for period in (DAY, *self.minutes):
            cursor = start
            while cursor < end:
                piece_end = min(end, self._bounds(period, cursor)[1])
                _add_seconds(self._day(cursor) if period == DAY else self._slot(period, cursor), names, piece_end - cursor)
                cursor = piece_end

    def _account_state(self, until: float) -> None:
        """Put the current state's seconds up to `until` into the counters."""
        if self.state is not None and until > self.counted_until:
            self._state_seconds(self.state, self.reason, max(self.since, self.counted_until), until)
            self.counted_until = until

    def _set_state(self, t: float, state: str | None, reason: str | None) -> None:
        if t < self.since:  # an older state change arriving late (a logout included): the newer one stands
            return
        if self.state is not None:
            self._account_state(t)
        self.state, self.since, self.counted_until, self.reason = state, t, t, reason

    def _on_state(self, event: dict, t: float) -> None:
        kind = event["type"]
        if t < self.since:
            return  # older than the agent's current state (or its logout): the newer events stand
        if kind == "agent.state_changed":
            self.queues = list(event["queues"])
            self._set_state(t, event["state"], event.get("reason"))
        elif kind == "agent.logged_in":
            self.queues = list(event["queues"])
            self._set_state(t, "not_ready", "login")
        elif kind == "agent.logged_out":
            self.queues = []
            self._set_state(t, None, None)
        elif kind == "agent.queue_joined":
            if event["queue"] not in self.queues:
                self.queues.append(event["queue"])
            if self.state is None:
                self._set_state(t, "not_ready", "joined")
        else:  # agent.queue_left: still logged in to its other queues (or none) until it logs out
            self.queues = [q for q in self.queues if q != event["queue"]]

    def _on_answered(self, event: dict, t: float) -> None:
        if event["call_id"] in self.calls:  # answered twice (different event ids): the first stands
            return
        wait = event.get("wait_seconds")
        if wait is None:  # the ACD did not say: the agent's answered-within counts leave it out
            self._add(t, answered=1.0, answered_wait_unknown=1.0)
        else:
            within = {f"answered_within:{threshold_key(limit)}": 1.0
                      for limit in self.settings.thresholds_for(event["queue"]) if wait <= limit}
            self._add(t, answered=1.0, **within)
        self.calls[event["call_id"]] = [event["queue"], t, None, 0.0]
        early = self.ended_early.pop(event["call_id"], None)
        if early is not None and early[1] >= t:
            self._end_call(event["call_id"], early[0], early[1])

    def _on_hold(self, event: dict, t: float) -> None:
        call = self.calls.get(event["call_id"])
        if call is None:
            return
        if event["type"] == "call.hold_started" and call[2] is None:
            call[2] = t
        elif event["type"] == "call.hold_ended" and call[2] is not None:
            call[3] += max(0.0, t - call[2])
            call[2] = None

    def _on_conversation_ended(self, event: dict, t: float) -> None:
        if event.get("agent_id") != self.agent_id:
            return
        if event["call_id"] not in self.calls:  # its answer may still come (out of order)
            self.ended_early.setdefault(event["call_id"], (event["type"], t))
            return
        self._end_call(event["call_id"], event["type"], t)

    def _end_call(self, call_id: str, kind: str, t: float) -> None:
        _, answered_at, hold_started, hold = self.calls.pop(call_id)
        if hold_started is not None:
            hold += max(0.0, t - hold_started)
        talk = max(0.0, t - answered_at - hold)
        self._add(t, handled=1.0, talk_seconds=talk, hold_seconds=hold,
                  transfers=1.0 if kind == "call.transferred" else 0.0)
        self.wrapping[call_id] = t

    def _on_wrapup_ended(self, event: dict, t: float) -> None:
        ended_at = self.wrapping.pop(event["call_id"], None)
        if ended_at is not None:
            self._add(t, wrapup_seconds=max(0.0, t - ended_at))

    def _on_ring_no_answer(self, event: dict, t: float) -> None:
        self._add(t, ring_no_answers=1.0)

    def _on_survey(self, event: dict, t: float) -> None:
        self._add(t, surveys=1.0)
        if "csat" in event:  # int(): the schema's integer also admits 5.0
            self._add_key(t, f"csat:{int(event['csat'])}")
        if "nps" in event:
            self._add_key(t, f"nps:{int(event['nps'])}")
        if "resolved" in event:
            self._add_key(t, "fcr:resolved" if event["resolved"] else "fcr:unresolved")

    def _on_disposition(self, event: dict, t: float) -> None:
        self._add_key(t, f"disposition:{event['code']}")

    def _expire(self) -> None:
        cutoff = math.floor(self.watermark - self.dedup_horizon)
        for second in [s for s in self.seen if s < cutoff]:
            self.seen_ids.difference_update(self.seen.pop(second))
        w = self.watermark
        for call_id in [c for c, call in self.calls.items() if w - call[1] > FORGET_CALL_AFTER]:
            del self.calls[call_id]
        for call_id in [c for c, t in self.wrapping.items() if w - t > FORGET_CALL_AFTER]:
            del self.wrapping[call_id]
        for call_id in [c for c, (_, t) in self.ended_early.items() if t < w - self.lateness]:
            del self.ended_early[call_id]  # no answer within the lateness: not this agent's call

    # ---- interval and day records -------------------------------------------------------------

    def _bounds(self, period: int, t: float) -> tuple[float, float]:
        assert self.business_day is not None
        if period == DAY:
            return self.business_day.bounds(t)[:2]
        return interval_bounds(t, period, self.business_day.zone)

    def _counters(self, period: int, start: float, take: bool) -> dict[str, float]:
        """A period's counters; `take`: it is closing (an interval's slot is removed, a day's
        counters stay for today's and the previous days' views)."""
        assert self.business_day is not None
        if period == DAY:
            return self.days.get(self.business_day.bounds(start)[2], {})
        if take:
            self._current.pop(period, None)
            slot = self.slots.pop((period, start), None)
        else:
            slot = self.slots.get((period, start))
        return slot[1] if slot is not None else {}

    def _periods_due(self, period: int, horizon: float, cursor: float):
        """(start, end) of the periods from the one containing `cursor` that end at or before
        `horizon`. Spans without counts (no slot or day counters, and before the open state's
        uncounted seconds) are skipped: an agent away for a week costs a few steps, not 672."""
        assert self.business_day is not None
        day = self.business_day
        while True:
            start, end = self._bounds(period, cursor)
            if end > horizon:
                return
            yield start, end
            cursor = end
            live_from = self.counted_until if self.state is not None else math.inf
            # a period that had a preliminary record is visited too: its final one replaces it
            prelim = min((s for (m, s) in self.prelim if m == period and s >= cursor), default=math.inf)
            if period == DAY:
                if day.bounds(cursor)[2] in self.days:
                    continue
                later_iso = min((iso for iso in self.days if iso > day.bounds(cursor)[2]), default=None)
                target = min(day.start_of_iso(later_iso) if later_iso else math.inf, live_from, prelim, horizon)
                if target > cursor:
                    cursor = day.bounds(target)[0]
            elif (period, self._bounds(period, cursor)[0]) not in self.slots:
                later = min((s for (m, s) in self.slots if m == period and s >= cursor), default=math.inf)
                target = min(later, live_from, prelim, horizon)
                if target > cursor:
                    cursor = interval_start(target, period, day.zone)

    def _cursor(self, period: int) -> float:
        """Where the next period to close begins: after the last one closed, else at the first
        event applied (or an earlier slot of an event that came late)."""
        if period in self.closed_until:
            return self.closed_until[period]
        if period == DAY:
            return self.first_time
        return min(self.first_time, min((s for (m, s) in self.slots if m == period), default=math.inf))

    def _close(self, horizon: float) -> None:
        """Close every period that ended at or before `horizon` (the watermark minus the lateness:
        nothing can change them any more); their records are final."""
        if horizon < self._next_close or self.business_day is None:
            return
        next_close = math.inf
        closed_now = False
        for period in (*self.minutes, DAY):
            cursor = self._cursor(period)
            if cursor == math.inf:
                continue
            closed_any = period in self.closed_until
            for start, end in self._periods_due(period, horizon, cursor):
                self._account_state(end)
                counters = self._counters(period, start, take=True)
                if counters:
                    record = self._record(period, start, end, counters, final=True)
                    self.final[(period, start)] = [horizon, record]
                    self.closed.append(record)
                elif (period, start) in self.prelim:
                    # zeros replace a preliminary record this worker sent; not kept for republishing:
                    # the marks come from the clock's reads, and the kept state must be the events'
                    self.closed.append(self._record(period, start, end, counters, final=True))
                self.prelim.discard((period, start))
                closed_any = closed_now = True
            if closed_any:  # every period before the horizon's is closed (however many were skipped)
                cursor = self.closed_until[period] = self._bounds(period, horizon)[0]
            next_close = min(next_close, self._bounds(period, cursor)[1])
        self._next_close = next_close
        self._pending_from = {}
        if not closed_now:  # (pruning only when periods close: after a load, _next_close is unknown)
            return
        keep_after = horizon - max(KEEP_FINAL_RECORDS_SECONDS, 2 * self.lateness)
        for key in [k for k, (at, _) in self.final.items() if at < keep_after]:
            del self.final[key]
        if self.prelim:  # (a period closed before this pass: nothing replaces its preliminary any more)
            self.prelim = {(m, start) for m, start in self.prelim if start >= self.closed_until.get(m, -math.inf)}

    def pending_records(self, now: float, limit: int = 10**9) -> list[dict]:
        """Preliminary records of the periods that ended more than the lateness before clock `now`
        but are not closed, because the agent went quiet (with the open state's seconds up to
        their end). Each is built once: while no event comes, only periods that newly ended are.
        At most `limit` records; the rest come in the next calls."""
        horizon = now - self.lateness
        if horizon < self._next_close or self.business_day is None:
            return []
        version, next_due = self._pending_seen or (-1, -math.inf)
        if version != self._version:
            self._pending_from = {}  # an event changed the counters: the preliminary records again
        elif horizon < next_due:
            return []  # nothing happened and no other period ended since the last records
        records: list[dict] = []
        next_due = math.inf
        for period in (*self.minutes, DAY):
            cursor = max(self._cursor(period), self._pending_from.get(period, -math.inf))
            if cursor == math.inf:
                continue
            for n, (start, end) in enumerate(self._periods_due(period, horizon, cursor)):
                if n == MAX_PENDING_PERIODS or len(records) >= limit:  # the rest in the next calls
                    next_due = -math.inf
                    break
                counters = dict(self._counters(period, start, take=False))
                if self.state is not None and end > self.counted_until:
                    self._state_seconds(self.state, self.reason, max(self.since, self.counted_until, start), end, out=counters)
                if counters:
                    records.append(self._record(period, start, end, counters, final=False))
                    self.prelim.add((period, start))
                cursor = self._pending_from[period] = end
            next_due = min(next_due, self._bounds(period, cursor)[1])
        self._pending_seen = (self._version, next_due)
        return records

    def final_records(self) -> list[dict]:
        """The records of the periods closed recently, as they were sent, to send again after a takeover."""
        return [record for _, (_, record) in sorted(self.final.items())]

    def _record(self, period: int, start: float, end: float, counters: dict[str, float], final: bool) -> dict:
        assert self.business_day is not None
        zone = self.business_day.zone
        view = day_view(counters, by_states=period != DAY)
        record = {
            "agent_id": self.agent_id, "agent_name": self.display_name(),
            "period": "day" if period == DAY else "interval", "interval_minutes": None if period == DAY else period,
            "business_day": self.business_day.bounds(start)[2], "start": local_iso(start, zone), "end": local_iso(end, zone),
            "start_epoch": start, "end_epoch": end, "timezone": zone.key, "final": final, **view,
        }
        if period == DAY and self.settings.card:
            record["scorecard"] = self.score(view, counters)
        return record

    # ---- scorecard ---------------------------------------------------------------------------

    def display_name(self) -> str | None:
        """The configured name, else the newest agent_name of the events."""
        return self.settings.names.get(self.agent_id, self.name)

    def score(self, view: dict, counters: dict[str, float]) -> dict:
        """The scorecard of a day: its view (day_view) and counters."""
        scheduled = self.settings.scheduled_seconds(self.agent_id)
        logged_in = counters.get("logged_in_seconds", 0.0)
        values = {name: view.get(name) for name in scorecard.MEASURES}
        values["not_ready_ratio"] = formulas.ratio(counters.get("not_ready_seconds", 0.0), logged_in)
        values["adherence"] = logged_in / scheduled if scheduled > 0 else None
        card = scorecard.score_card(values, self.settings.card)
        card["scheduled_seconds"] = scheduled or None
        return card

    # ---- reading ---------------------------------------------------------------------------

    def read(self, now: float) -> dict:
        """The agent now: state, reason and seconds in it, queues, the call in progress, today's
        totals (open state seconds included up to `now`). Read only: the view shares its nested
        dicts with the model's cache of them."""
        iso = None
        open_from = None  # where the open state's seconds not in the counters yet begin
        if self.business_day is not None:
            day_start, _, iso = self.business_day.bounds(now)
            if self.state is not None and now > self.counted_until:
                open_from = max(self.since, self.counted_until, day_start)
        # Only the open state's seconds change between events: the rest of today's view is kept
        # until the counters change (every change goes through _day), so a board re-read costs little.
        if self._read_cache is None or self._read_cache[0] != (self._day_changes, iso):
            counters = self.days.get(iso, {}) if iso is not None else {}
            keyed = keyed_counters(counters)
            totals = {name: self.totals.get(name, 0.0) for name in TOTALS}
            self._read_cache = ((self._day_changes, iso), state_counts(counters), calls_view(counters, keyed),
                                keyed["not_ready"], top_counts(keyed["not_ready"], MAX_CODES), totals)
        _, counted, calls, reasons, top_reasons, totals = self._read_cache
        today = counted
        if open_from is not None:
            assert self.state is not None
            today = dict(counted)
            names = state_counter_names(self.state, self.reason)
            _add_seconds(today, names[:2], now - open_from)
            if self.state == "not_ready":
                reasons = dict(reasons)
                _add_seconds(reasons, (names[2].partition(":")[2],), now - open_from)
                top_reasons = top_counts(reasons, MAX_CODES)
        call = None  # the call in progress answered last
        if self.calls:
            queue, answered_at, hold_started, _ = max(self.calls.values(), key=lambda c: c[1])
            call = {"queue": queue, "phase": "holding" if hold_started is not None else "talking",
                    "seconds": max(0.0, now - answered_at), "calls_in_progress": len(self.calls)}
        today_view = with_state_seconds(calls, today, top_reasons, by_states=False)
        if self.settings.card:
            today_view["scorecard"] = self.score(today_view, today)
        return {
            "agent_id": self.agent_id,
            "agent_name": self.display_name(),
            "state": self.state or "logged_out",
            "reason": self.reason,
            "state_seconds": max(0.0, now - self.since) if self.state is not None else None,
            "queues": list(self.queues),
            "call": call,
            "business_day": iso,
            "timezone": self.business_day.zone.key if self.business_day else None,
            "today": today_view,
            "totals": dict(totals),
            "last_event_time": self.watermark if self.watermark > -math.inf else None,
        }

    # ---- snapshots -------------------------------------------------------------------------

    def to_state(self) -> dict:
        return {
            "home_queue": self.home_queue, "initialized": self.business_day is not None, "name": self.name,
            "state": self.state, "since": _finite(self.since), "counted_until": _finite(self.counted_until),
            "reason": self.reason,
            "queues": self.queues, "slots": [[m, start, end, c] for (m, start), (end, c) in self.slots.items()],
            "first_time": self.first_time if self.first_time < math.inf else None,
            "closed_until": [[m, v] for m, v in self.closed_until.items()],
            "final": [[m, start, at, record] for (m, start), (at, record) in self.final.items()],
            "prelim": sorted(self.prelim),
            "periods": [self.business_day.zone.key, self.business_day.day_start.isoformat(), list(self.minutes)]
            if self.business_day is not None else None,
            "calls": self.calls, "wrapping": self.wrapping, "ended_early": self.ended_early,
            "named_at": self.named_at if self.named_at > -math.inf else None, "days": self.days, "totals": self.totals,
            "seen": [[s, ids] for s, ids in self.seen.items()],
            "watermark": self.watermark if self.watermark > -math.inf else None,
            "applied_offset": self.applied_offset,
        }

    def load_state(self, state: dict) -> None:
        self.home_queue = state["home_queue"]
        if state["initialized"]:
            self._set_day()
        self.name = state["name"]
        self.state, self.since, self.reason = state["state"], _or_minus_inf(state["since"]), state["reason"]
        # (snapshots written before interval records existed have none of these)
        self.counted_until = _or_minus_inf(state.get("counted_until", state["since"]))
        self.slots = {(m, start): [end, dict(c)] for m, start, end, c in state.get("slots", []) if m in self.minutes}
        self.first_time = math.inf if state.get("first_time") is None else state["first_time"]
        self.closed_until = {m: v for m, v in state.get("closed_until", []) if m in (*self.minutes, DAY)}
        self.final = {(m, start): [at, record] for m, start, at, record in state.get("final", [])}
        self.prelim = {(m, start) for m, start in state.get("prelim", [])}
        self._current, self._next_close, self._pending_seen = {}, -math.inf, None
        self.queues = list(state["queues"])
        self.calls = {c: list(v) for c, v in state["calls"].items()}
        self.ended_early = {c: (kind, t) for c, (kind, t) in state["ended_early"].items()}
        self.named_at = -math.inf if state["named_at"] is None else state["named_at"]
        self.wrapping = dict(state["wrapping"])
        self.days = {iso: dict(c) for iso, c in state["days"].items()}
        self.totals = dict(state["totals"])
        self._read_cache = None
        self.seen = {int(s): list(ids) for s, ids in state["seen"]}
        self.seen_ids = {i for ids in self.seen.values() for i in ids}
        self.watermark = -math.inf if state["watermark"] is None else state["watermark"]
        self.applied_offset = state["applied_offset"]
        if self.first_time == math.inf and self.watermark > -math.inf:  # an older snapshot: periods from now on
            self.first_time = self.watermark
        if self.business_day is not None and "periods" in state and state["periods"] != [
                self.business_day.zone.key, self.business_day.day_start.isoformat(), list(self.minutes)]:
            self._periods_changed(state["periods"])

    def _periods_changed(self, before: list) -> None:
        """The config changed the agent's time zone, day start or interval lengths since the
        snapshot: the periods whose bounds moved start again from the next event (the one open at
        the change is partial); the days keep their counters under their dates."""
        assert self.business_day is not None
        zone, day_start, minutes = before
        if zone != self.business_day.zone.key:  # every bound moved
            self.slots, self.closed_until = {}, {}
        else:
            if day_start != self.business_day.day_start.isoformat():  # the days' bounds moved, the intervals' not
                self.closed_until.pop(DAY, None)
            for m in self.minutes:  # lengths added: they start now
                if m not in minutes:
                    self.closed_until.pop(m, None)
        self.first_time = self.watermark if self.watermark > -math.inf else math.inf


def _finite(t: float) -> float | None:
    return t if math.isfinite(t) else None


def _or_minus_inf(t: float | None) -> float:
    return -math.inf if t is None else t


def state_counter_names(state: str, reason: str | None) -> tuple[str, ...]:
    """The counters a state's seconds go to: logged in, the state's, and not-ready's by reason."""
    names = ("logged_in_seconds", f"{state}_seconds")
    return (*names, f"not_ready:{reason or 'unknown'}") if state == "not_ready" else names


def _add_seconds(counters: dict[str, float], names: tuple[str, ...], seconds: float) -> None:
    for name in names:
        counters[name] = counters.get(name, 0.0) + seconds


def day_view(c: dict[str, float], by_states: bool = False) -> dict:
    """A day's (or any period's) agent totals and the KPIs computed from them. Occupancy and
    utilization take talk + hold + wrap-up seconds of the calls that ended (the issue's formulas);
    `by_states` (interval records) takes the seconds on_call + wrap_up instead: a call's seconds
    count when it ends, so a 40-minute call would put 0 % and 267 % in three intervals."""
    keyed = keyed_counters(c)
    return with_state_seconds(calls_view(c, keyed), state_counts(c), top_counts(keyed["not_ready"], MAX_CODES), by_states)


def state_counts(c: dict[str, float]) -> dict[str, float]:
    """The state seconds of a period's counters (logged in, and each state's)."""
    return {name: c.get(name, 0.0) for name in STATE_COUNTERS}


def keyed_counters(c: dict[str, float]) -> dict[str, dict[str, float]]:
    """The keyed counters (kind:name: not-ready reasons, disposition codes, answers within each
    threshold, CSAT and NPS answers by score), by kind, in one pass over a period's counters."""
    keyed: dict[str, dict[str, float]] = {kind: {} for kind in KEYED_KINDS}
    for key, n in c.items():
        kind, _, name = key.partition(":")
        if name and kind in keyed:
            keyed[kind][name] = n
    return keyed


def calls_view(c: dict[str, float], keyed: dict[str, dict[str, float]]) -> dict:
    """The part of day_view that the state seconds do not change (with_state_seconds fills the
    rest), so a reader can keep it while the counters of the calls stay the same."""

    def get(name: str) -> float:
        return c.get(name, 0.0)

    talk, hold, wrap = get("talk_seconds"), get("hold_seconds"), get("wrapup_seconds")
    csat = {int(score): n for score, n in keyed["csat"].items()}
    nps = {int(score): n for score, n in keyed["nps"].items()}
    return {
        "answered": get("answered"),
        # answered within each threshold of the answering queue (its label), by the answer's
        # wait_seconds; answers without one are counted apart
        "answered_within": dict(sorted(keyed["answered_within"].items(), key=lambda kv: float(kv[0]))),
        "answered_wait_unknown": get("answered_wait_unknown"),
        "handled": get("handled"),
        "transfers": get("transfers"),
        "ring_no_answers": get("ring_no_answers"),
        "talk_seconds": talk,
        "hold_seconds": hold,
        "wrapup_seconds": wrap,
        "average_handle_seconds": formulas.average_handle_seconds(get("handled"), talk, hold, wrap),
        **dict.fromkeys(STATE_FIELDS),  # (their place in the view; with_state_seconds sets them)
        "surveys": get("surveys"),
        "csat_ratio": quality.csat_ratio(csat),
        "csat_average_score": quality.csat_average_score(csat),
        "net_promoter_score": quality.net_promoter_score(nps),
        "first_call_resolution_ratio": quality.first_call_resolution(get("fcr:resolved"), get("fcr:unresolved")),
        "dispositions": top_counts(keyed["disposition"], MAX_CODES),
    }


def with_state_seconds(calls: dict, seconds: dict[str, float], top_reasons: dict[str, float], by_states: bool) -> dict:
    """A copy of calls_view's `calls` with the fields of the state seconds (`seconds`:
    state_counts; `top_reasons`: not-ready seconds by reason, top_counts) and the ratios they divide."""
    logged_in, not_ready = seconds["logged_in_seconds"], seconds["not_ready_seconds"]
    busy = seconds["on_call_seconds"] + seconds["wrap_up_seconds"]
    talk, hold, wrap = calls["talk_seconds"], calls["hold_seconds"], calls["wrapup_seconds"]
    view = dict(calls)
    view["state_seconds"] = {"logged_in": logged_in, **{s: seconds[f"{s}_seconds"] for s in AGENT_STATES}}
    view["not_ready_seconds_by_reason"] = top_reasons
    view["occupancy"] = (formulas.ratio(busy, logged_in - not_ready) if by_states
                         else occupancy(talk, hold, wrap, logged_in, not_ready))
    view["utilization"] = formulas.ratio(busy, logged_in) if by_states else utilization(talk, hold, wrap, logged_in)
    return view


_HANDLERS: dict[str, Callable[[AgentModel, dict, float], None]] = {
    "agent.logged_in": AgentModel._on_state,
    "agent.logged_out": AgentModel._on_state,
    "agent.state_changed": AgentModel._on_state,
    "agent.queue_joined": AgentModel._on_state,
    "agent.queue_left": AgentModel._on_state,
    "call.answered": AgentModel._on_answered,
    "call.hold_started": AgentModel._on_hold,
    "call.hold_ended": AgentModel._on_hold,
    "call.ended": AgentModel._on_conversation_ended,
    "call.transferred": AgentModel._on_conversation_ended,
    "call.wrapup_ended": AgentModel._on_wrapup_ended,
    "call.ring_no_answer": AgentModel._on_ring_no_answer,
    "call.survey": AgentModel._on_survey,
    "call.disposition": AgentModel._on_disposition,
}


class AgentShard:
    """The agents of one shard (events.agent_key), each an AgentModel: what the second stage keeps
    under the shard's key, with the attributes it reads of a queue's model."""

    def __init__(self, settings: AgentSettings):
        self.settings = settings
        self.agents: dict[str, AgentModel] = {}
        self.applied_offset = -1  # newest batch offset applied (the pipeline's redelivery guard)
        self.unmatched: list = []  # (the pipeline reads this of every model: agents reject nothing)
        self.closed_intervals: list[dict] = []  # agent records closed since last taken: to publish
        self.watermark = -math.inf  # newest event time of any agent of the shard
        self.swept_at = -math.inf
        self.gone_final: list[list] = []  # [forgotten at, record]: their last records, to publish again too
        # forgotten agents -> the shard's watermark when forgotten: an event of theirs older than it
        # minus the lateness stays too late (their periods were closed); kept FORGET_AGENT_AFTER more
        self.forgotten: dict[str, float] = {}

    def _agent(self, agent_id: str) -> AgentModel:
        model = self.agents.get(agent_id)
        if model is None:
            model = self.agents[agent_id] = AgentModel(agent_id, self.settings)
            if agent_id in self.forgotten:
                model.watermark = self.forgotten.pop(agent_id)
        return model

    def apply(self, event: dict, t: float, raw: bytes = b"") -> str:
        agent_id = event["agent_id"]
        if agent_id not in self.agents and t < self.forgotten.get(agent_id, -math.inf) - self.settings.lateness_seconds:
            return TOO_LATE  # an old event of a forgotten agent: its periods were closed
        model = self._agent(agent_id)
        outcome = model.apply(event, t, raw)
        if model.closed:
            self.closed_intervals += model.closed
            model.closed = []
        if outcome in (APPLIED, LATE) and t > self.watermark:  # (what a rebuild replays: accepted events only)
            self.watermark = t
            if t - self.swept_at >= SWEEP_EVERY:
                self._forget_departed()
        return outcome

    def _forget_departed(self) -> None:
        """Close and drop the agents logged out and silent for FORGET_AGENT_AFTER (deterministic:
        decided by the shard's event time, so a rebuild forgets the same ones)."""
        self.swept_at = self.watermark
        gone_before = self.watermark - FORGET_AGENT_AFTER
        for agent_id, model in list(self.agents.items()):
            if model.state is None and model.watermark < gone_before:
                model._close(self.watermark - model.lateness)
                self.closed_intervals += model.closed
                self.gone_final += [[self.watermark, r] for r in model.final_records()]
                self.forgotten[agent_id] = self.watermark  # its periods are closed up to this minus the lateness
                del self.agents[agent_id]
        for agent_id in [a for a, w in self.forgotten.items() if w < gone_before - FORGET_AGENT_AFTER]:
            del self.forgotten[agent_id]
        self.gone_final = [[at, r] for at, r in self.gone_final if at >= self.watermark - KEEP_FINAL_RECORDS_SECONDS]

    @property
    def final_records(self) -> dict[tuple[str, int, float], tuple[float, dict]]:
        """Like a queue model's: the recently closed records (closed at, record), by agent and period."""
        records = [r for _, r in self.gone_final] + [r for m in self.agents.values() for r in m.final_records()]
        return {(r["agent_id"], r["interval_minutes"] or DAY, r["start_epoch"]): (r["end_epoch"], r) for r in records}

    def pending_interval_records(self, now: float) -> list[dict]:
        """The agents' preliminary records, at most PENDING_BUDGET a call (a worker that took a shard
        of quiet agents over builds their backlog over several seconds, not in one blocking pass)."""
        records: list[dict] = []
        for model in self.agents.values():
            records += model.pending_records(now, PENDING_BUDGET - len(records))
            if len(records) >= PENDING_BUDGET:
                break
        return records

    def read(self, now: float, queue: str | None = None) -> list[dict]:
        """The agents read at `now`; `queue`: only those serving it or with a call in progress in it
        (chosen before reading: reading is what costs)."""
        return [model.read(now) for model in self.agents.values()
                if queue is None or queue in model.queues or any(c[0] == queue for c in model.calls.values())]

    def to_state(self) -> dict:
        return {"agents": {agent_id: m.to_state() for agent_id, m in self.agents.items()},
                "applied_offset": self.applied_offset, "forgotten": self.forgotten, "gone_final": self.gone_final,
                "watermark": self.watermark if self.watermark > -math.inf else None,
                "swept_at": self.swept_at if self.swept_at > -math.inf else None}

    def load_state(self, state: dict) -> None:
        self.agents = {}
        for agent_id, agent_state in state["agents"].items():
            self._agent(agent_id).load_state(agent_state)
        self.applied_offset = state["applied_offset"]
        self.forgotten = dict(state.get("forgotten", {}))
        self.gone_final = [list(x) for x in state.get("gone_final", [])]
        self.watermark = -math.inf if state.get("watermark") is None else state["watermark"]
        self.swept_at = -math.inf if state.get("swept_at") is None else state["swept_at"]
