"""Setting a restored entry's metadata (owner, xattrs, mode, times) race-free.

Files and directories get theirs on an open descriptor (fchown, fsetxattr,
fchmod, futimens); symlinks and special files, which are never opened for I/O,
by name in an open directory without following the name (fchownat, utimensat
with AT_SYMLINK_NOFOLLOW; the mode through an O_PATH descriptor). Problems are
warnings, never exceptions.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from tiervault.engine.fsat import DirFds, proc_path
from tiervault.vault.tree import Node

# What hostile metadata (a uid of 2**40, a NUL in a symlink target, a negative
# device number) makes the os functions raise besides OSError.
OS_ERRORS = (OSError, ValueError, OverflowError, TypeError)


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def strerror(e: Exception) -> str:
    """The one-line reason of an os error."""
    return getattr(e, "strerror", None) or str(e)


class MetaSetter:
    """Applies tree-node metadata; ``warn(path, message)`` reports what failed."""

    def __init__(self, warn: Callable[[bytes, str], None], no_setuid: bool = False) -> None:
        self.warn = warn
        self.no_setuid = no_setuid  # strip setuid/setgid bits (of all but directories)
        self.is_root = os.geteuid() == 0

    def mode(self, node: Node) -> int:
        """The permission bits to give ``node``'s entry."""
        mode: int = node.get("mode", 0o600) & 0o7777
        if self.no_setuid and node.kind != "dir":
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        return mode

    def _may_chown(self, node: Node) -> bool:
        return self.is_root or node.get("uid") == os.geteuid()

    def on_fd(self, fd: int, node: Node, shown: bytes, chmod: bool = True) -> None:
        """Owner, xattrs, mode and times of the open file or directory ``fd``
        (not the mode if not ``chmod``: it was created with it)."""
        try:
            if self._may_chown(node):
                try:
                    os.chown(fd, node.get("uid", -1), node.get("gid", -1))
                except OS_ERRORS as e:
                    self.warn(shown, f"owner: {strerror(e)}")
            for name, value in node.get("xattrs") or []:
                try:
                    os.setxattr(fd, name, value)
                except OS_ERRORS as e:
                    self.warn(shown, f"xattr {os.fsdecode(name)!r}: {strerror(e)}")
            if chmod:
                os.chmod(fd, self.mode(node))  # after chown, which drops setuid bits
            if "mtime" in node:
                os.utime(fd, ns=(node.get("atime", node["mtime"]), node["mtime"]))
        except OS_ERRORS as e:
            self.warn(shown, strerror(e))

    def at(self, dfd: int, name: bytes, node: Node, shown: bytes) -> None:
        """Metadata of ``name`` in directory ``dfd``, a symlink or a special file: never
        opened for reading or writing, never followed."""
        link = node.kind == "symlink"
        try:
            if self._may_chown(node):
                try:
                    os.chown(name, node.get("uid", -1), node.get("gid", -1), dir_fd=dfd,
                             follow_symlinks=False)
                except OS_ERRORS as e:
                    if not link:
                        self.warn(shown, f"owner: {strerror(e)}")
            for xname, value in node.get("xattrs") or []:
                try:  # no setxattr with a dir_fd: the same through /proc/self/fd
                    os.setxattr(proc_path(dfd, name), xname, value, follow_symlinks=False)
                except OS_ERRORS as e:
                    if getattr(e, "errno", None) not in (errno.EPERM, errno.ENOTSUP) or not link:
                        self.warn(shown, f"xattr {os.fsdecode(xname)!r}: {strerror(e)}")
            if not link:
                DirFds.chmod_special(dfd, name, self.mode(node))
            if "mtime" in node:
                os.utime(name, ns=(node.get("atime", node["mtime"]), node["mtime"]),
                         dir_fd=dfd, follow_symlinks=False)
        except OS_ERRORS as e:
            self.warn(shown, strerror(e))
