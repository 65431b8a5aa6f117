"""Retention policies: which snapshots ``forget`` and ``retention`` keep.

Snapshots are grouped (by host and paths unless told otherwise, as restic's
``--group-by``); in each group, newest first, a snapshot is kept if it is among
the last N, or the newest of a not-yet-seen hour/day/week/month/year bucket
while that bucket count lasts, or within a duration of the group's newest.
Archived snapshots are always kept, on top of what the policy keeps: the
policy is worked out as if they were ordinary, so marking one never changes
which others stay.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tiervault.errors import UsageError
from tiervault.vault.snapshot import LEGACY_ARCHIVE_TAG, Snapshot, SnapshotFilter

#: Kept for callers that build legacy-tagged snapshots (tests, old vaults).
ARCHIVE_TAG = LEGACY_ARCHIVE_TAG
GROUP_KEYS = ("host", "paths", "tags")
DEFAULT_GROUP_BY = ("host", "paths")

Plan = tuple[list[Snapshot], list[Snapshot], dict[str, list[str]]]
GroupKey = tuple[tuple[str, ...], ...]


def parse_group_by(text: str) -> tuple[str, ...]:
    """``host,paths`` -> ("host", "paths"); an empty string groups everything together."""
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in GROUP_KEYS]
    if bad:
        raise UsageError(f"--group-by: unknown key {bad[0]!r} (use host, paths and/or tags, "
                         "comma-separated, or '' for one group)")
    return keys


def group_key(s: Snapshot, group_by: Collection[str]) -> GroupKey:
    """The group a snapshot belongs to."""
    parts: list[tuple[str, ...]] = []
    if "host" in group_by:
        parts.append((s.hostname,))
    if "paths" in group_by:
        parts.append(tuple(sorted(s.paths)))
    if "tags" in group_by:
        parts.append(tuple(sorted(s.tags)))
    return tuple(parts)


def group_snapshots(snaps: list[Snapshot], group_by: Collection[str]
                    ) -> dict[GroupKey, list[Snapshot]]:
    """Snapshots per group, newest first in each."""
    groups: dict[GroupKey, list[Snapshot]] = defaultdict(list)
    for s in snaps:
        groups[group_key(s, group_by)].append(s)
    for g in groups.values():
        g.sort(key=lambda s: (s.datetime(), s.id), reverse=True)
    return dict(groups)


@dataclass(frozen=True)
class Duration:
    """A restic duration such as ``2y5m7d3h`` (years, months, days, hours)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``NyNmNdNh`` (any of the parts, in any order, at least one)."""
        t = text.strip()
        if not re.fullmatch(r"(\d+[ymdh])+", t):
            raise UsageError(f"invalid duration {text!r}: use numbers with y, m, d, h, "
                             "e.g. 1y6m or 2y5m7d3h")
        vals = {"y": 0, "m": 0, "d": 0, "h": 0}
        for n, unit in re.findall(r"(\d+)([ymdh])", t):
            vals[unit] += int(n)
        return cls(vals["y"], vals["m"], vals["d"], vals["h"])

    def before(self, t: datetime) -> datetime:
        """``t`` minus this duration (calendar years and months, as restic)."""
        y, m = t.year - self.years, t.month - self.months
        while m <= 0:
            m += 12
            y -= 1
        y = max(y, 1)
        day = min(t.day, _month_days(y, m))
        return t.replace(year=y, month=m, day=day) - timedelta(days=self.days,
                                                               hours=self.hours)

    def __str__(self) -> str:
        return "".join(f"{n}{u}" for n, u in ((self.years, "y"), (self.months, "m"),
                                               (self.days, "d"), (self.hours, "h")) if n)


def _month_days(y: int, m: int) -> int:
    nxt = datetime(y + (m == 12), m % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


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
    within: Duration | None = None

    def empty(self) -> bool:
        """True if the policy would keep nothing (refused: forget all by accident)."""
        return not any((self.last, self.hourly, self.daily, self.weekly, self.monthly,
                        self.yearly, self.tags, self.within))


_BUCKETS: list[tuple[str, Callable[[datetime], tuple[int, ...]]]] = [
    ("hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: t.isocalendar()[:2]),
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
]


def _archived(snaps: list[Snapshot], archived: Collection[str] | None) -> set[str]:
    if archived is None:  # no marks known: only the legacy tag says so
        return {s.id for s in snaps if s.legacy_archived()}
    return set(archived)


def apply_policy(snaps: list[Snapshot], policy: Policy,
                 archived: Collection[str] | None = None,
                 group_by: Collection[str] = DEFAULT_GROUP_BY) -> Plan:
    """Split into (keep, remove) and give the reasons each kept one is kept."""
    arch = _archived(snaps, archived)
    keep: list[Snapshot] = []
    remove: list[Snapshot] = []
    reasons: dict[str, list[str]] = {}
    for group in group_snapshots(snaps, group_by).values():
        counts = {"last": policy.last, **{n: getattr(policy, n) for n, _ in _BUCKETS}}
        last_bucket: dict[str, tuple[int, ...] | None] = {n: None for n, _ in _BUCKETS}
        since = policy.within.before(group[0].datetime()) if policy.within else None
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
            if policy.tags and any(set(g.split(",")) <= set(s.tags) for g in policy.tags):
                why.append("tag")
            if since is not None and s.datetime() >= since:
                why.append("within")
            if s.id in arch:
                why.append("archived")
            if why:
                keep.append(s)
                reasons[s.id] = why
            else:
                remove.append(s)
    return keep, remove, reasons


@dataclass
class GfsPolicy:
    """Grandfather-father-son retention over time spans (not counts).

    Keep every snapshot of the last ``all_days`` days; then the last one of
    each day for ``daily_days`` days, of each ISO week for ``weekly_weeks``
    weeks, of each month for ``monthly_months`` months and of each year for
    ``yearly_years`` years. Per group (host and paths by default), whose
    newest snapshot is always kept; archived snapshots are always kept.
    """

    all_days: int = 7
    daily_days: int = 30
    weekly_weeks: int = 12
    monthly_months: int = 12
    yearly_years: int = 5

    def empty(self) -> bool:
        """True if every span is 0 (refused, as forget refuses an empty policy)."""
        return not any((self.all_days, self.daily_days, self.weekly_weeks,
                        self.monthly_months, self.yearly_years))


def _months_back(now: datetime, n: int) -> tuple[int, int]:
    y, m = now.year, now.month - n
    while m <= 0:
        m += 12
        y -= 1
    return y, m


def apply_gfs(snaps: list[Snapshot], p: GfsPolicy, now: datetime,
              archived: Collection[str] | None = None,
              group_by: Collection[str] = DEFAULT_GROUP_BY) -> Plan:
    """Split into (keep, remove) with the reasons each kept snapshot is kept."""
    now = now.astimezone()
    arch = _archived(snaps, archived)
    reasons: dict[str, list[str]] = defaultdict(list)
    for group in group_snapshots(snaps, group_by).values():
        _gfs_group(sorted(group, key=lambda s: (s.datetime(), s.id)), p, now, reasons)
        # A set that stopped being backed up keeps its last state, as a count
        # policy (forget --keep-*) always keeps the newest of a group.
        reasons[group[0].id].append("newest")
    for sid in arch:
        reasons[sid].append("archived")
    ordered = sorted(snaps, key=lambda s: (s.datetime(), s.id))
    keep = [s for s in ordered if reasons.get(s.id)]
    remove = [s for s in ordered if not reasons.get(s.id)]
    return keep, remove, {k: v for k, v in reasons.items() if v}


def _gfs_group(ordered: list[Snapshot], p: GfsPolicy, now: datetime,
               reasons: dict[str, list[str]]) -> None:
    """Add the time-span reasons for one group (oldest first)."""
    for s in ordered:
        t = s.datetime().astimezone(now.tzinfo)
        if t >= now - timedelta(days=p.all_days):
            reasons[s.id].append("recent")
    spans: list[tuple[str, Callable[[datetime], tuple[int, ...]], tuple[int, ...], int]] = [
        ("daily", lambda t: (t.year, t.month, t.day),
         ((now - timedelta(days=p.daily_days - 1)).date().timetuple()[:3]), p.daily_days),
        ("weekly", lambda t: tuple(t.isocalendar()[:2]),
         tuple((now - timedelta(weeks=p.weekly_weeks - 1)).isocalendar()[:2]),
         p.weekly_weeks),
        ("monthly", lambda t: (t.year, t.month), _months_back(now, p.monthly_months - 1),
         p.monthly_months),
        ("yearly", lambda t: (t.year,), (now.year - p.yearly_years + 1,), p.yearly_years),
    ]
    for name, bucket, oldest, count in spans:
        if count <= 0:
            continue
        last: dict[tuple[int, ...], Snapshot] = {}
        for s in ordered:
            last[bucket(s.datetime().astimezone(now.tzinfo))] = s
        for b, s in last.items():
            if b >= oldest:
                reasons[s.id].append(name)


def archive_due(rules: list[dict[str, object]], snaps: list[Snapshot], now: datetime,
                archived: Collection[str] | None = None) -> bool:
    """True if a session starting ``now`` is to be marked an archive.

    A rule (``months``: 1-12, ``days``: days of the month or ``weekdays``:
    mon..sun, ``time``: HH:MM) marks the first session started after each of
    its trigger times; it is due when no archived snapshot exists since the
    most recent trigger at or before ``now``.
    """
    now = now.astimezone()
    arch = _archived(snaps, archived)
    times = [s.datetime() for s in snaps if s.id in arch]
    for rule in rules:
        trigger = _last_trigger(rule, now)
        if trigger is None:
            continue
        if not any(t >= trigger for t in times):
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


def filter_snapshots(snaps: list[Snapshot], hosts: Sequence[str] = (),
                     paths: Sequence[str] = (), tags: Sequence[str] = ()) -> list[Snapshot]:
    """The snapshots matching every given filter, with restic's meanings.

    - ``hosts``: the snapshot's host is one of them;
    - ``paths``: every given path is one of the snapshot's paths (restic's
      ``--path``, repeatable; relative paths are made absolute, trailing ``/`` ignored);
    - ``tags``: each entry is a comma-separated list that the snapshot must have
      all of; entries are alternatives (``--tag a,b --tag c``: a and b, or c).
    """
    return SnapshotFilter.of(hosts, paths, tags).select(snaps)


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
