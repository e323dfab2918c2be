"""Helpers on generated dashboard JSON (standard library only, no Grafana SDK needed).

Used by tests/test_grafana.py (lint) and by the end-to-end test that runs every panel query
against a real Prometheus::

    import json
    from grafana.lint import panel_queries, render_query
    for title, expr in panel_queries(json.load(open("grafana/dashboards/queue.json"))):
        promql = render_query(expr)   # $__rate_interval -> 1m, $queue -> .*, $window -> 15m
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# What the end-to-end test substitutes for Grafana's variables (see render_query).
DEFAULT_VARS = {"__rate_interval": "1m", "queue": ".*", "window": "15m"}

# A Grafana variable name starts with a letter or "_"; "$1" in a label_replace replacement is
# PromQL's capture group (Grafana leaves it alone, since no variable has that name).
_VAR = re.compile(r"\$\{([A-Za-z_]\w*)(?::\w+)?\}|\$([A-Za-z_]\w*)")


def iter_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel of the dashboard, rows included, nested (collapsed) row panels too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """``[(panel title, PromQL expr), ...]`` for every query of every panel, in layout order.

    The expressions are as stored, with Grafana's variables still in them. Every one of them uses
    only these variables (tests/test_grafana.py checks it), so substitute them to run a query
    outside Grafana (``render_query`` does it):

    - ``$__rate_interval``: the range of every ``rate(``/``increase(``; e.g. ``1m`` (at least four
      scrape intervals: the scrape interval is 5 s, so anything from 20s on works)
    - ``$queue``: always inside a regex matcher ``queue=~"$queue"``; ``.*`` for every queue, or one
      queue id (Grafana sends an escaped ``(a|b)`` list for several)
    - ``$window``: a window label value of the worker: ``5m``, ``15m`` (default), ``30m``, ``1h``, ``today``

    Titles may contain ``$queue`` too (repeated panels); they are returned as stored.
    Panels without queries (rows) are skipped; query variables are not included.
    """
    out = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                out.append((panel.get("title", ""), expr))
    return out


def render_query(expr: str, **variables: str) -> str:
    """``expr`` with Grafana's variables replaced: ``DEFAULT_VARS`` overridden by ``variables``
    (``render_query(e, queue="sales", window="5m")``). ``$name`` and ``${name}`` forms are both
    replaced; a variable without a value raises ``KeyError`` so nothing unreplaced reaches Prometheus.
    Capture-group references such as ``$1`` (label_replace) are not variables and stay as they are."""
    values = {**DEFAULT_VARS, **variables}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(sub, expr)


def variables_used(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VAR.finditer(expr)}


# --- metric names in PromQL -----------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (not functions, keywords, label names or durations).

    A small lexer, enough for the dashboards' queries: strings, ``{...}`` matchers, ``[...]``
    ranges and the label lists of ``by/without/on/ignoring/group_*`` are dropped first; what is
    left that looks like an identifier and is not called like a function is a metric name.
    """
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _LABEL_LIST.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def uses_rate_interval_everywhere(expr: str) -> list[str]:
    """The range selectors of ``rate(``/``irate(``/``increase(`` calls that are not ``[$__rate_interval]``."""
    bad = []
    for m in re.finditer(r"\b(rate|irate|increase)\s*\(", expr):
        depth, i = 1, m.end()
        while i < len(expr) and depth:
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        inner = expr[m.end():i - 1]
        ranges = re.findall(r"\[([^\]]*)\]", inner)
        if not ranges or any(r.strip() != "$__rate_interval" for r in ranges):
            bad.append(f"{m.group(1)}({inner})")
    return bad
