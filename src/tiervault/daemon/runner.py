"""Running one backup job, and one idle round, through the service layer.

A job: pre-script, backup, retention (forget + prune), post-script; its
history (start, end, status, files and bytes, errors, the tiers that received
it, the scripts' output) is a ``job`` row of the state database's sessions.

An idle round: connect every tier (a probe of the offline ones, and the
second-installation check), then synchronize stale tiers (SPEC §5); it can be
aborted at any moment (the next file) and resumes later copying only what is
still missing. Rounds that synchronized something are ``sync`` sessions.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from datetime import datetime
from typing import Any

from tiervault.daemon.notify import (
    SECOND_INSTALLATION,
    SESSION_FAILED,
    TIER_OFFLINE,
    TIER_REFUSED,
    Notifier,
)
from tiervault.daemon.retention import apply_retention
from tiervault.daemon.scheduler import CancelToken, Job
from tiervault.daemon.scripts import ScriptResult, run_script
from tiervault.daemon.sets import BackupSet, Scripts
from tiervault.engine import policy as policy_mod
from tiervault.engine.progress import Progress
from tiervault.errors import SecondInstallationError, TierVaultError
from tiervault.service import ops
from tiervault.service.installation import Installation
from tiervault.service.session import VaultSession, build_tierset
from tiervault.service.tierops import pack_references, run_sync
from tiervault.service.trust import removed_files
from tiervault.state.db import iso_time
from tiervault.tiers.tier import OFFLINE, ONLINE, refusal_hint
from tiervault.tiers.tierset import TierSet
from tiervault.vault.repository import Repository

log = logging.getLogger("tiervault.daemon")

MAX_LOG_LINES = 2000
SUCCESS, WARNINGS, FAILED, CANCELLED = "success", "warnings", "failed", "cancelled"

__all__ = ["CANCELLED", "FAILED", "SUCCESS", "WARNINGS", "IdleRound", "JobCancelled",
           "JobProgress", "JobRunner", "apply_retention"]


class JobCancelled(TierVaultError):
    """The job was asked to stop (cancel, window closed, shutdown)."""


class JobProgress(Progress):
    """Counts work, keeps a log, and is where a running backup stops when cancelled.

    The engine reports every finished file here, so raising from ``add`` stops
    the backup between files: the snapshot is never written, and data already
    uploaded is only referenced by nothing (prune removes it).
    """

    def __init__(self, token: CancelToken | None, lines: list[str]) -> None:
        super().__init__()
        self.token = token
        self.lines = lines
        self.phase_name = ""

    def _check(self) -> None:
        if self.token is not None and self.token.cancelled():
            raise JobCancelled(f"stopped at a safe point: {self.token.reason}")

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        super().add(files, nbytes)
        self._check()

    def on_phase(self, name: str) -> None:
        self.phase_name = name
        self._check()

    def on_warning(self, path: str, message: str) -> None:
        _append(self.lines, f"warning: {path}: {message}")

    def on_info(self, message: str) -> None:
        _append(self.lines, message)
        log.info("%s", message)


def _append(lines: list[str], line: str) -> None:
    if len(lines) < MAX_LOG_LINES:
        lines.append(line)
    elif len(lines) == MAX_LOG_LINES:
        lines.append("[... log cut ...]")


def _script_log(lines: list[str], phase: str, res: ScriptResult) -> dict[str, Any]:
    _append(lines, f"{phase}-script: {res.describe()}")
    for ln in res.output.splitlines():
        _append(lines, f"{phase}-script| {ln}")
    return {"command": res.command, "exit_code": res.exit_code, "timed_out": res.timed_out,
            "duration": round(res.duration, 3), "error": res.error}


class JobRunner:
    """Runs backup jobs for the daemon (one at a time)."""

    def __init__(self, inst: Installation, passphrase: str, notifier: Notifier) -> None:
        self.inst = inst
        self.passphrase = passphrase
        self.notifier = notifier
        self.progress: JobProgress | None = None  # of the running job (for status)

    def run(self, job: Job, bs: BackupSet, token: CancelToken) -> dict[str, Any]:
        """Run the job to its end; returns the session row's details (never raises)."""
        db = self.inst.db
        sid = db.start_session("job", {"set": bs.name, "trigger": job.trigger,
                                       "request_id": job.request_id})
        lines: list[str] = []
        started = time.time()
        details: dict[str, Any] = {
            "set": bs.name, "trigger": job.trigger, "request_id": job.request_id,
            "schedule_index": job.schedule_index, "due": job.due.isoformat(),
            "deadline": None if token.deadline is None else token.deadline.isoformat(),
            "paths": bs.paths, "log": lines, "scripts": {}}
        status, error = FAILED, None
        scripts, origin = bs.scripts_for(job.schedule)
        if job.no_scripts and scripts:
            _append(lines, "the set's scripts are skipped (run --no-scripts)")
            scripts = Scripts()
        elif scripts:
            details["scripts_from"] = origin
        env = {"TIERVAULT_SESSION_ID": str(sid), "TIERVAULT_SET": bs.name,
               "TIERVAULT_PHASE": "pre"}
        log.info("job %d: backup of set %s starts (%s)", sid, bs.name, job.trigger)
        try:
            if scripts.pre_script:
                res = run_script(scripts.pre_script, scripts.script_timeout, env,
                                 should_stop=token.cancelled)
                details["scripts"]["pre"] = _script_log(lines, "pre", res)
                log.info("job %d: pre-script: %s", sid, res.describe())
                if token.cancelled():
                    raise JobCancelled(f"stopped during the pre-script: {token.reason}")
                if not res.ok:
                    if scripts.on_pre_failure == "abort":
                        raise TierVaultError(f"pre-script failed: {res.describe()}; "
                                             "the backup was not started")
                    _append(lines, "pre-script failed; the backup goes on (on_pre_failure = "
                                   "continue)")
            if token.cancelled():
                raise JobCancelled(f"not started: {token.reason}")
            status = self._backup(job, bs, token, lines, details)
        except JobCancelled as e:
            status, error = CANCELLED, str(e)
        except SecondInstallationError as e:
            status, error = FAILED, str(e)
            self.notifier.notify(SECOND_INSTALLATION, str(e), set=bs.name, session_id=sid)
        except TierVaultError as e:
            status, error = FAILED, str(e)
        except Exception as e:  # a bug must not kill the daemon; it is in the log
            status, error = FAILED, f"internal error: {e!r}"
            log.error("job %d: %s", sid, traceback.format_exc())
        finally:
            self.progress = None
        if error:
            _append(lines, f"error: {error}")
        if scripts.post_script:
            env.update(TIERVAULT_PHASE="post", TIERVAULT_RESULT=status,
                       TIERVAULT_SNAPSHOT_ID=str(details.get("snapshot_id") or ""))
            res = run_script(scripts.post_script, scripts.script_timeout, env)
            details["scripts"]["post"] = _script_log(lines, "post", res)
            log.info("job %d: post-script: %s", sid, res.describe())
        ended = time.time()
        details.update(status=status, error=error, started=iso_time(started),
                       ended=iso_time(ended), duration_s=round(ended - started, 3))
        db.end_session(sid, status, details)
        log.info("job %d: set %s ended: %s%s", sid, bs.name, status,
                 f" ({error})" if error else "")
        if status == FAILED:
            self.notifier.notify(SESSION_FAILED, f"backup of set {bs.name} failed: {error}",
                                 set=bs.name, session_id=sid)
        return dict(details, session_id=sid)

    def _backup(self, job: Job, bs: BackupSet, token: CancelToken, lines: list[str],
                details: dict[str, Any]) -> str:
        progress = JobProgress(token, lines)
        self.progress = progress
        sess = VaultSession(self.inst, self.passphrase, progress)
        try:
            tags = list(bs.tags)
            archive = bool(bs.archive) and _archive_due(sess, bs)
            if archive:
                _append(lines, "this session is marked as an archive")
            opts = bs.backup_options(self.inst.workers(), tags, archive)
            try:
                snap, summary = ops.backup(sess, opts)
            finally:
                details["tiers"] = tier_delivery(sess.tiers)
                sess.end_writes()
            details.update(
                snapshot_id=snap.id, short_id=snap.id[:8], complete=snap.complete,
                files_selected=summary["total_files_processed"],
                bytes_selected=summary["total_bytes_processed"],
                files_processed=summary["files_new"] + summary["files_changed"],
                bytes_processed=summary["bytes_read"], bytes_added=summary["data_added"],
                bytes_sent=summary["data_stored"], warnings=summary["warnings"][:100],
                warning_count=len(summary["warnings"]), summary=summary)
            details["tiers_received"] = [t["url"] for t in details["tiers"] if t["received"]]
            details["tiers_missed"] = [t["url"] for t in details["tiers"] if not t["received"]]
            if details["tiers_missed"]:
                _append(lines, "held only on " + ", ".join(details["tiers_received"])
                        + " so far; " + ", ".join(details["tiers_missed"])
                        + " will get it when synchronized")
            status = SUCCESS if snap.complete else WARNINGS
            if bs.retention and not token.cancelled():
                progress.token = None  # retention is short; it is not cut in the middle
                try:
                    details["retention"] = ret = apply_retention(sess, bs)
                    if ret is not None:
                        _log_retention(lines, bs.name, ret)
                except TierVaultError as e:
                    details["retention"] = {"error": str(e)}
                    _append(lines, f"retention failed: {e}")
                    log.warning("set %s: retention failed: %s", bs.name, e)
                    status = WARNINGS
                finally:
                    sess.end_writes()
            return status
        finally:
            # No files-cache transaction stays open between jobs: a command the
            # daemon lends its lock to writes the same cache.
            self.inst.db.commit_cache()
            sess.close()


