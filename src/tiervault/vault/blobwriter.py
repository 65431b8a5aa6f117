"""The blob writer: packs new blobs and uploads full packs in background threads."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from tiervault.storage.base import FileType, Handle
from tiervault.vault.pack import BlobType, PackBuilder, blob_aad
from tiervault.vault.repository import content_name

if TYPE_CHECKING:
    from tiervault.vault.repository import Repository

# A backup writes an index file every this many packs or blobs, whichever comes
# first: uploads are reused after an interruption, and one index file decodes
# into bounded memory (small files make ~8,000 blobs per pack).
_INDEX_PACKS = 64
_INDEX_BLOBS = 32768


class BlobWriter:
    """Packs new blobs and uploads full packs in background threads.

    ``save_blob`` is thread-safe and deduplicates against the index and against
    blobs already queued. Uploads are bounded (backpressure keeps memory flat).
    """

    def __init__(self, repo: Repository, pack_size: int, uploads: int) -> None:
        self.repo = repo
        self.pack_size = pack_size
        self._lock = threading.Lock()
        self._packers = {BlobType.DATA: PackBuilder(), BlobType.TREE: PackBuilder()}
        self._pending: set[bytes] = set()
        self._ex = ThreadPoolExecutor(uploads, thread_name_prefix="upload")
        self._slots = threading.BoundedSemaphore(uploads)
        self._futures: list[Future[None]] = []
        self._futures_lock = threading.Lock()  # save_blob runs in many threads
        # Packs uploaded since the last index file; their entries are in repo.index.
        self._unindexed: list[bytes] = []
        self._unindexed_blobs = 0
        self._error: BaseException | None = None
        self.stats = {"blobs_new": 0, "bytes_raw_new": 0, "bytes_stored": 0, "packs": 0}
        self.index_names: list[str] = []

    def has(self, blob_id: bytes) -> bool:
        """True if the blob is indexed or queued."""
        return blob_id in self.repo.index or blob_id in self._pending

    def save_blob(self, t: BlobType, data: bytes | memoryview, blob_id: bytes | None = None,
                  force: bool = False) -> tuple[bytes, bool]:
        """Store a blob unless known; returns (id, whether it was new).

        ``force`` stores it even if an index lists it (prune's repacking).
        """
        if self._error:
            raise self._error
        bid = blob_id or self.repo.key.blob_id(data)
        with self._lock:
            if bid in self._pending or (bid in self.repo.index and not force):
                return bid, False
            self._pending.add(bid)
        self._pack(t, bid, self.repo.codec.encode(data, blob_aad(t, bid)), len(data))
        return bid, True

    def save_sealed(self, t: BlobType,
                    blobs: list[tuple[bytes, bytes | memoryview, int]]) -> int:
        """Store blobs sealed elsewhere (worker processes), each unless known:
        (id, sealed bytes, plain length). Returns how many were new."""
        if self._error:
            raise self._error
        full = []
        new = 0
        index, pending = self.repo.index, self._pending
        with self._lock:
            for bid, sealed, raw_len in blobs:
                if bid in pending or bid in index:
                    continue
                pending.add(bid)
                new += 1
                p = self._packers[t]
                p.add(t, bid, sealed, raw_len)
                self.stats["blobs_new"] += 1
                self.stats["bytes_raw_new"] += raw_len
                if len(p) >= self.pack_size:
                    full.append(p)
                    self._packers[t] = PackBuilder()
        for p in full:
            self._submit(p)
        return new

    def _pack(self, t: BlobType, bid: bytes, sealed: bytes, raw_len: int) -> None:
        full = None
        with self._lock:
            p = self._packers[t]
            p.add(t, bid, sealed, raw_len)
            self.stats["blobs_new"] += 1
            self.stats["bytes_raw_new"] += raw_len
            if len(p) >= self.pack_size:
                full = p
                self._packers[t] = PackBuilder()
        if full is not None:
            self._submit(full)

    def _submit(self, pack: PackBuilder) -> None:
        self._slots.acquire()
        fut = self._ex.submit(self._upload, pack)
        with self._futures_lock:
            # Keep unfinished (and failed) uploads: flush() must wait for every one.
            self._futures = [f for f in self._futures if not f.done() or f.exception()]
            self._futures.append(fut)

    def _upload(self, pack: PackBuilder) -> None:
        try:
            data = pack.finish(self.repo.key)
            name = content_name(data)
            self.repo.backend.save(Handle(FileType.PACK, name), data)  # type: ignore[arg-type]
            pid = bytes.fromhex(name)
            self.repo.index.add_pack(pid, pack.entries)
            with self._lock:
                self._pending.difference_update(e.id for e in pack.entries)
                self._unindexed.append(pid)
                self._unindexed_blobs += len(pack.entries)
                self.stats["bytes_stored"] += len(data)
                self.stats["packs"] += 1
                flush_index = len(self._unindexed) >= _INDEX_PACKS or \
                    self._unindexed_blobs >= _INDEX_BLOBS
            # Write index files along the way so an interrupted backup's uploads
            # are reused by the next one.
            if flush_index:
                self._write_index()
        except BaseException as e:
            self._error = e
            raise
        finally:
            self._slots.release()

    def _write_index(self) -> None:
        with self._lock:
            pids, self._unindexed, self._unindexed_blobs = self._unindexed, [], 0
        if pids:
            packs = {pid: self.repo.index.entries_of(pid) for pid in pids}
            self.index_names.append(self.repo.write_index(packs))

    def flush(self) -> dict[str, int]:
        """Upload partial packs, wait for all uploads, write the index."""
        with self._lock:
            rest = [p for p in self._packers.values() if p.entries]
            self._packers = {BlobType.DATA: PackBuilder(), BlobType.TREE: PackBuilder()}
        for p in rest:
            self._submit(p)
        with self._futures_lock:
            pending = list(self._futures)
        for f in pending:
            f.exception()
        with self._futures_lock:
            self._futures = [f for f in self._futures if not f.done()]
        if self._error:
            raise self._error
        self._write_index()
        return dict(self.stats)

    def close(self) -> None:
        """Stop the upload threads (after flush, or to abandon the session)."""
        self._ex.shutdown(wait=True, cancel_futures=True)


