"""Printing: text or JSON results, progress bars on a terminal, quiet in pipes.

One unit system everywhere: binary (KiB, MiB, GiB; 1 KiB = 1024 bytes), in the
bar, the summaries and ``ls -H``. The bar lives on stderr; before anything is
printed on stdout while it is shown (a command's summary) it is stopped and
cleared, so the summary starts on a clean line.
"""

from __future__ import annotations

import io
import json
import re
import sys
import time
from typing import Any

from tiervault.engine.progress import Progress

#: Lines of a command that report a problem: kept by ``--quiet``, which hides the
#: ones that only tell about progress or success ("checking ...", "synchronized").
_PROBLEM_WORDS = ("warning", "error", "offline", "could not", "damaged", "lost", "behind",
                  "disabled", "refused", "failed", "unreachable", "not ")


#: What ``inert`` escapes: C0 controls, DEL, C1 controls, the backslash (so that an
#: escape stays unambiguous) and surrogates (undecodable bytes of a name, which
#: ``os.fsdecode`` turns into U+DC80..U+DCFF).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # the byte that was not valid UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: object) -> str:
    """``text`` made safe to print on a terminal: every control character (C0, DEL,
    C1, also newline and tab), every byte that was not UTF-8 and the backslash
    are written as escapes (``\\x1b``, ``\\x0a``, ``\\xff``, ``\\\\``), so that a
    file name or a server's message cannot move the cursor, retitle the window or
    forge a line. Every name and every foreign string in human output passes here;
    ``--json`` keeps the exact text (JSON escapes controls itself)."""
    return _UNSAFE.sub(_escape, str(text))


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=None, default=str) + "\n")
    sys.stdout.flush()


def say_warnings(json_mode: bool, warnings: list[str]) -> None:
    """One line on stderr per warning: ``warning: ...``, or a JSON message line
    (``{"message_type": "warning", ...}``) with ``--json``."""
    for w in warnings:
        if json_mode:
            sys.stderr.write(json.dumps({"message_type": "warning", "message": w}) + "\n")
        else:
            sys.stderr.write(f"warning: {w}\n")
    sys.stderr.flush()


def cleartext_warnings(json_mode: bool, urls: list[str]) -> list[str]:
    """Say (and return) a warning for each URL that travels in clear (ftp://, http://)."""
    from tiervault.storage.urls import cleartext_warning

    out = [w for w in (cleartext_warning(u) for u in urls) if w]
    say_warnings(json_mode, out)
    return out


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as everywhere in tiervault's output)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover (the loop returns)


def local_time(iso: str) -> str:
    """'2026-12-01T18:06:12.206063+00:00' -> '2026-12-01 19:06:12 +01:00' in the local zone
    (seconds, no fraction, the zone's offset always shown)."""
    from datetime import datetime

    try:
        t = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    off = t.strftime("%z")
    return f"{t:%Y-%m-%d %H:%M:%S} {off[:3]}:{off[3:]}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """plural(1, 'file') -> '1 file'; plural(2, 'file') -> '2 files'."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


