"""Erlang B, C and A against published worked examples (../shared/data/erlang), their identities,
and a seeded discrete-event simulation of M/M/c+M written here; through Erlang B's underflow
(issue 13) against exact fractions and 80-digit sums, the integral forms against the direct sums,
huge sizes against their Halfin-Whitt limits, and hypothesis over the whole input space."""

import heapq
import json
import math
import random
import time
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callpulse.kpi import erlang as erlang_module
from callpulse.kpi.erlang import (
    MAX_AGENTS,
    NoStaffing,
    Projection,
    agents_required,
    erlang_a,
    erlang_b,
    erlang_c,
    heads,
)

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


# ---- issue 13: Erlang B underflow, the whole input space ------------------------------------
# Each result is checked against an independent computation: exact fractions for Erlang B, and
# the same sums as the module in 80-digit decimals (whose exponent range has no underflow) for
# Erlang A, term by term the way the module used to compute them in floating point.


PROBABILITIES = ("wait_probability", "service_level", "abandon_probability", "occupancy")
AVERAGES = ("average_wait_seconds", "average_wait_all_seconds")


def exact_erlang_b(agents: int, load: float) -> Fraction:
    b, a = Fraction(1), Fraction(load)
    for k in range(1, agents + 1):
        b = a * b / (k + a * b)
    return b


def decimal_erlang_a(rate: float, aht: float, agents: int, threshold: float, patience: float) -> dict:
    """M/M/c+M by its stationary sums in 80-digit decimals: weights relative to state c, the
    states below c weighing 1/B - 1, the tail summed until it changes nothing at that precision;
    served within T by the incomplete beta sum per state (module docstring)."""
    with localcontext() as ctx:
        ctx.prec, ctx.Emin, ctx.Emax = 80, -10 ** 9, 10 ** 9
        rate, aht, threshold, patience = Decimal(rate), Decimal(aht), Decimal(threshold), Decimal(patience)
        load, b = rate * aht, Decimal(1)
        for k in range(1, agents + 1):
            b = load * b / (k + load * b)
        below, theta, service = 1 / b - 1, 1 / patience, agents / aht
        x, a = (-theta * threshold).exp(), 1 + service / theta
        x_a = (-a * theta * threshold).exp()
        weight, k, waiting, queue, in_time, served_wait = Decimal(1), 0, Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        series, term, stage = Decimal(0), Decimal(1), Decimal(0)
        while True:
            if k:
                term *= (a + k - 1) / k * (1 - x)
            series += term
            stage += 1 / (service + (k + 1) * theta)
            moves_on = service / (service + (k + 1) * theta)
            waiting += weight
            queue += k * weight
            in_time += weight * moves_on * (1 - x_a * series)
            served_wait += weight * moves_on * stage
            k += 1
            weight *= rate / (service + k * theta)
            if rate < service + k * theta and weight < Decimal(10) ** -75 * waiting:
                break
        total = below + waiting
        abandon = theta * (queue / total) / rate
        return {"wait_probability": waiting / total, "service_level": (below + in_time) / total,
                "average_wait_seconds": served_wait / total / (1 - abandon),
                "average_wait_all_seconds": queue / total / rate, "abandon_probability": abandon,
                "occupancy": rate * (1 - abandon) * aht / agents}


def assert_close(got: Projection, expected: dict, rel: float = 1e-9, absolute: float = 1e-13) -> None:
    for name, value in expected.items():
        value, result = float(value), getattr(got, name)
        if name in PROBABILITIES:
            assert abs(result - value) <= absolute + rel * abs(value), (name, result, value)
        else:
            assert result == pytest.approx(value, rel=rel, abs=1e-300), (name, result, value)


@pytest.mark.parametrize("agents, load", [
    (150, 1.0), (165, 1.0), (169, 1.0), (170, 1.0), (171, 1.0), (175, 1.0), (200, 1.0), (400, 1.0),
    (200, 0.01), (1000, 0.5), (60, 1e-6), (3, 1e-300), (2, 5e-324), (300, 250.0), (1000, 990.0), (2000, 1900.0),
])
def test_erlang_b_is_exact_through_its_underflow(agents, load):
    """Around and past the smallest double (B(170, 1) = 5e-308 is about where it ends) Erlang B
    is the exact value rounded, down to 0.0 for a value too small to be a double: never an error
    and never a wrong non-zero."""
    exact = exact_erlang_b(agents, load)
    got = erlang_b(agents, load)
    assert got == pytest.approx(float(exact), rel=1e-12, abs=1e-320)
    if exact < Fraction(1, 10 ** 330):
        assert got == 0.0


@pytest.mark.parametrize("rate, aht, agents, threshold, patience", [
    (1 / 180, 180, 150, 20, 60), (1 / 180, 180, 165, 20, 60), (1 / 180, 180, 170, 20, 60),
    (1 / 180, 180, 171, 20, 60), (1 / 180, 180, 175, 20, 60), (1 / 180, 180, 200, 20, 60),
    (0.01 / 180, 180, 200, 20, 60),  # issue 13: B about 1e-660, far below the smallest double
    (0.01 / 180, 180, 1000, 0, 1), (3 / 180, 180, 60, 20, 600), (15 / 180, 180, 12, 20, 120),
    (10 / 180, 180, 10, 0, 180), (45 / 30, 30, 40, 5, 3000), (0.3, 300, 120, 10, 30), (2.0, 60, 80, 20, 45),
])
def test_erlang_a_matches_80_digit_sums_where_erlang_b_underflows(rate, aht, agents, threshold, patience):
    assert_close(erlang_a(rate, aht, agents, threshold, patience),
                 decimal_erlang_a(rate, aht, agents, threshold, patience))


def test_issue_13_many_agents_at_a_small_load():
    """The benchmark's queue: 200 agents for 0.01 Erlangs. Erlang B is about 1e-660 and used to
    underflow to 0.0, and Erlang A divided by it (ZeroDivisionError for the whole scrape). The
    chance that a caller finds 200 agents busy is 0 to every digit a double has."""
    p = erlang_a(0.01 / 180, 180, 200, 20, 60)
    assert p == Projection(agents=200, wait_probability=0.0, service_level=1.0, average_wait_seconds=0.0,
                           average_wait_all_seconds=0.0, abandon_probability=0.0, occupancy=0.01 / 200)
    c = erlang_c(0.01 / 180, 180, 200, 20)
    assert (c.wait_probability, c.service_level, c.average_wait_seconds) == (0.0, 1.0, 0.0)
    assert agents_required(0.01 / 180, 180, 20, 0.8, patience=60).agents == 1
    assert agents_required(0.01 / 180, 180, 20, 0.8).agents == 1


def test_the_integral_forms_agree_with_the_direct_sums(monkeypatch):
    """Sizes beyond MAX_TERMS use integrals instead of sums (module docstring). Forced on sizes
    both can do (MAX_TERMS = 0), they agree to 1e-11: overloaded and not, patient and not,
    thousands of agents, and where Erlang B underflows."""
    rng = random.Random(13)
    cases = [(rng.uniform(0.05, 1.5) * c / aht, aht, c, rng.choice([0, 5, 20, 60, 300]), rng.choice([1, 60, 300, 1e5]))
             for c, aht in [(rng.choice([1, 7, 40, 300, 2000]), rng.choice([30, 180, 600])) for _ in range(40)]]
    cases += [(1 / 180, 180, 200, 20, 60), (0.01 / 180, 180, 200, 20, 60), (2000 / 180, 180, 2100, 20, 1e4)]
    direct = [(erlang_a(*case), erlang_b(case[2], case[0] * case[1])) for case in cases]
    monkeypatch.setattr(erlang_module, "MAX_TERMS", 0)
    for case, (sums, b) in zip(cases, direct):
        integral = erlang_a(*case)
        assert erlang_b(case[2], case[0] * case[1]) == pytest.approx(b, rel=1e-11, abs=1e-300)
        for name in PROBABILITIES:
            assert getattr(integral, name) == pytest.approx(getattr(sums, name), rel=1e-11, abs=1e-12), (case, name)
        for name in AVERAGES:
            assert getattr(integral, name) == pytest.approx(getattr(sums, name), rel=1e-11, abs=1e-300), (case, name)


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


@pytest.mark.parametrize("load", [1e6, 1e9, 1e12])
def test_huge_sizes_take_milliseconds_and_meet_the_halfin_whitt_limit(load):
    """c = A + beta sqrt(A) agents at a huge load: Erlang B tends to phi(beta) / (sqrt(A) Phi(beta))
    (Jagerman) and Erlang C's Pw to 1 / (1 + beta Phi(beta) / phi(beta)) (Halfin-Whitt), both
    with a relative error of order 1/sqrt(A); a recursion over the agents would take hours."""
    beta = 1.0
    agents = round(load + beta * math.sqrt(load))
    beta = (agents - load) / math.sqrt(load)
    phi, cdf = math.exp(-beta * beta / 2) / math.sqrt(2 * math.pi), normal_cdf(beta)
    started = time.perf_counter()
    b = erlang_b(agents, load)
    c = erlang_c(load / 300, 300, agents, 20)
    assert time.perf_counter() - started < 2.0
    assert b == pytest.approx(phi / (math.sqrt(load) * cdf), rel=10 / math.sqrt(load))
    assert c.wait_probability == pytest.approx(1 / (1 + beta * cdf / phi), rel=10 / math.sqrt(load))
    a = erlang_a(load / 300, 300, agents, 20, patience=600.0)  # y = 2e9 callers per mean patience at 1e12
    assert 0 <= a.abandon_probability < c.wait_probability and a.wait_probability < c.wait_probability


