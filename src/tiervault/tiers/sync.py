"""Synchronization (SPEC §5): bring a stale tier level with an online one.

First the temporaries dead writers left on the tiers involved are removed
(tiers/temporaries.py). Copy what is missing or differs, in dependency order (config and keys, then
packs, then the indexes naming them, then the snapshots needing those), then
remove what the source no longer has, newest kinds first. The target is a
valid vault at every moment; an interrupted sync resumes by copying only what
is still missing. Any write aborts it. Afterwards the target's revision is set
explicitly to the max revision and it is marked online.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import blake3

from tiervault.errors import BackendError, IntegrityError, NotFoundError, TierVaultError
from tiervault.storage.base import CONTENT_NAMED, MUTABLE, FileInfo, FileType, Handle
from tiervault.tiers.temporaries import clean_tiers
from tiervault.tiers.tier import ONLINE, SYNCING, UNSYNCHRONIZED, Tier
from tiervault.tiers.tierset import TierSet

# Archive marks before the snapshots they name, and removed after them: a
# snapshot is never on a tier without the mark that protects it from retention
# (a mark whose snapshot is not there yet is harmless).
COPY_ORDER = [FileType.CONFIG, FileType.KEY, FileType.PACK, FileType.INDEX, FileType.ARCHIVE,
              FileType.SNAPSHOT]
REMOVE_ORDER = [FileType.SNAPSHOT, FileType.ARCHIVE, FileType.INDEX, FileType.PACK, FileType.KEY]


@dataclass
class SyncResult:
    """What one tier's synchronization did."""

    tier: str
    completed: bool
    files_copied: int = 0
    bytes_copied: int = 0
    files_removed: int = 0
    files_healed: int = 0
    error: str | None = None


class SyncAborted(TierVaultError):
    """A write started: synchronization stops and resumes later."""


ProgressFn = Callable[[Tier, int, int], None]
#: Names the packs a tier's own index files reference (needs the key); None = unknown.
PackReferences = Callable[[Tier], set[str] | None]


def _differs(src: Tier, dst: Tier, fi: FileInfo, theirs: FileInfo | None,
             notify: Callable[[str], None]) -> bool:
    if fi.handle.type in MUTABLE:
        try:
            mine = src.backend.load(fi.handle)
        except IntegrityError as e:
            # Past its size bound, or not a regular file: damaged or planted on
            # the source, so it never travels to another tier.
            notify(f"not copying {fi.handle} from {src.name}: {e}")
            return False
        if theirs is None:
            return True
        try:
            return bool(mine != dst.backend.load(fi.handle))
        except (NotFoundError, IntegrityError):
            return True  # missing or damaged on the target: the good copy replaces it
    if theirs is None:
        return True
    return theirs.size != fi.size  # immutable files are named by their content


def _verified_copy(src: Tier, dst: Tier, h: Handle) -> int:
    data = src.backend.load(h)
    # Archive marks are named by the snapshot they mark, not by their content;
    # they are small, sealed, and authenticated when read with the key.
    if h.type in CONTENT_NAMED and blake3.blake3(data, max_threads=1).hexdigest() != h.name:
        raise IntegrityError(f"{h} on {src.name} is damaged (content does not match its name)")
    dst.backend.save(h, data)
    return len(data)


