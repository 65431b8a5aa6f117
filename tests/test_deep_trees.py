"""Trees thousands of levels deep, through every command that walks them (issue 9).

Each walk is iterative: no RecursionError, no traceback, at any depth up to the
bound (``engine.trees.MAX_DEPTH``). Backup and restore use absolute paths, so a
real directory chain is read up to PATH_MAX (4096 bytes, about 2,000 levels of
one-letter names); deeper entries are one warning each. Deeper snapshot trees
(5,000 levels) are written into the vault directly and then listed, searched,
compared, checked and restored through the CLI.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import (
    PASSWORD,
    backup,
    describe,
    init_vault,
    make_deep,
    ok,
    restore,
    rmtree_deep,
    run_tv,
    tv_json,
)

PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short absolute path (PATH_MAX counts all of it)."""
    top = Path(tempfile.mkdtemp(prefix="tv", dir="/tmp"))
    try:
        yield top
    finally:
        rmtree_deep(top)


def test_deep_chain_backup_ls_find_diff_restore_check(short_dir: Path) -> None:
    home, _ = init_vault(short_dir, "v")
    src, target = short_dir / "s", short_dir / "r"
    # The restored leaf is target + the source path, and is written under a
    # longer temporary name first: all of it must fit in PATH_MAX.
    depth = (PATH_MAX - 2 * len(str(short_dir)) - 64) // 2
    assert depth > 1500  # well past Python's recursion limit (1000)
    leaf = make_deep(src, depth)
    first = backup(home, str(src))
    assert first["complete"] is True and first["files_new"] == 1
    with open(leaf, "ab") as f:
        f.write(b", changed")
    second = backup(home, str(src))
    assert second["files_changed"] == 1, second
    a, b = (s["id"] for s in tv_json(home, "snapshots"))

    listing = ok(run_tv(home, "ls", "--recursive", b)).stdout.splitlines()
    assert os.fsdecode(leaf) in listing and len(listing) >= depth + 2
    assert [e["path"] for e in tv_json(home, "ls", b, str(src))][-1] == os.fsdecode(leaf)
    for pattern in ("leaf", "**/leaf", "s/**/d/leaf", os.fsdecode(leaf)):
        hits = tv_json(home, "find", pattern, "--snapshot", b)
        assert [h["path"] for h in hits] == [os.fsdecode(leaf)], pattern
    assert tv_json(home, "diff", a, b) == {"snapshot_a": a, "snapshot_b": b, "added": [],
                                           "removed": [], "modified": [os.fsdecode(leaf)]}
    assert ok(run_tv(home, "diff", a, b)).stdout.endswith("0 added, 0 removed, 1 modified\n")

    restore(home, b, str(target))
    restored = os.fsencode(target) + leaf
    fd = os.open(restored, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"deep down, changed"
    finally:
        os.close(fd)
    assert tv_json(home, "check", "--read-data")["ok"] is True


def test_chain_deeper_than_path_max_is_one_warning(short_dir: Path) -> None:
    home, _ = init_vault(short_dir, "v")
    src = short_dir / "s"
    make_deep(src, 5000)
    proc = run_tv(home, "backup", str(src))
    assert proc.returncode == 6, describe(proc)  # completed, some files unreadable
    assert "Traceback" not in proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2 and "too long" in warnings[0], describe(proc)  # + the summary
    hits = tv_json(home, "find", "d")
    assert len(hits) > 1900  # read as deep as PATH_MAX lets
    ok(run_tv(home, "ls", "latest"))
    assert tv_json(home, "check")["ok"] is True


def _deep_snapshot(vault: Path, depth: int, leaf_data: bytes) -> str:
    """Write a snapshot of /d/d/.../d/leaf (``depth`` directories) into a local vault
    (backup cannot read such a chain: its path is longer than PATH_MAX); its id."""
    from tiervault.storage.local import LocalBackend
    from tiervault.vault.pack import BlobType
    from tiervault.vault.repository import Repository
    from tiervault.vault.snapshot import Snapshot
    from tiervault.vault.tree import Node, encode_tree

    repo = Repository.open(LocalBackend(vault), PASSWORD)
    w = repo.writer()
    now = 1_700_000_000 * 10**9
    meta = {"uid": 0, "gid": 0, "mtime": now, "atime": now, "ctime": now}
    blob, _ = w.save_blob(BlobType.DATA, leaf_data)
    tid, _ = w.save_blob(BlobType.TREE, encode_tree([Node(
        name=b"leaf", type="file", mode=0o644, size=len(leaf_data), content=[blob], **meta)]))
    for _ in range(depth):
        tid, _ = w.save_blob(BlobType.TREE, encode_tree([Node(
            name=b"d", type="dir", mode=0o755, subtree=tid, **meta)]))
    w.flush()
    w.close()
    snap = Snapshot(time=datetime.now(UTC).isoformat(), hostname="deep",
                    username="root", paths=["/d"], tree=tid.hex())
    return repo.save_snapshot(snap)


def test_snapshot_tree_5000_levels_deep(tmp_path: Path) -> None:
    home, vault = init_vault(tmp_path)
    depth = 5000
    a = _deep_snapshot(vault, depth, b"old")
    b = _deep_snapshot(vault, depth, b"new")
    leaf = "/d" * depth + "/leaf"

    listing = ok(run_tv(home, "ls", "-r", b)).stdout.splitlines()
    assert len(listing) == depth + 1 and listing[-1] == leaf
    assert tv_json(home, "ls", b, leaf)[0]["size"] == 3
    for pattern in ("leaf", "**/leaf", "/d/**/d/leaf"):
        assert [h["path"] for h in tv_json(home, "find", pattern, "-s", b)] == [leaf], pattern
    assert tv_json(home, "diff", a, b)["modified"] == [leaf]
    diff = ok(run_tv(home, "diff", b, a)).stdout
    assert diff == f"M {leaf}\n0 added, 0 removed, 1 modified\n"
    assert tv_json(home, "check", "--read-data")["ok"] is True
    # Restore is descriptor-relative (each directory opened from its parent), so the
    # whole chain is restored although the leaf's path is longer than PATH_MAX.
    out = tmp_path / "out"
    try:
        summary = json.loads(restore(home, b, str(out)).stdout)
        assert summary["dirs_restored"] == depth and summary["files_restored"] == 1
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(depth):
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf_fd = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        try:
            assert os.read(leaf_fd, 16) == b"new"
        finally:
            os.close(leaf_fd)
    finally:
        # pytest's own clean-up of old temporary folders recurses: never leave it this tree.
        if out.exists():
            rmtree_deep(out)
