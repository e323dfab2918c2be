"""Configuration: one TOML file plus ``CALLPULSE_*`` environment overrides, checked at start-up.

Everything is validated once, when the worker starts, so a typo stops the process with a message
that names the offending key (``queues.sales.thresholds_seconds[1]: must be > 0, got -5``) instead
of producing wrong numbers on a wallboard hours later.

Layout of the file (every key is optional; ``deploy/callpulse.example.toml`` lists them all)::

    [kafka]            # KafkaConfig
    [stream]           # StreamConfig
    [queue_defaults]   # QueueConfig for every queue that has no section of its own
    [queues.sales]     # per-queue overrides; keys left out inherit from [queue_defaults]
    [agents]           # AgentsConfig: the agents' day, names, schedule and scorecard (绩效)
    [agents.scorecard] # one line per measure: {target = N | band = [lo, hi], weight = W}

Precedence: environment variable > file > built-in default. An environment variable that is set
but empty (``CALLPULSE_WEB_PORT=``, common with compose files) counts as unset.

Only the standard library is used, so the configuration can be checked without Kafka or Faust;
``check_broker_access`` (TLS and SASL settings tried against a real broker at start-up) imports
aiokafka when it runs, for the SASL login.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import difflib
import json
import math
import os
import re
import socket
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .kpi import hours
from .kpi.scorecard import MEASURES as SCORECARD_MEASURES
from .kpi.scorecard import Measure

__all__ = [
    "DEFAULT_TARGET",
    "ENV_OVERRIDES",
    "FORMULAS",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "Config",
    "ConfigError",
    "KafkaConfig",
    "QueueConfig",
    "StreamConfig",
    "AgentsConfig",
    "check_broker_access",
    "load_config",
]

#: Service-level formulas; notation A answered, Ab abandoned, F flowed out, T threshold,
#: S short-abandon time. See shared/docs/kpi-reference.md.
FORMULAS = ("SL-A", "SL-B", "SL-C", "SL-D", "SL-E", "SL-F", "SL-G")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Service-level target used for every threshold whose target is not configured.
DEFAULT_TARGET = 0.8
#: Name of ``Config.queue_defaults``; not allowed as a queue id in ``[queues]``.
DEFAULTS_NAME = "*"


class ConfigError(ValueError):
    """Invalid configuration. The message starts with the key path (or environment variable,
    or file path) it is about: ``"<key>: <problem>"``; ``key`` holds that path."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# --------------------------------------------------------------------------------------------
# Small helpers for messages
# --------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _fail(where: str, problem: str) -> NoReturn:
    raise ConfigError(f"{where}: {problem}", key=where)


