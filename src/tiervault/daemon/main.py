"""The daemon loop: one per installation, runs due backups, syncs tiers when idle.

- One daemon per installation: it holds the installation lock for its whole
  life, so a second daemon (or a writing command) is refused.
- SIGTERM or SIGINT: clean shutdown; a running backup stops at a safe point
  (between files; no snapshot references anything half-written).
- SIGHUP, or any change of ``config.toml``: the whole configuration is re-read
  (see ``daemon.reload``); what needs a restart is named in the log.
- Write commands typed while the daemon runs are handed over to it
  (``cli/handoff.py``): each is a job in the queue; when its turn comes the
  daemon lends it the installation lock, the command runs in its own terminal
  exactly as it would directly, and the daemon takes the lock back when it
  reports its end (or its process is gone).
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
from tiervault.daemon.lease import History, Lease, lease_status, pid_alive
from tiervault.daemon.notify import Notifier
from tiervault.daemon.reload import ConfigWatcher
from tiervault.daemon.runner import IdleRound, JobProgress, JobRunner
from tiervault.daemon.schedule import local_zone
from tiervault.daemon.scheduler import MANUAL, CancelToken, Job, Scheduler
from tiervault.daemon.server import ApiError, ControlServer, running_daemon
from tiervault.daemon.sets import BackupSet, DaemonSettings, load_daemon_settings, load_sets
from tiervault.errors import (
    LockedError,
    SecondInstallationError,
    TierVaultError,
    WrongKeyError,
)
from tiervault.service.installation import Installation
from tiervault.service.session import VaultSession

log = logging.getLogger("tiervault.daemon")

#: The session kinds of the daemon's history (backups, syncs, handed-over commands).
HISTORY_KINDS = ("job", "sync", "command")


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
    lend: Callable[[], None] = lambda: None  # releases the installation lock
    reclaim: Callable[[], bool] = lambda: True  # takes it back (False: not yet free)
    alive: Callable[[int], bool] = pid_alive
    history: History | None = None
    queue: deque[Job] = field(default_factory=deque)
    running: _Running | None = None
    lease: Lease | None = None
    ended_leases: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopping: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._idle_handle: Spawned | None = None
        self._aborting_idle = False
        self.started = self.clock.now()
        self.next_idle = self.started

    # -- requests (from the control API's threads) ------------------------------------------

    def request_run(self, set_name: str, no_scripts: bool = False) -> dict[str, Any]:
        """Queue a manual backup of a set (with its scripts unless ``no_scripts``)."""
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
            job = Job(set_name, MANUAL, self.clock.now(), no_scripts=no_scripts)
            self.queue.append(job)
            self._wake.set()
            log.info("manual backup of set %s requested (%s)", set_name, job.request_id)
            return {"queued": True, "set": set_name, "request_id": job.request_id}

    # -- commands handed over by the CLI -------------------------------------------------

    def request_handoff(self, command: str, pid: int) -> dict[str, Any]:
        """Queue a write command of the CLI; it runs when the daemon lends it the lock."""
        with self._lock:
            if self.stopping:
                raise ApiError(409, "the daemon is shutting down")
            job = Job("", "command", self.clock.now(), command=command, pid=pid)
            self.queue.append(job)
            self._wake.set()
            log.info("%s handed over; it waits its turn (%d ahead)", job.what,
                     len(self.queue) - 1 + (self.running is not None or self.lease is not None))
            return {"request_id": job.request_id, **self.handoff_state(job.request_id)}

    def handoff_state(self, request_id: str) -> dict[str, Any]:
        """Where a handed-over command is: queued (behind what), granted, or ended."""
        with self._lock:
            if self.lease is not None and self.lease.job.request_id == request_id:
                return {"state": "granted", "session_id": self.lease.session_id}
            for i, j in enumerate(self.queue):
                if j.request_id == request_id:
                    busy = self.running.job if self.running is not None else \
                        self.lease.job if self.lease is not None else None
                    return {"state": "queued", "position": i + 1,
                            "ahead": [x.what for x in list(self.queue)[:i]],
                            "running": None if busy is None else busy.what}
            if request_id in self.ended_leases:
                return dict(self.ended_leases[request_id], state="ended")
            raise ApiError(404, f"no handed-over command {request_id}")

    def handoff_done(self, request_id: str, exit_code: int | None,
                     cancelled: bool = False) -> dict[str, Any]:
        """The command ended (or was interrupted while it waited): the lock comes back."""
        with self._lock:
            lease = self.lease
            if lease is not None and lease.job.request_id == request_id:
                lease.done, lease.exit_code = True, exit_code
                lease.note = "interrupted" if cancelled else None
            else:
                for j in list(self.queue):
                    if j.request_id == request_id:
                        self.queue.remove(j)
                        log.info("%s left the queue (%s)", j.what,
                                 "interrupted" if cancelled else "ended")
            self._wake.set()
            return {"ok": True}

    def _start_lease(self, job: Job, now: datetime) -> None:
        sid = None if self.history is None else self.history.start_session(
            "command", {"command": job.command, "pid": job.pid, "request_id": job.request_id,
                        "set": None, "trigger": "command"})
        self.lend()
        self.lease = Lease(job, now, sid)
        log.info("%s runs now (session %s; the installation lock is lent to it)", job.what,
                 sid)

    def _watch_lease(self, now: datetime) -> bool:
        """Handle the lent lock; True while it is out (nothing else may start)."""
        lease = self.lease
        if lease is None:
            return False
        if not lease.done and lease.job.pid is not None and not self.alive(lease.job.pid):
            lease.done, lease.note = True, "its process ended without reporting"
        if not lease.done or not self.reclaim():
            return True
        self.lease = None
        status = lease_status(lease.exit_code, lease.note == "interrupted")
        details = {"command": lease.job.command, "pid": lease.job.pid,
                   "request_id": lease.job.request_id, "set": None, "trigger": "command",
                   "exit_code": lease.exit_code, "error": lease.note,
                   "started": lease.started.isoformat(), "ended": now.isoformat(),
                   "duration_s": round((now - lease.started).total_seconds(), 3)}
        if self.history is not None and lease.session_id is not None:
            self.history.end_session(lease.session_id, status, details)
        self.ended_leases[lease.job.request_id] = {"status": status,
                                                   "exit_code": lease.exit_code}
        while len(self.ended_leases) > 100:
            self.ended_leases.pop(next(iter(self.ended_leases)))
        log.info("%s ended: %s (exit %s%s); the lock is back", lease.job.what, status,
                 lease.exit_code, f", {lease.note}" if lease.note else "")
        self.next_idle = now  # synchronize right after a write
        return False

    def _drop_dead_waiters(self) -> None:
        for j in list(self.queue):
            if j.pid is not None and not self.alive(j.pid):
                self.queue.remove(j)
                log.info("%s left the queue (its process is gone)", j.what)

    def cancel(self, drop_queue: bool = False) -> dict[str, Any]:
        """Stop the running job at a safe point (and drop queued ones)."""
        with self._lock:
            out: dict[str, Any] = {"cancelled": None, "dropped": []}
            if self.running is not None:
                self.running.token.cancel("cancelled by the user")
                out["cancelled"] = self.running.job.to_json()
            elif self.lease is not None and self.lease.job.pid is not None:
                # A handed-over command stops as on Ctrl-C in its own terminal.
                try:
                    os.kill(self.lease.job.pid, signal.SIGINT)
                except OSError:
                    pass
                out["cancelled"] = self.lease.job.to_json()
            if drop_queue:
                out["dropped"] = [j.to_json() for j in self.queue]
                self.queue.clear()
            self._wake.set()
            return out

    def request_sync(self) -> None:
        """Probe and synchronize the tiers as soon as nothing else runs (console)."""
        with self._lock:
            self.next_idle = self.clock.now()
            self._wake.set()

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
            if self.lease is not None:
                lj = self.lease.job
                running = dict(lj.to_json(), started=self.lease.started.isoformat(),
                               deadline=None, cancelling=None)
            idle_alive = self._idle_handle is not None and self._idle_handle.is_alive()
            state = "stopping" if self.stopping else "command" if self.lease else \
                "backup" if running else "idle-round" if idle_alive else "idle"
            return {
                "pid": os.getpid(), "state": state, "started": self.started.isoformat(),
                "now": now.isoformat(), "timezone": str(self.scheduler.tz),
                "running": running, "queue": [j.to_json() for j in self.queue],
                "sets": sorted(self.sets), "schedules": self.scheduler.entries_json(),
                "idle": {"running": idle_alive, "next_round": self.next_idle.isoformat(),
                         "probe_interval": self.probe_interval,
                         "last": getattr(self.idle, "last", None)},
                "tiers": getattr(self.idle, "tiers", []),
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
            if not self.stopping:
                for job in self.scheduler.due(now):
                    self._enqueue(job)
            self._drop_dead_waiters()
            if self._watch_lease(now):
                return
            r = self.running
            if r is not None:
                r.token.cancelled()  # notices a passed deadline
                if r.handle is not None and not r.handle.is_alive():
                    self.running = None
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
                job = self.queue.popleft()
                if job.command is not None:
                    self._start_lease(job, now)
                else:
                    self._start_job(job, now)
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


# -- running the real daemon ------------------------------------------------------------------


def setup_logging(level: str = "INFO") -> None:
    """Log lines with a timestamp on stderr (journald and launchd collect them)."""
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(h)
    log.setLevel(level.upper())
    log.propagate = False


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
    other = running_daemon(inst.home)
    if other is not None:
        # It may have lent the lock to a command for a moment: the lock alone does not say.
        raise TierVaultError(f"a daemon (pid {other.get('pid')}) is already running for this "
                             "installation")
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
            return inst.db.sessions(limit, kinds=HISTORY_KINDS)

        idle = IdleRound(inst, notifier, settings.notify.tier_offline_hours, passphrase)
        from tiervault.daemon.agent.wiring import start_agent
        agents: list[Any] = []
        wait_from_config = inst.opts.wait_timeout == settings.wait_timeout and \
            inst.config.settings.wait_timeout is None

        def apply(new: DaemonSettings) -> None:
            # Command-line options keep winning over the file.
            if opts.probe_interval is None:
                daemon.probe_interval = new.probe_interval
            if wait_from_config:
                inst.opts.wait_timeout = new.wait_timeout
            assert notifier is not None
            notifier.settings = new.notify
            idle.offline_hours = new.notify.tier_offline_hours
            if not agents:   # enrolled while running: the agent starts now
                agents.extend(a for a in [start_agent(inst, daemon, passphrase)] if a)
            for agent in agents:   # enrolled again: the new console hears from it now
                if agent.reenrolled():
                    agent.wake()

        def reclaim() -> bool:
            try:
                inst.lock()
                return True
            except LockedError:
                return False

        watcher = ConfigWatcher(inst, apply)
        daemon = Daemon(clock, scheduler, sets, JobRunner(inst, passphrase, notifier), idle,
                        probe_interval=probe, tick_interval=opts.tick, reload=watcher,
                        history_fn=history, lend=inst.unlock, reclaim=reclaim,
                        history=inst.db)
        server = ControlServer(inst.home, daemon, opts.port)
        server.start()
        agents.extend(a for a in [start_agent(inst, daemon, passphrase)] if a)

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
        for agent in agents:
            agent.stop()
        log.info("daemon stopped")
        return 0
    finally:
        if server is not None:
            server.close()
        if notifier is not None:
            notifier.wait(5)
        inst.close()


__all__ = ["HISTORY_KINDS", "ConfigWatcher", "Daemon", "DaemonOptions", "inline_spawn",
           "run_daemon", "thread_spawn"]
