"""Directory jobs: the files of small directories stat'ed, read and sealed in
worker processes (both cores busy), with the same snapshot as one process.

The worker side (``dirjob.run_jobs``) runs in-process here for its entry
kinds; the backups start real worker processes (forkserver) with the start
threshold at zero, so that every directory goes through them.
"""

from __future__ import annotations

import os
import stat
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from tiervault.engine import backup as backup_mod
from tiervault.engine import dirjob
from tiervault.engine.backup import Archiver
from tiervault.engine.backupopts import BackupOptions
from tiervault.engine.procread import JobPool
from tiervault.engine.progress import Progress
from tiervault.engine.restore import Restorer
from tiervault.engine.trees import TreeReader
from tiervault.state.db import StateDB
from tiervault.storage.local import LocalBackend
from tiervault.vault.crypto import KdfParams
from tiervault.vault.pack import BlobType
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot

OLD = time.time() - 3600  # mtimes older than the cache's safety margin


class Recording(Progress):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    @property
    def wants_items(self) -> bool:
        return True

    def item(self, action: str, path: str) -> None:
        self.lines.append((action, path))


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.src = tmp / "src"
        backend = LocalBackend(tmp / "vault", fsync=False)
        backend.create()
        self.repo = Repository.init(backend, "pw", KdfParams(n=2 ** 10, p=1))
        self.db = StateDB(tmp / "home")
        self.parent: Snapshot | None = None
        self.progress = Recording()

    def backup(self, monkeypatch: pytest.MonkeyPatch, jobs: bool, **opts: Any) -> Snapshot:
        monkeypatch.setattr(backup_mod, "_JOBS_AFTER", 0)
        writer = self.repo.writer(pack_size=1 << 20, uploads=1)
        self.progress = Recording()
        try:
            a = Archiver(self.repo, writer, self.db, self.progress,
                         BackupOptions(paths=[str(self.src)], processes=2 if jobs else 0,
                                       **opts), parent=self.parent)
            snap = a.run()
        finally:
            writer.close()
        self.parent = snap
        self.stats = a.stats
        return snap

    def trees(self, snap: Snapshot) -> dict[str, bytes]:
        """Tree id of every directory below the source, by path."""
        reader = TreeReader(self.repo)
        comps = tuple(os.fsencode(c) for c in str(self.src).strip("/").split("/"))
        top = reader.lookup(bytes.fromhex(snap.tree), comps)
        assert top is not None
        out, stack = {}, [("", top["subtree"])]
        while stack:
            rel, tid = stack.pop()
            out[rel] = tid
            for n in reader.load(tid):
                if n.kind == "dir":
                    stack.append((rel + "/" + n.name.decode(), n["subtree"]))
        return out


def _write(p: Path, data: bytes) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, (OLD, OLD))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    for d in range(3):
        for i in range(40):
            _write(e.src / f"d{d}" / f"f{i:02d}", f"file {d} {i}\n".encode() * (i + 1))
    _write(e.src / "d0" / "empty", b"")
    _write(e.src / "d0" / "same1", b"duplicate content\n")
    _write(e.src / "d0" / "same2", b"duplicate content\n")
    _write(e.src / "d1" / "big", os.urandom(200_000))  # above dirjob.LIMIT: the main process
    os.link(e.src / "d1" / "f00", e.src / "d2" / "hardlink")
    os.symlink("f01", e.src / "d2" / "link")
    os.mkfifo(e.src / "d2" / "fifo")
    os.setxattr(e.src / "d2" / "f03", "user.note", b"kept")
    _write(e.src / "d2" / "deeper" / "g", b"below")
    for p in [e.src / "d2" / "deeper", *(e.src / f"d{d}" for d in range(3)), e.src]:
        os.utime(p, (OLD, OLD))
    yield e
    e.db.close()


