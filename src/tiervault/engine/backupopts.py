"""What a backup is asked to do, and the paths as a snapshot records them."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field


@dataclass
class BackupOptions:
    """What to back up and how."""

    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    workers: int = 4
    #: Worker processes for small files (None: one per core; 0 or 1: none).
    processes: int | None = None
    use_cache: bool = True
    one_file_system: bool = False
    archive: bool = False  # mark the snapshot as an archive (the mark goes first)
    host: str | None = None  # the hostname recorded (default: this machine's)
    iexcludes: list[str] = field(default_factory=list)  # case-insensitive patterns
    exclude_if_present: list[str] = field(default_factory=list)  # NAME or NAME:HEADER
    exclude_caches: bool = False  # directories holding a valid CACHEDIR.TAG
    exclude_larger_than: int | None = None  # bytes
    dry_run: bool = False  # walk, read and count; write nothing
    stdin_filename: str | None = None  # back up standard input as /NAME instead of paths

    def hostname(self) -> str:
        """The hostname the snapshot records."""
        return self.host or socket.gethostname()

    def snapshot_paths(self) -> list[str]:
        """The paths as the snapshot records them (absolute, nested ones dropped)."""
        if self.stdin_filename is not None:
            return ["/" + self.stdin_filename]
        return [os.fsdecode(p) for p in normalise(self.paths)]



def normalise(paths: list[str]) -> list[bytes]:
    """Absolute paths without symlink resolution; nested ones dropped. Linear in
    the number of paths (a --files-from list may hold very many)."""
    kept: set[bytes] = set()
    for p in sorted({os.path.abspath(os.fsencode(p)) for p in paths}, key=len):
        q = p
        while q not in kept:
            up = os.path.dirname(q)
            if up == q:
                kept.add(p)
                break
            q = up
    return sorted(kept)


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
