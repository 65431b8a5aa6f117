"""Exclude patterns: a pattern with a slash matches whole paths, one without
matches any single name (``*.tmp``, ``node_modules``); ``**`` spans directories."""

from __future__ import annotations

import os
import re
from fnmatch import translate


class Excluder:
    """Decides which paths a backup skips."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = list(patterns)
        self._name: list[re.Pattern[str]] = []
        self._path: list[re.Pattern[str]] = []
        for p in patterns:
            p = p.rstrip("/") or "/"
            if "/" in p:
                rx = translate(p).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
                # fnmatch's '*' crosses '/', restic's does not; '**' does.
                self._path.append(re.compile(rx))
            else:
                self._name.append(re.compile(translate(p)))

    def excluded(self, path: bytes, name: bytes) -> bool:
        """True if ``path`` (absolute) with final component ``name`` is excluded."""
        if not self.patterns:
            return False
        n = os.fsdecode(name)
        if any(r.match(n) for r in self._name):
            return True
        if self._path:
            p = os.fsdecode(path)
            return any(r.match(p) for r in self._path)
        return False