def _log_retention(lines: list[str], set_name: str, ret: dict[str, Any]) -> None:
    p = ret.get("prune") or {}
    msg = (f"retention of set {set_name}: {len(ret.get('kept', []))} snapshot(s) kept, "
           f"{len(ret.get('removed', []))} removed"
           + (f" ({', '.join(str(i)[:8] for i in ret['removed'])})" if ret.get("removed") else "")
           + (f"; prune deleted {p.get('packs_deleted', 0)} pack(s), repacked "
              f"{p.get('packs_repacked', 0)}" if p else ""))
    _append(lines, msg)
    log.info("%s", msg)


def _archive_due(sess: VaultSession, bs: BackupSet) -> bool:
    fn = getattr(policy_mod, "archive_due", None)
    if fn is None:
        return False
    paths = bs.snapshot_paths()
    snaps = [s for s in sess.repo.snapshots() if sorted(s.paths) == paths]
    return bool(fn(bs.archive, snaps, datetime.now().astimezone(),
                   sess.repo.archived_ids(snaps)))


def tier_delivery(ts: TierSet) -> list[dict[str, Any]]:
    """Per tier: did it receive every write of the session just done?"""
    return [{"url": t.name, "state": t.state, "received": t.state == ONLINE
             and not t.record.missed} for t in ts.tiers]


