"""Which snapshot ``latest`` is, and include/find patterns (issue 8 #14)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import backup, init_vault, ok, one_line_error, restore, run_tv, tv_json


@pytest.fixture
def two_sets(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A backup of src (with doc/bash/*), then a newer one of other."""
    home, _vault = init_vault(tmp_path)
    src, other = tmp_path / "src", tmp_path / "other"
    bash = src / "doc" / "bash"
    bash.mkdir(parents=True)
    (bash / "bash.1.gz").write_bytes(b"gz")
    (bash / "README").write_text("readme")
    (src / "doc" / "top.txt").write_text("top")
    (src / "code.py").write_text("print()")
    other.mkdir()
    (other / "x.txt").write_text("x")
    backup(home, src)
    backup(home, other)
    return home, src, other


def _restored(target: Path) -> set[str]:
    return {str(Path(d, f).relative_to(target)) for d, _, fs in os.walk(target) for f in fs}


def rel(p: Path) -> str:
    return str(p).lstrip("/")


def test_latest_of_a_path_set(two_sets: tuple[Path, Path, Path], tmp_path: Path) -> None:
    home, src, other = two_sets
    # The newest snapshot of any path is the one of `other`: src/doc is not in it.
    proc = restore(home, "latest", tmp_path / "r0", "--include", src / "doc", expect=2)
    assert "is not in snapshot" in one_line_error(proc)
    restore(home, "latest", tmp_path / "r1", "--path", src, "--include", src / "doc")
    assert _restored(tmp_path / "r1") == {rel(src / "doc/bash/bash.1.gz"),
                                          rel(src / "doc/bash/README"),
                                          rel(src / "doc/top.txt")}
    ls = tv_json(home, "ls", "latest", "--path", str(src))
    assert any(e["path"] == str(src / "code.py") for e in ls)
    hits = tv_json(home, "find", "code.py", "--snapshot", "latest", "--path", str(src))
    assert [h["path"] for h in hits] == [str(src / "code.py")]
    assert tv_json(home, "find", "code.py", "--snapshot", "latest") == []
    d = tv_json(home, "diff", "latest", "latest", "--path", str(other))
    assert d["added"] == d["removed"] == []
    proc = run_tv(home, "ls", "latest", "--path", str(src), "--path", str(other))
    assert proc.returncode == 2
    assert "no snapshot matches --path" in one_line_error(proc)
    proc = run_tv(home, "restore", "latest", tmp_path / "r2", "--host", "elsewhere")
    assert proc.returncode == 2 and "--host elsewhere" in one_line_error(proc)


def test_latest_by_tag(two_sets: tuple[Path, Path, Path], tmp_path: Path) -> None:
    home, src, _other = two_sets
    tagged = tv_json(home, "backup", "--tag", "weekly", str(src))["snapshot_id"]
    (src / "new.txt").write_text("n")
    backup(home, src)
    ls = tv_json(home, "ls", "latest", str(src), "--tag", "weekly")
    assert str(src / "new.txt") not in {e["path"] for e in ls}
    res = tv_json(home, "restore", "latest", str(tmp_path / "r"), "--tag", "weekly")
    assert res["snapshot_id"] == tagged


def test_include_takes_glob_patterns(two_sets: tuple[Path, Path, Path], tmp_path: Path) -> None:
    home, src, _other = two_sets
    restore(home, "latest", tmp_path / "r1", "--path", src, "--include",
            f"{src}/doc/bash/*.gz")
    assert _restored(tmp_path / "r1") == {rel(src / "doc/bash/bash.1.gz")}
    restore(home, "latest", tmp_path / "r2", "--path", src, "--include", "*.txt")
    assert _restored(tmp_path / "r2") == {rel(src / "doc/top.txt")}
    restore(home, "latest", tmp_path / "r3", "--path", src, "--include", "doc/**/README")
    assert _restored(tmp_path / "r3") == {rel(src / "doc/bash/README")}
    # The directories on the way are restored with their metadata, nothing else.
    assert sorted(os.listdir(tmp_path / "r3" / rel(src))) == ["doc"]
    proc = restore(home, "latest", tmp_path / "r4", "--path", src, "--include", "*.nope",
                   expect=2)
    assert "matches '*.nope'" in one_line_error(proc)


def test_find_pattern_with_a_slash_matches_path_endings(
        two_sets: tuple[Path, Path, Path]) -> None:
    home, src, _other = two_sets
    hits = {h["path"] for h in tv_json(home, "find", "doc/bash/*")}
    assert hits == {str(src / "doc/bash/bash.1.gz"), str(src / "doc/bash/README")}
    assert {h["path"] for h in tv_json(home, "find", "bash/*.gz")} == {
        str(src / "doc/bash/bash.1.gz")}
    # Only at directory boundaries: "ash/*" is not the end of ".../bash/*".
    assert tv_json(home, "find", "ash/*") == []
    # Absolute: the whole path.
    assert tv_json(home, "find", "/doc/bash/*") == []
    assert len(tv_json(home, "find", f"{src}/doc/*")) == 2  # top.txt and the bash dir
    assert len(tv_json(home, "find", f"{src}/**/README")) == 1
    out = ok(run_tv(home, "find", "*.gz", "--path", str(src))).stdout
    assert out.strip().endswith("1 match")
