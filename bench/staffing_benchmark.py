"""Benchmark the staffing math and what it adds to a scrape; prints figures, asserts nothing.

1. erlang.agents_required (Erlang C and Erlang A) at offered loads from 2 to 1,600 Erlangs.
2. staffing.staffing_view for one queue (two thresholds, both models): the work a read adds.
3. A whole scrape (read_all + the Prometheus text) of a worker holding --queues queues, each with
   an hour of traffic and a 96-interval forecast, with and without the staffing and forecast parts.

Every figure is the median of --repeat runs (the machines are noisy).
Usage: python bench/staffing_benchmark.py [--repeat 5] [--queues 1000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "streams")]

import orjson  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from callpulse.config import load_config  # noqa: E402
from callpulse.events import format_time  # noqa: E402
from callpulse.export.metrics import PipelineHealth, QueueCollector  # noqa: E402
from callpulse.kpi import model as model_module  # noqa: E402
from callpulse.kpi.erlang import agents_required  # noqa: E402
from callpulse.kpi.staffing import _model_numbers, staffing_view  # noqa: E402
from callpulse.pipeline import state as state_module  # noqa: E402
from callpulse.pipeline.state import QueueStates, StreamClock  # noqa: E402

LOADS = (2.0, 18.0, 100.0, 360.0, 1600.0)  # Erlangs
AHT, PATIENCE = 180.0, 120.0


def median_seconds(fn, repeat: int, inner: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter() - start) / inner)
    return statistics.median(runs)


def windows_for(erlangs: float) -> dict:
    """Read()-shaped windows at this load: 15m and 1h counts of a queue at AHT 180 s."""
    rate = erlangs / AHT
    handled = rate * 3600
    abandoned = max(5.0, 0.05 * handled)
    return {
        "15m": {"offered": rate * 900, "handled": rate * 900, "abandoned": abandoned / 4, "seconds": {}},
        "1h": {"offered": rate * 3600, "handled": handled, "abandoned": abandoned,
               "seconds": {"talk_seconds": handled * 150, "hold_seconds": handled * 10, "wrapup_seconds": handled * 20,
                           "answer_wait_seconds": handled * 15, "abandon_wait_seconds": abandoned * 40}},
    }


def bench_erlang(repeat: int) -> None:
    print("1. agents_required (target 80 % in 20 s), median per call")
    for erlangs in LOADS:
        rate = erlangs / AHT
        c = median_seconds(lambda rate=rate: agents_required(rate, AHT, 20, 0.8), repeat, 50)
        a = median_seconds(lambda rate=rate: agents_required(rate, AHT, 20, 0.8, patience=PATIENCE), repeat, 50)
        n = agents_required(rate, AHT, 20, 0.8).agents
        print(f"   {erlangs:7.0f} Erlangs ({n:5d} agents): Erlang C {c * 1e6:8.1f} µs, Erlang A {a * 1e6:8.1f} µs")


def bench_view(repeat: int) -> None:
    print("2. staffing_view per queue (thresholds 10 s and 20 s, both models), median per call")
    for erlangs in LOADS:
        windows = windows_for(erlangs)
        staffed = round(erlangs) + 2
        agents = {"available": 2, "on_call": staffed - 2, "wrap_up": 0}
        t = median_seconds(lambda windows=windows, agents=agents: (_model_numbers.cache_clear(), staffing_view(windows, agents, {"10": 0.7, "20": 0.8})),
                           repeat, 20)  # not from the cache: new inputs every time
        print(f"   {erlangs:7.0f} Erlangs: {t * 1e3:6.2f} ms; 1,000 such queues: {t * 1e3:6.2f} s per evaluation")


def loaded_states(queues: int, forecast_path: str | None, now: float) -> QueueStates:
    env = {"CALLPULSE_FORECAST_FILE": forecast_path} if forecast_path else {}
    states = QueueStates(load_config(None, env), clock=StreamClock(wall=lambda: now), wall=lambda: now)
    rng = random.Random(1)
    for q in range(queues):
        name = f"q{q:04d}"
        events, t, n = [], now - 3600, 0
        rate = rng.choice((0.02, 0.05, 0.1, 0.2))  # 72 to 720 calls an hour: 3.6 to 36 Erlangs
        for a in range(5):
            events.append({"schema_version": 1, "event_id": f"{name}-ag{a}", "type": "agent.state_changed",
                           "time": format_time(now - 3601), "source": "bench", "agent_id": f"{name}-ag{a}",
                           "state": "available", "queues": [name]})
        while t < now:
            t += rng.expovariate(rate)
            n += 1
            cid = f"{name}-{n}"
            outcome = "call.abandoned" if rng.random() < 0.1 else "call.answered"
            wait = rng.expovariate(1 / 20)
            base = {"schema_version": 1, "source": "bench", "queue": name, "call_id": cid}
            events.append({**base, "event_id": cid + "o", "type": "call.offered", "time": format_time(t)})
            end = {**base, "event_id": cid + "w", "type": outcome, "time": format_time(t + wait)}
            if outcome == "call.answered":
                end["agent_id"] = f"{name}-ag0"
                events.append(end)
                events.append({**base, "event_id": cid + "e", "type": "call.ended", "agent_id": f"{name}-ag0",
                               "time": format_time(t + wait + rng.expovariate(1 / AHT))})
            else:
                events.append(end)
        events = sorted((e for e in events if e["time"] <= format_time(now)), key=lambda e: e["time"])  # live at `now`
        states.apply_batch(name, 0, 0, [orjson.dumps(e) for e in events])
    return states


def write_forecast(path: Path, queues: int, now: float) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    rows = ["queue,date,interval_start,offered,aht_seconds,planned_agents"]
    for q in range(queues):
        rows += [f"q{q:04d},{day},{m // 60:02d}:{m % 60:02d},20,180,5" for m in range(0, 1440, 15)]
    path.write_text("\n".join(rows) + "\n")


def scrape_seconds(states: QueueStates, repeat: int, cold: bool = True) -> float:
    """One scrape; cold: every queue's staffing computed anew (its inputs changed), as in a busy
    center; else from the cache (inputs unchanged since the last read)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(states, PipelineHealth(["call.offered"])))
    return median_seconds(lambda: (cold and _model_numbers.cache_clear(), generate_latest(registry)), repeat, 1)


