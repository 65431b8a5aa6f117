"""Low-level reads of source files for the backup (no policy here)."""

from __future__ import annotations

import os
from typing import BinaryIO


def prefixed(prefix: bytes, f: object) -> BinaryIO:
    """A raw reader yielding ``prefix`` and then the rest of ``f``."""
    return _Prefixed(prefix, f)  # type: ignore[return-value]


class _Prefixed:
    """A raw reader yielding ``prefix`` and then the rest of ``f``."""

    def __init__(self, prefix: bytes, f: object) -> None:
        self._prefix = memoryview(prefix)
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._f.readinto(b)  # type: ignore[attr-defined, no-any-return]

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(n if n > 0 else 1 << 20)
        got = self.readinto(memoryview(buf))
        return bytes(buf[:got])


def read_small(fd: int, expected: int) -> bytes:
    """Up to ``expected + 1`` bytes (one more than stat said, to notice growth)."""
    data = os.read(fd, expected + 1)
    if 0 < len(data) < expected:  # a short read (or the file shrank): read to the end
        parts, got = [data], len(data)
        while got <= expected:
            more = os.read(fd, expected + 1 - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def can_noatime(st: os.stat_result) -> bool:
    """True if the file may be opened with O_NOATIME (so reading leaves its atime)."""
    # O_NOATIME is only allowed for the file's owner (or root).
    return hasattr(os, "O_NOATIME") and (os.geteuid() == 0 or os.geteuid() == st.st_uid)