@pytest.mark.parametrize("kwargs, expected", [
    ({"rate": 0.0}, "no wait"),  # load 0
    ({"aht": 0.0}, "no wait"),  # handled in no time
    ({"agents": 10 ** 15}, "no wait"),  # B far below the smallest double
    ({"agents": MAX_AGENTS}, "no wait"),
    ({"rate": 1e-300}, "no wait"),
    ({"threshold": 0.0}, "in range"),
    ({"threshold": 1e9}, "in range"),
    ({"patience": 1e-300}, "in range"),
    ({"patience": 1e300}, "erlang c"),  # nobody hangs up within any digit
    ({"rate": 1e4, "agents": 3}, "in range"),  # 3 agents for 1.8 million Erlangs: nearly all hang up
    ({"rate": 1e4, "agents": 3, "patience": 1e9}, "in range"),
])
def test_edge_inputs_give_projections_in_range(kwargs, expected):
    args = {"rate": 100 / 1800, "aht": 180.0, "agents": 14, "threshold": 20.0, "patience": 300.0, **kwargs}
    started = time.perf_counter()
    p = erlang_a(**args)
    assert time.perf_counter() - started < 1.0
    assert_in_range(p)
    if expected == "no wait":
        assert (p.wait_probability, p.service_level, p.abandon_probability) == (0.0, 1.0, 0.0)
    if expected == "erlang c":  # the same to 1e-12; abandonment theta * ASA = 8e-300
        c = erlang_c(args["rate"], args["aht"], args["agents"], args["threshold"])
        for name in PROBABILITIES + AVERAGES:
            assert getattr(p, name) == pytest.approx(getattr(c, name), rel=1e-12, abs=1e-290), name


def test_no_patience_is_the_loss_system_and_none_or_infinite_is_erlang_c():
    """Patience 0: who finds every agent busy hangs up at once (M/M/c/c), so a caller waits (for
    0 s) and hangs up with probability B, and every other caller is answered at once."""
    rate, aht, agents = 100 / 1800, 180.0, 9
    b = erlang_b(agents, rate * aht)
    p = erlang_a(rate, aht, agents, 20, patience=0)
    assert p.wait_probability == pytest.approx(b, rel=1e-14) and p.abandon_probability == pytest.approx(b, rel=1e-14)
    assert p.service_level == pytest.approx(1 - b, rel=1e-14) and p.average_wait_seconds == 0.0
    assert p.occupancy == pytest.approx(rate * aht * (1 - b) / agents, rel=1e-14)
    assert erlang_a(rate, aht, agents, 20, patience=1e-9).service_level == pytest.approx(1 - b, rel=1e-6)
    for patience in (None, math.inf):
        assert erlang_a(rate, aht, 12, 20, patience) == erlang_c(rate, aht, 12, 20)
    assert agents_required(rate, aht, 20, 0.8, patience=0).service_level >= 0.8


def test_only_arguments_outside_the_domain_raise_value_error():
    for args in [(-1.0, 180, 5, 20, 60), (math.nan, 180, 5, 20, 60), (math.inf, 180, 5, 20, 60), (0.1, 180, 5, -1, 60),
                 (0.1, 180, 5, 20, -1.0), (0.1, 180, 5, 20, math.nan), (0.1, 180, 0, 20, 60), (1e200, 1e200, 5, 20, 60)]:
        with pytest.raises(ValueError):
            erlang_a(*args)
    with pytest.raises(ValueError):
        erlang_b(MAX_AGENTS + 1, 1.0)
    with pytest.raises(NoStaffing):
        agents_required(0.1, 180, 20, 0.8, max_occupancy=0.0)
    with pytest.raises(NoStaffing):
        agents_required(10.0, 180, 20, 0.8, limit=100)  # 1800 Erlangs
    assert agents_required(1e4, 180, 20, 0.8).agents > 1.8e6  # no limit by default: 1.8 million Erlangs


def assert_in_range(p: Projection) -> None:
    for name in PROBABILITIES:
        value = getattr(p, name)
        assert math.isfinite(value) and 0.0 <= value <= 1.0, (name, value, p)
    for name in AVERAGES:
        value = getattr(p, name)
        assert math.isfinite(value) and value >= 0.0, (name, value, p)
    assert p.service_level <= 1.0 - p.abandon_probability + 1e-9  # answered within T <= answered
    assert p.abandon_probability <= p.wait_probability + 1e-9  # only who waits hangs up


