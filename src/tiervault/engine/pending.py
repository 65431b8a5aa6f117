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
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import blake3
import msgpack

from tiervault.state.db import CachedFile, CacheRow
from tiervault.vault.tree import Node

if TYPE_CHECKING:
    from tiervault.engine.procread import JobHandle

#: Part of every directory key: a release that changes what trees hold bumps it,
#: so no tree written by an older one is reused.
_KEY_VERSION = b"tiervault dir key 2"


@dataclass
class FileResult:
    """What reading one file produced."""

    content: list[bytes]
    size: int
    changed: bool = False
    error: str | None = None


#: A file's contents: being read by a worker thread, or already read inline.
Read = Future[FileResult] | FileResult


class SubDir:
    """A directory met while walking its parent: to be walked next."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node


class Unchanged:
    """A file the files cache proves unchanged. Its node is built only if the
    directory's tree has to be written again."""

    __slots__ = ("cached", "name", "part", "st")

    def __init__(self, name: bytes, st: os.stat_result, cached: CachedFile,
                 part: bytes | None = None) -> None:
        self.name = name
        self.st = st
        self.cached = cached
        self.part = part  # its part of the directory key, if a worker made it


class Stored:
    """A small file a worker process read and stored: what the directory's tree,
    its key and the files cache need of it, encoded by the worker."""

    __slots__ = ("changed", "content", "ctime", "ino", "mtime", "name", "part", "raw", "size")

    def __init__(self, name: bytes, size: int, mtime: int, ctime: int, ino: int,
                 content: list[bytes], changed: bool, raw: bytes, part: bytes) -> None:
        self.name, self.size, self.mtime, self.ctime, self.ino = name, size, mtime, ctime, ino
        self.content, self.changed = content, changed
        self.raw = raw  # its tree entry, encoded
        self.part = part  # its part of the directory key


Item = Node | Unchanged | Stored | tuple[Node, Read]


@dataclass(eq=False)
class PendingDir:
    """A directory whose entries may still be waiting for file workers."""

    path: bytes
    node: Node
    items: list[Item | PendingDir] = field(default_factory=list)
    tree_id: bytes | None = None
    cache_new: dict[bytes, CacheRow] = field(default_factory=dict)
    cache_drop: list[bytes] = field(default_factory=list)
    inodes: dict[bytes, int] = field(default_factory=dict)  # of the files read, by name
    checked: int = 0  # items before this index are known to be done
    #: (key, tree id) the files cache holds for this directory, if any.
    last_tree: tuple[bytes, bytes] | None = None
    #: What the files cache remembers of the directory's files, by name.
    cached: dict[bytes, CachedFile] | None = None
    #: The job of a worker process looking at the directory's other entries.
    job: JobHandle | None = None
    sort: bool = False  # items are not in name order (a job's came last)

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
        self.last_tree = self.cached = None


def item_name(it: Item | PendingDir) -> bytes:
    """The name of a directory's item (to sort them as the walk meets names)."""
    if isinstance(it, PendingDir):
        return it.node.name
    if isinstance(it, tuple):
        return it[0].name
    return it.name  # a Node, Unchanged or Stored


def file_part(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
              ctime: int, ino: int, nlink: int, dev: int) -> bytes:
    """A file's part of its directory's key (msgpack: parts concatenate unambiguously)."""
    # The device only for hard links (their nodes record it, to group them): a
    # device number that changes (a remount) then rewrites those trees.
    return bytes(msgpack.packb([0, name, mode, uid, gid, size, mtime, ctime, ino, nlink,
                                dev if nlink > 1 else 0], use_bin_type=True))


def stat_part(name: bytes, st: os.stat_result) -> bytes:
    """``file_part`` of a file from its lstat result."""
    return file_part(name, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                     st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink, st.st_dev)


def _node_part(node: Node, tree_id: bytes | None) -> bytes:
    # Everything but the access time (reading a file changes it, and a reused
    # tree keeps the one of the backup that wrote it).
    return bytes(msgpack.packb(
        [1, tree_id, sorted((k, v) for k, v in node.items() if k not in ("atime", "subtree"))],
        use_bin_type=True))


def dir_key(pd: PendingDir, results: list[FileResult | None]) -> bytes | None:
    """A digest of what ``pd``'s tree is made of, or None if the tree could not
    be reused next time (a file the cache does not remember, an error).

    ``results`` holds, for each item, the finished read of a file read now (its
    stat fields are in its node) and None for the others."""
    parts: list[bytes] = [_KEY_VERSION]
    for it, res in zip(pd.items, results, strict=True):
        if isinstance(it, Unchanged):
            parts.append(it.part or stat_part(it.name, it.st))
        elif isinstance(it, Stored):
            if it.name not in pd.cache_new:
                return None  # not cached: read again next time
            parts.append(it.part)
        elif isinstance(it, PendingDir):
            parts.append(_node_part(it.node, it.tree_id))
        elif isinstance(it, tuple):
            node = it[0]
            if res is None or res.error is not None or node.name not in pd.cache_new:
                return None  # read with an error, or not cached: read again next time
            parts.append(file_part(node.name, node["mode"], node["uid"], node["gid"],
                                   res.size, node["mtime"], node["ctime"],
                                   pd.inodes.get(node.name, -1), node.get("nlink", 1),
                                   node.get("dev", 0)))
        else:
            parts.append(_node_part(it, None))
    return blake3.blake3(b"".join(parts)).digest()
