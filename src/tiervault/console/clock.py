"""The console's clock: real UTC time plus an offset that tests can move.

The offset (seconds, as text) is read from the file named by the environment variable
``TIERVAULT_CONSOLE_CLOCK_FILE`` on every call, so a test moves a running console's
clock by rewriting that file; no file (or no variable) means no offset.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

CLOCK_FILE_ENV = "TIERVAULT_CONSOLE_CLOCK_FILE"


class Clock:
    """``now()`` is aware UTC time, shifted by the offset file when there is one."""

    def __init__(self, offset_file: str | os.PathLike[str] | None = None) -> None:
        self.offset_file = Path(offset_file) if offset_file else None

    @classmethod
    def from_env(cls) -> Clock:
        """The clock configured by ``TIERVAULT_CONSOLE_CLOCK_FILE`` (read once, at the edge)."""
        return cls(os.environ.get(CLOCK_FILE_ENV) or None)

    def offset(self) -> float:
        """Seconds added to real time (0 when the file is absent or unreadable)."""
        if self.offset_file is None:
            return 0.0
        try:
            return float(self.offset_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        return datetime.now(UTC) + timedelta(seconds=self.offset())


def iso(t: datetime | None) -> str | None:
    """ISO 8601 with offset (UTC), or None."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat()


def parse_iso(text: str | None) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (naive text is taken as UTC); None for None.

    Raises ValueError for text that is not a time.
    """
    if text is None:
        return None
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)
