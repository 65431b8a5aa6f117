"""Operations on the tiers themselves: init, attach, add/remove, status, sync."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiervault.engine.progress import Progress
from tiervault.errors import TierVaultError, UsageError
from tiervault.service.installation import Installation, RunOptions
from tiervault.service.session import build_tierset, tier_key
from tiervault.state.config import InstallationConfig, load_config
from tiervault.storage.base import FileType, Handle
from tiervault.storage.urls import parse_url, redact
from tiervault.tiers.sync import PackReferences, SyncResult, sync_all
from tiervault.tiers.tier import OFFLINE, ONLINE, Tier
from tiervault.tiers.tierset import DAMAGED_KEY, TierSet

# The vault format (crypto, compression) is imported where used: a sync that
# copies files without reading them does not need it.
if TYPE_CHECKING:
    from tiervault.vault.crypto import KdfParams
    from tiervault.vault.repository import Repository


def _fresh(home: Path, urls: list[str], opts: RunOptions) -> Installation:
    existing = load_config(home)
    if existing is not None and existing.tiers:
        raise UsageError(f"{home} already has a vault configured; use another --home")
    for u in urls:
        parse_url(u)
    if len({tier_key(u) for u in urls}) != len(urls):
        raise UsageError("the same tier is given twice")
    return Installation(home, InstallationConfig(tiers=list(urls)), opts)


def init_vault(home: Path, urls: list[str], passphrase: str, opts: RunOptions,
               progress: Progress, kdf: KdfParams | None = None) -> dict[str, Any]:
    """Create a vault on every tier and an installation pointing at it."""
    from tiervault.vault.repository import Repository

    if not urls:
        raise UsageError("init needs at least one tier URL")
    inst = _fresh(home, urls, opts)
    inst.lock()
    ts = build_tierset(inst, progress)
    try:
        ts.create()  # first, so that a missing local directory is not "unreachable"
        for t in ts.tiers:
            if t.error is not None:
                continue  # unreachable: it will be filled by synchronization
            try:
                t.backend.stat(Handle(FileType.CONFIG))
                raise UsageError(f"{t.name} already holds a vault; use 'tiervault attach'")
            except TierVaultError as e:
                if isinstance(e, UsageError):
                    raise
        ts.connect()
        if not ts.online():
            why = "; ".join(f"{t.name}: {t.error}" for t in ts.tiers if t.error)
            raise TierVaultError(f"no tier could be reached ({why}); nothing was created")
        repo = Repository.init(ts, passphrase, kdf)
        ts.end_session()
        inst.config.vault_id = repo.config.id
        import secrets

        inst.config.installation_id = secrets.token_hex(8)
        inst.save()
        return {"vault_id": repo.config.id, "home": str(home),
                "tiers": [{"url": t.name, "state": t.state} for t in ts.tiers]}
    finally:
        ts.close()
        inst.close()


def attach(home: Path, urls: list[str], passphrase: str, opts: RunOptions, progress: Progress,
           take_over: bool, read_only: bool = False) -> dict[str, Any]:
    """Connect a new installation to an existing vault.

    ``take_over``: become its writer (the old installation then stops with
    exit 3). ``read_only``: a restore-only installation that never writes and
    so never clashes with the writer.
    """
    from tiervault.vault.repository import open_key, read_config

    if take_over and read_only:
        raise UsageError("--take-over and --read-only exclude each other")
    existing = load_config(home)
    if existing is not None and existing.tiers and not take_over:
        raise UsageError(f"{home} already has a vault configured; use another --home")
    inst = Installation(home, InstallationConfig(tiers=list(urls)), opts)
    inst.config.settings.read_only = read_only
    if existing is not None:
        inst.config.installation_id = existing.installation_id
    inst.lock()
    ts = build_tierset(inst, progress)
    try:
        revs = _adopt(ts)
        if not ts.online():
            raise TierVaultError("no tier of the vault could be reached")
        cfg = read_config(ts)
        open_key(ts, passphrase)
        if take_over:
            ts._raise(ts.online())
            ts.end_session()
        import secrets

        inst.config.vault_id = cfg.id
        inst.config.installation_id = inst.config.installation_id or secrets.token_hex(8)
        inst.save()
        return {"vault_id": cfg.id, "home": str(home), "take_over": take_over,
                "read_only": read_only,
                "revisions": revs, "tiers": [{"url": t.name, "state": t.state,
                                              "revision": t.revision} for t in ts.tiers]}
    finally:
        ts.close()
        inst.close()


def _adopt(ts: TierSet) -> dict[str, int | None]:
    """Take each reachable tier's revision as the one expected."""
    revs: dict[str, int | None] = {}
    for t in ts.tiers:
        rev = ts._read_rev(t)
        revs[t.name] = rev
        t.record.intended = None
        t.record.missed = False
        if rev is not None:
            t.record.revision = rev
            t.revision = rev
    ts._classify()
    ts._save_records()
    return revs


