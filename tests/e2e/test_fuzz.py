"""End to end fuzzing (issue 13): 10,000 hostile inputs through a real broker and a real worker.

A seeded generator builds the hostile corpus (random bytes, truncated JSON, huge fields, deep
nesting, wrong types, unknown types, NUL bytes, invalid UTF-8, NaN/Infinity and out-of-range
numbers, times that are no dates, far-future and far-past times, records with no value, outcomes
of calls that were never offered, ...) and interleaves it with valid traffic whose totals are
computed here by hand. The worker must stay up, every hostile input must come back as exactly
one dead letter with a reason and its original bytes, and the valid traffic must count exactly.

Which inputs are "hostile" follows the schema and the pipeline's documented rules:
- rejected by the first stage: not JSON (malformed_json), not an object (not_an_object), a type
  the schema does not list (unknown_type), anything else the schema forbids or a time that is no
  valid instant or lies before 1970 (schema_violation), a time more than max_future_seconds ahead
  of the worker's clock (future_time);
- schema-valid but rejected by the second stage: a time older than the queue's newest event minus
  the lateness (too_late; so the far-past events go to queues already running), an answer or
  abandon of a call never offered (unmatched_outcome, once the lateness has passed).
Not hostile, and so part of the valid traffic: odd but schema-valid events (UTC offsets other than
Z, pretty-printed JSON, NUL characters, emoji and 1e308 in attributes or source, ids of exactly 128
characters). And a reused event_id is not dead-lettered: within a queue the first event with an id
wins and later ones are dropped as duplicates whatever their content (counted in
callcenter_events_duplicate_total), as the README's dedup rule says.
"""

from __future__ import annotations

import base64
import collections
import json
import random
import time
from datetime import datetime, timedelta, timezone
from typing import ClassVar

import orjson
import pytest

from harness import LOGS, value, wait_for

pytestmark = pytest.mark.e2e

SEED = 13
HOSTILE = 10_000
QUEUES = ["sales", "support", "客服", "long-" + "q" * 123]  # the last one is 128 characters
CALLS_PER_QUEUE = 300
DUPLICATES = 100
UNMATCHED = 100
TOO_LATE = 300
STAGE_1 = {"malformed_json", "not_an_object", "unknown_type", "schema_violation", "future_time"}
ANY_STAGE_1 = frozenset(STAGE_1)


def iso(t: float, offset_minutes: int = 0) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    text = datetime.fromtimestamp(t, zone).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if offset_minutes == 0 else text


class Traffic:
    """Valid calls with known outcomes, and their totals per queue computed by hand."""

    def __init__(self):
        self.expected = {q: collections.Counter() for q in QUEUES}
        self.ids = 0

    def event(self, kind: str, t: float, **fields) -> dict:
        self.ids += 1
        return {"schema_version": 1, "event_id": f"fz-{self.ids}", "type": kind, "time": iso(t), "source": "fuzz",
                **fields, "_t": t}

    def call(self, queue: str, call_id: str, offered: float, outcome: str, wait: float) -> list[dict]:
        e = self.expected[queue]
        e["offered"] += 1
        out = [self.event("call.offered", offered, queue=queue, call_id=call_id)]
        end = offered + wait
        if outcome == "answered":
            out.append(self.event("call.answered", end, queue=queue, call_id=call_id, agent_id="a1"))
            e["answered"] += 1
            e["answer_wait_seconds"] += wait
            for limit in (10, 20):
                e[f"answered_within:{limit}"] += wait <= limit
        elif outcome == "abandoned":
            out.append(self.event("call.abandoned", end, queue=queue, call_id=call_id))
            e["abandoned"] += 1
            e["short_abandoned"] += wait <= 5
            for limit in (10, 20):
                e[f"abandoned_within:{limit}"] += wait <= limit
        else:
            out.append(self.event("call.flowed_out", end, queue=queue, call_id=call_id, reason="overflow"))
            e["flowed_out"] += 1
        return out


