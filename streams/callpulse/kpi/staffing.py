"""Live inputs of the staffing formulas (erlang.py), estimated from a queue's rolling windows.

- Arrival rate: offered calls of the 15m window / 900 s. The window is itself a moving average,
  so no further smoothing; 15 minutes follows a surge within minutes.
- Average handle time: (talk + hold + wrap-up seconds) / handled calls of the 1h window: handle
  times vary more per call than arrivals and change slowly, so they get the longer window.
- Mean patience: the standard estimator for exponential patience, the time all callers spent
  waiting (answered and abandoned waits) over the number who hung up, in the 1h window (abandons
  are rare, so the longest window).
Each is None (unknown) below a minimum number of observations (`MIN_*`): a queue with two calls
in the last quarter of an hour has no arrival rate worth staffing on, and no number is made up.
An input that is not a finite positive number (a corrupt window) is unknown too. With known inputs
nothing here raises: the Erlang functions are total over finite inputs (erlang.py), and a target
no staffing can meet leaves that threshold's numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .erlang import NoStaffing, agents_required, erlang_a
from .windows import WINDOWS

RATE_WINDOW, AHT_WINDOW, PATIENCE_WINDOW = "15m", "1h", "1h"
MIN_OFFERED = 5  # calls offered in the rate window
MIN_HANDLED = 5  # calls handled in the AHT window
MIN_ABANDONED = 5  # abandons in the patience window


@dataclass(frozen=True)
class LiveInputs:
    rate: float | None  # arrivals per second
    aht: float | None  # seconds
    patience: float | None  # seconds


def _known(value: float) -> float | None:
    """A positive finite number, else None (unknown)."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def arrival_rate(window: dict, seconds: float) -> float | None:
    offered = window["offered"]
    return _known(offered / seconds) if offered >= MIN_OFFERED else None


def average_handle_time(window: dict) -> float | None:
    handled = window["handled"]
    if handled < MIN_HANDLED:
        return None
    s = window["seconds"]
    aht = (s["talk_seconds"] + s["hold_seconds"] + s["wrapup_seconds"]) / handled
    return _known(aht)  # zero-second calls (whole-second sources): no load to staff on


def mean_patience(window: dict) -> float | None:
    """Time waited by every caller whose wait ended (answered or abandoned) / abandons: the
    maximum-likelihood estimate of the mean of an exponential patience, each answered caller
    counting as a patience known to be longer than its wait."""
    abandoned = window["abandoned"]
    if abandoned < MIN_ABANDONED:
        return None
    s = window["seconds"]
    patience = (s["answer_wait_seconds"] + s["abandon_wait_seconds"]) / abandoned
    return _known(patience)  # all hung up within their second: no estimate


def _in_range(rate: float, aht: float, patience: float | None) -> bool:
    """The load (rate x aht) and the arrivals per mean patience are finite doubles: what the
    Erlang functions need of finite inputs (erlang.py raises ValueError beyond floating point)."""
    return math.isfinite(rate * aht * 4) and (patience is None or math.isfinite(rate * patience * 4))


def live_inputs(windows: dict[str, dict]) -> LiveInputs:
    """The inputs from a queue's read() windows (model.py)."""
    return LiveInputs(
        rate=arrival_rate(windows[RATE_WINDOW], dict(WINDOWS)[RATE_WINDOW]),
        aht=average_handle_time(windows[AHT_WINDOW]),
        patience=mean_patience(windows[PATIENCE_WINDOW]),
    )


MODELS = ("erlang_c", "erlang_a")  # label values of the `model` label