def tier_status(inst: Installation, progress: Progress) -> list[dict[str, Any]]:
    """Per tier: url, state, revision, expected revision, last online, sync progress."""
    from tiervault.service.lost import unavailable_days, warnings_for

    ts = build_tierset(inst, progress, read_only=True)
    try:
        ts.connect()
        busy = inst.lock_held_elsewhere()
        rows = [_tier_json(ts, t) for t in ts.tiers]
        for row, t in zip(rows, ts.tiers, strict=True):
            if busy and t.record.state == "syncing" and t.state == "unsynchronized":
                row["state"] = "syncing"  # the daemon (another process) is syncing it now
            days = unavailable_days(t)
            row["lost"] = t.lost
            row["unavailable_days"] = None if days is None else round(days, 2)
        for w in warnings_for(inst, ts):
            progress.info(f"warning: {w}")
        return rows
    finally:
        ts.close()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat()


def _tier_json(ts: TierSet, t: Any) -> dict[str, Any]:
    r = t.record
    sync = None
    if r.sync_total is not None and t.state != ONLINE:
        done = r.sync_done or 0
        sync = {"bytes_done": done, "bytes_total": r.sync_total,
                "percent": round(100.0 * done / r.sync_total, 1) if r.sync_total else 100.0}
    return {"url": t.name, "state": t.state, "revision": t.revision if t.state != OFFLINE
            else None, "expected_revision": r.revision, "max_revision": ts.max_revision,
            "missed_writes": r.missed, "last_online": _iso(r.last_online),
            "offline_since": _iso(r.first_offline) if t.state == OFFLINE else None,
            "error": t.error if t.state == OFFLINE else None, "sync": sync}


def sync_now(inst: Installation, progress: Progress,
             passphrase: str | None = None) -> list[dict[str, Any]]:
    """Synchronize every reachable stale tier in the foreground.

    With the passphrase, packs the source lost are recognised (its index still
    names them) and copied back instead of being removed from the target.
    """
    inst.require_writer()
    inst.lock()
    ts = build_tierset(inst, progress)
    try:
        ts.connect()
        refs = None
        opener: Callable[[], Repository] | None = None
        if passphrase is not None:
            pw = passphrase

            def open_repo() -> Repository:
                from tiervault.service.trust import removed_files
                from tiervault.vault.repository import Repository

                return Repository.open(ts, pw, load_index=False,
                                       removed=removed_files(inst.db))

            opener = open_repo
            refs = pack_references(open_repo)
        results = run_sync(ts, progress, inst.sync_workers(), refs, opener,
                           inst.config.vault_id)
        return [dict(_result_json(r), **_tier_json(ts, t))
                for t in ts.tiers for r in results if r.tier == t.name] + \
            [dict(_tier_json(ts, t), completed=None) for t in ts.tiers
             if t.name not in {r.tier for r in results}]
    finally:
        ts.close()


