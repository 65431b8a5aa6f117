"""The daemon loop: one per installation, runs due backups, syncs tiers when idle.

- One daemon per installation: it holds the installation lock for its whole
  life, so a second daemon (or a writing command) is refused.
- SIGTERM or SIGINT: clean shutdown; a running backup stops at a safe point
  (between files; no snapshot references anything half-written).
- SIGHUP, or any change of ``config.toml``: sets and schedules are re-read.
- Jobs run one at a time, in a worker thread. Whenever no job runs or waits,
  an idle round probes the tiers (every ``probe_interval`` seconds, and right
  after each job) and synchronizes stale ones (SPEC §5). A job that becomes
  due aborts the round first; the sync resumes in a later round.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from types import FrameType
from typing import Any, Protocol

from tiervault.daemon.clock import Clock, SystemClock
from tiervault.daemon.notify import Notifier
from tiervault.daemon.runner import IdleRound, JobProgress, JobRunner
from tiervault.daemon.schedule import local_zone
from tiervault.daemon.scheduler import MANUAL, CancelToken, Job, Scheduler
from tiervault.daemon.server import ApiError, ControlServer
from tiervault.daemon.sets import BackupSet, load_daemon_settings, load_sets
from tiervault.errors import (
    LockedError,
    SecondInstallationError,
    TierVaultError,
    WrongKeyError,
)
from tiervault.service.installation import Installation
from tiervault.service.session import VaultSession
from tiervault.state.config import CONFIG_NAME, load_config

log = logging.getLogger("tiervault.daemon")


class Spawned(Protocol):
    """A started piece of work (a thread)."""

    def is_alive(self) -> bool:
        """Still running?"""

    def join(self, timeout: float | None = None) -> None:
        """Wait for it."""


Spawn = Callable[[Callable[[], None], str], Spawned]


def thread_spawn(fn: Callable[[], None], name: str) -> Spawned:
    """Run ``fn`` in a daemon thread."""
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    return t


class _Done:
    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None


def inline_spawn(fn: Callable[[], None], name: str) -> Spawned:
    """Run ``fn`` at once in the caller's thread (tests with a fake clock)."""
    fn()
    return _Done()


class Runner(Protocol):
    """Runs one job to its end."""

    def run(self, job: Job, bs: BackupSet, token: CancelToken) -> dict[str, Any]:
        """Returns the session details."""


class Idle(Protocol):
    """One idle round (probe + sync), abortable."""

    def run(self) -> dict[str, Any]:
        """Do the round."""

    def abort(self) -> None:
        """Stop it soon."""


@dataclass
class _Running:
    job: Job
    token: CancelToken
    started: datetime
    handle: Spawned | None = None
    result: dict[str, Any] | None = None