def test_worker_processes_write_the_same_trees_as_one_process(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = env.trees(env.backup(monkeypatch, jobs=False))
    other = Env(tmp_path / "again")
    other.src = env.src
    many = other.trees(other.backup(monkeypatch, jobs=True))
    # The same entries (two vaults: content ids are keyed, so they differ).
    assert one.keys() == many.keys()
    reader_a, reader_b = TreeReader(env.repo), TreeReader(other.repo)
    for rel in one:
        a = {n.name: {k: v for k, v in n.items() if k not in ("content", "subtree", "atime")}
             for n in reader_a.load(one[rel])}
        b = {n.name: {k: v for k, v in n.items() if k not in ("content", "subtree", "atime")}
             for n in reader_b.load(many[rel])}
        assert a == b, rel
    other.db.close()


def test_a_backup_through_the_workers_restores_every_file(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = env.backup(monkeypatch, jobs=True)
    assert env.stats["files_new"] == 3 * 40 + 6  # and empty, same1, same2, big, hardlink, g
    assert env.stats["errors"] == 0
    target = tmp_path / "out"
    Restorer(env.repo, snap, str(target), Progress()).run()
    got = target / str(env.src).lstrip("/")
    for p in env.src.rglob("*"):
        q = got / p.relative_to(env.src)
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            assert q.read_bytes() == p.read_bytes(), p
        elif stat.S_ISLNK(st.st_mode):
            assert os.readlink(q) == os.readlink(p)
    assert os.getxattr(got / "d2" / "f03", "user.note") == b"kept"
    assert os.lstat(got / "d2" / "hardlink").st_ino == os.lstat(got / "d1" / "f00").st_ino
    assert stat.S_ISFIFO(os.lstat(got / "d2" / "fifo").st_mode)
    # The duplicate small files were sealed twice by the workers, stored once.
    reader = TreeReader(env.repo)
    ids = {n.name: n["content"] for n in reader.load(env.trees(snap)["/d0"])}
    assert ids[b"same1"] == ids[b"same2"]
    assert ids[b"empty"] == []


def test_unchanged_files_are_not_read_again_and_trees_are_reused(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    first = env.trees(env.backup(monkeypatch, jobs=True))
    files = env.stats["files_new"]
    second = env.trees(env.backup(monkeypatch, jobs=True))
    assert env.stats["files_read"] == 0
    assert env.stats["files_unmodified"] == files  # all of them
    assert env.stats["files_new"] == env.stats["files_changed"] == 0
    assert first == second
    _write(env.src / "d1" / "f05", b"changed\n")
    third = env.trees(env.backup(monkeypatch, jobs=True))
    assert env.stats["files_read"] == 1 and env.stats["files_changed"] == 1
    assert ("changed", str(env.src / "d1" / "f05")) in env.progress.lines
    assert third["/d0"] == first["/d0"] and third["/d1"] != first["/d1"]


def test_the_workers_honour_exclude_larger_than(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = env.backup(monkeypatch, jobs=True, exclude_larger_than=100)
    names = {n.name for n in TreeReader(env.repo).load(env.trees(snap)["/d1"])}
    assert b"big" not in names and b"f00" in names and b"f39" not in names


def test_gone_worker_processes_leave_the_files_to_the_main_process(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(pool: JobPool) -> None:
        b, pool._batch = pool._batch, None
        if b is None:
            return
        b.submitted = True
        fut: Future[Any] = Future()
        fut.set_exception(BrokenProcessPool("killed"))
        fut.add_done_callback(b.back)

    monkeypatch.setattr(JobPool, "submit", broken)
    env.backup(monkeypatch, jobs=True)
    assert env.stats["files_new"] == 126 and env.stats["errors"] == 0


class _Entry:
    def __init__(self, name: bytes, is_dir: bool) -> None:
        self.name, self._dir = name, is_dir

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return self._dir


# -- the worker side, in-process -------------------------------------------------------------

def _spec(repo: Repository, max_size: int | None = None) -> dirjob.JobSpec:
    return dirjob.JobSpec(repo.key.material, repo.codec.level, repo.config.chunker, max_size,
                          os.geteuid())


def test_a_job_says_what_each_name_is(env: Env) -> None:
    d2 = os.fsencode(env.src / "d2")
    names = [b"f01", b"fifo", b"hardlink", b"link", b"deeper", b"gone", b"f02"]
    st = os.lstat(env.src / "d2" / "f02")
    cached = {b"f02": (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)}
    per_job, sealed, lens, _raws = dirjob.run_jobs(_spec(env.repo), [(d2, names, cached)])
    entries, total = per_job[0]
    kinds = {e[1] if e[0] != dirjob.NODE else e[1].name: e[0] for e in entries}
    assert kinds == {b"f01": dirjob.READ, b"fifo": dirjob.NODE, b"hardlink": dirjob.MAIN,
                     b"link": dirjob.NODE, b"deeper": dirjob.OTHER, b"gone": dirjob.WARN,
                     b"f02": dirjob.UNCHANGED}
    read = next(e for e in entries if e[0] == dirjob.READ)
    length = array("I")
    length.frombytes(lens)
    plain = env.repo.codec.decode(sealed[:length[0]], bytes((int(BlobType.DATA),)) + read[6][0],
                                  None, "test")
    assert plain == (env.src / "d2" / "f01").read_bytes()
    assert total == sum(os.lstat(env.src / "d2" / n.decode()).st_size
                        for n in (b"f01", b"hardlink", b"f02"))


def test_a_file_replaced_by_a_directory_is_reported(env: Env,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The walk listed it as a file; by the time the worker looks, it is a directory.
    real = os.scandir

    class Listing(list[Any]):
        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def listing(path: Any) -> Any:
        with real(path) as it:
            got = Listing((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        if os.fsencode(path) == os.fsencode(env.src / "d0"):
            os.unlink(env.src / "d0" / "f07")
            os.mkdir(env.src / "d0" / "f07")
        return Listing(_Entry(n, d) for n, d in got)

    monkeypatch.setattr(backup_mod.os, "scandir", listing)
    env.backup(monkeypatch, jobs=True)
    assert env.stats["errors"] == 1


def test_a_workers_tree_is_byte_for_byte_the_one_process_tree(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    one = env.trees(env.backup(monkeypatch, jobs=False, use_cache=False))
    many = env.trees(env.backup(monkeypatch, jobs=True, use_cache=False))
    assert env.stats["files_read"] > 100  # read again, by the workers
    assert one["/d0"] == many["/d0"] and one["/d1"] == many["/d1"]


def test_cache_rows_naming_blobs_the_vault_lacks_are_read_again(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The files cache remembers a backup into another vault (or an interrupted one):
    # the workers find the files unchanged, the main process sees their blobs are
    # missing and reads them itself, through a narrow window of reads in flight.
    env.backup(monkeypatch, jobs=True)
    other = Env(tmp_path / "other")
    other.db.close()
    other.src, other.db = env.src, env.db
    monkeypatch.setattr(backup_mod, "_INLINE", 0)
    monkeypatch.setattr(backup_mod, "_INFLIGHT_FILES", 1)
    snap = other.backup(monkeypatch, jobs=True, workers=2)
    # All read again but the empty one; the two names of the hard link share one read.
    assert other.stats["files_read"] == 124 and other.stats["errors"] == 0
    ids = {n.name: n["content"] for n in TreeReader(other.repo).load(other.trees(snap)["/d1"])}
    assert other.repo.load_blob(ids[b"f05"][0]) == b"file 1 5\n" * 6
