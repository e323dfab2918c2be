"""First stage pieces: the runtime validator agrees with the reference one; routing; framing; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from callpulse import cli
from callpulse import events as ev

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
VALID = sorted((SCHEMAS / "examples" / "valid").glob("*.json"))
INVALID = sorted((SCHEMAS / "examples" / "invalid").glob("*.json"))


@pytest.fixture(scope="module")
def router():
    return ev.Router(max_future_seconds=float("inf"))


@pytest.fixture(scope="module")
def reference():
    return jsonschema.Draft202012Validator(ev.load_schema())


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_examples_pass_the_runtime_validator(router, path):
    event, rejected = router.check(path.read_bytes())
    assert rejected is None, rejected
    assert event["type"] == path.stem


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_examples_are_rejected_like_the_reference_validator(router, reference, path):
    case = json.loads(path.read_text())
    assert not reference.is_valid(case["event"])
    _, rejected = router.check(orjson.dumps(case["event"]))
    assert rejected is not None, case["why"]
    assert rejected.reason in ("schema_violation", "unknown_type")


def test_rejections_name_the_reason_and_keep_the_bytes(router):
    for raw, reason in [(b"{nope", "malformed_json"), (b"[]", "not_an_object"), (b'{"type": "x"}', "unknown_type")]:
        _, rejected = router.check(raw)
        assert (rejected.reason, rejected.raw) == (reason, raw)
        letter = orjson.loads(rejected.dead_letter("route"))
        assert letter["original"] == raw.decode() and letter["reason"] == reason and letter["rejected_at"]
    binary = b"\xff\xfe"
    letter = orjson.loads(router.check(binary)[1].dead_letter("route"))
    assert "original_base64" in letter


def test_far_future_events_are_rejected():
    router = ev.Router(max_future_seconds=300, clock=lambda: 1_000_000_000.0)
    event = json.loads((SCHEMAS / "examples" / "valid" / "call.offered.json").read_text())
    event["time"] = "2001-09-09T02:00:00.000Z"  # 1,000,000,000 + 3,600 - 1,000
    assert router.check(orjson.dumps(event))[1].reason == "future_time"
    event["time"] = "2001-09-09T01:50:00.000Z"  # 200 s ahead: within the tolerance
    assert router.check(orjson.dumps(event))[1] is None


def test_agent_events_fan_out_to_their_queues_and_batches_are_time_ordered(router):
    base = json.loads((SCHEMAS / "examples" / "valid" / "agent.state_changed.json").read_text())
    late = dict(base, event_id="x1", time="2026-11-23T09:00:05.000Z", queues=["a", "b"])
    early = dict(base, event_id="x2", time="2026-11-23T09:00:01.000Z", queues=["a"])
    valid, rejected = router.validate([(0, orjson.dumps(late)), (1, orjson.dumps(early))])
    assert rejected == [] and [(e.offset, e.queues, e.type) for e in valid] == [(0, ("a", "b"), "agent.state_changed"), (1, ("a",), "agent.state_changed")]
    routed = ev.by_queue(valid)
    assert [orjson.loads(r)["event_id"] for r in routed["a"]] == ["x2", "x1"]
    assert [orjson.loads(r)["event_id"] for r in routed["b"]] == ["x1"]


def test_pack_unpack_round_trip():
    items = [b"", b"a", "客服".encode(), b"x" * 70000]
    assert list(ev.unpack(ev.pack(items))) == items


def test_redacted_caller_number_hides_the_digits():
    redacted = ev.redact_phone("+7 912 345 67 89")
    assert "912" not in redacted and redacted == ev.redact_phone("+7 912 345 67 89")


def test_validate_command(tmp_path, capsys):
    good = (SCHEMAS / "examples" / "valid" / "call.offered.json").read_text()
    bad = json.loads(INVALID[0].read_text())["event"]
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(json.loads(good)) + "\n" + json.dumps(bad) + "\n")
    assert cli.main(["validate", str(lines)]) == 1
    out = capsys.readouterr().out
    assert f"{lines}:2:" in out and "1 valid, 1 invalid" in out
    one = tmp_path / "one.json"
    one.write_text(good)
    assert cli.main(["validate", str(one)]) == 0
