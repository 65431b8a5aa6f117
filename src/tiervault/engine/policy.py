"""Retention policies: which snapshots ``forget`` keeps (restic's semantics).

Snapshots are grouped by host and paths; in each group, newest first, a
snapshot is kept if it is among the last N, or the newest of a not-yet-seen
hour/day/week/month/year bucket while that bucket count lasts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
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
