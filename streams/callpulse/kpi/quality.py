"""Pure arithmetic of the customer-facing KPIs: CSAT, NPS, first-call resolution (by survey and by
repeat caller, with the keyed hash callers are kept as), outbound connect and abandon rates,
callback completion, cost per handled call.

Inputs are counts (of one window, interval, day or 30 days); like formulas.py, every function
returns None when its denominator is zero (no surveys is not 0 % satisfied).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from .formulas import ratio

CSAT_SCORES = (1, 2, 3, 4, 5)
NPS_SCORES = tuple(range(11))
#: Top-two-box CSAT: the answers that count as satisfied on the 1-5 scale.
CSAT_SATISFIED = frozenset((4, 5))
#: NPS on the 0-10 scale: promoters answer 9-10, detractors 0-6 (7-8 are passives).
NPS_PROMOTERS = frozenset((9, 10))
NPS_DETRACTORS = frozenset(range(7))


def repeat_caller_fcr(checked: float, repeated: float) -> float | None:
    """Repeat-caller FCR: handled calls with no further call from the same caller within the
    period / handled calls whose period has passed (both counted when the period passed)."""
    return ratio(checked - repeated, checked)


def caller_hash(caller: str, key: bytes) -> str | None:
    """The keyed hash (BLAKE2b-64, hex) that stands for a caller number; the number is reduced to
    its digits first, so "+7 (495) 123-45-67" and "74951234567" are one caller. 64 bits keep the
    queues' snapshots small; two of 20,000 callers share one with a chance of about 1e-11. None:
    no digits (an anonymous or withheld caller is nobody's repeat)."""
    digits = re.sub(r"\D", "", caller)
    if not digits:
        return None
    return hashlib.blake2b(digits.encode(), key=hashlib.sha256(key).digest(), digest_size=8).hexdigest()


def csat_ratio(answers_by_score: Mapping[int, float]) -> float | None:
    """Top-two-box CSAT: answers of 4 or 5 / all CSAT answers."""
    total = sum(answers_by_score.values())
    return ratio(sum(n for score, n in answers_by_score.items() if score in CSAT_SATISFIED), total)


def csat_average_score(answers_by_score: Mapping[int, float]) -> float | None:
    """Mean CSAT score on the 1-5 scale."""
    return ratio(sum(score * n for score, n in answers_by_score.items()), sum(answers_by_score.values()))


def net_promoter_score(answers_by_score: Mapping[int, float]) -> float | None:
    """NPS = 100 x (promoters - detractors) / answers, from -100 (all detractors) to 100."""
    total = sum(answers_by_score.values())
    promoters = sum(n for score, n in answers_by_score.items() if score in NPS_PROMOTERS)
    detractors = sum(n for score, n in answers_by_score.items() if score in NPS_DETRACTORS)
    share = ratio(promoters - detractors, total)
    return None if share is None else 100.0 * share


def first_call_resolution(resolved: float, unresolved: float) -> float | None:
    """Survey-based FCR: callers who answered "resolved: true" / callers who answered the question."""
    return ratio(resolved, resolved + unresolved)


def connect_rate(live_connects: float, attempts: float) -> float | None:
    """Outbound connect rate: attempts answered by a person / attempts."""
    return ratio(live_connects, attempts)


def outbound_abandon_rate(live_connects: float, agent_connects: float) -> float | None:
    """Abandoned outbound calls / live-answered calls, where abandoned = answered by a person but
    not connected to an agent within the limit (2 s): the rate the US Telemarketing Sales Rule caps at 3 % per campaign and 30 days, Ofcom at 3 % per 24 h."""
    return ratio(max(0.0, live_connects - agent_connects), live_connects)


def callback_completion_rate(connected: float, requested: float) -> float | None:
    """Callbacks that reached the customer / callbacks requested."""
    return ratio(connected, requested)


def cost_per_handled_call(logged_in_seconds: float, cost_per_agent_hour: float, handled: float) -> float | None:
    """Logged-in agent-hours x cost of an agent-hour / handled calls."""
    return ratio(logged_in_seconds / 3600.0 * cost_per_agent_hour, handled)
