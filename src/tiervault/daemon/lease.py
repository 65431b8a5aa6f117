"""A command handed over by the CLI, and the installation lock lent to it.

See ``cli/handoff.py`` for the command's side and ``Daemon`` (``daemon.main``)
for the queue it waits in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tiervault.daemon.scheduler import Job


@dataclass
class Lease:
    """The installation lock lent to a command handed over by the CLI."""

    job: Job
    started: datetime
    session_id: int | None = None
    done: bool = False
    exit_code: int | None = None
    note: str | None = None


class History(Protocol):
    """Where sessions are recorded (the state database)."""

    def start_session(self, kind: str, details: dict[str, Any] | None = None) -> int:
        """A new session row."""

    def end_session(self, sid: int, status: str, details: dict[str, Any]) -> None:
        """Its end."""


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` still there?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_status(code: int | None, cancelled: bool) -> str:
    """The session status of a command that exited with ``code``."""
    if cancelled or code == 130:
        return "cancelled"
    return {0: "success", 6: "warnings"}.get(code if code is not None else -1, "failed")
