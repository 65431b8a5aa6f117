"""Read-only views of snapshots: ls, find and diff."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from tiervault.engine.patterns import PathPattern
from tiervault.engine.trees import MAX_DEPTH, TreeReader, split_path, too_deep
from tiervault.errors import UsageError
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import Node


def describe(path: tuple[bytes, ...], node: Node) -> dict[str, Any]:
    """A JSON-friendly description of one entry."""
    d: dict[str, Any] = {
        "path": os.fsdecode(b"/" + b"/".join(path)),
        "name": os.fsdecode(node.name),
        "type": node.kind,
        "mode": node.get("mode", 0),
        "uid": node.get("uid"),
        "gid": node.get("gid"),
        "user": node.get("user"),
        "group": node.get("group"),
        "mtime": _iso(node.get("mtime")),
    }
    if node.kind == "file":
        d["size"] = node.get("size", 0)
    if node.kind == "symlink":
        d["target"] = os.fsdecode(node.get("target", b""))
    return d


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9).astimezone().isoformat()


def ls(repo: Repository, snap: Snapshot, path: str | None,
       recursive: bool = True) -> Iterator[dict[str, Any]]:
    """Entries of a snapshot (below ``path`` if given)."""
    trees = TreeReader(repo)
    root = bytes.fromhex(snap.tree)
    prefix: tuple[bytes, ...] = ()
    if path and path != "/":
        try:
            prefix = split_path(path)
        except ValueError as e:
            raise UsageError(str(e)) from None
        node = trees.lookup(root, prefix)
        if node is None:
            raise UsageError(f"{path} is not in snapshot {snap.id[:8]}")
        yield describe(prefix, node)
        if node.kind != "dir":
            return
        root = node["subtree"]
    if recursive:
        for p, n in trees.walk(root, prefix):
            yield describe(p, n)
    else:
        for n in trees.load(root):
            yield describe((*prefix, n.name), n)


def find(repo: Repository, snaps: list[Snapshot], pattern: str) -> Iterator[dict[str, Any]]:
    """Entries matching ``pattern`` (see ``engine.patterns``): by name without a
    '/', else by the end of the path at directory boundaries, or the whole path
    if it starts with '/'."""
    trees = TreeReader(repo, cache_size=4096)
    pat = PathPattern.parse(pattern)
    for s in snaps:
        for p, n in trees.walk(bytes.fromhex(s.tree)):
            if pat.matches(p):
                d = describe(p, n)
                d["snapshot"] = s.id
                d["snapshot_time"] = s.time
                yield d


def diff(repo: Repository, a: Snapshot, b: Snapshot) -> dict[str, list[str]]:
    """Paths added, removed and modified from ``a`` to ``b``; equal subtrees skipped."""
    trees = TreeReader(repo, cache_size=1024)
    out: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}

    def name(p: tuple[bytes, ...]) -> str:
        return os.fsdecode(b"/" + b"/".join(p))

    def all_below(tid: bytes, prefix: tuple[bytes, ...], key: str) -> None:
        for p, _ in trees.walk(tid, prefix):
            out[key].append(name(p))

    ta, tb = bytes.fromhex(a.tree), bytes.fromhex(b.tree)
    if ta == tb:
        return out
    # Depth first with an explicit stack (trees may be thousands of levels deep):
    # one iterator over a directory pair and one name per level.
    names: list[bytes] = []
    stack = [trees.pairs(ta, tb)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            if stack:
                names.pop()
            continue
        nm, x, y = item
        p = (*names, nm)
        if x is None and y is not None:
            out["added"].append(name(p))
            if y.kind == "dir":
                all_below(y["subtree"], p, "added")
        elif y is None and x is not None:
            out["removed"].append(name(p))
            if x.kind == "dir":
                all_below(x["subtree"], p, "removed")
        elif x is not None and y is not None:
            if x.kind == "dir" and y.kind == "dir":
                if x["subtree"] != y["subtree"]:  # equal subtrees: nothing changed below
                    if len(p) > MAX_DEPTH:
                        raise too_deep()
                    stack.append(trees.pairs(x["subtree"], y["subtree"]))
                    names.append(nm)
            elif _changed(x, y):
                out["modified"].append(name(p))
    return out


def _changed(x: Node, y: Node) -> bool:
    keys = ("type", "content", "target", "mode", "uid", "gid", "size", "mtime")
    return any(x.get(k) != y.get(k) for k in keys)
