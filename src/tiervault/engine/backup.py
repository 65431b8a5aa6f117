"""Backup: walk paths, skip unchanged files, chunk and store the rest, write trees.

The main thread walks and builds trees; worker threads read, chunk, hash,
compress and encrypt file contents (the libraries release the GIL), and once
many entries are met, worker processes do so for small new files
(``engine.procread``); the blob writer uploads packs in its own threads. A
bounded window of files in flight keeps memory flat however big the tree.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import BinaryIO

from tiervault.engine.backupopts import BackupOptions, normalise, user_name
from tiervault.engine.dirjob import MAIN, NODE, OTHER, READ, UNCHANGED, WARN, Entry, JobSpec
from tiervault.engine.excludes import Excluder, parse_tag_specs, tagged
from tiervault.engine.filereader import SMALL, FileReader
from tiervault.engine.metadata import kind_of, node_from_stat
from tiervault.engine.parent import ParentTrees
from tiervault.engine.pending import (
    FileResult,
    PendingDir,
    Read,
    Stored,
    SubDir,
    Unchanged,
    dir_key,
    item_name,
)
from tiervault.engine.procread import START_AFTER as _JOBS_AFTER
from tiervault.engine.procread import JobHandle, JobPool, usable_cores
from tiervault.engine.progress import Progress
from tiervault.state.db import CachedFile, StateDB
from tiervault.vault.blobwriter import BlobWriter
from tiervault.vault.pack import BlobType
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import Node, encode_entries, encode_tree

_INLINE = 64 * 1024  # files up to this size are read by the walking thread itself...
_SLOW_INLINE = 0.0005  # ...while that takes less than this (s): else the disk or network
_RESAMPLE = 32  # is the bottleneck and the workers overlap the waits; every Nth is re-timed
# How far the walk may run ahead of the workers. Only running reads hold file data
# (a small file whole, a streamed one the chunker's buffer), so memory is bounded by
# the workers, not by these; a window of a few big files made the walk wait on the
# oldest while a worker idled (cold cache: 12.4 -> 11.1 s on the bench dataset).
_INFLIGHT_BYTES = 256 * 1024 * 1024
_INFLIGHT_FILES = 64
_CACHE_SAFETY_NS = 2_000_000_000  # don't trust mtimes this close to the backup start

#: How -v names each count.
_ITEM_WORDS = {"files_new": "new", "files_changed": "changed",
               "files_unmodified": "unchanged"}


class Archiver:
    """Runs one backup session against an open repository."""

    def __init__(self, repo: Repository, writer: BlobWriter, db: StateDB | None,
                 progress: Progress, opts: BackupOptions, parent: Snapshot | None = None,
                 stop: threading.Event | None = None) -> None:
        self.repo = repo
        self.writer = writer
        self.db = db if opts.use_cache else None
        self.progress = progress
        self.opts = opts
        self.excluder = Excluder(opts.excludes, opts.iexcludes)
        self._tags = parse_tag_specs(opts.exclude_if_present, opts.exclude_caches)
        self._max_size = opts.exclude_larger_than
        #: Set to stop (SIGINT, a cancelled job): workers end at the next chunk.
        self.stop = stop if stop is not None else threading.Event()
        self.pool = ThreadPoolExecutor(max(1, opts.workers), thread_name_prefix="read")
        self.reader = FileReader(repo, writer, progress, self.stop)
        self._inflight: deque[tuple[Future[FileResult], int]] = deque()
        self._inflight_bytes = 0
        self._ready: deque[PendingDir] = deque()
        self._draining = False
        self._hardlinks: dict[tuple[int, int], Read] = {}
        self._counted: set[int] = set()  # ids of hard-linked reads already counted
        self._start_ns = time.time_ns()
        self.stats = {"files_new": 0, "files_changed": 0, "files_unmodified": 0, "dirs": 0,
                      "files_read": 0, "bytes_read": 0, "bytes_total": 0, "errors": 0}
        self._dev: int | None = None
        # Small files are read inline only if their data is cached (Linux preadv2
        # RWF_NOWAIT); elsewhere a moving average of the time they take decides.
        self._inline_s = 0.0  # moving average of the time to read and store a small file
        self._small_seen = 0
        # Many small files: worker processes stat, read and seal them (both cores busy).
        procs = min(usable_cores() if opts.processes is None else opts.processes,
                    opts.workers)
        spec = JobSpec(repo.key.material, repo.codec.level, repo.config.chunker,
                       self._max_size, os.geteuid())
        self._jobs = JobPool(spec, writer, procs, self.progress.add) \
            if procs > 1 and hasattr(writer, "save_sealed") else None
        self._seen = 0  # entries the walk met before the worker processes start
        # The parent snapshot (same host and paths): the counts say new, changed or
        # unchanged against it.
        self._parent = ParentTrees(repo, parent) if parent is not None else None
        # Cache hits count as unchanged without reading the parent's trees only if
        # the cache rows of these paths are the parent's: an interrupted backup (or
        # one without a snapshot) leaves them ahead of it (trial 4).
        self._scope = "\0".join([opts.hostname(), *opts.snapshot_paths()])
        self._cache_is_parents = parent is not None and self.db is not None and \
            self.db.cache_snapshot(self._scope) == parent.id
        if self.db is not None and not opts.dry_run and opts.stdin_filename is None:
            self.db.set_cache_snapshot(self._scope, None)  # until this one completes

    # -- walking -----------------------------------------------------------------------

    def run(self) -> Snapshot:
        """Back up every path and store the snapshot; returns it."""
        started = datetime.now().astimezone()
        paths = normalise(self.opts.paths)
        try:
            if self._jobs is not None:
                try:
                    self._jobs.start()  # before the walk holds buffers (JobPool.start)
                except BrokenProcessPool:
                    self._jobs = None  # this process does it all
            root = self._build_root(paths)
            self._drain(block=True)
            assert root.tree_id is not None
        except BaseException:
            self.stop.set()  # an interrupt: the workers stop at their next chunk
            raise
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            if self._jobs is not None:
                self._jobs.close()
        return self._save(started, [os.fsdecode(p) for p in paths], root.tree_id)

    def _save(self, started: datetime, paths: list[str], tree_id: bytes) -> Snapshot:
        """Flush the data, then write the snapshot (unless a dry run)."""
        try:
            wstats = self.writer.flush()
        except BaseException:
            self.stop.set()
            raise
        stats = dict(self.stats)
        stats.update({"blobs_new": wstats["blobs_new"], "bytes_added": wstats["bytes_raw_new"],
                      "bytes_stored": wstats["bytes_stored"], "packs": wstats["packs"]})
        stats["duration_ms"] = int((time.time_ns() - self._start_ns) / 1e6)
        snap = Snapshot(
            time=started.isoformat(), hostname=self.opts.hostname(), username=user_name(),
            paths=paths, tree=tree_id.hex(),
            tags=sorted(set(self.opts.tags)), excludes=self.opts.excludes, stats=stats,
            complete=not self.progress.warnings)
        if not self.opts.dry_run:
            self.repo.save_snapshot(snap, archived=self.opts.archive)
            if self.db is not None and self.opts.stdin_filename is None:
                self.db.set_cache_snapshot(self._scope, snap.id)
        if self.db is not None:
            self.db.commit_cache()  # the data it names is stored: the cache may say so
        return snap

    def run_stdin(self, f: BinaryIO, filename: str) -> Snapshot:
        """Back up what ``f`` yields as the one file ``/filename`` (``--stdin``)."""
        started = datetime.now().astimezone()
        now = time.time_ns()
        name = os.fsencode(filename)
        try:
            content, size = self.reader.chunk_stream(f)
        except BaseException:
            self.stop.set()
            raise
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        node = Node(name=name, type="file", mode=0o644, uid=os.getuid(), gid=os.getgid(),
                    mtime=now, atime=now, ctime=now, size=size, content=content)
        self.stats.update(files_read=1, bytes_read=size, bytes_total=size)
        self._count(b"/", node)
        self.progress.add(1, 0)  # its bytes were counted chunk by chunk
        tid, _ = self.writer.save_blob(BlobType.TREE, encode_tree([node]))
        return self._save(started, ["/" + filename], tid)

    def _build_root(self, paths: list[bytes]) -> PendingDir:
        """Wrap the backed-up paths in their ancestor directories, up to '/'.

        Depth first with an explicit stack (a path given may be thousands of
        names long); each directory is ready after everything below it.
        """
        tree: dict[bytes, dict] = {}  # type: ignore[type-arg]
        for p in paths:
            d = tree
            for comp in p.strip(b"/").split(b"/"):
                d = d.setdefault(comp, {})
            d[b""] = {}  # marks a backed-up path
        root = self._ancestor(b"/", b"")
        stack = [(root, iter(sorted(tree.items())))]
        while stack:
            pd, children = stack[-1]
            nxt = next(children, None)
            if nxt is None:
                stack.pop()
                self._ready.append(pd)
                continue
            name, sub = nxt
            if name == b"":
                continue
            child = os.path.join(pd.path, name)
            if b"" in sub:
                if self.opts.one_file_system:
                    # -x: each backed-up path stays on its own file system.
                    try:
                        self._dev = os.lstat(child).st_dev
                    except OSError:
                        self._dev = None  # _entry reports it
                item = self._entry(pd.path, name, child, pd=pd)
                if item is not None:
                    assert not isinstance(item, SubDir)  # descend=True walks it
                    pd.items.append(item)
                continue
            try:
                above = self._ancestor(child, name)
            except OSError as e:
                self._warn(child, e)
                continue
            pd.items.append(above)
            stack.append((above, iter(sorted(sub.items()))))
        return root

    def _ancestor(self, path: bytes, name: bytes) -> PendingDir:
        st = os.lstat(path)
        return PendingDir(path, node_from_stat(name, path, st, "dir"))

    def _entry(self, parent: bytes, name: bytes, path: bytes,
               cached: dict[bytes, CachedFile] | None = None,
               pd: PendingDir | None = None, descend: bool = True
               ) -> Node | PendingDir | tuple[Node, Read] | Unchanged | SubDir | None:
        try:
            st = os.lstat(path)
        except OSError as e:
            self._warn(path, e)
            return None
        kind = kind_of(st.st_mode)
        if kind == "file" and self._max_size is not None and st.st_size > self._max_size:
            return None  # --exclude-larger-than
        if kind is None:
            self.progress.warn(os.fsdecode(path), "unsupported file type, skipped")
            return None
        if kind == "file":
            self.stats["bytes_total"] += st.st_size
            c = cached.get(name) if cached else None
            if c is not None and pd is not None and self._unchanged(c, st):
                self._count_unchanged(parent, name, st.st_size, c)
                return Unchanged(name, st, c)  # its node is built only if needed
        try:
            node = node_from_stat(name, path, st, kind)
        except OSError as e:
            self._warn(path, e)
            if kind == "file":
                self.stats["bytes_total"] -= st.st_size
            return None
        if kind == "dir":
            if self.opts.one_file_system and self._dev is not None and st.st_dev != self._dev:
                node["subtree"] = self._empty_tree()
                return node
            return self._walk_dir(path, node) if descend else SubDir(node)
        if kind != "file":
            return node
        return self._file_item(pd, name, path, st, node)

    def _file_item(self, pd: PendingDir | None, name: bytes, path: bytes,
                   st: os.stat_result, node: Node) -> tuple[Node, Read]:
        """A file to read: inline, by a worker thread, or as the hard link read already."""
        if pd is not None:
            pd.inodes[name] = st.st_ino
        key = (st.st_dev, st.st_ino)
        read: Read
        if st.st_nlink > 1 and key in self._hardlinks:
            read = self._hardlinks[key]
        else:
            inline = None
            if st.st_size <= _INLINE and self._inline_now():
                # Handing a tiny file to a worker costs more than reading it: every
                # GIL hand-over between threads is a context switch. Unless its data
                # is not in the page cache (None): a worker then overlaps the wait.
                t0 = time.perf_counter()
                inline = self.reader.read_file(path, st, cached_only=self.reader.nowait)
                self._inline_s += (time.perf_counter() - t0 - self._inline_s) * 0.1
            read = inline if inline is not None else self._submit(path, st)
        if st.st_nlink > 1:
            self._hardlinks.setdefault(key, read)
        return (node, read)

    def _count_unchanged(self, dirpath: bytes, name: bytes, size: int, c: CachedFile) -> None:
        """The cache proves the content is what this installation stored last time:
        unchanged against a parent; new if there is none."""
        count = self._cached_count(dirpath, name, c)
        self.stats[count] += 1
        self.progress.add(1, size)
        if self.progress.wants_items:  # -v: restic's "unchanged/changed/new" lines
            self.progress.item(_ITEM_WORDS[count], os.fsdecode(os.path.join(dirpath, name)))

    def _cached_count(self, dirpath: bytes, name: bytes, c: CachedFile) -> str:
        if self._parent is None:
            return "files_new"
        if self._cache_is_parents:
            return "files_unmodified"
        return self._parent.classify(dirpath, Node(name=name, type="file", content=c.content))

    def _submit(self, path: bytes, st: os.stat_result) -> Future[FileResult]:
        fut = self.pool.submit(self.reader.read_whole, path, st)
        # Streamed files hold the chunker's buffer (twice the largest chunk).
        cost = st.st_size + 65536 if st.st_size <= SMALL else \
            2 * self.repo.config.chunker.max_size
        self._inflight.append((fut, cost))
        self._inflight_bytes += cost
        self._throttle()
        return fut

    def _inline_now(self) -> bool:
        """Read this small file in the walking thread? Yes while small files read
        fast (data in the page cache); no while reads wait for a cold disk or a
        network share, except every _RESAMPLE-th, to notice when they speed up."""
        self._small_seen += 1
        return self._inline_s < _SLOW_INLINE or self._small_seen % _RESAMPLE == 0

    def _walk_dir(self, path: bytes, node: Node) -> PendingDir | None:
        """Walk a directory tree depth first with an explicit stack, so that no
        depth of nesting can exhaust Python's recursion limit."""
        top = self._open_dir(path, node)
        if top is None:
            return None
        stack = [top]
        while stack:
            pd, names, dirs, later = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if later:
                    assert self._jobs is not None
                    pd.job = self._jobs.add((pd.path, later, None))
                self._ready.append(pd)
                self._drain(block=False)
                continue
            child = os.path.join(pd.path, name)
            if self.excluder.excluded(child, name):
                continue
            if name not in dirs and self._jobs is not None and \
                    (not pd.cached or name not in pd.cached):
                # A name the files cache does not know (most likely a file to read)
                # goes to a worker process. A known one is looked at here: likely
                # unchanged, its lstat is all it costs (a job would cost more).
                if self._seen >= _JOBS_AFTER:
                    later.append(name)
                    continue
                self._seen += 1
            item = self._entry(pd.path, name, child, pd.cached, pd, descend=False)
            if isinstance(item, SubDir):
                sub = self._open_dir(child, item.node)
                if sub is not None:
                    pd.items.append(sub[0])
                    stack.append(sub)
            elif item is not None:
                pd.items.append(item)
        return top[0]

    def _open_dir(self, path: bytes, node: Node
                  ) -> tuple[PendingDir, Iterator[bytes], set[bytes], list[bytes]] | None:
        """The directory, its names in order, which are directories (the walk
        descends into them), and a list for the names left to a worker process."""
        pd = PendingDir(path, node)
        try:
            with os.scandir(path) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError as e:
            self._warn(path, e)
            return None
        entries.sort()
        names = [n for n, _ in entries]
        if self._tags and tagged(path, names, self._tags):
            return None  # --exclude-if-present / --exclude-caches: the whole directory
        self.stats["dirs"] += 1
        if self.db is not None:
            pd.cached = self.db.cached_dir(path)
            pd.last_tree = self.db.cached_tree(path)
        return pd, iter(names), {n for n, d in entries if d}, []

    def _unchanged(self, c: CachedFile, st: os.stat_result) -> bool:
        if (c.size, c.mtime, c.ctime, c.inode) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                                    st.st_ino):
            return False
        return all(self.writer.has(b) for b in c.content)

    def _throttle(self) -> None:
        limit = max(_INFLIGHT_FILES, self.opts.workers * 16)
        while len(self._inflight) > limit or self._inflight_bytes > _INFLIGHT_BYTES:
            fut, cost = self._inflight.popleft()
            fut.exception()
            self._inflight_bytes -= cost
            self._drain(block=False)
        while self._inflight and self._inflight[0][0].done():
            self._inflight_bytes -= self._inflight.popleft()[1]

    def _drain(self, block: bool) -> None:
        """Finish directories whose files are all done (post-order). Not again
        from within: finishing a directory may hand a file to the threads, whose
        window may ask for a drain."""
        if self._draining:
            return
        self._draining = True
        try:
            while self._ready and (block or self._ready_now(self._ready[0])):
                self._finish_dir(self._ready.popleft())
        finally:
            self._draining = False

    def _ready_now(self, pd: PendingDir) -> bool:
        if pd.job is not None:
            if not pd.job.done():
                return False
            self._expand(pd, pd.job)
        return pd.ready()

    def _expand(self, pd: PendingDir, job: JobHandle) -> None:
        """Turn what a worker process found in the directory into its items."""
        pd.job = None
        if not job.wait():  # the workers are gone: look at the names here
            for name in job.job[1]:
                path = os.path.join(pd.path, name)
                item = self._entry(pd.path, name, path, pd.cached, pd, descend=False)
                if isinstance(item, SubDir):
                    self._expand_one(pd, (OTHER, name))
                elif item is not None:
                    pd.items.append(item)
            pd.sort = True
            return
        assert job.entries is not None
        self.stats["bytes_total"] += job.total
        for e in job.entries:
            self._expand_one(pd, e)
        pd.sort = True

    def _expand_one(self, pd: PendingDir, e: Entry) -> None:
        kind = e[0]
        if kind == READ:
            it = Stored(*e[1:])
            pd.items.append(it)
            if it.changed:
                self.progress.warn(os.fsdecode(os.path.join(pd.path, it.name)),
                                   "file changed while it was read")
        elif kind == UNCHANGED:
            name, st = e[1], e[2]
            c = pd.cached.get(name) if pd.cached else None
            if c is not None and self._unchanged(c, st):
                self._count_unchanged(pd.path, name, st.st_size, c)
                pd.items.append(Unchanged(name, st, c, e[3]))
            else:
                self._main_file(pd, name, st)
        elif kind == MAIN:
            self._main_file(pd, e[1], e[2])
        elif kind == NODE:
            pd.items.append(e[1])
        elif kind == WARN:
            if e[3]:
                self.stats["errors"] += 1
            self.progress.warn(os.fsdecode(os.path.join(pd.path, e[1])), e[2])
        else:  # OTHER: it became a directory after the walk listed it
            self.stats["errors"] += 1
            self.progress.warn(os.fsdecode(os.path.join(pd.path, e[1])),
                               "changed into a directory during the backup, skipped")

    def _main_file(self, pd: PendingDir, name: bytes, st: os.stat_result) -> None:
        """A file a worker process left to this one (its bytes are counted already)."""
        path = os.path.join(pd.path, name)
        try:
            node = node_from_stat(name, path, st, "file")
        except OSError as e:
            self._warn(path, e)
            self.stats["bytes_total"] -= st.st_size
            return
        pd.items.append(self._file_item(pd, name, path, st, node))

    def _finish_dir(self, pd: PendingDir) -> None:
        """Finish ``pd`` and, first, any directory below it not finished yet
        (children before parents, without recursion: trees may be very deep)."""
        order: list[PendingDir] = []
        stack = [pd]
        while stack:
            d = stack.pop()
            if d.tree_id is None:  # else finished already (its entries are gone)
                order.append(d)
                stack.extend(it for it in d.items if isinstance(it, PendingDir))
        for d in reversed(order):
            self._finish_one(d)

    def _finish_one(self, pd: PendingDir) -> None:
        if pd.job is not None:
            self._expand(pd, pd.job)
        if pd.sort:  # a worker's entries came after the subdirectories: back in name order
            pd.items.sort(key=item_name)
        if pd.cached:
            # Unchanged files keep their rows; read ones get new rows when done.
            kept = {it.name for it in pd.items if isinstance(it, Unchanged)}
            pd.cache_drop = [n for n in pd.cached if n not in kept]
        nodes: list[tuple[bytes, Node | bytes]] = []
        results: list[FileResult | None] = []
        unchanged_only = True
        for it in pd.items:
            res = None
            if isinstance(it, Stored):
                unchanged_only = False
                self._stored_done(pd, it)
                nodes.append((it.name, it.raw))
            elif isinstance(it, PendingDir):
                assert it.tree_id is not None  # _finish_dir finished it first
                it.node["subtree"] = it.tree_id
                nodes.append((it.node.name, it.node))
            elif isinstance(it, Unchanged):
                pass  # its node is built below, if the tree is not reused
            elif isinstance(it, tuple):
                unchanged_only = False
                node, read = it
                res = read if isinstance(read, FileResult) else read.result()
                if res.error is None:
                    self._file_done(pd, node, read, res)
                    nodes.append((node.name, node))
                else:
                    self.progress.warn(os.fsdecode(os.path.join(pd.path, node.name)), res.error)
                    self.stats["errors"] += 1
                    self.stats["bytes_total"] -= node.get("size", 0)
                    # not in the snapshot, so neither new nor changed
            else:
                nodes.append((it.name, it))
            results.append(res)
        key = dir_key(pd, results) if self.db is not None else None
        last = pd.last_tree
        if unchanged_only and key is not None and last is not None and last[0] == key \
                and self.writer.has(last[1]):
            pd.tree_id = last[1]  # everything is as when this tree was written
        else:
            nodes.extend((n.name, n) for n in self._unchanged_nodes(pd))
            pd.tree_id, _ = self.writer.save_blob(BlobType.TREE, encode_entries(nodes))
            if self.db is not None and not self.opts.dry_run and (key or last) is not None:
                self.db.set_tree(pd.path, key, pd.tree_id)
        if self._parent is not None:
            self._parent.done(pd.path)
        if self.db is not None and (pd.cache_new or pd.cache_drop) and not self.opts.dry_run:
            self.db.update_dir(pd.path, pd.cache_new, pd.cache_drop)
        # The parent needs only the tree id: let the entries go, so memory follows
        # the directories still open rather than the whole tree backed up so far.
        pd.release()

    def _file_done(self, pd: PendingDir, node: Node, read: Read, res: FileResult) -> None:
        node["content"] = res.content
        node["size"] = res.size
        self._count(pd.path, node)
        if id(read) not in self._counted:  # hard links share one read
            self.stats["files_read"] += 1
            self.stats["bytes_read"] += res.size
            if node.get("nlink", 1) > 1:
                self._counted.add(id(read))
        self._remember(pd, node, res)

    def _stored_done(self, pd: PendingDir, it: Stored) -> None:
        """Count a file a worker process read and stored, and cache it."""
        key = self._parent.classify_content(pd.path, it.name, it.content) \
            if self._parent is not None else "files_new"
        self.stats[key] += 1
        if self.progress.wants_items:
            self.progress.item(_ITEM_WORDS[key], os.fsdecode(os.path.join(pd.path, it.name)))
        self.stats["files_read"] += 1
        self.stats["bytes_read"] += it.size
        if not it.changed and it.mtime < self._start_ns - _CACHE_SAFETY_NS:
            pd.cache_new[it.name] = (it.size, it.mtime, it.ctime, it.ino, b"".join(it.content))

    def _unchanged_nodes(self, pd: PendingDir) -> Iterator[Node]:
        """Nodes of the directory's unchanged files (the tree is written anew)."""
        for it in pd.items:
            if isinstance(it, Unchanged):
                path = os.path.join(pd.path, it.name)
                try:
                    node = node_from_stat(it.name, path, it.st, "file")
                except OSError as e:
                    self._warn(path, e)
                    continue
                node["content"] = it.cached.content
                yield node

    def _count(self, dirpath: bytes, node: Node) -> None:
        """Count a file that was read, against the parent snapshot."""
        key = self._parent.classify(dirpath, node) if self._parent is not None else "files_new"
        self.stats[key] += 1
        if self.progress.wants_items:  # -v: restic's "new/changed/unchanged" lines
            self.progress.item(_ITEM_WORDS[key], os.fsdecode(os.path.join(dirpath, node.name)))

    def _remember(self, pd: PendingDir, node: Node, res: FileResult) -> None:
        # Files modified within the clock's granularity of the backup start may
        # change again unnoticed with the same mtime: don't cache them.
        if res.changed or node["mtime"] >= self._start_ns - _CACHE_SAFETY_NS:
            return
        pd.cache_new[node.name] = (res.size, node["mtime"], node["ctime"],
                                   pd.inodes.get(node.name, -1), b"".join(res.content))

    def _empty_tree(self) -> bytes:
        return self.writer.save_blob(BlobType.TREE, encode_tree([]))[0]

    def _warn(self, path: bytes, e: OSError) -> None:
        self.stats["errors"] += 1
        self.progress.warn(os.fsdecode(path), e.strerror or str(e))


ProgressFactory = Callable[[], Progress]
