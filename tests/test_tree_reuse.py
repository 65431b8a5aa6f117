"""Unchanged directories reuse the tree the last backup wrote for them.

A directory whose entries are all as the files cache last saw them (same
names, same stat fields but the access time, subdirectories with the same
trees) is not encoded again; anything that changes what its tree would hold
(content, mode, an xattr, an entry added or excluded) writes it anew, and so
every directory above it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tiervault.engine import backup as backup_mod
from tiervault.engine.backup import Archiver
from tiervault.engine.backupopts import BackupOptions
from tiervault.engine.procread import JobPool
from tiervault.engine.progress import Progress
from tiervault.engine.trees import TreeReader
from tiervault.state.db import StateDB
from tiervault.storage.local import LocalBackend
from tiervault.vault.crypto import KdfParams
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import Node

OLD = time.time() - 3600  # mtimes older than the cache's safety margin


class Env:
    def __init__(self, tmp: Path, jobs: bool) -> None:
        self.jobs = jobs
        self.src = tmp / "src"
        backend = LocalBackend(tmp / "vault", fsync=False)
        backend.create()
        self.repo = Repository.init(backend, "pw", KdfParams(n=2 ** 10, p=1))
        self.db = StateDB(tmp / "home")
        self.encoded: list[list[bytes]] = []  # names of each tree encoded
        self.parent: Snapshot | None = None

    def backup(self, monkeypatch: pytest.MonkeyPatch, **opts: Any) -> Snapshot:
        real = backup_mod.encode_entries
        self.encoded = []

        def counting(entries: list[tuple[bytes, Any]]) -> bytes:
            self.encoded.append(sorted(name for name, _ in entries))
            return real(entries)

        monkeypatch.setattr(backup_mod, "encode_entries", counting)
        jobs: list[Any] = []
        if self.jobs:  # every directory's files go to the worker processes
            monkeypatch.setattr(backup_mod, "_JOBS_AFTER", 0)
            real_add = JobPool.add
            monkeypatch.setattr(JobPool, "add", lambda pool, job: jobs.append(job) or
                                real_add(pool, job))
        opts.setdefault("processes", 2 if self.jobs else 0)
        writer = self.repo.writer(pack_size=1 << 20, uploads=1)
        try:
            a = Archiver(self.repo, writer, self.db, Progress(),
                         BackupOptions(paths=[str(self.src)], **opts), parent=self.parent)
            snap = a.run()
        finally:
            writer.close()
        assert bool(jobs) == self.jobs
        self.parent = snap
        return snap

    def node(self, snap: Snapshot, rel: str) -> Node:
        comps = tuple(os.fsencode(c) for c in (str(self.src) + "/" + rel).strip("/").split("/"))
        n = TreeReader(self.repo).lookup(bytes.fromhex(snap.tree), comps)
        assert n is not None, rel
        return n

    def content(self, snap: Snapshot, rel: str) -> bytes:
        return b"".join(self.repo.load_blob(b) for b in self.node(snap, rel)["content"])

    def touched(self, names: str) -> bool:
        """Whether any tree encoded by the last backup lists one of ``names``."""
        want = {os.fsencode(n) for n in names.split()}
        return any(want & set(t) for t in self.encoded)


def _write(p: Path, data: bytes) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, (OLD, OLD))


@pytest.fixture(params=[False, True], ids=["one-process", "worker-processes"])
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    e = Env(tmp_path, request.param)
    _write(e.src / "a" / "f1", b"one")
    _write(e.src / "a" / "f2", b"two")
    _write(e.src / "b" / "g1", b"gee")
    _write(e.src / "c" / "sub" / "h", b"aitch")
    os.symlink("a/f1", e.src / "c" / "link")
    yield e
    e.db.close()


def test_an_unchanged_backup_encodes_no_tree_below_the_paths(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    first = env.backup(monkeypatch)
    assert env.touched("f1 g1 h sub")
    second = env.backup(monkeypatch)
    # The backed-up directory's tree is the first one (its ancestors' may differ:
    # their atimes and mtimes move as the test writes the vault beside it).
    assert env.node(second, "")["subtree"] == env.node(first, "")["subtree"]
    # Only the ancestors of the backed-up path, which are not cached, were encoded.
    assert not env.touched("f1 f2 g1 h sub link a b c")
    assert env.content(second, "c/sub/h") == b"aitch"


def test_a_changed_file_rewrites_its_directory_and_those_above_only(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.backup(monkeypatch)
    _write(env.src / "c" / "sub" / "h", b"changed")
    snap = env.backup(monkeypatch)
    assert env.touched("h") and env.touched("sub") and env.touched("c")
    assert not env.touched("f1 g1")
    assert env.content(snap, "c/sub/h") == b"changed"
    assert env.content(snap, "a/f2") == b"two"


def test_mode_xattr_and_an_excluded_entry_are_not_hidden_by_reuse(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.backup(monkeypatch)
    env.backup(monkeypatch)
    os.chmod(env.src / "b" / "g1", 0o600)
    snap = env.backup(monkeypatch)
    assert env.node(snap, "b/g1")["mode"] == 0o600
    assert not env.touched("f1 h")
    try:
        os.setxattr(env.src / "a" / "f1", "user.tv", b"x")
    except OSError:
        pass  # no user xattrs on this file system: the other checks still hold
    else:
        snap = env.backup(monkeypatch)
        assert env.node(snap, "a/f1")["xattrs"] == [[b"user.tv", b"x"]]
    snap = env.backup(monkeypatch, excludes=["f2"])
    names = {n.name for n in TreeReader(env.repo).load(env.node(snap, "a")["subtree"])}
    assert names == {b"f1"}
    snap = env.backup(monkeypatch)   # and back in
    assert env.content(snap, "a/f2") == b"two"


def test_a_new_or_removed_entry_rewrites_the_directory(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.backup(monkeypatch)
    _write(env.src / "b" / "g2", b"new")
    snap = env.backup(monkeypatch)
    assert env.content(snap, "b/g2") == b"new"
    (env.src / "b" / "g2").unlink()
    snap = env.backup(monkeypatch)
    names = {n.name for n in TreeReader(env.repo).load(env.node(snap, "b")["subtree"])}
    assert names == {b"g1"}


def test_a_tree_missing_from_the_vault_is_written_again(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.backup(monkeypatch)
    # A new vault behind the same files cache (what a 'clear' would normally
    # prevent): the cached tree ids name nothing there, so nothing is reused.
    backend = LocalBackend(env.src.parent / "vault2", fsync=False)
    backend.create()
    env.repo = Repository.init(backend, "pw", KdfParams(n=2 ** 10, p=1))
    env.parent = None
    snap = env.backup(monkeypatch)
    assert env.touched("f1 g1 h")
    assert env.content(snap, "a/f1") == b"one"


def test_after_an_interrupted_backup_files_the_parent_lacks_count_as_new(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial 4: the files cache rows an interrupted backup left are not the
    parent's, so a cache hit is classified against the parent's trees."""
    parent = env.backup(monkeypatch)
    for i in range(5):
        _write(env.src / "n" / f"new{i}", b"new %d" % i)
    real = Archiver._finish_one
    calls = {"n": 0}

    def interrupted(self: Archiver, pd: Any) -> None:
        real(self, pd)
        calls["n"] += 1
        if pd.path.endswith(b"/n"):
            raise KeyboardInterrupt  # after the new directory's rows are written

    monkeypatch.setattr(Archiver, "_finish_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        env.backup(monkeypatch)
    env.db.commit_cache()  # what closing the state database does
    monkeypatch.setattr(Archiver, "_finish_one", real)
    env.parent = parent
    snap = env.backup(monkeypatch)
    assert snap.stats["files_new"] == 5, snap.stats
    assert snap.stats["files_unmodified"] == 4 and snap.stats["files_changed"] == 0
    # ... and once a backup completed, cache hits count as unchanged again.
    snap = env.backup(monkeypatch)
    assert snap.stats["files_unmodified"] == 9 and snap.stats["files_new"] == 0
