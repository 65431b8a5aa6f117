"""Restoring hostile snapshots never touches anything outside the target.

The snapshots here are correctly encrypted (made with the vault API and the
vault's own key, as an attacker who knows the passphrase, or a buggy writer,
could make them) but say nasty things: names like '..', names with slashes,
absolute names, duplicate names where a symlink comes before a directory of the
same name, device nodes, absurd metadata. Targets may also hold planted
symlinks pointing outside. The restore (through the CLI) may warn and skip, but
must not write, create, chmod or delete anything outside the target, and must
not crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PASSWORD, describe, init_vault, rmtree_deep, run_tv, tv_json
from tiervault.storage.local import LocalBackend
from tiervault.vault.pack import BlobType
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import Node, encode_tree

T2000 = 946_684_800_000_000_000


class Forge:
    """Writes trees and snapshots straight into a vault, bypassing the backup engine."""

    def __init__(self, vault: Path) -> None:
        self.repo = Repository.open(LocalBackend(vault), PASSWORD)
        self.writer = self.repo.writer()

    def data(self, content: bytes) -> bytes:
        return self.writer.save_blob(BlobType.DATA, content)[0]

    def tree(self, nodes: list[Node]) -> bytes:
        return self.writer.save_blob(BlobType.TREE, encode_tree(nodes))[0]

    def file(self, name: bytes, body: bytes = b"EVIL", **kw: Any) -> Node:
        n = Node(name=name, type="file", mode=0o644, uid=0, gid=0, mtime=T2000,
                 size=len(body), content=[self.data(body)] if body else [])
        n.update(kw)
        return n

    def dir(self, name: bytes, children: list[Node], **kw: Any) -> Node:
        n = Node(name=name, type="dir", mode=0o755, uid=0, gid=0, mtime=T2000,
                 subtree=self.tree(children))
        n.update(kw)
        return n

    def symlink(self, name: bytes, target: bytes | str, **kw: Any) -> Node:
        n = Node(name=name, type="symlink", mode=0o777, uid=0, gid=0, mtime=T2000,
                 target=os.fsencode(target))
        n.update(kw)
        return n

    def snapshot(self, root: list[Node]) -> str:
        tid = self.tree(root)
        self.writer.flush()
        self.writer.close()
        snap = Snapshot(time=datetime.now().astimezone().isoformat(), hostname="mallory",
                        username="mallory", paths=["/"], tree=tid.hex())
        self.repo.save_snapshot(snap)
        self.writer = self.repo.writer()
        return snap.id


def fingerprint(root: Path) -> dict[bytes, tuple[Any, ...]]:
    """Everything observable about a directory tree (types, modes, owners, times, content)."""
    out: dict[bytes, tuple[Any, ...]] = {}
    base = os.fsencode(root)

    def one(p: bytes) -> None:
        st = os.lstat(p)
        extra: Any = None
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                extra = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            extra = os.readlink(p)
        out[os.path.relpath(p, base)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                         st.st_size, st.st_nlink, extra)

    one(base)
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            one(os.path.join(dirpath, name))
    return out


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Forge]:
    """One vault for the module: each test forges its own snapshots into it."""
    home, vault = init_vault(tmp_path_factory.mktemp("hostile"))
    return home, Forge(vault)


@pytest.fixture
def world(tmp_path: Path, shared_vault: tuple[Path, Forge]) -> dict[str, Any]:
    """The vault, a sentinel directory outside the target, and the target."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "victim").write_bytes(b"original")
    (outside / "sub" / "deep-victim").write_bytes(b"original too")
    os.chmod(outside, 0o750)
    os.chmod(outside / "victim", 0o640)
    home, forge = shared_vault
    return {"tmp": tmp_path, "outside": outside, "home": home, "target": tmp_path / "target",
            "forge": forge}


def _restore(world: dict[str, Any], snap: str, *extra: str) -> Any:
    """Restore through the CLI; checks the outside world did not change."""
    before = fingerprint(world["outside"])
    siblings = sorted(os.listdir(world["tmp"]))
    proc = run_tv(world["home"], "restore", snap, str(world["target"]), *extra)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.returncode in (0, 1), describe(proc)
    assert fingerprint(world["outside"]) == before, describe(proc)
    assert set(os.listdir(world["tmp"])) <= {*siblings, "target"}, describe(proc)
    for name in ("escaped", "EVIL", "evil"):
        assert not (world["tmp"] / name).exists()
    return proc


