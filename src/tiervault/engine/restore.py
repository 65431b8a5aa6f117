"""Restore: recreate a snapshot (or parts of it) under a target directory.

Safety: every name is vetted (no '..', '/', NUL; duplicates skipped), and
everything is reached from an open descriptor of the target one component at a
time with O_NOFOLLOW (:mod:`tiervault.engine.fsat`): entries are created with the
``*at`` calls and metadata is set on open descriptors, so neither what a snapshot
says nor another process swapping a restored directory for a symlink meanwhile
can make us create, replace or chmod anything outside the target (a swapped
directory is a warning for what is beneath it).
Content is read pack by pack (one ranged read serves many blobs) in parallel;
reading a local vault, runs of small blobs one at a time (threads would only
contend for the GIL). A file of one blob is created, written, given its
metadata and renamed in one go when its blob arrives.

Each file is written under a hidden temporary name beside its own
(``.NAME.tiervault-XXXXXXXX``) and takes its name, with its metadata already set,
only once all its content is written: an interrupted restore (SIGINT) stops
within about a second, removes its temporaries, and leaves only complete files,
each with its mode, owner and times (an older file of the same name stays until
the new one is complete). A file whose data cannot be read is not left either.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tiervault.engine.fsat import DirFds
from tiervault.engine.patterns import PathPattern
from tiervault.engine.progress import Progress
from tiervault.engine.restoremeta import OS_ERRORS as _OS_ERRORS
from tiervault.engine.restoremeta import MetaSetter, current_umask
from tiervault.engine.restoremeta import strerror as _strerror
from tiervault.engine.restoreselect import selected
from tiervault.engine.trees import TreeReader
from tiervault.errors import IntegrityError, Interrupted, TierVaultError, UsageError
from tiervault.vault.pack import PackEntry
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import Node

_GAP = 1024 * 1024  # read through gaps smaller than this instead of seeking
_MAX_RUN = 4 * 1024 * 1024  # bound on one ranged read (memory per worker)
_SMALL_BLOBS = 256 * 1024  # a run of blobs this large on average is "small" (_small_gate)
_BLOCK = 4096  # sparse files: zero runs this large (and aligned) stay holes
_ZEROS = bytes(_BLOCK)


#: A restore works through the snapshot in batches of at most this many files (or
#: this much content): memory follows the batch, not the number of files, and the
#: files of one batch, which a backup wrote side by side, share their pack reads.
BATCH_FILES = 4096
BATCH_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class _File:
    path: bytes
    node: Node  # as decoded (shared with the tree cache: never changed)
    link_to: bytes | None = None  # hard link to an earlier restored file
    source: bool = False  # the first name of a hard-linked file (later names link to it)
    tmp: bytes = b""  # where the content is written until it is complete
    ident: tuple[int, int] = (0, 0)  # the temporary's (st_dev, st_ino)
    left: int = 0  # blob writes still to come
    #: One blob, not sparse: created, written, given its metadata and its name in
    #: one go when its blob arrives (5 system calls instead of 14).
    oneshot: bool = False
    sparse: bool = False  # zero blocks stay holes


@dataclass
class _Batch:
    """The next files, symlinks and special files to create."""

    files: list[_File] = field(default_factory=list)
    links: list[tuple[bytes, Node]] = field(default_factory=list)
    specials: list[tuple[bytes, Node]] = field(default_factory=list)
    nbytes: int = 0

    def full(self) -> bool:
        return (len(self.files) + len(self.links) + len(self.specials) >= BATCH_FILES
                or self.nbytes >= BATCH_BYTES)


@dataclass(slots=True)
class _Dir:
    parts: tuple[bytes, ...]
    path: bytes
    node: Node


class Restorer:
    """Restores one snapshot into ``target``, streaming: the tree is walked once and
    restored as it is walked, a batch at a time (memory does not grow with the
    number of files), each directory given its metadata once all beneath it is done."""

    def __init__(self, repo: Repository, snap: Snapshot, target: str, progress: Progress,
                 includes: list[str] | None = None, workers: int = 4,
                 stop: threading.Event | None = None, no_devices: bool = False,
                 no_setuid: bool = False, max_open_dirs: int = 256,
                 local_reads: bool = False) -> None:
        self.repo = repo
        self.snap = snap
        self.target = os.path.abspath(os.fsencode(target))
        self.progress = progress
        self.includes = [PathPattern.parse(p) for p in includes or []]
        for inc in self.includes:
            if ".." in inc.parts:
                raise UsageError(f"path {inc.text!r} must not contain '..'")
        self.workers = workers
        # Reading a local vault, runs of small blobs are Python work (decode, create,
        # write, metadata) for each: threads only fight over the GIL (200k files:
        # 11.5 s with one at a time, 15-17 s with four). They go one at a time;
        # big blobs (hashing, decompression without the GIL) and network reads
        # (waiting) stay parallel.
        self._small_gate = threading.Semaphore(1) if local_reads else None
        # A walk loads each tree once: a large cache would only hold decoded trees.
        self.trees = TreeReader(repo, cache_size=4)
        self.is_root = os.geteuid() == 0
        self.no_devices = no_devices  # skip block/char device nodes (one warning)
        self.meta = MetaSetter(self._warn, no_setuid)
        self.max_open_dirs = max_open_dirs
        self._at: DirFds | None = None  # the target, open (during run)
        self._prefix = self.target.rstrip(b"/") + b"/"
        self._devices_skipped = 0
        self.stats = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0, "errors": 0}
        self._failed: set[bytes] = set()  # files whose content could not be restored
        # Directories known to be real directories reached from the target through
        # real directories only: nothing is created, changed or removed anywhere else,
        # so a symlink already in the target (or restored earlier) is never followed.
        # A directory leaves the set once it is complete (nothing more goes into it).
        self._good: set[bytes] = set()
        self._created: set[bytes] = set()  # first names of hard-linked files restored
        self._lost: set[bytes] = set()  # directories not restored (warned, or beneath one)
        #: Set to stop (SIGINT): workers end at the next blob.
        self.stop = stop if stop is not None else threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[bytes, _File] = {}  # temporaries not yet complete, by tmp path
        self._tmp_suffix = b".tiervault-" + secrets.token_hex(4).encode()
        self._pool: ThreadPoolExecutor | None = None  # content readers (during run)
        self._made: list[bytes] = []  # the target and its parents this restore created
        self._umask = current_umask()

    def entries(self) -> Iterator[tuple[tuple[bytes, ...], Node]]:
        """The snapshot's entries to restore, parents before children (see
        :func:`~tiervault.engine.restoreselect.selected`)."""
        walk = self.trees.walk(bytes.fromhex(self.snap.tree))
        return selected(walk, self.includes, self.snap.id) if self.includes else walk

    def run(self) -> dict[str, int]:
        """Restore; returns counters. Per-item problems become warnings."""
        if not self.includes:  # the backup counted what it saved; a part is not known
            st = self.snap.stats
            files = sum(int(st.get(k, 0)) for k in
                        ("files_new", "files_changed", "files_unmodified"))
            self.progress.set_total(files or None, int(st.get("bytes_total", 0)) or None)
        self._mkdir(self.target, top=True)
        try:
            self._at = DirFds.open_top(self.target, self.max_open_dirs)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(f"{os.fsdecode(self.target)} exists and is not a directory") \
                    from None
            raise TierVaultError(f"cannot open {os.fsdecode(self.target)}: {e.strerror}") \
                from None
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="restore")
        try:
            self._run()
        except UsageError:
            self._unmake()  # refused (an include not in the snapshot): leave no target
            raise
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._at.close()
            self._at = None
        return self.stats

    def _unmake(self) -> None:
        """Remove the target directories this restore created, if still empty."""
        for p in self._made:
            try:
                os.rmdir(p)
            except OSError:
                return

    def _run(self) -> None:
        first_link: dict[tuple[int, int], bytes] = {}
        batch = _Batch()
        open_dirs: list[_Dir] = []  # the directories being walked, outermost first
        done: list[_Dir] = []  # walked completely, deepest first: metadata after the batch
        try:
            for parts, node in self.entries():
                while open_dirs and parts[:len(open_dirs[-1].parts)] != open_dirs[-1].parts:
                    done.append(open_dirs.pop())
                full = self._under(parts)
                kind = node.kind
                if kind == "dir":
                    if self._mkdir(full):
                        open_dirs.append(_Dir(parts, full, _slim_dir(node)))
                    continue
                if kind == "file":
                    key = (node.get("dev"), node.get("inode"))
                    linked = node.get("nlink", 1) > 1
                    if linked and key in first_link:
                        batch.files.append(_File(full, node, link_to=first_link[key]))  # type: ignore[index]
                        continue
                    if linked:
                        first_link[key] = full  # type: ignore[index]
                    batch.files.append(_File(full, node, source=linked))
                    batch.nbytes += int(node.get("size", 0))
                elif kind == "symlink":
                    batch.links.append((full, node))
                else:
                    batch.specials.append((full, node))
                if batch.full():
                    self._flush(batch, done)
                    batch = _Batch()
            done.extend(reversed(open_dirs))
            open_dirs = []
            self._flush(batch, done)
        except BaseException:
            # Interrupted: complete files have their names and metadata already;
            # drop the partial ones, give directories their metadata, and stop.
            self.stop.set()
            self._drop_pending()
            done.extend(reversed(open_dirs))
            self._dir_meta(done)
            raise
        if self._devices_skipped:
            n = self._devices_skipped
            self.progress.warn(os.fsdecode(self.target),
                               f"skipped {n} device node{'s' if n != 1 else ''} (--no-devices)")

    def _flush(self, batch: _Batch, done: list[_Dir]) -> None:
        """Create a batch's entries, then give the directories completed meanwhile
        their metadata (deepest first, so their mtimes survive)."""
        at = self._fds()
        # Each phase walks down from the target afresh (a directory swapped for a
        # symlink meanwhile is noticed, not followed); within one, open directories
        # are reused.
        at.forget()
        created = self._create_files(batch.files)
        at.forget()
        self._write_content(created)
        self._drop_pending()  # files whose data could not be read (warned already)
        at.forget()
        for f in batch.files:
            if f.link_to is not None:
                self._hardlink(f)
        for path, node in batch.specials:
            self._special(path, node)
        for path, node in batch.links:
            self._symlink(path, node)
        self._dir_meta(done)
        for d in done:
            self._good.discard(d.path)
        done.clear()

    def _under(self, path: tuple[bytes, ...]) -> bytes:
        """Where ``path`` (vetted names) lands below the target; os.path.join would
        take time in the square of the depth."""
        return self.target.rstrip(b"/") + b"/" + b"/".join(path)

    def _fds(self) -> DirFds:
        assert self._at is not None, "only while running"
        return self._at

    def _rel(self, path: bytes) -> bytes:
        """``path`` (below the target) relative to the target."""
        return path[len(self._prefix):] if path != self.target else b""

    def _dir_meta(self, dirs: list[_Dir]) -> None:
        at = self._fds()
        at.forget()
        for d in dirs:
            if d.path not in self._good:
                continue
            try:
                with at.dir(self._rel(d.path)) as fd:
                    self.meta.on_fd(fd, d.node, d.path)
            except _OS_ERRORS as e:
                self._warn(d.path, _strerror(e))

    def _drop_pending(self) -> None:
        """Remove the temporaries of files that were not completed."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for tmp in pending:
            try:
                with self._fds().parent(self._rel(tmp)) as (dfd, name):
                    os.unlink(name, dir_fd=dfd)
            except OSError:
                pass

    def _finish_file(self, f: _File, fd: int | None = None) -> None:
        """All of ``f``'s content is written: metadata (on ``fd`` if it is open
        already), then its real name."""
        at = self._fds()
        try:
            with at.parent(self._rel(f.tmp)) as (dfd, tmp_name):
                own = fd is None
                if fd is None:
                    fd = at.open_file(dfd, tmp_name, os.O_RDONLY, expect=f.ident)
                try:
                    self.meta.on_fd(fd, f.node, f.path)
                finally:
                    if own:
                        os.close(fd)
                # Replaces an older file (or symlink), never follows it.
                os.rename(tmp_name, os.path.basename(f.path), src_dir_fd=dfd, dst_dir_fd=dfd)
        except _OS_ERRORS as e:
            self._warn(f.path, _strerror(e))
            return
        self._restored(f)

    def _restored(self, f: _File, nbytes: int = 0) -> None:
        """``f`` has its name: count it (and ``nbytes`` written with it)."""
        with self._lock:
            self.stats["bytes"] += nbytes
            self._pending.pop(f.tmp, None)
            if f.source:
                self._created.add(f.path)
            self.stats["files"] += 1
        self.progress.add(1)
        if self.progress.wants_items:  # -v
            self.progress.item("restored", os.fsdecode(f.path))

    # -- creating things ------------------------------------------------------------

    def _warn(self, path: bytes, msg: str) -> None:
        with self._lock:  # workers warn too
            self.stats["errors"] += 1
        self.progress.warn(os.fsdecode(path), msg)

    def _mkdir(self, path: bytes, top: bool = False) -> bool:
        if not top:
            if not self._parent_ok(path):
                self._orphan(path)
                self._lost.add(path)
                return False
            try:
                self._fds().mkdir(self._rel(path))
            except _OS_ERRORS as e:
                if getattr(e, "strerror", None) == "exists and is not a directory":
                    self._warn(path, "exists and is not a directory; not restoring beneath it")
                else:
                    self._warn(path, _strerror(e))
                self._lost.add(path)
                return False
            self._good.add(path)
            self.stats["dirs"] += 1
            return True
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            missing, p = [], path
            while not os.path.lexists(p):  # deepest first
                missing.append(p)
                p = os.path.dirname(p)
            try:
                os.makedirs(path, mode=0o700, exist_ok=True)
                self._made = missing
                self._good.add(path)
                return True
            except OSError as e:
                raise TierVaultError(f"cannot create {os.fsdecode(path)}: {e.strerror}") \
                    from None
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{os.fsdecode(path)} exists and is not a directory")
        self._good.add(path)
        return True

    def _orphan(self, path: bytes) -> None:
        """An entry whose directory is not restored. Only the highest one is a warning:
        below a directory already reported, entries are counted, not listed again
        (a chain thousands deep past PATH_MAX is one line, not thousands)."""
        if os.path.dirname(path) in self._lost:
            with self._lock:
                self.stats["errors"] += 1
        else:
            self._warn(path, "parent directory could not be restored")

    def _parent_ok(self, path: bytes) -> bool:
        # Created or found a real directory (the target itself always is).
        parent = os.path.dirname(path)
        return parent in self._good or parent == self.target

    def _create_files(self, files: list[_File]) -> list[_File]:
        created = []
        at = self._fds()
        for f in files:
            if f.link_to is not None:
                continue
            if not self._parent_ok(f.path):
                self._orphan(f.path)
                continue
            content = f.node.get("content")
            if content and len(content) == 1 and not f.node.get("sparse"):
                f.oneshot = True  # created when its blob arrives (_write_whole)
                created.append(f)
                continue
            try:
                with at.parent(self._rel(f.path)) as (dfd, name):
                    st = at.lstat_at(dfd, name)
                    if st is not None and stat.S_ISDIR(st.st_mode):
                        raise OSError(errno.EISDIR, "a directory is in the way")
                    tmp_name = b"." + name[:200] + self._tmp_suffix
                    fd = at.open_file(dfd, tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                f.tmp = os.path.join(os.path.dirname(f.path), tmp_name)
                with self._lock:
                    self._pending[f.tmp] = f
                try:
                    st = os.fstat(fd)
                    f.ident = (st.st_dev, st.st_ino)
                    size = f.node.get("size", 0)
                    if size:
                        os.ftruncate(fd, size)
                finally:
                    os.close(fd)
                created.append(f)
            except _OS_ERRORS as e:
                self._warn(f.path, _strerror(e))
        return created

    def _write_content(self, files: list[_File]) -> None:
        # blob -> [(file, offset)] and pack -> its needed blobs
        targets: dict[bytes, list[tuple[_File, int]]] = defaultdict(list)
        by_pack: dict[bytes, list[PackEntry]] = defaultdict(list)
        lookup = self.repo.index.lookup
        for f in files:
            off = 0
            sparse = bool(f.node.get("sparse"))
            for bid in f.node.get("content") or []:
                dests = targets[bid]
                dests.append((f, off))
                f.left += 1
                loc = lookup(bid)
                if loc is None:
                    self._failed.add(f.path)
                    self._warn(f.path, f"data blob {bid.hex()[:16]} is missing from the vault")
                    break
                if len(dests) == 1:  # the first file to need it: read it once
                    by_pack[loc[0]].append(loc[1])
                off += loc[1].raw_length
            f.sparse = sparse
        jobs = []
        for pid, entries in by_pack.items():
            entries.sort(key=lambda e: e.offset)
            run: list[PackEntry] = []
            for e in entries:
                if run and (e.offset - (run[-1].offset + run[-1].length) > _GAP
                            or e.offset + e.length - run[0].offset > _MAX_RUN):
                    jobs.append((pid, run))
                    run = []
                run.append(e)
            jobs.append((pid, run))
        failed = self._failed
        for f in files:
            if f.left == 0 and f.path not in failed:
                self._finish_file(f)  # empty: complete already

        def write(ent: PackEntry, data: bytes) -> None:
            if self.stop.is_set():
                raise Interrupted("interrupted")
            with self._lock:
                # Popped: memory follows what is still to write, and the same bytes
                # again (a read that moved on to the next tier) are not counted twice.
                dests = targets.pop(ent.id, None)
            if dests is None:
                return
            for f, off in dests:
                if f.oneshot:
                    self._write_whole(f, data)
                    continue
                fd = self._pwrite(f, off, data)
                try:
                    with self._lock:
                        f.left -= 1
                        last = f.left == 0 and f.path not in failed
                    if last:
                        self._finish_file(f, fd)
                finally:
                    if fd is not None:
                        os.close(fd)

        def job(pid: bytes, run: list[PackEntry]) -> None:
            gate = self._small_gate
            if gate is not None and sum(e.raw_length for e in run) < _SMALL_BLOBS * len(run):
                with gate:
                    read(pid, run)
            else:
                read(pid, run)

        def read(pid: bytes, run: list[PackEntry]) -> None:
            try:
                self.repo.stream_blobs_from_pack(pid, run, write)
            except Interrupted:
                raise
            except TierVaultError as e:
                if len(run) > 1 and isinstance(e, IntegrityError):
                    # One damaged blob must not cost the good ones read with it.
                    for ent in run:
                        read(pid, [ent])  # (the gate is held already, if it is)
                    return
                for ent in run:
                    for f, _ in targets.get(ent.id, ()):
                        if f.path not in failed:
                            failed.add(f.path)
                            self._warn(f.path, str(e))
                return

        assert self._pool is not None, "only while running"
        futs = [self._pool.submit(job, pid, run) for pid, run in jobs]
        try:
            for fut in futs:
                fut.result()
        except BaseException:
            self.stop.set()  # running jobs stop at their next blob (or bandwidth wait)
            for fut in futs:
                fut.cancel()
            wait(futs)
            raise

    def _write_whole(self, f: _File, data: bytes) -> None:
        """A file of one blob: its temporary created with the data, the metadata set
        on the open descriptor, then renamed to its name; warned on failure."""
        at = self._fds()
        node = f.node
        # Created with its final mode when nothing would change it (no special
        # bits, none the umask removes): one chmod less. Else 0600, chmod after chown.
        mode = self.meta.mode(node)
        direct = mode & ~0o777 == 0 and mode & self._umask == 0
        try:
            with at.parent(self._rel(f.path)) as (dfd, name):
                tmp_name = b"." + name[:200] + self._tmp_suffix
                fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode if direct else 0o600, dir_fd=dfd)
                f.tmp = f.path[:len(f.path) - len(name)] + tmp_name
                with self._lock:
                    self._pending[f.tmp] = f
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    self.meta.on_fd(fd, node, f.path, chmod=not direct)
                    try:
                        os.rename(tmp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                    except IsADirectoryError:
                        raise OSError(errno.EISDIR, "a directory is in the way") from None
                finally:
                    os.close(fd)
        except _OS_ERRORS as e:
            self._failed.add(f.path)  # its temporary goes with the pending ones
            self._warn(f.path, _strerror(e))
            return
        self.progress.add(0, len(data))
        self._restored(f, len(data))

    def _pwrite(self, f: _File, off: int, data: bytes) -> int | None:
        """Write ``data`` at ``off`` of ``f``'s temporary; returns the still open
        descriptor (None for a hole or a failure, warned)."""
        # Sparse files: skip whole zero blocks (ftruncate already made them holes).
        runs = _nonzero_runs(data, off) if f.sparse else [(0, len(data))]
        if not runs:
            self.progress.add(0, len(data))
            # A hole counts as restored bytes: the summary gives the files' apparent
            # size, the measure of the backup's "processed" (holes and all).
            self.stats["bytes"] += len(data)
            return None  # a hole: ftruncate already made it
        fd = None
        try:
            at = self._fds()
            with at.parent(self._rel(f.tmp)) as (dfd, tmp_name):
                fd = at.open_file(dfd, tmp_name, os.O_WRONLY, expect=f.ident)
            for start, end in runs:
                view = memoryview(data)[start:end]
                pos = off + start
                while view:
                    n = os.pwrite(fd, view, pos)
                    view, pos = view[n:], pos + n
            self.progress.add(0, len(data))
            self.stats["bytes"] += len(data)
            return fd
        except OSError as e:
            if fd is not None:
                os.close(fd)
            self._failed.add(f.path)
            self._warn(f.path, e.strerror or str(e))
            return None

    def _hardlink(self, f: _File) -> None:
        assert f.link_to is not None
        if not self._parent_ok(f.path) or f.link_to not in self._created:
            self._warn(f.path, "hard link: parent directory or first name could not be restored")
            return
        at = self._fds()
        try:
            with at.parent(self._rel(f.link_to)) as (sfd, src), \
                    at.parent(self._rel(f.path)) as (dfd, name):
                at.remove_if_file(dfd, name)
                os.link(src, name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            self.stats["files"] += 1
            # Counted as the backup counts it: every name of a file with its size.
            self.stats["bytes"] += int(f.node.get("size", 0))
        except OSError as e:
            self._warn(f.path, f"hard link: {e.strerror}")

    def _symlink(self, path: bytes, node: Node) -> None:
        if not self._parent_ok(path):
            self._orphan(path)
            return
        at = self._fds()
        try:
            with at.parent(self._rel(path)) as (dfd, name):
                at.remove_if_file(dfd, name)
                os.symlink(node.get("target", b""), name, dir_fd=dfd)
                self.stats["symlinks"] += 1
                self.meta.at(dfd, name, node, path)
        except _OS_ERRORS as e:
            self._warn(path, _strerror(e))

    def _special(self, path: bytes, node: Node) -> None:
        if not self._parent_ok(path):
            return
        kind = node.kind
        if kind in ("chardev", "blockdev") and self.no_devices:
            self._devices_skipped += 1
            return
        at = self._fds()
        try:
            with at.parent(self._rel(path)) as (dfd, name):
                if kind == "fifo":
                    at.remove_if_file(dfd, name)
                    os.mkfifo(name, 0o600, dir_fd=dfd)
                elif kind in ("chardev", "blockdev"):
                    if not self.is_root:
                        self._warn(path, "device nodes can only be restored by root; skipped")
                        return
                    at.remove_if_file(dfd, name)
                    mode = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
                    os.mknod(name, mode | 0o600, node.get("rdev", 0), dir_fd=dfd)
                else:
                    return  # sockets belong to the process that made them
                self.meta.at(dfd, name, node, path)
        except _OS_ERRORS as e:
            self._warn(path, _strerror(e))


#: What a directory's metadata needs (kept until all beneath it is restored).
_DIR_FIELDS = ("type", "mode", "uid", "gid", "atime", "mtime", "xattrs")


def _slim_dir(node: Node) -> Node:
    return Node({k: node[k] for k in _DIR_FIELDS if k in node})


def _nonzero_runs(data: bytes, off: int) -> list[tuple[int, int]]:
    """Ranges of ``data`` (to be written at file offset ``off``) that are not
    whole file-system blocks of zeros; the zero blocks between stay holes."""
    runs: list[tuple[int, int]] = []
    mv = memoryview(data)
    i, n = 0, len(data)
    while i < n:
        j = min(n, (off + i) // _BLOCK * _BLOCK + _BLOCK - off)
        if mv[i:j] != _ZEROS[:j - i]:
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], j)
            else:
                runs.append((i, j))
        i = j
    return runs
