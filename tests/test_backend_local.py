"""The backend contract on a local directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backend_contract import BackendContract, Planter, plant_file
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
