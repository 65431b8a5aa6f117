"""Synchronization (SPEC §5): bring a stale tier level with an online one.

First the temporaries dead writers left on the tiers involved are removed
(tiers/temporaries.py). Then copy what is missing or differs, in dependency
order (config and keys, then packs, then the indexes naming them, then the
archive marks and snapshots needing those, then the manifest), then remove
from the target what THIS INSTALLATION deleted (its durable deletion record),
newest kinds first. A file the source merely does not list is never removed:
a tier is never trusted to decide what another one loses; the target keeps it
(and gives it back to the source). Mutable files (keys, config, manifest) are
copied only once ``check`` accepts them. The source is an online tier at the
max revision that the manifest check did not find stale or damaged. The
target is a valid vault at every moment; an interrupted sync resumes by
copying only what is still missing. Any write aborts it. Afterwards the
target's revision is set explicitly to the max revision and it is marked
online.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import blake3

from tiervault.errors import BackendError, IntegrityError, NotFoundError, TierVaultError
from tiervault.storage.base import CONTENT_NAMED, MUTABLE, FileInfo, FileType, Handle
from tiervault.tiers.temporaries import clean_tiers
from tiervault.tiers.tier import SYNCING, UNSYNCHRONIZED, Tier
from tiervault.tiers.tierset import TierSet

# Archive marks before the snapshots they name, and removed after them: a
# snapshot is never on a tier without the mark that protects it from retention
# (a mark whose snapshot is not there yet is harmless).
COPY_ORDER = [FileType.CONFIG, FileType.KEY, FileType.PACK, FileType.INDEX, FileType.ARCHIVE,
              FileType.SNAPSHOT, FileType.MANIFEST]
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
    files_kept: int = 0  # on the target, not listed by the source, not deleted by us
    files_refused: int = 0  # mutable files of the source that failed validation
    error: str | None = None


class SyncAborted(TierVaultError):
    """A write started: synchronization stops and resumes later."""


ProgressFn = Callable[[Tier, int, int], None]
#: Names the packs a tier's own index files reference (needs the key); None = unknown.
PackReferences = Callable[[Tier], set[str] | None]
#: (handle, source bytes, target bytes or None) -> None to copy it, or why not.
MutableCheck = Callable[[Handle, bytes, bytes | None], str | None]


def _keyless_check(h: Handle, data: bytes, theirs: bytes | None) -> str | None:
    """Without a validator: add missing mutable files, never replace one."""
    return None if theirs is None else "cannot validate it"


def _differs(src: Tier, dst: Tier, fi: FileInfo, theirs: FileInfo | None,
             check: MutableCheck, res: SyncResult, notify: Callable[[str], None]) -> bool:
    if fi.handle.type in MUTABLE:
        try:
            mine = src.backend.load(fi.handle)
        except NotFoundError:
            return False
        except IntegrityError as e:
            # Past its size bound, or not a regular file: damaged or planted on
            # the source, so it never travels to another tier.
            notify(f"not copying {fi.handle} from {src.name}: {e}")
            res.files_refused += 1
            return False
        try:
            other = dst.backend.load(fi.handle) if theirs is not None else None
        except (NotFoundError, IntegrityError):
            other = None  # missing or damaged on the target: the good copy replaces it
        if mine == other:
            return False
        if check(fi.handle, mine, other) is not None:
            res.files_refused += 1
            return False
        return True
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
              workers: int = 4, references: PackReferences | None = None,
              check: MutableCheck | None = None) -> SyncResult:
    """Synchronize ``dst`` from the first trusted online tier of ``ts``.

    Only files this installation deleted (recorded in its state before) are
    removed from the target. A snapshot, index or key file the target holds
    but the source lacks is kept and copied back to the source; so is a pack
    the source's index still names (``references``, needs the key).
    """
    sources = [t for t in ts.online() if t.name not in ts.untrusted]
    res = SyncResult(dst.name, False)
    if not sources:
        bad = ", ".join(f"{n} ({why})" for n, why in ts.untrusted.items())
        res.error = ("no online tier at the max revision to copy from" if not bad else
                     f"no trustworthy tier to copy from: {bad}")
        return res
    check = check or _keyless_check
    src = sources[0]
    abort = ts.abort_sync
    dst.state = SYNCING
    dst.record.state = SYNCING  # so that `tiers` in another process can show it
    top = ts.max_revision
    try:
        plan: list[tuple[FileType, list[FileInfo]]] = []
        extra: dict[FileType, list[Handle]] = {}
        lacking: dict[FileType, list[Handle]] = {}
        for t in COPY_ORDER:
            # What we deleted never travels again, even if the source put it back.
            gone = ts.db.deleted(t.value)
            mine = {fi.handle: fi for fi in src.backend.list(t) if fi.handle.name not in gone}
            theirs = {fi.handle: fi for fi in dst.backend.list(t)}
            todo = [fi for h, fi in mine.items()
                    if _differs(src, dst, fi, theirs.get(h), check, res, ts.notify)]
            plan.append((t, todo))
            extra[t] = [h for h in theirs if h not in mine and h.name in gone]
            lacking[t] = [h for h in theirs if h not in mine and h.name not in gone]
        refs = None if references is None else _memo(references)
        if refs is not None:
            plan = _only_named_packs(plan, refs, src)
        total = sum(fi.size for _, fis in plan for fi in fis)
        done = 0
        lock = threading.Lock()
        dst.record.sync_total, dst.record.sync_done = total, 0
        ts.db.save_tier(dst.record)

        # Progress reaches the state database (``tiers``, the console's "syncing N%") every
        # 2% of the bytes, at least 1 MiB apart: the copy of the packs moves it, not only
        # the end of each kind of file.
        step = max(total // 50, 1 << 20)
        saved = 0

        def copy(fi: FileInfo) -> None:
            nonlocal done, saved
            if abort.is_set():
                raise SyncAborted("synchronization aborted by a write")
            n = _verified_copy(src, dst, fi.handle)
            with lock:
                done += n
                res.files_copied += 1
                res.bytes_copied += n
                if progress is not None:
                    progress(dst, done, total)
                if done - saved >= step:
                    saved = done
                    dst.record.sync_done = done
                    ts.db.save_tier(dst.record)

        for _t, fis in plan:
            # Each kind completes before the next starts: dependency order.
            _run_all(copy, fis, workers, abort)
            dst.record.sync_done = done
            ts.db.save_tier(dst.record)
        _give_back(src, dst, lacking, refs, check, res)
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
        ts.untrusted.pop(dst.name, None)  # healed from a trusted source
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


def _give_back(src: Tier, dst: Tier, lacking: dict[FileType, list[Handle]],
               references: PackReferences | None, check: MutableCheck,
               res: SyncResult) -> None:
    """Files the target holds and the source does not list: kept on the target
    (never removed on a tier's word), and copied back to the source where that
    is safe (immutable files verify by their name; packs only if the source's
    index names them)."""
    needed: set[str] | None = None
    if lacking.get(FileType.PACK) and references is not None:
        needed = references(src)
    for t in (FileType.KEY, FileType.PACK, FileType.INDEX, FileType.SNAPSHOT):
        for h in lacking.get(t, []):
            res.files_kept += 1
            if t is FileType.PACK and (needed is None or h.name not in needed):
                continue  # unreferenced: left for prune
            try:
                if t is FileType.KEY:
                    data = dst.backend.load(h)
                    if check(h, data, None) is not None:
                        continue
                    src.backend.save(h, data)
                else:
                    if t is not FileType.PACK and \
                            check(h, dst.backend.load(h), None) is not None:
                        continue  # does not open with the key: planted, never spread
                    _verified_copy(dst, src, h)
                res.files_healed += 1
            except (BackendError, IntegrityError):
                pass  # kept on the target at least


def _run_all(fn: Callable[[FileInfo], None], items: list[FileInfo], workers: int,
             abort: threading.Event) -> None:
    """``fn`` over ``items`` in ``workers`` daemon threads; the first error is raised.

    Daemon threads, and the caller does not wait for copies in flight when it is
    interrupted (SIGINT): the sync can be stopped at any moment without harm
    (every copy lands under a temporary name first), and a throttled upload must
    not keep the process alive.
    """
    if not items:
        return
    todo = list(reversed(items))
    lock = threading.Lock()
    errors: list[BaseException] = []
    finished = threading.Semaphore(0)
    n = min(workers, len(items))

    def work() -> None:
        try:
            while True:
                with lock:
                    if not todo or errors:
                        return
                    fi = todo.pop()
                try:
                    fn(fi)
                except BaseException as e:  # handed to the caller
                    with lock:
                        errors.append(e)
        finally:
            finished.release()

    for _ in range(n):
        threading.Thread(target=work, daemon=True, name="sync").start()
    try:
        for _ in range(n):
            while not finished.acquire(timeout=0.5):
                pass
    except BaseException:
        abort.set()  # the workers stop after the copy in hand
        raise
    if errors:
        raise errors[0]


def _memo(references: PackReferences) -> PackReferences:
    seen: dict[str, set[str] | None] = {}

    def refs(t: Tier) -> set[str] | None:
        if t.url not in seen:
            seen[t.url] = references(t)
        return seen[t.url]

    return refs


def _only_named_packs(plan: list[tuple[FileType, list[FileInfo]]],
                      references: PackReferences, src: Tier
                      ) -> list[tuple[FileType, list[FileInfo]]]:
    """Packs no index of the source names are left behind.

    Such a pack is what a failed or interrupted write session left (e.g. on a
    full disk): copying it would spread an orphan to every tier. ``prune``
    removes it where it is. (Sync runs only while no write session is live, so
    no pack of a running backup is waiting for its index.)
    """
    if not any(t is FileType.PACK and fis for t, fis in plan):
        return plan
    named = references(src)
    if named is None:
        return plan  # an index could not be read: copy every pack to be safe
    return [(t, [fi for fi in fis if fi.handle.name in named] if t is FileType.PACK else fis)
            for t, fis in plan]


def sync_all(ts: TierSet, progress: ProgressFn | None = None, probe: bool = True,
             workers: int = 4, references: PackReferences | None = None,
             check: MutableCheck | None = None) -> list[SyncResult]:
    """Probe offline tiers, then synchronize every reachable stale tier."""
    if probe:
        ts.probe_offline()  # one attempt each, bounded: they were just offline
    # Writes before this point need not stop the sync; later ones do.
    ts.abort_sync.clear()
    if ts.stale() and ts.online() and not ts.read_only:
        # Whoever syncs holds the write lock: temporaries of other processes
        # are dead, and a stale tier is the one that saw a save break off.
        # After this, source and target are identical, hidden files included.
        clean_tiers([*ts.online(), *ts.stale()], ts.notify)
    results = []
    for t in ts.stale():
        results.append(sync_tier(ts, t, progress, workers, references, check))
    return results
