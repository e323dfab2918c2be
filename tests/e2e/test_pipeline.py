"""End to end: real broker, real worker processes, scraped /metrics against hand-computed values."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from harness import value, wait_for
from helpers import call, event, require_tool

pytestmark = pytest.mark.e2e


def scripted(base: float) -> list[dict]:
    """Seven calls in queue 'sales' with known waits (the same as tests/test_model.py)."""
    evs = []
    evs += call("sales", "c1", base + 0, "answered", base + 8)     # wait 8
    evs += call("sales", "c2", base + 1, "answered", base + 16)    # wait 15
    evs += call("sales", "c3", base + 2, "abandoned", base + 5)    # wait 3: short abandon
    evs += call("sales", "c4", base + 3, "abandoned", base + 33)   # wait 30
    evs += call("sales", "c5", base + 4, "flowed_out", base + 64)  # wait 60
    evs += call("sales", "c6", base + 5, "answered", base + 30)    # wait 25
    evs.append(event("call.offered", base + 40, queue="sales", call_id="c7"))  # still waiting
    return sorted(evs, key=lambda e: e["time"])


def test_scripted_scenario_scrapes_hand_computed_values(pipeline):
    worker = pipeline.start_worker()
    base = time.time() - 100
    pipeline.produce(scripted(base))
    s = wait_for(lambda: (s := worker.samples()) and value(s, "callcenter_calls_offered_total", queue="sales") == 7 and s,
                 message="7 offered calls in sales")
    assert value(s, "callcenter_calls_answered_total", queue="sales") == 3
    assert value(s, "callcenter_calls_abandoned_total", queue="sales") == 2
    assert value(s, "callcenter_calls_short_abandoned_total", queue="sales") == 1
    assert value(s, "callcenter_calls_flowed_out_total", queue="sales", reason="timeout") == 1
    assert value(s, "callcenter_calls_answered_within_threshold_total", queue="sales", threshold="10") == 1
    assert value(s, "callcenter_calls_answered_within_threshold_total", queue="sales", threshold="20") == 2
    assert value(s, "callcenter_answer_wait_seconds_bucket", queue="sales", le="10") == 1
    assert value(s, "callcenter_answer_wait_seconds_bucket", queue="sales", le="20") == 2
    assert value(s, "callcenter_answer_wait_seconds_sum", queue="sales") == pytest.approx(48)
    # SL-C (default): A<=T / (A + Ab - Ab<=5) = 1/4 at 10 s, 2/4 at 20 s
    assert value(s, "callcenter_service_level_ratio", queue="sales", window="5m", threshold="10") == pytest.approx(0.25)
    assert value(s, "callcenter_service_level_ratio", queue="sales", window="5m", threshold="20") == pytest.approx(0.5)
    assert value(s, "callcenter_average_answer_wait_seconds", queue="sales", window="5m") == pytest.approx(16)
    assert value(s, "callcenter_average_abandon_wait_seconds", queue="sales", window="5m") == pytest.approx(16.5)
    assert value(s, "callcenter_abandon_rate_ratio", queue="sales", window="5m") == pytest.approx(2 / 7)
    assert value(s, "callcenter_window_calls", queue="sales", window="15m", outcome="offered") == 7
    assert value(s, "callcenter_window_calls_within_threshold", queue="sales", window="15m", threshold="20", outcome="abandoned") == 1
    # live: c7 waits since base+40; the stream clock started at the newest event (base+64)
    assert value(s, "callcenter_calls_waiting", queue="sales") == 1
    oldest = value(s, "callcenter_oldest_call_wait_seconds", queue="sales")
    assert 24 <= oldest < 24 + 60
    assert value(s, "callcenter_calls_waiting_over_threshold", queue="sales", threshold="20") == 1
    assert value(s, "callcenter_events_total", type="call.offered") == 7
    assert value(s, "callcenter_last_event_timestamp_seconds", queue="sales") == pytest.approx(base + 64, abs=0.01)
    # the JSON snapshot says the same
    snapshot = orjson.loads(worker.get("/api/queues"))
    assert snapshot["queues"]["sales"]["windows"]["5m"]["service_level"] == {"10": 0.25, "20": 0.5}


def test_promtool_accepts_the_metrics_page(pipeline, tmp_path):
    promtool = require_tool("promtool", "the Debian package prometheus (`make tools` installs it)")
    worker = pipeline.start_worker()
    pipeline.produce(scripted(time.time() - 100))
    wait_for(lambda: value(worker.samples(), "callcenter_calls_offered_total", queue="sales") == 7)
    text = worker.metrics_text()
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_duplicates_count_once_and_out_of_order_events_land_right(pipeline):
    worker = pipeline.start_worker()
    base = time.time() - 100
    first = scripted(base)
    pipeline.produce(first)
    wait_for(lambda: value(worker.samples(), "callcenter_calls_offered_total", queue="sales") == 7)
    # the same events again (a producer retry / a replayed file), and an answer before its offer
    offered, answered = call("sales", "late1", base + 50, "answered", base + 59)  # wait 9
    pipeline.produce(first + [answered, offered])
    # Every resent event is recognised by its event_id, also those older than the lateness (60 s
    # behind the newest event): ids are remembered for dedup_seconds (600 s).
    # A copy is counted per queue and, for an event naming an agent, once more for its agent's shard.
    copies = len(first) + sum(1 for e in first if "agent_id" in e)
    wait_for(lambda: (s := worker.samples()) and value(s, "callcenter_events_duplicate_total") == copies
             and value(s, "callcenter_calls_answered_total", queue="sales") == 4,
             message="resent events seen as duplicates, and the late call answered")
    time.sleep(1)
    s = worker.samples()
    assert len(first) == 13 and value(s, "callcenter_events_duplicate_total") == copies
    assert value(s, "callcenter_events_rejected_total", reason="too_late") == 0
    assert value(s, "callcenter_calls_offered_total", queue="sales") == 8
    assert value(s, "callcenter_calls_answered_total", queue="sales") == 4
    assert value(s, "callcenter_calls_answered_within_threshold_total", queue="sales", threshold="10") == 2
    assert value(s, "callcenter_events_late_total") >= 1


def test_invalid_events_go_to_the_dead_letter_topic(pipeline):
    worker = pipeline.start_worker()
    now = time.time()
    good = event("call.offered", now - 5, queue="q1", call_id="ok")
    bad = [
        b"{not json",
        b"[1, 2, 3]",
        orjson.dumps(event("call.teleported", now, queue="q1", call_id="x")),
        orjson.dumps({k: v for k, v in event("call.offered", now, call_id="x").items()}),  # no queue
        orjson.dumps(event("call.offered", now + 3600, queue="q1", call_id="future")),
    ]
    pipeline.produce([orjson.dumps(good)] + bad, raw=True)
    # an event much older than the queue's newest one: too late to place
    wait_for(lambda: value(worker.samples(), "callcenter_calls_offered_total", queue="q1") == 1)
    too_late = orjson.dumps(event("call.offered", now - 5 - 600, queue="q1", call_id="old"))
    pipeline.produce([too_late], raw=True)
    letters = pipeline.dead_letters(expected=6)
    by_original = {letter.get("original"): letter for letter in letters}
    expected = {
        b"{not json": "malformed_json", b"[1, 2, 3]": "not_an_object", bad[2]: "unknown_type",
        bad[3]: "schema_violation", bad[4]: "future_time", too_late: "too_late",
    }
    for original, reason in expected.items():
        letter = by_original[original.decode()]
        assert letter["reason"] == reason
        assert letter["detail"] and letter["rejected_at"]
    s = wait_for(lambda: (s := worker.samples()) and value(s, "callcenter_events_rejected_total", reason="too_late") == 1 and s)
    for reason in ("malformed_json", "not_an_object", "unknown_type", "schema_violation", "future_time"):
        assert value(s, "callcenter_events_rejected_total", reason=reason) == 1
    assert value(s, "callcenter_calls_offered_total", queue="q1") == 1


def traffic(queues: list[str], calls_per_queue: int, base: float, tag: str, spacing: float = 0.5) -> tuple[list[dict], dict]:
    """Deterministic calls in several queues, one every `spacing` seconds per queue; returns events
    and the expected totals per queue."""
    events, expected = [], {}
    for qi, queue in enumerate(queues):
        answered = abandoned = within20 = 0
        for j in range(calls_per_queue):
            wait = (j * 7 + qi) % 40
            outcome = "abandoned" if j % 5 == 0 else "answered"
            events += call(queue, f"{tag}-{queue}-{j}", base + j * spacing, outcome, base + j * spacing + wait)
            if outcome == "answered":
                answered += 1
                within20 += wait <= 20
            else:
                abandoned += 1
        expected[queue] = {"offered": calls_per_queue, "answered": answered, "abandoned": abandoned, "within20": within20}
    return sorted(events, key=lambda e: e["time"]), expected


def totals(samples: dict, queue: str) -> dict:
    return {
        "offered": value(samples, "callcenter_calls_offered_total", queue=queue),
        "answered": value(samples, "callcenter_calls_answered_total", queue=queue),
        "abandoned": value(samples, "callcenter_calls_abandoned_total", queue=queue),
        "within20": value(samples, "callcenter_calls_answered_within_threshold_total", queue=queue, threshold="20"),
    }


def test_replay_of_hours_of_history_rejects_nothing_at_the_default_lateness(pipeline):
    """Two hours of history sent before the worker starts, every queue's events spread over all four
    input partitions: the first stage reads them at uneven speeds, and only its event-time alignment
    of the partitions keeps each queue's events within the 60 s lateness of each other."""
    queues = [f"r{i}" for i in range(4)]
    events, expected = traffic(queues, 1500, time.time() - 7300, "r", spacing=4.8)
    pipeline.produce(events)  # keyed by sequence number: spread over every partition
    worker = pipeline.start_worker()
    s = wait_for(lambda: (s := worker.samples()) and all(totals(s, q) == expected[q] for q in queues) and s,
                 timeout=120, message="exact totals after the replay")
    assert value(s, "callcenter_events_rejected_total", reason="too_late") == 0
    assert value(s, "callcenter_events_rejected_total", reason="unmatched_outcome") == 0


