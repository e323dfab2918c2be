"""Seeded call-center traffic simulator producing canonical callpulse v1 events.

A discrete-event simulation (one ``random.Random(seed)`` for the inbound traffic, one
``heapq`` event queue, no I/O) of a small multi-skill contact center:

* five queues (``sales``, ``support``, ``billing``, ``客服``, ``продажи``), each with its own
  arrival rate, handle time, IVR self-service share, hold and transfer habits;
* non-homogeneous Poisson arrivals following a smooth intraday curve (night floor,
  morning ramp, lunch dip, afternoon peak; hour of day taken in UTC);
* an IVR in front of every queue (``call.ivr_entered`` / ``call.ivr_left``);
* FIFO queues per skill, longest-idle-agent routing, ring attempts with occasional
  no-answer (the agent goes ``not_ready``/``missed_call`` and the call rings someone else);
* callers with exponential-like patience (Weibull, mean 90 s; one in ten never hangs up),
  a queue timeout, exit-key and callback requests; holds, blind transfers to another
  queue, wrap-up, dispositions and surveys (CSAT falls as the caller's wait grows);
* callbacks carried out minutes to an hour or so after the request
  (``call.callback_completed``, retried after no answer) and three outbound campaigns dialling
  a few numbers a minute along the intraday curve (``call.outbound_attempt``); both draw from
  a second random stream and leave agents' states alone, so they do not change the inbound
  traffic of a seed;
* agents with 1-3 skills, staffed every half hour from the *forecast* with Erlang A
  (so an unforecast surge really hurts), with breaks, staggered lunches, training,
  coaching, log-outs and log-ins.

The ``steady`` scenario is none of that: one queue run as the textbook M/M/c+M (Erlang A)
system, to check the staffing formulas against what the pipeline measures. Poisson arrivals
at a constant rate straight into the queue (no intraday curve, no IVR), exponential handle
times (talk + wrap-up), a fixed number of agents logged in and ready all the time (no planner,
breaks or missed rings; ring time 0), exponential patience (or none), nothing else.

``simulate()`` is a lazy generator: it holds only the live state (waiting calls, agents,
pending timers), so millions of events can be streamed. Identical arguments give an
identical event list; event ids are ``sim-<seed>-<run tag>-<n>`` where the run tag is a
short hash of the arguments, so two different runs never share ids while a replay of the
same run keeps them (the contract uses ``event_id`` for deduplication).

Example::

    from callpulse.tools.simulator import simulate
    for ev in simulate("surge", seed=7, duration_seconds=3600):
        publish(ev)
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import hashlib
import heapq
import math
import random
import re
import time as _time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

from ..events import format_time

__all__ = [
    "DEFAULT_START",
    "QUEUES",
    "SCENARIOS",
    "SCENARIO_PARAMS",
    "SERVICE_LEVEL_SECONDS",
    "SOURCE",
    "QueueSpec",
    "ScenarioParams",
    "arrival_profile",
    "erlang_a_service_level",
    "event_time",
    "format_time",
    "parse_time",
    "simulate",
]

SOURCE = "simulator"
SCHEMA_VERSION = 1
#: Monday 2026-11-23 09:00:00 UTC: a fixed default keeps runs reproducible.
DEFAULT_START = float(calendar.timegm((2026, 11, 23, 9, 0, 0)))
#: The service-level threshold the staffing model targets ("80 % answered within 20 s").
SERVICE_LEVEL_SECONDS = 20.0


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class QueueSpec:
    name: str
    rate_per_hour: float  # calls entering the IVR for this queue per hour at the intraday peak
    talk_mean: float  # mean conversation time, seconds (lognormal)
    wrap_mean: float  # mean after-call work, seconds (lognormal)
    self_serve: float  # share of IVR callers who are served by the IVR and never queue
    hold_prob: float  # share of answered calls with one hold
    transfer_prob: float  # share of first-leg answered calls blind-transferred to another queue
    transfer_to: tuple[str, ...]
    dnis: str  # the number dialled
    dispositions: tuple[str, ...]
    secondary: tuple[str, ...]  # queues agents of this group are most likely cross-skilled in


QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("sales", 260, 240, 25, 0.05, 0.10, 0.04, ("billing", "support"), "+78005550101",
              ("sale", "quote_sent", "no_sale", "follow_up"), ("продажи", "billing")),
    QueueSpec("support", 340, 330, 35, 0.15, 0.25, 0.05, ("billing", "sales"), "+78005550102",
              ("resolved", "escalated", "follow_up", "known_issue"), ("客服", "billing")),
    QueueSpec("billing", 160, 210, 30, 0.25, 0.15, 0.04, ("support", "sales"), "+78005550103",
              ("payment_taken", "refund", "dispute", "info_given"), ("support", "sales")),
    QueueSpec("客服", 130, 300, 30, 0.12, 0.20, 0.03, ("support",), "+864008205555",
              ("resolved", "escalated", "info_given"), ("support",)),
    QueueSpec("продажи", 110, 260, 25, 0.05, 0.10, 0.03, ("sales",), "+74950000100",
              ("sale", "no_sale", "follow_up"), ("sales",)),
)


@dataclass(frozen=True)
class ScenarioParams:
    description: str
    rate_factor: float = 1.0  # multiplies every queue's arrival rate (and the forecast)
    # planned share of calls answered within 20 s: each half hour every skill group gets the
    # fewest agents that reach it in an Erlang A (M/M/n+M) model of the forecast, plus
    # shrinkage. Multi-skill pooling and rounding up add a little: 0.75 measures ~0.83.
    staffing_target: float = 0.75
    min_agents: int = 2  # per skill group, whatever the forecast
    patience_mean: float = 90.0  # seconds, mean of a Weibull(shape 1.3): exponential-ish
    determined_share: float = 0.1  # callers who never hang up in the queue
    queue_timeout: float = 180.0  # seconds waiting before call.flowed_out reason timeout
    surge_queues: tuple[str, ...] = ()
    surge_factor: float = 1.0  # arrival-rate multiplier for surge_queues inside the window
    surge_start: float = 0.0  # seconds after `start`
    surge_duration: float = 0.0  # seconds
    # steady only (see _SteadySimulation): one queue as a stationary M/M/c+M system. Its callers'
    # patience is exponential with mean patience_mean (math.inf: nobody hangs up).
    steady: bool = False
    steady_queue: str = "support"
    calls_per_hour: float = 0.0  # Poisson arrivals, constant rate
    handle_seconds: float = 0.0  # mean handle time, talk + wrap-up, exponential
    agents: int = 0  # logged in and ready throughout

    @property
    def has_surge(self) -> bool:
        return bool(self.surge_queues) and self.surge_factor != 1.0 and self.surge_duration > 0


SCENARIO_PARAMS: dict[str, ScenarioParams] = {
    "normal": ScenarioParams(
        "Forecast traffic, staffed every half hour for about 80% of calls answered within 20 s.",
    ),
    "surge": ScenarioParams(
        "Like normal, but 10 minutes in the arrival rate of support and 客服 triples for 20 "
        "minutes (unforecast, staffing unchanged): service level collapses, abandonment and "
        "timeouts climb, then the backlog drains and the queues recover.",
        surge_queues=("support", "客服"),
        surge_factor=3.0,
        surge_start=600.0,
        surge_duration=1200.0,
    ),
    "quiet": ScenarioParams(
        "Low traffic (a fifth of normal), staffed to match with at least one agent per "
        "skill group: few events, most calls answered within seconds.",
        rate_factor=0.2,
        min_agents=1,
    ),
    "steady": ScenarioParams(
        "One queue (support) as a stationary M/M/c+M queue for checking the staffing math: "
        "Poisson arrivals at a constant 360 calls/h, exponential handle times of mean 180 s "
        "(5/6 talk, 1/6 wrap-up), 20 agents always logged in and ready, exponential patience of "
        "mean 120 s; no IVR, intraday curve, planner, breaks, holds, transfers or timeouts "
        "(Erlang C needs 23 agents for 80% in 10 s, 22 in 20 s; Erlang A 21 and 20).",
        patience_mean=120.0,
        steady=True,
        calls_per_hour=360.0,
        handle_seconds=180.0,
        agents=20,
    ),
}

#: Scenario name -> short description.
SCENARIOS: dict[str, str] = {name: p.description for name, p in SCENARIO_PARAMS.items()}

# Behaviour shared by every scenario.
_IVR_NAME = "main"
_IVR_MEAN = 35.0  # seconds in the IVR menu
_IVR_ABANDON = 0.03  # callers hanging up in the IVR
_RING_NO_ANSWER = 0.04  # share of ring attempts the agent misses
_RING_TIMEOUT = 15.0  # seconds a missed ring lasts
_MISSED_NOT_READY = (15.0, 45.0)  # seconds an agent stays not_ready after a missed ring
_TALK_SIGMA = 0.7  # lognormal shape of conversation time
_WRAP_SIGMA = 0.5
_HOLD_MEAN = 45.0
_EXIT_KEY_PROB = 0.02  # callers who would press the exit key (voicemail) ...
_EXIT_KEY_AFTER = (20.0, 120.0)  # ... after this many seconds waiting
_REPEAT_SHARE = 0.12  # calls from a caller who called recently (one of the last _RECENT_CALLERS)
_RECENT_CALLERS = 400
_CALLBACK_PROB = 0.03  # callers who would accept a callback offer ...
_CALLBACK_AFTER = (30.0, 180.0)  # ... after this many seconds waiting
_SURVEY_PROB = 0.10
# CSAT weights for scores 1..5 by the caller's wait in the queue (all legs, rings included):
# within the service level (mean 4.1), up to a minute (3.7), longer (3.1).
_SURVEY_WEIGHTS_QUICK = (3, 5, 12, 35, 45)
_SURVEY_WEIGHTS_WAITED = (6, 10, 20, 34, 30)
_SURVEY_WEIGHTS_LONG = (14, 18, 28, 26, 14)
_SURVEY_LONG_WAIT = 60.0  # seconds
_DISPOSITION_PROB = 0.40
_PATIENCE_SHAPE = 1.3  # Weibull: exponential-like tail, fewer hang-ups in the first seconds
_SHRINKAGE = 0.13  # share of logged-in time lost to breaks, training, coaching, missed rings
_LUNCH_HOURS = (11.0, 14.0)  # each agent's lunch slot starts in this UTC range (staggered)
_LUNCH_LENGTH = (25 * 60.0, 35 * 60.0)
_STAFFING_INTERVAL = 1800.0
_BREAK_EVERY = (40 * 60.0, 80 * 60.0)
_SECONDS_PER_DAY = 86400.0
_STEADY_WRAP_SHARE = 1.0 / 6.0  # steady: the share of each handle time spent in wrap-up

# Callbacks and outbound dialling (not in steady). They draw from their own random stream and do
# not occupy agents (no ringing / on_call / wrap-up for them), so the inbound events of a seed are
# the same with or without them; the agent_id they carry is one of the queue's group, idle if any.
_CALLBACK_DELAY_MEDIAN = 840.0  # seconds from the request to the first callback attempt ...
_CALLBACK_DELAY_SIGMA = 0.9  # ... lognormal: ~5 % later than an hour
_CALLBACK_MIN_DELAY = 120.0
_CALLBACK_RESULTS = ("connected", "no_answer", "failed", "cancelled")
_CALLBACK_RESULT_WEIGHTS = (80, 12, 3, 5)  # per attempt
_CALLBACK_RETRY_AFTER = (600.0, 1800.0)  # no_answer / failed: dialled again this much later ...
_CALLBACK_ATTEMPTS = 3  # ... up to this many attempts in all; then the request stays open
_CALLBACK_NOBODY_WAIT = 300.0  # nobody of the queue's group logged in: look again this much later
# (campaign, queue, attempts per minute at the intraday peak; scaled like the inbound rates)
_CAMPAIGNS: tuple[tuple[str, str, float], ...] = (
    ("renewals", "sales", 4.0),
    ("survey-followup", "support", 3.0),
    ("payment-reminders", "billing", 2.0),
)
_OUTBOUND_RESULTS = ("connected", "no_answer", "busy", "voicemail", "failed", "cancelled")
_OUTBOUND_RESULT_WEIGHTS = (62, 20, 7, 8, 2, 1)
# connected attempts the dialer found no agent for: no agent_id, no follow-up (an abandoned
# outbound call in the regulators' sense)
_OUTBOUND_NO_AGENT = 0.025


def _lognormal_mu(mean: float, sigma: float) -> float:
    return math.log(mean) - sigma * sigma / 2.0


def _profile_raw(hour: float) -> float:
    def bump(centre: float, width: float) -> float:
        d = abs(hour - centre)
        d = min(d, 24.0 - d)
        return math.exp(-d * d / (2.0 * width * width))

    # night floor + morning peak (~10:45) + afternoon peak (~15:15); the gap is the lunch dip
    return 0.05 + 0.95 * (0.92 * bump(10.75, 1.5) + 1.0 * bump(15.25, 1.7))


_PROFILE_NORM = max(_profile_raw(i / 100.0) for i in range(2400))
_PROFILE_TABLE = [_profile_raw(m / 60.0) / _PROFILE_NORM for m in range(24 * 60 + 1)]


def arrival_profile(hour: float) -> float:
    """Relative arrival rate at ``hour`` (UTC hour of day, any real number, wraps at 24).

    Smooth, between ~0.05 at night and 1.0 at the busiest minute of the day.
    """
    m = (hour % 24.0) * 60.0
    i = int(m)
    if i >= 24 * 60:
        i = 24 * 60 - 1
    f = m - i
    return _PROFILE_TABLE[i] * (1.0 - f) + _PROFILE_TABLE[i + 1] * f


@functools.lru_cache(maxsize=4096)
def _reach_service(n: int, mu: float, theta: float, threshold: float) -> tuple[float, ...]:
    """M/M/n+M: P(a caller who finds all n agents busy and j callers ahead of it is answered
    within ``threshold`` seconds), for j = 0, 1, ... until negligible.

    With i callers ahead the line moves at rate n*mu + i*theta (services and abandonments
    ahead) while the caller itself abandons at rate theta; F_i = r_i * (e^{-c_i s} * F_{i-1})
    is integrated on a grid with the exponential kernel exact and F_{i-1} piecewise linear.
    """
    steps = 40
    h = threshold / steps
    r0 = n * mu
    c0 = r0 + theta
    f = [r0 / c0 * (1.0 - math.exp(-c0 * h * m)) for m in range(steps + 1)]
    out = [f[-1]]
    for i in range(1, 100000):
        r = n * mu + i * theta
        c = r + theta
        e = math.exp(-c * h)
        w1 = 1.0 / c - (1.0 - e) / (c * c * h)
        w0 = (1.0 - e) / c - w1
        g = [0.0] * (steps + 1)
        acc = 0.0
        for m in range(steps):
            acc = e * acc + w0 * f[m] + w1 * f[m + 1]
            g[m + 1] = r * acc
        f = g
        out.append(f[-1])
        if f[-1] < 1e-9:
            break
    return tuple(out)


def erlang_a_service_level(agents: int, arrivals_per_s: float, aht: float, patience: float,
                           threshold: float = SERVICE_LEVEL_SECONDS) -> float:
    """Share of offered calls answered within ``threshold`` s in an M/M/n+M (Erlang A) queue
    with ``agents`` agents, Poisson arrivals, exponential handle time of mean ``aht`` and
    exponential patience of mean ``patience`` (``math.inf``: nobody abandons, Erlang C)."""
    if arrivals_per_s <= 0.0:
        return 1.0
    if agents <= 0:
        return 0.0
    mu = 1.0 / aht
    theta = 0.0 if math.isinf(patience) else 1.0 / patience
    a = arrivals_per_s * aht
    if theta == 0.0 and a >= agents:
        return 0.0  # Erlang C without enough agents: the queue grows without bound
    b = 1.0  # Erlang B(agents, a) by the stable recursion
    for k in range(1, agents + 1):
        b = a * b / (k + a * b)
    if b <= 0.0:
        return 1.0
    below = 1.0 / b - 1.0  # sum of P(k) for k < agents, relative to P(agents) = 1
    reach = _reach_service(agents, mu, theta, threshold)
    total = below
    good = below
    p = 1.0  # P(agents + j) relative to P(agents)
    j = 0
    while True:
        total += p
        if j < len(reach):
            good += p * reach[j]
        j += 1
        p *= arrivals_per_s / (agents * mu + j * theta)
        if p < 1e-12 * total or j > 1_000_000:
            break
    return good / total


def _agents_needed(arrivals_per_s: float, aht: float, patience: float, target: float) -> int:
    """Fewest agents whose Erlang A service level reaches ``target``."""
    if arrivals_per_s <= 0.0:
        return 0
    n = max(1, round(arrivals_per_s * aht))
    if erlang_a_service_level(n, arrivals_per_s, aht, patience) >= target:
        while n > 1 and erlang_a_service_level(n - 1, arrivals_per_s, aht, patience) >= target:
            n -= 1
        return n
    while erlang_a_service_level(n, arrivals_per_s, aht, patience) < target:
        n += 1
    return n


# --------------------------------------------------------------------------- time helpers

_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def parse_time(s: str) -> float:
    """RFC 3339 string as allowed by the contract (any offset, 0-6 fraction digits) -> epoch s."""
    m = _TIME_RE.fullmatch(s)
    if m is None:
        raise ValueError(f"not a contract time: {s!r}")
    y, mo, d, h, mi, se, frac, off = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(se)))
    if off != "Z":
        sign = 1 if off[0] == "+" else -1
        secs -= sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60)
    if frac:
        return secs + int(frac) / 10.0 ** len(frac)
    return float(secs)


def event_time(ev: dict[str, Any] | str) -> float:
    """The event's ``time`` (or a time string) as epoch seconds."""
    return parse_time(ev if isinstance(ev, str) else ev["time"])


