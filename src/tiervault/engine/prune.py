"""Prune: delete data no snapshot uses and repack mostly-empty packs.

Order keeps the vault valid at every instant: repacked blobs are uploaded and
indexed first, then one new index naming every kept pack is written, then the
old index files are removed, and only then the unused packs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tiervault.engine.progress import Progress
from tiervault.engine.usage import used_blobs
from tiervault.errors import NotFoundError, TierVaultError
from tiervault.storage.base import FileType, Handle
from tiervault.tiers.temporaries import clean_tiers
from tiervault.tiers.tierset import TierSet
from tiervault.vault.pack import PackEntry
from tiervault.vault.repository import Repository, union_listing


@dataclass
class PrunePlan:
    """What prune will do."""

    delete_packs: list[bytes] = field(default_factory=list)
    repack_packs: list[bytes] = field(default_factory=list)
    repack_live: dict[bytes, list[PackEntry]] = field(default_factory=dict)
    orphan_packs: list[str] = field(default_factory=list)
    keep_packs: dict[bytes, list[PackEntry]] = field(default_factory=dict)
    used: set[bytes] = field(default_factory=set)
    bytes_freed: int = 0
    blobs_removed: int = 0

    def summary(self) -> dict[str, int]:
        """Counts for reports."""
        return {"packs_deleted": len(self.delete_packs), "packs_repacked": len(self.repack_packs),
                "orphan_packs_deleted": len(self.orphan_packs),
                "blobs_removed": self.blobs_removed, "bytes_freed_estimate": self.bytes_freed}


def plan_prune(repo: Repository, progress: Progress, repack_below: float = 0.5,
               known_snapshots: set[str] | None = None) -> PrunePlan:
    """Decide which packs to delete or repack.

    Snapshots, indexes and packs are the union over every online tier (a tier
    hiding files cannot make their data look unused). ``known_snapshots``
    (the installation's record): if one of them is missing everywhere,
    nothing is deleted.
    """
    if repo.damaged_indexes:
        raise TierVaultError(
            f"prune refused: index file {repo.damaged_indexes[0][0]} is damaged, so its packs "
            "would look unused; run 'tiervault check --repair' first")
    progress.phase("scan snapshots")
    if known_snapshots:
        lost = sorted(known_snapshots - set(repo.list_snapshot_ids()))
        if lost:
            raise TierVaultError(
                f"prune refused: {len(lost)} snapshot(s) this installation knows "
                f"(e.g. {lost[0][:16]}) are missing on every tier, so their data would look "
                "unused; nothing was deleted. Run 'tiervault check', or 'tiervault tier lost' "
                "if they are really gone")
    damaged: list[tuple[str, Exception]] = []
    try:
        snaps = repo.snapshots(on_error=lambda sid, e: damaged.append((sid, e)))
        for sid, e in damaged:
            if not known_snapshots or sid in known_snapshots:
                raise TierVaultError(f"snapshots/{sid} is damaged ({e})")
            # Never readable and never known here: planted on a tier (any bytes under
            # their own hash), it holds no data of ours.
            progress.info(f"snapshots/{sid} does not open with the key and this "
                          "installation never knew it: ignored (planted on a tier?)")
        plan = PrunePlan(used=used_blobs(repo, snaps, on_tree=lambda: progress.add(1)))
    except TierVaultError as e:
        # Never delete anything while a snapshot cannot be read completely.
        raise TierVaultError(f"prune refused: {e}; run check") from None
    on_disk = {fi.handle.name: fi.size for fi in union_listing(repo.backend, FileType.PACK)}
    indexed = repo.index.packs()
    seen: set[bytes] = set()
    for pid, entries in indexed.items():
        live = [e for e in entries if e.id in plan.used and e.id not in seen]
        seen.update(e.id for e in live)
        total = sum(e.length for e in entries)
        live_bytes = sum(e.length for e in live)
        if pid.hex() not in on_disk:
            continue  # reported by check; nothing to delete
        if not live:
            plan.delete_packs.append(pid)
            plan.bytes_freed += on_disk[pid.hex()]
            plan.blobs_removed += len(entries)
        elif live_bytes < total * repack_below:
            plan.repack_packs.append(pid)
            plan.repack_live[pid] = live
            plan.bytes_freed += total - live_bytes
            plan.blobs_removed += len(entries) - len(live)
        else:
            plan.keep_packs[pid] = entries
    indexed_names = {p.hex() for p in indexed}
    plan.orphan_packs = [n for n in on_disk if n not in indexed_names]
    plan.bytes_freed += sum(on_disk[n] for n in plan.orphan_packs)
    return plan


def execute_prune(repo: Repository, plan: PrunePlan, progress: Progress) -> dict[str, int]:
    """Carry out a plan (after removing the temporaries dead writers left)."""
    _remove_temporaries(repo, progress)
    progress.phase("repack")
    progress.set_total(len(plan.repack_packs), None)
    writer = repo.writer()
    try:
        for pid in plan.repack_packs:
            for e, data in repo.load_blobs_from_pack(pid, plan.repack_live[pid]):
                writer.save_blob(e.type, data, e.id, force=True)
            progress.add(1)
        new_packs = writer.flush()
    finally:
        writer.close()
    progress.phase("rewrite index")
    keep = dict(plan.keep_packs)
    for name in writer.index_names:
        keep.update(repo.read_index_file(name))
    old_indexes = set(repo.index_files) - set(writer.index_names)
    repo.write_index(keep, supersedes=old_indexes)
    for name in old_indexes:
        _remove(repo, Handle(FileType.INDEX, name))
        repo.index_files.discard(name)
    progress.phase("delete packs")
    doomed = [p.hex() for p in plan.delete_packs + plan.repack_packs] + plan.orphan_packs
    progress.set_total(len(doomed), None)
    for name in doomed:
        _remove(repo, Handle(FileType.PACK, name))
        progress.add(1)
    repo.reload_index()
    out = plan.summary()
    out["packs_written"] = new_packs["packs"]
    return out


def _remove_temporaries(repo: Repository, progress: Progress) -> None:
    """Prune runs with the write lock held: other processes' temporaries are dead."""
    b = repo.backend
    if isinstance(b, TierSet):
        clean_tiers(b.online(), b.notify)
        return
    removed = b.remove_temporaries()
    if removed:
        progress.info(f"removed {len(removed)} temporary upload(s) of an interrupted session")


def _remove(repo: Repository, h: Handle) -> None:
    try:
        repo.backend.remove(h)
    except NotFoundError:
        pass
