"""Bandwidth throttling as a wrapper backend (token buckets per direction).

Limits can depend on the time of day and the weekday (e.g. 512 KB/s upload on
weekdays 08:00-18:00, 5 MB/s otherwise, unlimited at weekends) and can be
changed while transfers run (``set_schedule``). Backup, restore and sync all
go through the backend stack, so all of them obey it.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime

from tiervault.errors import Interrupted, NotFoundError, UsageError
from tiervault.state.units import DAYS as _DAYS
from tiervault.state.units import parse_days, parse_rate
from tiervault.storage.base import Backend, FileInfo, FileType, Handle

__all__ = ["Limits", "ThrottleSchedule", "ThrottledBackend", "TokenBucket", "Window",
           "parse_days", "parse_rate"]


@dataclass(frozen=True)
class Limits:
    """Bytes per second per direction (None = unlimited)."""

    upload: float | None = None
    download: float | None = None


@dataclass(frozen=True)
class Window:
    """Limits that apply on some weekdays between two times of day."""

    days: frozenset[int]
    start: dtime
    end: dtime
    limits: Limits

    def active(self, now: datetime) -> bool:
        """True if ``now`` falls in this window (windows may cross midnight)."""
        t = now.time()
        if self.start <= self.end:
            return now.weekday() in self.days and self.start <= t < self.end
        # Crossing midnight: the part after midnight belongs to the previous day.
        yday = (now.weekday() - 1) % 7
        return (now.weekday() in self.days and t >= self.start) or \
            (yday in self.days and t < self.end)


@dataclass(frozen=True)
class ThrottleSchedule:
    """Default limits, time windows that override them, and days without limits."""

    default: Limits = Limits()
    windows: tuple[Window, ...] = ()
    free_days: frozenset[int] = field(default_factory=frozenset)

    def limits_at(self, now: datetime) -> Limits:
        """The limits in force at ``now`` (local time)."""
        if now.weekday() in self.free_days:
            return Limits()
        for w in self.windows:
            if w.active(now):
                return w.limits
        return self.default

    @classmethod
    def from_config(cls, doc: dict[str, object]) -> ThrottleSchedule:
        """Parse one ``[[throttle]]`` table of config.toml."""
        def limits(d: dict[str, object]) -> Limits:
            return Limits(parse_rate(d.get("upload")), parse_rate(d.get("download")))  # type: ignore[arg-type]

        windows = []
        for w in doc.get("window", []) or []:  # type: ignore[attr-defined]
            try:
                start = dtime.fromisoformat(str(w["start"]))
                end = dtime.fromisoformat(str(w["end"]))
            except (KeyError, ValueError):
                raise UsageError("throttle window needs start and end as HH:MM") from None
            windows.append(Window(parse_days(w.get("days", list(_DAYS))), start, end, limits(w)))
        return cls(limits(doc), tuple(windows),
                   parse_days(doc.get("free_days", []) or []))  # type: ignore[arg-type]


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that ends (raising Interrupted) as soon as ``stop`` is set, so that
    a throttled transfer never holds up an interrupted command."""
    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted("interrupted while a transfer waited for its bandwidth limit")

    return sleep


class TokenBucket:
    """A thread-safe token bucket; callers go into debt and sleep it off."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()

    def take(self, n: int, rate: float | None) -> None:
        """Account for ``n`` bytes at ``rate`` bytes/s, sleeping as needed."""
        if rate is None or n <= 0:
            return
        burst = min(rate * 0.05, 256 * 1024)
        with self._lock:
            now = self.clock()
            self._tokens = min(burst, self._tokens + (now - self._last) * rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)


class ThrottledBackend(Backend):
    """Limits upload (save) and download (load) bandwidth of ``inner``."""

    def __init__(self, inner: Backend, schedule: ThrottleSchedule,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 now: Callable[[], datetime] = datetime.now) -> None:
        self.inner = inner
        self.location = inner.location
        self.schedule = schedule
        self.now = now
        self.up = TokenBucket(clock, sleep)
        self.down = TokenBucket(clock, sleep)
        self.clock = clock
        self.bytes_up = 0
        self.bytes_down = 0
        self.first: float | None = None  # when the first transfer started
        self.last: float | None = None  # when the last transfer ended

    def set_schedule(self, schedule: ThrottleSchedule) -> None:
        """Change the limits; transfers in progress pick them up at their next call."""
        self.schedule = schedule

    def create(self) -> None:
        self.inner.create()

    def _mark(self, start: bool) -> None:
        t = self.clock()
        if start and self.first is None:
            self.first = t
        if not start:
            self.last = t

    def save(self, h: Handle, data: bytes) -> None:
        self._mark(True)
        rate = self.schedule.limits_at(self.now()).upload
        if rate is not None and len(data) > rate:
            # Over a second of waiting ahead: a server that died meanwhile must fail
            # this attempt now, not after the wait (each retry would wait again).
            try:
                self.inner.stat(Handle(FileType.REVISION))
            except NotFoundError:
                pass
        self.up.take(len(data), rate)
        self.inner.save(h, data)
        self.bytes_up += len(data)
        self._mark(False)

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        self._mark(True)
        data = self.inner.load(h, offset, length, max_size)
        self.bytes_down += len(data)
        self.down.take(len(data), self.schedule.limits_at(self.now()).download)
        self._mark(False)
        return data

    def stat(self, h: Handle) -> FileInfo:
        return self.inner.stat(h)

    def list(self, t: FileType) -> Iterator[FileInfo]:
        return self.inner.list(t)

    def remove(self, h: Handle) -> None:
        self.inner.remove(h)

    def remove_temporaries(self) -> builtins.list[str]:
        return self.inner.remove_temporaries()

    def probe(self) -> None:
        self.inner.probe()

    def close(self) -> None:
        self.inner.close()