def sync_tier(ts: TierSet, dst: Tier, progress: ProgressFn | None = None,
              workers: int = 4, references: PackReferences | None = None) -> SyncResult:
    """Synchronize ``dst`` from the first online tier of ``ts``.

    A pack the target holds but the source lacks is removed only when the
    source's index does not name it; if it does, the source lost it and the
    target's copy (verified by its content hash) is copied back instead: sync
    never deletes the only good copy. Without ``references`` (no key), such
    packs are kept and left to ``prune``.
    """
    sources = ts.online()
    res = SyncResult(dst.name, False)
    if not sources:
        res.error = "no online tier at the max revision to copy from"
        return res
    src = sources[0]
    abort = ts.abort_sync
    dst.state = SYNCING
    dst.record.state = SYNCING  # so that `tiers` in another process can show it
    top = ts.max_revision
    try:
        plan: list[tuple[FileType, list[FileInfo]]] = []
        extra: dict[FileType, list[Handle]] = {}
        for t in COPY_ORDER:
            mine = {fi.handle: fi for fi in src.backend.list(t)}
            theirs = {fi.handle: fi for fi in dst.backend.list(t)}
            todo = [fi for h, fi in mine.items()
                    if _differs(src, dst, fi, theirs.get(h), ts.notify)]
            plan.append((t, todo))
            extra[t] = [h for h in theirs if h not in mine]
        total = sum(fi.size for _, fis in plan for fi in fis)
        done = 0
        lock = threading.Lock()
        dst.record.sync_total, dst.record.sync_done = total, 0
        ts.db.save_tier(dst.record)

        def copy(fi: FileInfo) -> None:
            nonlocal done
            if abort.is_set():
                raise SyncAborted("synchronization aborted by a write")
            n = _verified_copy(src, dst, fi.handle)
            with lock:
                done += n
                res.files_copied += 1
                res.bytes_copied += n
                if progress is not None:
                    progress(dst, done, total)

        with ThreadPoolExecutor(workers, thread_name_prefix="sync") as ex:
            for _t, fis in plan:
                # Each kind completes before the next starts: dependency order.
                for f in [ex.submit(copy, fi) for fi in fis]:
                    f.result()
                dst.record.sync_done = done
                ts.db.save_tier(dst.record)
        extra[FileType.PACK] = _spare_needed_packs(src, dst, extra.get(FileType.PACK, []),
                                                   references, res)
        for t in REMOVE_ORDER:
            for h in extra.get(t, []):
                if abort.is_set():
                    raise SyncAborted("synchronization aborted by a write")
                try:
                    dst.backend.remove(h)
                except NotFoundError:
                    pass
                res.files_removed += 1
        if abort.is_set():
            raise SyncAborted("synchronization aborted by a write")
        with ts._raise_lock:
            # Recorded before it is written (crash or lost reply: either value is fine).
            dst.record.intended = top
            ts.db.save_tier(dst.record)
            dst.write_revision(top)
            dst.record.revision = top
            dst.record.missed = False
            dst.record.intended = None
            dst.record.sync_done = dst.record.sync_total = None
            dst.mark_online()
            ts.db.save_tier(dst.record)
        res.completed = True
    except SyncAborted as e:
        dst.state = UNSYNCHRONIZED
        res.error = str(e)
    except (BackendError, IntegrityError) as e:
        dst.state = UNSYNCHRONIZED if dst.state == SYNCING else dst.state
        res.error = str(e)
    finally:
        if dst.state == SYNCING:
            dst.state = UNSYNCHRONIZED
        dst.record.state = dst.state
        ts.db.save_tier(dst.record)
    return res


def _spare_needed_packs(src: Tier, dst: Tier, packs: list[Handle],
                        references: PackReferences | None, res: SyncResult) -> list[Handle]:
    """The extra packs that may really be removed; heal the source with the others."""
    if not packs:
        return []
    if references is None:
        return []  # cannot tell which packs the source still needs: keep them all
    needed = references(src)
    if needed is None:
        return []  # an index could not be read: keep every pack
    removable = []
    for h in packs:
        if h.name not in needed:
            removable.append(h)
            continue
        try:
            _verified_copy(dst, src, h)  # the source lost it: give it back
            res.files_healed += 1
        except (BackendError, IntegrityError):
            pass  # keep it on the target at least
    return removable


def sync_all(ts: TierSet, progress: ProgressFn | None = None, probe: bool = True,
             workers: int = 4, references: PackReferences | None = None) -> list[SyncResult]:
    """Probe offline tiers, then synchronize every reachable stale tier."""
    if probe:
        for t in ts.tiers:
            if t.state not in (ONLINE, UNSYNCHRONIZED):
                ts.reconnect(t, ts.probe_backend(t))  # one attempt: it was just offline
    # Writes before this point need not stop the sync; later ones do.
    ts.abort_sync.clear()
    if ts.stale() and ts.online() and not ts.read_only:
        # Whoever syncs holds the write lock: temporaries of other processes
        # are dead, and a stale tier is the one that saw a save break off.
        # After this, source and target are identical, hidden files included.
        clean_tiers([*ts.online(), *ts.stale()], ts.notify)
    results = []
    for t in ts.stale():
        results.append(sync_tier(ts, t, progress, workers, references))
    return results
