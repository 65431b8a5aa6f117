"""Round trip through the CLI: what is backed up comes back exactly.

One source tree holds every kind of thing a file system has (empty files and
directories, hard links, symlinks of all sorts, sparse files, odd modes, old
times, names that are not UTF-8, deep nesting, xattrs, a FIFO, files of edge
sizes up to ~110 MB). It is backed up once (module fixture) and restored into
fresh targets; every path is then compared: type, content, mode, owner, times
in nanoseconds, link targets, hard link groups, xattrs, and allocation of
sparse files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    backup,
    init_vault,
    make_deep,
    ok,
    restore,
    rmtree_deep,
    run_tv,
    tv_json,
    under,
)

MiB = 1024 * 1024
T1990 = 631_152_000_123_456_789  # 1990-01-01 + some nanoseconds
T1991 = 662_688_000_987_654_321
DEEP = 50
HUGE = 110_000_000


def _rand(n: int, seed: int) -> bytes:
    """Deterministic incompressible bytes, fast (SHAKE-256 stream)."""
    return hashlib.shake_256(seed.to_bytes(8, "little")).digest(n)


def _xattrs_supported(d: Path) -> bool:
    probe = d / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def _write_sparse(path: Path, size: int, islands: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in islands:
            f.seek(off)
            f.write(data)


def build_tree(src: Path) -> dict[str, Any]:
    """Create the source tree; returns facts the tests need."""
    src.mkdir()
    facts: dict[str, Any] = {"xattrs": _xattrs_supported(src)}
    # Sizes.
    (src / "empty").write_bytes(b"")
    (src / "one").write_bytes(b"x")
    (src / "b4095").write_bytes(_rand(4095, 1))
    (src / "mib").write_bytes(_rand(MiB + 7, 2))
    (src / "eight-mib-plus-one").write_bytes(_rand(8 * MiB + 1, 3))
    (src / "compressible.txt").write_bytes(b"all work and no play\n" * 50_000)
    # Sparse files: a mostly-hole image and a ~110 MB file with a few islands.
    _write_sparse(src / "sparse.img", 16 * MiB,
                  [(0, _rand(4096, 4)), (5 * MiB + 123, _rand(10_000, 5)),
                   (16 * MiB - 4096, _rand(4096, 6))])
    _write_sparse(src / "huge.bin", HUGE,
                  [(i * 10 * MiB + i * 4099, _rand(64 * 1024, 100 + i)) for i in range(10)])
    # Empty dirs, modes.
    (src / "emptydir").mkdir()
    (src / "emptydir-0700").mkdir(mode=0o700)
    os.chmod(src / "emptydir-0700", 0o700)
    (src / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(src / "exec.sh", 0o755)
    (src / "private.key").write_bytes(b"secret")
    os.chmod(src / "private.key", 0o600)
    (src / "setgid").mkdir()
    (src / "setgid" / "inside").write_bytes(b"in a setgid dir")
    os.chmod(src / "setgid", 0o2775)
    (src / "readonly").mkdir()
    (src / "readonly" / "file").write_bytes(b"in a read-only dir")
    os.chmod(src / "readonly" / "file", 0o444)
    (src / "odd-modes").write_bytes(b"sticky and setuid bits")
    os.chmod(src / "odd-modes", 0o4751)
    # Ownership (we are root in tests and CI).
    (src / "owned").write_bytes(b"belongs to 1234:5678")
    if os.geteuid() == 0:
        os.chown(src / "owned", 1234, 5678)
    # Hard links: a group of three names in different dirs and a pair.
    (src / "links").mkdir()
    (src / "links" / "h1").write_bytes(_rand(3000, 7))
    os.link(src / "links" / "h1", src / "links" / "h2")
    os.link(src / "links" / "h1", src / "setgid" / "h3")
    (src / "links" / "p1").write_bytes(b"pair")
    os.link(src / "links" / "p1", src / "links" / "p2")
    # Symlinks: relative, absolute, dangling, to a dir, to itself.
    (src / "sub").mkdir()
    (src / "sub" / "f").write_bytes(b"sub file")
    os.symlink("mib", src / "sym-file")
    os.symlink("/etc/hostname", src / "sym-abs")
    os.symlink("no/such/target", src / "sym-dangling")
    os.symlink("sub", src / "sym-dir")
    os.symlink("sym-self", src / "sym-self")
    # Names: not UTF-8, unicode, awkward characters.
    bad_dir = os.fsencode(src) + b"/dir-\xe9\xff"
    os.mkdir(bad_dir)
    with open(bad_dir + b"/file-\xfe\x80.bin", "wb") as f:
        f.write(b"latin-1 name")
    facts["bad_dir"] = bad_dir
    (src / "日本語 файл ü ✓.txt").write_bytes("ünïcödé ✓".encode())
    (src / "spaces and\nnewline").write_bytes(b"newline in name")
    (src / "-dash").write_bytes(b"leading dash")
    (src / "star*?[").write_bytes(b"glob chars")
    # Deep nesting.
    d = src / "deep"
    for i in range(DEEP):
        d = d / f"level{i:02d}"
    d.mkdir(parents=True)
    (d / "leaf").write_bytes(b"at the bottom")
    facts["deep_leaf"] = d / "leaf"
    # FIFO (must be recreated, never opened for reading).
    os.mkfifo(src / "fifo", 0o640)
    # Extended attributes.
    if facts["xattrs"]:
        os.setxattr(src / "one", "user.comment", b"hello \x00\xff binary")
        os.setxattr(src / "one", "user.empty", b"")
        os.setxattr(src / "sub", "user.dirattr", b"on a directory")
        os.setxattr(src / "links" / "h1", "user.linked", b"shared by the links")
    # Times, deepest first so directory mtimes stick; every entry distinct.
    n = 0
    for root, dirs, files in os.walk(os.fsencode(src), topdown=False):
        for name in files + dirs:
            p = os.path.join(root, name)
            n += 1
            os.utime(p, ns=(T1991 + n * 1_000_003, T1990 + n * 86_400_000_000_007),
                     follow_symlinks=False)
    os.utime(src / "sym-self", ns=(T1991, T1990), follow_symlinks=False)
    os.utime(src, ns=(T1991, T1990))
    return facts


@dataclass
class Meta:
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    atime: int
    size: int
    blocks: int
    ino: int
    nlink: int
    target: bytes | None
    xattrs: dict[str, bytes]
    digest: str | None = None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chardev"),
                       (stat.S_ISBLK, "blockdev")):
        if test(mode):
            return name
    return "other"


def _digest(path: bytes) -> str:
    """SHA-256 of a file, read without touching its atime."""
    flags = os.O_RDONLY | getattr(os, "O_NOATIME", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names
            if n.startswith("user.")}


def snapshot_meta(root: bytes) -> dict[bytes, Meta]:
    """Relative path -> metadata of every entry below ``root`` (root itself as b'.').

    All stat calls happen before any file is read, so atimes are as found.
    """
    out: dict[bytes, Meta] = {}

    def one(rel: bytes, p: bytes) -> None:
        st = os.lstat(p)
        k = _kind(st.st_mode)
        out[rel] = Meta(k, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                        st.st_atime_ns, st.st_size, st.st_blocks, st.st_ino, st.st_nlink,
                        os.readlink(p) if k == "symlink" else None, _xattrs(p))

    one(b".", root)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            one(os.path.relpath(p, root), p)
    for rel, m in out.items():
        if m.kind == "file":
            m.digest = _digest(os.path.join(root, rel))
    return out


def compare_trees(src: dict[bytes, Meta], dst: dict[bytes, Meta], check_xattrs: bool) -> None:
    """Assert ``dst`` is an exact copy of ``src`` (dir atimes excepted: listing moves them)."""
    missing = sorted(set(src) - set(dst))
    extra = sorted(set(dst) - set(src))
    assert not missing, f"not restored: {missing}"
    assert not extra, f"restored but not in the source: {extra}"
    problems = []
    for rel, s in sorted(src.items()):
        d = dst[rel]
        fields = ["kind", "mode", "uid", "gid", "mtime", "target"]
        if s.kind == "file":
            fields += ["size", "digest", "atime", "nlink"]
        if check_xattrs:
            fields.append("xattrs")
        for f in fields:
            if getattr(s, f) != getattr(d, f):
                problems.append(f"{rel!r}: {f} {getattr(s, f)!r} != {getattr(d, f)!r}")
    assert not problems, "\n".join(problems)
    # Hard link groups: same partition of names into inodes.
    def groups(m: dict[bytes, Meta]) -> set[frozenset[bytes]]:
        by: dict[int, set[bytes]] = {}
        for rel, x in m.items():
            if x.kind == "file":
                by.setdefault(x.ino, set()).add(rel)
        return {frozenset(v) for v in by.values() if len(v) > 1}

    assert groups(src) == groups(dst)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The source tree, its metadata as backed up, a vault and the snapshot summary."""
    tmp = tmp_path_factory.mktemp("roundtrip")
    src = tmp / "src"
    facts = build_tree(src)
    before = snapshot_meta(os.fsencode(src))
    home, vault = init_vault(tmp)
    summary = backup(home, str(src))
    after = snapshot_meta(os.fsencode(src))
    return {"tmp": tmp, "src": src, "home": home, "vault": vault, "summary": summary,
            "meta": before, "meta_after_backup": after, **facts}


