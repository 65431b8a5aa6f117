"""When a schedule runs: cron expressions, days + time, allowed windows, in local time.

Schedules are read in the device's local time zone (a ``zoneinfo`` zone, so
daylight saving changes are known). Every computation works on wall-clock
times resolved to instants:

- a wall time that does not exist (the hour skipped when clocks go forward)
  runs at the moment the clocks jump, once;
- a wall time that exists twice (the hour repeated when clocks go back) runs
  once, at its first occurrence, for fixed-time schedules; schedules whose hour
  field is a wildcard (``*/15 * * * *``) are intervals and run in both.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # Python weekday order
_CRON_DOW = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}
_MINUTE = timedelta(minutes=1)
#: How far ahead a next run is searched (Feb 29 schedules need up to 8 years).
_SEARCH_DAYS = 366 * 9


class ScheduleError(ValueError):
    """A schedule, time or window that cannot be understood (message says why)."""


def local_zone(name: str | None = None) -> tzinfo:
    """The zone for schedules: ``name``, else ``TZ``, else the system's, else UTC."""
    for cand in (name, os.environ.get("TZ", "").lstrip(":") or None):
        if cand:
            try:
                return ZoneInfo(cand)
            except (ZoneInfoNotFoundError, ValueError):
                if cand is name:
                    raise ScheduleError(f"unknown time zone {name!r}") from None
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        pass
    tzfile = Path("/etc/timezone")
    try:
        return ZoneInfo(tzfile.read_text().strip())
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return UTC


def parse_hhmm(text: str) -> time:
    """``"03:30"`` -> 03:30; a clear error otherwise."""
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ScheduleError(f"{text!r} is not a time of day (use HH:MM, 00:00 to 23:59)")
    return time(int(m.group(1)), int(m.group(2)))


def parse_days(text: str | list[str]) -> list[int]:
    """``"mon,tue"``, ``"mon-fri"``, ``"daily"`` -> Python weekdays (Monday = 0)."""
    items = text if isinstance(text, list) else text.split(",")
    out: set[int] = set()
    for raw in items:
        item = str(raw).strip().lower()
        if item in ("daily", "*", "all", "every"):
            out.update(range(7))
            continue
        if item in ("weekdays", "workdays"):
            out.update(range(5))
            continue
        if item in ("weekend", "weekends"):
            out.update((5, 6))
            continue
        ends = item.split("-")
        if len(ends) > 2 or not all(e[:3] in DAY_NAMES and len(e) >= 3 for e in ends):
            raise ScheduleError(f"{raw!r} is not a day of the week (use mon,tue,... or mon-fri)")
        a, b = DAY_NAMES.index(ends[0][:3]), DAY_NAMES.index(ends[-1][:3])
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    if not out:
        raise ScheduleError("no days given")
    return sorted(out)


# -- resolving wall-clock times -----------------------------------------------------------


def _wall(t: datetime, tz: tzinfo) -> datetime:
    return t.astimezone(tz).replace(tzinfo=None)


def resolve(naive: datetime, tz: tzinfo, both_folds: bool = False) -> list[datetime]:
    """The instants (UTC) a local wall time stands for, in order.

    Normally one; a skipped wall time gives the moment the clocks jumped; a
    repeated one gives its first occurrence (both with ``both_folds``).
    """
    u0 = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    u1 = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if u0 == u1:
        return [u0]
    if _wall(u0, tz) == naive and _wall(u1, tz) == naive:
        first, second = sorted((u0, u1))
        return [first, second] if both_folds else [first]
    # A gap: the first instant whose wall time is at or past ``naive``.
    lo, hi = sorted((u0, u1))
    while (hi - lo) > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if _wall(mid, tz) >= naive:
            hi = mid
        else:
            lo = mid
    return [hi.replace(microsecond=0)]


# -- cron ---------------------------------------------------------------------------------


