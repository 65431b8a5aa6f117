"""Printing: text or JSON results, progress bars on a terminal, quiet in pipes."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from tiervault.engine.progress import Progress


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=None, default=str) + "\n")
    sys.stdout.flush()


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class TextProgress(Progress):
    """Warnings on stderr; a live progress bar when stderr is a terminal."""

    def __init__(self, json_mode: bool, quiet: bool = False) -> None:
        super().__init__()
        self.json_mode = json_mode
        self.live = not json_mode and not quiet and sys.stderr.isatty()
        self.wants_totals = self.live
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def on_phase(self, name: str) -> None:
        if not self.live:
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        if self._bar is None:
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.fields[files]} files"), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(),
                                     transient=True, refresh_per_second=4)
            self._bar.start()
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(name, total=None, files=0)

    def set_total(self, files: int | None, nbytes: int | None) -> None:
        super().set_total(files, nbytes)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=nbytes)

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        super().add(files, nbytes)
        now = time.monotonic()
        if self._bar is not None and self._task is not None and now - self._last > 0.1:
            self._last = now
            c = self.counters
            self._bar.update(self._task, completed=c.bytes_done, files=c.files_done)

    def on_warning(self, path: str, message: str) -> None:
        if self.json_mode:
            sys.stderr.write(json.dumps({"message_type": "warning", "path": path,
                                         "message": message}) + "\n")
        elif message.startswith(path):
            self._print(f"warning: {message}")
        else:
            self._print(f"warning: {path}: {message}")

    def on_info(self, message: str) -> None:
        if self.json_mode:
            sys.stderr.write(json.dumps({"message_type": "info", "message": message}) + "\n")
        else:
            self._print(message)

    def on_status(self, message: str) -> None:
        if self.live:
            self._print(message)

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            sys.stderr.write(line + "\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
