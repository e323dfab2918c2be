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
`queues`), so a replay decides it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import formulas, quality
from .model import APPLIED, DUPLICATE, LATE, TOO_LATE, BusinessDay, top_counts

AGENT_STATES = ("available", "on_call", "wrap_up", "not_ready")
#: The counters read() gives since the agent's first event (today's have more: state seconds, KPIs).
TOTALS = ("answered", "handled", "transfers", "ring_no_answers", "talk_seconds", "hold_seconds", "wrapup_seconds",
          "surveys")
# A conversation or wrap-up whose closing event never came is forgotten after this (event time).
FORGET_CALL_AFTER = 12 * 3600.0
DAYS_KEPT = 3  # business days of totals kept (today, and two before for late readers)
#: Not-ready reasons and disposition codes are the platform's own: the most used are kept by name
#: in a day's totals, the rest summed as "other".
MAX_CODES = 20


def occupancy(talk: float, hold: float, wrapup: float, logged_in: float, not_ready: float) -> float | None:
    """Agent occupancy = (talk + hold + wrap-up seconds) / (logged-in - not-ready seconds)."""
    return formulas.ratio(talk + hold + wrapup, logged_in - not_ready)


def utilization(talk: float, hold: float, wrapup: float, logged_in: float) -> float | None:
    """Agent utilization = (talk + hold + wrap-up seconds) / logged-in seconds."""
    return formulas.ratio(talk + hold + wrapup, logged_in)


class AgentModel:
    """Live state and per-day totals of one agent."""

    def __init__(self, agent_id: str, zone_for: Callable[[str | None], tuple[str, Any]], lateness_seconds: float,
                 dedup_seconds: float = 600.0):
        """zone_for(queue) -> (IANA time zone, business-day start) of the agent's days, given the
        first queue it is seen in (None: no queue known)."""
        self.agent_id = agent_id
        self.zone_for = zone_for
        self.lateness = lateness_seconds
        self.dedup_horizon = max(dedup_seconds, lateness_seconds)
        self.home_queue: str | None = None  # decides the time zone of "today"
        self.business_day: BusinessDay | None = None
        self.name: str | None = None  # agent_name from the events, the newest one
        self.named_at = -math.inf
        self.state: str | None = None  # None: logged out
        self.since = 0.0
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
        self.unmatched: list = []  # (the pipeline reads this of every model; agents reject nothing)
        self.closed_intervals: list[dict] = []  # (likewise; agent interval records are not built yet)
        self.final_records: dict = {}

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
            zone, day_start = self.zone_for(self.home_queue)
            self.business_day = BusinessDay(zone, day_start)
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
            return APPLIED
        return LATE if t < self.watermark else APPLIED

    def _day(self, t: float) -> dict[str, float]:
        assert self.business_day is not None  # set by the first event
        iso = self.business_day.bounds(t)[2]
        day = self.days.get(iso)
        if day is None:
            day = self.days[iso] = {}
            for old in sorted(self.days)[:-DAYS_KEPT]:
                del self.days[old]
        return day

    def _add(self, t: float, **amounts: float) -> None:
        day, totals = self._day(t), self.totals
        for name, amount in amounts.items():
            day[name] = day.get(name, 0.0) + amount
            totals[name] = totals.get(name, 0.0) + amount

    def _add_key(self, t: float, name: str, amount: float = 1.0) -> None:
        self._add(t, **{name: amount})

    def _state_seconds(self, state: str, reason: str | None, start: float, end: float,
                       out: Callable[[float], dict[str, float]] | None = None) -> None:
        """Seconds of a state [start, end) into the day counters, split at business-day bounds."""
        assert self.business_day is not None
        out = out or self._day
        cursor = start
        while cursor < end:
            piece_end = min(end, self.business_day.bounds(cursor)[1])
            seconds = piece_end - cursor
            day = out(cursor)
            for name in ("logged_in_seconds", f"{state}_seconds") + ((f"not_ready:{reason or 'unknown'}",) if state == "not_ready" else ()):
                day[name] = day.get(name, 0.0) + seconds
            cursor = piece_end

    def _set_state(self, t: float, state: str | None, reason: str | None) -> None:
        if self.state is not None:
            if t < self.since:  # an older state change arriving late: the newer one stands
                return
            self._state_seconds(self.state, self.reason, self.since, t)
        self.state, self.since, self.reason = state, t, reason

    def _on_state(self, event: dict, t: float) -> None:
        kind = event["type"]
        if self.state is not None and t < self.since:
            return  # older than the agent's current state: the newer events stand
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
        self._add(t, answered=1.0)
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

    # ---- reading ---------------------------------------------------------------------------

    def read(self, now: float) -> dict:
        """The agent now: state, reason and seconds in it, queues, the call in progress, today's
        totals (open state seconds included up to `now`)."""
        today: dict[str, float] = {}
        iso = None
        if self.business_day is not None:
            day_start, _, iso = self.business_day.bounds(now)
            today = dict(self.days.get(iso, {}))
            if self.state is not None and now > self.since:
                self._state_seconds(self.state, self.reason, max(self.since, day_start), now, out=lambda _: today)
        call = None  # the call in progress answered last
        if self.calls:
            queue, answered_at, hold_started, _ = max(self.calls.values(), key=lambda c: c[1])
            call = {"queue": queue, "phase": "holding" if hold_started is not None else "talking",
                    "seconds": max(0.0, now - answered_at), "calls_in_progress": len(self.calls)}
        return {
            "agent_id": self.agent_id,
            "agent_name": self.name,
            "state": self.state or "logged_out",
            "reason": self.reason,
            "state_seconds": max(0.0, now - self.since) if self.state is not None else None,
            "queues": list(self.queues),
            "call": call,
            "business_day": iso,
            "timezone": self.business_day.zone.key if self.business_day else None,
            "today": day_view(today),
            "totals": {name: self.totals.get(name, 0.0) for name in TOTALS},
            "last_event_time": self.watermark if self.watermark > -math.inf else None,
        }

    # ---- snapshots -------------------------------------------------------------------------

    def to_state(self) -> dict:
        return {
            "home_queue": self.home_queue, "initialized": self.business_day is not None, "name": self.name,
            "state": self.state, "since": self.since, "reason": self.reason, "queues": self.queues,
            "calls": self.calls, "wrapping": self.wrapping, "ended_early": self.ended_early,
            "named_at": self.named_at if self.named_at > -math.inf else None, "days": self.days, "totals": self.totals,
            "seen": [[s, ids] for s, ids in self.seen.items()],
            "watermark": self.watermark if self.watermark > -math.inf else None,
            "applied_offset": self.applied_offset,
        }

    def load_state(self, state: dict) -> None:
        self.home_queue = state["home_queue"]
        if state["initialized"]:
            zone, day_start = self.zone_for(self.home_queue)
            self.business_day = BusinessDay(zone, day_start)
        self.name = state["name"]
        self.state, self.since, self.reason = state["state"], state["since"], state["reason"]
        self.queues = list(state["queues"])
        self.calls = {c: list(v) for c, v in state["calls"].items()}
        self.ended_early = {c: (kind, t) for c, (kind, t) in state["ended_early"].items()}
        self.named_at = -math.inf if state["named_at"] is None else state["named_at"]
        self.wrapping = dict(state["wrapping"])
        self.days = {iso: dict(c) for iso, c in state["days"].items()}
        self.totals = dict(state["totals"])
        self.seen = {int(s): list(ids) for s, ids in state["seen"]}
        self.seen_ids = {i for ids in self.seen.values() for i in ids}
        self.watermark = -math.inf if state["watermark"] is None else state["watermark"]
        self.applied_offset = state["applied_offset"]