def _field(text: str, lo: int, hi: int, names: dict[str, int], what: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        step = 1
        if "/" in part:
            part, _, s = part.partition("/")
            if not s.isdigit() or int(s) == 0:
                raise ScheduleError(f"bad step {s!r} in the {what} field")
            step = int(s)
        if part == "*":
            a, b = lo, hi
        else:
            ends = part.split("-")
            if len(ends) > 2 or not all(ends):
                raise ScheduleError(f"{part!r} is not valid in the {what} field")
            vals = []
            for e in ends:
                if e.isdigit():
                    vals.append(int(e))
                elif e[:3] in names:
                    vals.append(names[e[:3]])
                else:
                    raise ScheduleError(f"{e!r} is not valid in the {what} field")
            a = vals[0]
            b = vals[-1] if len(vals) == 2 else (hi if step > 1 else a)
            if not (lo <= a <= hi and lo <= b <= hi) or a > b:
                raise ScheduleError(f"{part!r} is out of range in the {what} field "
                                    f"({lo}-{hi})")
        out.update(range(a, b + 1, step))
    return frozenset(out)


@dataclass(frozen=True)
class CronExpr:
    """A cron expression: minute hour day-of-month month day-of-week.

    An optional sixth field in front gives seconds (``*/20 * * * * *``).
    """

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    mdays: frozenset[int]
    months: frozenset[int]
    wdays: frozenset[int]  # cron numbering: 0 = Sunday
    mday_any: bool
    wday_any: bool
    interval: bool  # the hour field is a wildcard: run in both folds of a repeated hour
    seconds: frozenset[int] = frozenset({0})  # an optional sixth field, first

    @classmethod
    def parse(cls, text: str) -> CronExpr:
        """Parse; ScheduleError with the reason if invalid."""
        src = text.strip()
        expr = _MACROS.get(src.lower(), src)
        fields = expr.split()
        if len(fields) not in (5, 6):
            raise ScheduleError(f"cron expression {text!r} needs 5 fields "
                                "(minute hour day-of-month month day-of-week), or 6 with "
                                "seconds first")
        secs = _field(fields.pop(0), 0, 59, {}, "second") if len(fields) == 6 \
            else frozenset({0})
        mi, ho, dm, mo, dw = fields
        wd = _field(dw, 0, 7, _CRON_DOW, "day-of-week")
        wd = frozenset(0 if d == 7 else d for d in wd)
        c = cls(src, _field(mi, 0, 59, {}, "minute"), _field(ho, 0, 23, {}, "hour"),
                _field(dm, 1, 31, {}, "day-of-month"), _field(mo, 1, 12, _MONTHS, "month"),
                wd, dm == "*", dw == "*", "*" in ho, secs)
        if c.next_after(datetime(2000, 1, 1, tzinfo=UTC), UTC) is None:
            raise ScheduleError(f"cron expression {text!r} never runs")
        return c

    @classmethod
    def from_days(cls, days: list[int], at: time) -> CronExpr:
        """``days`` (Python weekdays) at ``at`` as a cron expression."""
        dow = "*" if len(set(days)) == 7 else ",".join(
            str((d + 1) % 7) for d in sorted(set(days)))
        return cls.parse(f"{at.minute} {at.hour} * * {dow}")

    def day_matches(self, d: date) -> bool:
        """Cron's rule: if both day fields are restricted, either may match."""
        if d.month not in self.months:
            return False
        md = d.day in self.mdays
        wd = (d.weekday() + 1) % 7 in self.wdays
        if self.mday_any and self.wday_any:
            return True
        if self.mday_any:
            return wd
        if self.wday_any:
            return md
        return md or wd

    def next_after(self, after: datetime, tz: tzinfo) -> datetime | None:
        """The first run strictly after ``after`` (an aware instant), in UTC."""
        local = after.astimezone(tz).replace(tzinfo=None)
        day = local.date() - timedelta(days=1)  # a gap may push yesterday's time past midnight
        times = sorted((h, m) for h in self.hours for m in self.minutes)
        secs = sorted(self.seconds)
        for _ in range(_SEARCH_DAYS):
            change = _offset_change(day, tz) if self.day_matches(day) else timedelta()
            if self.day_matches(day) and not change:
                # No offset change this day: instants follow wall times, the first wins.
                if day >= local.date():
                    start = 0 if day > local.date() else bisect.bisect_left(
                        times, (local.hour, local.minute))
                    for h, m in times[start:]:
                        base = datetime.combine(day, time(h, m), tz).astimezone(UTC)
                        for s in secs:
                            if base + timedelta(seconds=s) > after:
                                return base + timedelta(seconds=s)
            elif self.day_matches(day):
                best: datetime | None = None
                lower = local - change - _MINUTE
                first = 0 if day > lower.date() else len(times) if day < lower.date() else \
                    bisect.bisect_left(times, (lower.hour, lower.minute))
                for h, m in times[first:]:
                    wall = datetime.combine(day, time(h, m))
                    if wall < local - change - _MINUTE:
                        continue  # long before ``after`` whatever the offset
                    if best is not None and wall > _wall(best, tz) + change + _MINUTE:
                        break  # wall times this late cannot be earlier instants
                    for base in resolve(wall, tz, self.interval):
                        for s in secs:
                            inst = base + timedelta(seconds=s)
                            if inst > after and (best is None or inst < best):
                                best = inst
                                break
                if best is not None:
                    return best
            day += timedelta(days=1)
        return None


def _offset_change(day: date, tz: tzinfo) -> timedelta:
    """How much the UTC offset changes around ``day`` (zero on almost every day)."""
    offs = [datetime.combine(day + timedelta(days=k), time(h), tz).utcoffset() or timedelta()
            for k, h in ((-1, 20), (0, 0), (0, 12), (1, 0), (1, 4))]
    return max(offs) - min(offs)


# -- allowed windows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Wall-clock hours in which a backup may run (``22:00-06:00`` spans midnight)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"HH:MM-HH:MM"``."""
        parts = text.split("-")
        if len(parts) != 2:
            raise ScheduleError(f"window {text!r}: use HH:MM-HH:MM (e.g. 22:00-06:00)")
        w = cls(parse_hhmm(parts[0]), parse_hhmm(parts[1]))
        if w.start == w.end:
            raise ScheduleError(f"window {text!r} is empty (start equals end)")
        return w

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, when: datetime, tz: tzinfo) -> bool:
        """Whether the instant ``when`` falls inside the window (local wall time)."""
        t = when.astimezone(tz).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def _next(self, at: time, after: datetime, tz: tzinfo) -> datetime:
        day = after.astimezone(tz).date() - timedelta(days=1)
        for _ in range(4):
            for inst in resolve(datetime.combine(day, at), tz):
                if inst > after:
                    return inst
            day += timedelta(days=1)
        raise AssertionError("unreachable: a wall time recurs every day")

    def next_start(self, after: datetime, tz: tzinfo) -> datetime:
        """When the window next opens after ``after`` (``after`` itself if open)."""
        if self.contains(after, tz):
            return after
        return self._next(self.start, after, tz)

    def next_end(self, after: datetime, tz: tzinfo) -> datetime:
        """When the window next closes after ``after``."""
        return self._next(self.end, after, tz)