def test_backup_summary(backed_up: dict[str, Any]) -> None:
    s = backed_up["summary"]
    assert s["complete"] is True
    assert s["warnings"] == []
    files = sum(1 for m in backed_up["meta"].values() if m.kind == "file")
    assert s["total_files_processed"] == files
    assert s["files_new"] == files
    # Hard-linked names are read once.
    distinct = {m.ino for m in backed_up["meta"].values() if m.kind == "file"}
    assert s["bytes_read"] == sum(
        next(m.size for m in backed_up["meta"].values() if m.ino == i) for i in distinct)


def test_backup_leaves_source_untouched(backed_up: dict[str, Any]) -> None:
    """Backing up changes nothing in the source, not even file atimes."""
    before, after = backed_up["meta"], backed_up["meta_after_backup"]
    for rel, m in before.items():
        a = after[rel]
        assert (m.kind, m.mode, m.mtime, m.size, m.digest) == \
            (a.kind, a.mode, a.mtime, a.size, a.digest), rel
        if m.kind == "file":
            assert m.atime == a.atime, f"backup moved the atime of {rel!r}"


def test_full_restore_is_exact(backed_up: dict[str, Any]) -> None:
    target = backed_up["tmp"] / "restore-full"
    res = restore(backed_up["home"], "latest", str(target))
    assert '"errors": 0' in res.stdout
    restored_root = under(target, backed_up["src"])
    dst = snapshot_meta(restored_root)
    compare_trees(backed_up["meta"], dst, backed_up["xattrs"])
    # The FIFO was recreated, not read.
    assert stat.S_ISFIFO(os.lstat(restored_root + b"/fifo").st_mode)
    # The ancestors of the backed-up path are recreated as directories.
    assert os.path.isdir(under(target, backed_up["src"].parent))