# --------------------------------------------------------------------------- simulation state

_WAITING, _RINGING, _TALKING, _DONE, _IVR = range(5)
_ABANDON, _TIMEOUT, _EXIT_KEY, _CALLBACK = range(4)
_AVAILABLE, _NOT_READY, _ON_CALL, _WRAP_UP = "available", "not_ready", "on_call", "wrap_up"
_OFF = "logged_out"  # internal only

# heap item kinds
(_K_ARRIVE, _K_IVR_EXIT, _K_LEAVE, _K_RING_RESULT, _K_HOLD_START, _K_HOLD_END, _K_CONV_END,
 _K_WRAP_END, _K_SURVEY, _K_RESTAFF, _K_LOGIN, _K_READY, _K_TRY_LOGOUT, _K_BREAK_DUE,
 _K_BREAK_END, _K_CALLBACK, _K_OUTBOUND) = range(17)


class _Call:
    __slots__ = ("id", "caller", "qi", "leg", "state", "offered_at", "agent", "ring_token",
                 "attempt", "leave_pending", "transfer_to", "transferred", "talk_rest", "waited")

    def __init__(self, call_id: str, caller: str, qi: int) -> None:
        self.id = call_id
        self.caller = caller
        self.qi = qi
        self.leg = 0
        self.state = _IVR
        self.offered_at = 0.0
        self.agent: _Agent | None = None
        self.ring_token = 0
        self.attempt = 0
        self.leave_pending = -1
        self.transfer_to = -1
        self.transferred = False
        self.talk_rest = 0.0
        self.waited = 0.0  # seconds waited in queues until answered, all legs


