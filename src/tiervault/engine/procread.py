"""Small files read, hashed, compressed and sealed in worker processes.

Threads cannot use the second core for small files: each one is a handful of
system calls and library calls with Python between them, and the GIL
serialises the Python. So once a backup has met many small files, it hands
them out in batches to worker processes, which open, read, hash, compress
and seal them and send back the sealed blobs; the main process deduplicates
them against the index, packs them and builds the trees as before
(docs/format.md, "Reading small files in worker processes").

A worker does not know the index, so a duplicate small file is compressed
for nothing; the main process drops it. That costs CPU only and only for
files of at most ``LIMIT`` bytes, where the main process would have spent
most of the time anyway.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import threading
from array import array
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tiervault.engine.pending import FileResult
from tiervault.engine.readfile import read_small
from tiervault.vault.chunker import Chunker, ChunkerParams
from tiervault.vault.codec import Codec
from tiervault.vault.crypto import MasterKey
from tiervault.vault.pack import BlobType, blob_aad

if TYPE_CHECKING:
    from tiervault.vault.repository import Repository

#: Files up to this size go to the worker processes (larger ones to threads,
#: which ask the index before they compress a chunk).
LIMIT = 64 * 1024
BATCH = 128  # files per batch: amortises the hand-over
#: Small files the walk meets before the processes start: a small backup does
#: not pay for starting them.
START_AFTER = 2000
_PER_WORKER = 4  # batches in flight per worker process

#: One file for a worker: path, size, inode, mtime (ns), may open with O_NOATIME.
Item = tuple[bytes, int, int, int, bool]
#: What a worker sends back for a batch, compact (one pickle of few objects): per
#: file (size, changed while read, error, number of chunks, xattrs); then the
#: chunk ids (32 bytes each), the sealed chunks one after the other, and two
#: arrays ('I') of the sealed and the plain length of each chunk.
Meta = tuple[int, bool, str | None, int, list[list[bytes]] | None]
Reply = tuple[list[Meta], bytes, bytes, bytes, bytes]
#: A sealed blob for the writer: id, sealed bytes, plain length.
Sealed = tuple[bytes, bytes | memoryview, int]


@dataclass(frozen=True)
class SealSpec:
    """What a worker needs to name and seal blobs as the vault does."""

    material: bytes
    level: int
    chunker: ChunkerParams


class Sink(Protocol):
    """Where sealed blobs go (the blob writer)."""

    def save_sealed(self, t: BlobType, blobs: list[Sealed]) -> int:
        ...


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- the worker side ----------------------------------------------------------------------

def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the main process decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def read_batch(spec: SealSpec, items: list[Item]) -> Reply:
    """Read, chunk, hash, compress and seal each file (runs in a worker process)."""
    key = MasterKey(spec.material)
    codec = Codec(key, spec.level)
    chunker: Chunker | None = None
    meta: list[Meta] = []
    ids, sealed = bytearray(), bytearray()
    lens, raws = array("I"), array("I")
    for path, size, ino, mtime, noatime in items:
        try:
            data, fst, xattrs = _read_one(path, size, ino, noatime)
        except OSError as e:
            meta.append((0, False, e.strerror or str(e), 0, None))
            continue
        if fst is None:
            meta.append((0, False, "file was replaced during the backup, skipped", 0, None))
            continue
        if len(data) > spec.chunker.min_size:  # it grew past one chunk
            if chunker is None:
                chunker = Chunker(spec.chunker, key.chunker_seed)
            pieces: list[bytes | memoryview] = list(chunker.chunks_of(data))
        else:
            pieces = [data] if data else []
        for p in pieces:
            bid = key.blob_id(p)
            s = codec.encode(p, blob_aad(BlobType.DATA, bid))
            ids += bid
            sealed += s
            lens.append(len(s))
            raws.append(len(p))
        changed = (fst.st_mtime_ns, fst.st_size) != (mtime, size) or len(data) != size
        meta.append((len(data), changed, None, len(pieces), xattrs))
    return meta, bytes(ids), bytes(sealed), lens.tobytes(), raws.tobytes()


def _read_one(path: bytes, size: int, ino: int, noatime: bool
              ) -> tuple[bytes, os.stat_result | None, list[list[bytes]] | None]:
    """The file's bytes, its fstat (None if it is not the file stat saw) and xattrs."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_NOATIME if noatime else 0)
    fd = os.open(path, flags)
    try:
        data = read_small(fd, size)
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or fst.st_ino != ino:
            return b"", None, None
        return data, fst, _xattrs(fd)
    finally:
        os.close(fd)


def _xattrs(fd: int) -> list[list[bytes]] | None:
    if not hasattr(os, "listxattr"):
        return None
    try:
        names = os.listxattr(fd)
    except OSError:
        return None
    got = []
    for n in sorted(names):
        try:
            got.append([n.encode("utf-8", "surrogateescape"), os.getxattr(fd, n)])
        except OSError:
            continue
    return got or None


# -- the main side ------------------------------------------------------------------------

