"""What a backup holds of a directory while its entries are being read.

A directory's tree is written once every entry below it is done. When all its
entries are as the files cache last saw them, the tree the last backup wrote
for it is reused (docs/format.md, "Unchanged directories"): ``dir_key`` is a
digest of everything the tree would be made of, computed from stat results
alone, so an unchanged directory costs its stat calls and no node, no
encoding and no hashing of its tree.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Protocol

import blake3
import msgpack

from tiervault.state.db import CachedFile
from tiervault.vault.tree import Node

#: Part of every directory key: a release that changes what trees hold bumps it,
#: so no tree written by an older one is reused.
_KEY_VERSION = b"tiervault dir key 1"


@dataclass
class FileResult:
    """What reading one file produced."""

    content: list[bytes]
    size: int
    changed: bool = False
    error: str | None = None


class Waiting(Protocol):
    """A read under way: a worker thread's Future, or a file of a worker process's batch."""

    def done(self) -> bool:
        ...

    def result(self) -> FileResult:
        ...


#: A file's contents: being read (by a worker thread or process) or already read inline.
Read = Waiting | FileResult


class SubDir:
    """A directory met while walking its parent: to be walked next."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node


class Unchanged:
    """A file the files cache proves unchanged. Its node is built only if the
    directory's tree has to be written again."""

    __slots__ = ("cached", "name", "st")

    def __init__(self, name: bytes, st: os.stat_result, cached: CachedFile) -> None:
        self.name = name
        self.st = st
        self.cached = cached


Item = Node | Unchanged | tuple[Node, Read]


@dataclass(eq=False)
class PendingDir:
    """A directory whose entries may still be waiting for file workers."""

    path: bytes
    node: Node
    items: list[Item | PendingDir] = field(default_factory=list)
    tree_id: bytes | None = None
    cache_new: dict[bytes, CachedFile] = field(default_factory=dict)
    cache_drop: list[bytes] = field(default_factory=list)
    inodes: dict[bytes, int] = field(default_factory=dict)  # of the files read, by name
    checked: int = 0  # items before this index are known to be done
    #: (key, tree id) the files cache holds for this directory, if any.
    last_tree: tuple[bytes, bytes] | None = None

    def ready(self) -> bool:
        """True when every file of the directory has been read. Resumes where the
        last call stopped, so polling a directory costs O(its entries) in all."""
        items = self.items
        while self.checked < len(items):
            it = items[self.checked]
            if isinstance(it, tuple) and not isinstance(it[1], FileResult) and not it[1].done():
                return False
            self.checked += 1
        return True

    def release(self) -> None:
        """The tree is written: only its id is needed from now on."""
        self.items, self.cache_new, self.cache_drop, self.inodes = [], {}, [], {}
        self.last_tree = None


def _file_part(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
               ctime: int, ino: int, nlink: int, dev: int) -> list[object]:
    # The device only for hard links (their nodes record it, to group them): a
    # device number that changes (a remount) then rewrites those trees.
    return [0, name, mode, uid, gid, size, mtime, ctime, ino, nlink, dev if nlink > 1 else 0]


def _node_part(node: Node, tree_id: bytes | None) -> list[object]:
    # Everything but the access time (reading a file changes it, and a reused
    # tree keeps the one of the backup that wrote it).
    return [1, tree_id, sorted((k, v) for k, v in node.items() if k not in ("atime", "subtree"))]


def dir_key(pd: PendingDir, results: list[FileResult | None]) -> bytes | None:
    """A digest of what ``pd``'s tree is made of, or None if the tree could not
    be reused next time (a file the cache does not remember, an error).

    ``results`` holds, for each item, the finished read of a file read now (its
    stat fields are in its node) and None for the others."""
    parts: list[object] = [_KEY_VERSION]
    for it, res in zip(pd.items, results, strict=True):
        if isinstance(it, Unchanged):
            st = it.st
            parts.append(_file_part(it.name, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                    st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                    st.st_nlink, st.st_dev))
        elif isinstance(it, PendingDir):
            parts.append(_node_part(it.node, it.tree_id))
        elif isinstance(it, tuple):
            node = it[0]
            if res is None or res.error is not None or node.name not in pd.cache_new:
                return None  # read with an error, or not cached: read again next time
            parts.append(_file_part(node.name, node["mode"], node["uid"], node["gid"],
                                    res.size, node["mtime"], node["ctime"],
                                    pd.inodes.get(node.name, -1), node.get("nlink", 1),
                                    node.get("dev", 0)))
        else:
            parts.append(_node_part(it, None))
    return blake3.blake3(msgpack.packb(parts, use_bin_type=True)).digest()