class _Agent:
    __slots__ = ("id", "group", "skills", "qset", "names", "state", "logged_in", "on_shift",
                 "login_at", "logout_pending", "next_break_at", "break_token", "lunch_hour",
                 "lunch_day", "lunch_next")

    def __init__(self, agent_id: str, group: int, skills: tuple[int, ...], names: list[str]):
        self.id = agent_id
        self.group = group
        self.skills = skills
        self.qset = frozenset(skills)
        self.names = names
        self.state = _OFF
        self.logged_in = False
        self.on_shift = False  # counted by staffing (login scheduled or logged in, not leaving)
        self.login_at = 0.0
        self.logout_pending = False
        self.next_break_at = math.inf
        self.break_token = 0
        self.lunch_hour = 12.0  # UTC hour of this agent's lunch slot
        self.lunch_day = -1  # the day number of the last lunch taken
        self.lunch_next = False  # the pending break is lunch


class _Simulation:
    def _begin(self, p: ScenarioParams, seed: int, start: float, duration: float, run: tuple) -> None:
        """The event plumbing's state; `run` identifies the run, so its event ids are its own."""
        self.p = p
        self.rng = random.Random(seed)
        self.start = start
        self.end = start + duration
        tag = hashlib.blake2b(repr(run).encode(), digest_size=4).hexdigest()
        self.id_prefix = f"sim-{seed}-{tag}-"
        self.call_prefix = f"call-{seed}-{tag}-"
        self.n_events = 0
        self.n_calls = 0
        self.recent_callers: deque[str] = deque(maxlen=_RECENT_CALLERS)
        self.seq = count()
        self.heap: list[tuple[float, int, int, Any, Any]] = []
        self.out: list[dict[str, Any]] = []
        self._sec = -1
        self._prefix = ""

    def __init__(self, scenario: str, seed: int, start: float, duration: float,
                 rate_scale: float, params: ScenarioParams | None = None) -> None:
        p = params or SCENARIO_PARAMS[scenario]
        run: tuple[Any, ...] = (scenario, seed, float(start), float(duration), float(rate_scale))
        if params is not None:  # a changed surge is another run: other event ids
            run += ((p.surge_start, p.surge_duration),)
        self._begin(p, seed, start, duration, run)
        self.roster_rng = random.Random(f"callpulse-roster-{seed}")
        # callbacks and outbound dialling: their own stream, so the inbound traffic stays the same
        self.side_rng = random.Random(f"callpulse-outbound-{seed}")

        self.qnames = [q.name for q in QUEUES]
        self.qindex = {name: i for i, name in enumerate(self.qnames)}
        scale = p.rate_factor * rate_scale
        self.rate = [q.rate_per_hour * scale / 3600.0 for q in QUEUES]  # per second at peak
        self.surge = [p.has_surge and q.name in p.surge_queues for q in QUEUES]
        self.surge_t0 = start + p.surge_start
        self.surge_t1 = self.surge_t0 + p.surge_duration
        self.rate_max = [r * (p.surge_factor if s and p.surge_factor > 1.0 else 1.0)
                         for r, s in zip(self.rate, self.surge)]
        self.talk_mu = [_lognormal_mu(q.talk_mean, _TALK_SIGMA) for q in QUEUES]
        self.wrap_mu = [_lognormal_mu(q.wrap_mean, _WRAP_SIGMA) for q in QUEUES]
        self.hold_mu = _lognormal_mu(_HOLD_MEAN, 0.5)
        self.patience_scale = p.patience_mean / math.gamma(1.0 + 1.0 / _PATIENCE_SHAPE)
        # the planner's exponential patience: same abandonment rate as the real callers overall
        self.patience_model = p.patience_mean / max(1e-9, 1.0 - p.determined_share)
        self.aht = [q.talk_mean + q.hold_prob * _HOLD_MEAN + q.wrap_mean + 4.0 for q in QUEUES]
        self.transfer_targets = [tuple(self.qindex[n] for n in q.transfer_to) for q in QUEUES]
        # forecast offered calls per second at the intraday peak: IVR output plus transfers in
        direct = [r * (1.0 - _IVR_ABANDON - q.self_serve) for r, q in zip(self.rate, QUEUES)]
        self.forecast_rate = list(direct)
        for src, q in enumerate(QUEUES):
            for dst in self.transfer_targets[src]:
                self.forecast_rate[dst] += direct[src] * q.transfer_prob / len(q.transfer_to)

        self.waiting: list[deque[_Call]] = [deque() for _ in QUEUES]
        self.avail: dict[_Agent, None] = {}  # insertion order == longest idle first
        self.groups: list[list[_Agent]] = [[] for _ in QUEUES]
        self.n_agents = 0
        self.ring_seq = 0
        # outbound campaigns: (name, queue index), attempts per second at the intraday peak
        self.campaigns = [(name, self.qindex[queue]) for name, queue, _ in _CAMPAIGNS]
        self.outbound_rate = [per_minute / 60.0 * scale for _, _, per_minute in _CAMPAIGNS]
        self.outbound_prefix = "ob-" + self.call_prefix.removeprefix("call-")
        self.n_outbound = 0

        # indexed by heap item kind; each is called as handler(t, a, b)
        self.handlers: list[Callable[[float, Any, Any], None]] = [
            self._on_arrive, self._on_ivr_exit, self._on_leave, self._on_ring_result,
            self._on_hold_start, self._on_hold_end, self._on_conv_end, self._on_wrap_end,
            self._on_survey, self._on_restaff, self._on_login, self._on_ready,
            self._on_try_logout, self._on_break_due, self._on_break_end, self._on_callback,
            self._on_outbound,
        ]

    # ---------------------------------------------------------------- plumbing

    def _push(self, t: float, kind: int, a: Any = None, b: Any = None) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, a, b))

    def _ev(self, t: float, typ: str) -> dict[str, Any]:
        self.n_events += 1
        ms = int(t * 1000.0 + 0.5)
        sec = ms // 1000
        if sec != self._sec:
            self._sec = sec
            self._prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(sec))
        ev = {
            "schema_version": SCHEMA_VERSION,
            "event_id": f"{self.id_prefix}{self.n_events}",
            "type": typ,
            "time": f"{self._prefix}.{ms - sec * 1000:03d}Z",
            "source": SOURCE,
        }
        self.out.append(ev)
        return ev

    def _caller(self, draw: int) -> str:
        """A caller number from a random draw: a new one, or for _REPEAT_SHARE of calls one of the
        recent callers again (a repeat contact, for the repeat-caller FCR). Taken from the same draw,
        so the traffic's timing is what it was before callers repeated."""
        if draw % 1000 < _REPEAT_SHARE * 1000 and self.recent_callers:
            return self.recent_callers[draw // 1000 % len(self.recent_callers)]
        caller = f"+79{draw:09d}"
        self.recent_callers.append(caller)
        return caller

    def _call_ev(self, t: float, typ: str, call: _Call, qi: int) -> dict[str, Any]:
        ev = self._ev(t, typ)
        ev["queue"] = self.qnames[qi]
        ev["call_id"] = call.id
        return ev

    def _agent_state(self, agent: _Agent, t: float, state: str, reason: str | None = None) -> None:
        agent.state = state
        ev = self._ev(t, "agent.state_changed")
        ev["agent_id"] = agent.id
        ev["queues"] = list(agent.names)
        ev["state"] = state
        if reason is not None:
            ev["reason"] = reason

    def run(self) -> Iterator[dict[str, Any]]:
        self._push(self.start, _K_RESTAFF)
        for qi in range(len(QUEUES)):
            self._schedule_arrival(qi, self.start)
        for ci in range(len(self.campaigns)):
            self._schedule_outbound(ci, self.start)
        heap, handlers, out, end = self.heap, self.handlers, self.out, self.end
        pop = heapq.heappop
        while heap:
            t, _, kind, a, b = pop(heap)
            if t >= end:
                break
            handlers[kind](t, a, b)
            if out:
                yield from out
                out.clear()

    # ---------------------------------------------------------------- arrivals and IVR

    def _rate_at(self, qi: int, t: float) -> float:
        r = self.rate[qi] * arrival_profile((t % _SECONDS_PER_DAY) / 3600.0)
        if self.surge[qi] and self.surge_t0 <= t < self.surge_t1:
            r *= self.p.surge_factor
        return r

    def _schedule_arrival(self, qi: int, t: float) -> None:
        lam = self.rate_max[qi]
        if lam <= 0.0:
            return
        rnd = self.rng.random
        end = self.end
        while True:  # thinning (Lewis-Shedler) against the queue's peak rate
            t -= math.log(1.0 - rnd()) / lam
            if t >= end:
                return
            if rnd() * lam <= self._rate_at(qi, t):
                break
        self._push(t, _K_ARRIVE, qi)

    def _on_arrive(self, t: float, qi: int, _b: Any) -> None:
        rng = self.rng
        self.n_calls += 1
        call = _Call(f"{self.call_prefix}{self.n_calls}", self._caller(rng.randrange(10 ** 9)), qi)
        ev = self._ev(t, "call.ivr_entered")
        ev["call_id"] = call.id
        ev["caller"] = call.caller
        ev["ivr"] = _IVR_NAME
        ev["dnis"] = QUEUES[qi].dnis
        self._push(t + rng.lognormvariate(_lognormal_mu(_IVR_MEAN, 0.5), 0.5), _K_IVR_EXIT, call)
        self._schedule_arrival(qi, t)

    def _on_ivr_exit(self, t: float, call: _Call, _b: Any) -> None:
        r = self.rng.random()
        ev = self._ev(t, "call.ivr_left")
        ev["call_id"] = call.id
        if r < _IVR_ABANDON:
            ev["result"] = "abandoned"
        elif r < _IVR_ABANDON + QUEUES[call.qi].self_serve:
            ev["result"] = "self_served"
        else:
            ev["result"] = "to_queue"
            ev["queue"] = self.qnames[call.qi]
            ev["ivr"] = _IVR_NAME
            self._offer(call, call.qi, t)
            return
        ev["ivr"] = _IVR_NAME
        call.state = _DONE

    # ---------------------------------------------------------------- queueing and routing

    def _offer(self, call: _Call, qi: int, t: float) -> None:
        rng = self.rng
        p = self.p
        call.qi = qi
        call.leg += 1
        call.state = _WAITING
        call.offered_at = t
        call.attempt = 0
        call.leave_pending = -1
        ev = self._call_ev(t, "call.offered", call, qi)
        ev["caller"] = call.caller
        # when (and how) this caller would leave the queue if nobody answers first
        if rng.random() < p.determined_share:
            after = math.inf  # waits for an agent or the queue timeout, whatever it takes
        else:
            after = rng.weibullvariate(self.patience_scale, _PATIENCE_SHAPE)
        action = _ABANDON
        if p.queue_timeout < after:
            after, action = p.queue_timeout, _TIMEOUT
        r = rng.random()
        if r < _EXIT_KEY_PROB:
            w = rng.uniform(*_EXIT_KEY_AFTER)
            if w < after:
                after, action = w, _EXIT_KEY
        elif r < _EXIT_KEY_PROB + _CALLBACK_PROB:
            w = rng.uniform(*_CALLBACK_AFTER)
            if w < after:
                after, action = w, _CALLBACK
        self._push(t + after, _K_LEAVE, call, (call.leg, action))
        agent = self._find_agent(qi)
        if agent is None:
            self.waiting[qi].append(call)
        else:
            del self.avail[agent]
            self._ring(call, agent, t)

    def _find_agent(self, qi: int) -> _Agent | None:
        for agent in self.avail:  # longest idle first
            if qi in agent.qset:
                return agent
        return None

    def _oldest_waiting(self, agent: _Agent) -> _Call | None:
        best: _Call | None = None
        best_q: deque[_Call] | None = None
        for qi in agent.skills:
            dq = self.waiting[qi]
            while dq and (dq[0].state != _WAITING or dq[0].qi != qi):
                dq.popleft()  # lazily drop calls that abandoned or flowed out
            if dq and (best is None or dq[0].offered_at < best.offered_at):
                best, best_q = dq[0], dq
        if best_q is not None:
            best_q.popleft()
        return best

    def _ring(self, call: _Call, agent: _Agent, t: float) -> None:
        rng = self.rng
        call.state = _RINGING
        call.agent = agent
        call.attempt += 1
        self.ring_seq += 1
        call.ring_token = self.ring_seq
        ev = self._call_ev(t, "call.ringing", call, call.qi)
        ev["agent_id"] = agent.id
        ev["attempt"] = call.attempt
        if rng.random() < _RING_NO_ANSWER:
            self._push(t + _RING_TIMEOUT, _K_RING_RESULT, call, -self.ring_seq)
        else:
            self._push(t + rng.uniform(2.0, 6.0), _K_RING_RESULT, call, self.ring_seq)

    def _leave(self, call: _Call, action: int, t: float) -> None:
        call.state = _DONE
        if action == _ABANDON:
            self._call_ev(t, "call.abandoned", call, call.qi)
            return
        ev = self._call_ev(t, "call.flowed_out", call, call.qi)
        if action == _TIMEOUT:
            ev["reason"] = "timeout"
        elif action == _EXIT_KEY:
            ev["reason"] = "exit_key"
        else:
            ev["reason"] = "callback"
            ev = self._call_ev(t, "call.callback_requested", call, call.qi)
            ev["callback_id"] = f"cb-{call.id}"
            ev["caller"] = call.caller
            delay = self.side_rng.lognormvariate(math.log(_CALLBACK_DELAY_MEDIAN), _CALLBACK_DELAY_SIGMA)
            self._push(t + max(_CALLBACK_MIN_DELAY, delay), _K_CALLBACK, call, 1)

    def _on_leave(self, t: float, call: _Call, b: tuple[int, int]) -> None:
        leg, action = b
        if call.leg != leg:
            return
        if call.state == _WAITING:
            self._leave(call, action, t)
        elif call.state == _RINGING:
            if action == _ABANDON:  # hangs up while an agent's phone rings
                agent = call.agent
                assert agent is not None  # _ring set it
                call.agent = None
                self._leave(call, action, t)
                self._agent_ready(agent, t)
            else:  # exit key / callback / timeout take effect if this ring is not answered
                call.leave_pending = action

    def _on_ring_result(self, t: float, call: _Call, token: int) -> None:
        if call.state != _RINGING or call.ring_token != abs(token):
            return  # the caller hung up while it rang
        agent = call.agent
        assert agent is not None  # ringing: _ring set it
        if token < 0:
            ev = self._call_ev(t, "call.ring_no_answer", call, call.qi)
            ev["agent_id"] = agent.id
            ev["attempt"] = call.attempt
            ev["ring_seconds"] = _RING_TIMEOUT
            call.agent = None
            self._agent_state(agent, t, _NOT_READY, "missed_call")
            self._push(t + self.rng.uniform(*_MISSED_NOT_READY), _K_READY, agent)
            call.state = _WAITING
            if call.leave_pending >= 0:
                self._leave(call, call.leave_pending, t)
                return
            other = self._find_agent(call.qi)
            if other is None:
                self.waiting[call.qi].appendleft(call)
            else:
                del self.avail[other]
                self._ring(call, other, t)
            return
        rng = self.rng
        q = QUEUES[call.qi]
        call.state = _TALKING
        call.waited += t - call.offered_at
        ev = self._call_ev(t, "call.answered", call, call.qi)
        ev["agent_id"] = agent.id
        ev["wait_seconds"] = round(t - call.offered_at, 3)  # this leg's wait, as an ACD reports it
        self._agent_state(agent, t, _ON_CALL)
        if not call.transferred and rng.random() < q.transfer_prob:
            call.transfer_to = rng.choice(self.transfer_targets[call.qi])
        talk = rng.lognormvariate(self.talk_mu[call.qi], _TALK_SIGMA)
        if rng.random() < q.hold_prob:
            before = talk * rng.uniform(0.2, 0.7)
            call.talk_rest = talk - before
            self._push(t + before, _K_HOLD_START, call)
        else:
            self._push(t + talk, _K_CONV_END, call)

    # ---------------------------------------------------------------- conversation

    def _on_hold_start(self, t: float, call: _Call, _b: Any) -> None:
        assert call.agent is not None  # talking: set until the conversation ends
        ev = self._call_ev(t, "call.hold_started", call, call.qi)
        ev["agent_id"] = call.agent.id
        self._push(t + self.rng.lognormvariate(self.hold_mu, 0.5), _K_HOLD_END, call)

    def _on_hold_end(self, t: float, call: _Call, _b: Any) -> None:
        assert call.agent is not None  # talking: set until the conversation ends
        ev = self._call_ev(t, "call.hold_ended", call, call.qi)
        ev["agent_id"] = call.agent.id
        self._push(t + call.talk_rest, _K_CONV_END, call)

    def _on_conv_end(self, t: float, call: _Call, _b: Any) -> None:
        rng = self.rng
        agent = call.agent
        assert agent is not None  # talking: set until now
        qi = call.qi
        call.agent = None
        wrap = rng.lognormvariate(self.wrap_mu[qi], _WRAP_SIGMA)
        if call.transfer_to >= 0:
            target = call.transfer_to
            ev = self._call_ev(t, "call.transferred", call, qi)
            ev["agent_id"] = agent.id
            ev["kind"] = "blind"
            ev["target_queue"] = self.qnames[target]
            self._agent_state(agent, t, _WRAP_UP)
            self._push(t + wrap, _K_WRAP_END, agent, (call.id, qi))
            call.transfer_to = -1
            call.transferred = True
            self._offer(call, target, t)
            return
        ev = self._call_ev(t, "call.ended", call, qi)
        ev["agent_id"] = agent.id
        ev["ended_by"] = "caller" if rng.random() < 0.6 else "agent"
        call.state = _DONE
        self._agent_state(agent, t, _WRAP_UP)
        self._push(t + wrap, _K_WRAP_END, agent, (call.id, qi))
        if rng.random() < _SURVEY_PROB:
            self._push(t + rng.uniform(30.0, 180.0), _K_SURVEY, (call.id, qi, agent.id), call.waited)

    def _on_wrap_end(self, t: float, agent: _Agent, b: tuple[str, int]) -> None:
        call_id, qi = b
        if self.rng.random() < _DISPOSITION_PROB:
            ev = self._ev(t, "call.disposition")
            ev["call_id"] = call_id
            ev["code"] = self.rng.choice(QUEUES[qi].dispositions)
            ev["queue"] = self.qnames[qi]
            ev["agent_id"] = agent.id
        ev = self._ev(t, "call.wrapup_ended")
        ev["queue"] = self.qnames[qi]
        ev["call_id"] = call_id
        ev["agent_id"] = agent.id
        self._agent_ready(agent, t)

    def _on_survey(self, t: float, a: tuple[str, int, str], waited: float) -> None:
        rng = self.rng
        call_id, qi, agent_id = a
        ev = self._ev(t, "call.survey")
        ev["call_id"] = call_id
        ev["queue"] = self.qnames[qi]
        ev["agent_id"] = agent_id
        # the longer the caller waited in the queue(s), the worse the score (NPS follows CSAT)
        if waited <= SERVICE_LEVEL_SECONDS:
            weights = _SURVEY_WEIGHTS_QUICK
        elif waited <= _SURVEY_LONG_WAIT:
            weights = _SURVEY_WEIGHTS_WAITED
        else:
            weights = _SURVEY_WEIGHTS_LONG
        csat = rng.choices((1, 2, 3, 4, 5), weights)[0]
        ev["csat"] = csat
        ev["resolved"] = rng.random() < (0.5 + 0.1 * csat)
        if rng.random() < 0.5:
            ev["nps"] = min(10, max(0, 2 * csat + rng.randint(-2, 1)))

    # ---------------------------------------------------------------- callbacks and outbound

    def _bridged_agent(self, qi: int) -> _Agent | None:
        """The agent of queue ``qi``'s group a callback or outbound call is put through to: an
        idle one if any, else any logged-in one (None: nobody of the group is logged in). The
        agent's state is left alone (see the comment above _CALLBACK_DELAY_MEDIAN)."""
        group = self.groups[qi]
        idle = [agent for agent in group if agent in self.avail]
        if idle:
            return self.side_rng.choice(idle)
        logged_in = [agent for agent in group if agent.logged_in]
        return self.side_rng.choice(logged_in) if logged_in else None

    def _on_callback(self, t: float, call: _Call, attempt: int) -> None:
        """Attempt ``attempt`` at calling back a caller who asked for it (call.callback_requested)."""
        rng = self.side_rng
        agent = self._bridged_agent(call.qi)
        if agent is None:  # nobody to place it: later
            self._push(t + _CALLBACK_NOBODY_WAIT, _K_CALLBACK, call, attempt)
            return
        result = rng.choices(_CALLBACK_RESULTS, _CALLBACK_RESULT_WEIGHTS)[0]
        ev = self._call_ev(t, "call.callback_completed", call, call.qi)
        ev["callback_id"] = f"cb-{call.id}"
        ev["result"] = result
        if result == "connected":
            ev["agent_id"] = agent.id
        elif result != "cancelled" and attempt < _CALLBACK_ATTEMPTS:  # still open: try again later
            self._push(t + rng.uniform(*_CALLBACK_RETRY_AFTER), _K_CALLBACK, call, attempt + 1)

    def _schedule_outbound(self, ci: int, t: float) -> None:
        """The next attempt of campaign ``ci``: Poisson along the intraday curve (thinning)."""
        lam = self.outbound_rate[ci]
        if lam <= 0.0:
            return
        rnd = self.side_rng.random
        while True:
            t -= math.log(1.0 - rnd()) / lam
            if t >= self.end:
                return
            if rnd() <= arrival_profile((t % _SECONDS_PER_DAY) / 3600.0):
                break
        self._push(t, _K_OUTBOUND, ci)

    def _on_outbound(self, t: float, ci: int, _b: Any) -> None:
        """One dial attempt of a campaign; a connected one is bridged to an agent at once, or
        (rarely) to nobody: an abandoned outbound call. The dialer pauses while nobody of the
        queue's group is logged in."""
        rng = self.side_rng
        campaign, qi = self.campaigns[ci]
        agent = self._bridged_agent(qi)
        self._schedule_outbound(ci, t)
        if agent is None:
            return
        self.n_outbound += 1
        ev = self._ev(t, "call.outbound_attempt")
        ev["queue"] = self.qnames[qi]
        ev["call_id"] = f"{self.outbound_prefix}{self.n_outbound}"
        ev["campaign"] = campaign
        ev["caller"] = f"+79{rng.randrange(10 ** 9):09d}"  # the number dialled
        result = ev["result"] = rng.choices(_OUTBOUND_RESULTS, _OUTBOUND_RESULT_WEIGHTS)[0]
        if result == "connected" and rng.random() >= _OUTBOUND_NO_AGENT:
            ev["agent_id"] = agent.id

    # ---------------------------------------------------------------- agents

    def _agent_ready(self, agent: _Agent, t: float) -> None:
        """The agent is free (after login, wrap-up, break, a missed ring or a caller hang-up)."""
        if agent.logout_pending:
            self._logout(agent, t)
            return
        if t >= agent.next_break_at:
            self._start_break(agent, t)
            return
        if agent.state != _AVAILABLE:
            self._agent_state(agent, t, _AVAILABLE)
        call = self._oldest_waiting(agent)
        if call is None:
            self.avail[agent] = None
        else:
            self._ring(call, agent, t)

    def _logout(self, agent: _Agent, t: float) -> None:
        agent.logged_in = False
        agent.logout_pending = False
        agent.state = _OFF
        agent.break_token += 1
        agent.next_break_at = math.inf
        ev = self._ev(t, "agent.logged_out")
        ev["agent_id"] = agent.id
        ev["queues"] = list(agent.names)

    def _start_break(self, agent: _Agent, t: float) -> None:
        rng = self.rng
        if agent.lunch_next:
            reason, length = "lunch", rng.uniform(*_LUNCH_LENGTH)
            agent.lunch_day = int(t // _SECONDS_PER_DAY)
            agent.lunch_next = False
        else:
            r = rng.random()
            if r < 0.8:
                reason, length = "break", rng.lognormvariate(_lognormal_mu(480.0, 0.3), 0.3)
            elif r < 0.9:
                reason, length = "training", rng.uniform(15 * 60.0, 30 * 60.0)
            else:
                reason, length = "coaching", rng.uniform(8 * 60.0, 15 * 60.0)
        agent.next_break_at = math.inf
        agent.break_token += 1
        self._agent_state(agent, t, _NOT_READY, reason)
        self._push(t + length, _K_BREAK_END, agent)

    def _schedule_break(self, agent: _Agent, t: float, lo: float, hi: float) -> None:
        due = t + self.rng.uniform(lo, hi)
        day = int(t // _SECONDS_PER_DAY)
        lunch = day * _SECONDS_PER_DAY + agent.lunch_hour * 3600.0
        # lunch replaces the next break when its slot comes first (late by up to half an hour)
        agent.lunch_next = agent.lunch_day != day and lunch <= due and t < lunch + 1800.0
        if agent.lunch_next:
            due = max(lunch, t + 60.0)
        agent.next_break_at = due
        agent.break_token += 1
        self._push(agent.next_break_at, _K_BREAK_DUE, agent, agent.break_token)

    def _on_break_end(self, t: float, agent: _Agent, _b: Any) -> None:
        self._schedule_break(agent, t, *_BREAK_EVERY)
        self._agent_ready(agent, t)

    def _on_break_due(self, t: float, agent: _Agent, token: int) -> None:
        if token == agent.break_token and agent in self.avail:
            del self.avail[agent]
            self._agent_ready(agent, t)
        # otherwise busy: _agent_ready takes the break when the agent is next free

    def _on_ready(self, t: float, agent: _Agent, _b: Any) -> None:
        self._agent_ready(agent, t)

    def _on_login(self, t: float, agent: _Agent, _b: Any) -> None:
        agent.logged_in = True
        agent.login_at = t
        agent.state = "login"
        ev = self._ev(t, "agent.logged_in")
        ev["agent_id"] = agent.id
        ev["queues"] = list(agent.names)
        self._schedule_break(agent, t, 15 * 60.0, _BREAK_EVERY[1])
        self._push(t + self.rng.uniform(3.0, 20.0), _K_READY, agent)

    def _on_try_logout(self, t: float, agent: _Agent, _b: Any) -> None:
        if agent.logout_pending and agent in self.avail:
            del self.avail[agent]
            self._logout(agent, t)

    def _new_agent(self, gi: int) -> _Agent:
        rr = self.roster_rng
        skills = [gi]
        extra = rr.random()
        n_extra = 2 if extra < 0.08 else 1 if extra < 0.38 else 0
        candidates = [self.qindex[n] for n in QUEUES[gi].secondary]
        others = [i for i in range(len(QUEUES)) if i != gi and i not in candidates]
        while n_extra and (candidates or others):
            pool = candidates if candidates and rr.random() < 0.8 else (others or candidates)
            pick = rr.choice(pool)
            pool.remove(pick)
            skills.append(pick)
            n_extra -= 1
        self.n_agents += 1
        agent = _Agent(f"agent-{self.n_agents:04d}", gi, tuple(skills),
                       [self.qnames[i] for i in skills])
        agent.lunch_hour = rr.uniform(*_LUNCH_HOURS)
        self.groups[gi].append(agent)
        return agent

    def _needed(self, gi: int, t0: float, t1: float) -> int:
        # the interval's mean forecast (Simpson's rule over the smooth intraday curve)
        prof = [arrival_profile((x % _SECONDS_PER_DAY) / 3600.0) for x in (t0, (t0 + t1) / 2, t1)]
        mean = (prof[0] + 4.0 * prof[1] + prof[2]) / 6.0
        n = _agents_needed(self.forecast_rate[gi] * mean, self.aht[gi], self.patience_model,
                           self.p.staffing_target)
        hour = ((t0 + t1) / 2 % _SECONDS_PER_DAY) / 3600.0
        # share of agents at lunch: slots spread evenly over _LUNCH_HOURS, ~half an hour each
        lo, hi = _LUNCH_HOURS
        at_lunch = max(0.0, min(hour, hi) - max(hour - 0.5, lo)) / (hi - lo)
        shrinkage = _SHRINKAGE + at_lunch
        return max(self.p.min_agents, math.ceil(n / (1.0 - shrinkage)))

    def _on_restaff(self, t: float, _a: Any, _b: Any) -> None:
        """Every half hour: bring logged-in headcount per skill group to the forecast need."""
        rng = self.rng
        nxt = (math.floor(t / _STAFFING_INTERVAL) + 1) * _STAFFING_INTERVAL
        if nxt - t < 300.0:  # a run starting just before a boundary: plan to the next one
            nxt += _STAFFING_INTERVAL
        first = t == self.start
        for gi in range(len(QUEUES)):
            need = self._needed(gi, t, nxt)
            group = self.groups[gi]
            on = [a for a in group if a.on_shift]
            if need > len(on):
                missing = need - len(on)
                for agent in group:  # keep agents who were about to leave
                    if missing and agent.logout_pending:
                        agent.logout_pending = False
                        agent.on_shift = True
                        missing -= 1
                for agent in group:  # then bring in agents who are off
                    if missing and not agent.on_shift and not agent.logged_in:
                        agent.on_shift = True
                        self._push(t + rng.uniform(0.0, 15.0 if first else 60.0), _K_LOGIN, agent)
                        missing -= 1
                while missing:
                    agent = self._new_agent(gi)
                    agent.on_shift = True
                    self._push(t + rng.uniform(0.0, 15.0 if first else 60.0), _K_LOGIN, agent)
                    missing -= 1
            elif need < len(on):
                on.sort(key=lambda a: a.login_at)  # the longest shift ends first
                for agent in on[: len(on) - need]:
                    agent.on_shift = False
                    agent.logout_pending = True
                    if agent in self.avail:
                        self._push(t + rng.uniform(0.0, 120.0), _K_TRY_LOGOUT, agent)
        self._push(nxt, _K_RESTAFF)


class _SteadySimulation(_Simulation):
    """The steady scenario: one queue as M/M/c+M. Calls arrive as a Poisson process at
    ``calls_per_hour`` and go straight into the queue (call.offered); the longest-idle of the
    ``agents`` agents answers at once (call.ringing and call.answered at the same instant, so the
    wait in the queue is the whole wait); a handle time S ~ Exp(mean ``handle_seconds``) is split
    into talk (5/6 S, to call.ended) and wrap-up (1/6 S, to call.wrapup_ended), so talk + wrap-up
    is exactly exponential; a caller who finds every agent busy waits in FIFO order and hangs up
    (call.abandoned) after an Exp(mean ``patience_mean``) patience unless answered first. The
    agents log in at the start and stay available / on call / in wrap-up: agents staffed is
    always ``agents``. Erlang C (infinite patience) and Erlang A are exact for these inputs."""

    def __init__(self, scenario: str, seed: int, start: float, duration: float,
                 params: ScenarioParams) -> None:
        # Only _Simulation's event plumbing (_push, _ev, _call_ev, _agent_state) is used: none of
        # its queues, forecast or roster is set up.
        p = params
        self._begin(p, seed, start, duration, (scenario, seed, float(start), float(duration), p.steady_queue,
                                                p.calls_per_hour, p.handle_seconds, p.agents, p.patience_mean))
        self.qnames = [p.steady_queue]
        self.arrivals_per_s = p.calls_per_hour / 3600.0
        self.idle: deque[_Agent] = deque()  # longest idle first
        self.queue: deque[_Call] = deque()  # FIFO; calls that hung up are skipped lazily
        self.handlers = [self._on_arrive, self._on_leave, self._on_conv_end, self._on_steady_wrap_end]

    def run(self) -> Iterator[dict[str, Any]]:
        t = self.start
        for n in range(1, self.p.agents + 1):
            agent = _Agent(f"agent-{n:04d}", 0, (0,), [self.qnames[0]])
            agent.logged_in = agent.on_shift = True
            ev = self._ev(t, "agent.logged_in")
            ev["agent_id"] = agent.id
            ev["queues"] = list(agent.names)
            self._agent_state(agent, t, _AVAILABLE)
            self.idle.append(agent)
        self._schedule_steady_arrival(t)
        heap, handlers, out, end = self.heap, self.handlers, self.out, self.end
        pop = heapq.heappop
        while True:
            if out:
                yield from out
                out.clear()
            if not heap:
                break
            t, _, kind, a, b = pop(heap)
            if t >= end:
                break
            handlers[kind](t, a, b)

    def _schedule_steady_arrival(self, t: float) -> None:
        if self.arrivals_per_s <= 0.0:
            return
        t += self.rng.expovariate(self.arrivals_per_s)
        if t < self.end:
            self._push(t, 0, None)

    def _on_arrive(self, t: float, _a: Any, _b: Any) -> None:
        rng = self.rng
        self.n_calls += 1
        call = _Call(f"{self.call_prefix}{self.n_calls}", self._caller(rng.randrange(10 ** 9)), 0)
        call.leg = 1
        call.offered_at = t
        ev = self._call_ev(t, "call.offered", call, 0)
        ev["caller"] = call.caller
        if self.idle:
            self._answer(call, self.idle.popleft(), t)
        else:
            call.state = _WAITING
            self.queue.append(call)
            if not math.isinf(self.p.patience_mean):
                self._push(t + rng.expovariate(1.0 / self.p.patience_mean), 1, call)
        self._schedule_steady_arrival(t)

    def _answer(self, call: _Call, agent: _Agent, t: float) -> None:
        call.state = _TALKING
        call.agent = agent
        ev = self._call_ev(t, "call.ringing", call, 0)
        ev["agent_id"] = agent.id
        ev["attempt"] = 1
        ev = self._call_ev(t, "call.answered", call, 0)
        ev["agent_id"] = agent.id
        ev["wait_seconds"] = round(t - call.offered_at, 3)
        self._agent_state(agent, t, _ON_CALL)
        handle = self.rng.expovariate(1.0 / self.p.handle_seconds)
        wrap = handle * _STEADY_WRAP_SHARE
        self._push(t + (handle - wrap), 2, call, wrap)

    def _on_leave(self, t: float, call: _Call, _b: Any) -> None:
        if call.state == _WAITING:
            call.state = _DONE
            self._call_ev(t, "call.abandoned", call, 0)

    def _on_conv_end(self, t: float, call: _Call, wrap: float) -> None:
        agent = call.agent
        assert agent is not None  # talking: _answer set it
        call.state = _DONE
        ev = self._call_ev(t, "call.ended", call, 0)
        ev["agent_id"] = agent.id
        ev["ended_by"] = "caller"
        self._agent_state(agent, t, _WRAP_UP)
        self._push(t + wrap, 3, agent, call)

    def _on_steady_wrap_end(self, t: float, agent: _Agent, call: _Call) -> None:
        ev = self._call_ev(t, "call.wrapup_ended", call, 0)
        ev["agent_id"] = agent.id
        self._agent_state(agent, t, _AVAILABLE)
        queue = self.queue
        while queue and queue[0].state != _WAITING:
            queue.popleft()  # hung up while waiting
        if queue:
            self._answer(queue.popleft(), agent, t)
        else:
            self.idle.append(agent)


# --------------------------------------------------------------------------- public entry point


def simulate(
    scenario: str = "normal",
    seed: int = 1,
    start: float = DEFAULT_START,
    duration_seconds: float = 3600.0,
    *,
    rate_scale: float = 1.0,
    surge_start: float | None = None,
    surge_duration: float | None = None,
    calls_per_hour: float | None = None,
    handle_seconds: float | None = None,
    agents: int | None = None,
    patience_seconds: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Lazily generate canonical v1 events for ``duration_seconds`` from ``start``.

    scenario: a key of ``SCENARIOS`` ("normal", "surge", "quiet", "steady").
    seed: the only source of randomness; identical arguments give identical events.
    start: epoch seconds of the first instant; the intraday curve uses its UTC hour of day.
    duration_seconds: events with ``start <= time < start + duration_seconds`` are produced
        (``math.inf`` streams forever). Calls still in progress at the end are cut off.
    rate_scale: multiplies arrival rates *and* staffing (e.g. 10 for a ten times bigger
        center with the same service level), handy for load tests.
    surge_start, surge_duration: seconds after ``start`` at which the surge scenario's surge
        begins, and how long it lasts (default 600 and 1200): an alerting drill can start a
        short surge now.
    calls_per_hour, handle_seconds, agents, patience_seconds: the steady scenario's inputs
        (default 360 calls/h, 180 s, 20 agents, 120 s; patience ``math.inf``: nobody hangs up).

    Events come in non-decreasing time order (ties keep causal order) as fresh dicts that
    follow the contract exactly; serialize them with orjson or json.
    """
    if scenario not in SCENARIO_PARAMS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError("seed must be an int")
    start = float(start)
    duration = float(duration_seconds)
    if not math.isfinite(start) or start < 0:
        raise ValueError("start must be finite epoch seconds >= 0")
    if not duration >= 0:
        raise ValueError("duration_seconds must be >= 0")
    if not (rate_scale > 0 and math.isfinite(rate_scale)):
        raise ValueError("rate_scale must be a positive finite number")
    params = None
    if surge_start is not None or surge_duration is not None:
        p = SCENARIO_PARAMS[scenario]
        if not p.has_surge:
            raise ValueError(f"scenario {scenario!r} has no surge to move")
        params = dataclasses.replace(
            p,
            surge_start=p.surge_start if surge_start is None else float(surge_start),
            surge_duration=p.surge_duration if surge_duration is None else float(surge_duration),
        )
        if not (params.surge_start >= 0 and params.surge_duration > 0):
            raise ValueError("surge_start must be >= 0 and surge_duration > 0")
    # ScenarioParams field -> value (float, or int for agents): one value type cannot fit them all
    steady: dict[str, Any] = {name: value for name, value in (("calls_per_hour", calls_per_hour),
                                                              ("handle_seconds", handle_seconds), ("agents", agents),
                                                              ("patience_mean", patience_seconds))
                              if value is not None}
    if SCENARIO_PARAMS[scenario].steady:
        if rate_scale != 1.0:
            raise ValueError("the steady scenario takes calls_per_hour and agents, not rate_scale")
        p = dataclasses.replace(SCENARIO_PARAMS[scenario], **steady)
        if not (p.calls_per_hour > 0 and math.isfinite(p.calls_per_hour)):
            raise ValueError("calls_per_hour must be a positive finite number")
        if not (p.handle_seconds > 0 and math.isfinite(p.handle_seconds)):
            raise ValueError("handle_seconds must be a positive finite number")
        if not isinstance(p.agents, int) or isinstance(p.agents, bool) or p.agents < 1:
            raise ValueError("agents must be an int >= 1")
        if not p.patience_mean > 0:
            raise ValueError("patience_seconds must be > 0 (math.inf: nobody hangs up)")
        return _SteadySimulation(scenario, seed, start, duration, p).run()
    if steady:
        names = ", ".join("patience_seconds" if name == "patience_mean" else name for name in steady)
        raise ValueError(f"scenario {scenario!r} takes no {names} (only steady does)")
    return _Simulation(scenario, seed, start, duration, float(rate_scale), params).run()


def planning_forecast(day_start: float, days: int = 1, scenario: str = "normal", *, minutes: int = 15,
                      rate_scale: float = 1.0, shift_seconds: float = 0.0) -> str:
    """The simulator's own planning forecast as a WFM-style CSV (kpi/forecast.py reads it): for each
    queue and `minutes` interval of `days` UTC days from `day_start` (a UTC midnight), the offered
    calls its planner expects (IVR output plus transfers in, times the intraday curve), the AHT it
    plans with, and the agents it schedules (heads, shrinkage included). A surge is not in it:
    that is what a surge is. For the demo's forecast vs actual. shift_seconds: the traffic is that
    of the time of day this much later, as `simulate --hour-of-day` stamps it with the real time."""
    if scenario not in SCENARIO_PARAMS or SCENARIO_PARAMS[scenario].steady:
        raise ValueError(f"no planning forecast for scenario {scenario!r}")
    sim = _Simulation(scenario, 1, day_start, days * _SECONDS_PER_DAY, float(rate_scale))
    step = minutes * 60.0
    rows = ["queue,date,interval_start,offered,aht_seconds,planned_agents"]
    for k in range(int(days * _SECONDS_PER_DAY // step)):
        t0 = day_start + k * step
        t1 = t0 + step
        s0, s1 = t0 + shift_seconds, t1 + shift_seconds  # simulated time of day
        prof = [arrival_profile((x % _SECONDS_PER_DAY) / 3600.0) for x in (s0, (s0 + s1) / 2, s1)]
        mean = (prof[0] + 4.0 * prof[1] + prof[2]) / 6.0  # as the planner averages it
        day, hhmm = _time.strftime("%Y-%m-%d", _time.gmtime(t0)), _time.strftime("%H:%M", _time.gmtime(t0))
        for gi, q in enumerate(QUEUES):
            offered = sim.forecast_rate[gi] * mean * step
            rows.append(f"{q.name},{day},{hhmm},{offered:.1f},{sim.aht[gi]:.0f},{sim._needed(gi, s0, s1)}")
    return "\n".join(rows) + "\n"
