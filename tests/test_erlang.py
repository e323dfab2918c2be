"""Erlang B, C and A against published worked examples (../shared/data/erlang), their identities,
and a seeded discrete-event simulation of M/M/c+M written here."""

import heapq
import json
import math
import random
from pathlib import Path

import pytest

from callpulse.erlang import agents_required, erlang_a, erlang_b, erlang_c, heads

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
CASES = json.loads((DATA / "erlang" / "reference_cases.json").read_text())


def digits(published: float) -> float:
    """Half a unit of the last digit printed: the published precision."""
    text = repr(published)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10 ** -decimals


def case_inputs(i: dict) -> tuple[float, float, float]:
    """(arrivals per second, AHT seconds, threshold seconds) of a case, whatever its units."""
    if "calls" in i:
        return i["calls"] / i["interval_s"], i["aht_s"], i["answer_within_s"]
    if "lambda_per_s" in i:
        return i["lambda_per_s"], i["aht_s"], i["asa_target_s"]
    if "tta_s" in i:
        return i["lambda_per_min"] / 60, i["aht_min"] * 60, i["tta_s"]
    return i["lambda_per_min"] / 60, i["aht_min"] * 60, i.get("t_min", 0) * 60


def test_the_reference_file_has_every_model():
    assert {c["model"] for c in CASES} == {"ErlangB", "ErlangC", "ErlangA"} and len(CASES) == 13


@pytest.mark.parametrize("case", [c for c in CASES if c["model"] == "ErlangB"], ids=lambda c: c["name"])
def test_erlang_b(case):
    assert erlang_b(case["inputs"]["c"], case["inputs"]["A"]) == pytest.approx(case["computed"]["B"], rel=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if c["model"] == "ErlangC"], ids=lambda c: c["name"])
def test_erlang_c(case):
    rate, aht, threshold = case_inputs(case["inputs"])
    p = erlang_c(rate, aht, case["inputs"]["agents"], threshold)
    computed = case["computed"]
    assert p.wait_probability == pytest.approx(computed["Pw"], rel=1e-10)
    assert p.service_level == pytest.approx(computed["SL"], rel=1e-10)
    assert p.average_wait_seconds == pytest.approx(computed["ASA"], rel=1e-10)
    assert p.occupancy == pytest.approx(computed["occupancy"], rel=1e-12)
    published = case["published"] or {}
    for name, value in (("Pw", p.wait_probability), ("SL", p.service_level), ("ASA_s", p.average_wait_seconds),
                        ("occupancy", p.occupancy)):
        if name in published:
            assert abs(value - published[name]) <= digits(published[name]) + 1e-12, name


@pytest.mark.parametrize("case", [c for c in CASES if c["model"] == "ErlangA"], ids=lambda c: c["name"])
def test_erlang_a(case):
    i, computed = case["inputs"], case["computed"]
    rate, aht, threshold = case_inputs(i)
    p = erlang_a(rate, aht, i["agents"], threshold, i["patience_min"] * 60)
    assert p.wait_probability == pytest.approx(computed["Pw"], rel=1e-10)
    assert p.abandon_probability == pytest.approx(computed["Pab"], rel=1e-10)
    assert p.occupancy == pytest.approx(computed["occupancy"], rel=1e-10)
    assert p.average_wait_all_seconds == pytest.approx(computed["EWq_all"] * 60, rel=1e-10)
    if "SL_served_within_t_over_all_arrivals" in computed:
        assert p.service_level == pytest.approx(computed["SL_served_within_t_over_all_arrivals"], rel=1e-10)
    published = case["published"]
    assert abs(p.wait_probability - published["Pw"]) <= digits(published["Pw"]) + 1e-12
    if "SL" in published:
        assert abs(p.service_level - published["SL"]) <= digits(published["SL"])
        assert abs(p.abandon_probability - published["Pab"]) <= digits(published["Pab"])
        assert abs(p.average_wait_all_seconds / 60 - published["ASA_min"]) <= digits(published["ASA_min"])


def test_the_worked_example_needs_14_agents_15_at_70_percent_occupancy_and_22_heads():
    rate, aht = 100 / 1800, 180.0
    assert agents_required(rate, aht, 20, 0.8).agents == 14  # 13 give 79.6 %, 14 give 88.8 %
    at_most_70 = agents_required(rate, aht, 20, 0.8, max_occupancy=0.7)
    assert at_most_70.agents == 15 and at_most_70.occupancy == pytest.approx(2 / 3)
    assert heads(15, 0.3) == 22  # pyworkforce: 15 positions, 30 % shrinkage
    assert heads(14, 0.0) == 14


def test_agents_for_an_asa_target_as_the_ruby_calculator_counts_them():
    # smallest c with ASA below 20 s at 0.01 calls/s and AHT 300 s: 6 (published)
    asa = {c: erlang_c(0.01, 300, c, 20).average_wait_seconds for c in (4, 5, 6)}
    assert asa[5] >= 20 > asa[6]


