"""The descriptor-relative layer under restore: never follows a symlink, bounded fds."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tiervault.engine.fsat import DirFds


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_symlink_on_the_way_is_an_error_not_followed(tmp_path: Path) -> None:
    top, outside = tmp_path / "top", tmp_path / "outside"
    (top / "real").mkdir(parents=True)
    outside.mkdir()
    os.symlink(outside, top / "link")
    at = DirFds.open_top(os.fsencode(top))
    try:
        for rel in (b"link/new", b"link/deeper/new"):
            with pytest.raises(OSError) as exc:
                at.mkdir(rel)
            assert exc.value.errno in (errno.ELOOP, errno.ENOTDIR)
            assert "symbolic link" in str(exc.value)
        with pytest.raises(OSError):
            at.mkdir(b"link")  # exists, and is not a directory
        at.mkdir(b"real/new")
    finally:
        at.close()
    assert os.listdir(outside) == []
    assert os.listdir(top / "real") == ["new"]


def test_top_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(OSError) as exc:
        DirFds.open_top(os.fsencode(tmp_path / "link"))
    assert exc.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_open_directories_stay_bounded(tmp_path: Path) -> None:
    before = _open_fds()
    at = DirFds.open_top(os.fsencode(tmp_path), max_open=16)
    try:
        for i in range(40):
            at.mkdir(b"d%d" % i)
            for j in range(20):
                at.mkdir(b"d%d/e%d" % (i, j))
                at.mkdir(b"d%d/e%d/f" % (i, j))
                assert _open_fds() <= before + 1 + 16 + 1
        # A swapped directory is noticed after forget() (a fresh walk from the top).
        os.rename(tmp_path / "d3", tmp_path / "d3.away")
        os.symlink(tmp_path / "d3.away", tmp_path / "d3")
        at.forget()
        with pytest.raises(OSError):
            at.mkdir(b"d3/e0/g")
    finally:
        at.close()
    assert _open_fds() == before
    assert len(os.listdir(tmp_path / "d39")) == 20