def staffing_view(windows: dict[str, dict], agents: dict[str, int], targets: dict[str, float]) -> dict:
    """What a queue needs now and what its current staffing can be expected to do, per model.

    windows: the queue's read() windows; agents: agents by state now; targets: {threshold label:
    target ratio}. Agents staffed = available + on_call + wrap_up. Erlang C needs the arrival rate
    and AHT; Erlang A also the patience. A model whose inputs are unknown gives None throughout;
    Erlang C gives no projection when the staffing cannot carry the load (it has no steady state:
    the queue would grow without bound, which is what Erlang A shows as abandonment). A target of
    1 (100 %) has no required agents: no finite staffing promises every caller within T.
    """
    inputs = live_inputs(windows)
    staffed = agents.get("available", 0) + agents.get("on_call", 0) + agents.get("wrap_up", 0)
    out: dict = {"inputs": {"arrivals_per_second": inputs.rate, "handle_seconds": inputs.aht,
                            "patience_seconds": inputs.patience},
                 "staffed": staffed, "models": {}}
    for model in MODELS:
        patience = None if model == "erlang_c" else inputs.patience
        known = (inputs.rate is not None and inputs.aht is not None and (model == "erlang_c" or patience is not None)
                 and _in_range(inputs.rate, inputs.aht, patience))
        view: dict = {"required": {}, "gap": {}, "projected_service_level": {},
                      "projected_answer_wait_seconds": None, "projected_abandon_ratio": None}
        out["models"][model] = view
        if not known:
            continue
        required, projected, asa, abandon = _model_numbers(inputs.rate, inputs.aht, patience, staffed,
                                                           tuple(targets.items()))
        view["required"] = dict(required)
        view["gap"] = {threshold: n - staffed for threshold, n in required}
        view["projected_service_level"] = dict(projected)
        view["projected_answer_wait_seconds"], view["projected_abandon_ratio"] = asa, abandon
    out["agents_short"], out["agents_short_model"] = agents_short(out["models"])
    return out


@lru_cache(maxsize=4096)
def _model_numbers(rate: float, aht: float, patience: float | None, staffed: int,
                   targets: tuple[tuple[str, float], ...]) -> tuple:
    """(required per threshold, projected SL per threshold, projected ASA, projected abandon
    share) for one model: cached, because every scrape and wallboard poll reads every queue, and
    a queue's inputs only change when a call enters or leaves its windows."""
    required = []
    for threshold, target in targets:
        if 0 < target < 1:
            try:
                required.append((threshold, agents_required(rate, aht, float(threshold), target, patience=patience).agents))
            except NoStaffing:  # no count of agents meets it (not reached for finite inputs): left out
                pass
    if not targets or not (staffed >= 1 and (patience is not None or staffed > rate * aht)):
        return tuple(required), (), None, None
    projections = [(threshold, erlang_a(rate, aht, staffed, float(threshold), patience)) for threshold, _ in targets]
    last = projections[-1][1]
    return (tuple(required), tuple((t, p.service_level) for t, p in projections),
            last.average_wait_seconds, last.abandon_probability)


def agents_short(models: dict) -> tuple[int | None, str | None]:
    """Agents the queue is short of now, and by which model: the largest gap over its thresholds
    (the binding target), by Erlang A when its patience is known (callers who hang up are part
    of the load it models), else by Erlang C. Negative: a surplus. (None, None) while unknown."""
    for model in ("erlang_a", "erlang_c"):
        gaps = models[model]["gap"].values()
        if gaps:
            return max(gaps), model
    return None, None


# A run of understaffing is only as continuous as the reads that saw it: after a longer gap
# between reads (a worker down, nobody scraping) it starts again.
MAX_READ_GAP_SECONDS = 300.0


def understaffed_since(since: float | None, short: int | None, limit: float, now: float, *,
                       is_open: bool = True, last_read: float | None = None) -> float | None:
    """When the current run of being short of at least `limit` agents, while open, began: kept
    while it lasts, `now` when it starts (or restarts after a gap between reads of more than
    MAX_READ_GAP_SECONDS), None when it ends, the queue is closed, the staffing is unknown or the
    alert is off (0). A clock behind the start keeps it (the duration then reads 0)."""
    if limit <= 0 or short is None or short < limit or not is_open:
        return None
    if since is None or (last_read is not None and now - last_read > MAX_READ_GAP_SECONDS):
        return now
    return since
