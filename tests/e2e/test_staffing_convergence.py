"""End to end: the exported agents-required gauges converge to the Erlang answer for the true inputs.

The simulator's `steady` scenario runs one queue as the textbook M/M/c+M system with known inputs
(Poisson arrivals at CALLS_PER_HOUR, exponential handle times of mean AHT, talk + wrap-up, AGENTS
agents always logged in and ready, exponential patience of mean PATIENCE). An hour of it is sent at
once (so the 15m rate window and the 1h AHT and patience windows are full), then it runs live; the
worker's /metrics is scraped every second.

What the worker can know is an estimate: the rate from the calls offered in 15 minutes, the AHT and
the patience from the handled calls and the abandons of the last hour. Tolerances, in standard
deviations of those estimates (K = 3 of them):
- rate: offered calls in 15 minutes are Poisson with mean n = 900 * RATE: relative sd 1/sqrt(n);
- AHT: the mean of the n handled calls' exponential handle times: relative sd 1/sqrt(n);
- patience: the maximum-likelihood estimate (seconds waited / abandons) has a relative sd of
  1/sqrt(n) given its n abandons (its score is a martingale, however congestion clusters them).
The tolerance of the agents-required gauges follows: Erlang's answer is nondecreasing in each input,
so the answers for inputs within K sd of the true ones are those at the corners of that box (the
band). Time is compressed (handle times of seconds, not minutes) so that 15 minutes hold enough
calls for the band to be the true answer +-1 agent: no choice of inputs makes it exact at 3 sd
(for a realistic queue the rate estimate of a 15-minute window alone moves the answer by +-2).
The formula is checked exactly on every scrape: the gauge equals Erlang's answer for the exported
inputs, and the true answers are cross-checked against the simulator's own, independent, Erlang A
implementation (simulator.erlang_a_service_level).

Seed: the run is deterministic (steady traffic does not depend on the start time); seed 8's
estimates lie within 1 sd of the true inputs, so its gauges show the exact answer. Over 80 seeds the
largest deviations were 2.8 sd (rate), 2.1 (AHT) and 3.0 (patience): another seed, or a change to
the simulator's random draws, fails these 3-sd checks about once in a hundred.
"""

from __future__ import annotations

import itertools
import math
import statistics
import subprocess
import sys
import time

import pytest

from callpulse.kpi.erlang import agents_required, erlang_a
from callpulse.tools import simulator
from harness import LOGS, value, wait_for

pytestmark = pytest.mark.e2e

QUEUE = "support"  # the steady scenario's queue
CALLS_PER_HOUR, AHT, AGENTS, PATIENCE = 5040.0, 6.0, 9, 12.0
RATE = CALLS_PER_HOUR / 3600.0  # 1.4 calls/s, offered load 8.4 Erlangs
BACKFILL, SCRAPES = 3600, 30  # an hour sent at once, then 30 scrapes a second apart, live
SEED = 8
K = 3.0  # tolerance in standard deviations
MODELS = {"erlang_c": None, "erlang_a": PATIENCE}


def required(rate: float, aht: float, threshold: float, target: float, patience: float | None) -> int:
    return agents_required(rate, aht, threshold, target, patience=patience).agents


def expected_sigmas() -> dict[str, float]:
    """Relative sd of the worker's estimates from the expected numbers of calls behind them."""
    abandon = erlang_a(RATE, AHT, AGENTS, 20.0, PATIENCE).abandon_probability  # the same at any threshold
    return {"rate": 1 / math.sqrt(900 * RATE),  # offered in the 15m window
            "aht": 1 / math.sqrt(3600 * RATE * (1 - abandon)),  # handled in the 1h window
            "patience": 1 / math.sqrt(3600 * RATE * abandon)}  # abandoned in the 1h window


def sigmas(scraped: dict) -> dict[str, float]:
    """Relative sd of one scrape's estimates: the rate's from its known Poisson mean, the AHT's and
    the patience's from the numbers of handled and abandoned calls behind them."""
    return {"rate": 1 / math.sqrt(900 * RATE), "aht": 1 / math.sqrt(scraped["handled_1h"]),
            "patience": 1 / math.sqrt(scraped["abandoned_1h"])}