def day_view(c: dict[str, float]) -> dict:
    """A day's (or any period's) agent totals and the KPIs computed from them."""

    def get(name: str) -> float:
        return c.get(name, 0.0)

    talk, hold, wrap = get("talk_seconds"), get("hold_seconds"), get("wrapup_seconds")
    logged_in, not_ready = get("logged_in_seconds"), get("not_ready_seconds")
    csat = {s: get(f"csat:{s}") for s in quality.CSAT_SCORES}
    nps = {s: get(f"nps:{s}") for s in quality.NPS_SCORES}
    return {
        "answered": get("answered"),
        "handled": get("handled"),
        "transfers": get("transfers"),
        "ring_no_answers": get("ring_no_answers"),
        "talk_seconds": talk,
        "hold_seconds": hold,
        "wrapup_seconds": wrap,
        "average_handle_seconds": formulas.average_handle_seconds(get("handled"), talk, hold, wrap),
        "state_seconds": {"logged_in": logged_in, **{s: get(f"{s}_seconds") for s in AGENT_STATES}},
        "not_ready_seconds_by_reason": top_counts({k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("not_ready:")}, MAX_CODES),
        "occupancy": occupancy(talk, hold, wrap, logged_in, not_ready),
        "utilization": utilization(talk, hold, wrap, logged_in),
        "surveys": get("surveys"),
        "csat_ratio": quality.csat_ratio(csat),
        "csat_average_score": quality.csat_average_score(csat),
        "net_promoter_score": quality.net_promoter_score(nps),
        "first_call_resolution_ratio": quality.first_call_resolution(get("fcr:resolved"), get("fcr:unresolved")),
        "dispositions": top_counts({k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("disposition:")}, MAX_CODES),
    }


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

    def __init__(self, zone_for: Callable[[str | None], tuple[str, Any]], lateness_seconds: float,
                 dedup_seconds: float = 600.0):
        self.zone_for, self.lateness, self.dedup_seconds = zone_for, lateness_seconds, dedup_seconds
        self.agents: dict[str, AgentModel] = {}
        self.applied_offset = -1  # newest batch offset applied (the pipeline's redelivery guard)
        self.unmatched: list = []  # (the pipeline reads these of every model: agents reject nothing
        self.closed_intervals: list[dict] = []  # and publish no interval records yet)
        self.final_records: dict = {}

    def _agent(self, agent_id: str) -> AgentModel:
        model = self.agents.get(agent_id)
        if model is None:
            model = self.agents[agent_id] = AgentModel(agent_id, self.zone_for, self.lateness, self.dedup_seconds)
        return model

    def apply(self, event: dict, t: float, raw: bytes = b"") -> str:
        return self._agent(event["agent_id"]).apply(event, t, raw)

    def read(self, now: float) -> list[dict]:
        return [model.read(now) for model in self.agents.values()]

    def to_state(self) -> dict:
        return {"agents": {agent_id: m.to_state() for agent_id, m in self.agents.items()},
                "applied_offset": self.applied_offset}

    def load_state(self, state: dict) -> None:
        self.agents = {}
        for agent_id, agent_state in state["agents"].items():
            self._agent(agent_id).load_state(agent_state)
        self.applied_offset = state["applied_offset"]
