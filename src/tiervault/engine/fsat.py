"""Descriptor-relative file-system access below one directory (race-free restore).

A :class:`DirFds` holds an open ``O_DIRECTORY|O_NOFOLLOW`` descriptor of a top
directory and reaches everything below it one component at a time with
``openat(..., O_NOFOLLOW)``: a component that is (or was swapped for) a symbolic
link fails with a clear ``OSError`` and is never followed, so nothing outside the
top directory is ever created, replaced, removed or chmodded, whatever another
process does to the tree meanwhile. Entries are made with the ``*at`` calls
(``os.mkdir``/``os.symlink``/``os.mknod``/``os.unlink``/``os.rename`` with
``dir_fd``) and metadata is set on open descriptors.

Open directory descriptors are kept in a bounded LRU (reference counted, so
worker threads never see a descriptor closed under them): a million-file restore
does not run out of descriptors.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import OrderedDict

#: Flags of every directory opened on the way down.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SWAPPED = "a directory on the way is a symbolic link or not a directory; not followed"


def _clear(e: OSError) -> OSError:
    """ELOOP/ENOTDIR on the way down: say what it means."""
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return OSError(e.errno, _SWAPPED)
    return e


def _check_name(name: bytes) -> None:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise OSError(errno.EINVAL, f"invalid name {name!r}")


def proc_path(fd: int, name: bytes = b"") -> bytes:
    """``/proc/self/fd/FD[/NAME]``: the object ``fd`` refers to (or ``name`` in it),
    for the calls that take neither a descriptor nor a ``dir_fd`` (setxattr of a
    symlink, chmod of an ``O_PATH`` descriptor)."""
    p = b"/proc/self/fd/%d" % fd
    return p + b"/" + name if name else p


class DirFds:
    """Open directories below one top directory, reached without following symlinks."""

    def __init__(self, top_fd: int, max_open: int = 256) -> None:
        self.top_fd = top_fd
        self.max_open = max(1, max_open)
        self._lock = threading.Lock()
        self._open: OrderedDict[bytes, int] = OrderedDict()  # relative dir -> fd (LRU order)
        self._refs: dict[int, int] = {}  # fd -> users right now

    @classmethod
    def open_top(cls, path: bytes, max_open: int = 256) -> DirFds:
        """Open ``path`` (itself not a symlink; its ancestors may be) as the top."""
        return cls(os.open(path, DIR_FLAGS), max_open)

    def close(self) -> None:
        """Close every descriptor (no one may be using them)."""
        with self._lock:
            for fd in self._open.values():
                os.close(fd)
            self._open.clear()
            self._refs.clear()
        os.close(self.top_fd)

    def forget(self) -> None:
        """Close the cached descriptors not in use: the next access walks down from the
        top again (and so notices a directory swapped for a symlink since)."""
        with self._lock:
            for rel in [r for r, fd in self._open.items() if not self._refs.get(fd)]:
                os.close(self._open.pop(rel))

    def dir(self, rel: bytes) -> _HeldDir:
        """``with at.dir(rel) as fd``: a descriptor of directory ``rel`` (b'' is the
        top), valid inside the block."""
        return _HeldDir(self, self._acquire(rel))

    def parent(self, rel: bytes) -> _HeldParent:
        """``with at.parent(rel) as (fd, name)``: the descriptor of ``rel``'s directory
        and ``rel``'s last component, valid inside the block."""
        head, _, name = rel.rpartition(b"/")
        _check_name(name)
        return _HeldParent(self, self._acquire(head), name)

    def _acquire(self, rel: bytes) -> int:
        if not rel:
            return self.top_fd
        with self._lock:
            fd = self._open.get(rel)
            if fd is not None:
                self._open.move_to_end(rel)
                self._refs[fd] = self._refs.get(fd, 0) + 1
                return fd
            # The deepest cached ancestor, then down one component at a time.
            cut = len(rel)
            base, base_fd = b"", self.top_fd
            while True:
                cut = rel.rfind(b"/", 0, cut)
                if cut <= 0:
                    break
                cached = self._open.get(rel[:cut])
                if cached is not None:
                    base, base_fd = rel[:cut], cached
                    break
            cur_fd = base_fd
            opened: list[int] = []
            try:
                for name in rel[len(base):].lstrip(b"/").split(b"/"):
                    _check_name(name)
                    try:
                        nfd = os.open(name, DIR_FLAGS, dir_fd=cur_fd)
                    except OSError as e:
                        raise _clear(e) from None
                    opened.append(nfd)
                    cur_fd = nfd
            except BaseException:
                for o in opened:
                    os.close(o)
                raise
            # All are kept (siblings share ancestors); the last one is in use.
            prefix = base
            for o, name in zip(opened, rel[len(base):].lstrip(b"/").split(b"/"), strict=True):
                prefix = prefix + b"/" + name if prefix else name
                self._open[prefix] = o
            self._refs[cur_fd] = 1
            self._evict()
            return cur_fd

    def _release(self, fd: int) -> None:
        if fd == self.top_fd:
            return
        with self._lock:
            n = self._refs.get(fd, 0) - 1
            if n > 0:
                self._refs[fd] = n
                return
            self._refs.pop(fd, None)
            self._evict()

    def _evict(self) -> None:
        # Under the lock; oldest first. Descriptors in use stay open (past the bound
        # if need be).
        while len(self._open) > self.max_open:
            idle = next((r for r, fd in self._open.items() if not self._refs.get(fd)), None)
            if idle is None:
                return
            os.close(self._open.pop(idle))

    # -- entries ------------------------------------------------------------------

    def lstat(self, rel: bytes) -> os.stat_result | None:
        """``rel``'s own status (a symlink is not followed), or None if absent."""
        with self.parent(rel) as (fd, name):
            return self.lstat_at(fd, name)

    @staticmethod
    def lstat_at(fd: int, name: bytes) -> os.stat_result | None:
        """The status of ``name`` itself in directory ``fd``, or None if absent."""
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def chmod_special(fd: int, name: bytes, mode: int) -> None:
        """chmod the FIFO or device node ``name`` in directory ``fd`` without opening
        it for I/O (which could block or act on a device) and without following a
        symlink put in its place (Linux has no lchmod: an O_PATH descriptor, then
        ``/proc/self/fd``)."""
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        try:
            st = os.fstat(pfd)
            if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EINVAL, "replaced during the restore; mode not set")
            os.chmod(proc_path(pfd), mode)
        finally:
            os.close(pfd)

    def mkdir(self, rel: bytes, mode: int = 0o700) -> None:
        """Make directory ``rel``; an existing real directory is fine; anything else
        there (a file, a symlink) is ``OSError(ENOTDIR)``."""
        with self.parent(rel) as (fd, name):
            try:
                os.mkdir(name, mode, dir_fd=fd)
                return
            except FileExistsError:
                pass
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, "exists and is not a directory")

    def remove_if_file(self, fd: int, name: bytes) -> None:
        """Make room for a new entry ``name`` in directory ``fd``; never removes a
        directory (``OSError(EISDIR)``)."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "a directory is in the way")
        os.unlink(name, dir_fd=fd)

    def open_file(self, fd: int, name: bytes, flags: int,
                  expect: tuple[int, int] | None = None) -> int:
        """Open regular file ``name`` in directory ``fd`` (never a symlink, a FIFO or a
        device); with ``expect`` (st_dev, st_ino) it must be that very file."""
        nfd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600,
                      dir_fd=fd)
        try:
            st = os.fstat(nfd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            if expect is not None and (st.st_dev, st.st_ino) != expect:
                raise OSError(errno.ESTALE, "the file was replaced during the restore")
        except BaseException:
            os.close(nfd)
            raise
        return nfd


class _HeldDir:
    """A directory descriptor in use (a plain class: cheaper than a generator-based
    context manager, and restore takes one per file operation)."""

    __slots__ = ("at", "fd")

    def __init__(self, at: DirFds, fd: int) -> None:
        self.at, self.fd = at, fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        self.at._release(self.fd)


class _HeldParent(_HeldDir):
    """A directory descriptor in use and the name of an entry in it."""

    __slots__ = ("name",)

    def __init__(self, at: DirFds, fd: int, name: bytes) -> None:
        super().__init__(at, fd)
        self.name = name

    def __enter__(self) -> tuple[int, bytes]:  # type: ignore[override]
        return self.fd, self.name