def band(threshold: float, target: float, patience: float | None, sigma: dict[str, float]) -> tuple[int, int]:
    """Fewest and most agents Erlang requires for inputs within K sd of the true ones (at the box's
    corners: required is nondecreasing in the rate, the AHT and the patience)."""
    answers = [required(RATE * (1 + r * K * sigma["rate"]), AHT * (1 + a * K * sigma["aht"]), threshold, target,
                        None if patience is None else patience * (1 + p * K * sigma["patience"]))
               for r, a, p in itertools.product((-1, 1), repeat=3)]
    return min(answers), max(answers)


def fewest_agents_by_the_simulator(threshold: float, target: float, patience: float | None) -> int:
    """The same question answered by the simulator's planner formula, an independent implementation."""
    n = 1
    while simulator.erlang_a_service_level(n, RATE, AHT, math.inf if patience is None else patience,
                                           threshold) < target:
        n += 1
    return n


def scrape(worker, thresholds: list[str]) -> dict:
    s = worker.samples()
    got = {"at": time.time(),
           "last_event": value(s, "callcenter_last_event_timestamp_seconds", queue=QUEUE),
           "rate": value(s, "callcenter_staffing_arrivals_per_second", queue=QUEUE),
           "aht": value(s, "callcenter_staffing_handle_seconds", queue=QUEUE),
           "patience": value(s, "callcenter_staffing_patience_seconds", queue=QUEUE),
           "staffed": value(s, "callcenter_agents_staffed", queue=QUEUE),
           "offered_15m": value(s, "callcenter_window_calls", queue=QUEUE, window="15m", outcome="offered"),
           "handled_1h": value(s, "callcenter_window_calls", queue=QUEUE, window="1h", outcome="handled"),
           "abandoned_1h": value(s, "callcenter_window_calls", queue=QUEUE, window="1h", outcome="abandoned"),
           "short": value(s, "callcenter_agents_short", queue=QUEUE),
           "understaffed_seconds": value(s, "callcenter_understaffed_seconds", queue=QUEUE),
           "understaffed_limit": value(s, "callcenter_understaffed_limit_agents", queue=QUEUE),
           "required": {}, "gap": {}}
    for model in MODELS:
        for t in thresholds:
            got["required"][model, t] = value(s, "callcenter_agents_required", queue=QUEUE, model=model, threshold=t)
            got["gap"][model, t] = value(s, "callcenter_agents_required_gap", queue=QUEUE, model=model, threshold=t)
    return got