def test_sigkill_and_restart_loses_nothing_and_counts_nothing_twice(pipeline):
    queues = [f"q{i}" for i in range(6)]
    events, expected = traffic(queues, 300, time.time() - 400, "k")
    worker = pipeline.start_worker()
    half = len(events) // 2
    pipeline.produce(events[:half])
    wait_for(lambda: sum((value(worker.samples(), "callcenter_calls_offered_total", queue=q) or 0) for q in queues) > 0)
    worker.kill(signal.SIGKILL)  # mid-stream: some batches applied, offsets not yet committed
    pipeline.produce(events[half:])
    restarted = pipeline.start_worker()
    wait_for(lambda: (s := restarted.samples()) and all(totals(s, q) == expected[q] for q in queues) and s,
             timeout=90, message="exact totals after the restart")
    time.sleep(3)  # and they stay exact (no late double counting)
    s = restarted.samples()
    assert {q: totals(s, q) for q in queues} == expected


def test_two_workers_share_queues_and_one_takes_over(pipeline):
    queues = [f"queue-{i}" for i in range(8)]
    # an hour of history: the two workers' first stages read it at their own speeds, and agree on
    # how far to go through the progress topic (at the default 60 s lateness)
    events, expected = traffic(queues, 150, time.time() - 3700, "g", spacing=24)
    first = pipeline.start_worker()
    second = pipeline.start_worker()
    pipeline.produce(events)

    def split_and_counted():
        a, b = first.queues(), second.queues()
        if not (a and b and not (a & b) and (a | b) == set(queues)):
            return False
        sa, sb = first.samples(), second.samples()
        return all(totals(sa, q) == expected[q] for q in a) and all(totals(sb, q) == expected[q] for q in b)

    wait_for(split_and_counted, timeout=90, message="each queue exported by exactly one worker, with exact totals")
    second.kill(signal.SIGTERM)
    try:
        wait_for(lambda: (s := first.samples()) and all(totals(s, q) == expected[q] for q in queues) and s,
                 timeout=90, message="the survivor exports every queue with the right values")
    except AssertionError:
        s = first.samples()
        wrong = {q: (totals(s, q), expected[q]) for q in queues if totals(s, q) != expected[q]}
        rejected = {k[1]: v for k, v in s.items() if k[0] == "callcenter_events_rejected_total" and v}
        changelog = {q: pipeline.changelog_summary(q) for q in wrong}
        raise AssertionError(f"survivor's wrong totals (got, expected): {wrong}; rejected: {rejected}; "
                             f"changelog: {changelog}; see {first.log}") from None
    assert first.queues() == set(queues)


