"""Retention policies: which snapshots ``forget`` keeps (restic's semantics).

Snapshots are grouped by host and paths; in each group, newest first, a
snapshot is kept if it is among the last N, or the newest of a not-yet-seen
hour/day/week/month/year bucket while that bucket count lasts.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from tiervault.vault.snapshot import Snapshot


@dataclass
class Policy:
    """How many of each kind to keep; 0 means none of that kind."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    tags: tuple[str, ...] = ()

    def empty(self) -> bool:
        """True if the policy would keep nothing (refused: forget all by accident)."""
        return not any((self.last, self.hourly, self.daily, self.weekly, self.monthly,
                        self.yearly, self.tags))


_BUCKETS: list[tuple[str, Callable[[datetime], tuple[int, ...]]]] = [
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: t.isocalendar()[:2]),
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
]


def apply_policy(snaps: list[Snapshot], policy: Policy) -> tuple[list[Snapshot],
                                                                  list[Snapshot],
                                                                  dict[str, list[str]]]:
    """Split into (keep, remove) and give the reasons each kept one is kept."""
    groups: dict[tuple[str, tuple[str, ...]], list[Snapshot]] = defaultdict(list)
    for s in snaps:
        groups[(s.hostname, tuple(sorted(s.paths)))].append(s)
    keep: list[Snapshot] = []
    remove: list[Snapshot] = []
    reasons: dict[str, list[str]] = {}
    for group in groups.values():
        group.sort(key=lambda s: (s.datetime(), s.id), reverse=True)
        counts = {"last": policy.last, **{n: getattr(policy, n) for n, _ in _BUCKETS}}
        last_bucket: dict[str, tuple[int, ...] | None] = {n: None for n, _ in _BUCKETS}
        for s in group:
            why: list[str] = []
            t = s.datetime().astimezone()
            if counts["last"] > 0:
                counts["last"] -= 1
                why.append("last")
            for name, fn in _BUCKETS:
                b = fn(t)
                if counts[name] > 0 and b != last_bucket[name]:
                    counts[name] -= 1
                    last_bucket[name] = b
                    why.append(name)
            if policy.tags and set(policy.tags) & set(s.tags):
                why.append("tag")
            if why:
                keep.append(s)
                reasons[s.id] = why
            else:
                remove.append(s)
    return keep, remove, reasons


ARCHIVE_TAG = "archive"


@dataclass
class GfsPolicy:
    """Grandfather-father-son retention over time spans (not counts).

    Keep every snapshot of the last ``all_days`` days; then the last one of
    each day for ``daily_days`` days, of each ISO week for ``weekly_weeks``
    weeks, of each month for ``monthly_months`` months and of each year for
    ``yearly_years`` years. Archived snapshots are always kept.
    """

    all_days: int = 7
    daily_days: int = 30
    weekly_weeks: int = 12
    monthly_months: int = 12
    yearly_years: int = 5


def _months_back(now: datetime, n: int) -> tuple[int, int]:
    y, m = now.year, now.month - n
    while m <= 0:
        m += 12
        y -= 1
    return y, m


def apply_gfs(snaps: list[Snapshot], p: GfsPolicy, now: datetime) -> tuple[
        list[Snapshot], list[Snapshot], dict[str, list[str]]]:
    """Split into (keep, remove) with the reasons each kept snapshot is kept."""
    from datetime import timedelta

    now = now.astimezone()
    reasons: dict[str, list[str]] = defaultdict(list)
    ordered = sorted(snaps, key=lambda s: (s.datetime(), s.id))
    for s in ordered:
        t = s.datetime().astimezone(now.tzinfo)
        if ARCHIVE_TAG in s.tags:
            reasons[s.id].append("archive")
        if t >= now - timedelta(days=p.all_days):
            reasons[s.id].append("recent")
    spans: list[tuple[str, Callable[[datetime], tuple[int, ...]], tuple[int, ...]]] = [
        ("daily", lambda t: (t.year, t.month, t.day),
         ((now - timedelta(days=p.daily_days - 1)).date().timetuple()[:3])),
        ("weekly", lambda t: tuple(t.isocalendar()[:2]),
         tuple((now - timedelta(weeks=p.weekly_weeks - 1)).isocalendar()[:2])),
        ("monthly", lambda t: (t.year, t.month), _months_back(now, p.monthly_months - 1)),
        ("yearly", lambda t: (t.year,), (now.year - p.yearly_years + 1,)),
    ]
    for name, bucket, oldest in spans:
        count = {"daily": p.daily_days, "weekly": p.weekly_weeks, "monthly": p.monthly_months,
                 "yearly": p.yearly_years}[name]
        if count <= 0:
            continue
        last: dict[tuple[int, ...], Snapshot] = {}
        for s in ordered:
            last[bucket(s.datetime().astimezone(now.tzinfo))] = s
        for b, s in last.items():
            if b >= oldest:
                reasons[s.id].append(name)
    keep = [s for s in ordered if reasons.get(s.id)]
    remove = [s for s in ordered if not reasons.get(s.id)]
    return keep, remove, {k: v for k, v in reasons.items() if v}


