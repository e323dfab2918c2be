"""Leaks end to end (issue 13): what a real `callpulse worker` puts out must not carry caller numbers
or the Kafka password.

The worker runs with a SASL password in its environment (CALLPULSE_KAFKA_SASL_PASSWORD, a fresh
value per run; with the PLAINTEXT protocol it is accepted and not used) and reads events with
distinctive caller numbers, valid ones and invalid ones of every reject reason, in every field
that can hold a number (caller, dnis, target, attributes, unknown fields, a field name, a type).
Then everything the worker wrote is searched for the numbers (as written and digits only) and
for the password: its log, /metrics, /api/queues, /api/agents, /healthz, its data directory, the intervals
topic and the dead-letter topic. The dead letters keep the original bytes, so there the numbers
are expected unless stream.dead_letter_mask_callers is on: the test runs both ways, which shows
that the masking is what removes them.

Not searched: the batches topic and the changelog, internal topics that carry the valid events'
original bytes (caller numbers included) by design.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from callpulse.kpi import quality
from harness import LOGS, value, wait_for
from helpers import call, event

pytestmark = pytest.mark.e2e

SECRET = f"leak-canary-{secrets.token_hex(12)}"
HASH_KEY = f"hash-key-canary-{secrets.token_hex(12)}"
QUEUE = "leak-q"
ROUTE_REJECTS = ("malformed_json", "malformed_json", "not_an_object", "unknown_type", "schema_violation",
                 "schema_violation", "schema_violation", "future_time")
AGGREGATE_REJECTS = ("unmatched_outcome", "too_late")


def number(i: int, style: int = 0) -> str:
    """A distinctive caller number (+999 is no country code), written in one of three ways."""
    digits = f"999{i:02d}55501{i:02d}"
    return [f"+{digits[:3]} {digits[3:6]} {digits[6:9]} {digits[9:]}", f"+{digits}", digits][style % 3]


def forms(text: str) -> set[str]:
    """How a number may show up in an output: as written, and its digits only."""
    return {text, "".join(c for c in text if c.isdigit())}


class Numbers(dict):
    """{caller number: where it is}, and which of them are in events that get dead-lettered."""

    def __init__(self):
        super().__init__()
        self.rejected: dict[str, str] = {}

    def new(self, where: str, rejected: bool = False) -> str:
        n = number(len(self) + 1, len(self))
        self[n] = where
        if rejected:
            self.rejected[n] = where
        return n


def traffic(now: float, numbers: Numbers) -> tuple[list[bytes], list[bytes]]:
    """(valid events, invalid events for the first stage), with caller numbers from `numbers`.
    The valid calls span 30 minutes of event time, so 15-minute intervals close and reach the
    intervals topic."""
    num = numbers.new

    base = now - 1900
    valid: list[dict] = []
    for j in range(12):
        t = base + j * 150
        offered, outcome = call(QUEUE, f"c{j}", t, "answered" if j % 3 else "abandoned", t + 20)
        offered.update(caller=num(f"call.offered c{j} caller"), attributes={"ani": num(f"c{j} attributes.ani"), "lang": "en"})
        valid += [offered, outcome]
        if j % 3 == 1:
            transferred = event("call.transferred", t + 40, queue=QUEUE, call_id=f"c{j}", agent_id="a1",
                                target=num(f"c{j} transfer target"))
            valid.append(dict(transferred, kind="blind"))  # `kind` is event()'s own argument
    valid.append(event("call.ivr_entered", base + 5, call_id="ivr1", caller=num("ivr caller"), dnis=num("ivr dnis")))
    valid.append(event("call.callback_requested", base + 700, queue=QUEUE, call_id="c4", caller=num("callback caller")))
    valid.append(event("call.outbound_attempt", base + 800, queue=QUEUE, call_id="ob1", result="no_answer",
                       caller=num("outbound caller")))
    valid.append(event("call.survey", base + 900, queue=QUEUE, call_id="c1", agent_id="a1", csat=4,
                       caller=num("survey caller")))
    # An answer of a call never offered, early in the stream: once the queue's events are a
    # lateness past it, the second stage dead-letters it as unmatched_outcome.
    valid.append(event("call.answered", base + 60, queue=QUEUE, call_id="never-offered", agent_id="a1",
                       caller=num("unmatched answer caller", rejected=True)))
    valid.sort(key=lambda e: e["time"])

    good = event("call.offered", now - 30, queue=QUEUE, call_id="bad")
    invalid = [
        b'{"type": "call.offered", "caller": "%s", oops' % num("malformed caller", rejected=True).encode(),
        b'\xff\xfe{"caller": "%s"}' % num("non-UTF-8 caller", rejected=True).encode(),
        orjson.dumps(num("a JSON string", rejected=True)),
        orjson.dumps(dict(good, type="call.teleported", caller=num("unknown type caller", rejected=True))),
        orjson.dumps({k: v for k, v in dict(good, caller=num("no queue caller", rejected=True)).items() if k != "queue"}),
        orjson.dumps(dict(good, ani=num("unknown field ani", rejected=True))),
        orjson.dumps({**good, num("a field name", rejected=True): True}),
        orjson.dumps(dict(good, call_id="future", time=event("x", now + 3600)["time"], caller=num("future caller", rejected=True))),
    ]
    return [orjson.dumps(e) for e in valid], invalid


def fetch(url: str) -> bytes:
    """The body of a GET, also of an error status (/healthz answers 503 with its problems)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        return exc.read()


