"""Walking snapshot trees safely: every name is vetted before it is used."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from tiervault.errors import IntegrityError
from tiervault.vault.repository import Repository
from tiervault.vault.tree import Node, decode_tree

#: The deepest nesting walked. No snapshot tiervault makes comes near it (backup
#: reads paths up to PATH_MAX, 4096 bytes: about 2,000 levels); a deeper tree is
#: damaged or made to exhaust memory, and is refused with one error line.
MAX_DEPTH = 32_768


def safe_name(name: bytes) -> bool:
    """True if ``name`` is one harmless path component."""
    return bool(name) and name not in (b".", b"..") and b"/" not in name and b"\0" not in name


class TreeReader:
    """Loads tree blobs (with a small cache) and walks them."""

    def __init__(self, repo: Repository, cache_size: int = 256) -> None:
        self.repo = repo
        self.load = lru_cache(maxsize=cache_size)(self._load)

    def _load(self, tree_id: bytes) -> list[Node]:
        data = self.repo.load_blob(tree_id)
        nodes = decode_tree(data, f"tree {tree_id.hex()[:16]}")
        seen: set[bytes] = set()
        out = []
        for n in nodes:
            # Hostile or damaged trees: skip unsafe and duplicate names outright.
            if not safe_name(n.name) or n.name in seen:
                continue
            seen.add(n.name)
            out.append(n)
        return out

    def walk(self, tree_id: bytes, prefix: tuple[bytes, ...] = ()
             ) -> Iterator[tuple[tuple[bytes, ...], Node]]:
        """Yield (path components, node) for every entry, parents before children.

        Iterative (an explicit stack), so trees deeper than Python's recursion
        limit are walked too; the stack holds one name and one iterator per
        level, so memory grows with the depth, not with its square.
        """
        names = list(prefix)
        stack: list[Iterator[Node]] = [iter(self.load(tree_id))]
        while stack:
            n = next(stack[-1], None)
            if n is None:
                stack.pop()
                if stack:  # leaving a subdirectory: its name goes too
                    names.pop()
                continue
            path = (*names, n.name)
            yield path, n
            if n.kind == "dir":
                if len(path) > MAX_DEPTH:
                    raise too_deep()
                stack.append(iter(self.load(n["subtree"])))
                names.append(n.name)

    def pairs(self, tree_a: bytes, tree_b: bytes
              ) -> Iterator[tuple[bytes, Node | None, Node | None]]:
        """(name, entry in a, entry in b) for every name of either tree, sorted."""
        na = {n.name: n for n in self.load(tree_a)}
        nb = {n.name: n for n in self.load(tree_b)}
        for name in sorted(set(na) | set(nb)):
            yield name, na.get(name), nb.get(name)

    def lookup(self, tree_id: bytes, path: tuple[bytes, ...]) -> Node | None:
        """The node at ``path`` (components) below ``tree_id``, or None."""
        node: Node | None = None
        cur = tree_id
        for comp in path:
            node = next((n for n in self.load(cur) if n.name == comp), None)
            if node is None:
                return None
            if node.kind == "dir":
                cur = node["subtree"]
        return node


def too_deep() -> IntegrityError:
    """The error for a tree nested deeper than MAX_DEPTH."""
    return IntegrityError(f"a snapshot tree nests deeper than {MAX_DEPTH} levels: the vault "
                          "is damaged or was made to exhaust memory")


def split_path(path: str) -> tuple[bytes, ...]:
    """'/a/b/' -> (b'a', b'b'); rejects '..' components."""
    import os

    comps = tuple(c for c in os.fsencode(path).split(b"/") if c and c != b".")
    if any(c == b".." for c in comps):
        raise ValueError(f"path {path!r} must not contain '..'")
    return comps
