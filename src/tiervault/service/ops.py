"""The operations behind each command; they return plain data for any front end."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from tiervault.engine import browse
from tiervault.engine.backup import Archiver, BackupOptions
from tiervault.engine.check import CheckReport, check
from tiervault.engine.policy import ARCHIVE_TAG, GfsPolicy, Policy, apply_gfs, apply_policy
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
    keep, remove, reasons = apply_policy(sess.repo.snapshots(
        on_error=lambda sid, e: sess.progress.warn(f"snapshots/{sid}", str(e))), policy)
    if not dry_run:
        for s in remove:
            sess.repo.remove_snapshot(s.id)
        sess.inst.db.forget_snapshots([s.id for s in remove])
    return {"keep": [dict(snapshot_json(s), reasons=reasons.get(s.id, [])) for s in keep],
            "remove": [snapshot_json(s) for s in remove], "dry_run": dry_run}


def apply_retention(sess: VaultSession, policy: GfsPolicy, dry_run: bool,
                    now: datetime | None = None, paths: list[str] | None = None
                    ) -> dict[str, Any]:
    """Grandfather-father-son retention (archives always kept); forget only."""
    snaps = sess.repo.snapshots()
    if paths is not None:
        snaps = [s for s in snaps if sorted(s.paths) == sorted(paths)]
    keep, remove, reasons = apply_gfs(snaps, policy, now or datetime.now().astimezone())
    if not dry_run:
        for s in remove:
            sess.repo.remove_snapshot(s.id)
        sess.inst.db.forget_snapshots([s.id for s in remove])
    return {"keep": [dict(snapshot_json(s), reasons=reasons.get(s.id, [])) for s in keep],
            "remove": [snapshot_json(s) for s in remove], "dry_run": dry_run}


def set_archive(sess: VaultSession, ref: str, archived: bool) -> dict[str, Any]:
    """Mark a snapshot as an archive or release it (rewrites the snapshot file)."""
    snap = sess.repo.find_snapshot(ref)
    old = snap.id
    tags = set(snap.tags)
    if (ARCHIVE_TAG in tags) == archived:
        return {"snapshot_id": old, "changed": False, "archived": archived}
    tags = tags | {ARCHIVE_TAG} if archived else tags - {ARCHIVE_TAG}
    snap.tags = sorted(tags)
    new = sess.repo.save_snapshot(snap)
    sess.repo.remove_snapshot(old)
    sess.inst.db.forget_snapshots([old])
    sess.inst.db.note_snapshots([(new, snap.time, snap.paths)], replace=False)
    return {"snapshot_id": new, "previous_id": old, "changed": True, "archived": archived}


def prune(sess: VaultSession, dry_run: bool) -> dict[str, Any]:
    """Delete unreferenced data and repack sparse packs."""
    db = sess.inst.db
    known = set(db.known_snapshots()) - db.deleted("snapshots")  # minus what we deleted
    plan = plan_prune(sess.repo, sess.progress, known_snapshots=known)
    if dry_run:
        return dict(plan.summary(), dry_run=True)
    return dict(execute_prune(sess.repo, plan, sess.progress), dry_run=False)


def check_vault(sess: VaultSession, read_data: bool, subset: float | None) -> CheckReport:
    """Check the vault."""
    return check(sess.repo, sess.progress, read_data, subset, workers=sess.inst.workers())


def list_snapshots(sess: VaultSession) -> list[Snapshot]:
    """Every snapshot, remembered so that snapshots lost with a tier can be named."""
    damaged: list[str] = []

    def skip(sid: str, e: Exception) -> None:
        damaged.append(sid)
        sess.progress.warn(f"snapshots/{sid}", f"{e}; run 'tiervault check --repair'")

    snaps = sess.repo.snapshots(on_error=skip)
    known = [(s.id, s.time, s.paths) for s in snaps]
    sess.inst.db.note_snapshots(known, replace=not damaged)
    return snaps


def snapshot_flags(sess: VaultSession, snaps: list[Snapshot]) -> dict[str, str]:
    """Per snapshot: A archived, L held only on the speed vault so far, P partial."""
    from tiervault.storage.base import FileType
    from tiervault.tiers.tier import ONLINE, UNSYNCHRONIZED

    servers = sess.tiers.tiers[1:]
    on_server: set[str] = set()
    unknown_after: float | None = None
    for t in servers:
        if t.state in (ONLINE, UNSYNCHRONIZED):
            try:
                on_server.update(fi.handle.name for fi in t.backend.list(FileType.SNAPSHOT))
                continue
            except Exception:  # an unreachable server: fall back to its records
                pass
        lo = t.record.last_online or 0.0
        unknown_after = lo if unknown_after is None else max(unknown_after, lo)
    out = {}
    for s in snaps:
        f = ""
        if ARCHIVE_TAG in s.tags:
            f += "A"
        if servers and s.id not in on_server and (
                unknown_after is None or s.datetime().timestamp() > unknown_after):
            f += "L"
        if not s.complete:
            f += "P"
        out[s.id] = f
    return out


def find_snapshots(sess: VaultSession, refs: list[str]) -> list[Snapshot]:
    """Resolve references, or all snapshots if none given."""
    if not refs:
        return sess.repo.snapshots()
    return [sess.repo.find_snapshot(r) for r in refs]


__all__ = ["Progress", "browse"]
