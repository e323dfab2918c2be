"""The event contract in schemas/: the schema itself, its examples, and the two validators.

jsonschema (Draft202012Validator) is the reference implementation of draft 2020-12;
fastjsonschema is what the runtime compiles the same file with. Both must accept every
valid example, reject every invalid one, and agree on every payload we can think of.
"""

import copy
import json
from pathlib import Path

import fastjsonschema
import jsonschema
import pytest

SCHEMAS = Path(__file__).parent.parent / "schemas"
SCHEMA_FILE = SCHEMAS / "event-v1.schema.json"
VALID_DIR = SCHEMAS / "examples" / "valid"
INVALID_DIR = SCHEMAS / "examples" / "invalid"

VALID_FILES = sorted(VALID_DIR.glob("*.json"))
INVALID_FILES = sorted(INVALID_DIR.glob("*.json"))

# Keywords whose meaning is the same in draft-07 (what fastjsonschema implements) and
# draft 2020-12 (what the file declares), plus annotations and $defs/$ref plumbing.
ALLOWED_KEYWORDS = {
    "$schema", "$id", "$defs", "$ref", "title", "description",
    "type", "enum", "const", "properties", "required", "additionalProperties",
    "pattern", "minLength", "maxLength", "minimum", "maximum",
    "items", "uniqueItems", "minItems",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
}


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema() -> dict:
    return load(SCHEMA_FILE)


@pytest.fixture(scope="module")
def reference(schema):
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def fast(schema):
    # compile() walks the schema and may rewrite $ref values in place: give it a copy.
    return fastjsonschema.compile(copy.deepcopy(schema))


def fast_is_valid(fast, event) -> bool:
    try:
        fast(copy.deepcopy(event))  # fastjsonschema may fill in defaults: keep ours intact
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def type_enum(schema) -> list[str]:
    return schema["properties"]["type"]["enum"]


def type_blocks(schema) -> dict[str, dict]:
    """{event type: its then-block} from the allOf of if/then blocks."""
    blocks = {}
    for block in schema["allOf"]:
        name = block["if"]["properties"]["type"]["const"]
        assert name not in blocks, f"two if/then blocks for {name}"
        blocks[name] = block["then"]
    return blocks


# --- the schema itself ----------------------------------------------------------------


def test_schema_is_valid_draft_2020_12(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "urn:callpulse:schema:event:v1"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator


def test_fastjsonschema_compiles_the_file_as_is(schema):
    validate = fastjsonschema.compile(copy.deepcopy(schema))
    assert callable(validate)


def _walk(node, path, found):
    """Collect (path, keyword) for every keyword used in a schema object, recursively."""
    if isinstance(node, bool):
        return
    assert isinstance(node, dict), f"{path}: a schema must be an object or a boolean"
    for key, value in node.items():
        found.append((path, key))
        here = f"{path}/{key}"
        if key in ("properties", "$defs"):
            for name, sub in value.items():
                _walk(sub, f"{here}/{name}", found)
        elif key in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(value):
                _walk(sub, f"{here}/{i}", found)
        elif key in ("additionalProperties", "items", "not", "if", "then", "else"):
            _walk(value, here, found)


def test_schema_uses_only_keywords_shared_by_draft_07_and_2020_12(schema):
    found = []
    _walk(schema, "#", found)
    bad = [f"{path}: {key}" for path, key in found if key not in ALLOWED_KEYWORDS]
    assert not bad, "keywords fastjsonschema (draft-07) would read differently or ignore:\n" + "\n".join(bad)
    refs = [path for path, key in found if key == "$ref"]
    assert refs, "expected $refs to #/$defs"


def test_every_ref_points_into_defs(schema):
    found = []
    _walk(schema, "#", found)

    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(schema):
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in schema["$defs"], ref


def test_everything_is_described(schema):
    assert schema.get("title") and schema.get("description")
    missing = [f"$defs/{n}" for n, d in schema["$defs"].items() if not d.get("description")]
    missing += [f"properties/{n}" for n, d in schema["properties"].items() if not d.get("description")]
    for name, then in type_blocks(schema).items():
        if not then.get("description", "").startswith(f"{name}: "):
            missing.append(f"then-block of {name}")
        for prop, sub in then.get("properties", {}).items():
            if not (isinstance(sub, dict) and sub.get("description")):
                missing.append(f"then-block of {name}: properties/{prop}")
    assert not missing, "no description: " + ", ".join(missing)


def test_one_if_then_block_per_type(schema):
    blocks = type_blocks(schema)
    enum = type_enum(schema)
    assert len(enum) == len(set(enum)), "duplicate types in the type enum"
    assert sorted(blocks) == sorted(enum)


def test_top_level_properties_cover_every_field_a_type_uses(schema):
    """With additionalProperties: false at the top level, a field known only to a then-block
    would be rejected by the top level: every field must be listed there."""
    top = set(schema["properties"])

    def names(node):
        if isinstance(node, dict):
            yield from node.get("required", [])
            yield from node.get("properties", {})
            for key in ("if", "then", "else", "not"):
                if key in node:
                    yield from names(node[key])
            for key in ("allOf", "anyOf", "oneOf"):
                for sub in node.get(key, []):
                    yield from names(sub)

    for name, then in type_blocks(schema).items():
        unknown = set(names(then)) - top
        assert not unknown, f"{name} uses fields the top level does not list: {unknown}"
    assert schema["additionalProperties"] is False


# --- examples -------------------------------------------------------------------------


def test_there_are_examples():
    assert len(VALID_FILES) >= 23
    assert len(INVALID_FILES) >= 15


def test_every_type_has_a_valid_example(schema):
    have = {p.stem for p in VALID_FILES}
    missing = set(type_enum(schema)) - have
    assert not missing, f"no example in {VALID_DIR}: {sorted(missing)}"
    extra = have - set(type_enum(schema))
    assert not extra, f"examples for types the schema does not know: {sorted(extra)}"


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.stem)
def test_valid_example_passes_both_validators(path, reference, fast):
    event = load(path)
    assert event["type"] == path.stem, "file name must be the event type"
    assert event["schema_version"] == 1
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in reference.iter_errors(event)]
    assert not errors, errors
    fast(copy.deepcopy(event))  # raises JsonSchemaValueException on failure


