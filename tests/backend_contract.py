"""The contract every storage backend keeps, run against each real server.

A test module subclasses ``BackendContract`` and provides a ``backend``
fixture returning a created, empty backend, and optionally ``unreachable``
returning a backend whose location cannot be reached.
"""

from __future__ import annotations

import os
import threading

import pytest

from tiervault.errors import IntegrityError, NotFoundError, TransientError
from tiervault.storage.base import Backend, FileType, Handle


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

    def test_unreachable(self, unreachable: Backend) -> None:
        with pytest.raises(TransientError):
            unreachable.probe()
        with pytest.raises(TransientError):
            unreachable.load(Handle(FileType.CONFIG))
        with pytest.raises(TransientError):
            unreachable.save(Handle(FileType.INDEX, "ab"), b"x")
        with pytest.raises(TransientError):
            list(unreachable.list(FileType.PACK))