def test_sparse_files_stay_sparse(backed_up: dict[str, Any]) -> None:
    target = backed_up["tmp"] / "restore-sparse"
    src = backed_up["src"]
    restore(backed_up["home"], "latest", str(target), "--include", str(src / "sparse.img"),
            "--include", str(src / "huge.bin"))
    for name in ("sparse.img", "huge.bin"):
        s = os.stat(src / name)
        d = os.stat(under(target, src / name))
        assert d.st_size == s.st_size
        assert _digest(under(target, src / name)) == _digest(os.fsencode(src / name))
        # Allow a little slack per data island for block rounding, nothing like the size.
        assert d.st_blocks * 512 <= s.st_blocks * 512 + 64 * 1024, (
            f"{name}: restored file allocates {d.st_blocks * 512} bytes, "
            f"the original {s.st_blocks * 512} (size {s.st_size})")


def test_restore_include_one_subdir(backed_up: dict[str, Any]) -> None:
    src: Path = backed_up["src"]
    target = backed_up["tmp"] / "restore-sub"
    restore(backed_up["home"], "latest", str(target), "--include", str(src / "links"))
    root = under(target, src)
    dst = snapshot_meta(root)
    expected = {k: v for k, v in backed_up["meta"].items()
                if k == b"links" or k.startswith(b"links/")}
    assert set(dst) - {b"."} == set(expected)
    for rel, m in expected.items():
        d = dst[rel]
        assert (d.kind, d.mode, d.mtime, d.digest) == (m.kind, m.mode, m.mtime, m.digest), rel
    # The two names of the pair (both inside) are still one file.
    assert dst[b"links/p1"].ino == dst[b"links/p2"].ino
    assert dst[b"links/h1"].ino == dst[b"links/h2"].ino


