"""A vault on a local directory: a disk, a USB drive or a mounted network share."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from tiervault.storage.base import SINGLETONS, Backend, FileInfo, FileType, Handle

_TMP_SUFFIX = ".tmp"
# Errors that mean the storage itself went away (unplugged disk, lost share).
_UNREACHABLE = {errno.ENODEV, errno.ENXIO, errno.EIO, errno.ESTALE, errno.ENOTCONN,
                errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ETIMEDOUT, errno.ECONNRESET}


class LocalBackend(Backend):
    """Files under ``root``; a missing root means the tier is unreachable."""

    def __init__(self, root: str | Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self._fsync = fsync

    def _path(self, h: Handle) -> Path:
        return self.root / h.path()

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise TransientError(f"{self.location}: vault directory is not there (disk unplugged?)")

    def _translate(self, exc: OSError, what: str) -> BackendError:
        if isinstance(exc, FileNotFoundError):
            if not self.root.is_dir():
                return TransientError(f"{self.location}: vault directory is not there")
            return NotFoundError(f"{what} not found on {self.location}")
        if exc.errno in _UNREACHABLE:
            return TransientError(f"{what} on {self.location}: {exc.strerror}")
        return PermanentError(f"{what} on {self.location}: {exc.strerror}")

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for t in FileType:
                if t not in SINGLETONS:
                    (self.root / t.value).mkdir(exist_ok=True)
        except OSError as e:
            raise self._translate(e, "vault directory") from e

    def save(self, h: Handle, data: bytes) -> None:
        self._check_root()
        path = self._path(h)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:
            if not path.parent.is_dir():
                # data/xx on first use, or the type directories of an empty
                # replacement disk; never the root (a missing root = unplugged).
                self._check_root()
                path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            # Close, then rename: the name appears only once the bytes are durable.
            os.replace(tmp, path)
            if self._fsync:
                _fsync_dir(path.parent)
        except OSError as e:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise self._translate(e, str(h)) from e

    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self._check_root()
        try:
            with open(self._path(h), "rb", buffering=0) as f:
                if length is None:
                    f.seek(offset)
                    return f.read()
                data = os.pread(f.fileno(), length, offset)
        except OSError as e:
            raise self._translate(e, str(h)) from e
        if len(data) != length:
            raise IntegrityError(f"{h} on {self.location} is shorter than expected")
        return data

    def stat(self, h: Handle) -> FileInfo:
        self._check_root()
        try:
            return FileInfo(h, self._path(h).stat().st_size)
        except OSError as e:
            raise self._translate(e, str(h)) from e

    def list(self, t: FileType) -> Iterator[FileInfo]:
        self._check_root()
        from tiervault.storage.base import handle_from_path

        if t in SINGLETONS:
            try:
                yield self.stat(Handle(t))
            except NotFoundError:
                pass
            return
        base = self.root / t.value
        dirs = [base]
        if t is FileType.PACK:
            try:
                dirs = [base / d for d in sorted(os.listdir(base)) if len(d) == 2]
            except FileNotFoundError:
                self._check_root()
                return  # an empty tier (no data/ yet)
            except OSError as e:
                raise self._translate(e, t.value) from e
        for d in dirs:
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise self._translate(e, t.value) from e
            for ent in entries:
                if ent.name.startswith("."):
                    continue
                h = handle_from_path(f"{d.relative_to(self.root).as_posix()}/{ent.name}")
                if h is None or h.type is not t:
                    continue
                try:
                    yield FileInfo(h, ent.stat(follow_symlinks=False).st_size)
                except FileNotFoundError:
                    continue

    def remove(self, h: Handle) -> None:
        self._check_root()
        try:
            os.unlink(self._path(h))
        except OSError as e:
            raise self._translate(e, str(h)) from e

    def probe(self) -> None:
        self._check_root()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
