"""Cron parsing and tick arithmetic, pure: month ends, leap years, day-of-month/day-of-week, seconds, DST, bad input."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from zmqgrid.errors import UsageError
from zmqgrid.master.cron import parse

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def local_zone(monkeypatch):
    """Ticks are in the master's local time: pinned to UTC here; `local_zone(name)` switches; restored after."""
    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()
    use("UTC")
    yield use
    monkeypatch.undo()
    time.tzset()


def at(*parts: int) -> float:
    return datetime(*parts).timestamp()


def ticks(expr: str, start: datetime, n: int) -> list[datetime]:
    cron, t, out = parse(expr), start.timestamp(), []
    for _ in range(n):
        t = cron.next_after(t)
        out.append(datetime.fromtimestamp(t))
    return out


@pytest.mark.parametrize("expr, start, expected", [
    ("*/5 * * * *", (2030, 1, 7, 12, 3, 10), [(2030, 1, 7, 12, 5), (2030, 1, 7, 12, 10)]),
    ("*/5 * * * *", (2030, 1, 7, 12, 5), [(2030, 1, 7, 12, 10), (2030, 1, 7, 12, 15)]),      # strictly after
    ("0,30 8,17 * * *", (2030, 1, 7, 9), [(2030, 1, 7, 17), (2030, 1, 7, 17, 30), (2030, 1, 8, 8)]),
    ("10-30/10 * * * *", (2030, 1, 7, 12, 0), [(2030, 1, 7, 12, 10), (2030, 1, 7, 12, 20), (2030, 1, 7, 12, 30),
                                               (2030, 1, 7, 13, 10)]),
    ("5/20 * * * *", (2030, 1, 7, 12, 0), [(2030, 1, 7, 12, 5), (2030, 1, 7, 12, 25), (2030, 1, 7, 12, 45)]),
    ("59 23 * * *", (2030, 12, 31, 23, 59), [(2031, 1, 1, 23, 59)]),                           # year end
    ("0 0 1 * *", (2030, 12, 15), [(2031, 1, 1), (2031, 2, 1)]),
    # month ends: the 31st skips the months without one, the 30th skips February
    ("0 0 31 * *", (2030, 1, 31), [(2030, 3, 31), (2030, 5, 31), (2030, 7, 31), (2030, 8, 31)]),
    ("0 0 30 * *", (2030, 1, 30), [(2030, 3, 30), (2030, 4, 30)]),
    ("0 0 28-31 2 *", (2030, 2, 27), [(2030, 2, 28), (2031, 2, 28)]),
    # leap years: every 4 years, but 2100 is not one
    ("0 0 29 2 *", (2024, 3, 1), [(2028, 2, 29), (2032, 2, 29)]),
    ("0 0 29 2 *", (2096, 3, 1), [(2104, 2, 29)]),
    ("0 0 28-29 2 *", (2024, 2, 28), [(2024, 2, 29), (2025, 2, 28), (2026, 2, 28), (2027, 2, 28), (2028, 2, 28)]),
    # both day fields restricted: either matches (Fridays, and the 13th)
    ("0 12 13 * 5", (2030, 9, 1), [(2030, 9, 6, 12), (2030, 9, 13, 12), (2030, 9, 20, 12)]),
    ("0 0 1 * 1", (2030, 4, 27), [(2030, 4, 29), (2030, 5, 1), (2030, 5, 6)]),
    # one of them starts with *: both must match (crontab(5)): odd days that are Fridays
    ("0 12 */2 * 5", (2030, 9, 1), [(2030, 9, 13, 12), (2030, 9, 27, 12), (2030, 10, 11, 12)]),
    ("0 12 * * 5", (2030, 9, 1), [(2030, 9, 6, 12), (2030, 9, 13, 12)]),
    ("0 0 * * 7", (2030, 9, 2), [(2030, 9, 8), (2030, 9, 15)]),                                # 7 is Sunday
    ("0 0 * * 0", (2030, 9, 2), [(2030, 9, 8)]),
    ("0 9 * * 1-5", (2030, 9, 6, 10), [(2030, 9, 9, 9), (2030, 9, 10, 9)]),                    # Friday -> Monday
    # six fields: seconds first
    ("*/15 * * * * *", (2030, 1, 7, 12, 0, 50), [(2030, 1, 7, 12, 1), (2030, 1, 7, 12, 1, 15), (2030, 1, 7, 12, 1, 30)]),
    ("30 0 0 * * *", (2030, 1, 7, 12), [(2030, 1, 8, 0, 0, 30), (2030, 1, 9, 0, 0, 30)]),
    ("0 0 0 1 1 *", (2030, 6, 1), [(2031, 1, 1), (2032, 1, 1)]),
])
def test_next_after_gives_the_next_ticks(expr, start, expected):
    assert ticks(expr, datetime(*start), len(expected)) == [datetime(*e) for e in expected]


