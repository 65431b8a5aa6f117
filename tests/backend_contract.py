"""The contract every storage backend keeps, run against each real server.

A test module subclasses ``BackendContract`` and provides a ``backend``
fixture returning a created, empty backend, a ``plant_temporary`` fixture (a
``Planter``: leaves, behind the backend's back, the temporary upload a writer
with the given token would leave for a handle, and returns a check "is it
still there?"), and optionally ``unreachable`` returning a backend whose
location cannot be reached.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tiervault.errors import IntegrityError, NotFoundError, TransientError
from tiervault.storage.base import MAX_SIZE, WRITER_TOKEN, Backend, FileType, Handle

#: (handle, writer token) -> a check that the planted temporary is still there.
Planter = Callable[[Handle, str], Callable[[], bool]]
#: Tokens of writers that are gone (any token but this process's).
DEAD_TOKENS = ("0badc0ffee00", "0badc0ffee01", "0badc0ffee02")


def plant_file(directory: Path, h: Handle, token: str) -> Callable[[], bool]:
    """A dead (or live) writer's half-written temporary of ``h`` in a vault directory
    on the local disk (also what the FTP and SFTP test servers serve)."""
    parent, _, name = h.path().rpartition("/")
    d = directory / parent if parent else directory
    d.mkdir(parents=True, exist_ok=True)
    p = d / f".{name}.{token}.{os.urandom(4).hex()}.tmp"
    p.write_bytes(os.urandom(1000))  # a partial upload
    return p.exists


def _h(t: FileType, data: bytes) -> Handle:
    import blake3

    return Handle(t, blake3.blake3(data).hexdigest())


class BackendContract:
    """Mix into a test class; every test gets a fresh backend fixture."""

    def test_save_load_roundtrip(self, backend: Backend) -> None:
        for t in (FileType.PACK, FileType.INDEX, FileType.SNAPSHOT):
            data = os.urandom(1000)
            h = _h(t, data)
            backend.save(h, data)
            assert backend.load(h) == data
            assert backend.stat(h).size == len(data)

    def test_empty_file(self, backend: Backend) -> None:
        h = _h(FileType.INDEX, b"")
        backend.save(h, b"")
        assert backend.load(h) == b""
        assert backend.stat(h).size == 0

    def test_load_range(self, backend: Backend) -> None:
        data = bytes(range(256)) * 40
        h = _h(FileType.PACK, data)
        backend.save(h, data)
        assert backend.load(h, 0, 10) == data[:10]
        assert backend.load(h, 100, 500) == data[100:600]
        assert backend.load(h, 5000) == data[5000:]
        assert backend.load(h, len(data) - 1, 1) == data[-1:]
        with pytest.raises(IntegrityError):
            backend.load(h, len(data) - 5, 10)

    def test_missing(self, backend: Backend) -> None:
        h = Handle(FileType.PACK, "ab" * 32)
        with pytest.raises(NotFoundError):
            backend.load(h)
        with pytest.raises(NotFoundError):
            backend.stat(h)
        with pytest.raises(NotFoundError):
            backend.remove(h)

    def test_list_and_remove(self, backend: Backend) -> None:
        saved = {}
        for i in range(5):
            data = os.urandom(100 + i)
            h = _h(FileType.PACK, data)
            backend.save(h, data)
            saved[h] = len(data)
        idx = os.urandom(10)
        backend.save(_h(FileType.INDEX, idx), idx)
        listed = {fi.handle: fi.size for fi in backend.list(FileType.PACK)}
        assert listed == saved
        assert [fi.handle for fi in backend.list(FileType.INDEX)] == [_h(FileType.INDEX, idx)]
        assert list(backend.list(FileType.SNAPSHOT)) == []
        victim = next(iter(saved))
        backend.remove(victim)
        assert victim not in {fi.handle for fi in backend.list(FileType.PACK)}
        with pytest.raises(NotFoundError):
            backend.load(victim)

    def test_singletons_and_mutable(self, backend: Backend) -> None:
        assert list(backend.list(FileType.REVISION)) == []
        backend.save(Handle(FileType.REVISION), b"1\n")
        backend.save(Handle(FileType.REVISION), b"22\n")
        assert backend.load(Handle(FileType.REVISION)) == b"22\n"
        assert [fi.handle for fi in backend.list(FileType.REVISION)] == [
            Handle(FileType.REVISION)]
        backend.save(Handle(FileType.CONFIG), b"{}")
        backend.save(Handle(FileType.KEY, "k1"), b"a")
        backend.save(Handle(FileType.KEY, "k1"), b"bb")
        assert backend.load(Handle(FileType.KEY, "k1")) == b"bb"
        assert [fi.handle.name for fi in backend.list(FileType.KEY)] == ["k1"]
        backend.probe()

    def test_large_file(self, backend: Backend) -> None:
        data = os.urandom(12 * 1024 * 1024 + 17)
        h = _h(FileType.PACK, data)
        backend.save(h, data)
        assert backend.stat(h).size == len(data)
        assert backend.load(h) == data
        mib9 = 9 * 1024 * 1024
        assert backend.load(h, mib9, 1024) == data[mib9:mib9 + 1024]

    def test_concurrent_use(self, backend: Backend) -> None:
        errors: list[BaseException] = []
        blobs = [os.urandom(50_000 + i) for i in range(12)]

        def work(data: bytes) -> None:
            try:
                h = _h(FileType.PACK, data)
                backend.save(h, data)
                assert backend.load(h) == data
            except BaseException as e:  # collected and re-raised in the test thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(b,)) for b in blobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(list(backend.list(FileType.PACK))) == len(blobs)

    def test_load_is_bounded(self, backend: Backend) -> None:
        rev = Handle(FileType.REVISION)
        backend.save(rev, b"7" * (MAX_SIZE[FileType.REVISION] + 1))
        with pytest.raises(IntegrityError, match="larger than its bound"):
            backend.load(rev)
        key = Handle(FileType.KEY, "big")
        backend.save(key, b"x" * (64 * 1024 + 1))
        with pytest.raises(IntegrityError, match="larger than its bound"):
            backend.load(key)
        backend.save(key, b"y" * (64 * 1024))  # exactly at the bound
        assert len(backend.load(key)) == 64 * 1024
        # max_size only tightens the type's bound.
        assert len(backend.load(key, max_size=1 << 30)) == 64 * 1024
        data = os.urandom(300_000)
        h = _h(FileType.PACK, data)
        backend.save(h, data)
        with pytest.raises(IntegrityError, match="larger than its bound"):
            backend.load(h, max_size=100_000)
        with pytest.raises(IntegrityError, match="larger than its bound"):
            backend.load(h, 1000, max_size=100_000)
        assert backend.load(h, 200_000, max_size=100_000) == data[200_000:]
        assert backend.load(h, max_size=300_000) == data
        # A ranged read is bounded by its length; the connection is still good.
        assert backend.load(h, 10, 100) == data[10:110]
        backend.save(rev, b"8\n")
        assert backend.load(rev) == b"8\n"

    def test_remove_temporaries(self, backend: Backend, plant_temporary: Planter) -> None:
        data = os.urandom(2000)
        h = _h(FileType.PACK, data)
        backend.save(h, data)
        key = Handle(FileType.KEY, "k1")
        backend.save(key, b"key file")
        dead = [plant_temporary(h, DEAD_TOKENS[0]), plant_temporary(key, DEAD_TOKENS[1]),
                plant_temporary(Handle(FileType.REVISION), DEAD_TOKENS[2])]
        assert all(d() for d in dead)
        live = plant_temporary(Handle(FileType.INDEX, "ab" * 32), WRITER_TOKEN)
        removed = backend.remove_temporaries()
        assert len(removed) == 3, removed
        assert not any(d() for d in dead)
        assert live(), "a temporary of this (live) writer was removed"
        assert backend.load(h) == data and backend.load(key) == b"key file"
        assert backend.remove_temporaries() == []
        assert {fi.handle for fi in backend.list(FileType.PACK)} == {h}

    def test_unreachable(self, unreachable: Backend) -> None:
        with pytest.raises(TransientError):
            unreachable.probe()
        with pytest.raises(TransientError):
            unreachable.load(Handle(FileType.CONFIG))
        with pytest.raises(TransientError):
            unreachable.save(Handle(FileType.INDEX, "ab"), b"x")
        with pytest.raises(TransientError):
            list(unreachable.list(FileType.PACK))