def test_agents_required_converges_to_the_erlang_answer(pipeline):
    config = pipeline.config.queue(QUEUE)
    targets = {f"{t:g}": config.target_for(t) for t in config.thresholds_seconds}
    truth = {(model, t): required(RATE, AHT, float(t), target, patience)
             for model, patience in MODELS.items() for t, target in targets.items()}

    def bands(sigma: dict[str, float]) -> dict[tuple[str, str], tuple[int, int]]:
        return {(model, t): band(float(t), target, patience, sigma)
                for model, patience in MODELS.items() for t, target in targets.items()}

    # The expected answers are Erlang's (two implementations agree), and the chosen inputs keep the
    # statistical band within one agent of them.
    for (model, t), n in truth.items():
        assert n == fewest_agents_by_the_simulator(float(t), targets[t], MODELS[model]), (model, t)
        lo, hi = bands(expected_sigmas())[model, t]
        assert n - 1 <= lo <= n <= hi <= n + 1, (model, t, n, lo, hi)
    assert len(set(truth.values())) > 2, "the models and thresholds should not all give the same answer"

    worker = pipeline.start_worker()
    started = time.monotonic()
    simulator_log = LOGS / f"{pipeline.name}-simulator.log"
    traffic = subprocess.Popen(
        [sys.executable, "-m", "callpulse", "simulate", "--scenario", "steady", "--seed", str(SEED),
         "--backfill", str(BACKFILL), "--duration", str(BACKFILL + 600),
         "--calls-per-hour", str(CALLS_PER_HOUR), "--aht", str(AHT), "--agents", str(AGENTS),
         "--patience", str(PATIENCE)],
        env=pipeline.env, stdout=open(simulator_log, "ab"), stderr=subprocess.STDOUT)
    history = []
    try:
        def caught_up():
            got = scrape(worker, list(targets))
            history.append(got)
            return (got["last_event"] is not None and got["last_event"] > time.time() - 5
                    and got["rate"] is not None and got["aht"] is not None and got)

        wait_for(caught_up, timeout=120, interval=1.0, message=f"the worker to fold the backfill (see {simulator_log})")
        caught_up_after = time.monotonic() - started
        settled = []
        for _ in range(SCRAPES):
            time.sleep(1.0)
            settled.append(scrape(worker, list(targets)))
        assert traffic.poll() is None, f"the simulator stopped early, see {simulator_log}"
    finally:
        traffic.terminate()
        traffic.wait(10)

    for s in settled:  # every input known (erlang_a needs the patience: 5 abandons in the hour)
        assert None not in (s["rate"], s["aht"], s["patience"], *s["required"].values(), *s["gap"].values()), s
    # The figures, for the CI log.
    last = settled[-1]
    sigma = sigmas(last)
    print(f"\ntrue inputs: {RATE:.4f} calls/s ({CALLS_PER_HOUR:g}/h), AHT {AHT:g} s, patience {PATIENCE:g} s, "
          f"{AGENTS} agents (load {RATE * AHT:.2f} Erlangs); seed {SEED}; caught up {caught_up_after:.0f} s after "
          f"the worker started")
    print(f"estimated (last scrape): rate {last['rate']:.4f} calls/s ({last['rate'] / RATE - 1:+.1%}, "
          f"tolerance {K * sigma['rate']:.1%}), AHT {last['aht']:.3f} s ({last['aht'] / AHT - 1:+.1%}, tolerance "
          f"{K * sigma['aht']:.1%} from {last['handled_1h']:g} handled), patience {last['patience']:.2f} s "
          f"({last['patience'] / PATIENCE - 1:+.1%}, tolerance {K * sigma['patience']:.1%} from "
          f"{last['abandoned_1h']:g} abandons), staffed {last['staffed']:g}, agents short {last['short']:+g}")
    last_bands = bands(sigma)
    for key, n in sorted(truth.items()):
        series = [s["required"][key] for s in settled]
        catching_up = [int(s["required"][key]) for s in history if s["required"][key] is not None]
        print(f"{key[0]} at {key[1]} s: Erlang answer for the true inputs {n} (band {last_bands[key][0]}-"
              f"{last_bands[key][1]}); exported: median of the last {SCRAPES} scrapes {statistics.median(series):g}, "
              f"{sum(v == n for v in series)}/{SCRAPES} equal to the answer, gap {last['gap'][key]:+g}; "
              f"while catching up: {catching_up[-8:]}")

    for s in settled:
        sigma = sigmas(s)
        assert s["staffed"] == AGENTS, s
        assert abs(s["rate"] / RATE - 1) <= K * sigma["rate"], s
        assert abs(s["aht"] / AHT - 1) <= K * sigma["aht"], s
        assert abs(s["patience"] / PATIENCE - 1) <= K * sigma["patience"], s
        assert s["rate"] == pytest.approx(s["offered_15m"] / 900), "rate = offered in 15m / 900 s"
        band_now = bands(sigma)
        for (model, t), n in s["required"].items():
            patience = None if model == "erlang_c" else s["patience"]
            # exactly Erlang's answer for the exported inputs, and within the band of the true ones
            assert n == required(s["rate"], s["aht"], float(t), targets[t], patience), (model, t, s)
            assert band_now[model, t][0] <= n <= band_now[model, t][1], (model, t, band_now[model, t], s)
            assert s["gap"][model, t] == n - AGENTS, (model, t, s)
        # the understaffed alert's input: the largest gap over the thresholds, by Erlang A (patience known)
        assert s["short"] == max(s["gap"]["erlang_a", t] for t in targets), s
        if s["understaffed_limit"] is not None and s["short"] < s["understaffed_limit"]:
            assert s["understaffed_seconds"] == 0, s
    # Converged: over the last scrapes the gauge has settled (it moves by at most one agent: in 30 s
    # the 15m window exchanges about 42 of its 1,260 calls, which moves the rate estimate by a
    # quarter of its sd) at the Erlang answer for the true inputs, within the band.
    for key in truth:
        series = [s["required"][key] for s in settled]
        assert max(series) - min(series) <= 1, (key, series)
        assert last_bands[key][0] <= statistics.median(series) <= last_bands[key][1], (key, series, truth[key])
