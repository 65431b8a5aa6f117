"""Which entries of a snapshot a restore with include patterns restores."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tiervault.engine.patterns import PathPattern
from tiervault.errors import UsageError
from tiervault.vault.tree import Node

Entry = tuple[tuple[bytes, ...], Node]


def selected(walk: Iterable[Entry], includes: list[PathPattern], snap_id: str
             ) -> Iterator[Entry]:
    """The entries of ``walk`` (depth first, parents before children) to restore.

    An entry is restored if it or a directory above it matches a pattern; the
    directories leading to it are restored too (with their metadata), nothing
    else. Raises UsageError at the end if a pattern matched nothing. Memory: one
    entry per level of the walk.
    """
    matched: set[PathPattern] = set()
    # The matched directory being walked, if any (depth first: one at a time).
    inside: tuple[bytes, ...] | None = None
    # The unmatched directories above the entry being visited, each with whether
    # it was given out already.
    above: list[tuple[tuple[bytes, ...], Node, list[bool]]] = []
    for path, node in walk:
        if inside is not None and path[:len(inside)] != inside:
            inside = None
        while above and above[-1][0] != path[:len(above[-1][0])]:
            above.pop()
        if inside is not None:
            if len(matched) < len(includes):  # a pattern for something inside it
                matched.update(i for i in includes if i not in matched and i.matches(path))
        else:
            hits = [i for i in includes if i.matches(path)]
            if not hits:
                if node.kind == "dir":
                    above.append((path, node, [False]))
                continue
            matched.update(hits)
            if node.kind == "dir":
                inside = path
            for dpath, dnode, given in above:
                if not given[0]:
                    yield dpath, dnode
                    given[0] = True
        yield path, node
    missing = [i for i in includes if i not in matched]
    if missing:
        m = missing[0]
        if m.is_literal():
            raise UsageError(f"{m.text.rstrip('/') or '/'} is not in snapshot {snap_id[:8]}")
        raise UsageError(f"nothing in snapshot {snap_id[:8]} matches {m.text!r}")