def agent_shifts(agents: int, base: float, tag: str) -> tuple[list[dict], dict]:
    """Per agent: log in at `base`, then calls every 300 s (answered, 120 s talk, 30 s wrap-up) over
    three queues for 75 minutes, log out at +5500. Returns the events and, per agent, the calls
    handled per 15-minute interval start (UTC: the default time zone)."""
    events, expected = [], {}
    queues = ["sales", "billing", "support"]
    for n in range(agents):
        agent, own = f"agent-{n:02d}", {}
        qs = queues[n % 3:] + queues[:n % 3]
        events.append(event("agent.logged_in", base, agent_id=agent, queues=qs, agent_name=f"Агент {n}"))
        events.append(event("agent.state_changed", base + 1, agent_id=agent, queues=qs, state="available"))
        for k in range(15):
            answered = base + 60 + k * 300 + n
            queue, call_id = qs[k % 3], f"{tag}-{agent}-{k}"
            events += call(queue, call_id, answered - 5, "answered", answered, agent=agent)
            events.append(event("call.ended", answered + 120, queue=queue, call_id=call_id, agent_id=agent))
            events.append(event("call.wrapup_ended", answered + 150, queue=queue, call_id=call_id, agent_id=agent))
            start = base + (answered + 120 - base) // 900 * 900
            own[start] = own.get(start, 0) + 1
        events.append(event("agent.logged_out", base + 5500, agent_id=agent, queues=qs))
        expected[agent] = own
    return sorted(events, key=lambda e: e["time"]), expected


