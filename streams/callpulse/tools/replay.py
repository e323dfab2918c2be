"""`callpulse replay SOURCE`: publish the history in a file, as fast as possible or at N x real time.

SOURCE is any file an adapter reads: an Asterisk queue_log, a per-call record export (the
Technion "Anonymous Bank" layout), or a recorded AMI or FreeSWITCH event-socket session. The
events get the same deterministic ids on every run, so replaying a file twice, or a file the live
adapter already followed, counts nothing twice. A progress line shows rate and ETA; the summary
says what was published and what was skipped, with reasons.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..sources import Skips

FORMATS = ("queue_log", "anonymous_bank", "ami", "freeswitch")
# The events' `source` when none is given. Event ids are derived from it, so the live adapter and
# every replay of the same system must use the same name: these defaults are the live commands'
# defaults too (`callpulse follow`, `callpulse ami`, `callpulse freeswitch`). Give each telephony
# system its own name (--source-name asterisk:pbx1) when you have several.
# The queue_log and AMI adapters derive their ids differently, so never feed both from one PBX:
# each would count every call once more. Their defaults differ to show which one produced an event.
DEFAULT_SOURCE = {"queue_log": "asterisk", "ami": "asterisk-ami", "freeswitch": "freeswitch",
                  "anonymous_bank": "anonymous_bank"}


def detect_format(path: Path) -> str:
    """The adapter for a file, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\x00")
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"vru+line\t"):
        return "anonymous_bank"
    if first.startswith(b"Asterisk Call Manager"):
        return "ami"
    if first.startswith(b"Content-Type: auth/request") or b"Content-Type: text/event-plain" in head:
        return "freeswitch"
    fields = first.split(b"|")
    if len(fields) >= 5 and fields[0].strip().replace(b".", b"", 1).isdigit():  # epoch, maybe with a fraction
        return "queue_log"
    raise ValueError(f"{path}: cannot tell what kind of file this is; name it with --format ({', '.join(FORMATS)})")


def load_events(path: Path, fmt: str, source: str | None = None, timezone: str | None = None,
                queues: set[str] | None = None, outbound_queue: str | None = None) -> tuple[list[dict], Skips]:
    """Every event of a file, in time order, and what was skipped; with `queues`, only the events
    of those queues (agent events when they concern one of them). `outbound_queue` (queue_log):
    the queue of the dial-out lines that name none."""
    source = source or DEFAULT_SOURCE.get(fmt, fmt)
    if fmt == "queue_log":
        from ..sources import queue_log

        reader = queue_log.read_file(path, source, outbound_queue=outbound_queue)
        events = list(reader)
        skips = reader.skips
    elif fmt == "anonymous_bank":
        from ..sources import call_records

        events, skips = call_records.import_events(path, call_records.AnonymousBank(), timezone=timezone, source=source)
    elif fmt == "ami":
        from ..sources import ami

        skips = Skips()
        events = list(ami.parse_capture(path, source, skips=skips))
    elif fmt == "freeswitch":
        from ..sources import freeswitch

        skips = Skips()
        events = list(freeswitch.parse_capture(path, source, queues=sorted(queues) if queues else None, skips=skips))
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if queues:
        from ..events import queues_of

        events = [e for e in events if set(queues_of(e)) & queues]
    events.sort(key=lambda e: e["time"])  # RFC 3339 UTC with milliseconds: text order is time order
    return events, skips


class Progress:
    """A one-line progress display on stderr: bar, count, rate, ETA. Redrawn in place on a
    terminal, a plain line every few seconds otherwise (CI logs)."""

    def __init__(self, total: int, out: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic):
        self.total, self.out, self.clock = total, out, clock
        self.started = clock()
        self.tty = out.isatty()
        self._shown_at = -1e9

    def line(self, done: int) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        return (f"[{bar:<30}] {share:6.1%}  {done:,}/{self.total:,} events  {rate:,.0f}/s  "
                f"ETA {_duration(eta)}")

    def update(self, done: int) -> None:
        now = self.clock()
        if now - self._shown_at < (0.2 if self.tty else 5.0) and done < self.total:
            return
        self._shown_at = now
        self.out.write(("\r" + self.line(done)) if self.tty else self.line(done) + "\n")
        if self.tty and done >= self.total:
            self.out.write("\n")
        self.out.flush()


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Summary:
    path: Path
    fmt: str
    published: int
    by_type: Counter
    skips: Skips
    first: str | None
    last: str | None
    queues: int
    seconds: float

    dry_run: bool = False

    def lines(self) -> list[str]:
        rate = self.published / self.seconds if self.seconds > 0 else 0.0
        done = ("events read (dry run: nothing published)" if self.dry_run
                else f"events published in {self.seconds:.1f} s ({rate:,.0f}/s)")
        out = [f"{self.path} ({self.fmt}): {self.published:,} {done}, {self.queues} queue(s), "
               f"event times {self.first} .. {self.last}"]
        out += [f"{n:>9,}  {kind}" for kind, n in sorted(self.by_type.items())]
        if self.skips.total():
            out.append(f"skipped {self.skips.total():,} input record(s):")
            out += self.skips.lines()
        else:
            out.append("skipped nothing")
        return out


def schedule(events: list[dict], speed: float, started: float) -> Callable[[dict], float]:
    """send_at for N x real time: an event is due `(its time - first time) / speed` after start."""
    from ..events import parse_time

    first = parse_time(events[0]["time"]) if events else 0.0
    return lambda event: started + (parse_time(event["time"]) - first) / speed


def replay(config, path: Path, fmt: str | None = None, *, speed: float | None = None, source: str | None = None,
           timezone: str | None = None, queues: set[str] | None = None, dry_run: bool = False,
           outbound_queue: str | None = None, out: TextIO = sys.stderr) -> Summary:
    """Read a file and publish its events; returns the summary (also printed to `out`)."""
    from ..pipeline.publish import publish

    fmt = fmt or detect_format(path)
    events, skips = load_events(path, fmt, source, timezone, queues, outbound_queue)
    started = time.monotonic()
    if dry_run:
        published = len(events)
    else:
        progress = Progress(len(events), out)
        send_at = schedule(events, speed, time.time()) if speed else None
        published = asyncio.run(publish(config, events, send_at=send_at, on_sent=progress.update))
    summary = Summary(
        path=path, fmt=fmt, published=published, by_type=Counter(e["type"] for e in events), skips=skips,
        first=events[0]["time"] if events else None, last=events[-1]["time"] if events else None,
        queues=len({e["queue"] for e in events if "queue" in e}), seconds=time.monotonic() - started,
        dry_run=dry_run,
    )
    for line in summary.lines():
        print(line, file=out)
    return summary