def test_restore_include_non_utf8_dir(backed_up: dict[str, Any]) -> None:
    target = backed_up["tmp"] / "restore-bytes"
    bad_dir: bytes = backed_up["bad_dir"]
    restore(backed_up["home"], "latest", str(target), "--include", bad_dir)
    got = under(target, bad_dir) + b"/file-\xfe\x80.bin"
    with open(got, "rb") as f:
        assert f.read() == b"latin-1 name"
    assert not os.path.exists(under(target, backed_up["src"] / "one"))


def test_restore_include_deep_file(backed_up: dict[str, Any]) -> None:
    target = backed_up["tmp"] / "restore-deep"
    leaf: Path = backed_up["deep_leaf"]
    restore(backed_up["home"], "latest", str(target), "--include", str(leaf))
    assert Path(os.fsdecode(under(target, leaf))).read_bytes() == b"at the bottom"


def test_restore_include_missing_path_is_a_clear_error(backed_up: dict[str, Any]) -> None:
    target = backed_up["tmp"] / "restore-missing"
    proc = run_tv(backed_up["home"], "restore", "latest", str(target), "--include",
                  str(backed_up["src"] / "no-such-thing"))
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr
    assert "no-such-thing" in proc.stderr


def test_restore_into_existing_target_overwrites_files(backed_up: dict[str, Any]) -> None:
    """A second restore into the same target gives the same exact tree."""
    target = backed_up["tmp"] / "restore-twice"
    src: Path = backed_up["src"]
    restore(backed_up["home"], "latest", str(target), "--include", str(src / "links"))
    p = Path(os.fsdecode(under(target, src / "links" / "p1")))
    p.write_bytes(b"scribbled over")
    restore(backed_up["home"], "latest", str(target), "--include", str(src / "links"))
    assert p.read_bytes() == b"pair"
    dst = snapshot_meta(under(target, src))
    assert dst[b"links/p1"].ino == dst[b"links/p2"].ino


def test_ls_json(backed_up: dict[str, Any]) -> None:
    src: Path = backed_up["src"]
    entries = tv_json(backed_up["home"], "ls", "latest")
    by_path = {e["path"]: e for e in entries}
    for rel, m in backed_up["meta"].items():
        p = os.fsdecode(os.path.normpath(os.fsencode(src) + b"/" + rel))
        assert p in by_path, p
        e = by_path[p]
        assert e["type"] == m.kind, p
        assert e["mode"] == m.mode, p
        assert (e["uid"], e["gid"]) == (m.uid, m.gid), p
        if m.kind == "file":
            assert e["size"] == m.size, p
        if m.kind == "symlink":
            assert e["target"] == os.fsdecode(m.target or b""), p
    # Ancestors are listed too, parents before children.
    paths = [e["path"] for e in entries]
    assert paths.index(str(src)) < paths.index(str(src / "sub" / "f"))
    # Listing below a path, non-recursively.
    sub = tv_json(backed_up["home"], "ls", "--no-recursive", "latest", str(src / "sub"))
    assert [e["path"] for e in sub] == [str(src / "sub"), str(src / "sub" / "f")]
    one = tv_json(backed_up["home"], "ls", "latest", str(src / "one"))
    assert len(one) == 1 and one[0]["size"] == 1