class _StdoutGuard(io.TextIOBase):
    """Stands in for sys.stdout while a bar is shown: the first write stops the bar."""

    def __init__(self, inner: Any, stop: Any) -> None:
        super().__init__()
        self.inner = inner
        self._stop = stop

    def write(self, s: str) -> int:
        self._stop()
        return int(self.inner.write(s))

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return bool(self.inner.isatty())

    def fileno(self) -> int:
        return int(self.inner.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(self.inner.encoding)

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        err = self.inner.errors
        return None if err is None else str(err)

    @property
    def buffer(self) -> Any:
        return getattr(self.inner, "buffer", None)


class TextProgress(Progress):
    """Warnings on stderr; a live progress bar when stderr is a terminal.

    ``quiet`` (``-q``) hides the bar and informational lines but keeps warnings
    and lines about problems; ``verbose`` (``-v``) lists each item the engine
    reports (a backup's new/changed/unchanged files, a restore's files).
    """

    def __init__(self, json_mode: bool, quiet: bool = False, verbose: int = 0) -> None:
        super().__init__()
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = 0 if quiet or json_mode else verbose
        self.wants_items = self.verbose > 0
        self.live = not json_mode and not quiet and sys.stderr.isatty()
        self.wants_totals = self.live
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._saved_stdout: Any = None

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        # stderr: stdout carries the results (which may go to a pipe while the
        # bar shows on the terminal). rich's own stdout redirection would send
        # results to stderr, so it is off; _StdoutGuard stops the bar instead.
        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                 *_columns(),
                                 TimeRemainingColumn(), console=Console(stderr=True),
                                 transient=True, refresh_per_second=4,
                                 speed_estimate_period=10, redirect_stdout=False,
                                 redirect_stderr=False)
        self._bar.start()
        self._saved_stdout = sys.stdout
        sys.stdout = _StdoutGuard(sys.stdout, self.close)

    def on_phase(self, name: str) -> None:
        if not self.live:
            return
        if self._bar is None:
            self._start_bar()
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(name, total=None, files=0, files_total=None)

    def set_total(self, files: int | None, nbytes: int | None) -> None:
        super().set_total(files, nbytes)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=nbytes, files_total=files)
            self._refresh()

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        super().add(files, nbytes)
        now = time.monotonic()
        if self._bar is not None and now - self._last > 0.1:
            self._last = now
            self._refresh()

    def _refresh(self) -> None:
        """Show the current counters (also the last ones: the bar ends at its total)."""
        if self._bar is not None and self._task is not None:
            c = self.counters
            self._bar.update(self._task, completed=c.bytes_done, files=c.files_done)

    def on_item(self, kind: str, path: str) -> None:
        if self.verbose:
            self._print(f"{kind:10} {inert(path)}")

    def on_warning(self, path: str, message: str) -> None:
        if self.json_mode:
            sys.stderr.write(json.dumps({"message_type": "warning", "path": path,
                                         "message": message}) + "\n")
        elif message.startswith(path):
            self._print(f"warning: {inert(message)}")
        else:
            self._print(f"warning: {inert(path)}: {inert(message)}")

    def on_info(self, message: str) -> None:
        if self.json_mode:
            sys.stderr.write(json.dumps({"message_type": "info", "message": message}) + "\n")
        elif not self.quiet or any(w in message.lower() for w in _PROBLEM_WORDS):
            self._print(inert(message))

    def on_status(self, message: str) -> None:
        if self.live:
            self._print(inert(message))

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            sys.stderr.write(line + "\n")

    def close(self) -> None:
        """Stop and clear the bar (idempotent); stdout is the plain stream again."""
        if self._bar is not None:
            self._refresh()  # the last frame shows the final counts, not a stale 0.1 s-old one
            bar, self._bar = self._bar, None
            if isinstance(sys.stdout, _StdoutGuard):
                sys.stdout = self._saved_stdout
            self._task = None
            bar.stop()


def _columns() -> list[Any]:
    """The bar's count, size and speed columns, in binary units (rich loads only here)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class CountColumn(ProgressColumn):
        """'12/40 files'."""

        def render(self, task: Any) -> Text:
            n, total = task.fields.get("files", 0), task.fields.get("files_total")
            word = "file" if (total or n) == 1 else "files"
            return Text(f"{n}/{total} {word}" if total is not None else f"{n} {word}")

    class BytesColumn(ProgressColumn):
        """'3.0 MiB/8.6 MiB'."""

        def render(self, task: Any) -> Text:
            done = human_bytes(task.completed)
            return Text(f"{done}/{human_bytes(task.total)}" if task.total else done)

    class SpeedColumn(ProgressColumn):
        """'1.8 MiB/s'."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{human_bytes(speed)}/s")

    return [CountColumn(), BytesColumn(), SpeedColumn()]
