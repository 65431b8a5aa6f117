"""The operations behind each command; they return plain data for any front end."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, BinaryIO

from tiervault.engine import browse
from tiervault.engine.backup import Archiver
from tiervault.engine.backupopts import BackupOptions
from tiervault.engine.check import CheckReport, check
from tiervault.engine.dryrun import DryRunWriter
from tiervault.engine.policy import (
    DEFAULT_GROUP_BY,
    GfsPolicy,
    Plan,
    Policy,
    apply_gfs,
    apply_policy,
)
from tiervault.engine.progress import Progress
from tiervault.engine.prune import execute_prune, plan_prune
from tiervault.engine.restore import Restorer
from tiervault.engine.scan import start_scan
from tiervault.errors import UsageError
from tiervault.service.session import VaultSession
from tiervault.storage.local import LocalBackend
from tiervault.storage.urls import parse_url
from tiervault.tiers.tierset import TierSet
from tiervault.vault.snapshot import Snapshot, SnapshotFilter


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    """The JSON form of a snapshot (``snapshots --json``)."""
    return {"id": s.id, "short_id": s.id[:8], "time": s.time, "hostname": s.hostname,
            "username": s.username, "paths": s.paths, "tags": s.tags, "tree": s.tree,
            "complete": s.complete, "stats": s.stats}


def find_parent(sess: VaultSession, opts: BackupOptions) -> Snapshot | None:
    """The newest snapshot of the same host and paths (restic's rule): the one a
    backup's new/changed/unchanged counts are measured against."""
    host, paths = opts.hostname(), sorted(opts.snapshot_paths())
    same = [s for s in sess.repo.snapshots(on_error=lambda _sid, _e: None)
            if s.hostname == host and sorted(s.paths) == paths]
    return same[-1] if same else None


def backup(sess: VaultSession, opts: BackupOptions, stdin: BinaryIO | None = None
           ) -> tuple[Snapshot, dict[str, Any]]:
    """Run a backup session (of ``stdin`` as one file if given); returns the
    snapshot and a summary. A dry run writes nothing: no snapshot, no data, no
    files cache, no session record."""
    if stdin is None:
        for p in opts.paths:
            if not os.path.lexists(p):
                raise UsageError(f"{p} does not exist")
    db = sess.inst.db
    sid = None if opts.dry_run else db.start_session("backup")
    writer: Any = DryRunWriter(sess.repo) if opts.dry_run else \
        sess.repo.writer(pack_size=sess.inst.config.settings.pack_size_mib << 20)
    stop_scan = None
    try:
        sess.progress.phase("backup")
        parent = find_parent(sess, opts)
        arch = Archiver(sess.repo, writer, db, sess.progress, opts, parent, stop=sess.stop)
        if stdin is not None:
            snap = arch.run_stdin(stdin, opts.stdin_filename or "stdin")
        else:
            if sess.progress.wants_totals:
                stop_scan = start_scan(opts, sess.progress)
            snap = arch.run()
    except BaseException as e:
        if sid is not None:
            db.end_session(sid, "failed", {"error": str(e) or type(e).__name__})
        raise
    finally:
        if stop_scan is not None:
            stop_scan.set()
        writer.close()
    # The session ends here (slow tiers dropped or, with --wait-all-tiers, waited
    # for), so the duration shown covers all the waiting, from the command's start.
    sess.end_writes()
    st = snap.stats
    summary = {
        "message_type": "summary", "dry_run": opts.dry_run,
        "snapshot_id": snap.id or None, "short_id": snap.id[:8] or None,
        "parent": parent.id if parent is not None else None,
        "hostname": snap.hostname, "paths": snap.paths,
        "files_new": st.get("files_new", 0), "files_changed": st.get("files_changed", 0),
        "files_unmodified": st.get("files_unmodified", 0), "dirs": st.get("dirs", 0),
        "total_files_processed": st.get("files_new", 0) + st.get("files_changed", 0)
        + st.get("files_unmodified", 0),
        "total_bytes_processed": st.get("bytes_total", 0), "bytes_read": st.get("bytes_read", 0),
        "data_added": st.get("bytes_added", 0), "data_stored": st.get("bytes_stored", 0),
        "duration_ms": sess.elapsed_ms(), "complete": snap.complete,
        "warnings": [{"path": p, "message": m} for p, m in sess.progress.warnings],
    }
    summary["archived"] = opts.archive
    if sid is not None:
        db.note_snapshots([(snap.id, snap.time, snap.paths)], replace=False)
        db.end_session(sid, "warnings" if not snap.complete else "success", summary)
    return snap, summary


def _reads_locally(sess: VaultSession) -> bool:
    """Whether the restore reads a local directory (the first online tier is one)."""
    backend = sess.repo.backend
    if isinstance(backend, TierSet):
        online = backend.online()
        return bool(online) and parse_url(online[0].url).scheme == "file"
    return isinstance(backend, LocalBackend)


def restore(sess: VaultSession, ref: str, target: str, includes: list[str],
            which: SnapshotFilter | None = None, no_devices: bool = False,
            no_setuid: bool = False) -> dict[str, Any]:
    """Restore a snapshot (or parts) into ``target``; ``which`` chooses ``latest``;
    ``no_devices`` skips device nodes, ``no_setuid`` strips setuid/setgid bits."""
    snap = sess.repo.find_snapshot(ref, which)
    sess.progress.phase("restore")
    stats = Restorer(sess.repo, snap, target, sess.progress, includes,
                     workers=sess.inst.workers(), stop=sess.stop, no_devices=no_devices,
                     no_setuid=no_setuid, local_reads=_reads_locally(sess)).run()
    return {"message_type": "summary", "snapshot_id": snap.id, "target": target,
            "files_restored": stats["files"], "dirs_restored": stats["dirs"],
            "symlinks_restored": stats["symlinks"], "bytes_restored": stats["bytes"],
            "errors": stats["errors"],
            "warnings": [{"path": p, "message": m} for p, m in sess.progress.warnings]}


def _plan_json(sess: VaultSession, plan: Plan, dry_run: bool,
               group_by: tuple[str, ...]) -> dict[str, Any]:
    keep, remove, reasons = plan
    return {"keep": [dict(snapshot_json(s), reasons=reasons.get(s.id, [])) for s in keep],
            "remove": [snapshot_json(s) for s in remove], "dry_run": dry_run,
            "group_by": list(group_by)}


def _remove(sess: VaultSession, snaps: list[Snapshot], archived: set[str]) -> None:
    """Remove snapshot files; never an archived one (the last line of defence)."""
    bad = [s for s in snaps if s.id in archived]
    if bad:
        raise UsageError(f"snapshot {bad[0].id[:8]} is archived; refusing to remove it")
    for s in snaps:
        sess.repo.remove_snapshot(s.id)
    sess.inst.db.forget_snapshots([s.id for s in snaps])


def _considered(sess: VaultSession, which: SnapshotFilter | None) -> list[Snapshot]:
    snaps = sess.repo.snapshots(
        on_error=lambda sid, e: sess.progress.warn(f"snapshots/{sid}", str(e)))
    return which.select(snaps) if which is not None else snaps


def forget(sess: VaultSession, policy: Policy, dry_run: bool,
           which: SnapshotFilter | None = None,
           group_by: tuple[str, ...] = DEFAULT_GROUP_BY) -> dict[str, Any]:
    """Remove snapshots outside the policy (data stays until prune); archives stay."""
    if policy.empty():
        raise UsageError("the --keep-* options keep nothing; refusing to forget every "
                         "snapshot (give a --keep-* option above 0, or snapshot IDs)")
    snaps = _considered(sess, which)
    archived = sess.repo.archived_ids(snaps)
    plan = apply_policy(snaps, policy, archived, group_by)
    if not dry_run:
        _remove(sess, plan[1], archived)
    return _plan_json(sess, plan, dry_run, group_by)


def forget_ids(sess: VaultSession, refs: list[str], dry_run: bool) -> dict[str, Any]:
    """Remove exactly the snapshots named; refused for an archived one."""
    snaps: dict[str, Snapshot] = {}
    for r in refs:
        s = sess.repo.find_snapshot(r)
        snaps[s.id] = s
    chosen = sorted(snaps.values(), key=lambda s: (s.datetime(), s.id))
    archived = sess.repo.archived_ids(chosen)
    for s in chosen:
        if s.id in archived:
            raise UsageError(f"snapshot {s.id[:8]} is archived; run 'tiervault archive "
                             f"release {s.id[:8]}' first to forget it")
    if not dry_run:
        _remove(sess, chosen, archived)
    return {"keep": [], "remove": [snapshot_json(s) for s in chosen], "dry_run": dry_run,
            "group_by": []}


def apply_retention(sess: VaultSession, policy: GfsPolicy, dry_run: bool,
                    now: datetime | None = None, paths: list[str] | None = None,
                    which: SnapshotFilter | None = None,
                    group_by: tuple[str, ...] = DEFAULT_GROUP_BY) -> dict[str, Any]:
    """Grandfather-father-son retention (archives always kept); forget only."""
    if policy.empty():
        raise UsageError("every retention span is 0; refusing to forget every snapshot "
                         "(give --keep-all-days, --daily, ... above 0)")
    snaps = _considered(sess, which)
    if paths is not None:
        snaps = [s for s in snaps if sorted(s.paths) == sorted(paths)]
    archived = sess.repo.archived_ids(snaps)
    plan = apply_gfs(snaps, policy, now or datetime.now().astimezone(), archived, group_by)
    if not dry_run:
        _remove(sess, plan[1], archived)
    return _plan_json(sess, plan, dry_run, group_by)


def set_archive(sess: VaultSession, ref: str, archived: bool) -> dict[str, Any]:
    """Mark a snapshot as an archive or release it; its id does not change.

    A snapshot archived by a tiervault before 0.2 carries the flag as the tag
    ``archive`` inside its (immutable) file: releasing it must write the
    snapshot again without that tag, so its id changes and the result says so.
    """
    marks = sess.repo.archive_marks()
    try:
        snap = sess.repo.find_snapshot(ref)
    except UsageError:
        orphans = [m for m in marks if m.startswith(ref.lower())] if ref != "latest" else []
        if archived or len(orphans) != 1:
            raise
        # A mark whose snapshot is gone (check warns about it): releasing removes it.
        sess.repo.release_archive(orphans[0])
        return {"snapshot_id": orphans[0], "short_id": orphans[0][:8], "changed": True,
                "archived": False, "orphan_mark": True}
    sid = snap.id
    was = sid in marks or snap.legacy_archived()
    res: dict[str, Any] = {"snapshot_id": sid, "short_id": sid[:8], "changed": was != archived,
                           "archived": archived}
    if archived:
        if sid not in marks:
            sess.repo.mark_archive(sid)
        return res
    if sid in marks:
        sess.repo.release_archive(sid)
    if snap.legacy_archived():
        snap.tags = [t for t in snap.tags if t != "archive"]
        new = sess.repo.save_snapshot(snap)
        sess.repo.remove_snapshot(sid)
        sess.inst.db.forget_snapshots([sid])
        sess.inst.db.note_snapshots([(new, snap.time, snap.paths)], replace=False)
        res.update(snapshot_id=new, short_id=new[:8], previous_id=sid)
    return res


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
    marks_on_server: set[str] = set()
    unknown_after: float | None = None
    archived = sess.repo.archived_ids(snaps)
    for t in servers:
        if t.state in (ONLINE, UNSYNCHRONIZED):
            try:
                on_server.update(fi.handle.name for fi in t.backend.list(FileType.SNAPSHOT))
                if archived:
                    marks_on_server.update(
                        fi.handle.name for fi in t.backend.list(FileType.ARCHIVE))
                continue
            except Exception:  # an unreachable server: fall back to its records
                pass
        lo = t.record.last_online or 0.0
        unknown_after = lo if unknown_after is None else max(unknown_after, lo)
    out = {}
    for s in snaps:
        f = ""
        if s.id in archived:
            f += "A"
        # L also when the archive mark has not reached the server yet: until it
        # has, the server's copy would not be protected from retention there.
        missing = s.id not in on_server or (
            s.id in archived and not s.legacy_archived() and s.id not in marks_on_server)
        if servers and missing and (
                unknown_after is None or s.datetime().timestamp() > unknown_after):
            f += "L"
        if not s.complete:
            f += "P"
        out[s.id] = f
    return out


def find_snapshots(sess: VaultSession, refs: list[str],
                   which: SnapshotFilter | None = None) -> list[Snapshot]:
    """Resolve references (``which`` chooses ``latest``), or every snapshot ``which``
    lets through if none given."""
    if not refs:
        snaps = sess.repo.snapshots()
        return which.select(snaps) if which is not None else snaps
    return [sess.repo.find_snapshot(r, which) for r in refs]


__all__ = ["Progress", "browse"]
