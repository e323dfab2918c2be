"""Tests for the terminal wallboard (callpulse.tools.wallboard) with hand-made snapshots."""

from __future__ import annotations

import http.server
import io
import re
import socket
import sys
import threading
import time
import unicodedata
from pathlib import Path

import orjson
import pytest

try:
    import callpulse  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streams"))

from callpulse.tools import wallboard
from callpulse.tools.wallboard import fetch, render, run

CLOCK = 1763890000.1
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def queue(
    name: str,
    label: str | None = None,
    sl10: float | None = 0.81,
    sl20: float | None = 0.9,
    targets: dict | None = None,
    thresholds: list | None = None,
    waiting: int = 3,
    oldest: float = 12.4,
    abandon: float | None = 0.075,
    agents: dict | None = None,
    window: str = "15m",
) -> dict:
    thresholds = thresholds if thresholds is not None else [10.0, 20.0]
    keys = [format(t, "g") for t in thresholds]
    return {
        "queue": name,
        "label": label if label is not None else name,
        "timezone": "Europe/Moscow",
        "formula": "SL-C",
        "thresholds": thresholds,
        "targets": targets if targets is not None else {k: 0.8 for k in keys},
        "live": {
            "calls_waiting": waiting,
            "oldest_call_wait_seconds": oldest,
            "calls_waiting_over_threshold": {k: 0 for k in keys},
            "agents": agents if agents is not None else {"available": 2, "on_call": 5, "wrap_up": 1, "not_ready": 1},
            "calls_orphaned": 0,
        },
        "windows": {
            window: {
                "offered": 40,
                "answered": 35,
                "abandoned": 3,
                "short_abandoned": 1,
                "flowed_out": 1,
                "service_level": dict(zip(keys, [sl10, sl20])),
                "answer_rate": 0.875,
                "abandon_rate": abandon,
                "average_answer_wait_seconds": 6.2,
                "average_abandon_wait_seconds": 31.0,
                "average_handle_seconds": 245.0,
                "occupancy": 0.82,
            }
        },
    }


def snapshot(*queues: dict, clock: float = CLOCK, worker: str = "w1:6066") -> dict:
    return {"worker": worker, "generated_at": clock + 0.02, "clock": clock, "queues": {q["queue"]: q for q in queues}}


