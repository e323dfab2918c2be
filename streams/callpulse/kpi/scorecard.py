"""The agent scorecard (绩效): a day's measures of one agent, each scored against its target, and
their weighted score. Pure arithmetic; config.py checks the card, agents.py supplies the measures.

A measure's score is between 0 and 1:
- "higher is better" (calls handled, CSAT, FCR, NPS, adherence, ...): 1 at or above the target,
  else value / target. NPS runs from -100 to 100, so it is scored on NPS + 100.
- "lower is better" (AHT, ring-no-answers, transfers, not-ready share): 1 at or below the target,
  else target / value (0 when the target is 0 and the value is not).
- a band [low, high] (occupancy is the usual one: too low is idle time, too high burns agents
  out): 1 inside, value / low below it, high / value above it.
The card's score = 100 x sum(weight x score) / sum(weight), over the measures that have a value
today: a measure without one (no surveys yet, no calls for AHT) is listed as left out, and the
others' weights are renormalized, so an agent is never marked down for a survey nobody sent.
"""

from __future__ import annotations

from dataclasses import dataclass

HIGHER, LOWER = "higher", "lower"
#: The measures a card may use and which way is better. adherence = logged-in seconds / scheduled
#: seconds (needs a schedule); not_ready_ratio = not-ready seconds / logged-in seconds.
MEASURES = {
    "handled": HIGHER,
    "answered": HIGHER,
    "average_handle_seconds": LOWER,
    "ring_no_answers": LOWER,
    "transfers": LOWER,
    "occupancy": HIGHER,
    "utilization": HIGHER,
    "not_ready_ratio": LOWER,
    "adherence": HIGHER,
    "csat_ratio": HIGHER,
    "csat_average_score": HIGHER,
    "net_promoter_score": HIGHER,
    "first_call_resolution_ratio": HIGHER,
}
NPS_SHIFT = 100.0  # NPS is scored on NPS + 100 (0..200), so a negative NPS still scores


@dataclass(frozen=True)
class Measure:
    """One line of the card: a target (which way is better comes from MEASURES) or a band."""

    name: str
    weight: float
    target: float | None = None
    band: tuple[float, float] | None = None


def measure_score(name: str, value: float, target: float | None = None,
                  band: tuple[float, float] | None = None) -> float:
    """The score (0..1) of one measure's value against its target or band."""
    if name == "net_promoter_score":  # on NPS + 100, so that a negative NPS still scores
        value += NPS_SHIFT
        target = None if target is None else target + NPS_SHIFT
        band = None if band is None else (band[0] + NPS_SHIFT, band[1] + NPS_SHIFT)
    if band is not None:
        low, high = band
        if value < low:
            return max(0.0, value) / low if low > 0 else 0.0
        if value > high:
            return high / value if value > 0 else 0.0
        return 1.0
    assert target is not None, "a measure has a target or a band"
    if MEASURES[name] == HIGHER:
        if value >= target:
            return 1.0
        return max(0.0, value) / target if target > 0 else 1.0
    if value <= target:
        return 1.0
    return target / value if target > 0 else 0.0


def score_card(values: dict[str, float | None], card: tuple[Measure, ...]) -> dict:
    """The card for a day's measure values (None: no value today): each line with its value,
    target or band, weight and score; the weighted score (0..100, None when no measure has a
    value); the measures left out."""
    lines, left_out = {}, []
    weighted = weights = 0.0
    for m in card:
        value = values.get(m.name)
        line: dict = {"value": value, "weight": m.weight}
        line.update({"band": list(m.band)} if m.band is not None else {"target": m.target})
        if value is None:
            line["score"] = None
            left_out.append(m.name)
        else:
            line["score"] = score = measure_score(m.name, value, m.target, m.band)
            weighted += m.weight * score
            weights += m.weight
        lines[m.name] = line
    return {"score": 100.0 * weighted / weights if weights > 0 else None, "measures": lines, "left_out": left_out}
