"""A vault on a local directory: a disk, a USB drive or a mounted network share.

Below the root, every path is walked one component at a time with
``O_NOFOLLOW`` relative to directory descriptors, and only regular files are
read: a symlink planted in the vault (``keys/x -> ~/secret``, or ``data/ab ->
/etc``) or a FIFO is refused with an ``IntegrityError`` naming it, never read,
listed or uploaded to another tier. The root itself may be a symlink (a mount
point chosen by the user).
"""

from __future__ import annotations

import builtins
import errno
import os
import stat as stat_mod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TransientError,
    UnpluggedError,
)
from tiervault.storage.base import (
    SINGLETONS,
    Backend,
    FileInfo,
    FileType,
    Handle,
    handle_from_path,
    is_dead_temporary,
    read_bound,
    temp_name,
    too_large,
)

# Errors that mean the storage itself went away (unplugged disk, lost share).
_UNREACHABLE = {errno.ENODEV, errno.ENXIO, errno.EIO, errno.ESTALE, errno.ENOTCONN,
                errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ETIMEDOUT, errno.ECONNRESET}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_BLOCK = 1 << 20


class _NotRegular(Exception):
    """Internal: a path component is a symlink, or the file is not a regular file."""


class LocalBackend(Backend):
    """Files under ``root``; a missing root means the tier is unreachable."""

    def __init__(self, root: str | Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self._fsync = fsync
        #: Paths that listings skipped because they are not regular files
        #: (symlinks, FIFOs, devices): reported by whoever wants to flag them.
        self.skipped: set[str] = set()

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise UnpluggedError(f"{self.location}: vault directory is not there (disk unplugged?)")

    def _translate(self, exc: OSError, what: str) -> BackendError:
        if isinstance(exc, FileNotFoundError):
            if not self.root.is_dir():
                return UnpluggedError(f"{self.location}: vault directory is not there")
            return NotFoundError(f"{what} not found on {self.location}")
        if exc.errno in _UNREACHABLE:
            return TransientError(f"{what} on {self.location}: {exc.strerror}")
        return PermanentError(f"{what} on {self.location}: {exc.strerror}")

    def _refused(self, what: str) -> IntegrityError:
        return IntegrityError(f"{what} on {self.location} is not a regular file (a symlink, "
                              "FIFO or device planted in the vault?): refused, not read")

    @contextmanager
    def _dir(self, rel: str, create: bool = False) -> Iterator[int]:
        """A descriptor of the vault directory ``rel`` ('' = root), walked without
        following symlinks below the root; ``create`` makes missing components."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise UnpluggedError(f"{self.location}: vault directory is not there "
                                 "(disk unplugged?)") from None
        except OSError as e:
            raise self._translate(e, "vault directory") from e
        try:
            for part in [p for p in rel.split("/") if p]:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass  # made by a concurrent save
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _NotRegular(part) from None
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for t in FileType:
                if t not in SINGLETONS:
                    (self.root / t.value).mkdir(exist_ok=True)
        except OSError as e:
            raise self._translate(e, "vault directory") from e

    def save(self, h: Handle, data: bytes) -> None:
        parent, _, name = h.path().rpartition("/")
        tmp = temp_name(name)
        try:
            # data/xx on first use, or the type directories of an empty
            # replacement disk; never the root (a missing root = unplugged).
            with self._dir(parent, create=True) as d:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                             dir_fd=d)
                try:
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
                    os.replace(tmp, name, src_dir_fd=d, dst_dir_fd=d)
                except BaseException:
                    try:
                        os.unlink(tmp, dir_fd=d)
                    except OSError:
                        pass
                    raise
                if self._fsync:
                    try:
                        os.fsync(d)
                    except OSError:
                        pass
        except _NotRegular:
            raise self._refused(str(h)) from None
        except OSError as e:
            raise self._translate(e, str(h)) from e

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        bound = read_bound(h, length, max_size)
        parent, _, name = h.path().rpartition("/")
        try:
            with self._dir(parent) as d:
                try:
                    fd = os.open(name, _READ_FLAGS, dir_fd=d)
                except OSError as e:
                    if e.errno == errno.ELOOP:
                        raise _NotRegular(name) from None
                    raise
            try:
                st = os.fstat(fd)
                if not stat_mod.S_ISREG(st.st_mode):
                    raise _NotRegular(name)
                if length is None and st.st_size - offset > bound:
                    raise too_large(h, self.location, bound, st.st_size)
                # Enforced while reading too: the file may grow after the fstat.
                if length is None:
                    data = _pread_upto(fd, bound + 1, offset, st.st_size - offset)
                else:
                    data = _pread_upto(fd, length, offset, length)
            finally:
                os.close(fd)
        except _NotRegular:
            raise self._refused(str(h)) from None
        except OSError as e:
            raise self._translate(e, str(h)) from e
        if length is None:
            if len(data) > bound:
                raise too_large(h, self.location, bound)
            return data
        if len(data) != length:
            raise IntegrityError(f"{h} on {self.location} is shorter than expected")
        return data

    def stat(self, h: Handle) -> FileInfo:
        parent, _, name = h.path().rpartition("/")
        try:
            with self._dir(parent) as d:
                st = os.stat(name, dir_fd=d, follow_symlinks=False)
        except _NotRegular:
            raise self._refused(str(h)) from None
        except OSError as e:
            raise self._translate(e, str(h)) from e
        if not stat_mod.S_ISREG(st.st_mode):
            raise self._refused(str(h))
        return FileInfo(h, st.st_size)

    def _entries(self, rel: str) -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of the entries of vault directory ``rel``; [] if it is
        missing or not a real directory (a planted symlink: put in ``skipped``)."""
        try:
            with self._dir(rel) as d:
                out = []
                for ent in os.scandir(d):
                    try:
                        out.append((ent.name, ent.stat(follow_symlinks=False)))
                    except FileNotFoundError:
                        continue  # removed since the directory was read
                return out
        except FileNotFoundError:
            self._check_root()
            return []
        except _NotRegular:
            self.skipped.add(rel)
            return []
        except OSError as e:
            raise self._translate(e, rel) from e

    def list(self, t: FileType) -> Iterator[FileInfo]:
        if t in SINGLETONS:
            try:
                yield self.stat(Handle(t))
            except NotFoundError:
                pass
            except IntegrityError:
                self.skipped.add(t.value)
            return
        dirs = [t.value]
        if t is FileType.PACK:
            self._check_root()
            dirs = [f"{t.value}/{name}" for name, _ in sorted(self._entries(t.value))
                    if len(name) == 2]
        for d in dirs:
            for name, st in self._entries(d):
                if name.startswith("."):
                    continue
                h = handle_from_path(f"{d}/{name}")
                if h is None or h.type is not t:
                    continue
                if not stat_mod.S_ISREG(st.st_mode):
                    self.skipped.add(f"{d}/{name}")
                    continue  # never offered to sync or restore: see load
                yield FileInfo(h, st.st_size)

    def remove(self, h: Handle) -> None:
        parent, _, name = h.path().rpartition("/")
        try:
            with self._dir(parent) as d:
                os.unlink(name, dir_fd=d)
        except _NotRegular:
            raise self._refused(str(h)) from None
        except OSError as e:
            raise self._translate(e, str(h)) from e

    def remove_temporaries(self) -> builtins.list[str]:
        """Remove ``.*.tmp`` files of writers no longer alive from every vault directory."""
        self._check_root()
        dirs = ["", *(t.value for t in FileType if t not in SINGLETONS)]
        dirs += [f"data/{name}" for name, st in self._entries("data")
                 if len(name) == 2 and stat_mod.S_ISDIR(st.st_mode)]
        removed: builtins.list[str] = []
        for rel in dirs:
            for name, st in self._entries(rel):
                if not is_dead_temporary(name) or stat_mod.S_ISDIR(st.st_mode):
                    continue
                path = f"{rel}/{name}" if rel else name
                try:
                    with self._dir(rel) as d:
                        os.unlink(name, dir_fd=d)
                except FileNotFoundError:
                    continue
                except _NotRegular:
                    continue
                except OSError as e:
                    raise self._translate(e, path) from e
                removed.append(path)
        return removed

    def probe(self) -> None:
        self._check_root()


def _pread_upto(fd: int, n: int, offset: int, expect: int) -> bytes:
    """Up to ``n`` bytes from ``offset`` (fewer only at the end of the file).

    The first read asks for the ``expect``ed size plus one byte (one system
    call for a file that is as big as it said); later ones go block by block.
    """
    parts: list[bytes] = []
    got = 0
    size = min(n, max(expect, 0) + 1)
    while got < n:
        piece = os.pread(fd, min(n - got, size), offset + got)
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
        size = _BLOCK
    return parts[0] if len(parts) == 1 else b"".join(parts)