def odd_but_valid(rng: random.Random, e: dict) -> bytes:
    """A valid event serialized in one of the unusual ways the schema allows."""
    t = {k: v for k, v in e.items() if not k.startswith("_")}
    how = rng.randrange(8)
    if how == 0:  # the same instant at another UTC offset
        t["time"] = iso(e["_t"], rng.choice([345, -600, 480, -1439, 1439]))
    elif how == 1:
        return json.dumps(t, indent=rng.choice([1, 4]), ensure_ascii=rng.random() < 0.5).encode()
    elif how == 2:
        t["attributes"] = {"nul": "a\x00b", "emoji": "😀" * 10, "big": 1e308, "neg": -1.5, "flag": False, "": ""}
    elif how == 3:
        t["source"] = "s\x00" + "ü" * 120
    elif how == 4:
        t["event_id"] = (t["event_id"] + "-" + "é" * 128)[:128]  # 128 characters, more bytes
    elif how == 5:
        t["caller"] = "+" + "9" * 63
    return orjson.dumps(t)


class Hostile:
    """The seeded generator of hostile inputs: (bytes or None, reasons its dead letter may give)."""

    def __init__(self, rng: random.Random, now: float, template: dict):
        self.rng = rng
        self.now = now
        self.template = template  # a valid call.offered, as a dict
        self.n = 0

    def base(self, **changes) -> dict:
        self.n += 1
        return {**self.template, "event_id": f"bad-{self.n}", **changes}

    def dumps(self, **changes) -> bytes:
        # the json module, not orjson: it writes integers of any size
        return json.dumps(self.base(**changes), separators=(",", ":"), ensure_ascii=False).encode()

    def random_bytes(self):
        return self.rng.randbytes(self.rng.choice([1, 2, 5, 20, 100, 400])), ANY_STAGE_1

    def invalid_utf8(self):
        raw = self.dumps(source="SRC")
        bad = self.rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80"])
        return raw.replace(b"SRC", b"S" + bad + b"C"), {"malformed_json"}

    def truncated(self):
        raw = self.dumps(attributes={"k": "v" * self.rng.randrange(50)})
        return raw[: self.rng.randrange(len(raw))], {"malformed_json"}

    def huge(self):
        size = int(10 ** self.rng.uniform(2.2, 5.3))  # about 160 B to 200 KB
        field = self.rng.choice(["source", "event_id", "queue", "call_id", "caller", "attributes", "unknown"])
        if field == "attributes":
            return self.dumps(attributes={f"k{i}": i for i in range(size // 8)} | {"deep": {"x": 1}}), {"schema_violation"}
        if field == "unknown":
            return self.dumps(junk="x" * size), {"schema_violation"}
        return self.dumps(**{field: "x" * max(size, 129)}), {"schema_violation"}

    def deep(self):
        depth = self.rng.choice([10, 500, 1023, 1024, 1025, 5000])  # orjson parses up to 1024 levels
        if self.rng.randrange(3) == 0:
            return b"[" * depth + b"]" * depth, ({"malformed_json"} if depth > 1024 else {"not_an_object"})
        nested = b"{\"a\":" * depth + b"1" + b"}" * depth  # as attributes: one level below the event
        raw = self.dumps(attributes={"PLACE": 1}).replace(b'{"PLACE":1}', nested)
        return raw, ({"malformed_json"} if depth + 1 > 1024 else {"schema_violation"})

    WRONG: ClassVar[dict[str, list]] = {
        "schema_version": ["1", 2, 0, True, None, 1.5, [1]],
        "event_id": [None, 5, "", ["x"], {"a": 1}, True],
        "time": [1763889298912, None, "", "now", ["2026-11-23T09:00:00Z"], 1.5],
        "source": [None, 1, "", []],
        "queue": [5, None, "", ["sales"], {"q": 1}],
        "call_id": [7, None, "", False],
        "priority": ["10", 101, -1, 10.5, True, 10**30, -(10**30), None],
        "caller": [123, "", "9" * 65],
        "attributes": [[1, 2], "x", 5, {"nested": {"a": 1}}, {"null": None}, {"list": [1]}],
    }

    def wrong_type(self):
        name = self.rng.choice(sorted(self.WRONG))
        return self.dumps(**{name: self.rng.choice(self.WRONG[name])}), {"schema_violation"}

    def out_of_range(self):
        kind, fields = self.rng.choice([
            ("call.ringing", {"agent_id": "a1", "attempt": self.rng.choice([0, -1, -(10**18), 1.5, "1"])}),
            ("call.ring_no_answer", {"agent_id": "a1", "ring_seconds": self.rng.choice([-0.001, -1, -1e308, "5"])}),
            ("call.survey", {"csat": self.rng.choice([0, 6, 4.5, "4"])}),
            ("call.survey", {"nps": self.rng.choice([-1, 11, "9"])}),
            ("call.survey", {}),  # needs one of csat, nps, resolved
            ("call.flowed_out", {"reason": self.rng.choice(["bored", "", "TIMEOUT", None])}),
            ("agent.state_changed", {"agent_id": "a1", "queues": ["sales"], "state": self.rng.choice(["sleeping", "", None])}),
            ("agent.state_changed", {"agent_id": "a1", "queues": ["sales"], "state": "not_ready"}),  # no reason
            ("agent.logged_in", {"agent_id": "a1", "queues": self.rng.choice([["sales", "sales"], "sales", [1], [""]])}),
        ])
        return self.dumps(type=kind, **fields), {"schema_violation"}

    def unknown_type(self):
        kind = self.rng.choice(["call.teleported", "", "CALL.OFFERED", "call.offered ", "call", "agent.*", None, 5,
                                ["call.offered"], {"t": 1}, True, "call.offered\x00"])
        return self.dumps(type=kind), {"unknown_type"}

    def missing(self):
        e = self.base()
        del e[self.rng.choice(["schema_version", "event_id", "time", "source", "queue", "call_id"])]
        return json.dumps(e).encode(), {"schema_violation"}

    def unknown_field(self):
        return self.dumps(**{self.rng.choice(["Queue", "extra", "", "type2", "\x00"]): 1}), {"schema_violation"}

    def nul(self):
        raw = self.dumps()
        at = self.rng.randrange(len(raw) + 1)
        return raw[:at] + b"\x00" * self.rng.choice([1, 3]) + raw[at:], {"malformed_json"}

    def non_finite(self):
        literal = self.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"1e400", b"-1e999",
                                   b"1" + b"0" * 400, b"0x10", b"+1", b"01", b".5", b"1.", b"1e"])
        raw = self.dumps(priority=12345).replace(b"12345", literal)
        return raw, {"malformed_json"}

    def not_an_object(self):
        return self.rng.choice([b"[]", b"[1,2,3]", b'"call.offered"', b"42", b"-0.5", b"null", b"true", b"false",
                                orjson.dumps([self.base()])]), {"not_an_object"}

    def framing(self):
        raw = self.dumps()
        return self.rng.choice([b"\xef\xbb\xbf" + raw, raw + b"x", raw + raw, raw + b",", b"{" + raw, raw[:-1] + b",}",
                                raw.replace(b":", b"=", 1), raw.replace(b'"', b"'")]), {"malformed_json"}

    def empty(self):
        return self.rng.choice([None, b"", b" ", b"\n", b"\t\r\n"]), {"malformed_json"}

    def bad_time(self):
        text = self.rng.choice([
            "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-23T24:00:00Z", "2026-11-23T09:00:60Z",
            "2026-11-23T09:00:00+24:00", "2026-11-23T09:60:00Z", "0000-01-01T00:00:00Z", "2026-11-23 09:00:00Z",
            "2026-11-23T09:00:00", "2026-11-23T09:00:00z", "2026-11-23T09:00:00.1234567Z", "2026-11-23T09:00:00Z\n",
            "２０２６-11-23T09:00:00Z", "2026-11-23T09:00:00+0100", "2026-11-23", "23/11/2026 09:00",
        ])
        return self.dumps(time=text), {"schema_violation"}

    def before_1970(self):
        text = self.rng.choice(["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "0001-01-05T12:00:00-23:59",
                                "1000-06-15T12:00:00Z", "1969-12-31T23:59:59.999Z", "1900-01-01T00:00:00Z"])
        # in a queue of its own: as a queue's first event it would be applied if it passed stage 1
        return self.dumps(time=text, queue=f"new-{self.n}"), {"schema_violation"}

    def far_future(self):
        ahead = self.rng.choice([3600, 86400, 86400 * 365, 86400 * 365 * 100])  # max_future_seconds is 300
        text = iso(self.now + ahead) if self.rng.random() < 0.7 else "9999-12-31T23:59:59.999999-23:59"
        return self.dumps(time=text), {"future_time"}

    def duplicate_keys(self):  # JSON with a key twice: the last value counts, and it is bad
        raw = self.dumps()
        return raw[:-1] + self.rng.choice([b',"queue":5}', b',"time":"x"}', b',"schema_version":2}', b',"type":"bogus"}']), \
            {"schema_violation", "unknown_type"}

    def too_late(self, queue: str, at: float):
        """Schema-valid, but far older than the queue's newest event: the second stage rejects it."""
        kind = self.rng.choice(["offered", "answered", "agent"])
        if kind == "offered":
            e = self.base(queue=queue, call_id=f"late-{self.n}", time=iso(at))
        elif kind == "answered":
            e = self.base(type="call.answered", queue=queue, call_id=f"late-{self.n}", agent_id="a9", time=iso(at))
        else:
            e = self.base(type="agent.queue_joined", queue=queue, agent_id=f"late-{self.n}", time=iso(at))
            del e["call_id"]
        return orjson.dumps(e), {"too_late"}


def build_corpus(now: float) -> tuple[list[bytes], list[bytes | None], dict[bytes, set[str]], collections.Counter,
                                      dict[str, collections.Counter], int]:
    """(warm-up messages, the interleaved corpus, allowed reasons by original bytes, hostile
    originals as a multiset, expected totals per queue, number of duplicate ids)."""
    rng = random.Random(SEED)
    base = now - 900  # 15 minutes of history: every time is in the past of the worker's clock
    traffic = Traffic()
    warmup = []
    for qi, queue in enumerate(QUEUES):  # one call per queue first: the queue has a watermark
        warmup += traffic.call(queue, f"warm-{qi}", base, "answered", 1.0)
    valid: list[dict] = []
    for qi, queue in enumerate(QUEUES):
        for j in range(CALLS_PER_QUEUE):
            wait = float((j * 7 + qi) % 40)
            outcome = "flowed_out" if j % 11 == 0 else "abandoned" if j % 5 == 0 else "answered"
            valid += traffic.call(queue, f"q{qi}-{j}", base + 60 + j * 1.5, outcome, wait)
    # The same event_id again with other content: a different call, at least max_ahead (30 s) later
    # so the first stage surely passes the original on first. Dropped as a duplicate.
    offers = [e for e in valid if e["type"] == "call.offered" and e["_t"] < base + 400]
    for k, original in enumerate(rng.sample(offers, DUPLICATES)):
        dup = traffic.event("call.offered", original["_t"] + rng.uniform(40, 120), queue=original["queue"], call_id=f"dup-{k}")
        dup["event_id"] = original["event_id"]
        dup["_dup"] = original["_keep"] = True  # both sent as they are (odd_but_valid may change an id)
        valid.append(dup)
    end = max(e["_t"] for e in valid)
    # Outcomes of calls never offered, at least 2 lateness before the end of the traffic, so the
    # watermark passes them and they come back as unmatched_outcome.
    hostile_gen = Hostile(rng, now, {k: v for k, v in traffic.event("call.offered", base, queue="sales", call_id="t").items() if k != "_t"})
    for k in range(UNMATCHED):
        t = rng.uniform(base + 60, end - 130)
        kind = rng.choice(["call.answered", "call.abandoned", "call.flowed_out"])
        extra = {"agent_id": "a1"} if kind == "call.answered" else {"reason": "timeout"} if kind == "call.flowed_out" else {}
        ghost = traffic.event(kind, t, queue=rng.choice(QUEUES), call_id=f"ghost-{k}", **extra)
        ghost["_unmatched"] = True
        valid.append(ghost)
    valid.sort(key=lambda e: e["_t"])  # every input partition in event-time order

    makers = [
        (hostile_gen.random_bytes, 1100), (hostile_gen.invalid_utf8, 500), (hostile_gen.truncated, 1200),
        (hostile_gen.huge, 250), (hostile_gen.deep, 300), (hostile_gen.wrong_type, 1500), (hostile_gen.out_of_range, 800),
        (hostile_gen.unknown_type, 700), (hostile_gen.missing, 500), (hostile_gen.unknown_field, 250), (hostile_gen.nul, 500),
        (hostile_gen.non_finite, 500), (hostile_gen.not_an_object, 300), (hostile_gen.framing, 300), (hostile_gen.empty, 100),
        (hostile_gen.bad_time, 300), (hostile_gen.before_1970, 200), (hostile_gen.far_future, 200),
        (hostile_gen.duplicate_keys, 100),
    ]
    stage1_count = HOSTILE - TOO_LATE - UNMATCHED
    assert sum(n for _, n in makers) == stage1_count
    hostile: list[tuple[bytes | None, set[str]]] = [maker() for maker, n in makers for _ in range(n)]
    for _ in range(TOO_LATE):
        ago = rng.choice([3600, 86400, 86400 * 365 * 10, now - 1.0, now])  # down to 1970-01-01T00:00:00Z
        hostile.append(hostile_gen.too_late(rng.choice(QUEUES), now - ago))

    allowed: dict[bytes, set[str]] = collections.defaultdict(set)
    originals: collections.Counter = collections.Counter()
    for blob, reasons in hostile:
        original = b"" if blob is None else blob
        allowed[original] |= reasons
        originals[original] += 1
    for e in valid:
        if e.get("_unmatched"):
            blob = orjson.dumps({k: v for k, v in e.items() if not k.startswith("_")})
            allowed[blob].add("unmatched_outcome")
            originals[blob] += 1
    # Interleave: valid traffic keeps its order, hostile inputs land at random places in between.
    slots = sorted(rng.randrange(len(valid) + 1) for _ in hostile)
    rng.shuffle(hostile)
    corpus: list[bytes | None] = []
    it = iter(zip(slots, hostile))
    pending = next(it, None)
    for i, e in enumerate(valid + [None]):
        while pending is not None and pending[0] == i:
            corpus.append(pending[1][0])
            pending = next(it, None)
        if e is not None:
            clean = {k: v for k, v in e.items() if not k.startswith("_")}
            as_is = e.get("_unmatched") or e.get("_dup") or e.get("_keep") or rng.random() >= 0.2
            corpus.append(orjson.dumps(clean) if as_is else odd_but_valid(rng, e))
    warm = [orjson.dumps({k: v for k, v in e.items() if not k.startswith("_")}) for e in warmup]
    return warm, corpus, allowed, originals, traffic.expected, DUPLICATES


def exported_totals(worker) -> dict[str, dict] | None:
    body = worker.get("/api/queues")
    return None if body is None else {q: v["totals"] for q, v in orjson.loads(body)["queues"].items()}


def differences(totals: dict | None, expected: dict[str, collections.Counter]) -> dict:
    """{queue: {counter: (exported, expected)}} where they differ; empty when all agree."""
    if totals is None or set(totals) != set(expected):
        return {"queues": (sorted(totals or ()), sorted(expected))}
    out = {}
    for q, e in expected.items():
        wrong = {name: (totals[q].get(name), n) for name, n in e.items() if totals[q].get(name) != pytest.approx(n)}
        if wrong:
            out[q[:20]] = wrong
    return out


def test_ten_thousand_hostile_inputs_are_dead_lettered_and_valid_traffic_stays_exact(pipeline):
    started = time.monotonic()
    log = LOGS / f"{pipeline.name}-worker1.log"  # appended to by every run: check only this run's part
    log_start = log.stat().st_size if log.exists() else 0
    worker = pipeline.start_worker()
    now = time.time()
    warm, corpus, allowed, originals, expected, duplicates = build_corpus(now)
    hostile_count = sum(originals.values())
    assert hostile_count == HOSTILE
    pipeline.produce(warm, raw=True)
    wait_for(lambda: (t := exported_totals(worker)) and all(t.get(q, {}).get("answered") == 1 for q in QUEUES),
             message="the warm-up call in every queue")
    pipeline.produce(corpus, raw=True)  # one producer session, ~15,000 messages
    produced_at = time.monotonic()

    letters = pipeline.dead_letters(expected=hostile_count, timeout=90)
    assert worker.process.poll() is None, f"the worker stopped, see {worker.log}"
    got: collections.Counter = collections.Counter()
    wrong_reason = []
    for letter in letters:
        original = letter["original"].encode() if "original" in letter else base64.b64decode(letter["original_base64"])
        got[original] += 1
        assert letter["detail"] and letter["rejected_at"]
        assert letter["stage"] == ("route" if letter["reason"] in STAGE_1 else "aggregate"), letter
        if letter["reason"] not in allowed.get(original, ()):
            wrong_reason.append((letter["reason"], letter["detail"][:120], original[:120]))
    missing = originals - got
    extra = got - originals
    assert not missing and not extra, (f"{sum(missing.values())} hostile inputs without a dead letter, e.g. "
                                       f"{list(missing)[:5]}; {sum(extra.values())} unexpected dead letters, e.g. {list(extra)[:5]}")
    assert not wrong_reason, wrong_reason[:10]

    try:
        wait_for(lambda: not differences(exported_totals(worker), expected), timeout=60, message="exact totals")
    except AssertionError:
        raise AssertionError(f"totals (exported, expected): {differences(exported_totals(worker), expected)}") from None
    time.sleep(2)  # and nothing more arrives: no extra dead letter, totals stay exact
    assert len(pipeline.dead_letters(expected=hostile_count + 1, timeout=3)) == hostile_count
    assert differences(exported_totals(worker), expected) == {}
    s = worker.samples()
    assert value(s, "callcenter_events_duplicate_total") == duplicates
    rejected = {dict(labels)["reason"]: v for (name, labels), v in s.items() if name == "callcenter_events_rejected_total"}
    assert sum(rejected.values()) == hostile_count, rejected
    assert rejected["too_late"] == TOO_LATE and rejected["unmatched_outcome"] == UNMATCHED
    assert worker.process.poll() is None and worker.get("/healthz") == b"ok\n"
    with open(worker.log, "rb") as f:
        f.seek(log_start)
        assert b"Traceback" not in f.read(), f"the worker logged a traceback, see {worker.log}"
    print(f"\n{hostile_count} hostile inputs, {len(warm) + len(corpus) - hostile_count} valid events (incl. "
          f"{duplicates} duplicates); {len(letters)} dead letters {dict(rejected)}; "
          f"produced to settled {time.monotonic() - produced_at:.1f} s, test {time.monotonic() - started:.1f} s")
