"""Time for the daemon, injectable so tests run days of schedules in milliseconds."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the daemon needs of time."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        """Wait ``seconds`` (or until ``wake`` is set)."""


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if wake is None:
            time.sleep(max(0.0, seconds))
        else:
            wake.wait(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to; sleeping advances it at once."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (forwards or backwards: a clock change)."""
        self._now = when.astimezone(UTC)

    def advance(self, seconds: float) -> None:
        """Move forward."""
        self._now += timedelta(seconds=seconds)

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        self.sleeps.append(seconds)
        self._now += timedelta(seconds=max(0.0, seconds))
