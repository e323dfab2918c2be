"""Fuzzing the first stage and the model with hypothesis (issue 13).

- `Router.validate` never raises, whatever the bytes (or a record with no value), and sorts every
  message into valid or rejected-with-a-reason; every rejection's dead letter is JSON carrying the
  original bytes;
- what it accepts agrees with the reference JSON Schema validator, for mutations of valid events;
- the second stage (`QueueStates.apply_batch`, i.e. `QueueModel.apply`) never raises for any
  sequence of schema-valid events, and a worker rebuilding from the changelog arrives at the same
  state as the live one.

The e2e counterpart, through a real broker and worker, is tests/e2e/test_fuzz.py.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from callpulse import events as ev
from callpulse.config import load_config
from callpulse.kpi.agents import AgentShard
from callpulse.kpi.model import APPLIED, DUPLICATE
from callpulse.pipeline.state import QueueStates
from helpers import event, raw

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
TEMPLATES = {p.stem: json.loads(p.read_text()) for p in sorted((SCHEMAS / "examples" / "valid").glob("*.json"))}
ROUTER = ev.Router(max_future_seconds=math.inf)
AT_T0 = ev.Router(max_future_seconds=300, clock=lambda: T0)  # a worker whose clock says T0
REFERENCE = jsonschema.Draft202012Validator(ev.load_schema())
T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
CONFIG = load_config(None, {})
# No example database: it would write .hypothesis/ into the checkout. A failure prints the example.
FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def check_classification(records: list[tuple[int, bytes | None]], router: ev.Router = ROUTER) -> tuple[list, list]:
    """Validate and check the invariants every outcome must meet; returns (valid, rejected)."""
    valid, rejected = router.validate(records)
    assert len(valid) + len(rejected) == len(records)
    by_offset = dict(records)
    for v in valid:
        assert v.raw is by_offset[v.offset]
        assert v.type in router.known_types and isinstance(v.time, float) and math.isfinite(v.time)
        assert all(isinstance(q, str) and q for q in v.queues)
    originals = [r for _, r in records]
    for r in rejected:
        assert r.reason in ev.REJECT_REASONS and r.detail
        assert any(r.raw is o for o in originals) or (r.raw == b"" and None in originals)
        letter = orjson.loads(r.dead_letter("route"))
        assert letter["reason"] == r.reason and letter["detail"] == r.detail and letter["stage"] == "route"
        carried = letter["original"].encode() if "original" in letter else base64.b64decode(letter["original_base64"])
        assert carried == r.raw
    return valid, rejected


# ---- any bytes --------------------------------------------------------------------------------

@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_validate_never_raises_on_random_bytes(blobs):
    check_classification(list(enumerate(blobs)))


def _valid_bytes() -> st.SearchStrategy[bytes]:
    return st.sampled_from([orjson.dumps(t) for t in TEMPLATES.values()])


@FUZZ
@given(_valid_bytes(), st.data())
def test_every_truncation_and_byte_flip_of_a_valid_event_is_classified(original, data):
    cut = data.draw(st.integers(0, len(original) - 1))
    _, rejected = check_classification([(0, original[:cut])])
    assert [r.reason for r in rejected] == [ev.MALFORMED_JSON]  # a proper prefix of an object is no JSON
    position = data.draw(st.integers(0, len(original) - 1))
    flipped = original[:position] + bytes([data.draw(st.integers(0, 255))]) + original[position + 1:]
    check_classification([(0, flipped)])


# JSON values of every kind, including numbers no float holds (orjson rejects those as malformed).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(json_values)
def test_validate_never_raises_on_any_json_value(value):
    check_classification([(0, json.dumps(value).encode())])


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e400", "1" * 400, "[" * 5000, '{"a":' * 5000])
def test_non_json_numbers_and_deep_nesting_are_malformed(text):
    base = dict(TEMPLATES["call.ringing"])
    for blob in (text.encode(), orjson.dumps(base).replace(b'"attempt":1', b'"attempt":' + text.encode())):
        _, rejected = check_classification([(0, blob)])
        assert [r.reason for r in rejected] == [ev.MALFORMED_JSON], blob[:80]


def test_a_record_without_a_value_is_rejected_not_raised_on():
    """A Kafka record whose value is null (a tombstone) used to make the dead letter raise
    AttributeError ('NoneType' object has no attribute 'decode'), which stopped the first stage."""
    _, rejected = check_classification([(0, None), (1, b"")])
    assert [r.reason for r in rejected] == [ev.MALFORMED_JSON, ev.MALFORMED_JSON]
    assert orjson.loads(rejected[0].dead_letter("route"))["original"] == ""


# ---- mutations of valid events against the reference validator ------------------------------

FIELDS = sorted(ev.load_schema()["properties"]) + ["unknown_field"]


@st.composite
def mutated_events(draw) -> dict:
    e = dict(draw(st.sampled_from(list(TEMPLATES.values()))))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["delete", "replace", "add", "retype"]))
        name = draw(st.sampled_from(FIELDS))
        if how == "delete":
            e.pop(name, None)
        elif how == "replace" or how == "add":
            e[name] = draw(json_values)
        else:  # the same field, as another template's value of it or the value of another type
            e[name] = draw(st.sampled_from([t[name] for t in TEMPLATES.values() if name in t] or [None]))
    return e


@FUZZ
@given(mutated_events())
def test_runtime_validator_agrees_with_the_reference_on_mutated_events(e):
    try:
        blob = json.dumps(e, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate drawn by st.text: orjson rejects it, tested above
        assume(False)
    valid, rejected = check_classification([(0, blob)])
    if REFERENCE.is_valid(e):
        # the schema allows it: only the time checks of the first stage can still reject it
        assert valid or rejected[0].detail.startswith("data.time"), rejected[0]
    else:
        assert rejected and rejected[0].reason in (ev.SCHEMA_VIOLATION, ev.UNKNOWN_TYPE), e


# ---- times ------------------------------------------------------------------------------------

offsets = st.sampled_from(["Z", "+00:00", "-00:00", "+08:00", "-23:59", "+23:59", "+05:45"])


@FUZZ
@given(st.integers(1, 9999), st.integers(1, 12), st.integers(1, 31), st.integers(0, 23), st.integers(0, 59),
       st.integers(0, 59), st.sampled_from(["", ".5", ".123", ".999999"]), offsets)
def test_any_rfc3339_time_is_accepted_or_rejected_and_accepted_ones_can_be_applied(y, mo, d, h, mi, s, frac, off):
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{off}"
    valid, rejected = check_classification([(0, raw(dict(TEMPLATES["agent.state_changed"], time=text, queues=["q"])))], AT_T0)
    if rejected:
        assert rejected[0].reason in (ev.SCHEMA_VIOLATION, ev.FUTURE_TIME)
        return
    assert 0.0 <= valid[0].time <= T0 + 300  # 1970-01-01T00:00:00Z .. the worker clock + 300 s
    states = QueueStates(CONFIG)
    states.apply_batch("q", 0, 0, [valid[0].raw])  # never raises: the first stage let it through
    states.apply_batch("q", 0, 1, [raw(dict(TEMPLATES["agent.state_changed"], time=ev.format_time(T0), queues=["q"], state="available"))])
    states.read_all()


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00Z", "0001-01-01T12:00:00Z", "0001-01-02T00:00:00+01:00",
                                  "1969-12-31T23:59:59.999Z", "1970-01-01T00:59:59+01:00"])
def test_times_before_1970_are_rejected_by_the_first_stage(text):
    """Such times passed the first stage, and the year-1 ones then made QueueModel.apply raise
    (ValueError 'ordinal must be >= 1', 'year 0 is out of range', OverflowError) in the second
    stage, which would have stopped the aggregate agent on every redelivery of the batch."""
    _, rejected = check_classification([(0, raw(dict(TEMPLATES["call.offered"], time=text)))])
    assert [r.reason for r in rejected] == [ev.SCHEMA_VIOLATION]
    assert "before 1970" in rejected[0].detail


def test_the_unix_epoch_itself_is_accepted():
    valid, _ = check_classification([(0, raw(dict(TEMPLATES["call.offered"], time="1970-01-01T00:00:00Z")))])
    assert valid and valid[0].time == 0.0


# ---- the model: any sequence of schema-valid events -------------------------------------------

QUEUES = ["q1", "q2", "客服", "a\x00b", "x" * 128]
CALLS = [f"c{i}" for i in range(6)]
AGENTS = [f"a{i}" for i in range(3)]
# time steps (ms) between events: mostly small, sometimes large jumps forward or back
steps = st.one_of(st.integers(-5_000, 30_000), st.sampled_from([-700_000, -90_000, 61_000, 3_600_000, 86_400_000 * 3]))


@st.composite
def valid_event_sequences(draw) -> list[bytes]:
    t_ms = draw(st.sampled_from([int(T0 * 1000), 0, 86_400_000 * 3]))  # also at the very start of 1970
    out = []
    for i in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(sorted(TEMPLATES)))
        e = dict(TEMPLATES[kind])
        t_ms = max(0, t_ms + draw(steps))
        e["time"] = ev.format_time(t_ms / 1000)
        e["event_id"] = f"e{draw(st.integers(0, 15))}" if draw(st.booleans()) else f"u{i}"  # repeats too
        for name, pool in (("queue", QUEUES), ("call_id", CALLS), ("agent_id", AGENTS), ("target_queue", QUEUES)):
            if name in e:
                e[name] = draw(st.sampled_from(pool))
        if "queues" in e:
            e["queues"] = draw(st.lists(st.sampled_from(QUEUES), unique=True, max_size=3))
        if kind == "agent.state_changed":
            e["state"] = draw(st.sampled_from(["available", "not_ready", "on_call", "wrap_up"]))
            e["reason"] = draw(st.sampled_from(["break", "lunch", "x" * 64]))
        if kind == "call.flowed_out":
            e["reason"] = draw(st.sampled_from(["timeout", "exit_key", "overflow", "callback", "transfer",
                                                "queue_full", "no_agents", "other"]))
        if kind == "call.ring_no_answer":
            e["ring_seconds"] = draw(st.sampled_from([0, 0.001, 1e308]))
        out.append(orjson.dumps(e))
    return out


def _comparable(model, now: float) -> dict:
    """What a model holds and shows at clock `now`, leaving out what reads change (reads prune the
    rolling windows' seconds and agent-state steps earlier than an unread model would)."""
    state = model.to_state()
    for read_side in ("understaffed_since", "understaffed_read_at", "buckets", "agent_seconds"):
        state.pop(read_side, None)  # (a queue's; an agent's model has none of them)
    if isinstance(model, AgentShard):  # which periods got a preliminary record: by the clock's reads
        for agent in state["agents"].values():
            agent.pop("prelim")
    # ids older than the dedup horizon are forgotten, by the live model and the rebuilt one alike
    for each in model.agents.values() if isinstance(model, AgentShard) else [model]:  # a shard: its every agent
        cutoff = math.floor(each.watermark - each.dedup_horizon)
        assert not [s for s, ids in each.to_state()["seen"] if s < cutoff]
    view = model.read(now)
    if isinstance(view, list):  # an agent shard: its agents' views
        return orjson.loads(orjson.dumps({"state": state, "view": view}, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS))
    for name in ("answer_wait_histogram", "abandon_wait_histogram"):
        if name in view:
            view[name] = view[name].to_state()
    view.pop("staffing", None)  # understaffed_seconds depends on when earlier reads happened
    return orjson.loads(orjson.dumps({"state": state, "view": view}, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS))


@settings(FUZZ, max_examples=150)  # ~0.15 s per example
@given(valid_event_sequences(), st.lists(st.integers(1, 12), min_size=1, max_size=10),
       st.lists(st.sampled_from([0.0, 10.0, 31.0]), min_size=1, max_size=10))
def test_model_never_raises_and_a_rebuild_matches_the_live_state(raws, batch_sizes, wall_steps):
    wall = [T0]
    states = QueueStates(CONFIG, wall=lambda: wall[0])
    table: dict[bytes, bytes] = {}
    offset, start, n = 0, 0, 0
    applied: list[bytes] = []
    while start < len(raws):
        chunk = raws[start:start + batch_sizes[n % len(batch_sizes)]]
        valid, rejected = check_classification(list(enumerate(chunk)))
        assert not rejected, rejected  # the generator makes schema-valid events only
        for queue, batch in ev.by_queue(valid).items():
            result = states.apply_batch(queue, 0, offset, batch)
            offset += 1
            applied += batch
            for r in result.rejected:  # too late: from this batch; unmatched: from this or an earlier one
                assert r.reason in (ev.TOO_LATE, ev.UNMATCHED) and r.raw in (batch if r.reason == ev.TOO_LATE else applied)
                orjson.loads(r.dead_letter("aggregate"))
            for key, value in states.changelog_writes(result):
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
            states.interval_messages(result.intervals)
        wall[0] += wall_steps[n % len(wall_steps)]  # snapshots come due by the wall clock
        states.interval_messages(states.due_interval_records())
        now, views = states.read_all()
        orjson.dumps(views, option=orjson.OPT_NON_STR_KEYS, default=lambda h: h.to_state())
        start += len(chunk)
        n += 1
    rebuilt = QueueStates(CONFIG, wall=lambda: wall[0])
    rebuilt.resume({0}, list(table.items()))
    assert sorted(rebuilt.models) == sorted(states.models)
    now = states.clock.now()
    for queue, model in states.models.items():
        assert _comparable(rebuilt.models[queue], now) == _comparable(model, now), queue


# ---- duplicate event ids with different content -----------------------------------------------

def test_an_event_id_counts_once_per_queue_first_one_wins_whatever_the_content():
    """What the pipeline does with a reused event_id (the schema forbids reusing one for another
    event): within a queue the first event applied wins and later ones with that id are dropped as
    duplicates (counted in events_duplicate_total, not dead-lettered), whatever their content or
    time (adapters re-send with times off by a second or two). Dedup is per queue, so the same id
    in another queue's event counts there: an agent event is one event in each of its queues."""
    states = QueueStates(CONFIG)
    first = event("call.offered", T0, queue="q", call_id="c1", event_id="same")
    other_content = event("call.offered", T0 + 5, queue="q", call_id="c2", event_id="same")
    other_type = event("call.abandoned", T0 + 6, queue="q", call_id="c1", event_id="same")
    result = states.apply_batch("q", 0, 0, [raw(first), raw(other_content), raw(other_type)])
    assert result.outcomes == {APPLIED: 1, DUPLICATE: 2} and result.rejected == []
    assert states.models["q"].totals[states.models["q"].index["offered"]] == 1
    assert set(states.models["q"].waiting) == {"c1"}
    elsewhere = states.apply_batch("r", 1, 1, [raw(event("call.offered", T0, queue="r", call_id="c9", event_id="same"))])
    assert elsewhere.outcomes == {APPLIED: 1}


@pytest.mark.xfail(strict=True, reason="model.py: a second outcome of a call whose offer has not come yet replaces "
                                       "the first in QueueModel.pending; dead-lettering it instead cost 115 valid events "
                                       "in the 48 h soak, so the fix was taken back")
def test_two_outcomes_before_the_offer_lose_nothing():
    states = QueueStates(CONFIG)
    batch = [event("call.abandoned", T0, queue="q", call_id="c"), event("call.answered", T0 + 1, queue="q", call_id="c", agent_id="a"),
             event("call.offered", T0 + 2, queue="q", call_id="c"), event("call.offered", T0 + 200, queue="q", call_id="z")]
    result = states.apply_batch("q", 0, 0, [raw(e) for e in batch])
    model = states.models["q"]
    counted = model.totals[model.index["answered"]] + model.totals[model.index["abandoned"]]
    assert counted + len(result.rejected) == 2  # as when the offer comes first: one counts, one is dead-lettered


def test_late_ids_in_a_new_queue_are_forgotten_too():
    states = QueueStates(CONFIG)
    batch = [event("call.offered", T0, queue="q", call_id="c1", event_id="first"),
             event("call.offered", T0 - 10, queue="q", call_id="c2", event_id="late"),  # within the lateness
             event("call.offered", T0 + 2 * CONFIG.stream.dedup_seconds, queue="q", call_id="c3", event_id="much-later")]
    for offset, e in enumerate(batch):
        states.apply_batch("q", 0, offset, [raw(e)])
    assert states.models["q"].seen_ids == {"much-later"}