def test_dot_dot_slashes_and_absolute_names(world: dict[str, Any]) -> None:
    f: Forge = world["forge"]
    outside: Path = world["outside"]
    snap = f.snapshot([
        f.file(b".."),
        f.dir(b"..", [f.file(b"escaped"), f.file(b"victim")]),
        f.dir(b".", [f.file(b"escaped")]),
        f.file(b"../outside/victim"),
        f.file(b"../../escaped"),
        f.file(os.fsencode(outside / "victim")),
        f.dir(os.fsencode(outside), [f.file(b"victim")]),
        f.file(b"etc/passwd"),
        f.file(b"a\0b"),
        f.file(b""),
        f.file(b"fine", b"a harmless file"),
        f.dir(b"sub", [f.file(b".."), f.file(b"../../../outside/victim"),
                       f.file(b"ok", b"nested harmless")]),
    ])
    _restore(world, snap)
    t: Path = world["target"]
    assert (t / "fine").read_bytes() == b"a harmless file"
    assert (t / "sub" / "ok").read_bytes() == b"nested harmless"
    # Nothing but the harmless entries came out.
    assert sorted(os.listdir(t)) == ["fine", "sub"]
    assert sorted(os.listdir(t / "sub")) == ["ok"]


@pytest.mark.parametrize("symlink_first", [True, False])
def test_duplicate_names_symlink_and_directory(world: dict[str, Any],
                                               symlink_first: bool) -> None:
    f: Forge = world["forge"]
    outside: Path = world["outside"]
    link = f.symlink(b"link", outside)
    evil_dir = f.dir(b"link", [f.file(b"victim"), f.file(b"evil"),
                               f.dir(b"sub", [f.file(b"deep-victim")])])
    entries = [link, evil_dir] if symlink_first else [evil_dir, link]
    snap = f.snapshot([*entries, f.file(b"z", b"zzz")])
    _restore(world, snap)
    t: Path = world["target"]
    assert (t / "z").read_bytes() == b"zzz"
    # Exactly one of the two entries named 'link' was restored (the first one).
    if symlink_first:
        assert os.readlink(t / "link") == str(outside)
    else:
        assert (t / "link").is_dir() and not (t / "link").is_symlink()
        assert (t / "link" / "evil").read_bytes() == b"EVIL"


def test_planted_symlinks_in_the_target_are_not_followed(world: dict[str, Any]) -> None:
    """The target already holds symlinks to the outside where the snapshot has dirs/files."""
    f: Forge = world["forge"]
    outside: Path = world["outside"]
    t: Path = world["target"]
    t.mkdir()
    os.symlink(outside, t / "dirlink")        # snapshot: a directory with files
    os.symlink(outside, t / "deeplink")       # snapshot: a directory with a subdirectory
    os.symlink(outside / "victim", t / "filelink")  # snapshot: a regular file
    os.symlink(outside, t / "hardlinkdir")    # snapshot: a dir holding a hard link
    os.symlink(outside, t / "speciallink")    # snapshot: a dir holding a fifo and a symlink
    h = {"inode": 77, "dev": 1, "nlink": 2}
    snap = f.snapshot([
        f.dir(b"dirlink", [f.file(b"victim"), f.file(b"evil")], mode=0o777),
        f.dir(b"deeplink", [f.dir(b"sub", [f.file(b"deep-victim"), f.file(b"evil")],
                                  mode=0o777),
                            f.dir(b"newdir", [f.file(b"evil")])], mode=0o777),
        f.file(b"filelink", b"replaced the link, not the file"),
        f.file(b"a-first-name", b"linked", **h),
        f.dir(b"hardlinkdir", [f.file(b"victim", b"linked", **h)], mode=0o777),
        f.dir(b"speciallink", [Node(name=b"fifo", type="fifo", mode=0o666, mtime=T2000),
                               f.symlink(b"victim", "/etc/passwd"),
                               f.symlink(b"newlink", "/etc/passwd")], mode=0o777),
    ])
    _restore(world, snap)
    # The planted file symlink was replaced by the restored file; the outside is intact.
    assert not (t / "filelink").is_symlink()
    assert (t / "filelink").read_bytes() == b"replaced the link, not the file"
    assert (t / "a-first-name").read_bytes() == b"linked"


def test_planted_symlink_on_an_ancestor_of_a_real_backup(world: dict[str, Any]) -> None:
    """A normal backup of /x/y restored into a target where target/x links outside."""
    src = world["tmp"] / "src"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "file").write_bytes(b"real data")
    proc = run_tv(world["home"], "--json", "backup", str(src))
    assert proc.returncode == 0, describe(proc)
    t: Path = world["target"]
    t.mkdir()
    first = os.fsdecode(os.fsencode(src).split(b"/")[1])  # 'tmp'
    os.symlink(world["outside"], t / first)
    _restore(world, json.loads(proc.stdout)["snapshot_id"])


