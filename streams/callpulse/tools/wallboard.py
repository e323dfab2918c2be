"""Live terminal wallboard: polls worker snapshots and draws one row per queue.

Used by ``callpulse demo`` and ``callpulse wallboard URL...``.  Each worker serves
``GET /api/queues`` (see the snapshot contract); several workers may be given, and
their queues are merged (a queue is served by exactly one worker; if it shows up
twice the snapshot with the larger ``clock`` wins).

``render`` is a pure function of the snapshots, so it is what the tests exercise;
``run`` is the thin polling loop around ``fetch`` and ``render``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import unicodedata
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TextIO

import orjson

__all__ = ["WINDOWS", "STALE_AFTER_SECONDS", "CLEAR", "render", "merge", "fetch", "run", "display_width"]

WINDOWS = ("5m", "15m", "30m", "1h", "today")
STALE_AFTER_SECONDS = 10.0
CLEAR = "\x1b[H\x1b[2J"
YELLOW_BAND_POINTS = Decimal(5)  # within 5 percentage points below target -> yellow

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_BOLD_RED = "\x1b[1;31m"

_DASH = "—"
_ELLIPSIS = "…"
_GAP = "  "  # between columns

# (header, width) of the fixed columns after the two SL columns
_SL_WIDTH = 7  # " 100.0%"
# CSAT is today's (top-two-box, the title line says so): surveys are too few for the short windows.
# The widths keep a 100-column terminal's row within 100 columns with an 8-column queue label.
_FIXED_COLUMNS = (("Waiting", 7), ("Oldest", 6), ("Abandon", 7), ("CSAT", 6), ("Avail", 5), ("On call", 7),
                  ("Not rdy", 7), ("Need", 4), ("vs Fcst", 7))
_MIN_LABEL_WIDTH = 8


# --------------------------------------------------------------------------- text helpers


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns ``text`` occupies (wide/fullwidth chars count 2, combining 0)."""
    return sum(_char_width(ch) for ch in text)


def _truncate(text: str, width: int) -> str:
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = _char_width(ch)
        if used + w > width - 1:  # keep one column for the ellipsis
            break
        out.append(ch)
        used += w
    return "".join(out) + _ELLIPSIS


def _ljust(text: str, width: int) -> str:
    text = _truncate(text, width)
    return text + " " * (width - display_width(text))


def _rjust(text: str, width: int) -> str:
    return " " * max(0, width - display_width(text)) + text


def _paint(text: str, style: str | None, color: bool) -> str:
    if not color or not style:
        return text
    return f"{style}{text}{_RESET}"


