"""The parent snapshot of a backup: what its counts are measured against.

new = not in the parent; changed = in the parent with other content;
unchanged = the parent's content. The parent's trees are loaded only for the
directories that ask (those where a file had to be read), so the unchanged
path of a backup, served by the files cache, costs nothing more.
"""

from __future__ import annotations

import os

from tiervault.engine.trees import TreeReader
from tiervault.errors import TierVaultError
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import Node


class ParentTrees:
    """Entries of the parent snapshot's directories, loaded on demand."""

    def __init__(self, repo: Repository, parent: Snapshot) -> None:
        self.parent = parent
        self._reader = TreeReader(repo, cache_size=0)
        self._trees: dict[bytes, dict[bytes, Node] | None] = {}

    def entries(self, path: bytes) -> dict[bytes, Node] | None:
        """The parent's entries of directory ``path`` (None if it has none there).

        Loads the missing ancestors top-down without recursion (any depth); each
        stays loaded until ``done`` is called for it."""
        missing: list[bytes] = []
        p = path
        while p not in self._trees:
            missing.append(p)
            if p == b"/":
                break
            p = os.path.dirname(p)
        for p in reversed(missing):
            if p == b"/":
                tid: object = bytes.fromhex(self.parent.tree)
            else:
                up = self._trees.get(os.path.dirname(p))
                n = up.get(os.path.basename(p)) if up is not None else None
                tid = n.get("subtree") if n is not None and n.kind == "dir" else None
            entries = None
            if isinstance(tid, bytes):
                try:
                    entries = {n.name: n for n in self._reader.load(tid)}
                except TierVaultError:
                    entries = None  # a damaged parent tree: its files count as new
            self._trees[p] = entries
        return self._trees[path]

    def done(self, path: bytes) -> None:
        """Directory ``path`` is finished (its subdirectories all are): forget it."""
        self._trees.pop(path, None)

    def classify(self, dirpath: bytes, node: Node) -> str:
        """'files_new', 'files_changed' or 'files_unmodified' for a file read now."""
        return self.classify_content(dirpath, node.name, node["content"])

    def classify_content(self, dirpath: bytes, name: bytes, content: list[bytes]) -> str:
        """``classify`` by the file's name and content ids."""
        entries = self.entries(dirpath)
        old = entries.get(name) if entries is not None else None
        if old is None or old.kind != "file":
            return "files_new"
        return "files_unmodified" if old.get("content") == content else "files_changed"
