"""A file that changes between the walk's lstat and the read.

The walker stats a file, then reads it (inline for small files, in a worker
for bigger ones). Whatever happens in between, the stored content must be
exactly what was read, the result must say the file changed, and a file
replaced by something else must be skipped with a clear message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tiervault.engine.backup import Archiver
from tiervault.engine.backupopts import BackupOptions
from tiervault.engine.pending import FileResult
from tiervault.engine.progress import Progress
from tiervault.storage.local import LocalBackend
from tiervault.vault.blobwriter import BlobWriter
from tiervault.vault.crypto import KdfParams
from tiervault.vault.repository import Repository


@pytest.fixture
def archiver(tmp_path: Path) -> Iterator[tuple[Archiver, BlobWriter, Repository]]:
    backend = LocalBackend(tmp_path / "vault", fsync=False)
    backend.create()
    repo = Repository.init(backend, "pw", KdfParams(n=2 ** 10))
    writer = repo.writer(pack_size=1 << 20, uploads=1)
    a = Archiver(repo, writer, None, Progress(), BackupOptions(paths=[str(tmp_path)]))
    yield a, writer, repo
    a.pool.shutdown()
    writer.close()


def _read_back(repo: Repository, writer: BlobWriter, res: FileResult) -> bytes:
    writer.flush()
    repo.load_index()
    return b"".join(repo.load_blob(b) for b in res.content)


SIZES = [0, 10, 64 * 1024, 300 * 1024, 3 * 1024 * 1024]


@pytest.mark.parametrize("size", SIZES)
def test_file_that_grew_after_stat_is_read_whole_and_flagged(
        tmp_path: Path, archiver: tuple[Archiver, BlobWriter, Repository], size: int) -> None:
    a, writer, repo = archiver
    f = tmp_path / "f"
    f.write_bytes(os.urandom(size))
    st = os.lstat(f)
    extra = os.urandom(5000)
    with f.open("ab") as fh:
        fh.write(extra)
    res = a.reader.read_whole(os.fsencode(f), st)
    assert res.error is None
    assert res.changed
    assert res.size == size + len(extra)
    assert _read_back(repo, writer, res) == f.read_bytes()


@pytest.mark.parametrize("size", SIZES[1:])
def test_file_that_shrank_after_stat_is_flagged(
        tmp_path: Path, archiver: tuple[Archiver, BlobWriter, Repository], size: int) -> None:
    a, writer, repo = archiver
    f = tmp_path / "f"
    f.write_bytes(os.urandom(size))
    st = os.lstat(f)
    os.truncate(f, size // 2)
    res = a.reader.read_whole(os.fsencode(f), st)
    assert res.error is None
    assert res.changed
    assert _read_back(repo, writer, res) == f.read_bytes()


def test_unchanged_file_is_not_flagged(
        tmp_path: Path, archiver: tuple[Archiver, BlobWriter, Repository]) -> None:
    a, writer, repo = archiver
    f = tmp_path / "f"
    f.write_bytes(b"hello" * 1000)
    res = a.reader.read_whole(os.fsencode(f), os.lstat(f))
    assert (res.error, res.changed, res.size) == (None, False, 5000)
    assert _read_back(repo, writer, res) == b"hello" * 1000


@pytest.mark.parametrize("replacement", ["file", "fifo", "dir"])
def test_file_replaced_after_stat_is_skipped(
        tmp_path: Path, archiver: tuple[Archiver, BlobWriter, Repository],
        replacement: str) -> None:
    a, _, _ = archiver
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    st = os.lstat(f)
    f.rename(tmp_path / "old")  # kept, so that its inode number is not reused at once
    if replacement == "file":
        f.write_bytes(b"y" * 100)
    elif replacement == "fifo":
        os.mkfifo(f)
    else:
        f.mkdir()
    res = a.reader.read_whole(os.fsencode(f), st)
    assert res.content == []
    assert res.error is not None and "replaced" in res.error


@pytest.mark.parametrize("slow", [False, True])
def test_small_files_round_trip_inline_and_through_the_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: bool) -> None:
    """Small files are read by the walking thread while reads are fast, by the
    workers while they are slow (cold disk, network share): same result."""
    from tiervault.engine import backup
    from tiervault.engine.restore import Restorer

    if slow:  # every small file "reads slowly": all but every 32nd go to the workers
        monkeypatch.setattr(backup, "_SLOW_INLINE", 0.0)
    src = tmp_path / "src"
    for d in range(5):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(40):
            (src / f"d{d}" / f"f{i}").write_bytes(os.urandom(i * 50) + b"x" * (i * 1000))
    (src / "big").write_bytes(os.urandom(200_000))
    backend = LocalBackend(tmp_path / "vault", fsync=False)
    backend.create()
    repo = Repository.init(backend, "pw", KdfParams(n=2 ** 10))
    writer = repo.writer(pack_size=1 << 20, uploads=1)
    a = Archiver(repo, writer, None, Progress(), BackupOptions(paths=[str(src)], workers=2))
    submitted: list[bytes] = []
    real_submit = a.pool.submit

    def submit(fn: Any, path: bytes, st: os.stat_result) -> Any:
        submitted.append(path)
        return real_submit(fn, path, st)

    a.pool.submit = submit  # type: ignore[method-assign, assignment]
    snap = a.run()
    writer.close()
    assert snap.stats["files_read"] == 201 and snap.stats["errors"] == 0
    # Only "big" (200 kB) goes to the workers while reads are fast; when slow,
    # all but every 32nd small file does too.
    assert len(submitted) == (1 + 200 - 200 // 32 if slow else 1)
    repo.load_index()
    Restorer(repo, repo.find_snapshot(snap.id), str(tmp_path / "out"), Progress()).run()
    out = tmp_path / "out" / src.relative_to("/")
    for f in src.rglob("*"):
        if f.is_file():
            assert (out / f.relative_to(src)).read_bytes() == f.read_bytes(), f


def test_small_file_not_in_the_page_cache_is_left_to_a_worker(
        tmp_path: Path, archiver: tuple[Archiver, BlobWriter, Repository]) -> None:
    """The walking thread reads a small file only if its data is cached
    (RWF_NOWAIT); an evicted one is left for a worker, which reads it whole."""
    a, writer, repo = archiver
    if not a.reader.nowait:
        pytest.skip("no preadv2(RWF_NOWAIT) on this platform")
    f = tmp_path / "f"
    data = os.urandom(40_000)
    f.write_bytes(data)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)
        # The premise: its pages evicted. DONTNEED is advice (a page under writeback
        # stays): asked a few times; where the kernel keeps them anyway, no test.
        for _ in range(20):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            try:
                os.preadv(fd, [bytearray(10)], 0, os.RWF_NOWAIT)
            except BlockingIOError:
                break  # not cached now
            time.sleep(0.05)
        else:
            pytest.skip("the page cache keeps the file's pages here (POSIX_FADV_DONTNEED)")
    finally:
        os.close(fd)
    st = os.lstat(f)
    assert a.reader.read_file(os.fsencode(f), st, cached_only=True) is None
    res = a.reader.read_whole(os.fsencode(f), st)  # what the worker does
    assert (res.error, res.changed, res.size) == (None, False, len(data))
    assert a.reader.read_file(os.fsencode(f), st, cached_only=True) is not None  # cached now
    assert _read_back(repo, writer, res) == data
