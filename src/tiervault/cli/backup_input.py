"""Reading what ``backup`` (and ``set add``) is given: pattern files, path lists, sizes."""

from __future__ import annotations

import glob
import os
import re
import sys

from tiervault.errors import UsageError

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """restic's sizes: a number with an optional k, m, g or t (powers of 1024;
    ``KiB``/``KB`` and so on are accepted and mean the same)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise UsageError(f"--exclude-larger-than {text!r}: give a size such as 500k, 10M, 2G")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from None


def read_patterns(files: tuple[str, ...] | list[str], option: str) -> list[str]:
    """Patterns from files, one a line; empty lines and '#' comments skipped."""
    out: list[str] = []
    for path in files:
        text = _read(path, option).decode("utf-8", "surrogateescape")
        out += [ln.strip() for ln in text.splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    return out


def read_files_from(files: tuple[str, ...], verbatim: tuple[str, ...], raw: tuple[str, ...],
                    warn: list[str]) -> list[str]:
    """Paths from ``--files-from`` (one glob pattern a line, '#' comments; a pattern
    that matches nothing is skipped with a warning, as restic does),
    ``--files-from-verbatim`` (one path a line, taken as is) and ``--files-from-raw``
    (NUL-separated, any bytes). ``-`` reads standard input."""
    out: list[str] = []
    for path in files:
        text = _read(path, "--files-from").decode("utf-8", "surrogateescape")
        for ln in text.splitlines():
            ln = ln.strip()
            if not ln or ln.startswith("#"):
                continue
            hits = sorted(glob.glob(ln)) if glob.has_magic(ln) else \
                ([ln] if os.path.lexists(ln) else [])
            if not hits:
                warn.append(f"{path}: pattern {ln!r} does not match any file; skipped")
            out += hits
    for path in verbatim:
        text = _read(path, "--files-from-verbatim").decode("utf-8", "surrogateescape")
        out += [ln for ln in text.split("\n") if ln]
    for path in raw:
        out += [os.fsdecode(p) for p in _read(path, "--files-from-raw").split(b"\0") if p]
    return out
