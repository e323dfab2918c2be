"""Pure KPI arithmetic: the service-level formulas and the ratios built from window counts.

Notation of the KPI reference: A answered, A<=T answered within T, Ab abandoned, Ab<=T abandoned
within T, Ab<=S short abandons (S is the short-abandon time), F flowed out (timeout, exit key,
overflow, callback, transfer, ...). Every function returns None when its denominator is zero: a
queue without calls has no service level, which is not the same as 0 % or 100 %.
"""

from __future__ import annotations

from collections.abc import Mapping

# One line per formula: the HELP text of callcenter_service_level_ratio and queue_info quote these.
FORMULA_TEXT: Mapping[str, str] = {
    "SL-A": "A<=T / A (abandons ignored entirely; Asterisk SL, Wazo, VICIdial)",
    "SL-B": "A<=T / (A + Ab) (abandons count against; ICMI #3)",
    "SL-C": "A<=T / (A + Ab - Ab<=S) (short abandons excluded; Genesys, Twilio Flex)",
    "SL-D": "A<=T / (A + Ab - Ab<=T) (abandons within T ignored; ICMI #4)",
    "SL-E": "(A<=T + Ab<=T) / (A + Ab) (abandons within T count as met; Asterisk SL2, Amazon Connect)",
    "SL-F": "(A<=T + Ab<=S) / (A + Ab) (short abandons count as met; ICMI #5)",
    "SL-G": "A<=T / (A + Ab + F) (flow-outs count against; Genesys with flow-outs)",
}


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is zero (undefined, not 0)."""
    if denominator <= 0:
        return None
    return numerator / denominator


def service_level(
    formula: str,
    *,
    answered: float,
    answered_within: float,
    abandoned: float,
    abandoned_within: float,
    short_abandoned: float,
    flowed_out: float,
) -> float | None:
    """Service level at one threshold T by one of the seven named formulas of the KPI reference."""
    if formula == "SL-A":
        return ratio(answered_within, answered)
    if formula == "SL-B":
        return ratio(answered_within, answered + abandoned)
    if formula == "SL-C":
        return ratio(answered_within, answered + abandoned - short_abandoned)
    if formula == "SL-D":
        return ratio(answered_within, answered + abandoned - abandoned_within)
    if formula == "SL-E":
        return ratio(answered_within + abandoned_within, answered + abandoned)
    if formula == "SL-F":
        return ratio(answered_within + short_abandoned, answered + abandoned)
    if formula == "SL-G":
        return ratio(answered_within, answered + abandoned + flowed_out)
    raise ValueError(f"unknown service-level formula {formula!r}; expected one of {sorted(FORMULA_TEXT)}")


def occupancy(busy_agent_seconds: float, staffed_agent_seconds: float) -> float | None:
    """Share of staffed time spent on calls: (on_call + wrap_up) / (available + on_call + wrap_up)."""
    return ratio(busy_agent_seconds, staffed_agent_seconds)


def average_handle_seconds(handled: float, talk: float, hold: float, wrapup: float) -> float | None:
    """AHT = (talk + hold + wrap-up seconds) / handled calls."""
    return ratio(talk + hold + wrapup, handled)