class Batch:
    """Files handed to the workers together. ``done`` once their blobs are packed."""

    def __init__(self, pool: ProcReader) -> None:
        self.pool = pool
        self.items: list[Item] = []
        self.future: Future[Reply] | None = None
        self.results: list[FileResult] = []
        self.xattrs: list[list[list[bytes]] | None] = []
        self.error: BaseException | None = None
        self._arrived = threading.Event()

    def done(self) -> bool:
        return self._arrived.is_set()

    def wait(self) -> None:
        """Until the batch is back (handing it out first if it is still being filled)."""
        if self.future is None:
            self.pool.submit()
        self._arrived.wait()
        if self.error is not None:
            raise self.error

    def arrived(self, fut: Future[Reply]) -> None:
        """The future's callback: pack the sealed blobs, keep only the ids."""
        try:
            meta, ids, sealed, lens_b, raws_b = fut.result()
            lens, raws = array("I"), array("I")
            lens.frombytes(lens_b)
            raws.frombytes(raws_b)
            view = memoryview(sealed)
            blobs: list[Sealed] = []
            k = off = files = nbytes = 0
            pool = self.pool
            for item, (size, changed, error, n, xattrs) in zip(self.items, meta, strict=True):
                content = []
                for j in range(k, k + n):
                    bid = ids[j * 32:j * 32 + 32]
                    content.append(bid)
                    blobs.append((bid, view[off:off + lens[j]], raws[j]))
                    off += lens[j]
                k += n
                self.results.append(FileResult(content, size, changed, error))
                self.xattrs.append(xattrs)
                if error is None:
                    files += 1
                    nbytes += size
                    if changed:
                        pool.on_changed(item[0])
            pool.sink.save_sealed(BlobType.DATA, blobs)
            pool.on_read(files, nbytes)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the main process reads them.
            self.results = []
        except BaseException as e:
            self.error = e
        finally:
            self.items = [] if self.results else self.items
            self._arrived.set()


class Handle:
    """One file of a batch: what ``Archiver`` waits on, like a Future."""

    __slots__ = ("batch", "i", "path", "st")

    def __init__(self, batch: Batch, i: int, path: bytes, st: os.stat_result) -> None:
        self.batch, self.i, self.path, self.st = batch, i, path, st

    def done(self) -> bool:
        return self.batch.done()

    def result(self) -> FileResult:
        self.batch.wait()
        if not self.batch.results:
            return self.batch.pool.fallback(self.path, self.st)
        return self.batch.results[self.i]

    def xattrs(self) -> list[list[bytes]] | None:
        self.batch.wait()
        return self.batch.xattrs[self.i] if self.batch.xattrs else None


class ProcReader:
    """Hands small files to worker processes in batches; started on first use."""

    def __init__(self, repo: Repository, sink: Sink, workers: int, on_read: ReadHook,
                 on_changed: ChangedHook, fallback: Fallback) -> None:
        self.repo = repo
        self.sink = sink
        self.workers = workers
        self.on_read = on_read
        self.on_changed = on_changed
        self.fallback = fallback
        self._spec = SealSpec(repo.key.material, repo.codec.level, repo.config.chunker)
        self._pool: ProcessPoolExecutor | None = None
        self._batch: Batch | None = None
        self._flight: deque[Batch] = deque()

    def add(self, path: bytes, st: os.stat_result, noatime: bool) -> Handle:
        """Queue one file; its Handle resolves when its batch comes back."""
        b = self._batch
        if b is None:
            b = self._batch = Batch(self)
        b.items.append((path, st.st_size, st.st_ino, st.st_mtime_ns, noatime))
        h = Handle(b, len(b.items) - 1, path, st)
        if len(b.items) >= BATCH:
            self.submit()
        return h

    def submit(self) -> None:
        """Hand out the batch being filled (waiting while too many are out)."""
        b, self._batch = self._batch, None
        if b is None:
            return
        while len(self._flight) >= self.workers * _PER_WORKER:
            self._flight.popleft()._arrived.wait()
        while self._flight and self._flight[0].done():
            self._flight.popleft()
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                             initializer=_init_worker)
        try:
            b.future = self._pool.submit(read_batch, self._spec, b.items)
        except (BrokenProcessPool, RuntimeError):
            b.future = Future()
            b.future.set_exception(BrokenProcessPool("worker processes are gone"))
        b.future.add_done_callback(b.arrived)
        self._flight.append(b)

    def close(self) -> None:
        """Stop the worker processes (queued batches are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ReadHook(Protocol):
    """Called as a batch comes back: the files read and their bytes (progress)."""

    def __call__(self, files: int, nbytes: int) -> None:
        ...


class ChangedHook(Protocol):
    """Called for a file that changed while a worker read it (a warning)."""

    def __call__(self, path: bytes) -> None:
        ...


class Fallback(Protocol):
    """Reads a file in this process (when the workers are gone)."""

    def __call__(self, path: bytes, st: os.stat_result) -> FileResult:
        ...

