"""Reading, chunking and storing one file's content (the backup's threads).

Thread-safe: one chunker per thread; the blob writer deduplicates and packs.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

from tiervault.engine.pending import FileResult
from tiervault.engine.progress import Progress
from tiervault.engine.readfile import can_noatime, prefixed, read_small
from tiervault.errors import Interrupted
from tiervault.vault.blobwriter import BlobWriter
from tiervault.vault.chunker import Chunker
from tiervault.vault.pack import BlobType
from tiervault.vault.repository import Repository

SMALL = 2 * 1024 * 1024  # files up to this size are read in one go


class FileReader:
    """Reads files into stored blobs for a backup."""

    def __init__(self, repo: Repository, writer: BlobWriter, progress: Progress,
                 stop: threading.Event) -> None:
        self.repo = repo
        self.writer = writer
        self.progress = progress
        self.stop = stop
        self._local = threading.local()  # one chunker per thread
        # Small files are read inline only if their data is cached (Linux preadv2
        # RWF_NOWAIT); where the flag is not supported, the caller times the reads.
        self.nowait = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")

    def read_whole(self, path: bytes, st: os.stat_result) -> FileResult:
        res = self.read_file(path, st)
        assert res is not None  # only cached_only reads leave a file alone
        return res

    def read_file(self, path: bytes, st: os.stat_result,
                   cached_only: bool = False) -> FileResult | None:
        """Read, chunk and store one file. With ``cached_only``, a small file whose
        data is not all in the page cache is left alone (None) for a worker."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOATIME
                         if can_noatime(st) else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            return FileResult([], 0, error=e.strerror or str(e))
        try:
            # Small files take four system calls: open, read, fstat, close.
            small = st.st_size <= SMALL
            try:
                if small and cached_only:
                    data: bytes | None = self._cached(fd, st.st_size)
                    if data is None:
                        return None
                else:
                    data = read_small(fd, st.st_size) if small else b""
            except OSError:
                data = None
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino:
                return FileResult([], 0, error="file was replaced during the backup, skipped")
            if data is None:
                data = read_small(fd, st.st_size)  # raises the read error again
            if small and len(data) <= st.st_size:
                content, size, after = self.store_small(data), len(data), fst
            else:
                # Big, or grew past what stat said: stream (the rest).
                with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
                    content, size = self.chunk_stream(prefixed(data, f) if data else f)
                after = os.fstat(fd)
            changed = (after.st_mtime_ns, after.st_size) != (st.st_mtime_ns, st.st_size) or \
                size != st.st_size
            # A streamed file counted its bytes chunk by chunk (_chunk_stream).
            self.progress.add(1, size if small and len(data) <= st.st_size else 0)
            if changed:
                self.progress.warn(os.fsdecode(path), "file changed while it was read")
            return FileResult(content, size, changed)
        except OSError as e:
            return FileResult([], 0, error=e.strerror or str(e))
        finally:
            os.close(fd)

    def _cached(self, fd: int, expected: int) -> bytes | None:
        """The file's bytes if the page cache holds them all (RWF_NOWAIT: no disk
        or network wait), else None. Where the flag is not supported, reads."""
        buf = bytearray(expected + 1)
        try:
            n = os.preadv(fd, [buf], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            self.nowait = False  # this file system cannot say: time the reads instead
            return read_small(fd, expected)
        if n < expected:
            return None  # partly cached (or shrank): a worker reads it properly
        return bytes(memoryview(buf)[:n])

    def _chunker(self) -> Chunker:
        chunker: Chunker | None = getattr(self._local, "chunker", None)
        if chunker is None:
            chunker = self._local.chunker = self.repo.chunker()
        return chunker

    def store_small(self, data: bytes) -> list[bytes]:
        """Chunk and store an in-memory file; one below the chunker's minimum is one chunk."""
        if not data:
            return []
        if self.stop.is_set():
            raise Interrupted("interrupted")
        if len(data) <= self.repo.config.chunker.min_size:
            return [self._store(data)]
        return [self._store(c) for c in self._chunker().chunks_of(data)]

    def chunk_stream(self, f: object) -> tuple[list[bytes], int]:
        content: list[bytes] = []
        size = 0
        stop = self.stop
        for c in self._chunker().chunks(f):  # type: ignore[arg-type]
            if stop.is_set():
                raise Interrupted("interrupted")
            size += len(c)
            content.append(self._store(c))
            # Bytes as they are stored, not only per finished file: a bar moves
            # during a large file (and at the pace of a throttled upload).
            self.progress.add(0, len(c))
        return content, size

    def _store(self, chunk: bytes | memoryview) -> bytes:
        bid = self.repo.key.blob_id(chunk)
        if not self.writer.has(bid):
            self.writer.save_blob(BlobType.DATA, chunk, bid)
        return bid
