"""Which backups are due: schedules, missed runs, allowed windows, cancellation.

Pure logic over instants handed in by the caller (no threads, no real time),
so days of schedules are checked in milliseconds.

- Each schedule's next run is kept in the state database. When the daemon
  starts and finds that a stored next run has passed (the machine was off or
  the daemon stopped), the schedule runs once at start (``missed = "run-once"``)
  however many runs were missed; ``missed = "skip"`` waits for the next one.
- Runs that fall due while another job runs, or several times while the
  machine slept, collapse into one pending run.
- A run due outside its schedule's window waits until the window opens; once
  started, it is stopped at a safe point when the window closes (its
  ``deadline``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Protocol

from tiervault.daemon.sets import BackupSet, Schedule

MISSED = "missed"
SCHEDULED = "schedule"
MANUAL = "manual"


class Store(Protocol):
    """Small persistent values (the state database's kv table)."""

    def get(self, key: str) -> str | None:
        """A stored value or None."""

    def put(self, key: str, value: str | None) -> None:
        """Store (None deletes)."""


class MemoryStore:
    """A Store in a dict (tests)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put(self, key: str, value: str | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value


def new_request_id() -> str:
    """An id the caller of ``run`` can follow its job by."""
    return secrets.token_hex(6)


@dataclass
class Job:
    """One backup to run."""

    set_name: str
    trigger: str  # schedule, missed or manual
    due: datetime  # when it was scheduled (or requested)
    schedule_index: int | None = None  # 1-based, None for a manual run
    schedule: Schedule | None = None
    request_id: str = field(default_factory=new_request_id)
    no_scripts: bool = False  # ``run --no-scripts``: the set's scripts are skipped on purpose
    command: str | None = None  # a command handed over by the CLI (``set_name`` is "")
    pid: int | None = None  # the process of that command

    @property
    def what(self) -> str:
        """What the job does, for logs and ``status``."""
        if self.command is not None:
            return f"'tiervault {self.command}' (pid {self.pid})"
        return f"backup of set {self.set_name}"

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {"set": self.set_name, "trigger": self.trigger, "due": self.due.isoformat(),
                "schedule_index": self.schedule_index, "request_id": self.request_id,
                "no_scripts": self.no_scripts, "command": self.command, "pid": self.pid,
                "what": self.what,
                "window": None if self.schedule is None or self.schedule.window is None
                else str(self.schedule.window)}


class CancelToken:
    """Asks a running job to stop at its next safe point.

    Set explicitly (``cancel``, SIGTERM) or by the clock passing ``deadline``
    (the end of the allowed window).
    """

    def __init__(self, now: Callable[[], datetime], deadline: datetime | None = None) -> None:
        self._now = now
        self.deadline = deadline
        self.reason: str | None = None
        self._event = threading.Event()

    def cancel(self, reason: str) -> None:
        """Stop the job (the first reason given is kept)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def cancelled(self) -> bool:
        """True once cancelled or past the deadline."""
        if not self._event.is_set() and self.deadline is not None \
                and self._now() >= self.deadline:
            self.cancel("the allowed time window closed")
        return self._event.is_set()


@dataclass
class _Entry:
    set_name: str
    index: int
    schedule: Schedule
    next_run: datetime | None
    pending: Job | None = None


class Scheduler:
    """Due runs of every set's schedules (see the module docstring)."""

    def __init__(self, tz: tzinfo, store: Store, prefix: str = "daemon.next") -> None:
        self.tz = tz
        self.store = store
        self.prefix = prefix
        self._entries: list[_Entry] = []

    def _key(self, set_name: str, sched: Schedule) -> str:
        return f"{self.prefix}:{set_name}:{sched.key}"

    def _save(self, e: _Entry) -> None:
        self.store.put(self._key(e.set_name, e.schedule),
                       None if e.next_run is None else e.next_run.isoformat())

    def configure(self, sets: dict[str, BackupSet], now: datetime,
                  startup: bool = True) -> list[Job]:
        """Take (new) sets; returns runs missed while the daemon was not running.

        Schedules that were already known keep their next run and pending run;
        ones added while the daemon runs (``startup=False``) start afresh.
        """
        old = {(e.set_name, e.schedule.key): e for e in self._entries}
        entries: list[_Entry] = []
        missed: list[Job] = []
        for bs in sets.values():
            for i, sched in enumerate(bs.schedules, 1):
                prev = old.get((bs.name, sched.key))
                if prev is not None:
                    prev.index, prev.schedule = i, sched
                    entries.append(prev)
                    continue
                e = _Entry(bs.name, i, sched, sched.cron.next_after(now, self.tz))
                stored = self.store.get(self._key(bs.name, sched))
                if startup and stored is not None and sched.missed == "run-once":
                    try:
                        was = datetime.fromisoformat(stored)
                    except ValueError:
                        was = None
                    if was is not None and was <= now and \
                            not any(j.set_name == bs.name for j in missed):
                        e.pending = Job(bs.name, MISSED, was, i, sched)
                        missed.append(e.pending)
                self._save(e)
                entries.append(e)
        self._entries = entries
        return missed

    def due(self, now: datetime) -> list[Job]:
        """Runs to start now (each schedule's passed runs collapse into one)."""
        out: list[Job] = []
        for e in self._entries:
            if e.next_run is not None and e.next_run <= now:
                if e.pending is None:
                    e.pending = Job(e.set_name, SCHEDULED, e.next_run, e.index, e.schedule)
                e.next_run = e.schedule.cron.next_after(now, self.tz)
                self._save(e)
            job = e.pending
            if job is None:
                continue
            w = e.schedule.window
            if w is not None and not w.contains(now, self.tz):
                continue  # waits for the window to open
            e.pending = None
            if not any(j.set_name == job.set_name for j in out):
                out.append(job)
        return out

    def defer(self, job: Job) -> None:
        """Put a scheduled job back (it could not start inside its window)."""
        for e in self._entries:
            if e.set_name == job.set_name and e.schedule is job.schedule and e.pending is None:
                e.pending = job
                return

    def deadline(self, job: Job, start: datetime) -> datetime | None:
        """When a job started at ``start`` must stop (its window closes)."""
        if job.schedule is None or job.schedule.window is None:
            return None
        return job.schedule.window.next_end(start, self.tz)

    def may_start(self, job: Job, now: datetime) -> bool:
        """Whether the job's window (if any) is open."""
        w = None if job.schedule is None else job.schedule.window
        return w is None or w.contains(now, self.tz)

    def next_wakeup(self, now: datetime) -> datetime | None:
        """The next instant at which something may become due."""
        cands: list[datetime] = []
        for e in self._entries:
            if e.next_run is not None:
                cands.append(e.next_run)
            if e.pending is not None and e.schedule.window is not None:
                cands.append(e.schedule.window.next_start(now, self.tz))
        return min(cands) if cands else None

    def entries_json(self) -> list[dict[str, Any]]:
        """Every schedule with its next run (for ``status``)."""
        return [{"set": e.set_name, "index": e.index, "spec": e.schedule.spec,
                 "window": None if e.schedule.window is None else str(e.schedule.window),
                 "next_run": None if e.next_run is None
                 else e.next_run.astimezone(self.tz).isoformat(),
                 "pending": None if e.pending is None else e.pending.to_json()}
                for e in self._entries]
