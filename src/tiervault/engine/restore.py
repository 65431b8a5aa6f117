"""Restore: recreate a snapshot (or parts of it) under a target directory.

Safety: every name is vetted (no '..', '/', NUL; duplicates skipped), each
directory on the way is checked to be a real directory (never a symlink),
files are opened with O_NOFOLLOW, and symlinks are created only at the very
end, so nothing a snapshot says can make us write outside the target.
Content is read pack by pack (one ranged read serves many blobs) in parallel.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tiervault.engine.patterns import PathPattern
from tiervault.engine.progress import Progress
from tiervault.engine.trees import TreeReader
from tiervault.errors import IntegrityError, Interrupted, TierVaultError, UsageError
from tiervault.vault.pack import PackEntry
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import Node

_GAP = 1024 * 1024  # read through gaps smaller than this instead of seeking
_MAX_RUN = 4 * 1024 * 1024  # bound on one ranged read (memory per worker)
_BLOCK = 4096  # sparse files: zero runs this large (and aligned) stay holes
# What hostile metadata (a uid of 2**40, a NUL in a symlink target, a negative
# device number) makes the os functions raise besides OSError.
_OS_ERRORS = (OSError, ValueError, OverflowError, TypeError)
_ZEROS = bytes(_BLOCK)


@dataclass(slots=True)
class _File:
    path: bytes
    node: Node
    link_to: bytes | None = None  # hard link to an earlier restored file
    tmp: bytes = b""  # where the content is written until it is complete
    left: int = 0  # blob writes still to come


@dataclass
class RestorePlan:
    """What a restore will create."""

    dirs: list[tuple[bytes, Node]] = field(default_factory=list)
    files: list[_File] = field(default_factory=list)
    links: list[tuple[bytes, Node]] = field(default_factory=list)
    specials: list[tuple[bytes, Node]] = field(default_factory=list)


class Restorer:
    """Restores one snapshot into ``target``."""

    def __init__(self, repo: Repository, snap: Snapshot, target: str, progress: Progress,
                 includes: list[str] | None = None, workers: int = 4,
                 stop: threading.Event | None = None) -> None:
        self.repo = repo
        self.snap = snap
        self.target = os.path.abspath(os.fsencode(target))
        self.progress = progress
        self.includes = [PathPattern.parse(p) for p in includes or []]
        for inc in self.includes:
            if ".." in inc.parts:
                raise UsageError(f"path {inc.text!r} must not contain '..'")
        self.workers = workers
        self.trees = TreeReader(repo)
        self.is_root = os.geteuid() == 0
        self.stats = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0, "errors": 0}
        self._failed: set[bytes] = set()  # files whose content could not be restored
        # Directories known to be real directories reached from the target through
        # real directories only: nothing is created, changed or removed anywhere else,
        # so a symlink already in the target (or restored earlier) is never followed.
        self._good: set[bytes] = set()
        self._created: set[bytes] = set()  # files this run created (hard link sources)
        self._lost: set[bytes] = set()  # directories not restored (warned, or beneath one)
        #: Set to stop (SIGINT): workers end at the next blob.
        self.stop = stop if stop is not None else threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[bytes, _File] = {}  # temporaries not yet complete, by tmp path
        self._tmp_suffix = b".tiervault-" + secrets.token_hex(4).encode()

    def plan(self) -> RestorePlan:
        """Walk the snapshot's tree and decide what to create.

        With include patterns, an entry is restored if it or a directory above
        it matches; the directories leading to it are restored too (with their
        metadata), nothing else.
        """
        plan = RestorePlan()
        first_link: dict[tuple[int, int], bytes] = {}
        matched: set[PathPattern] = set()
        selected_dirs: set[tuple[bytes, ...]] = set()
        # The unselected directories above the entry being visited (the walk is
        # depth first), each with whether it is in the plan already.
        above: list[list[Any]] = []
        for path, node in self.trees.walk(bytes.fromhex(self.snap.tree)):
            if self.includes:
                while above and above[-1][0] != path[:len(above[-1][0])]:
                    above.pop()
                hits = [] if path[:-1] in selected_dirs else [
                    i for i in self.includes if i.matches(path)]
                matched.update(hits)
                if not hits and path[:-1] not in selected_dirs:
                    if node.kind == "dir":
                        above.append([path, node, False])
                    continue
                if node.kind == "dir":
                    selected_dirs.add(path)
                for entry in above:
                    if not entry[2]:
                        plan.dirs.append((self._under(entry[0]), entry[1]))
                        entry[2] = True
            full = self._under(path)
            kind = node.kind
            if kind == "dir":
                plan.dirs.append((full, node))
            elif kind == "file":
                key = (node.get("dev"), node.get("inode"))
                if node.get("nlink", 1) > 1 and key in first_link:
                    plan.files.append(_File(full, _slim(node), link_to=first_link[key]))  # type: ignore[index]
                    continue
                if node.get("nlink", 1) > 1:
                    first_link[key] = full  # type: ignore[index]
                plan.files.append(_File(full, _slim(node)))
            elif kind == "symlink":
                plan.links.append((full, node))
            else:
                plan.specials.append((full, node))
        missing = [i for i in self.includes if i not in matched]
        if missing:
            m = missing[0]
            if m.is_literal():
                raise UsageError(f"{m.text.rstrip('/') or '/'} is not in snapshot "
                                 f"{self.snap.id[:8]}")
            raise UsageError(f"nothing in snapshot {self.snap.id[:8]} matches {m.text!r}")
        return plan

    def _under(self, path: tuple[bytes, ...]) -> bytes:
        """Where ``path`` (vetted names) lands below the target; os.path.join would
        take time in the square of the depth."""
        return self.target.rstrip(b"/") + b"/" + b"/".join(path)

    def run(self) -> dict[str, int]:
        """Restore; returns counters. Per-item problems become warnings."""
        plan = self.plan()
        total = sum(f.node.get("size", 0) for f in plan.files if f.link_to is None)
        self.progress.set_total(len(plan.files), total)
        self._mkdir(self.target, top=True)
        for path, _node in plan.dirs:
            self._mkdir(path)
        try:
            created = self._create_files(plan.files)
            self._write_content(created)
        except BaseException:
            # Interrupted: complete files have their names and metadata already;
            # drop the partial ones, give directories their metadata, and stop.
            self.stop.set()
            self._drop_pending()
            self._dir_meta(plan)
            raise
        self._drop_pending()  # files whose data could not be read (warned already)
        for f in plan.files:
            if f.link_to is not None:
                self._hardlink(f)
        for path, node in plan.specials:
            self._special(path, node)
        for path, node in plan.links:
            self._symlink(path, node)
        self._dir_meta(plan)
        self.stats["dirs"] = sum(1 for path, _ in plan.dirs if path in self._good)
        return self.stats

    def _dir_meta(self, plan: RestorePlan) -> None:
        # Directories last, deepest first, so their mtimes survive.
        for path, node in reversed(plan.dirs):
            if path in self._good:
                self._set_meta(path, node)

    def _drop_pending(self) -> None:
        """Remove the temporaries of files that were not completed."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for tmp in pending:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _finish_file(self, f: _File) -> None:
        """All of ``f``'s content is written: metadata, then its real name."""
        self._set_meta(f.tmp, f.node, shown=f.path)
        try:
            os.rename(f.tmp, f.path)  # replaces an older file (or symlink), never follows it
        except OSError as e:
            self._warn(f.path, e.strerror or str(e))
            return
        with self._lock:
            self._pending.pop(f.tmp, None)
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
        if not top and not self._parent_ok(path):
            self._orphan(path)
            self._lost.add(path)
            return False
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                if top:
                    os.makedirs(path, mode=0o700, exist_ok=True)
                else:
                    os.mkdir(path, 0o700)
                self._good.add(path)
                return True
            except OSError as e:
                if top:
                    raise TierVaultError(f"cannot create {os.fsdecode(path)}: {e.strerror}") \
                        from None
                self._warn(path, e.strerror or str(e))
                self._lost.add(path)
                return False
        except OSError as e:  # ENAMETOOLONG: deeper than PATH_MAX below the target
            if top:
                raise TierVaultError(f"cannot use {os.fsdecode(path)}: {e.strerror}") from None
            self._warn(path, e.strerror or str(e))
            self._lost.add(path)
            return False
        if not stat.S_ISDIR(st.st_mode):
            if top:
                raise UsageError(f"{os.fsdecode(path)} exists and is not a directory")
            self._warn(path, "exists and is not a directory; not restoring beneath it")
            self._lost.add(path)
            return False
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
        # Not lstat(parent): that follows symlinks in the parent's own ancestors.
        return os.path.dirname(path) in self._good

    def _create_files(self, files: list[_File]) -> list[_File]:
        created = []
        for f in files:
            if f.link_to is not None:
                continue
            if not self._parent_ok(f.path):
                self._orphan(f.path)
                continue
            try:
                _check_not_dir(f.path)
                d, name = os.path.split(f.path)
                f.tmp = os.path.join(d, b"." + name[:200] + self._tmp_suffix)
                fd = os.open(f.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with self._lock:
                    self._pending[f.tmp] = f
                try:
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
        for f in files:
            off = 0
            sparse = bool(f.node.get("sparse"))
            for bid in f.node.get("content") or []:
                targets[bid].append((f, off))
                f.left += 1
                loc = self.repo.index.lookup(bid)
                if loc is None:
                    self._failed.add(f.path)
                    self._warn(f.path, f"data blob {bid.hex()[:16]} is missing from the vault")
                    break
                off += loc[1].raw_length
            f.node["_sparse"] = sparse
            f.node.pop("content", None)  # ``targets`` holds what is still needed
        by_pack: dict[bytes, list[PackEntry]] = defaultdict(list)
        for bid in targets:
            loc = self.repo.index.lookup(bid)
            if loc is not None:
                by_pack[loc[0]].append(loc[1])
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
            done = []
            for f, off in dests:
                self._pwrite(f, off, data)
                with self._lock:
                    f.left -= 1
                    if f.left == 0 and f.path not in failed:
                        done.append(f)
            for f in done:
                self._finish_file(f)

        def job(pid: bytes, run: list[PackEntry]) -> None:
            try:
                self.repo.stream_blobs_from_pack(pid, run, write)
            except Interrupted:
                raise
            except TierVaultError as e:
                if len(run) > 1 and isinstance(e, IntegrityError):
                    # One damaged blob must not cost the good ones read with it.
                    for ent in run:
                        job(pid, [ent])
                    return
                for ent in run:
                    for f, _ in targets.get(ent.id, ()):
                        if f.path not in failed:
                            failed.add(f.path)
                            self._warn(f.path, str(e))
                return

        ex = ThreadPoolExecutor(self.workers, thread_name_prefix="restore")
        try:
            for fut in [ex.submit(job, pid, run) for pid, run in jobs]:
                fut.result()
        except BaseException:
            self.stop.set()  # running jobs stop at their next blob (or bandwidth wait)
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)

    def _pwrite(self, f: _File, off: int, data: bytes) -> None:
        # Sparse files: skip whole zero blocks (ftruncate already made them holes).
        runs = _nonzero_runs(data, off) if f.node.get("_sparse") else [(0, len(data))]
        if not runs:
            self.progress.add(0, len(data))
            # A hole counts as restored bytes: the summary gives the files' apparent
            # size, the measure of the backup's "processed" (holes and all).
            self.stats["bytes"] += len(data)
            return  # a hole: ftruncate already made it
        try:
            fd = os.open(f.tmp, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                for start, end in runs:
                    view = memoryview(data)[start:end]
                    pos = off + start
                    while view:
                        n = os.pwrite(fd, view, pos)
                        view, pos = view[n:], pos + n
            finally:
                os.close(fd)
            self.progress.add(0, len(data))
            self.stats["bytes"] += len(data)
        except OSError as e:
            self._failed.add(f.path)
            self._warn(f.path, e.strerror or str(e))

    def _hardlink(self, f: _File) -> None:
        assert f.link_to is not None
        if not self._parent_ok(f.path) or f.link_to not in self._created:
            self._warn(f.path, "hard link: parent directory or first name could not be restored")
            return
        try:
            _remove_if_file(f.path)
            os.link(f.link_to, f.path, follow_symlinks=False)
            self.stats["files"] += 1
            # Counted as the backup counts it: every name of a file with its size.
            self.stats["bytes"] += int(f.node.get("size", 0))
        except OSError as e:
            self._warn(f.path, f"hard link: {e.strerror}")

    def _symlink(self, path: bytes, node: Node) -> None:
        if not self._parent_ok(path):
            self._orphan(path)
            return
        try:
            _remove_if_file(path)
            os.symlink(node.get("target", b""), path)
            self.stats["symlinks"] += 1
            self._set_meta(path, node)
        except _OS_ERRORS as e:
            self._warn(path, _strerror(e))

    def _special(self, path: bytes, node: Node) -> None:
        if not self._parent_ok(path):
            return
        kind = node.kind
        try:
            _remove_if_file(path)
            if kind == "fifo":
                os.mkfifo(path, 0o600)
            elif kind in ("chardev", "blockdev"):
                if not self.is_root:
                    self._warn(path, "device nodes can only be restored by root; skipped")
                    return
                mode = stat.S_IFCHR if kind == "chardev" else stat.S_IFBLK
                os.mknod(path, mode | 0o600, node.get("rdev", 0))
            else:
                return  # sockets belong to the process that made them
            self._set_meta(path, node)
        except _OS_ERRORS as e:
            self._warn(path, _strerror(e))

    def _set_meta(self, path: bytes, node: Node, shown: bytes | None = None) -> None:
        """Owner, xattrs, mode and times of ``path`` (warnings name ``shown``)."""
        link = node.kind == "symlink"
        path_shown = shown or path
        try:
            if self.is_root or node.get("uid") == os.geteuid():
                uid, gid = node.get("uid", -1), node.get("gid", -1)
                try:
                    os.chown(path, uid, gid, follow_symlinks=False)
                except _OS_ERRORS as e:
                    if not link:
                        self._warn(path_shown, f"owner: {_strerror(e)}")
            for name, value in node.get("xattrs") or []:
                try:
                    os.setxattr(path, name, value, follow_symlinks=False)
                except _OS_ERRORS as e:
                    if getattr(e, "errno", None) not in (errno.EPERM, errno.ENOTSUP) or not link:
                        self._warn(path_shown, f"xattr {os.fsdecode(name)!r}: {_strerror(e)}")
            if not link:
                os.chmod(path, node.get("mode", 0o600) & 0o7777)
            if "mtime" in node:
                os.utime(path, ns=(node.get("atime", node["mtime"]), node["mtime"]),
                         follow_symlinks=False)
        except _OS_ERRORS as e:
            self._warn(path_shown, _strerror(e))


#: What restoring a file needs of its node (the plan holds one per file: keep it small).
_FILE_FIELDS = ("type", "mode", "uid", "gid", "atime", "mtime", "xattrs", "size", "content",
                "sparse")


def _slim(node: Node) -> Node:
    return Node({k: node[k] for k in _FILE_FIELDS if k in node})


def _strerror(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


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


def _check_not_dir(path: bytes) -> None:
    """A restored file may replace a file or symlink, never a directory."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, "a directory is in the way")


def _remove_if_file(path: bytes) -> None:
    """Make room for a restored entry; never removes a directory."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, "a directory is in the way")
    os.unlink(path)