SNAPSHOT_EVERY_SECOND = Path(__file__).resolve().parent / "snapshot-every-second.toml"
REPEAT_CALLER_GROUP = Path(__file__).resolve().parent / "repeat-caller-group.toml"


def callers_calling_back(base: float) -> tuple[list[dict], dict[str, tuple[int, int]]]:
    """Calls handled in sales and support, some of whose callers call again within the 10-minute
    period (repeat-caller-group.toml): to the other queue of the group (a repeat), or to billing (no
    group: not one). Returns the events and, per queue, (handled calls checked, repeated)."""
    events: list[dict] = []

    def handled_call(queue: str, call_id: str, t: float, caller: str) -> None:
        events.extend([event("call.offered", t, queue=queue, call_id=call_id, caller=caller),
                       event("call.answered", t + 5, queue=queue, call_id=call_id, agent_id="a1"),
                       event("call.ended", t + 65, queue=queue, call_id=call_id, agent_id="a1")])

    def call_back(queue: str, call_id: str, t: float, caller: str) -> None:
        events.extend([event("call.offered", t, queue=queue, call_id=call_id, caller=caller),
                       event("call.abandoned", t + 10, queue=queue, call_id=call_id)])

    for i in range(40):  # handled in sales; even ones call support 5 minutes later, 1 mod 4 billing
        caller, t = f"+7 900 {i:04d}", base + 30 * i
        handled_call("sales", f"s{i}", t, caller)
        if i % 2 == 0:
            call_back("support", f"s{i}-back", t + 300, caller)
        elif i % 4 == 1:
            call_back("billing", f"s{i}-back", t + 300, caller)
    for i in range(20):  # handled in support; even ones call sales 200 s later
        caller, t = f"+7 901 {i:04d}", base + 2000 + 30 * i
        handled_call("support", f"h{i}", t, caller)
        if i % 2 == 0:
            call_back("sales", f"h{i}-back", t + 200, caller)
    for queue in ("sales", "support", "billing"):  # every period and the lateness passed
        events.append(event("call.offered", base + 9000, queue=queue, call_id=f"probe-{queue}"))
    return sorted(events, key=lambda e: e["time"]), {"sales": (40, 20), "support": (20, 10), "billing": (0, 0)}


@pytest.mark.pipeline_env(CALLPULSE_CONFIG=str(REPEAT_CALLER_GROUP), CALLPULSE_CALLER_HASH_KEY="e2e-repeat-caller-group-key")
def test_repeat_callers_across_a_group_are_exact_after_a_sigkill(pipeline):
    """Each call.offered with a caller also goes to the other queue of its group, which tracks the
    contact in its own model: after a SIGKILL mid-stream the restart rebuilds them, and every
    queue's checked and repeated calls are as produced."""
    events, expected = callers_calling_back(time.time() - 3 * 3600)
    worker = pipeline.start_worker()
    half = len(events) // 2
    pipeline.produce(events[:half])
    wait_for(lambda: (value(worker.samples(), "callcenter_calls_offered_total", queue="sales") or 0) > 0)
    worker.kill(signal.SIGKILL)  # mid-stream: some batches applied, offsets not yet committed
    pipeline.produce(events[half:])
    restarted = pipeline.start_worker()

    def repeats(s: dict) -> dict[str, tuple[float | None, float | None]]:
        return {q: (value(s, "callcenter_repeat_caller_checked_calls_total", queue=q),
                    value(s, "callcenter_repeat_caller_repeated_calls_total", queue=q)) for q in expected}

    s = wait_for(lambda: (s := restarted.samples()) and repeats(s) == expected and s, timeout=90,
                 message=f"checked and repeated calls per queue {expected}")
    assert value(s, "callcenter_calls_offered_total", queue="sales") == 40 + 10 + 1  # contacts are no offers
    assert value(s, "callcenter_calls_offered_total", queue="support") == 20 + 20 + 1
    text = restarted.metrics_text()
    assert "+7 900" not in text and "79000000" not in text  # no caller number, in clear or as digits


