"""The engine reports to a Progress object and never prints.

The CLI supplies a terminal printer (rich), a JSON-lines printer or a silent
one; the daemon its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Counters:
    """Work done and (when known) work to do."""

    files_done: int = 0
    bytes_done: int = 0
    files_total: int | None = None
    bytes_total: int | None = None
    started: float = field(default_factory=time.monotonic)


class Progress:
    """Silent base: thread-safe counters, a warning list and no output."""

    #: True when a display would use totals (the backup then scans ahead for an ETA).
    wants_totals = False
    #: True when a display lists each item (``-v``); the engine calls ``item`` only then,
    #: so that the hot path of a backup pays nothing for it otherwise.
    wants_items = False

    def __init__(self) -> None:
        self.counters = Counters()
        self.warnings: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def phase(self, name: str) -> None:
        """A new phase of work begins (e.g. 'scan', 'backup', 'index')."""
        self.counters = Counters()
        self.on_phase(name)

    def set_total(self, files: int | None, nbytes: int | None) -> None:
        """Announce how much work there is (may come late, or never)."""
        self.counters.files_total = files
        self.counters.bytes_total = nbytes

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        """Count work done: finished files, and bytes as they are read or written
        (a large file counts its bytes chunk by chunk, so a display moves with it)."""
        with self._lock:
            self.counters.files_done += files
            self.counters.bytes_done += nbytes

    def item(self, kind: str, path: str) -> None:
        """One item was handled: ``kind`` is e.g. 'new', 'changed', 'unchanged', 'restored'."""
        self.on_item(kind, path)

    def warn(self, path: str, message: str) -> None:
        """A non-fatal problem with one item (the run goes on)."""
        with self._lock:
            self.warnings.append((path, message))
        self.on_warning(path, message)

    def info(self, message: str) -> None:
        """A line worth telling the user."""
        self.on_info(message)

    def status(self, message: str) -> None:
        """A passing status line (shown on a live terminal only)."""
        self.on_status(message)

    # Hooks for printers.
    def on_phase(self, name: str) -> None:
        """Called when a phase starts."""

    def on_item(self, kind: str, path: str) -> None:
        """Called for each item when ``wants_items`` is set."""

    def on_warning(self, path: str, message: str) -> None:
        """Called for each warning."""

    def on_info(self, message: str) -> None:
        """Called for informational lines."""

    def on_status(self, message: str) -> None:
        """Called for passing status lines."""

    def close(self) -> None:
        """Stop any display."""