@dataclass
class Daemon:
    """The loop's state and decisions; threads and time are injected."""

    clock: Clock
    scheduler: Scheduler
    sets: dict[str, BackupSet]
    runner: Runner
    idle: Idle
    probe_interval: float = 60.0
    tick_interval: float = 1.0
    spawn: Spawn = thread_spawn
    reload: Callable[[], dict[str, BackupSet] | None] = lambda: None
    history_fn: Callable[[int], list[dict[str, Any]]] = lambda n: []
    queue: deque[Job] = field(default_factory=deque)
    running: _Running | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    stopping: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._idle_handle: Spawned | None = None
        self._aborting_idle = False
        self.started = self.clock.now()
        self.next_idle = self.started

    # -- requests (from the control API's threads) ------------------------------------------

    def request_run(self, set_name: str) -> dict[str, Any]:
        """Queue a manual backup of a set."""
        with self._lock:
            if set_name not in self.sets:
                raise ApiError(404, f"no set named {set_name!r} (sets: "
                                    f"{', '.join(sorted(self.sets)) or 'none'})")
            if self.stopping:
                raise ApiError(409, "the daemon is shutting down")
            for j in [*self.queue, *([self.running.job] if self.running else [])]:
                if j.set_name == set_name:
                    where = "running" if self.running and j is self.running.job else "queued"
                    return {"queued": False, "set": set_name, "request_id": j.request_id,
                            "message": f"a backup of set {set_name} is already {where}"}
            job = Job(set_name, MANUAL, self.clock.now())
            self.queue.append(job)
            self._wake.set()
            log.info("manual backup of set %s requested (%s)", set_name, job.request_id)
            return {"queued": True, "set": set_name, "request_id": job.request_id}

    def cancel(self, drop_queue: bool = False) -> dict[str, Any]:
        """Stop the running job at a safe point (and drop queued ones)."""
        with self._lock:
            out: dict[str, Any] = {"cancelled": None, "dropped": []}
            if self.running is not None:
                self.running.token.cancel("cancelled by the user")
                out["cancelled"] = self.running.job.to_json()
            if drop_queue:
                out["dropped"] = [j.to_json() for j in self.queue]
                self.queue.clear()
            self._wake.set()
            return out

    def stop(self, reason: str = "the daemon is shutting down") -> None:
        """Begin a clean shutdown."""
        with self._lock:
            if not self.stopping:
                log.info("shutting down: %s", reason)
            self.stopping = True
            if self.running is not None:
                self.running.token.cancel(reason)
        self.idle.abort()
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """Everything ``tiervault status`` shows."""
        with self._lock:
            now = self.clock.now()
            running = None
            if self.running is not None:
                r = self.running
                running = dict(r.job.to_json(), started=r.started.isoformat(),
                               deadline=None if r.token.deadline is None
                               else r.token.deadline.isoformat(),
                               cancelling=r.token.reason)
                prog = getattr(self.runner, "progress", None)
                if isinstance(prog, JobProgress):
                    c = prog.counters
                    running["progress"] = {"phase": prog.phase_name, "files_done": c.files_done,
                                           "bytes_done": c.bytes_done,
                                           "files_total": c.files_total,
                                           "bytes_total": c.bytes_total}
            idle_alive = self._idle_handle is not None and self._idle_handle.is_alive()
            state = "stopping" if self.stopping else "backup" if running else \
                "idle-round" if idle_alive else "idle"
            return {
                "pid": os.getpid(), "state": state, "started": self.started.isoformat(),
                "now": now.isoformat(), "timezone": str(self.scheduler.tz),
                "running": running, "queue": [j.to_json() for j in self.queue],
                "sets": sorted(self.sets), "schedules": self.scheduler.entries_json(),
                "idle": {"running": idle_alive, "next_round": self.next_idle.isoformat(),
                         "probe_interval": self.probe_interval,
                         "last": getattr(self.idle, "last", None)},
                "tiers": getattr(self.idle, "tiers", []),
                "recent": self.recent[-10:],
            }

    def sessions(self, limit: int) -> list[dict[str, Any]]:
        """The session history."""
        return self.history_fn(limit)

    # -- the loop -----------------------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        busy = [*self.queue, *([self.running.job] if self.running else [])]
        if any(j.set_name == job.set_name for j in busy):
            log.info("set %s is due (%s) but already queued or running", job.set_name,
                     job.trigger)
            return
        log.info("set %s is due (%s, scheduled %s)", job.set_name, job.trigger,
                 job.due.astimezone(self.scheduler.tz).isoformat())
        self.queue.append(job)

    def tick(self) -> None:
        """Look at the time and the state once; start or stop work."""
        with self._lock:
            now = self.clock.now()
            new_sets = self.reload()
            if new_sets is not None:
                self.sets = new_sets
                self.scheduler.configure(new_sets, now, startup=False)
                log.info("configuration re-read: %d set(s)", len(new_sets))
            if not self.stopping:
                for job in self.scheduler.due(now):
                    self._enqueue(job)
            r = self.running
            if r is not None:
                r.token.cancelled()  # notices a passed deadline
                if r.handle is not None and not r.handle.is_alive():
                    self.running = None
                    self.recent = [*self.recent, _brief(r.result or {})][-20:]
                    self.next_idle = now  # synchronize right after a job
            idle_alive = self._idle_handle is not None and self._idle_handle.is_alive()
            if self.running is not None or self.stopping:
                return
            if self.queue:
                if idle_alive:
                    # A write aborts synchronization; re-asked every tick until it stopped.
                    if not self._aborting_idle:
                        log.info("a job is due: aborting the idle round")
                    self._aborting_idle = True
                    self.idle.abort()
                    return
                self._aborting_idle = False
                self._start_job(self.queue.popleft(), now)
                return
            if not idle_alive and now >= self.next_idle:
                self.next_idle = now + timedelta(seconds=self.probe_interval)
                self._idle_handle = self.spawn(self._idle_round, "idle")

    def _idle_round(self) -> None:
        self.idle.run()

    def _start_job(self, job: Job, now: datetime) -> None:
        bs = self.sets.get(job.set_name)
        if bs is None:
            log.warning("set %s no longer exists; its job is dropped", job.set_name)
            return
        if not self.scheduler.may_start(job, now):
            log.info("set %s: outside its window; waiting for it to open", job.set_name)
            self.scheduler.defer(job)
            return
        token = CancelToken(self.clock.now, self.scheduler.deadline(job, now))
        r = _Running(job, token, now)
        self.running = r

        def work() -> None:
            try:
                r.result = self.runner.run(job, bs, token)
            except Exception as e:  # the runner records its failures; this is a bug
                log.exception("job of set %s crashed", job.set_name)
                r.result = {"set": job.set_name, "status": "failed", "error": repr(e)}
            finally:
                self._wake.set()

        r.handle = self.spawn(work, f"job-{job.set_name}")

    def sleep_time(self) -> float:
        """How long the loop may sleep before the next tick."""
        if self._aborting_idle:
            return 0.05
        now = self.clock.now()
        wake = self.scheduler.next_wakeup(now)
        until = self.tick_interval if wake is None else \
            max(0.0, (wake - now).total_seconds())
        return max(0.0, min(self.tick_interval, until))

    def loop(self) -> None:
        """Tick until stopped; then wait for running work to stop."""
        while not self.stopping:
            self.tick()
            if self.stopping:
                break
            self.clock.sleep(self.sleep_time(), self._wake)
            self._wake.clear()
        self.finish()

    def finish(self, timeout: float = 120.0) -> None:
        """Wait (bounded) for the running job and idle round to stop."""
        end = time.monotonic() + timeout
        r = self.running
        while time.monotonic() < end:
            job_alive = r is not None and r.handle is not None and r.handle.is_alive()
            idle_alive = self._idle_handle is not None and self._idle_handle.is_alive()
            if not job_alive and not idle_alive:
                break
            if idle_alive:
                self.idle.abort()
            if r is not None and r.handle is not None:
                r.handle.join(0.05)
            elif self._idle_handle is not None:
                self._idle_handle.join(0.05)
        else:
            log.warning("work still running after %.0f s; exiting anyway", timeout)