def test_next_after_is_strictly_after_a_fractional_time_and_a_tick_itself():
    cron = parse("*/2 * * * * *")
    assert cron.next_after(at(2030, 1, 7, 12, 0, 1) + 0.999) == at(2030, 1, 7, 12, 0, 2)
    assert cron.next_after(at(2030, 1, 7, 12, 0, 2)) == at(2030, 1, 7, 12, 0, 4)
    assert cron.next_after(at(2030, 1, 7, 12, 0, 2) - 0.001) == at(2030, 1, 7, 12, 0, 2)


@pytest.mark.parametrize("expr, t, expected", [
    ("*/5 * * * *", (2030, 3, 1, 0, 3), (2030, 3, 1)),
    ("*/5 * * * *", (2030, 3, 1, 0, 5), (2030, 3, 1, 0, 5)),                 # at a tick: that tick
    ("0 0 29 2 *", (2024, 3, 1), (2024, 2, 29)),
    ("0 0 29 2 *", (2024, 2, 28), (2020, 2, 29)),
    ("0 0 31 * *", (2030, 3, 30), (2030, 1, 31)),
    ("0 12 13 * 5", (2030, 9, 12), (2030, 9, 6, 12)),
    ("*/15 * * * * *", (2030, 1, 1, 0, 0, 10), (2030, 1, 1)),
    ("0 9 * * 1-5", (2030, 9, 9, 8), (2030, 9, 6, 9)),                        # Monday 8:00 -> Friday
])
def test_last_at_or_before_gives_the_latest_tick(expr, t, expected):
    assert datetime.fromtimestamp(parse(expr).last_at_or_before(at(*t))) == datetime(*expected)


def _matches(expr: str, dt: datetime) -> bool:
    """A brute-force reading of the rules, independent of the search: does wall time `dt` match `expr`?"""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]

    def allowed(text: str, low: int, high: int) -> set[int]:
        out: set[int] = set()
        for item in text.split(","):
            body, _, step = item.partition("/")
            if body == "*":
                a, b = low, high
            elif "-" in body:
                a, b = map(int, body.split("-"))
            else:
                a = int(body)
                b = high if step else a
            out.update(range(a, b + 1, int(step or 1)))
        return out

    sec, minute, hour, dom, month, dow = fields
    dom_ok = dt.day in allowed(dom, 1, 31)
    dow_ok = dt.isoweekday() % 7 in {d % 7 for d in allowed(dow, 0, 7)}
    day_ok = (dom_ok or dow_ok) if not dom.startswith("*") and not dow.startswith("*") else (dom_ok and dow_ok)
    return (dt.second in allowed(sec, 0, 59) and dt.minute in allowed(minute, 0, 59)
            and dt.hour in allowed(hour, 0, 23) and dt.month in allowed(month, 1, 12) and day_ok)


@pytest.mark.parametrize("expr", ["*/7 * * * *", "0,15 */6 * * *", "30 9-17/4 1,15 * 1", "0 0 */10 2,3 *",
                                  "*/20 4 29 2 *", "10 1 * * 0,6", "0 0 31 1-4 *", "45 23 28-31 * 2-3"])
