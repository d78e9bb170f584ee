"""Cron expressions: `parse(expr) -> Cron` and `Cron.next_after(t)`, in the master's local time. Pure, no I/O.

Five fields `minute hour day-of-month month day-of-week`, or six with a leading `second` field (as in Quartz
and APScheduler). Each field is a list `a,b,...` of `*`, `*/n`, `a`, `a-b`, `a-b/n` or `a/n` (from a to the
field's end). Day-of-week is 0-7, 0 and 7 both Sunday. As in crontab(5), when day-of-month and day-of-week are
both restricted (neither starts with `*`), a day matching either one is a tick day; otherwise both must match.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import UsageError

# (name, low, high) of the six fields; a five-field expression has no seconds field (second 0).
FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12),
          ("day-of-week", 0, 7))
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)   # February: 29, so leap days count as possible
_SEARCH_YEARS = 401    # the Gregorian calendar repeats every 400 years: a possible tick is always found within it
_ONE_SECOND = timedelta(seconds=1)
_HINT = 'e.g. "*/5 * * * *" (every 5 minutes) or "*/10 * * * * *" (every 10 seconds)'


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field, sorted."""

    expr: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]          # 0 = Sunday .. 6 = Saturday
    day_or: bool                       # both day fields restricted: either matches
    has_seconds: bool

    @property
    def step(self) -> timedelta:
        """The resolution of the expression: one second with a seconds field, else one minute."""
        return _ONE_SECOND if self.has_seconds else timedelta(minutes=1)

    def next_after(self, t: float) -> float:
        """The first tick strictly after `t` (epoch seconds), as epoch seconds."""
        wall = datetime.fromtimestamp(math.floor(t))
        start = wall.replace(microsecond=0) if self.has_seconds else wall.replace(second=0, microsecond=0)
        candidate = start + self.step
        while True:
            found = self._forward(candidate)
            later = [e for e in _epochs(found) if e > t]
            if later:
                return later[0]
            candidate = found + self.step       # only around a DST change: that wall time is not after t

    def last_at_or_before(self, t: float) -> float:
        """The latest tick at or before `t` (epoch seconds), as epoch seconds."""
        wall = datetime.fromtimestamp(math.floor(t))
        candidate = wall.replace(microsecond=0) if self.has_seconds else wall.replace(second=0, microsecond=0)
        while True:
            found = self._backward(candidate)
            earlier = [e for e in _epochs(found) if e <= t]
            if earlier:
                return earlier[-1]
            candidate = found - self.step

    def is_day(self, day: datetime) -> bool:
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        return dom or dow if self.day_or else dom and dow

    # Searches in naive wall-clock time; _epochs maps the wall time found to the instants it names.

    def _forward(self, c: datetime) -> datetime:
        """The first wall time >= c that matches every field."""
        limit = c.year + _SEARCH_YEARS
        while c.year <= limit:
            if c.month not in self.months:
                c = datetime(c.year + c.month // 12, c.month % 12 + 1, 1)
            elif not self.is_day(c):
                c = datetime(c.year, c.month, c.day) + timedelta(days=1)
            elif c.hour not in self.hours:
                c = _up(c, self.hours, c.hour, "hour", timedelta(days=1))
            elif c.minute not in self.minutes:
                c = _up(c, self.minutes, c.minute, "minute", timedelta(hours=1))
            elif c.second not in self.seconds:
                c = _up(c, self.seconds, c.second, "second", timedelta(minutes=1))
            else:
                return c
        raise UsageError(f'cron "{self.expr}" has no tick in {_SEARCH_YEARS} years', _HINT)

    def _backward(self, c: datetime) -> datetime:
        """The last wall time <= c that matches every field."""
        limit = c.year - _SEARCH_YEARS
        while c.year >= limit:
            if c.month not in self.months:
                c = datetime(c.year, c.month, 1) - _ONE_SECOND
            elif not self.is_day(c):
                c = datetime(c.year, c.month, c.day) - _ONE_SECOND
            elif c.hour not in self.hours:
                c = _down(c, self.hours, c.hour, "hour")
            elif c.minute not in self.minutes:
                c = _down(c, self.minutes, c.minute, "minute")
            elif c.second not in self.seconds:
                c = _down(c, self.seconds, c.second, "second")
            else:
                return c
        raise UsageError(f'cron "{self.expr}" has no tick in {_SEARCH_YEARS} years', _HINT)


_SMALLER = {"hour": ("minute", "second"), "minute": ("second",), "second": ()}


def _up(c: datetime, allowed: tuple[int, ...], value: int, unit: str, carry: timedelta) -> datetime:
    """c moved to the next allowed value of `unit` (smaller units reset to 0), or into the next larger unit."""
    reset = {name: 0 for name in _SMALLER[unit]}
    i = bisect_left(allowed, value)
    if i < len(allowed):
        return c.replace(**{unit: allowed[i]}, **reset)
    return c.replace(**{unit: 0}, **reset) + carry


def _down(c: datetime, allowed: tuple[int, ...], value: int, unit: str) -> datetime:
    """c moved to the previous allowed value of `unit` (smaller units at their end), or into the previous larger unit."""
    i = bisect_right(allowed, value)
    if i > 0:
        return c.replace(**{unit: allowed[i - 1]}, **{name: 59 for name in _SMALLER[unit]})
    return c.replace(**{unit: 0}, **{name: 0 for name in _SMALLER[unit]}) - _ONE_SECOND


def _epochs(wall: datetime) -> list[float]:
    """The instants a local wall time names: one; two in the hour a DST change repeats; in the hour it skips,
    none, so the instant the clock jumps to (the wall time read with the offset before the change)."""
    found = set()
    for fold in (0, 1):
        instant = wall.replace(fold=fold).timestamp()
        if datetime.fromtimestamp(instant) == wall:
            found.add(instant)
    return sorted(found) or [wall.replace(fold=0).timestamp()]


def parse(expr: str) -> Cron:
    """Parse a 5- or 6-field expression; a bad one raises UsageError naming the field and the value."""
    if not isinstance(expr, str):
        raise UsageError(f"a cron expression must be a string, got {type(expr).__name__}", _HINT)
    parts = expr.split()
    if len(parts) not in (5, 6):
        raise UsageError(f'cron "{expr}" has {len(parts)} fields; expected 5 (minute hour day-of-month month '
                         'day-of-week) or 6 (second first)', _HINT)
    has_seconds = len(parts) == 6
    if not has_seconds:
        parts = ["0", *parts]
    values = [_field(expr, text, *spec) for text, spec in zip(parts, FIELDS)]
    weekdays = tuple(sorted({d % 7 for d in values[5]}))
    dom_star, dow_star = parts[3].startswith("*"), parts[5].startswith("*")
    if dow_star and not any(min(values[3]) <= _MAX_DAYS[m - 1] for m in values[4]):
        raise UsageError(f'cron "{expr}": day-of-month {parts[3]} never occurs in month {parts[4]}', _HINT)
    return Cron(expr, *values[:5], weekdays, day_or=not dom_star and not dow_star, has_seconds=has_seconds)


def _field(expr: str, text: str, name: str, low: int, high: int) -> tuple[int, ...]:
    found: set[int] = set()
    for item in text.split(","):
        found.update(_item(expr, item, name, low, high))
    return tuple(sorted(found))


def _item(expr: str, item: str, name: str, low: int, high: int) -> range:
    def bad(why: str) -> UsageError:
        return UsageError(f'cron "{expr}": {name} field "{item}" {why}', _HINT)

    def number(text: str) -> int:
        if not (text.isascii() and text.isdigit()):
            raise bad(f"is not a number, *, a range a-b or a step */n (allowed values {low}-{high})")
        value = int(text)
        if not low <= value <= high:
            raise bad(f"is out of range {low}-{high}")
        return value

    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
            raise bad("has a bad step; after / comes a whole number >= 1")
        step = int(step_text)
    if body == "*":
        start, end = low, high
    elif "-" in body:
        first, _, last = body.partition("-")
        start, end = number(first), number(last)
        if start > end:
            raise bad(f"is a backwards range; write the smaller value first ({end}-{start})")
    else:
        start = number(body)
        end = high if slash else start
    return range(start, end + 1, step)
