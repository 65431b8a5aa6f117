"""A quick walk that counts what a backup will process, for progress and ETA."""

from __future__ import annotations

import os
import stat
import threading

from tiervault.engine.backupopts import BackupOptions
from tiervault.engine.excludes import Excluder
from tiervault.engine.progress import Progress


def scan_totals(opts: BackupOptions, stop: threading.Event) -> tuple[int, int]:
    """Count regular files and their bytes below the paths (lstat only), with the
    backup's name and size filters (the directory-tag ones need a read: skipped)."""
    ex = Excluder(opts.excludes, opts.iexcludes)
    limit = opts.exclude_larger_than
    files = size = 0
    stack = [os.fsencode(os.path.abspath(p)) for p in opts.paths]
    while stack and not stop.is_set():
        p = stack.pop()
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            if limit is not None and st.st_size > limit:
                continue
            files += 1
            size += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(p) as it:
                    for e in it:
                        child = os.path.join(p, e.name)
                        if not ex.excluded(child, e.name):
                            stack.append(child)
            except OSError:
                continue
    return files, size


def start_scan(opts: BackupOptions, progress: Progress) -> threading.Event:
    """Scan in a background thread and announce the totals; set the event to stop."""
    stop = threading.Event()

    def run() -> None:
        files, size = scan_totals(opts, stop)
        if not stop.is_set():
            progress.set_total(files, size)

    threading.Thread(target=run, name="scan", daemon=True).start()
    return stop