def _brief(res: dict[str, Any]) -> dict[str, Any]:
    keys = ("session_id", "set", "trigger", "request_id", "status", "error", "snapshot_id",
            "started", "ended", "files_selected", "bytes_selected", "bytes_sent",
            "tiers_received", "tiers_missed")
    return {k: res.get(k) for k in keys}


# -- running the real daemon ------------------------------------------------------------------


def setup_logging(level: str = "INFO") -> None:
    """Log lines with a timestamp on stderr (journald and launchd collect them)."""
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
    log.setLevel(level.upper())
    log.propagate = False


class ConfigWatcher:
    """Re-reads the sets when ``config.toml`` changed (or after SIGHUP)."""

    def __init__(self, inst: Installation) -> None:
        self.home = inst.home
        self.path = inst.home / CONFIG_NAME
        self.hup = threading.Event()
        self._last = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def __call__(self) -> dict[str, BackupSet] | None:
        now = self._stamp()
        if now == self._last and not self.hup.is_set():
            return None
        self._last = now
        self.hup.clear()
        try:
            cfg = load_config(self.home)
            return None if cfg is None else load_sets(cfg)
        except TierVaultError as e:
            log.error("configuration not re-read: %s", e)
            return None


def _verify_passphrase(inst: Installation, passphrase: str) -> None:
    saved = inst.opts.wait_timeout
    inst.opts.wait_timeout = 0
    try:
        sess = VaultSession(inst, passphrase, JobProgress(None, []), load_index=False)
        sess.close()
    except (WrongKeyError, SecondInstallationError):
        raise
    except TierVaultError as e:
        log.warning("the vault cannot be opened now (%s); trying again at the first job", e)
    finally:
        inst.opts.wait_timeout = saved


