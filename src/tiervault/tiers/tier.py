"""One tier: its backend, its state and its durable record."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tiervault.errors import IntegrityError, NotFoundError
from tiervault.state.db import TierRecord
from tiervault.storage.base import Backend, FileType, Handle
from tiervault.storage.urls import redact

ONLINE = "online"
OFFLINE = "offline"
UNSYNCHRONIZED = "unsynchronized"
SYNCING = "syncing"

_REV = Handle(FileType.REVISION)
#: The revision file is a decimal number and a newline: anything longer is damage.
MAX_REVISION_FILE = 64


def parse_revision(raw: bytes, where: str) -> int:
    """The integer in a revision file."""
    if len(raw) > MAX_REVISION_FILE:
        raise IntegrityError(f"the revision file on {where} is damaged")
    try:
        value = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError(f"the revision file on {where} is damaged") from None
    if value < 0:
        raise IntegrityError(f"the revision file on {where} is damaged")
    return value


@dataclass
class Tier:
    """A tier of the set. ``record`` is the installation's durable view of it."""

    url: str
    backend: Backend
    record: TierRecord
    state: str = OFFLINE
    revision: int | None = None  # as last read from the tier
    error: str | None = None
    lost: bool = False  # given up (``tier lost``): its content no longer counts

    @property
    def name(self) -> str:
        """A printable name (no password)."""
        return redact(self.url)

    def read_revision(self) -> int | None:
        """The tier's revision; None if the tier holds no revision file."""
        try:
            return parse_revision(self.backend.load(_REV, max_size=MAX_REVISION_FILE), self.name)
        except NotFoundError:
            return None

    def write_revision(self, value: int) -> None:
        """Set the tier's revision file."""
        self.backend.save(_REV, f"{value}\n".encode())
        self.revision = value

    def mark_online(self) -> None:
        """Remember that the tier answered and is current."""
        self.state = ONLINE
        self.error = None
        self.record.last_online = time.time()
        self.record.first_offline = None
