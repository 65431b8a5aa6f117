"""The operations behind each command; they return plain data for any front end."""

from __future__ import annotations

import os
from typing import Any

from tiervault.engine import browse
from tiervault.engine.backup import Archiver, BackupOptions
from tiervault.engine.check import CheckReport, check
from tiervault.engine.policy import Policy, apply_policy
from tiervault.engine.progress import Progress
from tiervault.engine.prune import execute_prune, plan_prune
from tiervault.engine.restore import Restorer
from tiervault.engine.scan import start_scan
from tiervault.errors import UsageError
from tiervault.service.session import VaultSession
from tiervault.vault.snapshot import Snapshot


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    """The JSON form of a snapshot (``snapshots --json``)."""
    return {"id": s.id, "short_id": s.id[:8], "time": s.time, "hostname": s.hostname,
            "username": s.username, "paths": s.paths, "tags": s.tags, "tree": s.tree,
            "complete": s.complete, "stats": s.stats}


def backup(sess: VaultSession, opts: BackupOptions) -> tuple[Snapshot, dict[str, Any]]:
    """Run a backup session; returns the snapshot and a summary."""
    for p in opts.paths:
        if not os.path.lexists(p):
            raise UsageError(f"{p} does not exist")
    db = sess.inst.db
    sid = db.start_session("backup")
    writer = sess.repo.writer(pack_size=sess.inst.config.settings.pack_size_mib << 20)
    stop_scan = None
    try:
        sess.progress.phase("backup")
        if sess.progress.wants_totals:
            stop_scan = start_scan(opts.paths, opts.excludes, sess.progress)
        snap = Archiver(sess.repo, writer, db, sess.progress, opts).run()
    except BaseException as e:
        db.end_session(sid, "failed", {"error": str(e)})
        raise
    finally:
        if stop_scan is not None:
            stop_scan.set()
        writer.close()
    st = snap.stats
    summary = {
        "message_type": "summary", "snapshot_id": snap.id, "short_id": snap.id[:8],
        "files_new": st.get("files_new", 0), "files_changed": st.get("files_changed", 0),
        "files_unmodified": st.get("files_unmodified", 0), "dirs": st.get("dirs", 0),
        "total_files_processed": st.get("files_new", 0) + st.get("files_changed", 0)
        + st.get("files_unmodified", 0),
        "total_bytes_processed": st.get("bytes_total", 0), "bytes_read": st.get("bytes_read", 0),
        "data_added": st.get("bytes_added", 0), "data_stored": st.get("bytes_stored", 0),
        "duration_ms": st.get("duration_ms", 0), "complete": snap.complete,
        "warnings": [{"path": p, "message": m} for p, m in sess.progress.warnings],
    }
    db.note_snapshots([(snap.id, snap.time, snap.paths)], replace=False)
    db.end_session(sid, "warnings" if not snap.complete else "success", summary)
    return snap, summary


def restore(sess: VaultSession, ref: str, target: str, includes: list[str]) -> dict[str, Any]:
    """Restore a snapshot (or parts) into ``target``."""
    snap = sess.repo.find_snapshot(ref)
    sess.progress.phase("restore")
    stats = Restorer(sess.repo, snap, target, sess.progress, includes,
                     workers=sess.inst.workers()).run()
    return {"message_type": "summary", "snapshot_id": snap.id, "target": target,
            "files_restored": stats["files"], "dirs_restored": stats["dirs"],
            "symlinks_restored": stats["symlinks"], "bytes_restored": stats["bytes"],
            "errors": stats["errors"],
            "warnings": [{"path": p, "message": m} for p, m in sess.progress.warnings]}


def forget(sess: VaultSession, policy: Policy, dry_run: bool) -> dict[str, Any]:
    """Remove snapshots outside the policy (data stays until prune)."""
    if policy.empty():
        raise UsageError("no --keep-* option given; refusing to forget every snapshot")
    keep, remove, reasons = apply_policy(sess.repo.snapshots(), policy)
    if not dry_run:
        for s in remove:
            sess.repo.remove_snapshot(s.id)
        sess.inst.db.forget_snapshots([s.id for s in remove])
    return {"keep": [dict(snapshot_json(s), reasons=reasons.get(s.id, [])) for s in keep],
            "remove": [snapshot_json(s) for s in remove], "dry_run": dry_run}


def prune(sess: VaultSession, dry_run: bool) -> dict[str, Any]:
    """Delete unreferenced data and repack sparse packs."""
    plan = plan_prune(sess.repo, sess.progress)
    if dry_run:
        return dict(plan.summary(), dry_run=True)
    return dict(execute_prune(sess.repo, plan, sess.progress), dry_run=False)


def check_vault(sess: VaultSession, read_data: bool, subset: float | None) -> CheckReport:
    """Check the vault."""
    return check(sess.repo, sess.progress, read_data, subset, workers=sess.inst.workers())


def list_snapshots(sess: VaultSession) -> list[Snapshot]:
    """Every snapshot, remembered so that snapshots lost with a tier can be named."""
    snaps = sess.repo.snapshots()
    sess.inst.db.note_snapshots([(s.id, s.time, s.paths) for s in snaps], replace=True)
    return snaps


def find_snapshots(sess: VaultSession, refs: list[str]) -> list[Snapshot]:
    """Resolve references, or all snapshots if none given."""
    if not refs:
        return sess.repo.snapshots()
    return [sess.repo.find_snapshot(r) for r in refs]


__all__ = ["Progress", "browse"]