def test_valid_examples_have_unique_event_ids_and_millisecond_times():
    events = [load(p) for p in VALID_FILES]
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "event_id must be unique across the examples"
    for e in events:
        fraction = e["time"][19:].split("Z")[0].split("+")[0].split("-")[0]
        assert len(fraction) >= 4, f"{e['type']}: show millisecond precision ({e['time']})"


def test_valid_examples_show_offsets_and_unicode_queues():
    events = [load(p) for p in VALID_FILES]
    times = " ".join(e["time"] for e in events)
    assert "+08:00" in times and "+03:00" in times and "Z" in times
    queues = {q for e in events for q in [e.get("queue"), *e.get("queues", [])] if q}
    assert "客服" in queues and "продажи" in queues


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_example_fails_both_validators(path, reference, fast):
    doc = load(path)
    assert set(doc) == {"why", "event"}, "an invalid example is {\"why\": ..., \"event\": {...}}"
    assert isinstance(doc["why"], str) and doc["why"].strip()
    event = doc["event"]
    assert isinstance(event, dict)
    assert not reference.is_valid(event), f"jsonschema accepted it, but: {doc['why']}"
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        fast(copy.deepcopy(event))


# --- the two validators agree ---------------------------------------------------------

ODD_VALUES = [
    None, "", " ", "x" * 64, "x" * 65, "x" * 128, "x" * 129, 0, -1, 1, 1.0, 1.5, 5, 6, 100, 101,
    True, False, [], ["a", "a"], ["客服"], {}, {"k": {"nested": 1}}, {"k": None}, {"k": 1.5},
    "2026-11-23T09:14:58.912Z", "2026-11-23T09:14:58.912Z\n", "2026-11-23t09:14:58.912z",
    "2026-11-23T09:14:58.1234567Z", "2026-11-23T09:14:58+0800", "٢٠٢٦-11-23T09:14:58Z",
    "not_ready", "available", "overflow", "to_queue", "connected", "voicemail", "blind", "caller",
]


FEW_VALUES = [None, "", "x", 1, 7, True, [], {}]


def _mutations(event):
    """The event, then each field dropped or replaced by odd values, then fields it lacks added."""
    yield event
    for key in event:
        yield {k: v for k, v in event.items() if k != key}
        for value in ODD_VALUES:
            yield {**event, key: value}
    for key in ("reason", "result", "csat", "nps", "resolved", "state", "queues", "queue", "agent_id", "extra"):
        if key not in event:
            for value in FEW_VALUES:
                yield {**event, key: value}


def test_both_validators_agree(reference, fast):
    events = [e for p in VALID_FILES for e in _mutations(load(p))]
    events += [load(p)["event"] for p in INVALID_FILES]
    disagreements = []
    accepted = 0
    for event in events:
        ref_ok = reference.is_valid(event)
        accepted += ref_ok
        if ref_ok != fast_is_valid(fast, event):
            disagreements.append(f"jsonschema={ref_ok}, fastjsonschema={not ref_ok}: {event!r}")
    assert not disagreements, f"{len(disagreements)} of {len(events)}:\n" + "\n".join(disagreements[:20])
    # Guard against a vacuous pass (e.g. both rejecting everything).
    assert 0 < accepted < len(events)


def test_both_validators_accept_and_reject_the_same_edge_cases(reference, fast):
    """Spot checks with the expected answer, so agreement is not agreement on a wrong answer."""
    base = load(VALID_DIR / "call.offered.json")
    cases = [
        ({**base, "time": "2026-11-23T09:14:58Z"}, True),  # 0 fractional digits is allowed
        ({**base, "time": "2026-11-23T09:14:58.123456-05:00"}, True),  # 6 digits is the maximum
        ({**base, "time": "2026-11-23T09:14:58.912Z\n"}, False),  # Python's $ would allow this
        ({**base, "time": "2026-11-23T09:14:58.912z"}, False),  # upper-case Z only
        ({**base, "agent_id": "agent.jsmith"}, True),  # a common field on any type
        ({**base, "attributes": {}}, True),
        ({**base, "attributes": {"tier": "gold", "score": 0.7, "vip": True}}, True),
        ({**base, "attributes": {"tags": ["a"]}}, False),
        ({**base, "schema_version": True}, False),  # a boolean is not the integer 1
        ({**base, "priority": 0}, True),
        ({**base, "priority": -1}, False),
        ({**base, "caller": "anonymous"}, True),
    ]
    state = load(VALID_DIR / "agent.state_changed.json")
    cases += [
        ({**state, "state": "available", "reason": None}, False),  # reason, when present, is a string
        ({k: v for k, v in state.items() if k != "reason"} | {"state": "available"}, True),
        ({**state, "queues": []}, True),  # may be empty
    ]
    survey = load(VALID_DIR / "call.survey.json")
    only = {k: v for k, v in survey.items() if k not in ("csat", "nps", "resolved")}
    cases += [
        ({**only, "resolved": False}, True),  # false still counts as an answer
        ({**only, "nps": 0}, True),
        ({**only, "csat": 0}, False),
    ]
    for event, expected in cases:
        assert reference.is_valid(event) is expected, event
        assert fast_is_valid(fast, event) is expected, event
