"""Business hours of a queue: when it is open, in its own time zone.

A queue's hours are a list of rules such as ``"mon-fri 08:00-20:00"`` or ``"sat 10:00-14:00"``,
read in the queue's local time, plus a list of closed dates (holidays, ``"2026-12-31"``). A span
that ends at or before it starts runs past midnight (``"fri 22:00-06:00"`` is open from Friday
22:00 to Saturday 06:00) and belongs to the day it starts on: a closed date closes the spans that
start on it, so it closes the night that starts on it, while a night that began the evening
before still runs into it. ``24:00`` ends a span at midnight.

Alerts use this (``callcenter_queue_open``) so that a closed queue never pages anyone.
Standard library only; the parser raises ValueError with a message for the config to prefix
with the key.
"""

from __future__ import annotations

import datetime
import functools
import re
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN = ("mon-sun 00:00-24:00",)

_RULE = re.compile(r"\s*([a-z]{3})(?:\s*-\s*([a-z]{3}))?\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
MINUTES_PER_DAY = 24 * 60


@functools.lru_cache(maxsize=256)
def parse_open_hours(rules: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    """Rules -> spans (weekday 0 = Monday, start minute, end minute), end > start, end up to
    2 x 1440 for a span that runs past midnight. Raises ValueError naming the rule's index."""
    spans: list[tuple[int, int, int]] = []
    for i, rule in enumerate(rules):
        match = _RULE.fullmatch(rule.lower()) if isinstance(rule, str) else None
        if not match:
            raise ValueError(f'[{i}]: must look like "mon-fri 08:00-20:00" or "sat 10:00-14:00", got {rule!r}')
        first, last, h1, m1, h2, m2 = match.groups()
        for day in (first, last):
            if day is not None and day not in DAYS:
                raise ValueError(f"[{i}]: unknown day {day!r}; use {', '.join(DAYS)}")
        start, end = int(h1) * 60 + int(m1), int(h2) * 60 + int(m2)
        if int(m1) > 59 or int(m2) > 59 or start > MINUTES_PER_DAY - 1 or end > MINUTES_PER_DAY:
            raise ValueError(f"[{i}]: times must be 00:00 to 24:00, got {rule!r}")
        if end <= start:
            end += MINUTES_PER_DAY  # runs past midnight into the next day
        d0 = DAYS.index(first)
        d1 = DAYS.index(last) if last else d0
        days = range(d0, d1 + 1) if d0 <= d1 else [*range(d0, 7), *range(0, d1 + 1)]  # "sat-mon" wraps
        spans += [(day, start, end) for day in days]
    return tuple(sorted(spans))


def parse_date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text.strip())
    except (AttributeError, ValueError):
        raise ValueError(f'must be a date "YYYY-MM-DD", got {text!r}') from None


def _spans(rules: tuple[str, ...], closed: set[datetime.date], day: datetime.date):
    """The open spans that start on local date `day`, as naive local (start, end) datetimes."""
    midnight = datetime.datetime.combine(day, datetime.time())
    for weekday, start, end in parse_open_hours(rules):
        if weekday == day.weekday() and day not in closed:
            yield midnight + datetime.timedelta(minutes=start), midnight + datetime.timedelta(minutes=end)


def opened_at(rules: tuple[str, ...], closed_dates: tuple[str, ...], timezone: str, t: float) -> float | None:
    """Unix time at which the open period around `t` began, or None while the queue is closed.
    Spans that touch or overlap count as one period ("mon-sun 00:00-24:00" has been open for
    days); the search stops 7 days back, so an always-open queue reports t - 7 days."""
    zone = ZoneInfo(timezone)
    local = datetime.datetime.fromtimestamp(t, zone).replace(tzinfo=None)
    closed = {parse_date(d) for d in closed_dates}
    # Spans starting from 8 days back (7 days plus one overnight span) up to today.
    spans = [span for back in range(8, -1, -1)
             for span in _spans(rules, closed, local.date() - datetime.timedelta(days=back))]
    around = [start for start, end in spans if start <= local < end]
    if not around:
        return None
    start, horizon = min(around), local - datetime.timedelta(days=7)
    while start > horizon:
        reaching = [s for s, e in spans if s < start <= e]  # a span that ends at or after this start
        if not reaching:
            break
        start = min(reaching)
    return max(start, horizon).replace(tzinfo=zone).timestamp()


def is_open(rules: tuple[str, ...], closed_dates: tuple[str, ...], timezone: str, t: float) -> bool:
    """Whether a queue with these hours is open at Unix time `t`."""
    return opened_at(rules, closed_dates, timezone, t) is not None