def test_erlang_a_with_endless_patience_is_erlang_c():
    c_model = erlang_c(100 / 1800, 180, 12, 20)
    a_model = erlang_a(100 / 1800, 180, 12, 20, patience=1e12)
    for name in ("wait_probability", "service_level", "average_wait_seconds", "occupancy"):
        assert getattr(a_model, name) == pytest.approx(getattr(c_model, name), rel=1e-6), name
    assert erlang_a(100 / 1800, 180, 12, 20, patience=None) == c_model


def test_erlang_a_with_patience_equal_to_handle_time_has_the_poisson_tail():
    # theta = mu: the number in the system is Poisson(A), as in M/M/infinity
    load = 10.0
    for agents in (5, 8, 10, 14, 20):
        p = erlang_a(load / 180, 180, agents, 20, patience=180)
        tail = 1 - sum(math.exp(-load) * load ** n / math.factorial(n) for n in range(agents))
        assert p.wait_probability == pytest.approx(tail, rel=1e-10), agents


def test_erlang_a_works_where_erlang_c_cannot():
    # more load than agents: Erlang C has no steady state, Erlang A has (callers hang up)
    with pytest.raises(ValueError, match="more agents than the load"):
        erlang_c(15 / 180, 180, 12, 20)
    p = erlang_a(15 / 180, 180, 12, 20, patience=120)
    assert 0 < p.abandon_probability < 1 and p.occupancy < 1
    assert agents_required(15 / 180, 180, 20, 0.8, patience=120).agents > 12


@pytest.mark.parametrize("load, patience, target, threshold, max_occupancy", [
    (100, 30, 0.8, 20, None), (50, 60, 0.8, 20, None), (20, 10, 0.5, 20, None), (10, 120, 0.8, 20, None),
    (15, 120, 0.8, 20, None), (3, 5, 0.95, 0, None), (40, 30, 0.8, 10, 0.7), (0.5, 600, 0.2, 60, None),
])
def test_agents_required_is_the_fewest_that_meet_the_target(load, patience, target, threshold, max_occupancy):
    """Against a search from one agent up: Erlang A can need fewer agents than the load (100
    Erlangs with 30 s patience: 84), and the answer is the first count that meets the target."""
    got = agents_required(load / 180, 180, threshold, target, patience=patience, max_occupancy=max_occupancy)

    def meets(c):
        p = erlang_a(load / 180, 180, c, threshold, patience)
        return p.service_level >= target and (max_occupancy is None or p.occupancy <= max_occupancy)

    assert meets(got.agents) and not any(meets(c) for c in range(1, got.agents))
    assert got == erlang_a(load / 180, 180, got.agents, threshold, patience)


def test_infinite_patience_is_erlang_c():
    assert agents_required(10 / 180, 180, 20, 0.8, patience=math.inf) == agents_required(10 / 180, 180, 20, 0.8)


def simulate_mmc_m(rate: float, aht: float, agents: int, patience: float, threshold: float, calls: int, seed: int):
    """A plain M/M/c+M simulation: FCFS, exponential arrivals, handle times and patience."""
    rng = random.Random(seed)
    now, busy_until = 0.0, [0.0] * agents  # a min-heap of when each agent is free
    heapq.heapify(busy_until)
    waited = abandoned = in_time = 0
    served_waits = 0.0
    # With FCFS and exponential patience, a caller's wait is known on arrival: it starts service
    # when the earliest agent is free after everyone ahead who did not hang up.
    for _ in range(calls):
        now += rng.expovariate(rate)
        free = busy_until[0]
        start = max(now, free)
        gives_up = now + rng.expovariate(1 / patience)
        if start > now:
            waited += 1
        if gives_up < start:
            abandoned += 1
            continue
        heapq.heapreplace(busy_until, start + rng.expovariate(1 / aht))
        served_waits += start - now
        in_time += start - now <= threshold
    return {"Pw": waited / calls, "Pab": abandoned / calls, "SL": in_time / calls,
            "ASA": served_waits / (calls - abandoned)}


def test_a_seeded_simulation_agrees_with_erlang_a():
    """Tolerance: 0.01 absolute on the probabilities and 5 % on ASA. At 300,000 calls the
    simulation's own error is a few thousandths (it starts empty; the warm-up is negligible at
    that length); measured differences: Pw 0.005, Pab 0.002, SL 0.005, ASA 1.9 %."""
    rate, aht, agents, patience, threshold = 100 / 1800, 180.0, 11, 300.0, 20.0
    sim = simulate_mmc_m(rate, aht, agents, patience, threshold, calls=300_000, seed=7)
    model = erlang_a(rate, aht, agents, threshold, patience)
    assert sim["Pw"] == pytest.approx(model.wait_probability, abs=0.01)
    assert sim["Pab"] == pytest.approx(model.abandon_probability, abs=0.01)
    assert sim["SL"] == pytest.approx(model.service_level, abs=0.01)
    assert sim["ASA"] == pytest.approx(model.average_wait_seconds, rel=0.05)
    assert model.abandon_probability > 0.02  # the case really exercises abandonment
