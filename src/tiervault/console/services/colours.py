"""Colours and the offline badge, computed at read time from timestamps (never stored).

blue: running now (online and a job runs); none: never a session and never a success;
red: the last backup session failed; else by the age of the last success: under
green_hours green, under orange_hours orange, else red. ``online`` is a separate
boolean: no check-in for OFFLINE_INTERVALS x interval means offline.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

COLOURS = ("green", "orange", "red", "blue", "none")
OFFLINE_INTERVALS = 5
BAR_DAYS = 28
#: Worst first: the bar's cell shows the worst status of its day.
STATUS_RANK = {"failed": 4, "cancelled": 3, "warnings": 2, "success": 1, "running": 0}


def online(now: datetime, last_seen: datetime | None, interval: int) -> bool:
    """True when the device checked in within OFFLINE_INTERVALS intervals."""
    if last_seen is None:
        return False
    return now - last_seen < timedelta(seconds=OFFLINE_INTERVALS * max(interval, 1))


def colour(now: datetime, *, is_online: bool, running: Any, last_status: str | None,
           last_session_at: datetime | None, last_success: datetime | None,
           green_hours: int = 24, orange_hours: int = 48) -> str:
    """The device's colour (one of COLOURS)."""
    if is_online and running:
        return "blue"
    if last_success is None and last_session_at is None:
        return "none"
    if last_status == "failed" or last_success is None:
        return "red"
    age = now - last_success
    if age < timedelta(hours=green_hours):
        return "green"
    if age < timedelta(hours=orange_hours):
        return "orange"
    return "red"


def day_bar(now: datetime, sessions: Iterable[tuple[datetime, str]],
            days: int = BAR_DAYS) -> list[dict[str, Any]]:
    """One cell per day (oldest first, today last): the worst session status of that day.

    ``sessions`` are (started, status) pairs; a day without sessions has status None.
    """
    today = now.date()
    first = today - timedelta(days=days - 1)
    worst: dict[date, str] = {}
    for started, status in sessions:
        d = started.date()
        if d < first or d > today:
            continue
        old = worst.get(d)
        if old is None or STATUS_RANK.get(status, 0) > STATUS_RANK.get(old, 0):
            worst[d] = status
    return [{"day": (first + timedelta(days=i)).isoformat(),
             "status": worst.get(first + timedelta(days=i))} for i in range(days)]
