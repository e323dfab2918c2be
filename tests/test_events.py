"""First stage pieces: the runtime validator agrees with the reference one; routing; framing; CLI."""

from __future__ import annotations

import base64
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
    agent = ev.agent_key(base["agent_id"])
    assert rejected == [] and [(e.offset, e.queues, e.type) for e in valid] == [
        (0, ("a", "b", agent), "agent.state_changed"), (1, ("a", agent), "agent.state_changed")]
    routed = ev.by_queue(valid)
    assert [orjson.loads(r)["event_id"] for r in routed["a"]] == ["x2", "x1"]
    assert [orjson.loads(r)["event_id"] for r in routed["b"]] == ["x1"]
    assert [orjson.loads(r)["event_id"] for r in routed[agent]] == ["x2", "x1"]


def test_an_agent_key_is_no_queue_name_and_survives_the_wire():
    key = ev.agent_key("ivanova.a")  # crc32(b"ivanova.a") = 1314419732 = 8 x 164302466 + 4
    assert ev.key_bytes(key) == b"\xff4" and ev.key_text(ev.key_bytes(key)) == key
    assert ev.is_agent_key(key) and ev.display_key(key) == "agent shard 4"
    shards = {ev.agent_key(f"a{n}") for n in range(1000)}
    assert len(shards) == ev.AGENT_SHARDS  # 1,000 agents use every shard
    for queue in ("客服", "agent:x", "\u00ff", "\U000f0000"):
        assert not ev.is_agent_key(queue) and not ev.key_bytes(queue).startswith(b"\xff")
        assert ev.key_text(ev.key_bytes(queue)) == queue and ev.display_key(queue) == queue
    # a queue named with the prefix itself cannot get through: JSON with a lone surrogate is refused
    raw = b'{"schema_version": 1, "event_id": "e", "type": "call.offered", "time": "2026-11-23T09:00:00Z", ' \
          b'"source": "t", "queue": "\\udcffa1", "call_id": "c"}'
    assert ev.Router().check(raw)[1].reason == ev.MALFORMED_JSON


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


# ---- caller numbers masked in dead letters (stream.dead_letter_mask_callers) ----------------

CALLER = "+999 7712 3400 51"  # distinctive: +999 is no country code


def clear_forms(number: str) -> list[str]:
    """The ways a number's digits could show up in a record: as written, and digits only."""
    return [number, "".join(c for c in number if c.isdigit())]


def assert_hidden(text: str, *numbers: str) -> None:
    for number in numbers:
        for form in clear_forms(number):
            assert form not in text, (form, text)


def test_dead_letters_keep_the_original_bytes_unless_masking_is_asked_for(router):
    raw = b'{"type": "x", "caller": "+999 7712 3400 51"}'
    letter = orjson.loads(router.check(raw)[1].dead_letter("route"))
    assert letter["original"] == raw.decode() and "original_masked" not in letter
    masked = orjson.loads(router.check(raw)[1].dead_letter("route", mask_callers=True))
    assert masked["original_masked"] is True and orjson.loads(masked["original"])["caller"] == "***51"


def test_masking_finds_the_schema_phone_fields_and_keeps_the_tracing_fields():
    schema = ev.load_schema()
    assert ev.phone_fields() == {"caller", "dnis"}  # a new phone_number field is masked as well
    assert ev.KEPT_FIELDS <= set(schema["properties"]) and not ev.KEPT_FIELDS & ev.phone_fields()
    assert "target" not in ev.KEPT_FIELDS and "attributes" not in ev.KEPT_FIELDS


def test_masked_dead_letter_hides_caller_numbers_in_every_field_and_the_detail(router):
    numbers = ["+999 7712 3400 51", "+999-7712-3400-52", "99977123400053", "+1 (999) 771-2354",
               "0999.771.23.55", "+99977123400056", "99977123400057", "+999 7712 3400 58"]
    event = json.loads((SCHEMAS / "examples" / "valid" / "call.ivr_entered.json").read_text())
    event.update(
        event_id="ev-1700000000.42", call_id="1700000000.42",  # Asterisk-like ids stay readable
        caller=numbers[0], dnis=numbers[1],
        attributes={"ani": numbers[2], "callback_to": f"call me on {numbers[3]}", "lang": "en",
                    "vru_line": 12, "msisdn": int(numbers[6])},
        target=numbers[4],  # not allowed on this type: a schema violation
    )
    event[numbers[5]] = True  # an unknown field named by a number: the detail quotes the name
    event["extra"] = {"caller": "0042", "nested": [numbers[7]]}
    raw = orjson.dumps(event)
    _, rejected = router.check(raw)
    assert rejected.reason == "schema_violation"
    # unmasked: all of it is there (the documented default)
    assert all(n in raw.decode() for n in numbers[:6])
    letter = orjson.loads(rejected.dead_letter("route", mask_callers=True))
    text = orjson.dumps(letter).decode()
    assert_hidden(text, *numbers)
    original = orjson.loads(letter["original"])
    assert original["caller"] == "***51" and original["dnis"] == "***52"
    assert original["attributes"] == {"ani": "***53", "callback_to": "call me on ***54", "lang": "en",
                                      "vru_line": 12, "msisdn": "***57"}
    assert original["target"] == "***55" and original["***56"] is True
    assert original["extra"] == {"caller": "***42", "nested": ["***58"]}
    for kept in ("event_id", "call_id", "time", "type", "source", "schema_version", "ivr"):
        assert original[kept] == event[kept], kept


