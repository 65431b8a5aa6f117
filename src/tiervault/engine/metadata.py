"""File metadata: reading it into tree nodes and names for uid/gid."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from functools import lru_cache

from tiervault.vault.tree import Node


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    """The user name of ``uid`` on this machine, if any."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str | None:
    """The group name of ``gid`` on this machine, if any."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def kind_of(mode: int) -> str | None:
    """The tree kind of a stat mode (None for what we cannot store, e.g. doors)."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "chardev"
    if stat.S_ISBLK(mode):
        return "blockdev"
    if stat.S_ISSOCK(mode):
        return "socket"
    return None


def read_xattrs(path: bytes) -> list[list[bytes]] | None:
    """Extended attributes of ``path`` (not following symlinks), or None."""
    if not hasattr(os, "listxattr"):
        return None
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return None
    out = []
    for n in sorted(names):
        try:
            out.append([n.encode("utf-8", "surrogateescape"),
                        os.getxattr(path, n, follow_symlinks=False)])
        except OSError:
            continue
    return out or None


def node_from_stat(name: bytes, path: bytes, st: os.stat_result, kind: str) -> Node:
    """A tree node describing ``path`` from its lstat result."""
    n = Node(name=name, type=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
             mtime=st.st_mtime_ns, atime=st.st_atime_ns, ctime=st.st_ctime_ns)
    u, g = user_name(st.st_uid), group_name(st.st_gid)
    if u is not None:
        n["user"] = u
    if g is not None:
        n["group"] = g
    if kind == "file":
        n["size"] = st.st_size
        if st.st_nlink > 1:
            # Only multiply-linked files carry inode numbers: keeps trees dedupable.
            n["inode"], n["dev"], n["nlink"] = st.st_ino, st.st_dev, st.st_nlink
        if st.st_blocks * 512 < st.st_size:
            n["sparse"] = True
    elif kind == "symlink":
        n["target"] = os.readlink(path)
    elif kind in ("chardev", "blockdev"):
        n["rdev"] = st.st_rdev
    xa = read_xattrs(path)
    if xa:
        n["xattrs"] = xa
    return n