def test_ls_text_with_odd_names(backed_up: dict[str, Any]) -> None:
    """Text output survives names that are not UTF-8 (no traceback)."""
    ok(run_tv(backed_up["home"], "ls", "latest", str(backed_up["src"])))
    ok(run_tv(backed_up["home"], "find", "file-*"))


def test_find_json(backed_up: dict[str, Any]) -> None:
    src: Path = backed_up["src"]
    hits = tv_json(backed_up["home"], "find", "h?")
    assert sorted(h["path"] for h in hits) == sorted(
        str(src / p) for p in ("links/h1", "links/h2", "setgid/h3"))
    assert all(h["snapshot"] == backed_up["summary"]["snapshot_id"] for h in hits)
    # '*' stays within one name (restic's meaning, as in excludes); '**' spans directories.
    assert tv_json(backed_up["home"], "find", f"{src}/deep/*/leaf") == []
    hits = tv_json(backed_up["home"], "find", f"{src}/deep/**/leaf")
    assert [h["path"] for h in hits] == [str(backed_up["deep_leaf"])]
    assert tv_json(backed_up["home"], "find", "nothing-matches-this") == []


def test_snapshots_json(backed_up: dict[str, Any]) -> None:
    snaps = tv_json(backed_up["home"], "snapshots")
    assert len(snaps) == 1
    s = snaps[0]
    assert s["id"] == backed_up["summary"]["snapshot_id"]
    assert s["paths"] == [str(backed_up["src"])]
    assert s["complete"] is True


def test_diff_json(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "keep").write_bytes(b"same")
    (src / "change").write_bytes(b"before")
    (src / "gone").write_bytes(b"bye")
    (src / "d" / "gone-too").write_bytes(b"bye")
    os.utime(src / "change", ns=(T1990, T1990))
    home, _ = init_vault(tmp_path)
    a = backup(home, str(src))
    (src / "change").write_bytes(b"after!")
    (src / "gone").unlink()
    (src / "d" / "gone-too").unlink()
    (src / "d").rmdir()
    (src / "new").mkdir()
    (src / "new" / "file").write_bytes(b"hello")
    b = backup(home, str(src))
    d = tv_json(home, "diff", a["snapshot_id"], b["short_id"])
    assert d["snapshot_a"] == a["snapshot_id"] and d["snapshot_b"] == b["snapshot_id"]
    assert sorted(d["added"]) == [str(src / "new"), str(src / "new" / "file")]
    assert sorted(d["removed"]) == [str(src / "d"), str(src / "d" / "gone-too"), str(src / "gone")]
    assert d["modified"] == [str(src / "change")]
    same = tv_json(home, "diff", a["snapshot_id"], a["snapshot_id"])
    assert same["added"] == same["removed"] == same["modified"] == []


def test_device_nodes_round_trip(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("device nodes need root")
    src = tmp_path / "src"
    src.mkdir()
    try:
        os.mknod(src / "null", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            pytest.skip("mknod is not allowed here")
        raise
    home, _ = init_vault(tmp_path)
    backup(home, str(src))
    target = tmp_path / "out"
    restore(home, "latest", str(target))
    st = os.lstat(under(target, src / "null"))
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o644


def test_very_deep_tree_round_trip(tmp_path: Path) -> None:
    """700 nested directories: deeper than Python's recursion limit allows a recursive walk."""
    src = tmp_path / "deep-src"
    leaf = make_deep(src, 700)
    target = tmp_path / "out"
    try:
        home, _ = init_vault(tmp_path)
        s = backup(home, str(src))
        assert s["files_new"] == 1 and s["complete"] is True
        restore(home, "latest", str(target))
        with open(under(target, leaf), "rb") as f:
            assert f.read() == b"deep down"
        hits = tv_json(home, "find", "leaf")
        assert [h["path"] for h in hits] == [os.fsdecode(leaf)]
    finally:
        rmtree_deep(src)
        rmtree_deep(target)
