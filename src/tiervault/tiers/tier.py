"""One tier: its backend, its state and its durable record."""

from __future__ import annotations

import builtins
import errno
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tiervault.errors import IntegrityError, NotFoundError, PermanentError
from tiervault.state.db import TierRecord
from tiervault.storage.base import Backend, FileInfo, FileType, Handle
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
    #: The tier's last failure was a definite refusal (login, host key, certificate,
    #: permission): retrying cannot help, a person must fix the settings.
    refused: bool = False

    @property
    def name(self) -> str:
        """A printable name (no password)."""
        return redact(self.url)

    def reason(self, e: BaseException) -> str:
        """``e``'s text without a leading copy of this tier's own name.

        Backends start their messages with their location (they are used on
        their own too); every message about a tier already starts with the
        tier's name, so the location would be said twice.
        """
        return without_prefix(str(e), self.name, self.url, self.backend.location)

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
        self.refused = False
        self.record.last_online = time.time()
        self.record.first_offline = None


def without_prefix(text: str, *names: str) -> str:
    """``text`` without a leading ``"<name>: "`` for any of ``names``."""
    for prefix in names:
        if prefix and text.startswith(prefix + ": "):
            return text[len(prefix) + 2:]
    return text


#: What to tell the user about a refusing tier (after the server's own reason).
REFUSED_HINT = ("fix the credentials or the server settings in the URL, config.toml "
                "[credentials] or the environment")


#: What to do about a tier that refuses writes because it is full.
FULL_HINT = ("free space on it (for example 'tiervault forget ... --prune') or move the "
             "tier to a larger disk; the other tiers go on taking the backups")


def refusal_hint(e: BaseException | str) -> str:
    """What to do about a refusal: a full disk is not a login problem."""
    cause = e.__cause__ if isinstance(e, BaseException) else None
    full = getattr(cause, "errno", None) in (errno.ENOSPC, errno.EDQUOT) \
        or "No space left" in str(e) or "Disk quota exceeded" in str(e)
    return FULL_HINT if full else REFUSED_HINT


def is_refusal(e: BaseException) -> bool:
    """A definite refusal (authentication, host key, certificate, permission)."""
    return isinstance(e, PermanentError)


class CreateOnFirstUse(Backend):
    """A tier that could not be created when it was configured (``init --allow-offline``).

    The first operation that reaches it creates the vault directory first, then
    calls ``created`` (which forgets the pending creation), so synchronization
    can fill it like any newly added tier. A tier found already holding a vault
    is refused: it is not the one this installation made.
    """

    def __init__(self, inner: Backend, created: Callable[[], None]) -> None:
        self.inner = inner
        self.location = inner.location
        self._created = created
        self._done = False

    def _ensure(self) -> None:
        if self._done:
            return
        self.inner.create()
        try:
            self.inner.stat(Handle(FileType.CONFIG))
        except NotFoundError:
            pass
        else:
            raise PermanentError(f"{self.location}: already holds a vault that this "
                                 "installation did not create; remove the tier (tiervault tier "
                                 "remove) or empty that location")
        self._done = True
        self._created()

    def create(self) -> None:
        self._ensure()

    def save(self, h: Handle, data: bytes) -> None:
        self._ensure()
        self.inner.save(h, data)

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        self._ensure()
        return self.inner.load(h, offset, length, max_size)

    def remove_temporaries(self) -> builtins.list[str]:
        self._ensure()
        return self.inner.remove_temporaries()

    def stat(self, h: Handle) -> FileInfo:
        self._ensure()
        return self.inner.stat(h)

    def list(self, t: FileType) -> Iterator[FileInfo]:
        self._ensure()
        return self.inner.list(t)

    def remove(self, h: Handle) -> None:
        self._ensure()
        self.inner.remove(h)

    def probe(self) -> None:
        self._ensure()
        self.inner.probe()

    def close(self) -> None:
        self.inner.close()