def test_device_nodes_stay_inside(world: dict[str, Any]) -> None:
    f: Forge = world["forge"]
    snap = f.snapshot([
        Node(name=b"sda", type="blockdev", mode=0o666, uid=0, gid=0, rdev=os.makedev(8, 0),
             mtime=T2000),
        Node(name=b"null", type="chardev", mode=0o600, uid=0, gid=0, rdev=os.makedev(1, 3),
             mtime=T2000),
        Node(name=b"sock", type="socket", mode=0o777, mtime=T2000),
        f.dir(b"d", [Node(name=b"..", type="chardev", mode=0o666, rdev=os.makedev(1, 3))]),
    ])
    _restore(world, snap)
    t: Path = world["target"]
    for name in ("sda", "null"):
        p = t / name
        if p.exists() or p.is_symlink():
            st = os.lstat(p)
            assert stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)
    assert not (t / "sock").exists()
    assert os.listdir(t / "d") == []


def test_absurd_metadata_never_crashes_the_restore(world: dict[str, Any]) -> None:
    f: Forge = world["forge"]
    big = 2**63 - 1
    snap = f.snapshot([
        f.file(b"huge-uid", uid=2**40, gid=2**40),
        f.file(b"negative-uid", uid=-5, gid=-7),
        f.file(b"huge-mtime", mtime=big, atime=-big),
        f.file(b"weird-mode", mode=-1),
        f.file(b"big-mode", mode=2**62),
        f.file(b"size-lies", b"12345", size=2**50),
        f.file(b"size-negative", b"12345", size=-10),
        f.file(b"xattr-nul", xattrs=[[b"user.a\0b", b"v"]]),
        f.file(b"xattr-empty-name", xattrs=[[b"", b"v"]]),
        f.file(b"xattr-not-user", xattrs=[[b"nonsense.name", b"v"]]),
        f.symlink(b"target-nul", b"/etc\0passwd"),
        f.symlink(b"target-empty", b""),
        f.symlink(b"target-huge", b"x" * 10_000),
        Node(name=b"neg-rdev", type="chardev", mode=0o600, rdev=-1),
        Node(name=b"huge-rdev", type="blockdev", mode=0o600, rdev=big),
        Node(name=b"fifo-no-fields", type="fifo"),
        Node(name=b"file-no-fields", type="file"),
        f.file(b"hardlink-to-nothing", b"x", inode=1, dev=1, nlink=5),
        f.file(b"content-missing", b"", content=[b"\x01" * 32], size=10),
        f.file(b"still-fine", b"restored anyway"),
    ])
    proc = _restore(world, snap)
    assert (world["target"] / "still-fine").read_bytes() == b"restored anyway", describe(proc)


def test_very_deep_tree(world: dict[str, Any]) -> None:
    """1200 nested directories (deeper than Python's recursion limit)."""
    f: Forge = world["forge"]
    node = f.file(b"leaf", b"bottom")
    for _ in range(1200):
        node = f.dir(b"d", [node])
    snap = f.snapshot([node])
    proc = run_tv(world["home"], "--json", "ls", snap)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.returncode == 0, describe(proc)
    try:
        _restore(world, snap)
        leaf = os.path.join(os.fsencode(world["target"]), *[b"d"] * 1200, b"leaf")
        with open(leaf, "rb") as fh:
            assert fh.read() == b"bottom"
    finally:
        rmtree_deep(world["target"])  # shutil.rmtree recurses and would fail


def test_missing_subtree_is_a_clean_error(world: dict[str, Any]) -> None:
    f: Forge = world["forge"]
    ghost = Node(name=b"ghost", type="dir", mode=0o755, subtree=b"\x42" * 32)
    snap = f.snapshot([ghost, f.file(b"ok", b"ok")])
    proc = _restore(world, snap)
    assert proc.returncode == 1, describe(proc)


def test_include_with_dot_dot_is_refused(world: dict[str, Any]) -> None:
    f: Forge = world["forge"]
    snap = f.snapshot([f.file(b"a")])
    proc = run_tv(world["home"], "restore", snap, str(world["target"]), "--include",
                  "/a/../../outside")
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    assert not world["target"].exists() or os.listdir(world["target"]) == []


def test_hostile_snapshot_listing_is_sane(world: dict[str, Any]) -> None:
    """ls and find show vetted names only (no '..', no slashes)."""
    f: Forge = world["forge"]
    snap = f.snapshot([f.file(b".."), f.file(b"a/b"), f.file(b"good"),
                       f.dir(b"d", [f.file(b"../x"), f.file(b"inner")])])
    paths = [e["path"] for e in tv_json(world["home"], "ls", snap)]
    assert paths == ["/d", "/d/inner", "/good"]
    hits = tv_json(world["home"], "find", "*", "--snapshot", snap)
    assert sorted(h["path"] for h in hits) == ["/d", "/d/inner", "/good"]