@dataclass
class DaemonOptions:
    """``tiervault daemon`` options."""

    port: int = 0
    tick: float = 1.0
    probe_interval: float | None = None
    log_level: str = "INFO"


def run_daemon(inst: Installation, passphrase: str, opts: DaemonOptions,
               clock: Clock | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    setup_logging(opts.log_level)
    clock = clock or SystemClock()
    try:
        inst.lock()
    except LockedError as e:
        raise TierVaultError(f"a daemon (or another tiervault command) is already running "
                             f"for this installation: {e}") from None
    server: ControlServer | None = None
    notifier: Notifier | None = None
    try:
        settings = load_daemon_settings(inst.config)
        sets = load_sets(inst.config)
        tz: tzinfo = local_zone(settings.timezone)
        if inst.opts.wait_timeout is None and inst.config.settings.wait_timeout is None:
            inst.opts.wait_timeout = settings.wait_timeout
        _verify_passphrase(inst, passphrase)
        notifier = Notifier(settings.notify)
        scheduler = Scheduler(tz, inst.db)
        now = clock.now()
        for job in scheduler.configure(sets, now):
            log.info("set %s missed its run of %s while the daemon was not running: it runs "
                     "once now", job.set_name, job.due.astimezone(tz).isoformat())
        probe = opts.probe_interval if opts.probe_interval is not None \
            else settings.probe_interval

        def history(limit: int) -> list[dict[str, Any]]:
            rows = inst.db.sessions(limit * 4)
            return [r for r in rows if r["kind"] in ("job", "sync")][:limit]

        watcher = ConfigWatcher(inst)
        daemon = Daemon(clock, scheduler, sets, JobRunner(inst, passphrase, notifier),
                        IdleRound(inst, notifier, settings.notify.tier_offline_hours,
                                  passphrase),
                        probe_interval=probe, tick_interval=opts.tick, reload=watcher,
                        history_fn=history)
        server = ControlServer(inst.home, daemon, opts.port)
        server.start()

        def on_term(signum: int, _frame: FrameType | None) -> None:
            daemon.stop(f"received {signal.Signals(signum).name}")

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            watcher.hup.set()
            daemon._wake.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        log.info("daemon started (pid %d, home %s, %d set(s), %s, control API on "
                 "127.0.0.1:%d)", os.getpid(), inst.home, len(sets), tz, server.port)
        for ent in scheduler.entries_json():
            log.info("set %s schedule %d (%s): next run %s", ent["set"], ent["index"],
                     ent["spec"], ent["next_run"])
        daemon.loop()
        log.info("daemon stopped")
        return 0
    finally:
        if server is not None:
            server.close()
        if notifier is not None:
            notifier.wait(5)
        inst.close()


__all__ = ["Daemon", "DaemonOptions", "inline_spawn", "run_daemon", "thread_spawn"]