def archive_due(rules: list[dict[str, object]], snaps: list[Snapshot], now: datetime) -> bool:
    """True if a session starting ``now`` is to be marked an archive.

    A rule (``months``: 1-12, ``days``: days of the month or ``weekdays``:
    mon..sun, ``time``: HH:MM) marks the first session started after each of
    its trigger times; it is due when no archived snapshot exists since the
    most recent trigger at or before ``now``.
    """
    now = now.astimezone()
    archived = [s.datetime() for s in snaps if ARCHIVE_TAG in s.tags]
    for rule in rules:
        trigger = _last_trigger(rule, now)
        if trigger is None:
            continue
        if not any(t >= trigger for t in archived):
            return True
    return False


_WEEKDAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}


def _last_trigger(rule: dict[str, object], now: datetime) -> datetime | None:
    """The most recent time at or before ``now`` matching the rule (within ~400 days)."""
    from datetime import time as dtime
    from datetime import timedelta

    months = set(rule.get("months") or range(1, 13))  # type: ignore[call-overload]
    days = set(rule.get("days") or [])  # type: ignore[call-overload]
    weekdays = {_WEEKDAYS[str(d).lower()[:3]] for d in rule.get("weekdays") or []}  # type: ignore[attr-defined]
    at = dtime.fromisoformat(str(rule.get("time", "00:00")))
    day = now.date()
    for _ in range(400):
        ok = day.month in months and (not days or day.day in days) and (
            not weekdays or day.weekday() in weekdays)
        if ok:
            cand = datetime.combine(day, at, tzinfo=now.tzinfo)
            if cand <= now:
                return cand
        day -= timedelta(days=1)
    return None


def _norm_path(p: str) -> str:
    return os.path.normpath(p) if p.startswith("/") else os.path.abspath(p)


def filter_snapshots(snaps: list[Snapshot], hosts: Sequence[str] = (),
                     paths: Sequence[str] = (), tags: Sequence[str] = ()) -> list[Snapshot]:
    """The snapshots matching every given filter, with restic's meanings.

    - ``hosts``: the snapshot's host is one of them;
    - ``paths``: every given path is one of the snapshot's paths (restic's
      ``--path``, repeatable; relative paths are made absolute, trailing ``/`` ignored);
    - ``tags``: each entry is a comma-separated list that the snapshot must have
      all of; entries are alternatives (``--tag a,b --tag c``: a and b, or c).
    """
    want_paths = {_norm_path(p) for p in paths}
    tag_sets = [{t for t in entry.split(",") if t} for entry in tags]
    out = []
    for s in snaps:
        if hosts and s.hostname not in hosts:
            continue
        if want_paths and not want_paths <= {_norm_path(p) for p in s.paths}:
            continue
        if tag_sets and not any(ts <= set(s.tags) for ts in tag_sets):
            continue
        out.append(s)
    return out


def latest_per_group(snaps: list[Snapshot], n: int) -> list[Snapshot]:
    """The ``n`` newest snapshots of each host and path set (restic's ``--latest N``),
    in the order of ``snaps``."""
    groups: dict[tuple[str, tuple[str, ...]], list[Snapshot]] = defaultdict(list)
    for s in snaps:
        groups[(s.hostname, tuple(sorted(s.paths)))].append(s)
    keep: set[str] = set()
    for group in groups.values():
        group.sort(key=lambda s: (s.datetime(), s.id), reverse=True)
        keep.update(s.id for s in group[:n])
    return [s for s in snaps if s.id in keep]