@pytest.mark.pipeline_env(CALLPULSE_CONFIG=str(SNAPSHOT_EVERY_SECOND))
def test_agent_records_are_exact_after_a_sigkill_and_reach_the_report(pipeline, tmp_path):
    """The agent shards are snapshotted every second here, so the restart rebuilds them from a
    snapshot and the batches after it."""
    import csv
    import sys

    base = (time.time() - 3 * 3600) // 900 * 900  # on an interval boundary, 3 hours ago
    events, expected = agent_shifts(24, base, "ar")
    worker = pipeline.start_worker()
    quarter = len(events) // 4

    def handled() -> float:
        body = worker.get("/api/agents")
        return sum(a["totals"]["handled"] for a in orjson.loads(body)["agents"]) if body else 0

    pipeline.produce(events[:quarter])
    wait_for(lambda: handled() > 0)
    time.sleep(1.5)  # the next batches come with a snapshot
    before = handled()
    pipeline.produce(events[quarter:2 * quarter])
    wait_for(lambda: handled() > before)
    worker.kill(signal.SIGKILL)  # mid-stream: some batches applied, offsets not yet committed
    pipeline.produce(events[2 * quarter:])
    restarted = pipeline.start_worker()

    def handled_per_agent() -> dict[str, float]:
        body = restarted.get("/api/agents")
        return {a["agent_id"]: a["totals"]["handled"] for a in orjson.loads(body)["agents"]} if body else {}

    try:
        wait_for(lambda: (h := handled_per_agent()) and len(h) == 24 and set(h.values()) == {15},
                 timeout=90, message="exact agent totals after the restart")
    except AssertionError:
        wrong = {agent: n for agent, n in handled_per_agent().items() if n != 15}
        try:  # (a 503 says why)
            health = urllib.request.urlopen(restarted.url + "/healthz", timeout=5).read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            health = exc.read().decode(errors="replace")
        except OSError as exc:
            health = repr(exc)
        raise AssertionError(f"agents whose handled total is not 15 after the restart: {wrong} (of "
                             f"{len(handled_per_agent())} agents listed, 24 produced); /healthz: {health}; "
                             f"see {restarted.log}") from None
    # Another queue's call moves the stream clock past the agents' last interval (+5400..+6300),
    # which they left no event after: its records come as preliminary ones, by the clock.
    pipeline.produce([event("call.offered", base + 7000, queue="other", call_id="ar-later")])
    # every agent's 15-minute records: one per interval it was logged in, handled as produced
    out = tmp_path / "agents.csv"

    def reported() -> bool:
        report = subprocess.run([sys.executable, "-m", "callpulse", "report", "--agents", "--interval-minutes", "15",
                                 "-o", str(out)], env=pipeline.env, capture_output=True, text=True, timeout=120)
        assert report.returncode == 0, report.stderr
        with open(out, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return len({r["agent_id"] for r in rows}) == 24 and len(rows) == 24 * 7

    wait_for(reported, timeout=120, interval=3.0, message="24 agents x 7 15-minute records")
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    got: dict[str, dict[float, int]] = {}
    from datetime import datetime
    for row in rows:
        start = datetime.fromisoformat(row["interval_start"]).timestamp()
        got.setdefault(row["agent_id"], {})[start] = int(row["handled"])
        assert row["agent_name"] == f"Агент {int(row['agent_id'][-2:])}" and row["timezone"] == "UTC"
        # logged in from base to +5500: 900 s in each interval but the last (+5400..+5500), which
        # is preliminary: closed by the clock, not by the agent's own events
        assert float(row["logged_in_seconds"]) == (100 if start == base + 5400 else 900)
        assert row["final"] == ("false" if start == base + 5400 else "true")
    assert {a: {s: h for s, h in own.items() if h} for a, own in got.items()} == expected
