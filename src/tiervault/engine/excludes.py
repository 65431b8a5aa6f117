"""Exclude patterns: a pattern with a slash matches whole paths, one without
matches any single name (``*.tmp``, ``node_modules``); ``**`` spans directories.
``--iexclude`` patterns are the same, matched regardless of case (as restic's)."""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from fnmatch import translate

from tiervault.errors import UsageError

#: The signature a CACHEDIR.TAG file starts with (https://bford.info/cachedir/).
CACHEDIR_TAG = "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55"


class Excluder:
    """Decides which paths a backup skips."""

    def __init__(self, patterns: list[str], ipatterns: list[str] | None = None) -> None:
        self.patterns = list(patterns) + list(ipatterns or [])
        self._name: list[re.Pattern[str]] = []
        self._path: list[re.Pattern[str]] = []
        for plist, flags in ((patterns, 0), (ipatterns or [], re.IGNORECASE)):
            for p in plist:
                p = p.rstrip("/") or "/"
                if "/" in p:
                    rx = translate(p).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
                    # fnmatch's '*' crosses '/', restic's does not; '**' does.
                    self._path.append(re.compile(rx, flags))
                else:
                    self._name.append(re.compile(translate(p), flags))

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


def parse_tag_specs(specs: list[str], caches: bool) -> list[tuple[bytes, bytes | None]]:
    """``--exclude-if-present NAME[:HEADER]`` (and ``--exclude-caches``) as
    (file name, header the file must start with, or None)."""
    out: list[tuple[bytes, bytes | None]] = []
    for spec in [*specs, *([CACHEDIR_TAG] if caches else [])]:
        name, sep, header = spec.partition(":")
        if not name or "/" in name:
            raise UsageError(f"--exclude-if-present {spec!r}: give a file name "
                             "(NAME or NAME:HEADER)")
        out.append((os.fsencode(name), header.encode() if sep else None))
    return out


def tagged(path: bytes, names: list[bytes], tags: list[tuple[bytes, bytes | None]]) -> bool:
    """True if the directory ``path`` (whose sorted entry ``names`` are given) holds
    one of the tag files (with its header, if one is required)."""
    for name, header in tags:
        i = bisect_left(names, name)
        if i == len(names) or names[i] != name:
            continue
        if header is None:
            return True
        try:
            fd = os.open(os.path.join(path, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if os.read(fd, len(header)) == header:
                return True
        except OSError:
            continue
        finally:
            os.close(fd)
    return False