def test_every_minute_of_a_leap_february_agrees_with_a_brute_force_reading(expr):
    # Given every minute from 2028-01-28 to 2028-03-03 (a leap February), checked one by one
    cron = parse(expr)
    start, end = datetime(2028, 1, 28), datetime(2028, 3, 3)
    expected, dt = [], start
    while dt < end:
        if _matches(expr, dt):
            expected.append(dt)
        dt += timedelta(minutes=1)
    # When the ticks are walked with next_after, and each one is looked up with last_at_or_before
    walked, t = [], start.timestamp() - 1
    while True:
        t = cron.next_after(t)
        if t >= end.timestamp():
            break
        walked.append(datetime.fromtimestamp(t))
        assert cron.last_at_or_before(t + 59) == t
    # Then both agree with the brute force, tick for tick
    assert walked == expected and expected


def test_across_dst_changes_ticks_strictly_increase_and_a_skipped_wall_time_fires_once_after_the_jump(local_zone):
    local_zone("Europe/Berlin")
    # 2030-03-31 02:00 CET jumps to 03:00 CEST; 2030-10-27 03:00 CEST falls back to 02:00 CET.
    spring = ticks("30 * * * *", datetime(2030, 3, 31, 0, 0), 4)
    assert spring == [datetime(2030, 3, 31, 0, 30), datetime(2030, 3, 31, 1, 30), datetime(2030, 3, 31, 3, 30),
                      datetime(2030, 3, 31, 4, 30)]
    assert ticks("30 2 * * *", datetime(2030, 3, 30, 12), 2) == [datetime(2030, 3, 31, 3, 30),
                                                                 datetime(2030, 4, 1, 2, 30)]
    for expr, start in (("*/20 * * * *", datetime(2030, 10, 27, 0)), ("*/20 * * * *", datetime(2030, 3, 31, 0)),
                        ("*/30 * * * * *", datetime(2030, 10, 27, 1, 58))):
        cron, t = parse(expr), start.timestamp()
        for _ in range(20):
            later = cron.next_after(t)
            assert later > t
            t = later
    # the repeated hour fires once a wall-clock time
    autumn = ticks("30 2 * * *", datetime(2030, 10, 26, 12), 2)
    assert autumn == [datetime(2030, 10, 27, 2, 30), datetime(2030, 10, 28, 2, 30)]


@pytest.mark.parametrize("expr, says", [
    ("* * * *", 'cron "* * * *" has 4 fields; expected 5'),
    ("", "has 0 fields"),
    ("* * * * * * *", "has 7 fields"),
    ("61 * * * *", 'minute field "61" is out of range 0-59'),
    ("* 24 * * *", 'hour field "24" is out of range 0-23'),
    ("* * 0 * *", 'day-of-month field "0" is out of range 1-31'),
    ("* * * 13 *", 'month field "13" is out of range 1-12'),
    ("* * * * 8", 'day-of-week field "8" is out of range 0-7'),
    ("60 * * * * *", 'second field "60" is out of range 0-59'),
    ("*/0 * * * *", 'minute field "*/0" has a bad step'),
    ("*/x * * * *", 'minute field "*/x" has a bad step'),
    ("5-1 * * * *", 'minute field "5-1" is a backwards range'),
    ("a * * * *", 'minute field "a" is not a number'),
    ("* * * jan *", 'month field "jan" is not a number'),
    ("* * * * mon", 'day-of-week field "mon" is not a number'),
    ("1,,2 * * * *", 'minute field "" is not a number'),
    ("-5 * * * *", 'minute field "-5" is not a number'),
    ("0 0 31 2 *", "day-of-month 31 never occurs in month 2"),
    ("0 0 30,31 2,4 *", None),    # April 30 exists: allowed
])
def test_a_bad_expression_is_one_line_naming_the_field_and_the_value(expr, says):
    if says is None:
        parse(expr)
        return
    with pytest.raises(UsageError) as caught:
        parse(expr)
    message = str(caught.value)
    assert says in message and "\n" not in message, message


def test_a_cron_that_is_not_a_string_is_refused():
    with pytest.raises(UsageError, match="must be a string"):
        parse(None)
