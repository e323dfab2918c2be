"""Benchmark the history importers and a replay of real history; prints figures, asserts nothing.

1. Importer: mapping february1999.tsv (33,344 Anonymous Bank records) and the queue_log samples
   to canonical events, in memory (records/s, events/s).
2. Replay: publishing the February events into the embedded broker (`callpulse replay`'s
   producer), no worker (events/s).
3. End to end: a fresh worker and topics, `callpulse replay february1999.tsv` as a process, until
   the worker has applied every call and published the 6-minute interval records of the month.

Every figure is the median of --repeat runs (the machines are noisy).
Usage: python bench/replay_benchmark.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "streams"), str(ROOT / "bench")]

from benchmark import LOGS, pipeline_env, start_worker  # noqa: E402

from callpulse.config import load_config  # noqa: E402
from callpulse.pipeline.publish import publish  # noqa: E402
from callpulse.sources import call_records, queue_log  # noqa: E402
from callpulse.tools.broker import EmbeddedBroker  # noqa: E402
from callpulse.tools.report import read_records  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
FEBRUARY = DATA / "anonymous_bank" / "february1999.tsv"
BANK_CONFIG = ROOT / "tests" / "e2e" / "bank.toml"


def median_of(runs: int, measure) -> float:
    return statistics.median(measure() for _ in range(runs))


def importer_figures(repeat: int) -> None:
    def bank() -> float:
        t = time.perf_counter()
        events, _ = call_records.import_events(FEBRUARY, call_records.AnonymousBank())
        return time.perf_counter() - t

    events, _ = call_records.import_events(FEBRUARY, call_records.AnonymousBank())
    seconds = median_of(repeat, bank)
    print(f"anonymous bank importer: {seconds:.2f} s for 33,344 records / {len(events):,} events: "
          f"{33344 / seconds:,.0f} records/s, {len(events) / seconds:,.0f} events/s")

    paths = sorted((DATA / "queue_log").iterdir())
    lines = sum(len(p.read_bytes().splitlines()) for p in paths)

    def asterisk() -> float:
        t = time.perf_counter()
        for _ in range(20):
            for p in paths:
                for _ in queue_log.read_file(p, "bench"):
                    pass
        return (time.perf_counter() - t) / 20

    seconds = median_of(repeat, asterisk)
    print(f"queue_log importer: {lines:,} lines in {seconds * 1000:.1f} ms: {lines / seconds:,.0f} lines/s")


def publish_figures(broker: EmbeddedBroker, repeat: int) -> None:
    events, _ = call_records.import_events(FEBRUARY, call_records.AnonymousBank())
    rates = []
    for run in range(repeat):
        config = load_config(None, pipeline_env(broker, f"pub{run}"))
        t = time.perf_counter()
        sent = asyncio.run(publish(config, events))
        rates.append(sent / (time.perf_counter() - t))
    print(f"replay into the embedded broker (no worker): {statistics.median(rates):,.0f} events/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")


def end_to_end(broker: EmbeddedBroker, repeat: int) -> None:
    times = []
    for run in range(repeat):
        env = pipeline_env(broker, f"e2e{run}", CALLPULSE_CONFIG=str(BANK_CONFIG))
        config = load_config(None, env)
        proc, url = start_worker(env, LOGS / f"e2e{run}-worker.log")
        try:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "callpulse", "replay", str(FEBRUARY)], env=env,
                           check=True, capture_output=True)
            published = time.perf_counter() - t
            # done when the last 6-minute interval of February with calls (Feb 28, 23:48 local,
            # queue PS) is out: by then every earlier interval of every queue has closed
            while True:
                records = asyncio.run(read_records(config))
                if any(r["queue"] == "PS" and r["start"] == "1999-02-28T23:42:00+02:00" for r in records):
                    break
                time.sleep(1.0)
            total = time.perf_counter() - t
            times.append(total)
            print(f"  run {run + 1}: published in {published:.1f} s, interval records out after {total:.1f} s "
                  f"({len(records):,} records)", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"end to end, February 1999 through one worker: median {statistics.median(times):.1f} s "
          f"({155498 / statistics.median(times):,.0f} events/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    LOGS.mkdir(parents=True, exist_ok=True)
    importer_figures(args.repeat)
    with EmbeddedBroker(log_path=LOGS / "replay-broker.log") as broker:
        publish_figures(broker, args.repeat)
        end_to_end(broker, args.repeat)


if __name__ == "__main__":
    main()