# Floats of every magnitude the functions can meet, with their edges.
RATES = st.one_of(st.just(0.0), st.floats(1e-300, 1e-3), st.floats(1e-3, 10.0), st.floats(10.0, 1e4))
AHTS = st.one_of(st.just(0.0), st.floats(1e-6, 1.0), st.floats(1.0, 3600.0), st.floats(3600.0, 1e5))
AGENTS = st.one_of(st.integers(1, 60), st.integers(60, 30_000), st.sampled_from([10 ** 6, 10 ** 9, 10 ** 12, MAX_AGENTS]))
THRESHOLDS = st.one_of(st.just(0.0), st.floats(0.0, 120.0), st.floats(120.0, 1e6))
PATIENCES = st.one_of(st.none(), st.just(math.inf), st.just(0.0), st.floats(1e-6, 1.0), st.floats(1.0, 3600.0),
                      st.floats(3600.0, 1e9))
# No example database: it would write .hypothesis/ into the checkout. A failure prints the example.
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(agents=AGENTS, load=st.one_of(st.just(0.0), st.floats(1e-300, 1.0), st.floats(1.0, 1e7), st.floats(1e7, 1e13)))
def test_fuzz_erlang_b_is_a_probability_falling_with_agents_and_rising_with_load(agents, load):
    b = erlang_b(agents, load)
    assert 0.0 <= b <= 1.0
    if agents < MAX_AGENTS:
        assert erlang_b(agents + 1, load) <= b * (1 + 1e-12) + 1e-300
    assert erlang_b(agents, load * 1.5) >= b * (1 - 1e-12)


@FUZZ
@given(rate=RATES, aht=AHTS, agents=AGENTS, threshold=THRESHOLDS, patience=PATIENCES)
@example(rate=0.00035813023895105373, aht=1.0, agents=1, threshold=2.2250738585e-313, patience=481668410.0)
def test_fuzz_erlang_a_and_c_never_raise_and_stay_in_range(rate, aht, agents, threshold, patience):
    """Erlang A (and C, through patience None or infinite, where it has a steady state) at any
    input: finite numbers in their ranges, service level rising with the threshold and with the
    agents, waiting and abandonment falling with the agents."""
    if (patience is None or math.isinf(patience)) and agents <= rate * aht:
        with pytest.raises(ValueError, match="more agents than the load"):
            erlang_a(rate, aht, agents, threshold, patience)
        return
    p = erlang_a(rate, aht, agents, threshold, patience)
    assert_in_range(p)
    assert p.agents == agents
    assert erlang_a(rate, aht, agents, threshold * 2 + 1, patience).service_level >= p.service_level - 1e-9
    if agents < MAX_AGENTS:
        more = erlang_a(rate, aht, agents + 1, threshold, patience)
        assert more.service_level >= p.service_level - 1e-9
        assert more.wait_probability <= p.wait_probability + 1e-9
        assert more.abandon_probability <= p.abandon_probability + 1e-9


@settings(FUZZ, max_examples=80)
@given(rate=st.one_of(st.floats(1e-300, 1e-3), st.floats(1e-3, 2.0)), aht=st.floats(1e-3, 3600.0),
       threshold=THRESHOLDS, target=st.floats(0.01, 0.999), patience=PATIENCES)
def test_fuzz_agents_required_is_a_count_that_meets_the_target_and_one_fewer_does_not(rate, aht, threshold, target,
                                                                                       patience):
    p = agents_required(rate, aht, threshold, target, patience=patience)
    assert_in_range(p)
    assert p.agents >= 1 and p.service_level >= target
    if p.agents > 1 and (p.agents - 1 > rate * aht or (patience is not None and not math.isinf(patience))):
        fewer = erlang_a(rate, aht, p.agents - 1, threshold, patience)
        assert fewer.service_level < target


def test_a_threshold_a_few_subnormals_long_is_integrated_not_a_math_domain_error():
    """Found by the fuzz test in a CI run: the integral over [0, 4.6e-322] was summed in panels whose
    halves underflowed to zero, and log(0) raised. Such a threshold answers like a zero threshold."""
    tiny = erlang_a(0.00035813023895105373, 1.0, 1, 2.2250738585e-313, 481668410.0)
    zero = erlang_a(0.00035813023895105373, 1.0, 1, 0.0, 481668410.0)
    assert tiny.service_level == pytest.approx(zero.service_level, rel=1e-12)
    assert 0.0 < tiny.service_level < 1.0