def read_topic(pipeline, topic: str) -> list[tuple[bytes, bytes]]:
    return asyncio.run(pipeline._read(topic, expected=float("inf"), timeout=3.0))


def found(blob: bytes | str, needles: dict[str, str]) -> list[str]:
    text = blob if isinstance(blob, str) else blob.decode("utf-8", "replace")
    return sorted({f"{where} ({form!r})" for needle, where in needles.items() for form in forms(needle) if form in text})


@pytest.mark.parametrize("masked", [
    pytest.param(True, id="masked", marks=pytest.mark.pipeline_env(
        CALLPULSE_DEAD_LETTER_MASK_CALLERS="true", CALLPULSE_KAFKA_SASL_PASSWORD=SECRET, CALLPULSE_CALLER_HASH_KEY=HASH_KEY,
        CALLPULSE_KAFKA_SASL_USERNAME="leak-test", CALLPULSE_KAFKA_SASL_MECHANISM="SCRAM-SHA-512")),
    pytest.param(False, id="unmasked", marks=pytest.mark.pipeline_env(
        CALLPULSE_DEAD_LETTER_MASK_CALLERS="false", CALLPULSE_KAFKA_SASL_PASSWORD=SECRET, CALLPULSE_CALLER_HASH_KEY=HASH_KEY,
        CALLPULSE_KAFKA_SASL_USERNAME="leak-test", CALLPULSE_KAFKA_SASL_MECHANISM="SCRAM-SHA-512")),
])
def test_no_caller_number_or_password_leaves_the_worker(pipeline, masked):
    assert pipeline.config.kafka.sasl_password == SECRET and pipeline.config.kafka.security_protocol == "PLAINTEXT"
    assert pipeline.config.stream.dead_letter_mask_callers is masked
    log = LOGS / f"{pipeline.name}-worker1.log"  # appended to: this run's part starts at its end
    log_start = log.stat().st_size if log.exists() else 0
    worker = pipeline.start_worker()
    assert worker.log == log
    now = time.time()
    numbers = Numbers()
    valid, invalid = traffic(now, numbers)
    pipeline.produce(valid + invalid, raw=True)
    wait_for(lambda: value(worker.samples(), "callcenter_calls_offered_total", queue=QUEUE) == 12,
             message=f"12 offered calls in {QUEUE}")
    # older than the queue's newest event (now - 210 s) minus the lateness (60 s): too late
    too_late = event("call.offered", now - 1500, queue=QUEUE, call_id="too-late",
                     caller=numbers.new("too late caller", rejected=True))
    pipeline.produce([orjson.dumps(too_late)], raw=True)

    expected_rejects = len(ROUTE_REJECTS) + len(AGGREGATE_REJECTS)
    letters = read_topic_until(pipeline, expected_rejects)
    records = pipeline.interval_records(lambda got: any(q == QUEUE and r["final"] for (q, _, _), r in got.items()))
    s = wait_for(lambda: (s := worker.samples()) and value(s, "callcenter_events_rejected_total", reason="too_late") == 1 and s,
                 message="the too-late event counted")
    rejected = {reason: value(s, "callcenter_events_rejected_total", reason=reason) for reason in set(ROUTE_REJECTS + AGGREGATE_REJECTS)}
    assert rejected == {reason: (ROUTE_REJECTS + AGGREGATE_REJECTS).count(reason) for reason in rejected}
    assert sorted(orjson.loads(v)["reason"] for _, v in letters) == sorted(ROUTE_REJECTS + AGGREGATE_REJECTS)
    assert records, "no interval record reached the intervals topic"

    paths = ("/metrics", "/api/queues", "/api/agents", "/healthz")
    outputs: dict[str, bytes] = {path: fetch(worker.url + path) for path in paths}
    assert QUEUE.encode() in outputs["/metrics"] and QUEUE.encode() in outputs["/api/queues"]
    assert b'"agent_id":"a1"' in outputs["/api/agents"]
    assert outputs["/healthz"]
    for n, (key, value_) in enumerate(read_topic(pipeline, pipeline.config.kafka.topic_intervals)):
        outputs[f"intervals topic record {n}"] = (key or b"") + b" " + (value_ or b"")
    pipeline.stop()  # so that the log is complete, shutdown included
    outputs["worker log"] = log.read_bytes()[log_start:]
    assert pipeline.config.stream.app_id.encode() in outputs["worker log"], f"nothing logged in {log}"
    data_dir = pipeline.config.stream.data_dir
    for path in sorted(p for p in Path(data_dir).rglob("*") if p.is_file()):
        outputs[f"data dir {path.relative_to(data_dir)}"] = path.read_bytes()

    # Nothing but the dead letters may hold a caller number, with or without masking; nothing at all the
    # password, the callers' hash key or a caller's keyed hash (repeat-caller FCR keeps them in its state only).
    secret = {SECRET: "the SASL password", HASH_KEY: "the caller hash key"}
    secret.update({quality.caller_hash(n, HASH_KEY.encode()): f"the keyed hash of {where}" for n, where in numbers.items()})
    assert pipeline.config.stream.caller_hash_key == HASH_KEY
    leaks = {name: found(blob, numbers) + found(blob, secret) for name, blob in outputs.items()}
    assert not {name: hits for name, hits in leaks.items() if hits}, leaks

    letters_text = b"\n".join((k or b"") + b" " + v for k, v in letters)
    assert not found(letters_text, secret)
    invalid_numbers = numbers.rejected
    assert len(invalid_numbers) == expected_rejects
    if masked:
        # no letter keeps a caller number, not in the original (text or base64), not in the detail
        decoded = letters_text + b"".join(base64.b64decode(orjson.loads(v).get("original_base64", "")) for _, v in letters)
        assert not found(decoded, numbers), f"caller numbers in the masked dead letters: {found(decoded, numbers)}"
        # every letter says its original was masked, and each number left its last two digits
        assert all(orjson.loads(v).get("original_masked") is True for _, v in letters)
        for n, where in invalid_numbers.items():
            assert f"***{n[-2:]}".encode() in decoded, where
    else:
        # the documented default: the original bytes are kept exactly, caller numbers included
        originals = set()
        for _, v in letters:
            letter = orjson.loads(v)
            assert "original_masked" not in letter
            originals.add(base64.b64decode(letter["original_base64"]) if "original_base64" in letter
                          else letter["original"].encode())
        assert set(invalid) <= originals
        missing = {where for n, where in invalid_numbers.items() if not any(n.encode() in o for o in originals)}
        assert not missing, missing
        # and only the rejected events' numbers are there
        assert set(found(letters_text, numbers)) <= set(found(letters_text, invalid_numbers))


def read_topic_until(pipeline, expected: int, timeout: float = 60.0) -> list[tuple[bytes, bytes]]:
    """The dead-letter topic's (key, value) records, once `expected` of them are there."""
    return wait_for(lambda: (r := read_topic(pipeline, pipeline.config.kafka.topic_dead_letter)) and len(r) >= expected and r,
                    timeout=timeout, interval=1.0, message=f"{expected} dead letters")
