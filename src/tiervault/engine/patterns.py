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
    #: Per part: True if it is a glob (else only an equal name matches it).
    globs: tuple[bool, ...] = ()

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        """Compile ``text`` (a trailing ``/`` and ``.`` components are ignored)."""
        parts = tuple(p for p in text.split("/") if p and p != ".")
        return cls(text, parts, text.startswith("/"), tuple(_is_glob(p) for p in parts))

    def is_literal(self) -> bool:
        """True if it has no glob characters (an exact path)."""
        return not any(ch in p for p in self.parts for ch in "*?[")

    def matches(self, path: Comps) -> bool:
        """True if the whole of ``path`` (or, unanchored, an ending of it) matches."""
        # One decode for the whole path (names never hold a '/'): paths may be
        # thousands of names long, and every entry of a tree is matched.
        names = tuple(os.fsdecode(b"/".join(path)).split("/")) if path else ()
        globs = self.globs or tuple(_is_glob(p) for p in self.parts)
        if "**" not in self.parts:
            # The common case, without recursion (trees may be thousands deep).
            n = len(self.parts)
            if n == 0:
                return not names
            if len(names) < n or (self.anchored and len(names) != n):
                return False
            return all(_part(p, x, g) for p, x, g in zip(self.parts, names[-n:], globs[-n:],
                                                          strict=True))
        if self.anchored:
            return _match(self.parts, names, globs)
        # An ending of the path matches: the same as a leading '**' (which may
        # match nothing), for a path of at least one name.
        return bool(names) and _match(("**", *self.parts), names, (True, *globs))


def _is_glob(part: str) -> bool:
    return any(ch in part for ch in "*?[")


def _part(pattern: str, name: str, glob: bool = True) -> bool:
    # Equal names match too, so a literal path holding '[' or '*' still works.
    return pattern == name or (glob and fnmatch.fnmatchcase(name, pattern))


def _match(parts: tuple[str, ...], names: tuple[str, ...],
           globs: tuple[bool, ...] | None = None) -> bool:
    """True if the names match the parts, a '**' matching any number of names.

    Without recursion (paths may be thousands of names long): the usual wildcard
    matcher that, on a mismatch, lets the last '**' seen take one more name.
    """
    def part(i: int, name: str) -> bool:
        return _part(parts[i], name, True if globs is None else globs[i])

    # The parts after the last '**' must match the last names: a cheap test that
    # settles most entries of a deep tree (``**/leaf`` against /d/d/.../d).
    k = len(parts)
    while k and parts[k - 1] != "**":
        k -= 1
    tail = len(parts) - k
    if tail > len(names) or not all(part(k + i, names[len(names) - tail + i])
                                    for i in range(tail)):
        return False
    pi = ni = 0
    star, star_ni = -1, 0
    while ni < len(names):
        if pi < len(parts) and parts[pi] == "**":
            star, star_ni = pi, ni
            pi += 1
        elif pi < len(parts) and part(pi, names[ni]):
            pi += 1
            ni += 1
        elif star >= 0:
            star_ni += 1
            pi, ni = star + 1, star_ni
        else:
            return False
    while pi < len(parts) and parts[pi] == "**":
        pi += 1
    return pi == len(parts)