def bench_scrape(repeat: int, queues: int) -> None:
    now = (time.time() // 86400) * 86400 + 15 * 3600  # 15:00 UTC today, inside the forecast day
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forecast.csv"
        write_forecast(path, queues, now)
        states = loaded_states(queues, str(path), now)
        views = states.read_all()[1].values()
        known = sum(1 for v in views if v["staffing"]["models"]["erlang_a"]["required"])
        with_forecast = sum(1 for v in views if v["forecast"] is not None)
        full = scrape_seconds(states, repeat)
        cached = scrape_seconds(states, repeat, cold=False)
        with mock.patch.object(model_module, "staffing_view", lambda *a: {
                "inputs": {"arrivals_per_second": None, "handle_seconds": None, "patience_seconds": None},
                "staffed": 0, "models": {}, "agents_short": None, "agents_short_model": None}):
            no_staffing = scrape_seconds(states, repeat)
        with mock.patch.object(state_module, "compare", lambda *a: None):
            no_forecast = scrape_seconds(states, repeat)
    print(f"3. one scrape of {queues:,} queues (read_all + exposition), median of {repeat}; "
          f"{known:,} with both models known, {with_forecast:,} with a forecast")
    print(f"   everything: {full:.2f} s (staffing from the cache: {cached:.2f} s); without staffing: {no_staffing:.2f} s; "
          f"without forecast: {no_forecast:.2f} s")
    print(f"   staffing adds {(full - no_staffing) / queues * 1e3:.2f} ms per queue, "
          f"forecast {(full - no_forecast) / queues * 1e3:.2f} ms per queue")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--queues", type=int, default=1000)
    args = parser.parse_args()
    bench_erlang(args.repeat)
    bench_view(args.repeat)
    bench_scrape(args.repeat, args.queues)


if __name__ == "__main__":
    main()
