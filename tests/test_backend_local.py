"""The backend contract on a local directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.backend_contract import BackendContract, Planter, plant_file
from tiervault.errors import IntegrityError
from tiervault.storage.base import Backend, FileType, Handle
from tiervault.storage.local import LocalBackend


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    b = LocalBackend(tmp_path / "vault")
    b.create()
    return b


@pytest.fixture
def plant_temporary(tmp_path: Path) -> Planter:
    return lambda h, token: plant_file(tmp_path / "vault", h, token)


@pytest.fixture
def unreachable(tmp_path: Path) -> Backend:
    return LocalBackend(tmp_path / "unplugged")


class TestLocal(BackendContract):
    pass


def test_no_temp_files_listed(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "v")
    b.create()
    (tmp_path / "v" / "index" / ".abc.1234.tmp").write_bytes(b"partial")
    (tmp_path / "v" / "index" / "not-hex").write_bytes(b"junk")
    assert list(b.list(FileType.INDEX)) == []


def test_files_are_private(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "v")
    b.create()
    b.save(Handle(FileType.INDEX, "ab"), b"x")
    assert (tmp_path / "v" / "index" / "ab").stat().st_mode & 0o077 == 0


def test_planted_symlink_and_fifo_are_refused(tmp_path: Path) -> None:
    """A key file that is a symlink to a secret, or a FIFO, is never read or listed."""
    b = LocalBackend(tmp_path / "v")
    b.create()
    secret = tmp_path / "secret"
    secret.write_text('{"version": 1, "kdf": "scrypt"} my ssh key')
    (tmp_path / "v" / "keys" / "stolen").symlink_to(secret)
    os.mkfifo(tmp_path / "v" / "keys" / "pipe")
    b.save(Handle(FileType.KEY, "real"), b"a key")
    for name in ("stolen", "pipe"):
        h = Handle(FileType.KEY, name)
        with pytest.raises(IntegrityError, match=rf"keys/{name} .* not a regular file"):
            b.load(h)  # the FIFO must not block: no writer ever comes
        with pytest.raises(IntegrityError, match="not a regular file"):
            b.stat(h)
    assert [fi.handle.name for fi in b.list(FileType.KEY)] == ["real"]
    assert b.skipped == {"keys/stolen", "keys/pipe"}
    # Removing the planted entries is allowed (and removes the link, not the target).
    b.remove(Handle(FileType.KEY, "stolen"))
    assert secret.exists()


def test_symlinked_directories_are_not_followed(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "v")
    b.create()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ("ab" * 32)).write_bytes(b"not ours")
    (tmp_path / "v" / "data" / "ab").symlink_to(outside)
    h = Handle(FileType.PACK, "ab" * 32)
    with pytest.raises(IntegrityError, match="not a regular file"):
        b.load(h)
    assert list(b.list(FileType.PACK)) == []
    assert "data/ab" in b.skipped
    with pytest.raises(IntegrityError):
        b.save(h, b"through the link")
    assert (outside / ("ab" * 32)).read_bytes() == b"not ours"
    # The root itself may be a symlink (a mount point the user chose).
    (tmp_path / "link").symlink_to(tmp_path / "v")
    b2 = LocalBackend(tmp_path / "link")
    b2.save(Handle(FileType.INDEX, "cd"), b"ok")
    assert b2.load(Handle(FileType.INDEX, "cd")) == b"ok"


def test_sparse_huge_revision_is_refused_without_reading(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "v")
    b.create()
    with open(tmp_path / "v" / "revision", "wb") as f:
        f.truncate(8 << 30)  # 8 GiB, sparse
    with pytest.raises(IntegrityError, match=r"revision .* larger than its bound of 64 bytes"):
        b.load(Handle(FileType.REVISION))
