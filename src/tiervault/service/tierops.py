"""Operations on the tiers themselves: add/remove, status, sync (init and attach: setup)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tiervault.engine.progress import Progress
from tiervault.errors import PermanentError, TierVaultError, UsageError, WaitTimeoutError
from tiervault.service.installation import Installation
from tiervault.service.session import build_tierset, pending_create_key, tier_key
from tiervault.service.setup import attach, init_vault
from tiervault.storage.base import FileType
from tiervault.storage.retry import RetryBackend
from tiervault.storage.urls import normalize_url, redact, same_tier, tier_index
from tiervault.tiers.sync import PackReferences, SyncResult, sync_all
from tiervault.tiers.tier import OFFLINE, ONLINE, REFUSED_HINT, Tier, without_prefix
from tiervault.tiers.tierset import DAMAGED_KEY, TierSet

# The vault format (crypto, compression) is imported where used: a sync that
# copies files without reading them does not need it.
if TYPE_CHECKING:
    from tiervault.vault.repository import Repository

__all__ = ["attach", "init_vault", "pack_references", "resolve_tier", "run_sync", "sync_now",
           "tier_add", "tier_remove", "tier_status"]


def resolve_tier(inst: Installation, ref: str) -> int:
    """The 0-based index of the tier ``ref`` names (1-based number or URL), or a usage error."""
    i = tier_index(inst.config.tiers, ref)
    if i is None:
        listing = ", ".join(f"{n}. {redact(u)}" for n, u in enumerate(inst.config.tiers, 1))
        raise UsageError(f"{redact(ref)} is not a tier of this vault (tiers: {listing}); "
                         "name a tier by its number or its URL")
    return i


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
            if t.lost and t.state == OFFLINE:
                row["state"] = "lost"  # given up: not merely away for now
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
            "error": t.error if t.state == OFFLINE else None,
            "refused": t.state == OFFLINE and t.refused, "sync": sync}


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
        # `tiervault sync` checks every tier against the manifest even when none is
        # behind: a tier damaged or rolled back behind a current revision is healed.
        results = run_sync(ts, progress, inst.sync_workers(), refs, opener,
                           inst.config.vault_id, verify=True)
        # A stale tier left behind because no tier at the max revision answers
        # is a wait that timed out, not a success (exit 5, like every wait).
        no_source = not ts.online()
        rows = [dict(_result_json(r), **_tier_json(ts, t), no_source=no_source)
                for t in ts.tiers for r in results if r.tier == t.name] + \
            [dict(_tier_json(ts, t), completed=None, no_source=False) for t in ts.tiers
             if t.name not in {r.tier for r in results}]
        if all(t.state == OFFLINE for t in ts.tiers):
            why = "; ".join(f"{t.name}: {t.error}" for t in ts.tiers)
            raise WaitTimeoutError(f"no tier of vault {inst.config.vault_id[:8]} is reachable "
                                   f"({why}); nothing was synchronized")
        return rows
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


#: Attempts per transfer in a command's closing sync (backoff 0.5 + 1 s): a tier
#: failing them is left to the daemon or the next sync, the command does not wait.
CLOSING_SYNC_ATTEMPTS = 3


def closing_sync(ts: TierSet, progress: Progress, workers: int = 4,
                 references: PackReferences | None = None,
                 repo: Repository | Callable[[], Repository] | None = None,
                 vault_id: str = "") -> list[SyncResult]:
    """The sync that ends a write command: like run_sync, but a tier that stops
    answering gets a few attempts, not its whole reconnect procedure."""
    saved = [(b, b.attempts) for b in (t.backend for t in ts.tiers)
             if isinstance(b, RetryBackend)]
    for b, n in saved:
        b.attempts = min(n, CLOSING_SYNC_ATTEMPTS)
    try:
        return run_sync(ts, progress, workers, references, repo, vault_id)
    finally:
        for b, n in saved:
            b.attempts = n


def run_sync(ts: TierSet, progress: Progress, workers: int = 4,
             references: PackReferences | None = None,
             repo: Repository | Callable[[], Repository] | None = None,
             vault_id: str = "", verify: bool = False) -> list[SyncResult]:
    """Synchronize stale tiers, reporting per-tier progress.

    With ``repo`` (the key: a Repository or a factory, opened only if a tier is
    stale) the tiers are first checked against their manifests, so a stale or
    damaged tier is never the source, and mutable files are validated with the
    key; without it only missing mutable files are added, none is replaced.
    """
    from tiervault.service.trust import mutable_check, verify_tiers

    ts.confirm_stale()
    opened: Repository | None = None
    # Only with a source to sync from: opening the vault reads through the tier
    # set, which would wait (unbounded by default) for a tier to come online.
    if repo is not None and (ts.stale() or verify) and ts.online():
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
            progress.info(f"tier {r.tier} is synchronized ({_files(r.files_copied)} copied, "
                          f"{r.files_removed} removed{kept}{refused})")
        else:
            why = without_prefix(r.error or "", r.tier, *(t.backend.location for t in ts.tiers
                                                           if t.name == r.tier))
            progress.info(f"tier {r.tier} could not be synchronized: {why}")
    _ = stale
    return results


def _result_json(r: SyncResult) -> dict[str, Any]:
    return {"completed": r.completed, "files_copied": r.files_copied,
            "bytes_copied": r.bytes_copied, "files_removed": r.files_removed,
            "sync_error": r.error}


def tier_add(inst: Installation, url: str, progress: Progress) -> dict[str, Any]:
    """Add a tier: created empty at revision 0 and filled by synchronization.

    A tier that refuses (login, host key, certificate, permission) is not added.
    """
    inst.require_writer()
    url = normalize_url(url)
    if any(same_tier(url, u) for u in inst.config.tiers):
        raise UsageError(f"{redact(url)} is already a tier of this vault")
    inst.lock()
    inst.config.tiers.append(url)
    ts = build_tierset(inst, progress)
    try:
        new = ts.tiers[-1]
        try:
            new.backend.create()
        except PermanentError as e:
            raise TierVaultError(f"tier {new.name} refuses access: {new.reason(e)}; "
                                 f"{REFUSED_HINT}; the tier was not added") from None
        except TierVaultError as e:
            raise TierVaultError(f"cannot reach tier {new.name}: {new.reason(e)}; the tier "
                                 "was not added, try again when it answers") from None
        new.record.revision = 0
        new.record.missed = False
        inst.db.save_tier(new.record)
        inst.save()
        return {"url": new.name, "added": True}
    except BaseException:
        inst.config.tiers.pop()
        raise
    finally:
        ts.close()


def tier_remove(inst: Installation, ref: str) -> dict[str, Any]:
    """Stop using a tier (its files are left where they are)."""
    idx = resolve_tier(inst, ref)
    if len(inst.config.tiers) == 1:
        raise UsageError("cannot remove the only tier of the vault")
    inst.lock()
    removed = inst.config.remove_tier(idx)  # its [[throttle]] rule goes with it
    inst.save()
    inst.db.remove_tier(tier_key(removed))
    inst.db.put(pending_create_key(removed), None)
    return {"url": redact(removed), "removed": True, "number": idx + 1}


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"
