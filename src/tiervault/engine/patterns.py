"""Path patterns for ``restore --include`` and ``find`` (restic's meanings).

A pattern is split at ``/`` into components, each a glob (``*``, ``?``,
``[...]``) that never crosses a ``/``; a component ``**`` matches any number of
directories (also none). A pattern that starts with ``/`` is anchored at the
root of the snapshot; one that does not may start at any directory boundary
(``doc/*.txt`` matches ``/home/me/doc/a.txt``), and one without a ``/`` is
matched against names.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

Comps = tuple[bytes, ...]


@dataclass(frozen=True)
class PathPattern:
    """One pattern, compiled into components."""

    text: str
    parts: tuple[str, ...]
    anchored: bool

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        """Compile ``text`` (a trailing ``/`` and ``.`` components are ignored)."""
        parts = tuple(p for p in text.split("/") if p and p != ".")
        return cls(text, parts, text.startswith("/"))

    def is_literal(self) -> bool:
        """True if it has no glob characters (an exact path)."""
        return not any(ch in p for p in self.parts for ch in "*?[")

    def matches(self, path: Comps) -> bool:
        """True if the whole of ``path`` (or, unanchored, an ending of it) matches."""
        names = tuple(os.fsdecode(c) for c in path)
        if "**" not in self.parts:
            # The common case, without recursion (trees may be thousands deep).
            n = len(self.parts)
            if n == 0:
                return not names
            if len(names) < n or (self.anchored and len(names) != n):
                return False
            return all(_part(p, x) for p, x in zip(self.parts, names[-n:], strict=True))
        if self.anchored:
            return _match(self.parts, names)
        return any(_match(self.parts, names[i:]) for i in range(len(names)))


def _part(pattern: str, name: str) -> bool:
    # Equal names match too, so a literal path holding '[' or '*' still works.
    return pattern == name or fnmatch.fnmatchcase(name, pattern)


def _match(parts: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not parts:
        return not names
    head, rest = parts[0], parts[1:]
    if head == "**":
        return any(_match(rest, names[i:]) for i in range(len(names) + 1))
    return bool(names) and _part(head, names[0]) and _match(rest, names[1:])
