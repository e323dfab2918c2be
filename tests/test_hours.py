"""Business hours (callpulse.kpi.hours) and their config keys: local time, overnight spans, holidays."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callpulse.config import ConfigError, load_config
from callpulse.kpi.hours import ALWAYS_OPEN, is_open, opened_at, parse_open_hours


def at(text: str, zone: str) -> float:
    """Unix time of a local wall-clock time in `zone`."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


WEEKDAYS = ("mon-fri 08:00-20:00", "sat 10:00-14:00")


@pytest.mark.parametrize("local, expected", [
    ("2026-12-01 07:59:59", False),  # Tuesday, before opening
    ("2026-12-01 08:00:00", True),   # opening minute counts
    ("2026-12-01 19:59:59", True),
    ("2026-12-01 20:00:00", False),  # closing time is exclusive
    ("2026-12-05 10:30:00", True),   # Saturday
    ("2026-12-05 14:00:00", False),
    ("2026-12-06 12:00:00", False),  # Sunday: no rule
])
def test_weekday_hours_in_the_queues_own_zone(local, expected):
    assert is_open(WEEKDAYS, (), "Europe/Moscow", at(local, "Europe/Moscow")) is expected


def test_the_same_instant_is_open_in_one_zone_and_closed_in_another():
    t = at("2026-12-01 09:00:00", "Asia/Shanghai")  # 04:00 in Moscow
    assert is_open(WEEKDAYS, (), "Asia/Shanghai", t)
    assert not is_open(WEEKDAYS, (), "Europe/Moscow", t)


def test_overnight_span_belongs_to_the_day_it_starts_and_holidays_close_that_night():
    rules = ("fri 22:00-06:00",)
    zone = "UTC"
    assert is_open(rules, (), zone, at("2026-12-04 23:00:00", zone))      # Friday night
    assert is_open(rules, (), zone, at("2026-12-05 05:59:00", zone))      # Saturday early morning
    assert not is_open(rules, (), zone, at("2026-12-05 06:00:00", zone))
    assert not is_open(rules, (), zone, at("2026-12-04 21:59:00", zone))
    assert not is_open(rules, (), zone, at("2026-12-03 23:00:00", zone))  # Thursday night
    closed = ("2026-12-04",)
    assert not is_open(rules, closed, zone, at("2026-12-04 23:00:00", zone))
    assert not is_open(rules, closed, zone, at("2026-12-05 03:00:00", zone))


def test_holiday_closes_the_whole_local_day():
    zone = "Asia/Shanghai"
    assert not is_open(WEEKDAYS, ("2026-12-01",), zone, at("2026-12-01 12:00:00", zone))
    assert is_open(WEEKDAYS, ("2026-12-01",), zone, at("2026-12-02 12:00:00", zone))


def test_always_open_default_and_day_ranges_that_wrap_the_week():
    assert all(is_open(ALWAYS_OPEN, (), "UTC", at(f"2026-12-0{d} {h}", "UTC"))
               for d in range(1, 8) for h in ("00:00:00", "12:00:00", "23:59:59"))
    spans = parse_open_hours(("sat-mon 09:00-17:00",))
    assert [day for day, _, _ in spans] == [0, 5, 6]


def test_dst_change_keeps_local_hours():
    # Europe/Berlin leaves summer time on 2026-10-25: 08:00 local is 06:00 UTC before, 07:00 after.
    zone = "Europe/Berlin"
    assert is_open(WEEKDAYS, (), zone, at("2026-10-23 08:00:00", zone))
    assert is_open(WEEKDAYS, (), zone, at("2026-10-26 08:00:00", zone))
    assert not is_open(WEEKDAYS, (), zone, at("2026-10-26 07:59:00", zone))


def test_config_keys_and_errors_name_the_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[queues.sales]\nopen_hours = ["Mon-Fri  08:00-20:00"]\nclosed_dates = [2026-12-31, "2027-01-01"]\n'
                    'team = "sales"\nalert_abandon_rate = 0\n', encoding="utf-8")
    q = load_config(path, env={}).queue("sales")
    assert q.open_hours == ("mon-fri 08:00-20:00",)
    assert q.closed_dates == ("2026-12-31", "2027-01-01")
    assert (q.team, q.alert_abandon_rate, q.alert_calls_waiting) == ("sales", 0.0, 10.0)
    assert q.opened_at(at("2026-12-31 12:00:00", "UTC")) is None
    assert q.opened_at(at("2026-12-30 12:00:00", "UTC")) == at("2026-12-30 08:00:00", "UTC")
    bad = {
        'open_hours = ["mon-fri 8-20"]': "queues.sales.open_hours[0]: must look like",
        'open_hours = ["mon 08:00-20:00", "fry 08:00-20:00"]': "queues.sales.open_hours[1]: unknown day 'fry'",
        'open_hours = ["mon 08:00-25:00"]': "queues.sales.open_hours[0]: times must be",
        'open_hours = "mon-fri 08:00-20:00"': "queues.sales.open_hours: must be a list",
        "open_hours = []": "queues.sales.open_hours: must list at least one rule",
        'closed_dates = ["31.12.2026"]': "queues.sales.closed_dates[0]: must be a date",
        "alert_abandon_rate = 10": "queues.sales.alert_abandon_rate: must be a ratio in [0, 1]",
        "alert_calls_waiting = -1": "queues.sales.alert_calls_waiting: must be >= 0",
    }
    for line, message in bad.items():
        path.write_text(f"[queues.sales]\n{line}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert str(info.value).startswith(message), (line, str(info.value))


def test_opened_at_is_the_start_of_the_current_open_period():
    zone = "Europe/Moscow"
    t = at("2026-12-01 09:30:00", zone)
    assert opened_at(WEEKDAYS, (), zone, t) == at("2026-12-01 08:00:00", zone)
    assert opened_at(WEEKDAYS, (), zone, at("2026-12-01 21:00:00", zone)) is None
    # Touching spans are one period: Friday 22:00 to Saturday 06:00, then Saturday 06:00-12:00.
    rules = ("fri 22:00-06:00", "sat 06:00-12:00")
    assert opened_at(rules, (), "UTC", at("2026-12-05 11:00:00", "UTC")) == at("2026-12-04 22:00:00", "UTC")
    # Always open: the search stops seven days back.
    now = at("2026-12-01 12:00:00", "UTC")
    assert opened_at(ALWAYS_OPEN, (), "UTC", now) == now - 7 * 86400
    # A holiday the day before breaks the chain: the period began at midnight.
    assert opened_at(ALWAYS_OPEN, ("2026-11-30",), "UTC", now) == at("2026-12-01 00:00:00", "UTC")
