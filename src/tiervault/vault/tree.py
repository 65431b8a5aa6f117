"""Directory trees: one blob per directory listing its entries, sorted by name.

Entries are plain dicts with short keys (see docs/format.md); names, symlink
targets and xattrs are bytes so that any file name survives. Identical
directories encode to identical bytes and so deduplicate.
"""

from __future__ import annotations

from typing import Any

import msgpack

from tiervault.errors import IntegrityError

KINDS = ("file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket")
_INT_FIELDS = ("mode", "uid", "gid", "mtime", "atime", "ctime", "size", "rdev", "nlink", "inode",
               "dev")
_MAX_ENTRIES = 10_000_000


class Node(dict[str, Any]):
    """One entry of a tree (a dict with validated fields)."""

    @property
    def name(self) -> bytes:
        """The entry's name (one path component, bytes)."""
        return self["name"]  # type: ignore[no-any-return]

    @property
    def kind(self) -> str:
        """One of KINDS."""
        return self["type"]  # type: ignore[no-any-return]


def encode_tree(nodes: list[Node]) -> bytes:
    """Serialise entries (sorted by name for deterministic bytes)."""
    nodes = sorted(nodes, key=lambda n: n.name)
    # msgpack packs a Node (a dict subclass) as the dict it is: no copies.
    return bytes(msgpack.packb({"v": 1, "entries": nodes}, use_bin_type=True))


#: How ``encode_tree``'s bytes begin, up to the array of entries.
_HEAD = b"\x82" + msgpack.packb("v") + msgpack.packb(1) + msgpack.packb("entries")


def encode_entries(entries: list[tuple[bytes, Node | bytes]]) -> bytes:
    """``encode_tree`` of (name, node) pairs where a node may come encoded already
    (msgpack is compositional: the same bytes either way)."""
    entries.sort(key=lambda e: e[0])
    out = bytearray(_HEAD)
    out += msgpack.Packer().pack_array_header(len(entries))
    for _name, e in entries:
        out += e if isinstance(e, bytes) else msgpack.packb(e, use_bin_type=True)
    return bytes(out)


def decode_tree(data: bytes, what: str) -> list[Node]:
    """Parse a tree blob; IntegrityError on anything malformed (names not yet vetted)."""
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:  # hostile input makes msgpack raise various types
        raise IntegrityError(f"{what} is damaged (not a tree)") from None
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("entries"), list):
        raise IntegrityError(f"{what} is not a supported tree")
    if len(doc["entries"]) > _MAX_ENTRIES:
        raise IntegrityError(f"{what} is damaged (too many entries)")
    return [_node(e, what) for e in doc["entries"]]


def _node(e: Any, what: str) -> Node:
    if not isinstance(e, dict) or not isinstance(e.get("name"), bytes):
        raise IntegrityError(f"{what} is damaged (entry)")
    if e.get("type") not in KINDS:
        raise IntegrityError(f"{what} is damaged (entry type)")
    for f in _INT_FIELDS:
        v = e.get(f)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or abs(v) >= 1 << 63):
            raise IntegrityError(f"{what} is damaged ({f})")
    content = e.get("content")
    if content is not None and not (
            isinstance(content, list) and all(isinstance(c, bytes) and len(c) == 32
                                              for c in content)):
        raise IntegrityError(f"{what} is damaged (content)")
    sub = e.get("subtree")
    if sub is not None and not (isinstance(sub, bytes) and len(sub) == 32):
        raise IntegrityError(f"{what} is damaged (subtree)")
    if e["type"] == "dir" and sub is None:
        raise IntegrityError(f"{what} is damaged (dir without subtree)")
    tgt = e.get("target")
    if tgt is not None and not isinstance(tgt, bytes):
        raise IntegrityError(f"{what} is damaged (symlink target)")
    xa = e.get("xattrs")
    if xa is not None and not (isinstance(xa, list) and all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], bytes)
            and isinstance(p[1], bytes) for p in xa)):
        raise IntegrityError(f"{what} is damaged (xattrs)")
    for f in ("user", "group"):
        if e.get(f) is not None and not isinstance(e[f], str):
            raise IntegrityError(f"{what} is damaged ({f})")
    return Node(e)