def _key(name: str) -> str:
    """A table key as it would be written in TOML: bare if possible, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _queue_path(name: str) -> str:
    return "queue_defaults" if name == DEFAULTS_NAME else f"queues.{_key(name)}"


def _show(value: Any) -> str:
    """A value as the user wrote it, for 'got ...' in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, Mapping)):
        return "a table"
    if isinstance(value, (datetime.time, datetime.date)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _num(value: float) -> str:
    return f"{value:g}"


def _num_list(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(_num(v) for v in values) + "]"


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


# --------------------------------------------------------------------------------------------
# Validators: (value, where) -> normalized value, or ConfigError naming `where`
# --------------------------------------------------------------------------------------------

Check = Callable[[Any, str], Any]


def _number(value: Any, where: str, *, gt: float | None = None, ge: float | None = None) -> float:
    # bool is a subclass of int: `true` must not silently become 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(where, f"must be a number, got {_show(value)}")
    if not math.isfinite(value):
        _fail(where, f"must be a finite number, got {_show(value)}")
    if gt is not None and not value > gt:
        _fail(where, f"must be > {_num(gt)}, got {_show(value)}")
    if ge is not None and not value >= ge:
        _fail(where, f"must be >= {_num(ge)}, got {_show(value)}")
    return float(value)


def _positive(value: Any, where: str) -> float:
    return _number(value, where, gt=0)


def _non_negative(value: Any, where: str) -> float:
    return _number(value, where, ge=0)


def _integer(lo: int, hi: int | None = None) -> Check:
    wanted = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    def check(value: Any, where: str) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < lo
            or (hi is not None and value > hi)
        ):
            _fail(where, f"must be {wanted}, got {_show(value)}")
        return value

    return check


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _fail(where, f"must be a string, got {_show(value)}")
    if not value.strip():
        _fail(where, "must not be empty")
    return value


def _boolean(value: Any, where: str) -> bool:
    # From the environment, true/false, 1/0, yes/no and on/off (any case) arrive as a bool here.
    if not isinstance(value, bool):
        _fail(where, f"must be true or false, got {_show(value)}")
    return value


def _optional_string(value: Any, where: str) -> str | None:
    """Unset (None) or a string; an empty string also means unset."""
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(where, f"must be a string, got {_show(value)}")
    return value if value.strip() else None


def _hash_key(value: Any, where: str) -> str | None:
    """A secret key for a keyed hash: long enough that the hashes of the few billion phone numbers
    cannot be tried out without it."""
    key = _secret(value, where)
    if key is not None and len(key) < 16:
        _fail(where, "must be at least 16 characters (e.g. `openssl rand -hex 32`); value not shown")
    return key


def _secret(value: Any, where: str) -> str | None:
    """Like _optional_string, but never echoes the value."""
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(where, f"must be a string, got a {type(value).__name__} (value not shown)")
    return value if value else None


def _choice(choices: tuple[str, ...], what: str, *, optional: bool = False) -> Check:
    def check(value: Any, where: str) -> str | None:
        if optional and (value is None or (isinstance(value, str) and not value.strip())):
            return None
        if not isinstance(value, str):
            _fail(where, f"must be a string, got {_show(value)}")
        normalized = value.strip().upper()
        if normalized not in choices:
            hint = _did_you_mean(normalized, choices)
            _fail(where, f"unknown {what} {value!r}{hint}; expected one of {', '.join(choices)}")
        return normalized

    return check


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic(value: Any, where: str) -> str:
    value = _string(value, where)
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        _fail(
            where,
            f"must be a Kafka topic name (1-249 characters from A-Z a-z 0-9 . _ -), got {value!r}",
        )
    return value


def _bootstrap_servers(value: Any, where: str) -> str:
    value = _string(value, where)
    servers = [part.strip() for part in value.split(",")]
    for server in servers:
        if not server:
            _fail(where, f"must be a comma-separated list of host:port, got {value!r}")
        host, sep, port = server.rpartition(":")
        if sep and (not host or not port.isdigit() or not 1 <= int(port) <= 65535):
            _fail(where, f"{server!r} is not host:port with a port 1..65535")
    return ",".join(servers)


def _timezone(value: Any, where: str) -> str:
    value = _string(value, where)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        known = available_timezones()
        by_lower = {name.lower(): name for name in known}
        if value.lower() in by_lower:
            hint = f" (did you mean {by_lower[value.lower()]}?)"
        else:
            match = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
            hint = f" (did you mean {by_lower[match[0]]}?)" if match else ""
        _fail(where, f"unknown time zone {value!r}{hint}; use an IANA name like Europe/Moscow")
    return value


_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")


def _time_of_day(value: Any, where: str) -> datetime.time:
    if isinstance(value, datetime.time) and value.tzinfo is None:
        return value  # TOML local time (06:00:00) or a time given in code
    if isinstance(value, str):
        match = _HH_MM.fullmatch(value.strip())
        if match and int(match[1]) < 24 and int(match[2]) < 60:
            return datetime.time(int(match[1]), int(match[2]))
    _fail(where, f'must be a time of day "HH:MM" (00:00 to 23:59), got {_show(value)}')


def _open_hours(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        _fail(where, f'must be a list of rules like ["mon-fri 08:00-20:00"], got {_show(value)}')
    if not value:
        _fail(where, "must list at least one rule; a queue that never opens would never alert "
                     '(for a queue that is always open use ["mon-sun 00:00-24:00"])')
    rules = tuple(" ".join(v.lower().split()) for v in value)
    try:
        hours.parse_open_hours(rules)
    except ValueError as exc:
        index, _, problem = str(exc).partition(": ")
        _fail(f"{where}{index}", problem)
    return rules


def _closed_dates(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        _fail(where, f'must be a list of dates like ["2026-12-31"], got {_show(value)}')
    out = []
    for i, item in enumerate(value):
        if isinstance(item, datetime.date) and not isinstance(item, datetime.datetime):
            out.append(item.isoformat())  # a TOML date written without quotes
            continue
        try:
            out.append(hours.parse_date(item).isoformat())
        except ValueError as exc:
            _fail(f"{where}[{i}]", str(exc))
    return tuple(sorted(set(out)))


def _interval_minutes(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        _fail(where, f"must be a list of interval lengths in minutes, e.g. [15, 30], got {_show(value)}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 1440 or 1440 % item:
            _fail(where, f"each interval length must be a whole number of minutes that divides a day "
                         f"(1440), like 5, 6, 15, 30 or 60; got {_show(item)}")
        if item in out:
            _fail(where, f"interval length {item} is listed twice")
        out.append(item)
    return tuple(sorted(out))


#: Results of call.outbound_attempt (the event schema's `outbound_result`).
OUTBOUND_RESULTS = ("connected", "no_answer", "busy", "failed", "voicemail", "cancelled")


def _outbound_results(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        _fail(where, f"must be a non-empty list of outbound results, e.g. [\"connected\"], got {_show(value)}")
    for item in value:
        if item not in OUTBOUND_RESULTS:
            hint = _did_you_mean(str(item), OUTBOUND_RESULTS)
            _fail(where, f"unknown outbound result {_show(item)}{hint}; expected any of {', '.join(OUTBOUND_RESULTS)}")
    return tuple(dict.fromkeys(value))


def _limits(value: Any, where: str) -> tuple[float, ...]:
    """Ascending positive seconds, possibly none."""
    if isinstance(value, (list, tuple)) and not value:
        return ()
    return _thresholds(value, where)


def _currency(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[A-Z]{3})?", value):
        _fail(where, f"must be an ISO 4217 currency code of three capital letters (\"EUR\", \"CNY\") or empty, got {_show(value)}")
    return value


def _ratio_or_off(value: Any, where: str) -> float:
    ratio = _number(value, where)
    if not 0 <= ratio <= 1:
        _fail(where, f"must be a ratio in [0, 1] (0 turns the alert off), got {_show(value)}")
    return ratio


def _label(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _fail(where, f"must be a string, got {_show(value)}")
    return value


def _thresholds(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        _fail(where, f"must be a list of seconds like [10, 20], got {_show(value)}")
    if not value:
        _fail(where, "must list at least one threshold")
    result: list[float] = []
    for i, item in enumerate(value):
        seconds = _number(item, f"{where}[{i}]", gt=0)
        if result and seconds == result[-1]:
            _fail(f"{where}[{i}]", f"duplicate threshold {_num(seconds)}")
        if result and seconds < result[-1]:
            _fail(
                f"{where}[{i}]",
                f"thresholds must be ascending, got {_num(seconds)} after {_num(result[-1])}",
            )
        result.append(seconds)
    return tuple(result)


def _target(value: Any, where: str) -> float:
    ratio = _number(value, where)
    if not 0 < ratio <= 1:
        hint = f" (for {_num(ratio)} % write {_num(ratio / 100)})" if 1 < ratio <= 100 else ""
        _fail(where, f"must be a ratio in (0, 1], got {_show(value)}{hint}")
    return ratio


def _targets(
    value: Any, where: str, thresholds: tuple[float, ...], thresholds_where: str
) -> tuple[float, ...]:
    """A number (same target for every threshold), a list (one per threshold) or a table
    {"10" = 0.7, "20" = 0.8} keyed by threshold; an empty list/tuple means DEFAULT_TARGET each."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (_target(value, where),) * len(thresholds)
    if isinstance(value, (list, tuple)):
        if not value:
            return (DEFAULT_TARGET,) * len(thresholds)
        if len(value) != len(thresholds):
            _fail(
                where,
                f"must have one target per threshold: {thresholds_where} has {len(thresholds)} "
                f"{_num_list(thresholds)}, got {len(value)} targets {_show(value)}",
            )
        return tuple(_target(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, Mapping):
        by_threshold: dict[float, float] = {}
        for raw_key, item in value.items():
            key_where = f"{where}.{_key(str(raw_key))}"
            try:
                seconds = float(raw_key)
            except (TypeError, ValueError):
                _fail(key_where, 'keys must be thresholds in seconds, like "20" = 0.8')
            if seconds not in thresholds:
                _fail(
                    key_where, f"no such threshold; {thresholds_where} is {_num_list(thresholds)}"
                )
            if seconds in by_threshold:
                _fail(key_where, f"threshold {_num(seconds)} is given twice")
            by_threshold[seconds] = _target(item, key_where)
        missing = [t for t in thresholds if t not in by_threshold]
        if missing:
            _fail(
                where,
                f"no target for threshold {', '.join(_num(t) for t in missing)} "
                f"(every threshold in {thresholds_where} {_num_list(thresholds)} needs one)",
            )
        return tuple(by_threshold[t] for t in thresholds)
    _fail(
        where,
        'must be a ratio (0.8), a list ([0.7, 0.8]) or a table ({"10" = 0.7, "20" = 0.8}), '
        f"got {_show(value)}",
    )


# --------------------------------------------------------------------------------------------
# The configuration objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueConfig:
    """How one queue is measured. Constructing one validates and normalizes it (lists become
    tuples, ints become floats, "HH:MM" becomes a time)."""

    name: str
    """The queue id as it appears in events; ``"*"`` for ``Config.queue_defaults``."""
    label: str = ""
    """Display name, any language; empty means the queue id."""
    thresholds_seconds: tuple[float, ...] = (10.0, 20.0)
    """Service-level thresholds T in seconds: ascending, unique, > 0."""
    targets: tuple[float, ...] = ()
    """Target ratio in (0, 1] per threshold, same length. Empty (the default) means
    DEFAULT_TARGET (0.8) for every threshold, so overriding only the thresholds works."""
    formula: str = "SL-C"
    """One of FORMULAS."""
    short_abandon_seconds: float = 5.0
    """S: callers who hang up within S seconds count as short abandons (>= 0)."""
    timezone: str = "UTC"
    """IANA time zone of the queue's business day."""
    business_day_start: datetime.time = datetime.time(0, 0)
    """Local time at which the queue's daily counters start over."""
    orphan_after_seconds: float = 3600.0
    """A call waiting longer than this (> 0) with no further event is reported as orphaned."""
    open_hours: tuple[str, ...] = hours.ALWAYS_OPEN
    """Business hours in local time, rules like "mon-fri 08:00-20:00"; alerts only while open."""
    closed_dates: tuple[str, ...] = ()
    """Local dates ("YYYY-MM-DD") on which no open span starts (holidays); a night span that began
    the evening before still runs into the date."""
    team: str = ""
    """Team that owns the queue's alerts (Alertmanager routes on it); empty: the default route."""
    alert_calls_waiting: float = 10.0
    """Alert when more calls than this wait (0: off)."""
    alert_oldest_wait_seconds: float = 120.0
    """Alert when the oldest caller has waited longer than this (0: off)."""
    alert_abandon_rate: float = 0.10
    """Alert when abandoned / offered in the 15m window exceeds this ratio (0: off)."""
    alert_short_abandon_rate: float = 0.10
    """Alert when short abandons / offered in the 15m window exceed this ratio (0: off)."""
    alert_event_stall_seconds: float = 900.0
    """Alert when no event reached the queue for this long while it is open, counted from the
    newest event or the opening time, whichever is later (0: off)."""
    alert_min_calls: float = 10.0
    """Calls a window needs before its service level or rates may raise an alert."""
    alert_understaffed_agents: float = 2.0
    """Alert when the queue is short of at least this many agents (agents required for its target
    by Erlang A, or Erlang C while the patience is unknown, minus agents staffed) (0: off)."""
    alert_understaffed_seconds: float = 900.0
    """... for at least this long without a break, while open."""
    interval_minutes: tuple[int, ...] = (15, 30)
    """Lengths of the interval reports in minutes, aligned to local midnight in the queue's time
    zone; each must divide a day (1440). Empty: no interval reports."""
    outbound_connected_results: tuple[str, ...] = ("connected",)
    """Results of call.outbound_attempt that count as a live (human) answer for the connect rate
    and the abandoned-outbound rule."""
    outbound_abandon_seconds: float = 2.0
    """A live outbound answer that reaches no agent within this many seconds is an abandoned
    outbound call (the US FTC/TCPA and UK Ofcom rule: 2 s)."""
    outbound_abandon_limit: float = 0.03
    """Alert when abandoned / live-answered outbound calls of a campaign over the last 30 business
    dates of the queue exceed this ratio (the US Telemarketing Sales Rule's cap: 3 %; 0: off)."""
    callback_open_limit_seconds: float = 3600.0
    """A requested callback not completed within this long is overdue (0: off)."""
    not_ready_limits_seconds: tuple[float, ...] = (900.0, 1800.0)
    """Limits for callcenter_agents_not_ready_over_limit: agents of the queue in not_ready for
    longer than each (ascending seconds; empty: none)."""
    cost_per_agent_hour: float = 0.0
    """Cost of one logged-in agent-hour, for cost per handled call (0: not computed)."""
    currency: str = ""
    """ISO 4217 code of cost_per_agent_hour, e.g. "EUR", "CNY", "RUB"."""
    repeat_caller_seconds: float = 86400.0
    """Repeat-caller FCR: a handled call counts as resolved when the same caller (by keyed hash,
    stream.caller_hash_key) offers no further call to the queue, or to another queue of its
    repeat_caller_group, within this long after it ended (0: off; 7 days = 604800 is also common)."""
    repeat_caller_group: str = ""
    """Queues that name the same group (in their [queues.ID] sections) count each other's calls as
    repeats in repeat-caller FCR: a caller handled in billing who calls support the next morning
    was not resolved. Empty: the queue alone. Each call.offered with a caller is then also routed
    to the group's other queues, which track it for this only."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail("queues", f"queue name must be a non-empty string, got {_show(self.name)}")
        path = _queue_path(self.name)
        set_ = object.__setattr__
        label = _label(self.label, f"{path}.label")
        set_(self, "label", label if label.strip() else self.name)
        thresholds = _thresholds(self.thresholds_seconds, f"{path}.thresholds_seconds")
        set_(self, "thresholds_seconds", thresholds)
        set_(
            self,
            "targets",
            _targets(self.targets, f"{path}.targets", thresholds, f"{path}.thresholds_seconds"),
        )
        for name, check in _QUEUE_SIMPLE_FIELDS.items():
            if name != "label":
                set_(self, name, check(getattr(self, name), f"{path}.{name}"))

    def target_for(self, threshold: float) -> float:
        """The target ratio for one of this queue's thresholds; KeyError for any other value."""
        for seconds, target in zip(self.thresholds_seconds, self.targets):
            if seconds == threshold or math.isclose(seconds, threshold, rel_tol=1e-9):
                return target
        raise KeyError(
            f"queue {self.name!r} has no threshold {threshold!r}; "
            f"its thresholds_seconds are {_num_list(self.thresholds_seconds)}"
        )

    def opened_at(self, t: float) -> float | None:
        """Unix time at which the open period around `t` began (at most 7 days back); None while
        the queue is closed."""
        return hours.opened_at(self.open_hours, self.closed_dates, self.timezone, t)

    @property
    def tzinfo(self) -> ZoneInfo:
        """``ZoneInfo(self.timezone)`` (zoneinfo caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, repr=False)
class KafkaConfig:
    """Where the broker is and which topics callpulse uses."""

    bootstrap_servers: str = "localhost:9092"
    """Comma-separated host:port list of Kafka brokers."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL."""
    sasl_mechanism: str | None = None
    """PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512; required with SASL_*."""
    sasl_username: str | None = None
    """Required with SASL_*."""
    sasl_password: str | None = None
    """Required with SASL_*; never shown by repr() or in error messages."""
    ssl_cafile: str | None = None
    """CA bundle to verify the brokers (SSL / SASL_SSL); unset means the system CAs."""
    ssl_certfile: str | None = None
    """Client certificate for mutual TLS."""
    ssl_keyfile: str | None = None
    """Private key of ssl_certfile."""
    topic_events: str = "callpulse-events"
    """Input: canonical events, any key."""
    topic_batches: str = "callpulse-queue-batches"
    """Internal: validated events grouped per queue, keyed by queue."""
    topic_dead_letter: str = "callpulse-dead-letter"
    """Rejected events with the reason and the original bytes."""
    topic_intervals: str = "callpulse-intervals"
    """Closed interval reports (compacted: the latest record per queue and interval counts)."""
    topic_agent_intervals: str = "callpulse-agent-intervals"
    """Agent interval and day records with the day's scorecard (compacted like topic_intervals)."""
    partitions: int = 4
    """Partition count of every topic callpulse creates (>= 1)."""
    replication_factor: int = 1
    """Replication factor of every topic callpulse creates (>= 1)."""

    def __post_init__(self) -> None:
        for name, check in _KAFKA_FIELDS.items():
            object.__setattr__(self, name, check(getattr(self, name), f"kafka.{name}"))
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            _fail("kafka.ssl_keyfile", "set without kafka.ssl_certfile: the key belongs to a client "
                                       "certificate (set both, or neither)")
        if self.security_protocol.startswith("SASL_"):
            for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if getattr(self, name) is None:
                    _fail(
                        f"kafka.{name}",
                        f"required when kafka.security_protocol is {self.security_protocol!r} "
                        f"(set it in [kafka] or with {_ENV_NAME[('kafka', name)]})",
                    )
        seen: dict[str, str] = {}
        for name in ("topic_events", "topic_batches", "topic_dead_letter", "topic_intervals", "topic_agent_intervals"):
            topic = getattr(self, name)
            if topic in seen:
                _fail(f"kafka.{name}", f"must differ from kafka.{seen[topic]} (both are {topic!r})")
            seen[topic] = name

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sasl_password" and value is not None:
                parts.append("sasl_password='***'")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__

    def ssl_context(self):
        """TLS context for SSL and SASL_SSL (None otherwise): the brokers' certificates are verified
        against ssl_cafile (unset: the system's CAs) and must name the host connected to; with
        ssl_certfile the client presents that certificate. A missing, unreadable or unusable file
        raises ConfigError naming its key."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        import ssl

        cafile = _tls_file(self.ssl_cafile, "kafka.ssl_cafile")
        try:
            context = ssl.create_default_context(cafile=cafile)
        except ssl.SSLError as exc:
            _fail("kafka.ssl_cafile", f"{cafile} holds no PEM certificate a TLS library can load ({_ssl_reason(exc)})")
        certfile = _tls_file(self.ssl_certfile, "kafka.ssl_certfile")
        if certfile is None:
            return context
        keyfile = _tls_file(self.ssl_keyfile, "kafka.ssl_keyfile")
        if "-----BEGIN CERTIFICATE-----" not in _read_text(certfile):
            _fail("kafka.ssl_certfile", f"{certfile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        if keyfile is None and "PRIVATE KEY-----" not in _read_text(certfile):
            _fail("kafka.ssl_keyfile", f"not set, and kafka.ssl_certfile ({certfile}) holds no private key: "
                                       "set kafka.ssl_keyfile to the client certificate's key")

        def no_passphrase() -> NoReturn:
            _fail("kafka.ssl_keyfile", f"{keyfile or certfile} is encrypted with a passphrase; "
                                       "callpulse needs the key unencrypted (openssl pkey -in KEY -out KEY.plain)")

        try:
            context.load_cert_chain(certfile, keyfile, password=no_passphrase)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                _fail("kafka.ssl_keyfile", f"{keyfile or certfile} is not the private key of the certificate "
                                           f"in kafka.ssl_certfile ({certfile})")
            _fail("kafka.ssl_keyfile", f"cannot load the private key from {keyfile or certfile} "
                                       f"({_ssl_reason(exc)}): it must be a PEM private key")
        return context

    def client_kwargs(self) -> dict:
        """Connection settings for aiokafka clients (bootstrap servers, TLS, SASL)."""
        kwargs: dict = {"bootstrap_servers": self.bootstrap_servers, "security_protocol": self.security_protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            kwargs.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                          sasl_plain_password=self.sasl_password)
        return kwargs


@dataclass(frozen=True)
class StreamConfig:
    """How the Faust worker runs."""

    app_id: str = "callpulse"
    """Faust app id, which is also the Kafka consumer group."""
    web_host: str = "0.0.0.0"
    """Address the worker's HTTP server binds to."""
    web_port: int = 6066
    """Port of the worker's HTTP server (1..65535)."""
    lateness_seconds: float = 60.0
    """Out-of-order tolerance: how late (event time) an event may arrive and still count (> 0)."""
    dedup_seconds: float = 600.0
    """Event ids are remembered this long (event time, behind the newest event) to drop duplicates (> 0)."""
    max_future_seconds: float = 300.0
    """Events dated further than this ahead of the wall clock are rejected (> 0)."""
    batch_max_events: int = 1000
    """Largest batch of events processed at once (>= 1)."""
    batch_max_seconds: float = 0.05
    """Longest wait to fill a batch (> 0)."""
    snapshot_interval_seconds: float = 30.0
    """How often the live state is snapshotted (> 0)."""
    data_dir: str = "var/callpulse"
    """Directory for local state; relative paths are relative to the working directory."""
    forecast_file: str | None = None
    """Optional WFM forecast CSV (kpi/forecast.py) compared with the actual calls; reloaded when it
    changes. Relative paths are relative to the working directory."""
    dead_letter_mask_callers: bool = False
    """Mask caller numbers in the dead letters' original and detail (events.mask_callers_in);
    off: the original bytes are kept exactly, caller numbers included."""
    export_agent_metrics: bool = False
    """Export per-agent series (label `agent`) in /metrics, for at most agent_metrics_limit agents.
    Off by default: per-queue aggregates carry no agent ids."""
    agent_metrics_limit: int = 500
    """The most agents a worker exports per-agent series for (the first by id); the number left
    out is exported as callcenter_agent_metrics_left_out."""
    caller_hash_key: str | None = field(default=None, repr=False)
    """Secret key of the keyed hash (BLAKE2b) the repeat-caller FCR keeps caller numbers as; the
    numbers themselves are never kept. Set it from the environment (CALLPULSE_CALLER_HASH_KEY), the
    same on every worker. None: repeat-caller FCR is off."""

    def __post_init__(self) -> None:
        for name, check in _STREAM_FIELDS.items():
            object.__setattr__(self, name, check(getattr(self, name), f"stream.{name}"))


#: The card used when [agents.scorecard] is not given: the targets the guides our users start from
#: name (kpi-reference.md): CSAT 80 %, FCR 85 %, occupancy 75-90 %; equal weights. AHT and the
#: like have no target that fits every center: add them in the config.
DEFAULT_SCORECARD = (
    Measure("csat_ratio", 1.0, target=0.8),
    Measure("first_call_resolution_ratio", 1.0, target=0.85),
    Measure("occupancy", 1.0, band=(0.75, 0.9)),
)


@dataclass(frozen=True)
class AgentsConfig:
    """The agents' business day, display names, schedule and scorecard (kpi/agents.py)."""

    timezone: str | None = None
    """IANA time zone of every agent's "today" and intervals; None: the time zone of the agent's
    first queue (the queue of the first event it was seen in)."""
    business_day_start: datetime.time = datetime.time(0, 0)
    """With timezone: local time the agents' business day starts."""
    names_file: str | None = None
    """Optional CSV with columns agent_id, agent_name and optionally scheduled_hours (a header row
    names them; a relative path is relative to the working directory, read at start). A name there
    takes precedence over the events' agent_name."""
    names: Mapping[str, str] = field(default_factory=dict)
    """agent_id -> display name: [agents.names] merged over names_file."""
    scheduled_hours: float = 0.0
    """Hours each agent is scheduled per day, for the adherence measure; 0: no schedule (adherence
    is then left out of the card). Per agent: names_file's scheduled_hours column."""
    schedule: Mapping[str, float] = field(default_factory=dict)
    """agent_id -> scheduled hours per day (from names_file)."""
    scorecard: tuple[Measure, ...] = DEFAULT_SCORECARD
    """The scorecard's measures with their targets or bands and weights."""

    def name_of(self, agent_id: str) -> str | None:
        return self.names.get(agent_id)

    def scheduled_seconds(self, agent_id: str) -> float:
        return 3600.0 * self.schedule.get(agent_id, self.scheduled_hours)


class _ReadOnlyDict(dict):
    """A dict that refuses changes: Config.queues. Unlike MappingProxyType it survives
    pickle, copy.deepcopy and dataclasses.asdict."""

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("Config.queues is read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``Config()`` is the built-in default."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    queue_defaults: QueueConfig = field(default_factory=lambda: QueueConfig(name=DEFAULTS_NAME))
    queues: Mapping[str, QueueConfig] = field(default_factory=dict)
    """Explicitly configured queues by id, in file order (a read-only dict)."""
    agents: AgentsConfig = field(default_factory=AgentsConfig)

    def __post_init__(self) -> None:
        if self.queue_defaults.name != DEFAULTS_NAME:
            _fail(
                "queue_defaults",
                f"name must be {DEFAULTS_NAME!r}, got {self.queue_defaults.name!r}",
            )
        for name, queue in self.queues.items():
            if queue.name != name:
                _fail(_queue_path(name), f"QueueConfig.name is {queue.name!r}, expected {name!r}")
        if self.queue_defaults.repeat_caller_group:  # its members must be known to route their offers
            _fail("queue_defaults.repeat_caller_group", "a repeat-caller group is made of configured queues: set it "
                  "in the [queues.ID] section of each member, not in [queue_defaults]")
        object.__setattr__(self, "queues", _ReadOnlyDict(self.queues))
        # Not a dataclass field: stays out of repr, ==, asdict() and replace().
        object.__setattr__(self, "_queue_cache", {})

    def queue(self, name: str) -> QueueConfig:
        """The configured queue, or queue_defaults with name and label set to ``name``.
        Results are cached, so calling this per event is cheap (one dict lookup)."""
        cache: dict[str, QueueConfig] = self._queue_cache  # type: ignore[attr-defined]
        try:
            return cache[name]
        except KeyError:
            pass
        queue = self.queues.get(name)
        if queue is None:
            queue = dataclasses.replace(self.queue_defaults, name=name, label=name)
        cache[name] = queue
        return queue

    def repeat_caller_contacts(self) -> dict[str, tuple[str, ...]]:
        """Queue -> the other queues of its repeat_caller_group that check repeats (configured
        queues only, repeat_caller_seconds > 0; a group of one queue is that queue alone). Empty
        without stream.caller_hash_key: the repeat-caller FCR is off."""
        if not self.stream.caller_hash_key:
            return {}
        groups: dict[str, list[str]] = {}
        for name, queue in self.queues.items():
            if queue.repeat_caller_group:
                groups.setdefault(queue.repeat_caller_group, []).append(name)
        contacts = {}
        for members in groups.values():
            for name in members:
                checking = tuple(other for other in members if other != name and self.queues[other].repeat_caller_seconds > 0)
                if checking:
                    contacts[name] = checking
        return contacts

    def all_thresholds(self) -> tuple[float, ...]:
        """Sorted union of every threshold of queue_defaults and the configured queues, plus their
        non-zero short_abandon_seconds: the histogram bucket boundaries that make every
        service-level fraction exact."""
        values: set[float] = set()
        for queue in (self.queue_defaults, *self.queues.values()):
            values.update(queue.thresholds_seconds)
            if queue.short_abandon_seconds > 0:
                values.add(queue.short_abandon_seconds)
        return tuple(sorted(values))


# --------------------------------------------------------------------------------------------
# Field tables: validator per key, and the environment variables
# --------------------------------------------------------------------------------------------

# kind decides how an environment string is parsed before the validator runs.
_INT, _FLOAT, _STR, _SECRET, _BOOL = "int", "float", "str", "secret", "bool"

_KAFKA_SPEC: dict[str, tuple[str, Check]] = {
    "bootstrap_servers": (_STR, _bootstrap_servers),
    "security_protocol": (_STR, _choice(SECURITY_PROTOCOLS, "security protocol")),
    "sasl_mechanism": (_STR, _choice(SASL_MECHANISMS, "SASL mechanism", optional=True)),
    "sasl_username": (_STR, _optional_string),
    "sasl_password": (_SECRET, _secret),
    "ssl_cafile": (_STR, _optional_string),
    "ssl_certfile": (_STR, _optional_string),
    "ssl_keyfile": (_STR, _optional_string),
    "topic_events": (_STR, _topic),
    "topic_batches": (_STR, _topic),
    "topic_dead_letter": (_STR, _topic),
    "topic_intervals": (_STR, _topic),
    "topic_agent_intervals": (_STR, _topic),
    "partitions": (_INT, _integer(1)),
    "replication_factor": (_INT, _integer(1)),
}
_STREAM_SPEC: dict[str, tuple[str, Check]] = {
    "app_id": (_STR, _string),
    "web_host": (_STR, _string),
    "web_port": (_INT, _integer(1, 65535)),
    "lateness_seconds": (_FLOAT, _positive),
    "dedup_seconds": (_FLOAT, _positive),
    "max_future_seconds": (_FLOAT, _positive),
    "batch_max_events": (_INT, _integer(1)),
    "batch_max_seconds": (_FLOAT, _positive),
    "snapshot_interval_seconds": (_FLOAT, _positive),
    "data_dir": (_STR, _string),
    "forecast_file": (_STR, _optional_string),
    "dead_letter_mask_callers": (_BOOL, _boolean),
    "export_agent_metrics": (_BOOL, _boolean),
    "agent_metrics_limit": (_INT, _integer(1, 100_000)),
    "caller_hash_key": (_SECRET, _hash_key),
}
_KAFKA_FIELDS = {name: check for name, (_, check) in _KAFKA_SPEC.items()}
_STREAM_FIELDS = {name: check for name, (_, check) in _STREAM_SPEC.items()}
# thresholds_seconds and targets depend on each other and are handled separately.
_QUEUE_SIMPLE_FIELDS: dict[str, Check] = {
    "label": _label,
    "formula": _choice(FORMULAS, "formula"),
    "short_abandon_seconds": _non_negative,
    "timezone": _timezone,
    "business_day_start": _time_of_day,
    "orphan_after_seconds": _positive,
    "open_hours": _open_hours,
    "closed_dates": _closed_dates,
    "team": _label,
    "alert_calls_waiting": _non_negative,
    "alert_oldest_wait_seconds": _non_negative,
    "alert_abandon_rate": _ratio_or_off,
    "alert_short_abandon_rate": _ratio_or_off,
    "alert_event_stall_seconds": _non_negative,
    "alert_min_calls": _non_negative,
    "alert_understaffed_agents": _non_negative,
    "alert_understaffed_seconds": _non_negative,
    "interval_minutes": _interval_minutes,
    "outbound_connected_results": _outbound_results,
    "outbound_abandon_seconds": _non_negative,
    "outbound_abandon_limit": _ratio_or_off,
    "callback_open_limit_seconds": _non_negative,
    "not_ready_limits_seconds": _limits,
    "cost_per_agent_hour": _non_negative,
    "currency": _currency,
    "repeat_caller_seconds": _non_negative,
    "repeat_caller_group": _label,
}
_QUEUE_KEYS = ("label", "thresholds_seconds", "targets", *list(_QUEUE_SIMPLE_FIELDS)[1:])

#: Environment variable -> "section.key" it overrides.
ENV_OVERRIDES: Mapping[str, str] = types.MappingProxyType(
    {
        "CALLPULSE_KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrap_servers",
        "CALLPULSE_KAFKA_SECURITY_PROTOCOL": "kafka.security_protocol",
        "CALLPULSE_KAFKA_SASL_MECHANISM": "kafka.sasl_mechanism",
        "CALLPULSE_KAFKA_SASL_USERNAME": "kafka.sasl_username",
        "CALLPULSE_KAFKA_SASL_PASSWORD": "kafka.sasl_password",
        "CALLPULSE_KAFKA_SSL_CAFILE": "kafka.ssl_cafile",
        "CALLPULSE_KAFKA_SSL_CERTFILE": "kafka.ssl_certfile",
        "CALLPULSE_KAFKA_SSL_KEYFILE": "kafka.ssl_keyfile",
        "CALLPULSE_TOPIC_EVENTS": "kafka.topic_events",
        "CALLPULSE_TOPIC_BATCHES": "kafka.topic_batches",
        "CALLPULSE_TOPIC_DEAD_LETTER": "kafka.topic_dead_letter",
        "CALLPULSE_TOPIC_INTERVALS": "kafka.topic_intervals",
        "CALLPULSE_TOPIC_AGENT_INTERVALS": "kafka.topic_agent_intervals",
        "CALLPULSE_PARTITIONS": "kafka.partitions",
        "CALLPULSE_REPLICATION_FACTOR": "kafka.replication_factor",
        "CALLPULSE_APP_ID": "stream.app_id",
        "CALLPULSE_WEB_HOST": "stream.web_host",
        "CALLPULSE_WEB_PORT": "stream.web_port",
        "CALLPULSE_LATENESS_SECONDS": "stream.lateness_seconds",
        "CALLPULSE_DEDUP_SECONDS": "stream.dedup_seconds",
        "CALLPULSE_DATA_DIR": "stream.data_dir",
        "CALLPULSE_FORECAST_FILE": "stream.forecast_file",
        "CALLPULSE_DEAD_LETTER_MASK_CALLERS": "stream.dead_letter_mask_callers",
        "CALLPULSE_EXPORT_AGENT_METRICS": "stream.export_agent_metrics",
        "CALLPULSE_AGENT_METRICS_LIMIT": "stream.agent_metrics_limit",
        "CALLPULSE_CALLER_HASH_KEY": "stream.caller_hash_key",
    }
)
_ENV_NAME = {tuple(path.split(".")): env for env, path in ENV_OVERRIDES.items()}
CONFIG_ENV = "CALLPULSE_CONFIG"


# --------------------------------------------------------------------------------------------
# TLS files, and the security settings tried against a broker
# --------------------------------------------------------------------------------------------


def _tls_file(path: str | None, where: str) -> str | None:
    """The path (with ~ expanded) of a file that exists and can be read; None when unset."""
    if path is None:
        return None
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        _fail(where, f"file not found: {full}")
    if not os.path.isfile(full):
        _fail(where, f"not a file: {full}")
    if not os.access(full, os.R_OK):
        _fail(where, f"cannot read {full}: permission denied")
    return full


def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("ascii", "replace")


def _ssl_reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)


#: TLS alerts with which a server turns down the client's certificate (or the lack of one).
_CLIENT_CERT_ALERTS = (
    "ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_CERTIFICATE_REQUIRED", "ALERT_CERTIFICATE_EXPIRED", "ALERT_CERTIFICATE_REVOKED",
    "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_ACCESS_DENIED",
)
#: OpenSSL's verify codes for "the certificate is valid, but not for the host connected to".
_HOST_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
#: An ApiVersions v0 request (api key 18, correlation id 0x63707573): every Kafka broker answers
#: it, before any authentication.
_CORRELATION = b"cpus"
_CLIENT_ID = b"callpulse-preflight"
_API_VERSIONS = b"\x00\x12\x00\x00" + _CORRELATION + len(_CLIENT_ID).to_bytes(2, "big") + _CLIENT_ID
_API_VERSIONS = len(_API_VERSIONS).to_bytes(4, "big") + _API_VERSIONS


#: Longest wait for the server's verdict on the client after a TLS 1.3 handshake (see
#: _await_tls13_verdict); usually its session ticket comes within milliseconds.
_ALERT_WAIT_SECONDS = 1.0


class _Unreachable(Exception):
    """No TCP connection to this bootstrap server: not a verdict on the security settings."""


def _split_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep:
        host, port = server, "9092"
    return host.strip("[]"), int(port)


def check_broker_access(kafka: KafkaConfig, timeout: float = 10.0) -> str | None:
    """Try the TLS and SASL settings on the first bootstrap server that accepts a connection, the
    way the worker's Kafka clients will use them; for a worker's start-up, before Faust.

    A broker that refuses them (a certificate ``ssl_cafile`` cannot verify, or one made out for
    another host; a client certificate the broker does not trust, or none where one is required; a
    SASL mechanism the broker does not offer; a rejected login) raises ConfigError naming the
    setting, so the worker stops with that message instead of failing later with a bare
    connection error. Nothing is checked for PLAINTEXT. Returns what was checked
    (``"127.0.0.1:9093: TLSv1.3, SASL SCRAM-SHA-512 as 'callpulse'"``), or None when no bootstrap
    server accepted a TCP connection within `timeout` seconds (an unreachable broker is left to
    the clients' own handling). The password is never part of a message."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = kafka.ssl_context()
    for server in kafka.bootstrap_servers.split(","):
        host, port = _split_server(server)
        try:
            transport = _probe_api_versions(kafka, host, port, context, timeout)
        except _Unreachable:
            continue
        checked = f"{server}: {transport}"
        if kafka.security_protocol.startswith("SASL_"):
            _check_sasl_login(kafka, host, port, context, timeout)
            checked += f", SASL {kafka.sasl_mechanism} as {kafka.sasl_username!r}"
        return checked
    return None


def _probe_api_versions(kafka: KafkaConfig, host: str, port: int, context: Any, timeout: float) -> str:
    """One ApiVersions round trip over TCP, through TLS when `context` is set; ConfigError for
    anything but a Kafka answer. Returns "TLSv1.3" or "no TLS"."""
    import ssl

    where = f"broker {host}:{port}"
    try:
        # Any: the socket.socket, then the ssl.SSLSocket wrapping it when context is set (version() below)
        sock: Any = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise _Unreachable(str(exc)) from None
    try:
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                _fail_server_certificate(kafka, where, host, exc)
            except ssl.SSLError as exc:
                _fail_tls(kafka, where, exc, handshake_done=False)
            except OSError as exc:
                _fail("kafka.security_protocol",
                      f"{where} accepted the connection but the TLS handshake failed ({exc}): "
                      f"is {host}:{port} a TLS listener ({kafka.security_protocol})?")
            _await_tls13_verdict(kafka, where, sock)
            sock.settimeout(timeout)
        try:
            sock.sendall(_API_VERSIONS)
            size = int.from_bytes(_receive(sock, 4), "big", signed=True)
            answer = _receive(sock, size) if 4 <= size <= 1 << 20 else b""
        except ssl.SSLError as exc:
            _fail_tls(kafka, where, exc, handshake_done=True)
        except OSError as exc:  # closed, reset, timed out
            if context is None:
                _fail("kafka.security_protocol",
                      f"{where} did not answer a Kafka request ({exc or type(exc).__name__}): if this "
                      "listener uses TLS, kafka.security_protocol must be SASL_SSL (or SSL)")
            _fail_closed_after_handshake(kafka, where, exc)
        if answer[:4] != _CORRELATION:
            _fail("kafka.bootstrap_servers", f"{where} did not answer like a Kafka broker")
        return sock.version() if context is not None else "no TLS"
    finally:
        sock.close()


def _await_tls13_verdict(kafka: KafkaConfig, where: str, sock: Any) -> None:
    """With TLS 1.3 the server checks the client's certificate after the client considers the
    handshake done; a request sent meanwhile meets a closed socket, and the reset discards the
    alert. So listen first: until the server's session ticket arrives (it has accepted this
    client), an alert or a close comes, or _ALERT_WAIT_SECONDS pass (a server without tickets)."""
    import ssl
    import time

    if sock.version() != "TLSv1.3":
        return  # TLS 1.2 and older: the client certificate was judged within the handshake
    sock.settimeout(0.02)
    deadline = time.monotonic() + _ALERT_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            sock.recv(1)  # a Kafka broker sends nothing unasked: any answer is a close
        except TimeoutError:
            if sock.session is not None and sock.session.has_ticket:
                return
            continue
        except ssl.SSLError as exc:
            _fail_tls(kafka, where, exc, handshake_done=True)
        except OSError as exc:
            _fail_closed_after_handshake(kafka, where, exc)
        _fail_closed_after_handshake(kafka, where, "closed")


def _receive(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionAbortedError("connection closed by the broker")
        data += chunk
    return data


def _fail_server_certificate(kafka: KafkaConfig, where: str, host: str, exc: Any) -> NoReturn:
    detail = exc.verify_message or _ssl_reason(exc)
    if exc.verify_code in _HOST_MISMATCH:
        _fail("kafka.bootstrap_servers",
              f"{where} presented a certificate that is not valid for {host!r} ({detail}): connect "
              "with a host name the broker's certificate names, or give the broker a certificate "
              "for this name")
    if kafka.ssl_cafile:
        trust = (f"kafka.ssl_cafile ({kafka.ssl_cafile}) does not hold the certificate authority "
                 "that signed it")
    else:
        trust = ("kafka.ssl_cafile is not set, so only the system's certificate authorities are "
                 "trusted: set it to the CA that signed the brokers' certificates")
    _fail("kafka.ssl_cafile", f"cannot verify the certificate of {where} ({detail}): {trust}")


def _fail_closed_after_handshake(kafka: KafkaConfig, where: str, exc: Any) -> NoReturn:
    """The TLS handshake went through, then the broker closed the connection without a word:
    what servers that check client certificates do when the alert does not get through."""
    detail = str(exc) or type(exc).__name__
    if kafka.ssl_certfile is None:
        _fail("kafka.ssl_certfile",
              f"{where} closed the connection right after the TLS handshake ({detail}): it most "
              "likely requires a client certificate: set kafka.ssl_certfile and kafka.ssl_keyfile")
    _fail("kafka.ssl_certfile",
          f"{where} closed the connection right after the TLS handshake ({detail}): it most likely "
          f"rejected the client certificate {kafka.ssl_certfile}, which must be signed by a "
          "certificate authority the broker trusts")


def _fail_tls(kafka: KafkaConfig, where: str, exc: Exception, handshake_done: bool) -> NoReturn:
    reason = _ssl_reason(exc)
    during = "after the TLS handshake" if handshake_done else "in the TLS handshake"
    if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
        if kafka.ssl_certfile is None:
            _fail("kafka.ssl_certfile",
                  f"{where} requires a client certificate (TLS alert {reason} {during}): set "
                  "kafka.ssl_certfile and kafka.ssl_keyfile")
        _fail("kafka.ssl_certfile",
              f"{where} rejected the client certificate {kafka.ssl_certfile} (TLS alert {reason} "
              f"{during}): it must be signed by a certificate authority the broker trusts, and be "
              "valid now")
    if "ALERT_HANDSHAKE_FAILURE" in reason:  # TLS 1.2 servers also say this for a missing certificate
        _fail("kafka.ssl_certfile" if kafka.ssl_certfile is None else "kafka.security_protocol",
              f"{where} ended the TLS handshake (TLS alert {reason} {during}): "
              + ("it may require a client certificate (set kafka.ssl_certfile and kafka.ssl_keyfile), "
                 if kafka.ssl_certfile is None else "")
              + "or it shares no TLS version or cipher with this client")
    import ssl

    eof = isinstance(exc, ssl.SSLEOFError) or "EOF" in reason
    if handshake_done and eof:
        _fail_closed_after_handshake(kafka, where, reason)
    if eof or reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        _fail("kafka.security_protocol",
              f"{where} does not speak TLS on this port ({reason} {during}): "
              f"kafka.security_protocol is {kafka.security_protocol!r}; is the port a TLS listener?")
    _fail("kafka.security_protocol", f"TLS with {where} failed {during}: {reason}")


def _check_sasl_login(kafka: KafkaConfig, host: str, port: int, context: Any, timeout: float) -> None:
    """A full SASL login with aiokafka, the client the worker uses; ConfigError if it fails."""
    import asyncio
    import concurrent.futures

    from aiokafka import errors
    from aiokafka.conn import create_conn

    async def login() -> None:
        conn = await asyncio.wait_for(
            create_conn(host, port, client_id="callpulse-preflight", request_timeout_ms=int(timeout * 1000),
                        ssl_context=context, security_protocol=kafka.security_protocol,
                        sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                        sasl_plain_password=kafka.sasl_password),
            timeout)
        conn.close()

    where = f"broker {host}:{port}"
    login_of = f"the SASL {kafka.sasl_mechanism} login of user {kafka.sasl_username!r} (kafka.sasl_username)"
    # A fresh event loop in a thread of its own: the caller may be inside a running loop.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="callpulse-preflight") as pool:
        try:
            pool.submit(asyncio.run, login()).result()
        except errors.UnsupportedSaslMechanismError as exc:
            _fail("kafka.sasl_mechanism",
                  f"{where} does not offer SASL mechanism {kafka.sasl_mechanism} "
                  f"({_hide_password(kafka, exc)})")
        except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError, errors.IllegalSaslStateError,
                KeyError, ValueError) as exc:
            # SCRAM: a server that turns the login down answers "e=..." where "v=..." belongs,
            # which aiokafka reports as KeyError('v') or ValueError.
            if isinstance(exc, KeyError):
                said = "its last SCRAM message carried an error instead of the server's signature"
            else:
                said = _hide_password(kafka, exc) or type(exc).__name__
            _fail("kafka.sasl_password",
                  f"{where} rejected {login_of}: kafka.sasl_username or kafka.sasl_password is "
                  f"wrong (broker's answer: {said})")
        except TimeoutError:
            _fail("kafka.sasl_mechanism", f"{where} did not complete {login_of} within {timeout:g} s")
        except (errors.KafkaConnectionError, ConnectionError, asyncio.IncompleteReadError) as exc:
            _fail("kafka.sasl_mechanism",
                  f"{where} closed the connection during {login_of} ({_hide_password(kafka, exc)}): "
                  f"either the broker does not enable {kafka.sasl_mechanism} (kafka.sasl_mechanism) "
                  "or it refused kafka.sasl_username / kafka.sasl_password")
        except errors.KafkaError as exc:
            _fail("kafka.sasl_password",
                  f"{where} refused {login_of}: {type(exc).__name__} {_hide_password(kafka, exc)}")


def _hide_password(kafka: KafkaConfig, exc: BaseException) -> str:
    text = str(exc)
    if kafka.sasl_password:
        text = text.replace(kafka.sasl_password, "***")
    return text


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_SECTIONS = ("kafka", "stream", "queue_defaults", "queues", "agents")


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read ``path`` (or ``$CALLPULSE_CONFIG`` when path is None; no file at all gives the
    built-in defaults), apply ``CALLPULSE_*`` overrides from ``env`` (default ``os.environ``)
    and validate everything. Raises ConfigError naming the offending key."""
    env = os.environ if env is None else env
    where = None
    if path is None:
        from_env = _env_value(env, CONFIG_ENV)
        if from_env is not None:
            path, where = from_env, CONFIG_ENV
    data = {} if path is None else _read_toml(path, where)
    return _build(data, env)


def _env_value(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return None if raw is None or not raw.strip() else raw


def _read_toml(path: str | os.PathLike[str], where: str | None) -> dict[str, Any]:
    path = os.path.expanduser(os.fspath(path))
    label = where or path
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        _fail(label, f"config file not found: {path}")
    except IsADirectoryError:
        _fail(label, f"config file path is a directory: {path}")
    except OSError as exc:
        _fail(label, f"cannot read config file {path}: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors add
    except UnicodeDecodeError as exc:
        _fail(path, f"config file is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _fail(path, f"TOML syntax error: {exc}")


def _check_keys(section: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in section:
        if key not in allowed:
            hint = _did_you_mean(key, allowed) or f"; expected one of: {', '.join(allowed)}"
            _fail(f"{where}.{_key(key)}", f"unknown key{hint}")


def _table(value: Any, where: str, how: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(where, f"must be a table ({how}), got {_show(value)}")
    return value


def _section_values(
    data: Mapping[str, Any],
    section: str,
    spec: dict[str, tuple[str, Check]],
    env: Mapping[str, str],
) -> dict[str, Any]:
    table = _table(data.get(section, {}), section, f"[{section}]")
    _check_keys(table, section, tuple(spec))
    values = {key: spec[key][1](value, f"{section}.{key}") for key, value in table.items()}
    for key, (kind, check) in spec.items():
        env_name = _ENV_NAME.get((section, key))
        if env_name and (raw := _env_value(env, env_name)) is not None:
            values[key] = check(_parse_env(raw, kind), env_name)
    return values


_ENV_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
                 "false": False, "0": False, "no": False, "off": False}


def _parse_env(raw: str, kind: str) -> Any:
    """Turn an environment string into the type the validator expects; on failure return the
    string itself so the validator reports it ("must be an integer ..., got 'abc'")."""
    if kind == _SECRET:
        return raw
    text = raw.strip()
    if kind == _BOOL:
        return _ENV_BOOLEANS.get(text.lower(), text)
    try:
        if kind == _INT:
            return int(text)
        if kind == _FLOAT:
            return float(text)
    except ValueError:
        pass
    return text


def _queue_from_table(
    table: Mapping[str, Any], name: str, base: QueueConfig
) -> QueueConfig:
    where = _queue_path(name)
    is_defaults = name == DEFAULTS_NAME
    for key in table:
        if key == "name":
            _fail(f"{where}.name", "not a key: the queue id is the table name, [queues.ID]")
        if key == "label" and is_defaults:
            _fail(
                f"{where}.label",
                "labels are per queue (set queues.ID.label); a queue without one shows its id",
            )
    _check_keys(table, where, _QUEUE_KEYS[1:] if is_defaults else _QUEUE_KEYS)

    values = {
        key: check(table[key], f"{where}.{key}")
        for key, check in _QUEUE_SIMPLE_FIELDS.items()
        if key in table
    }
    if "thresholds_seconds" in table:
        thresholds_where = f"{where}.thresholds_seconds"
        thresholds = _thresholds(table["thresholds_seconds"], thresholds_where)
    else:
        thresholds_where = "queue_defaults.thresholds_seconds"
        thresholds = base.thresholds_seconds
    if "targets" in table:
        targets = _targets(table["targets"], f"{where}.targets", thresholds, thresholds_where)
    elif "thresholds_seconds" in table:
        targets = (DEFAULT_TARGET,) * len(thresholds)
    else:
        targets = base.targets
    return dataclasses.replace(
        base,
        name=name,
        label=values.pop("label", ""),
        thresholds_seconds=thresholds,
        targets=targets,
        **values,
    )


def _build(data: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    for section, value in data.items():
        if section not in _SECTIONS:
            hint = _did_you_mean(section, _SECTIONS) or f"; expected one of: {', '.join(_SECTIONS)}"
            _fail(_key(section), f"unknown section{hint}")
        _table(value, section, f"[{section}]")

    kafka = KafkaConfig(**_section_values(data, "kafka", _KAFKA_SPEC, env))
    stream = StreamConfig(**_section_values(data, "stream", _STREAM_SPEC, env))
    defaults = _queue_from_table(
        data.get("queue_defaults", {}), DEFAULTS_NAME, QueueConfig(name=DEFAULTS_NAME)
    )

    queues: dict[str, QueueConfig] = {}
    for name, table in data.get("queues", {}).items():
        where = f"queues.{_key(name)}"
        if not name.strip():
            _fail(where, "a queue id must not be empty")
        if name == DEFAULTS_NAME:
            _fail(where, f"{DEFAULTS_NAME!r} is reserved; use [queue_defaults]")
        if not isinstance(table, Mapping):
            hint = " (did you mean [queue_defaults]?)" if name in _QUEUE_KEYS else ""
            _fail(
                where,
                f"must be a table [queues.ID] of per-queue settings, got {_show(table)}{hint}",
            )
        queues[name] = _queue_from_table(table, name, defaults)

    agents = _agents(_table(data.get("agents", {}), "agents", "[agents]"))
    return Config(kafka=kafka, stream=stream, queue_defaults=defaults, queues=queues, agents=agents)


_AGENTS_KEYS = ("timezone", "business_day_start", "names_file", "names", "scheduled_hours", "scorecard")


def _agents(table: Mapping[str, Any]) -> AgentsConfig:
    _check_keys(table, "agents", _AGENTS_KEYS)
    if "business_day_start" in table and "timezone" not in table:
        _fail("agents.business_day_start", "needs agents.timezone (without it, agents follow their first queue's day)")
    values: dict[str, Any] = {}
    if "timezone" in table:
        values["timezone"] = _timezone(table["timezone"], "agents.timezone")
    if "business_day_start" in table:
        values["business_day_start"] = _time_of_day(table["business_day_start"], "agents.business_day_start")
    if "scheduled_hours" in table:
        values["scheduled_hours"] = _hours_per_day(table["scheduled_hours"], "agents.scheduled_hours")
    names: dict[str, str] = {}
    schedule: dict[str, float] = {}
    if "names_file" in table:
        values["names_file"] = path = _string(table["names_file"], "agents.names_file")
        names, schedule = _agent_names_file(path)
    for agent_id, name in _table(table.get("names", {}), "agents.names", "agent_id = \"display name\"").items():
        names[agent_id] = _short_name(name, f"agents.names.{_key(agent_id)}")
    if "scorecard" in table:
        values["scorecard"] = _scorecard(_table(table["scorecard"], "agents.scorecard", "one line per measure"))
    if (any(m.name == "adherence" for m in values.get("scorecard", ())) and not values.get("scheduled_hours")
            and not schedule):
        _fail("agents.scorecard.adherence", "needs a schedule: agents.scheduled_hours, or a scheduled_hours "
                                            "column in agents.names_file (without one it would always be left out)")
    return AgentsConfig(names=names, schedule=schedule, **values)


def _hours_per_day(value: Any, where: str) -> float:
    hours_ = _number(value, where, ge=0)
    if hours_ > 24:
        _fail(where, f"must be hours per day in [0, 24], got {_show(value)}")
    return hours_


def _short_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        _fail(where, f"must be a display name of 1 to 128 characters, got {_show(value)}")
    return value


def _agent_names_file(path: str) -> tuple[dict[str, str], dict[str, float]]:
    """agent_id -> name and agent_id -> scheduled hours from a CSV with a header row."""
    where = f"agents.names_file ({path})"
    try:
        with open(os.path.expanduser(path), encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
            header = rows[0].keys() if rows else []
    except OSError as exc:
        _fail(where, f"cannot read: {exc.strerror or exc}")
    except (UnicodeDecodeError, csv.Error) as exc:
        _fail(where, f"not a UTF-8 CSV file: {exc}")
    if rows and ("agent_id" not in header or "agent_name" not in header):
        _fail(where, f"needs a header row with agent_id and agent_name columns, got {_show(list(header))}")
    names: dict[str, str] = {}
    schedule: dict[str, float] = {}
    for line, row in enumerate(rows, start=2):
        agent_id = (row.get("agent_id") or "").strip()
        if not agent_id:
            _fail(f"{where} line {line}", "agent_id is empty")
        if agent_id in names:
            _fail(f"{where} line {line}", f"agent {agent_id!r} is listed twice")
        names[agent_id] = _short_name((row.get("agent_name") or "").strip(), f"{where} line {line} agent_name")
        if (row.get("scheduled_hours") or "").strip():
            try:
                value: Any = float(row["scheduled_hours"])
            except ValueError:
                value = row["scheduled_hours"]
            schedule[agent_id] = _hours_per_day(value, f"{where} line {line} scheduled_hours")
    return names, schedule


#: The values a measure can take, for its target or band: ratios (0.8, not 80), CSAT's scale, NPS.
_RATIO = (0.0, 1.0, "a ratio in [0, 1] (0.8, not 80)")
_MEASURE_RANGES = {
    "csat_ratio": _RATIO, "first_call_resolution_ratio": _RATIO, "occupancy": _RATIO, "utilization": _RATIO,
    "not_ready_ratio": _RATIO, "csat_average_score": (1.0, 5.0, "a CSAT score in [1, 5]"),
    "net_promoter_score": (-100.0, 100.0, "an NPS in [-100, 100]"),
    "adherence": (0.0, 2.0, "a ratio of the schedule in [0, 2] (0.95, not 95)"),
}


def _scorecard(table: Mapping[str, Any]) -> tuple[Measure, ...]:
    card = []
    for name, line in table.items():
        where = f"agents.scorecard.{_key(name)}"
        if name not in SCORECARD_MEASURES:
            hint = _did_you_mean(name, tuple(SCORECARD_MEASURES)) or f"; expected one of: {', '.join(SCORECARD_MEASURES)}"
            _fail(where, f"unknown measure{hint}")
        line = _table(line, where, "{target = N, weight = W} or {band = [low, high], weight = W}")
        _check_keys(line, where, ("target", "band", "weight"))
        if ("target" in line) == ("band" in line):
            _fail(where, "needs exactly one of target or band")
        weight = _number(line.get("weight", 1.0), f"{where}.weight", ge=0)
        if "band" in line:
            band = line["band"]
            if (not isinstance(band, (list, tuple)) or len(band) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in band)
                    or not band[0] <= band[1]):
                _fail(f"{where}.band", f"must be [low, high] with low <= high, got {_show(band)}")
            low, high, what = _MEASURE_RANGES.get(name, (0.0, math.inf, "a number >= 0"))
            if not (low <= band[0] and band[1] <= high):
                _fail(f"{where}.band", f"both ends must be {what}, got {_show(band)}")
            card.append(Measure(name, weight, band=(float(band[0]), float(band[1]))))
        else:
            target = _number(line["target"], f"{where}.target")
            low, high, what = _MEASURE_RANGES.get(name, (0.0, math.inf, "a number >= 0"))
            if not low <= target <= high:
                _fail(f"{where}.target", f"must be {what}, got {_show(line['target'])}")
            card.append(Measure(name, weight, target=target))
    if card and not any(m.weight > 0 for m in card):
        _fail("agents.scorecard", "every weight is 0: give at least one measure a weight > 0")
    return tuple(card)