def width_of(text: str) -> int:
    """Display columns, computed independently of the module under test."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def plain(snaps: list[dict], **kw) -> str:
    kw.setdefault("now", CLOCK + 1)
    return render(snaps, color=False, **kw)


def row(text: str, label: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(label + " ")]
    assert len(rows) == 1, text
    return rows[0]


# --------------------------------------------------------------------------- layout


def test_one_row_per_queue_sorted_by_label():
    snap = snapshot(queue("support", "Support"), queue("billing", "Billing"), queue("sales", "Sales"))
    text = plain([snap])
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Queue"))
    labels = [line.split()[0] for line in lines[header + 1 : header + 4]]
    assert labels == ["Billing", "Sales", "Support"]
    assert lines[header + 4] == ""  # nothing else in the table
    assert "\x1b" not in text


def test_header_and_row_values():
    snap = snapshot(queue("sales", "Sales", waiting=3, oldest=72.9, abandon=0.075))
    text = plain([snap])
    header = next(line for line in text.splitlines() if line.startswith("Queue"))
    for name in ("SL 10s", "SL 20s", "Waiting", "Oldest", "Abandon", "CSAT", "Avail", "On call", "Not rdy", "Need", "vs Fcst"):
        assert name in header
    assert row(text, "Sales").split() == ["Sales", "81.0%", "90.0%", "3", "1:12", "7.5%", "—", "2", "5", "1", "—", "—"]


@pytest.mark.parametrize(("short", "shown", "style"), [(-2, "6", None), (0, "8", None), (1, "9", "\x1b[33m"),
                                                       (2, "10", "\x1b[31m"), (5, "13", "\x1b[31m")])
def test_need_is_agents_required_now_coloured_by_the_understaffed_limit(short, shown, style):
    q = queue("sales", "Sales")
    q["staffing"] = {"staffed": 8, "agents_short": short}
    q["alert_limits"] = {"understaffed_agents": 2.0}
    assert row(plain([snapshot(q)]), "Sales").split()[-2] == shown
    cell = shown.rjust(4)
    coloured = row(render([snapshot(q)], color=True, now=CLOCK + 1), "Sales")
    assert f"{style}{cell}\x1b[0m  " in coloured if style else f"  {cell}  " in coloured
    q["alert_limits"] = {"understaffed_agents": 0.0}  # the alert is off: short is only yellow
    off = row(render([snapshot(q)], color=True, now=CLOCK + 1), "Sales")
    assert f"\x1b[33m{cell}\x1b[0m  " in off if short > 0 else f"  {cell}  " in off


def test_threshold_header_uses_g_format():
    snap = snapshot(queue("sales", "Sales", thresholds=[7.5, 30.0]))
    header = next(line for line in plain([snap]).splitlines() if line.startswith("Queue"))
    assert "SL 7.5s" in header and "SL 30s" in header


def test_title_has_window_clock_and_no_stale_when_fresh():
    text = plain([snapshot(queue("sales"))], window="15m", now=CLOCK + 10)
    title = text.splitlines()[0]
    assert "callpulse" in title
    assert "15m" in title
    assert time.strftime("%H:%M:%S", time.localtime(CLOCK)) in title
    assert "stale" not in title


def test_footer_totals_and_hint():
    a = queue("a", agents={"available": 1, "on_call": 2, "wrap_up": 0, "not_ready": 3}, waiting=4)
    b = queue("b", agents={"available": 2, "on_call": 1, "wrap_up": 1, "not_ready": 0}, waiting=1)
    footer = plain([snapshot(a, b)]).splitlines()[-1]
    assert "5 waiting" in footer
    assert "10 agents" in footer
    assert "3 available" in footer and "3 on call" in footer and "1 wrap-up" in footer and "3 not ready" in footer
    assert "Ctrl-C to stop" in footer


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("ratio", "shown"),
    [(0.8125, "81.3%"), (0.81249, "81.2%"), (0.80, "80.0%"), (1.0, "100.0%"), (0.0, "0.0%"), (0.0005, "0.1%")],
)
def test_percent_formatting_and_rounding(ratio, shown):
    text = plain([snapshot(queue("sales", "Sales", sl10=ratio))])
    assert row(text, "Sales").split()[1] == shown


def test_null_service_level_shows_dash():
    text = plain([snapshot(queue("sales", "Sales", sl10=None, sl20=0.5, abandon=None))])
    line = row(text, "Sales")
    assert "  —  " in line
    assert line.split()[1:3] == ["—", "50.0%"]
    assert line.split()[5] == "—"  # abandon rate


def test_missing_window_and_nulls_do_not_crash():
    q = queue("sales", "Sales", window="1h")
    q["live"] = {"calls_waiting": None, "oldest_call_wait_seconds": None, "agents": None}
    q["thresholds"] = None
    text = plain([snapshot(q)], window="15m")
    assert row(text, "Sales").split()[1:] == ["—"] * 11


def test_unknown_window_rejected():
    with pytest.raises(ValueError):
        render([], window="2h")


def test_oldest_wait_format():
    text = plain([snapshot(queue("a", "A", oldest=0), queue("b", "B", oldest=605.99))])
    assert row(text, "A").split()[4] == "0:00"
    assert row(text, "B").split()[4] == "10:05"


# --------------------------------------------------------------------------- colors


GREEN, YELLOW, RED = "\x1b[32m", "\x1b[33m", "\x1b[31m"


def sl_color(value: float, target: float = 0.8) -> str | None:
    snap = snapshot(queue("sales", "Sales", sl10=value, sl20=None, targets={"10": target, "20": target}))
    line = next(line for line in render([snap], color=True, now=CLOCK).splitlines() if "Sales" in line)
    found = [c for c in (GREEN, YELLOW, RED) if c in line]
    assert len(found) <= 1, repr(line)
    return found[0] if found else None


def test_color_boundaries():
    assert sl_color(0.80) == GREEN  # exactly at target
    assert sl_color(0.95) == GREEN
    assert sl_color(0.7999) == GREEN  # displayed as 80.0%: the color agrees with the number shown
    assert sl_color(0.7994) == YELLOW  # 79.9%
    assert sl_color(0.79) == YELLOW
    assert sl_color(0.75) == YELLOW  # exactly target - 0.05
    assert sl_color(0.7499) == YELLOW  # displays 75.0%: color agrees with the number shown
    assert sl_color(0.749) == RED
    assert sl_color(0.10) == RED


def test_color_boundaries_other_target():
    assert sl_color(0.9, target=0.9) == GREEN
    assert sl_color(0.85, target=0.9) == YELLOW
    assert sl_color(0.849, target=0.9) == RED


def test_no_color_for_null_value_or_target():
    assert sl_color(None) is None  # type: ignore[arg-type]
    snap = snapshot(queue("sales", "Sales", targets={"10": None, "20": None}))
    assert "\x1b[3" not in render([snap], color=True, now=CLOCK)


def test_color_false_has_no_escapes_but_same_text():
    snap = snapshot(queue("sales", "Продажи"), queue("x", "客服", sl10=0.1))
    colored = render([snap], color=True, now=CLOCK + 60)
    assert "\x1b[" in colored
    assert ANSI.sub("", colored) == render([snap], color=False, now=CLOCK + 60)


# --------------------------------------------------------------------------- wide characters


def test_wide_characters_align():
    snap = snapshot(
        queue("cn", "客服", sl10=0.8125),
        queue("sales", "Sales", sl10=0.8125),
        queue("ru", "Продажи", sl10=0.8125),
        queue("jp", "サポート窓口", sl10=0.8125),
    )
    text = plain([snap], width=110)  # room for the 12 columns of サポート窓口
    lines = {label: row(text, label) for label in ("客服", "Sales", "Продажи", "サポート窓口")}
    header = next(line for line in text.splitlines() if line.startswith("Queue"))
    starts = {label: width_of(line[: line.index("81.3%")]) for label, line in lines.items()}
    assert len(set(starts.values())) == 1, starts
    # the second column (right-aligned SL) ends where its header ends
    sl_end = width_of(header[: header.index("SL 10s") + len("SL 10s")])
    assert starts["Sales"] + len("81.3%") == sl_end
    # and every row is as wide as every other
    assert len({width_of(line) for line in lines.values()}) == 1


def test_long_label_truncated_to_width():
    snap = snapshot(queue("long", "客" * 80), queue("sales", "Sales"))
    text = plain([snap], width=100)
    table = [line for line in text.splitlines() if "%" in line]
    assert all(width_of(line) <= 100 for line in table)
    assert any("…" in line for line in table)


# --------------------------------------------------------------------------- merging and staleness


def test_merge_duplicate_queue_larger_clock_wins():
    old = snapshot(queue("sales", "Sales", sl10=0.5), queue("billing", "Billing"), clock=CLOCK - 5, worker="w1")
    new = snapshot(queue("sales", "Sales", sl10=0.9), queue("support", "Support"), clock=CLOCK, worker="w2")
    for order in ([old, new], [new, old]):
        text = plain(order)
        assert row(text, "Sales").split()[1] == "90.0%"
        assert sum(1 for line in text.splitlines() if line.startswith("Sales ")) == 1
        assert {line.split()[0] for line in text.splitlines() if line} >= {"Billing", "Sales", "Support"}


def test_stale_marker():
    snap = snapshot(queue("sales"), clock=CLOCK)
    assert "stale" not in plain([snap], now=CLOCK + 10).splitlines()[0]
    title = plain([snap], now=CLOCK + 10.5).splitlines()[0]
    assert "stale" in title
    colored = render([snap], color=True, now=CLOCK + 30).splitlines()[0]
    assert "\x1b[1;31mstale\x1b[0m" in colored


def test_stale_uses_newest_snapshot_clock():
    old = snapshot(queue("a"), clock=CLOCK - 60)
    new = snapshot(queue("b"), clock=CLOCK)
    title = plain([old, new], now=CLOCK + 2).splitlines()[0]
    assert "stale" not in title
    assert time.strftime("%H:%M:%S", time.localtime(CLOCK)) in title


def test_no_snapshots_and_warnings():
    text = plain([], warnings=["worker http://w2:6066 not responding"])
    assert "no data" in text.splitlines()[0]
    assert "! worker http://w2:6066 not responding" in text
    assert text.splitlines()[-1].endswith("Ctrl-C to stop")


# --------------------------------------------------------------------------- fetch / run


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_closed_port_returns_none():
    port = free_port()
    assert fetch(f"http://127.0.0.1:{port}", timeout=1.0) is None


@pytest.fixture
def server():
    snap = snapshot(queue("sales", "Продажи"))
    body = orjson.dumps(snap)
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            if self.path == "/api/queues":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", snap, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_real_server(server):
    url, snap, seen = server
    assert fetch(url) == snap
    assert fetch(url + "/") == snap
    assert fetch(url + "/api/queues") == snap
    assert fetch(url.removeprefix("http://")) == snap
    assert seen == ["/api/queues"] * 4
    assert fetch(url + "/nope/api/queues") is None  # 404 -> None


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_run_draws_and_warns_about_dead_worker(server):
    url, _, _ = server
    dead = f"http://127.0.0.1:{free_port()}"
    stop = threading.Event()
    out = io.StringIO()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    started = time.monotonic()
    run([url, dead], interval=0.1, stop=stop, out=out)
    timer.cancel()
    assert time.monotonic() - started < 5
    text = out.getvalue()
    assert text.startswith(wallboard.CLEAR)
    screens = text.split(wallboard.CLEAR)[1:]
    assert len(screens) >= 2
    assert "Продажи" in screens[-1]
    assert f"worker {dead} not responding" in screens[-1]
    assert "\x1b[3" not in text and "\x1b[1m" not in text  # not a tty -> no color


def test_run_color_on_tty_unless_no_color(server, monkeypatch):
    url, _, _ = server
    for no_color, expect in ((False, True), (True, False)):
        if no_color:
            monkeypatch.setenv("NO_COLOR", "1")
        else:
            monkeypatch.delenv("NO_COLOR", raising=False)
        stop = threading.Event()
        out = FakeTTY()
        threading.Timer(0.2, stop.set).start()
        run([url], interval=0.05, stop=stop, out=out)
        body = out.getvalue().replace(wallboard.CLEAR, "")
        assert ("\x1b[" in body) is expect


def test_run_stops_on_keyboard_interrupt(server, monkeypatch):
    url, _, _ = server
    calls = []

    def interrupting_render(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(wallboard, "render", interrupting_render)
    run([url], interval=0.01, out=io.StringIO())  # returns instead of raising
    assert calls == [1]


def test_vs_forecast_is_todays_calls_against_the_forecast_to_date():
    q = queue("sales", "Sales")
    q["forecast"] = {"day": {"offered_vs_forecast": 1.0425}}
    assert row(plain([snapshot(q)]), "Sales").split()[-1] == "104.3%"
    q["forecast"] = {"day": {"offered_vs_forecast": None}}  # too few forecast calls yet
    assert row(plain([snapshot(q)]), "Sales").split()[-1] == "—"


def test_the_csat_column_shows_todays_top_two_box_csat():
    q = queue("sales", "Sales")
    q["windows"]["today"] = {"quality": {"csat_ratio": 0.8125}}
    cells = row(plain([snapshot(q)]), "Sales").split()
    header = next(line for line in plain([snapshot(q)]).splitlines() if line.startswith("Queue")).split()
    assert cells[header.index("CSAT") - 2] == "81.3%"  # "SL 10s" and "SL 20s" are two words each