OFFERED_HEAD = (b'{"schema_version": 1, "type": "call.offered", "time": "2026-11-23T09:15:02.125Z", '
                b'"event_id": "e", "source": "s", "queue": "q", "call_id": "c", ')


@pytest.mark.parametrize("raw, detail_has", [
    (b'{"type": "+999 7712 3400 51", "caller": "x"}', "unknown event type '***51'"),
    (OFFERED_HEAD + b'"9997712340051": 1}', "{'***51'}"),
    (OFFERED_HEAD + b'"attributes": {"9997712340051": {"a": 1}}}', "data.attributes.***51 must be"),
])
def test_masked_detail_gets_the_replacements_of_the_event(router, raw, detail_has):
    rejected = router.check(raw)[1]
    assert "9997712340051" in rejected.detail.replace(" ", "")  # what masking must remove
    letter = orjson.loads(rejected.dead_letter("route", mask_callers=True))
    assert detail_has in letter["detail"]
    assert_hidden(orjson.dumps(letter).decode(), CALLER)


def test_an_original_that_is_no_json_has_its_digit_runs_masked(router):
    raw = b'{"caller": "+999 7712 3400 51", "time": "2026-11-23T09:15:02.123456Z", "ext": 4021, oops'
    letter = orjson.loads(router.check(raw)[1].dead_letter("route", mask_callers=True))
    assert letter["reason"] == "malformed_json" and letter["original_masked"] is True
    # dates and times, and runs of fewer than 6 digits (an extension), are kept
    assert letter["original"] == '{"caller": "***51", "time": "2026-11-23T09:15:02.123456Z", "ext": 4021, oops'
    # not UTF-8: the bytes are masked, then base64-encoded as usual
    binary = b'\xff\xfe caller=+9997712340052;'
    letter = orjson.loads(router.check(binary)[1].dead_letter("route", mask_callers=True))
    assert base64.b64decode(letter["original_base64"]) == b"\xff\xfe caller=***52;"
    # digits of other scripts are digits too
    arabic = '{"caller": "٩٩٩٧٧١٢٣٤٠٠٥٣" oops'.encode()
    letter = orjson.loads(router.check(arabic)[1].dead_letter("route", mask_callers=True))
    assert letter["original"] == '{"caller": "***٥٣" oops'
    # a tombstone has nothing to mask
    letter = orjson.loads(router.validate([(0, None)])[1][0].dead_letter("route", mask_callers=True))
    assert letter["original"] == ""


@pytest.mark.parametrize("raw", [b'"+999 7712 3400 51"', b"9997712340051", b'[{"caller": "51"}, "+9997712340051"]'])
def test_masking_json_that_is_not_an_object(router, raw):
    rejected = router.check(raw)[1]
    assert rejected.reason == "not_an_object"
    letter = orjson.loads(rejected.dead_letter("route", mask_callers=True))
    assert_hidden(orjson.dumps(letter).decode(), CALLER)
    assert "***51" in letter["original"]


def test_second_stage_rejects_are_masked_with_their_ids_kept():
    """too_late and unmatched_outcome letters come from state.py, not from the Router."""
    event = json.loads((SCHEMAS / "examples" / "valid" / "call.answered.json").read_text())
    event["caller"] = CALLER
    rejected = ev.Rejected(ev.UNMATCHED, f"call.answered for call {event['call_id']!r} in queue {event['queue']!r}: "
                                         "no call.offered within the lateness", orjson.dumps(event))
    letter = orjson.loads(rejected.dead_letter("aggregate", mask_callers=True))
    assert letter["detail"] == rejected.detail  # the call id and queue are not caller numbers
    assert_hidden(orjson.dumps(letter).decode(), CALLER)
    original = orjson.loads(letter["original"])
    assert original == dict(event, caller="***51")


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: p.stem)
def test_no_example_leaks_a_caller_number_through_a_masked_dead_letter(path):
    """Every example event, given caller numbers wherever they may sit, as a dead letter (any
    reason: the second stage rejects valid events too)."""
    data = json.loads(path.read_text())
    event = data.get("event", data)
    if isinstance(event, dict):
        event = dict(event, caller=CALLER, dnis="+999 7712 3400 52")
        event["attributes"] = dict(event.get("attributes") or {}, from_number="+99977123400053")
        if "target" in event or event.get("type") == "call.transferred":
            event["target"] = "+999 7712 3400 54"
    raw = orjson.dumps(event)
    for rejected in (ev.Rejected(ev.TOO_LATE, "time is older than queue 'q' watermark", raw),
                     ev.Rejected(ev.SCHEMA_VIOLATION, f"detail quoting {CALLER}", raw)):
        text = rejected.dead_letter("aggregate", mask_callers=True).decode()
        assert_hidden(text, CALLER, "+999 7712 3400 52", "+99977123400053", "+999 7712 3400 54")


def test_phone_runs_and_what_they_leave_alone():
    mask = ev.mask_phone_runs
    assert mask("+7 912 345 67 89") == "***89"
    assert mask("+44 (0)20 7946-0123 or 020/7946/0124") == "***23 or ***24"
    assert mask("ext 4021, room 12345, 2026-11-23T09:15:02.123456Z, 2026-11-23") == \
        "ext 4021, room 12345, 2026-11-23T09:15:02.123456Z, 2026-11-23"
    assert mask("123456") == "***56" and mask("12345") == "12345"
    assert ev.mask_number("anonymous") == "***" and ev.mask_number("7") == "***7"