# --------------------------------------------------------------------------- value helpers


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _pct(ratio: Any) -> Decimal | None:
    """Ratio 0-1 -> percent with one decimal, rounded half up (0.8125 -> 81.3)."""
    value = _num(ratio)
    if value is None:
        return None
    try:
        # str() gives the shortest repr, so 0.8125 is rounded as 81.25 -> 81.3 rather than
        # by banker's rounding on the binary float.
        return (Decimal(str(value)) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None


def _fmt_pct(pct: Decimal | None) -> str:
    return "  —  " if pct is None else f"{pct}%"


def _fmt_int(value: Any) -> str:
    v = _num(value)
    return _DASH if v is None else str(int(v))


def _fmt_wait(seconds: Any) -> str:
    v = _num(seconds)
    if v is None:
        return _DASH
    total = max(0, int(v))
    return f"{total // 60}:{total % 60:02d}"


def _threshold_key(t: Any) -> str | None:
    v = _num(t)
    return None if v is None else format(v, "g")


def _sl_style(pct: Decimal | None, target: Any) -> str | None:
    """Green at/above target, yellow within 5 points below, red further below.

    Compared on the displayed (rounded) percent so the color always agrees with the number.
    """
    target_pct = _pct(target)
    if pct is None or target_pct is None:
        return None
    if pct >= target_pct:
        return _GREEN
    if pct >= target_pct - YELLOW_BAND_POINTS:
        return _YELLOW
    return _RED


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- merging


def merge(snapshots: Iterable[dict | None]) -> dict[str, dict]:
    """Queue id -> queue dict across worker snapshots; on duplicates the larger ``clock`` wins."""
    best: dict[str, tuple[float, dict]] = {}
    for snap in snapshots:
        if not isinstance(snap, dict):
            continue
        clock = _num(snap.get("clock"))
        rank = float("-inf") if clock is None else clock
        for name, queue in _dict(snap.get("queues")).items():
            if not isinstance(queue, dict):
                continue
            if name not in best or rank > best[name][0]:
                best[name] = (rank, queue)
    return {name: queue for name, (_, queue) in best.items()}


def _label(name: str, queue: dict) -> str:
    label = queue.get("label")
    text = label if isinstance(label, str) and label.strip() else str(queue.get("queue") or name)
    # no control characters (newlines, escapes) from the wire into the terminal
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _need(queue: dict) -> tuple[str, str | None]:
    """The "Need" cell: agents required now (agents staffed + agents short), coloured yellow when
    the queue is short, red when short by its understaffed-alert limit or more; a dash while the
    staffing is unknown."""
    staffing = _dict(queue.get("staffing"))
    short, staffed = _num(staffing.get("agents_short")), _num(staffing.get("staffed"))
    if short is None or staffed is None:
        return _DASH, None
    limit = _num(_dict(queue.get("alert_limits")).get("understaffed_agents"))
    style = _RED if limit and short >= limit else _YELLOW if short > 0 else None
    return _fmt_int(staffed + short), style


def _first_two_thresholds(queue: dict) -> tuple[str | None, str | None]:
    thresholds = queue.get("thresholds")
    keys: list[str | None] = []
    if isinstance(thresholds, list):
        keys = [k for k in (_threshold_key(t) for t in thresholds) if k is not None]
    keys += [None, None]  # always two: None for a missing one
    return keys[0], keys[1]


# --------------------------------------------------------------------------- render


def render(
    snapshots: list[dict],
    window: str = "15m",
    width: int = 100,
    color: bool = True,
    now: float | None = None,
    *,
    warnings: Sequence[str] = (),
) -> str:
    """Full wallboard screen as text (no trailing newline).

    ``snapshots`` are worker snapshots as served at ``/api/queues`` (``None`` entries are
    ignored); ``window`` is one of ``WINDOWS``; ``now`` defaults to ``time.time()`` and is
    only used for the stale marker; ``warnings`` are extra lines shown under the table
    (e.g. workers that did not answer).
    """
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {', '.join(WINDOWS)}")
    if now is None:
        now = time.time()
    snaps = [s for s in snapshots if isinstance(s, dict)]
    queues = merge(snaps)
    lines: list[str] = []

    # ---- title
    clocks = [c for c in (_num(s.get("clock")) for s in snaps) if c is not None]
    newest = max(clocks) if clocks else None
    title = [_paint("callpulse", _BOLD, color), f"window {window} (CSAT: today)"]
    if newest is None:
        title.append("--:--:--")
    else:
        title.append(time.strftime("%H:%M:%S", time.localtime(newest)))
    if newest is not None and now - newest > STALE_AFTER_SECONDS:
        title.append(_paint("stale", _BOLD_RED, color) + f" ({now - newest:.0f}s behind)")
    elif newest is None:
        title.append(_paint("no data", _BOLD_RED, color))
    lines.append(" · ".join(title))
    lines.append("")

    # ---- SL columns: named after the thresholds when all queues agree on them
    rows = sorted(queues.items(), key=lambda item: (_label(item[0], item[1]).casefold(), item[0]))
    threshold_sets = {_first_two_thresholds(q) for _, q in rows}
    common = next(iter(threshold_sets)) if len(threshold_sets) == 1 else None
    sl_headers = [
        f"SL {common[i]}s" if common and common[i] is not None else f"SL #{i + 1}" for i in range(2)
    ]

    fixed = 2 * (_SL_WIDTH + len(_GAP)) + sum(w + len(_GAP) for _, w in _FIXED_COLUMNS)
    longest = max([display_width("Queue")] + [display_width(_label(n, q)) for n, q in rows])
    label_width = max(_MIN_LABEL_WIDTH, min(longest, width - fixed))

    header = [_ljust("Queue", label_width)] + [_rjust(h, _SL_WIDTH) for h in sl_headers]
    header += [_rjust(h, w) for h, w in _FIXED_COLUMNS]
    lines.append(_paint(_GAP.join(header), _BOLD, color))

    total_waiting = 0
    agent_totals = {"available": 0, "on_call": 0, "wrap_up": 0, "not_ready": 0}
    for name, queue in rows:
        live = _dict(queue.get("live"))
        agents = _dict(live.get("agents"))
        stats = _dict(_dict(queue.get("windows")).get(window))
        service_level = _dict(stats.get("service_level"))
        targets = _dict(queue.get("targets"))

        cells = [_ljust(_label(name, queue), label_width)]
        for key in _first_two_thresholds(queue):
            pct = _pct(service_level.get(key)) if key is not None else None
            style = _sl_style(pct, targets.get(key)) if key is not None else None
            cells.append(_paint(_rjust(_fmt_pct(pct), _SL_WIDTH), style, color))
        values = (
            _fmt_int(live.get("calls_waiting")),
            _fmt_wait(live.get("oldest_call_wait_seconds")),
            _fmt_pct(_pct(stats.get("abandon_rate"))),
            _fmt_pct(_pct(_dict(_dict(_dict(queue.get("windows")).get("today")).get("quality")).get("csat_ratio"))),
            _fmt_int(agents.get("available")),
            _fmt_int(agents.get("on_call")),
            _fmt_int(agents.get("not_ready")),
        )
        cells += [_rjust(v, w) for v, (_, w) in zip(values, _FIXED_COLUMNS)]
        need, need_style = _need(queue)
        cells.append(_paint(_rjust(need, _FIXED_COLUMNS[-2][1]), need_style, color))
        # calls offered today / forecast to date (kpi/forecast.py), when a forecast is loaded
        day = _dict(_dict(queue.get("forecast")).get("day"))
        cells.append(_rjust(_fmt_pct(_pct(day.get("offered_vs_forecast"))), _FIXED_COLUMNS[-1][1]))
        lines.append(_GAP.join(cells))

        total_waiting += int(_num(live.get("calls_waiting")) or 0)
        for k in agent_totals:
            agent_totals[k] += int(_num(agents.get(k)) or 0)

    if not rows:
        lines.append(_paint("(no queues)", _DIM, color))

    if common is None and rows:
        per_queue = ", ".join(
            f"{_label(n, q)} {'/'.join(k + 's' for k in _first_two_thresholds(q) if k is not None) or _DASH}"
            for n, q in rows
        )
        lines.append(_paint(f"SL thresholds differ per queue: {per_queue}", _DIM, color))

    # ---- warnings and footer
    if warnings:
        lines.append("")
        lines += [_paint(f"! {w}", _YELLOW, color) for w in warnings]
    lines.append("")
    agents_total = sum(agent_totals.values())
    footer = (
        f"Total: {total_waiting} waiting · {agents_total} agents "
        f"({agent_totals['available']} available, {agent_totals['on_call']} on call, "
        f"{agent_totals['wrap_up']} wrap-up, {agent_totals['not_ready']} not ready)"
    )
    lines.append(footer + "   " + _paint("Ctrl-C to stop", _DIM, color))
    return "\n".join(lines)


# --------------------------------------------------------------------------- fetch / run


def _snapshot_url(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = "http://" + url  # accept the "host:6066" form used in the snapshot's "worker" field
    url = url.rstrip("/")
    return url if url.endswith("/api/queues") else url + "/api/queues"


def fetch(url: str, timeout: float = 2.0) -> dict | None:
    """GET the worker snapshot; ``None`` on any error (refused, timeout, HTTP error, bad JSON)."""
    request = urllib.request.Request(_snapshot_url(url), headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = orjson.loads(response.read())
    except Exception:  # noqa: BLE001 - a worker that does not answer is a warning, never a crash
        return None
    return data if isinstance(data, dict) else None


def _use_color(out: TextIO) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):
        return False


def _terminal_width(out: TextIO, default: int = 100) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or default
    except (AttributeError, ValueError, OSError):
        return default


def run(
    urls: list[str],
    window: str = "15m",
    interval: float = 1.0,
    stop: threading.Event | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Poll ``urls`` every ``interval`` seconds and redraw until ``stop`` is set or Ctrl-C."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {', '.join(WINDOWS)}")
    if not urls:
        raise ValueError("at least one worker URL is required")
    stop = stop if stop is not None else threading.Event()
    color = _use_color(out)
    timeout = 2.0
    pool = ThreadPoolExecutor(max_workers=min(len(urls), 16), thread_name_prefix="wallboard-fetch")
    try:
        while not stop.is_set():
            started = time.monotonic()
            results = list(pool.map(lambda u: fetch(u, timeout=timeout), urls))
            warnings = [f"worker {u} not responding" for u, r in zip(urls, results) if r is None]
            width = _terminal_width(out)
            screen = render(
                [r for r in results if r is not None],
                window=window,
                width=width,
                color=color,
                now=time.time(),
                warnings=warnings,
            )
            out.write(CLEAR + screen + "\n")
            out.flush()
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        try:
            out.write("\n")
            out.flush()
        except (ValueError, OSError):
            pass
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
