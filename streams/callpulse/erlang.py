"""Queueing formulas for staffing: Erlang B, Erlang C (M/M/c) and Erlang A (M/M/c+M).

Exact, not approximations: Erlang B by its stable recursion, Erlang C in closed form, Erlang A from
the stationary law of the birth-death chain (its tail summed until it no longer changes the
result) and, for the service level, the waiting time of a tagged caller in closed form.

Notation: `rate` arrivals per second, `aht` mean handle time in seconds (mu = 1 / aht), `agents`
c, `patience` mean patience in seconds (theta = 1 / patience; None or infinity: nobody hangs up,
which is Erlang C), `threshold` T in seconds. A = rate * aht is the offered load in Erlangs.

Erlang A, tagged caller (first come, first served): arriving to find k callers already waiting, it
moves up one place at rate c*mu + j*theta while j callers are ahead of it, and hangs up at rate
theta. Its stage with j ahead therefore ends after Exp(c*mu + (j+1)*theta), and it moves on with
probability (c*mu + j*theta) / (c*mu + (j+1)*theta): the product over the k+1 stages telescopes to
c*mu / (c*mu + (k+1)*theta). The stage rates are theta*(a + j) with a = 1 + c*mu/theta, and a sum
of exponentials with rates theta*(a), ..., theta*(a+k) is distributed as -ln(U)/theta with
U ~ Beta(a, k+1), so P(wait <= t) = 1 - I_x(a, k+1) with x = exp(-theta*t), and for a whole second
argument I_x(a, n) = x^a * sum_{i<n} (a)_i / i! * (1-x)^i: a sum of positive terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The Erlang A tail is summed until a term changes the total by less than this (relative).
TAIL_EPSILON = 1e-15


@dataclass(frozen=True)
class Projection:
    """What a queue with `agents` agents can be expected to do at the given load."""

    agents: int
    wait_probability: float  # P(a caller waits at all)
    service_level: float  # share of all callers answered within the threshold
    average_wait_seconds: float  # mean wait of the callers who are answered (ASA)
    average_wait_all_seconds: float  # mean wait of all callers, those who hang up included
    abandon_probability: float  # share of callers who hang up while waiting (0 in Erlang C)
    occupancy: float  # share of the agents' time spent handling calls


def erlang_b(agents: int, load: float) -> float:
    """Blocking probability of M/M/c/c: B(0) = 1, B(k) = A B(k-1) / (k + A B(k-1))."""
    if agents < 0 or load < 0:
        raise ValueError("agents and load must be >= 0")
    b = 1.0
    for k in range(1, agents + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(rate: float, aht: float, agents: int, threshold: float) -> Projection:
    """M/M/c: nobody hangs up. Needs A < c (else the queue grows without bound: ValueError)."""
    return _erlang_c(rate, aht, agents, threshold, erlang_b(agents, rate * aht))


def _erlang_c(rate: float, aht: float, agents: int, threshold: float, b: float) -> Projection:
    """erlang_c() given b = Erlang B of `agents` at the load."""
    load = rate * aht
    if agents <= load:
        raise ValueError(f"Erlang C needs more agents than the load: {agents} agents, {load:g} Erlangs")
    wait = agents * b / (agents - load * (1.0 - b))
    return Projection(
        agents=agents,
        wait_probability=wait,
        service_level=1.0 - wait * math.exp(-(agents - load) * threshold / aht),
        average_wait_seconds=wait * aht / (agents - load),
        average_wait_all_seconds=wait * aht / (agents - load),
        abandon_probability=0.0,
        occupancy=load / agents,
    )


def erlang_a(rate: float, aht: float, agents: int, threshold: float, patience: float | None) -> Projection:
    """M/M/c+M: callers hang up after an exponential patience with mean `patience` seconds."""
    return _erlang_a(rate, aht, agents, threshold, patience, erlang_b(agents, rate * aht))


def _erlang_a(rate: float, aht: float, agents: int, threshold: float, patience: float | None, b: float) -> Projection:
    """erlang_a() given b = Erlang B of `agents` at the load."""
    if patience is None or math.isinf(patience):
        return _erlang_c(rate, aht, agents, threshold, b)
    if agents < 1 or rate < 0 or aht <= 0 or patience <= 0:
        raise ValueError("Erlang A needs agents >= 1, rate >= 0, aht > 0 and patience > 0")
    mu, theta = 1.0 / aht, 1.0 / patience
    service = agents * mu
    # Weights relative to pi_c: the states below c sum to 1/B - 1 (Erlang B of c agents).
    below = 1.0 / b - 1.0
    x = math.exp(-theta * threshold)
    a = 1.0 + service / theta
    x_a = x ** a
    weight, k = 1.0, 0  # pi_{c+k} / pi_c
    waiting = queue = served_in_time = served_wait = 0.0
    series, term = 0.0, 1.0  # the incomplete-beta sum up to i = k, and its newest term
    stage_time = 0.0  # mean time to pass the k+1 stages: sum of 1 / rate_j
    while True:
        if k:
            term *= (a + k - 1) / k * (1.0 - x)
        series += term
        stage_time += 1.0 / (service + (k + 1) * theta)
        moves_on = service / (service + (k + 1) * theta)
        waiting += weight
        queue += k * weight  # k callers waiting in state c+k
        served_in_time += weight * moves_on * max(0.0, 1.0 - x_a * series)
        served_wait += weight * moves_on * stage_time
        k += 1
        weight *= rate / (service + k * theta)
        if weight < TAIL_EPSILON * waiting and k > 1:
            break
    total = below + waiting
    # Callers hang up at rate theta each, so the abandonment rate is theta times the mean number
    # waiting (sum over the states c+k of k * pi); over the arrival rate, the share who hang up.
    abandon = theta * (queue / total) / rate if rate > 0 else 0.0
    answered = 1.0 - abandon
    return Projection(
        agents=agents,
        wait_probability=waiting / total,
        service_level=(below + served_in_time) / total,
        average_wait_seconds=(served_wait / total) / answered if answered > 0 else math.inf,
        average_wait_all_seconds=(queue / total) / rate if rate > 0 else 0.0,  # Little's law
        abandon_probability=abandon,
        occupancy=rate * answered * aht / agents,
    )


def agents_required(rate: float, aht: float, threshold: float, target: float, *, patience: float | None = None,
                    max_occupancy: float | None = None, limit: int = 100_000) -> Projection:
    """The fewest agents whose projected service level reaches `target` (and whose occupancy is at
    most `max_occupancy`, if given): Erlang C without `patience` (or an infinite one), Erlang A
    with it. Both conditions only get easier with more agents, so the first that meets them is it."""
    if not 0 < target < 1:
        raise ValueError("target must be in (0, 1)")
    if patience is not None and math.isinf(patience):
        patience = None
    load = rate * aht

    def meets(p: Projection) -> bool:
        return p.service_level >= target and (max_occupancy is None or p.occupancy <= max_occupancy)

    if patience is None:
        # Erlang C needs more agents than the load; the answer is a few above it, so step up,
        # carrying Erlang B's recursion one agent at a time.
        agents = max(1, math.floor(load) + 1)
        b = erlang_b(agents, load)
        while agents <= limit:
            p = _erlang_c(rate, aht, agents, threshold, b)
            if meets(p):
                return p
            agents += 1
            b = load * b / (agents + load * b)
        raise ValueError(f"no staffing up to {limit} agents reaches the target")
    # Erlang A can need fewer agents than the load (callers who hang up take load away), but never
    # fewer than target * load: the share answered within T is at most the share answered, which
    # is at most c / A. Start at the load: if that meets the target, the answer is between the
    # floor and the load; if not, gallop up (steps 1, 2, 4...) until it is passed. Then bisect.
    floor_ = max(1, math.floor(target * load))  # below this nothing can meet the target

    blocking = [1.0]  # Erlang B of 0, 1, 2, ... agents, extended as needed by its recursion

    def projection(agents: int) -> Projection:
        while len(blocking) <= agents:
            b, k = blocking[-1], len(blocking)
            blocking.append(load * b / (k + load * b))
        return _erlang_a(rate, aht, agents, threshold, patience, blocking[agents])

    start = min(max(floor_, math.floor(load)), limit)
    p = projection(start)
    if meets(p):  # the answer lies in [floor, load]: bisect it
        low, high, best = floor_ - 1, start, p  # floor - 1 fails: it is below the floor
    else:
        low, step = start, 1  # the highest count known to fail
        while True:
            high = min(low + step, limit)
            p = projection(high)
            if meets(p):
                best = p
                break
            if high == limit:
                raise ValueError(f"no staffing up to {limit} agents reaches the target")
            low, step = high, step * 2
    while high - low > 1:  # low fails, high meets
        middle = (low + high) // 2
        p = projection(middle)
        if meets(p):
            high, best = middle, p
        else:
            low = middle
    return best


def heads(positions: int, shrinkage: float) -> int:
    """People to schedule so that `positions` are on the phones: positions / (1 - shrinkage)."""
    if not 0 <= shrinkage < 1:
        raise ValueError("shrinkage must be in [0, 1)")
    return math.ceil(positions / (1.0 - shrinkage) - 1e-9)