class _QuietProgress(JobProgress):
    """Logs a message only if the previous round did not say the same."""

    def __init__(self, before: set[str]) -> None:
        super().__init__(None, [])
        self.before = before
        self.said: set[str] = set()

    def on_info(self, message: str) -> None:
        _append(self.lines, message)
        self.said.add(message)
        if message not in self.before:
            log.info("%s", message)


class IdleRound:
    """Probe tiers and synchronize stale ones; abortable (see the module docstring)."""

    def __init__(self, inst: Installation, notifier: Notifier,
                 offline_hours: float = 24.0, passphrase: str | None = None) -> None:
        self.inst = inst
        self.passphrase = passphrase
        self.notifier = notifier
        self.offline_hours = offline_hours
        self._ts: TierSet | None = None
        self._aborted = threading.Event()
        self._lock = threading.Lock()
        self.tiers: list[dict[str, Any]] = []  # as last seen
        self.last: dict[str, Any] = {}
        self._told_offline: dict[str, float] = {}
        self._told_refused: dict[str, str] = {}
        self._told_second = False
        self._said: set[str] = set()

    def abort(self) -> None:
        """Stop the round at the next file (callable from any thread, repeatedly)."""
        self._aborted.set()
        with self._lock:
            if self._ts is not None:
                self._ts.abort_sync.set()

    def run(self) -> dict[str, Any]:
        """One round; returns what it did (never raises)."""
        self._aborted.clear()
        progress = _QuietProgress(self._said)
        started = time.time()
        out: dict[str, Any] = {"started": iso_time(started), "synced": [], "aborted": False,
                               "error": None}
        try:
            ts = build_tierset(self.inst, progress)
            with self._lock:
                self._ts = ts
            try:
                ts.connect()
                self._told_second = False
                self._check_offline(ts)
                stale = ts.stale()
                if stale and not self._aborted.is_set():
                    out.update(self._sync(ts, progress))
                seen = time.time()
                self.tiers = [{"url": t.name, "state": t.state, "revision": t.revision,
                               "expected_revision": t.record.revision, "seen": seen}
                              for t in ts.tiers]
            finally:
                with self._lock:
                    self._ts = None
                ts.close()
        except SecondInstallationError as e:
            out["error"] = str(e)
            if not self._told_second:
                self._told_second = True
                self.notifier.notify(SECOND_INSTALLATION, str(e))
        except TierVaultError as e:
            out["error"] = str(e)
            log.warning("idle round: %s", e)
        except Exception as e:
            out["error"] = f"internal error: {e!r}"
            log.error("idle round: %s", traceback.format_exc())
        out["ended"] = iso_time(time.time())
        self._said = progress.said
        self.last = out
        return out

    def _sync(self, ts: TierSet, progress: JobProgress) -> dict[str, Any]:
        db = self.inst.db
        sid = db.start_session("sync")
        names = [t.name for t in ts.stale()]
        log.info("sync %d: synchronizing %s", sid, ", ".join(names))
        refs = None
        opener = None
        pw = self.passphrase
        if pw is not None:
            # Opened only if a tier is stale; without the key nothing is replaced
            # or removed on a tier's word.
            def opener() -> Repository:
                return Repository.open(ts, pw, load_index=False, removed=removed_files(db))

            refs = pack_references(opener)
        results = run_sync(ts, progress, self.inst.sync_workers(), refs, opener,
                           self.inst.config.vault_id)
        synced = [{"tier": r.tier, "completed": r.completed, "files_copied": r.files_copied,
                   "bytes_copied": r.bytes_copied, "files_removed": r.files_removed,
                   "error": r.error} for r in results]
        aborted = self._aborted.is_set() or any(
            not r.completed and r.error and "aborted" in r.error for r in results)
        status = "success" if results and all(r.completed for r in results) else \
            CANCELLED if aborted else FAILED if results else "success"
        db.end_session(sid, status, {"results": synced, "aborted": aborted,
                                     "log": progress.lines[:200]})
        for r in synced:
            log.info("sync %d: %s: %s, %d files / %d bytes copied%s", sid, r["tier"],
                     "done" if r["completed"] else "not finished", r["files_copied"],
                     r["bytes_copied"], f" ({r['error']})" if r["error"] else "")
        return {"synced": synced, "aborted": aborted, "sync_session_id": sid}

    def _check_offline(self, ts: TierSet) -> None:
        now = time.time()
        for t in ts.tiers:
            if t.state == OFFLINE and t.refused:
                # Nothing comes back by itself: a person must fix the settings now.
                if self._told_refused.get(t.name) != t.error:
                    self._told_refused[t.name] = t.error or ""
                    self.notifier.notify(TIER_REFUSED, f"tier {t.name} refuses access: "
                                         f"{t.error}; {refusal_hint(t.error or '')}", tier=t.name)
            else:
                self._told_refused.pop(t.name, None)
            since = t.record.first_offline
            if t.state != OFFLINE or since is None:
                self._told_offline.pop(t.name, None)
                continue
            if now - since >= self.offline_hours * 3600 and \
                    self._told_offline.get(t.name) != since:
                self._told_offline[t.name] = since
                hours = (now - since) / 3600
                self.notifier.notify(TIER_OFFLINE, f"tier {t.name} has been unreachable for "
                                     f"{hours:.1f} hours: {t.error}", tier=t.name)
