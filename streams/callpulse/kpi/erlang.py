"""Queueing formulas for staffing: Erlang B, Erlang C (M/M/c) and Erlang A (M/M/c+M).

Exact, not approximations, and total over their domain: every finite input >= 0 gives finite
numbers in their ranges (issue 13: a queue with many agents at a small load made Erlang B underflow
to 0.0 and Erlang A divide by it, which took the whole /metrics page down). The only exceptions are
ValueError for arguments outside the domain (negative, NaN or infinite numbers, a load rate * aht
beyond floating point, more than 2**62 agents, Erlang A with no agent or, overloaded, with rate *
patience beyond floating point, Erlang C with no more agents than the load, which has no steady
state) and NoStaffing (a ValueError) when no count up to a caller's `limit` meets a target.

Notation: `rate` arrivals per second, `aht` mean handle time in seconds (mu = 1 / aht), `agents`
c, `patience` mean patience in seconds (theta = 1 / patience; None or infinity: nobody hangs up,
which is Erlang C; 0: a caller who finds every agent busy hangs up at once, the Erlang B loss
system), `threshold` T in seconds. A = rate * aht is the offered load in Erlangs.

How it stays exact at any size:
- Erlang B is carried as log(1/B - 1), the weight of the states below c relative to the state c,
  by the recursion d(k) = (k / A) (1 + d(k-1)), d(0) = 0: a product of positive factors, so no
  cancellation, rescaled so that it cannot overflow; 1/B - 1 is what Erlang A needs, and B itself
  is 1 / (1 + d). An underflowing B is a number that is not there, never a 0 to divide by.
- Erlang A's weights of the states c + k relative to c, w(k) = prod_{j<=k} lambda / (c mu + j theta),
  are summed with the same rescaling, until the tail (bounded by a geometric series) cannot change
  the sums; states below and above c are combined in log space.
- Sizes whose sums would need more than MAX_TERMS terms (tens of thousands of agents, or callers
  patient for hours at a high arrival rate) use the same quantities written as integrals of
  log-concave functions (below), integrated by adaptive Gauss-Legendre quadrature around their
  peak: the work is bounded whatever the size. Both forms agree to 1e-12 where both can be
  computed (tests/test_erlang.py).

Erlang A, tagged caller (first come, first served): arriving to find k callers already waiting, it
moves up one place at rate c*mu + j*theta while j callers are ahead of it, and hangs up at rate
theta. Its stage with j ahead therefore ends after Exp(c*mu + (j+1)*theta), and it moves on with
probability (c*mu + j*theta) / (c*mu + (j+1)*theta): the product over the k+1 stages telescopes to
c*mu / (c*mu + (k+1)*theta). Its offered wait V (until an agent would take it) is a sum of
exponentials with rates theta*(X + j), j = 0..k, X = c*mu/theta, so U = exp(-theta*V) ~ Beta(X, k+1),
and it is served within T when V <= T and its patience is longer than V: E[U; U >= exp(-theta T)].
Summing over k with the weights w(k) = y^k / (X+1)...(X+k), y = lambda/theta, the Beta densities add
up to X u^(X-1) e^(y(1-u)), and with u = exp(-s) and F(s) = exp(-(X+1) s + y (1 - e^-s)):
  sum_k>=1 w(k) = y int_0^inf F,   sum_k w(k) (served) = X int_0^inf F = (X/y) sum_k>=1 w(k),
  served within T = X int_0^(theta T) F,   waits of the served = (X/theta) int_0^inf s F,
  sum_k k w(k) (the mean queue) = X y int_0^inf (e^s - 1) F;
and the same for Erlang B: 1/B - 1 = c int_0^inf e^(-A t) (1+t)^(c-1) dt. In the direct sums the
share served within T is (X/y) [W(y) - e^(y(1-z)) z^X W(y z)], z = exp(-theta T), W(v) the sum
over k >= 1 of the weights with lambda/theta replaced by v (the integral over [0, theta T] by parts).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

# A sum is stopped when a bound on its remaining terms is below this share of it.
TAIL_EPSILON = 1e-17
# Direct sums up to this many terms (a few milliseconds); larger sizes use the integral forms.
MAX_TERMS = 20_000
# The most agents the functions take (and agents_required answers: it stops there).
MAX_AGENTS = 2 ** 62

_RESCALE = 1e-250  # the sums are multiplied by this whenever a term passes 1e250 ...
_LOG_RESCALE = 250 * math.log(10.0)  # ... and this is added to their logarithm
_CUT = 60.0
_MAX_SPLITS = 2000  # halvings of quadrature panels per integral  # an integrand below e^-60 of its peak is left out (its share is below 1e-24)
# log(1/B - 1) beyond which B is below e^-800: it underflows, and states below c are all there is.
_NEGLIGIBLE = 800.0


class NoStaffing(ValueError):
    """No number of agents up to the limit meets the target."""


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


# ---- small numerical pieces ----------------------------------------------------------------


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _log_add(a: float, b: float) -> float:
    """log(e^a + e^b)."""
    if a < b:
        a, b = b, a
    if a == -math.inf or a == math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def _log1p_exp(x: float) -> float:
    """log(1 + e^x)."""
    return _log_add(0.0, x)


def _log1p_minus(u: float) -> float:
    """log(1 + u) - u (<= 0), without the cancellation of the two for small u."""
    if u <= -1.0:
        return -math.inf
    if abs(u) < 0.05:
        total, power = 0.0, u * u
        for n in range(2, 15):
            total += power / n if n % 2 else -power / n
            power *= u
        return total
    return math.log1p(u) - u


def _expm1_plus(d: float) -> float:
    """e^-d - 1 + d (>= 0), without the cancellation for small d."""
    if d < -700.0:
        return math.inf
    if abs(d) < 0.05:
        total, term = 0.0, d * d / 2.0
        for n in range(3, 15):
            total += term
            term *= -d / n
        return total
    return math.expm1(-d) + d


def _excess(agents: int, load: float) -> float:
    """agents - load without losing the difference of two large numbers (load's fraction is exact)."""
    whole = math.floor(load)
    return float(agents - whole) - (load - whole)


def _gauss_legendre(n: int) -> tuple[tuple[float, float], ...]:
    """Nodes and weights of n-point Gauss-Legendre quadrature on [-1, 1] (Newton on P_n)."""
    out = []
    for i in range(1, n + 1):
        x = math.cos(math.pi * (i - 0.25) / (n + 0.5))
        for _ in range(100):
            p0, p1 = 1.0, x
            for k in range(2, n + 1):
                p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
            dp = n * (x * p1 - p0) / (x * x - 1.0)
            step = p1 / dp
            x -= step
            if abs(step) < 1e-16:
                break
        p0, p1 = 1.0, x
        for k in range(2, n + 1):
            p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
        dp = n * (x * p1 - p0) / (x * x - 1.0)
        out.append((x, 2.0 / ((1.0 - x * x) * dp * dp)))
    return tuple(out)


_GL = _gauss_legendre(20)


def _log_integral(q: Callable[[float], float], lo: float, hi: float, x0: float, scale: float) -> float:
    """log of the integral of exp(q(x)) over [lo, hi] (hi may be infinite) for a concave q, finite
    at x0 in [lo, hi], that changes by about 1 over `scale` near x0: the ends are found by walking
    out in doubling steps until q has fallen by _CUT, the peak by golden section (q is unimodal),
    then adaptive 20-point Gauss-Legendre on exp(q - peak), which is at most 1 everywhere."""
    scale = scale if scale > 0 and math.isfinite(scale) else 1.0
    best = q(x0)
    ends = []
    for direction, bound in ((1.0, hi), (-1.0, lo)):
        x, step = x0, scale
        for _ in range(2000):
            if x == bound:
                break
            nxt = x + direction * step
            if (nxt - bound) * direction >= 0:
                nxt = bound
            value = q(nxt)
            x = nxt
            if value > best:
                best = value
            elif value < best - _CUT:
                break
            step *= 2.0
        ends.append(x)
    b, a = ends
    if not b > a:
        return -math.inf
    # The peak: golden section on [a, b] (a concave function is unimodal).
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    left, right = a, b
    m1, m2 = right - ratio * (right - left), left + ratio * (right - left)
    q1, q2 = q(m1), q(m2)
    for _ in range(300):
        if right - left <= scale * 1e-3 or right - left <= abs(left) * 1e-15:
            break
        if q1 < q2:
            left, m1, q1 = m1, m2, q2
            m2 = left + ratio * (right - left)
            q2 = q(m2)
        else:
            right, m2, q2 = m2, m1, q1
            m1 = right - ratio * (right - left)
            q1 = q(m1)
    best = max(best, q1, q2)

    span = b - a

    def panel(u: float, v: float) -> float:  # in units of span: a span of a few subnormals would underflow
        half, mid = (v - u) / 2.0, (u + v) / 2.0
        return (v - u) / span / 2.0 * sum(w * _exp(q(mid + half * t) - best) for t, w in _GL)

    width = (b - a) / 16.0
    pieces = [(a + i * width, b if i == 15 else a + (i + 1) * width) for i in range(16)]
    values = [panel(u, v) for u, v in pieces]
    estimate = sum(values)
    if not estimate > 0:
        return -math.inf
    # A panel is accepted when halving it changes its value by less than 1e-15 of the whole, or
    # by less than the rounding of q itself (q's values are differences of numbers as large as
    # |best|); at most _MAX_SPLITS halvings in all, so the work is bounded.
    noise = 8 * 2.0 ** -52 * (1.0 + abs(best))
    stack = [(u, v, value) for (u, v), value in zip(pieces, values)]
    total, splits = 0.0, 0
    while stack:
        u, v, value = stack.pop()
        mid = (u + v) / 2.0
        if mid in (u, v):  # a panel one subnormal wide: it cannot be halved
            total += value
            continue
        left_value, right_value = panel(u, mid), panel(mid, v)
        change = abs(left_value + right_value - value)
        splits += 1
        if (splits > _MAX_SPLITS or change <= 1e-15 * estimate * max((v - u) / (b - a), 1e-3)
                or change <= noise * value):
            total += left_value + right_value
        else:
            stack += [(u, mid, left_value), (mid, v, right_value)]
    return best + math.log(total) + math.log(span)


def _check(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_agents(agents: int) -> int:
    agents = operator.index(agents)
    if not 0 <= agents <= MAX_AGENTS:
        raise ValueError(f"agents must be in [0, 2**62], got {agents}")
    return agents


def _load(rate: float, aht: float) -> float:
    _check("rate", rate)
    _check("aht", aht)
    load = rate * aht
    if not math.isfinite(load):
        raise ValueError(f"the load rate * aht is beyond floating point: {rate!r} * {aht!r}")
    return load


# ---- Erlang B ------------------------------------------------------------------------------


class _Blocking:
    """log(1/B - 1) of Erlang B at one load, for any number of agents: the recursion
    d(k) = (k/A)(1 + d(k-1)) carried (and kept) up to MAX_TERMS agents, the integral beyond.
    -inf for 0 agents (B = 1), +inf at load 0 with agents (B = 0)."""

    def __init__(self, load: float):
        self.load = load
        self.logs = [-math.inf]  # log d(k) for k = 0, 1, ...
        self.d, self.in_logs = 0.0, False  # d of the newest k while it is a plain float

    def __call__(self, agents: int) -> float:
        if agents == 0:
            return -math.inf
        if self.load == 0:
            return math.inf
        if agents > MAX_TERMS:
            return _log_below_large(agents, self.load)
        load, logs = self.load, self.logs
        while len(logs) <= agents:
            k = len(logs)
            factor = k / load
            if not self.in_logs and factor < 1e50:
                self.d = factor * (self.d + 1.0)
                logs.append(math.log(self.d))
                self.in_logs = self.d > 1e250
            else:  # past 1e250 (or a tiny load): on in logarithms, log d(k) = log(k/A) + log(1 + d(k-1))
                self.in_logs = True
                logs.append(math.log(k) - math.log(load) + _log1p_exp(logs[-1]))
        return logs[agents]


def _log_below_large(agents: int, load: float) -> float:
    """log(1/B - 1) for many agents: closed form where B is negligible, else the integral
    c int_0^inf e^(-A t) (1+t)^(c-1) dt."""
    c, m = agents, agents - 1
    if c > load + 1:
        k0 = math.floor(load) + 1
        # log of prod_{j=k0..c} j/A, a lower bound of log d(c)
        bound = math.lgamma(c + 1) - math.lgamma(k0) - (c - k0 + 1) * math.log(load)
        if bound > _NEGLIGIBLE:  # 1/B = (c!/A^c) e^A P(Poisson(A) <= c), the probability 1 here
            return math.lgamma(c + 1) - c * math.log(load) + load
    excess = _excess(m, load)  # (c - 1) - A
    if excess > 0:  # interior peak at t0 = m/A - 1; t = t0 + (1 + t0) u, exponent m (log1p(u) - u)
        peak = -excess + m * math.log1p(excess / load)  # -A t0 + m log(1 + t0), 1 + t0 = m / A
        log_i = _log_integral(lambda u: m * _log1p_minus(u), -excess / m, math.inf, 0.0, 1.0 / math.sqrt(m))
        return math.log(c) + peak + math.log(m / load) + log_i
    slope = -excess  # A - (c - 1) >= 0: the peak is at t = 0
    scale = min(1.0 / slope if slope > 0 else math.inf, 1.0 / math.sqrt(m) if m > 0 else math.inf)
    log_i = _log_integral(lambda t: -slope * t + m * _log1p_minus(t), 0.0, math.inf, 0.0, scale)
    return math.log(c) + log_i


def erlang_b(agents: int, load: float) -> float:
    """Blocking probability of M/M/c/c: B(0) = 1, B(k) = A B(k-1) / (k + A B(k-1))."""
    agents = _check_agents(agents)
    _check("load", load)
    return _exp(-_log1p_exp(_Blocking(load)(agents)))


# ---- Erlang C ------------------------------------------------------------------------------


def _no_wait(agents: int, load: float) -> Projection:
    """Nobody finds every agent busy (B = 0: no load, or so many agents that B underflows)."""
    return Projection(agents=agents, wait_probability=0.0, service_level=1.0, average_wait_seconds=0.0,
                      average_wait_all_seconds=0.0, abandon_probability=0.0,
                      occupancy=min(1.0, load / agents) if agents else 0.0)


def erlang_c(rate: float, aht: float, agents: int, threshold: float) -> Projection:
    """M/M/c: nobody hangs up. Needs A < c (else the queue grows without bound: ValueError)."""
    load = _load(rate, aht)
    agents = _check_agents(agents)
    return _erlang_c(rate, aht, agents, threshold, _Blocking(load)(agents))


def _erlang_c(rate: float, aht: float, agents: int, threshold: float, below: float) -> Projection:
    """erlang_c() given below = log(1/B - 1) of Erlang B of `agents` at the load."""
    load = _load(rate, aht)
    _check("threshold", threshold)
    if agents <= load:
        raise ValueError(f"Erlang C needs more agents than the load: {agents} agents, {load:g} Erlangs")
    if below == math.inf or aht == 0:
        return _no_wait(agents, load)
    # Pw = c B / (c - A (1 - B)) = 1 / (1 + (1 - A/c) d) with d = 1/B - 1: no cancellation
    excess = _excess(agents, load)
    wait = _exp(-_log1p_exp(math.log(excess / agents) + below))
    gap = excess / aht  # c mu - lambda > 0: the rate at which the queue drains
    return Projection(
        agents=agents,
        wait_probability=wait,
        service_level=min(1.0, max(0.0, 1.0 - wait * (math.exp(-gap * threshold) if threshold > 0 else 1.0))),
        average_wait_seconds=wait / gap,
        average_wait_all_seconds=wait / gap,
        abandon_probability=0.0,
        occupancy=load / agents,
    )


# ---- Erlang A ------------------------------------------------------------------------------


def erlang_a(rate: float, aht: float, agents: int, threshold: float, patience: float | None) -> Projection:
    """M/M/c+M: callers hang up after an exponential patience with mean `patience` seconds."""
    load = _load(rate, aht)
    agents = _check_agents(agents)
    return _erlang_a(rate, aht, agents, threshold, patience, _Blocking(load)(agents))


def _direct(v: float, service: float, theta: float, full: bool, limit: int) -> tuple[float, ...] | None:
    """(scale, logs of W, Q, S relative to e^scale): W = sum_{k>=1} w(k), w(k) = prod_{j<=k} v / (service + j theta), and with `full`
    of Q = sum k w(k) and S = sum_{k>=0} w(k) m(k) s(k) (w(0) = 1), m(k) = service / (service +
    (k+1) theta) the chance to be served, s(k) = sum_{j<=k} 1 / (service + (j+1) theta) the mean
    time of the stages. None if more than `limit` terms would be needed."""
    w, shift, k = 1.0, 0.0, 0
    total = queue = served_wait = stage = 0.0
    while True:
        if full:
            rate_k = service + (k + 1) * theta
            stage += 1.0 / rate_k
            served_wait += w * (service / rate_k) * stage
        k += 1
        w *= v / (service + k * theta)
        total += w
        if full:
            queue += k * w
        if w > 1e250:
            w, total, queue, served_wait = w * _RESCALE, total * _RESCALE, queue * _RESCALE, served_wait * _RESCALE
            shift += _LOG_RESCALE
        r = v / (service + (k + 1) * theta)  # the ratios only fall from here: a geometric bound
        if w == 0.0:
            break
        if r < 1.0:
            tail = w * r / (1.0 - r)
            tail_queue = w * (k * r / (1.0 - r) + r / (1.0 - r) ** 2)
            if tail <= TAIL_EPSILON * total and (not full or (
                    tail_queue <= TAIL_EPSILON * queue
                    and (tail + tail_queue) / service <= TAIL_EPSILON * served_wait)):
                break
        if k > limit:
            return None
    # The scale is kept apart: added to logs as large as it, it would round their differences.
    return shift, _log(total), _log(queue), _log(served_wait)


def _integrals(x: float, y: float, gap: float, theta_t: float, within_only: bool = False) -> tuple[float, ...]:
    """The integral forms (module docstring) with F(s) = exp(-(X+1) s + y (1 - e^-s)): (scale, logs
    relative to e^scale of W = y int F, Q = X y int (e^s - 1) F, S theta = X int s F, served within
    T = X int_0^(theta T) F); with `within_only`, (scale, that last one). gap = X - y, computed by
    the caller without cancellation. The scale, log F at its peak, can be as large as y: it is kept
    apart so that it does not round the differences of the others."""
    if gap + 1.0 < 0:  # the peak of F: s0 = log(y / (X+1)), where y e^-s0 = X + 1
        s0 = math.log1p(-(gap + 1.0) / (x + 1.0))
        curve, slope = x + 1.0, 0.0
        top = -(gap + 1.0) - (x + 1.0) * s0  # log F(s0)
    else:
        s0, curve, slope, top = 0.0, y, gap + 1.0, 0.0

    def f(d: float) -> float:  # log F(s0 + d) - log F(s0)
        return -slope * d - curve * _expm1_plus(d)

    scale = min(1.0 / math.sqrt(curve) if curve > 0 else math.inf, 1.0 / slope if slope > 0 else math.inf)
    if within_only:
        if theta_t <= 0:
            return top, -math.inf
        return top, _log(x) + _log_integral(f, -s0, theta_t - s0, min(0.0, theta_t - s0), scale)
    log_f = _log_integral(f, -s0, math.inf, 0.0, scale)
    x0 = scale if s0 == 0 else 0.0
    log_s = _log_integral(lambda d: f(d) + _log(s0 + d), -s0, math.inf, x0, scale)

    def f_queue(d: float) -> float:  # f(d) + log(e^(s0+d) - 1), for large s its e^s taken into the slope
        s = s0 + d
        if s > 1.0:  # log(e^s - 1) = s + log(1 - e^-s) = s0 + d + ...: -slope d + d = -(X - y) d
            return -(slope - 1.0) * d - curve * _expm1_plus(d) + s0 + math.log1p(-math.exp(-s))
        return f(d) + _log(math.expm1(s))

    log_e = _log_integral(f_queue, -s0, math.inf, x0, scale)
    if theta_t <= 0:
        log_t = -math.inf
    elif theta_t == math.inf:
        log_t = log_f
    else:
        log_t = _log_integral(f, -s0, theta_t - s0, min(0.0, theta_t - s0), scale)
    lx, ly = _log(x), _log(y)
    return top, ly + log_f, lx + ly + log_e, lx + log_s, lx + log_t


def _erlang_a(rate: float, aht: float, agents: int, threshold: float, patience: float | None, below: float) -> Projection:
    """erlang_a() given below = log(1/B - 1) of Erlang B of `agents` at the load."""
    if patience is None or (isinstance(patience, float) and math.isinf(patience) and patience > 0):
        return _erlang_c(rate, aht, agents, threshold, below)
    load = _load(rate, aht)
    _check("threshold", threshold)
    _check("patience", patience)
    if agents < 1:
        raise ValueError("Erlang A needs agents >= 1")
    if rate == 0 or aht == 0 or below == math.inf:
        return _no_wait(agents, load)
    if patience == 0 or 1.0 / patience == math.inf:  # who finds every agent busy hangs up at once: the loss system
        blocked = _exp(-_log1p_exp(below))
        return Projection(agents=agents, wait_probability=blocked, service_level=_exp(below - _log1p_exp(below)),
                          average_wait_seconds=0.0, average_wait_all_seconds=0.0, abandon_probability=blocked,
                          occupancy=load * _exp(below - _log1p_exp(below)) / agents)
    theta, service = 1.0 / patience, agents / aht
    x, y = agents * patience / aht, rate * patience  # X = c mu / theta, y = lambda / theta
    gap = _excess(agents, load) * patience / aht  # X - y
    if not all(map(math.isfinite, (x, y, gap, service))):
        if agents > load:  # abandonment changes no digit: Erlang C
            return _erlang_c(rate, aht, agents, threshold, below)
        raise ValueError(f"patience {patience!r} is too long to compute for an overloaded queue")
    theta_t = theta * threshold
    log_ratio = math.log(agents) - math.log(load)  # log(X / y)
    # Terms of the direct sum: up to the peak (k = y - X), then until they fall by e^-45.
    if gap <= 0:
        terms = -gap + 10.0 * math.sqrt(y) + 10.0
    else:
        terms = min(45.0 / max(math.log1p(x) - math.log(rate) - math.log(patience), 1e-300), 10.0 * math.sqrt(x + 1.0)) + 10.0
    # Every log below is relative to e^scale, the common scale of the weights above c.
    sums = _direct(rate, service, theta, True, 4 * MAX_TERMS) if terms <= MAX_TERMS else None
    if sums is not None:
        scale, log_w, log_q, log_s = sums
        log_served = log_ratio + log_w  # sum_k w(k) m(k) = (X/y) W
        if theta_t == 0:
            log_t = -math.inf
        else:
            z = math.exp(-theta_t)
            if z == 0.0:
                log_t = log_served
            else:  # (X/y) [W(y) - e^(y(1-z)) z^X W(y z)]
                at_z = _direct(rate * z, service, theta, False, 4 * MAX_TERMS)
                scale_z, log_wz = at_z[:2] if at_z is not None else _integrals(x, y * z, x - y * z, math.inf)[:2]
                # y (1 - z) - X theta T = -X (e^-tT - 1 + tT) - (X - y)(1 - z): each part without cancellation
                exponent = -x * _expm1_plus(theta_t) + gap * math.expm1(-theta_t)
                part = (scale_z - scale) + exponent + log_wz - log_w
                if part < -0.1:
                    log_t = log_served + math.log1p(-math.exp(part))
                else:  # most of the waiting callers are served after T: the difference would cancel
                    scale_t, log_t = _integrals(x, y, gap, theta_t, within_only=True)
                    log_t += scale_t - scale
    else:
        scale, log_w, log_q, log_sw_theta, log_t = _integrals(x, y, gap, theta_t)
        log_served = log_ratio + log_w
        log_s = log_sw_theta + math.log(patience)
    log_waiting = _log_add(-scale, log_w)  # state c itself (weight 1) and those above
    below -= scale
    log_total = _log_add(below, log_waiting)  # and the states below c
    below_share = _exp(below - log_total)
    answered = min(1.0, below_share + _exp(log_served - log_total))
    log_y = math.log(rate) + math.log(patience)
    abandon = min(1.0, _exp(log_q - log_total - log_y))  # theta E[queue] / lambda
    return Projection(
        agents=agents,
        wait_probability=min(1.0, _exp(log_waiting - log_total)),
        service_level=min(1.0, below_share + _exp(log_t - log_total)),
        average_wait_seconds=_exp(log_s - log_total) / answered if answered > 0 else 0.0,
        average_wait_all_seconds=_exp(log_q - log_total - math.log(rate)),  # Little's law
        abandon_probability=abandon,
        occupancy=min(1.0, load * (1.0 - abandon) / agents),
    )


# ---- staffing ------------------------------------------------------------------------------


def agents_required(rate: float, aht: float, threshold: float, target: float, *, patience: float | None = None,
                    max_occupancy: float | None = None, limit: int | None = None) -> Projection:
    """The fewest agents whose projected service level reaches `target` (and whose occupancy is at
    most `max_occupancy`, if given): Erlang C without `patience` (or an infinite one), Erlang A
    with it. Both conditions only get easier with more agents, so the first that meets them is it:
    gallop up from where the answer can begin (steps 1, 2, 4...) until it is passed, then bisect.
    NoStaffing when no count up to `limit` (if given) meets them."""
    if not (isinstance(target, (int, float)) and 0 < target < 1):
        raise ValueError("target must be in (0, 1)")
    load = _load(rate, aht)
    _check("threshold", threshold)
    if patience is not None:
        if isinstance(patience, float) and patience == math.inf:
            patience = None
        else:
            _check("patience", patience)
    if max_occupancy is not None:
        if not isinstance(max_occupancy, (int, float)) or math.isnan(max_occupancy):
            raise ValueError("max_occupancy must be a number")
        if max_occupancy <= 0 and load > 0:
            raise NoStaffing(f"no staffing has an occupancy of at most {max_occupancy:g} at {load:g} Erlangs")
    top = MAX_AGENTS if limit is None else min(limit, MAX_AGENTS)
    blocking = _Blocking(load)

    def meets(p: Projection) -> bool:
        return p.service_level >= target and (max_occupancy is None or p.occupancy <= max_occupancy)

    def projection(agents: int) -> Projection:
        if patience is None:
            return _erlang_c(rate, aht, agents, threshold, blocking(agents))
        return _erlang_a(rate, aht, agents, threshold, patience, blocking(agents))

    if patience is None:
        # Erlang C needs more agents than the load: the load's floor is known to fail.
        low_fail = math.floor(load)
        start = low_fail + 1
    else:
        # Erlang A can need fewer agents than the load (callers who hang up take load away), but
        # never fewer than target * load: the share answered within T is at most the share
        # answered, which is at most c / A. Start at the load: if that meets the target, the answer
        # is between the floor and the load.
        floor_ = max(1, math.floor(target * load))
        low_fail, start = floor_ - 1, max(floor_, math.floor(load))
    if start > top:
        raise NoStaffing(f"no staffing up to {top} agents reaches the target")
    p = projection(start)
    if meets(p):
        high, best = start, p
    else:
        low, step = start, 1  # the highest count known to fail
        while True:
            high = min(low + step, top)
            p = projection(high)
            if meets(p):
                best = p
                break
            if high == top:
                raise NoStaffing(f"no staffing up to {top} agents reaches the target")
            low, step = high, step * 2
        low_fail = low
    low = low_fail
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