def pack_references(repo: Repository | Callable[[], Repository]) -> PackReferences:
    """What a tier's own index files name, read with the vault key.

    ``repo`` may be a factory: the key is then derived only if a sync really
    meets a pack the source lacks (a no-op sync stays cheap).
    """
    opened: list[Repository] = []

    def refs(t: Tier) -> set[str] | None:
        from tiervault.vault.repository import Repository

        if not opened:
            try:
                opened.append(repo if isinstance(repo, Repository) else repo())
            except TierVaultError:
                return None
        base = opened[0]
        r = Repository(t.backend, base.key, base.config, base.key_name)
        names: set[str] = set()
        try:
            for fi in t.backend.list(FileType.INDEX):
                names.update(pid.hex() for pid in r.read_index_file(fi.handle.name))
        except TierVaultError:
            return None
        return names

    return refs


def run_sync(ts: TierSet, progress: Progress, workers: int = 4,
             references: PackReferences | None = None,
             repo: Repository | Callable[[], Repository] | None = None,
             vault_id: str = "") -> list[SyncResult]:
    """Synchronize stale tiers, reporting per-tier progress.

    With ``repo`` (the key: a Repository or a factory, opened only if a tier is
    stale) the tiers are first checked against their manifests, so a stale or
    damaged tier is never the source, and mutable files are validated with the
    key; without it only missing mutable files are added, none is replaced.
    """
    from tiervault.service.trust import mutable_check, verify_tiers

    opened: Repository | None = None
    if repo is not None and ts.stale():
        try:
            opened = repo() if callable(repo) else repo
        except TierVaultError:
            opened = None
        if opened is not None:
            verify_tiers(ts, opened, ts.db, vault_id)
            if references is None:
                references = pack_references(opened)
    check = mutable_check(opened, ts.db, vault_id)
    last: dict[str, int] = {}

    def report(t: Any, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 100
        if last.get(t.name, -1) // 10 != pct // 10:
            last[t.name] = pct
            progress.status(f"sync {t.name}: {pct}% ({done} of {total} bytes)")

    stale = ts.stale()
    results = sync_all(ts, report, workers=workers, references=references, check=check)
    if ts.damaged or ts.db.get(DAMAGED_KEY):
        from tiervault.service.repair import heal_recorded  # the vault format: only if needed

        heal_recorded(ts, progress)
    for r in results:
        if r.completed:
            kept = (f"; kept {r.files_kept} files the source does not list"
                    if r.files_kept else "")
            refused = (f"; refused {r.files_refused} unverifiable files of the source"
                       if r.files_refused else "")
            progress.info(f"tier {r.tier} is synchronized ({r.files_copied} files copied, "
                          f"{r.files_removed} removed{kept}{refused})")
        else:
            progress.info(f"tier {r.tier} could not be synchronized: {r.error}")
    _ = stale
    return results


def _result_json(r: SyncResult) -> dict[str, Any]:
    return {"completed": r.completed, "files_copied": r.files_copied,
            "bytes_copied": r.bytes_copied, "files_removed": r.files_removed,
            "sync_error": r.error}


def tier_add(inst: Installation, url: str, progress: Progress) -> dict[str, Any]:
    """Add a tier: created empty at revision 0 and filled by synchronization."""
    inst.require_writer()
    parse_url(url)
    if tier_key(url) in {tier_key(u) for u in inst.config.tiers}:
        raise UsageError(f"{redact(url)} is already a tier of this vault")
    inst.lock()
    inst.config.tiers.append(url)
    ts = build_tierset(inst, progress)
    try:
        new = ts.tiers[-1]
        new.record.revision = 0
        new.record.missed = False
        inst.db.save_tier(new.record)
        new.backend.create()
        inst.save()
        return {"url": new.name, "added": True}
    finally:
        ts.close()


def tier_remove(inst: Installation, url: str) -> dict[str, Any]:
    """Stop using a tier (its files are left where they are)."""
    keys = [tier_key(u) for u in inst.config.tiers]
    key = tier_key(url)
    if key not in keys:
        raise UsageError(f"{redact(url)} is not a tier of this vault "
                         f"(tiers: {', '.join(keys)})")
    if len(keys) == 1:
        raise UsageError("cannot remove the only tier of the vault")
    inst.lock()
    idx = keys.index(key)
    removed = inst.config.tiers.pop(idx)
    inst.save()
    inst.db.remove_tier(tier_key(removed))
    return {"url": redact(removed), "removed": True}
