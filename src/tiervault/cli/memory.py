"""Process-wide allocator settings, applied once at start-up (Linux glibc).

Backup and restore move multi-megabyte buffers through worker threads. By
default glibc keeps freed large blocks in per-thread arenas, so the resident
size grows far beyond what is live (measured: 319 MiB peak for a backup whose
Python heap never exceeded ~120 MiB). Serving blocks of 256 KiB and more
straight from mmap returns them to the system when freed, and two arenas are
plenty for our few threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> None:
    """Best effort: does nothing where glibc's mallopt is not available."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass
