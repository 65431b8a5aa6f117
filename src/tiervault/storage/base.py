"""The backend contract every storage location keeps.

A backend stores small-to-large immutable files addressed by a typed handle.
Contract (checked by ``tests/backend_contract.py`` against every backend):

- ``save`` is atomic: a reader never observes a partial file; after it
  returns the file is durable and readable (read-after-write).
- ``load`` with ``offset``/``length`` returns exactly that range, or raises
  ``IntegrityError`` if the file is shorter than asked (truncated on disk).
- ``NotFoundError`` means the file is not there; ``TransientError`` means the
  location could not be reached (retry may help); ``PermanentError`` means a
  definite refusal (retry won't help).
- ``list`` yields every file of a type, never temporary files.
- A backend whose root is missing is unreachable (``TransientError``);
  only ``create`` makes the root.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from tiervault.errors import UsageError

T = TypeVar("T")

_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_SIMPLE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class FileType(Enum):
    """The kinds of file in a vault; the value is the directory (or root name)."""

    CONFIG = "config"
    REVISION = "revision"
    KEY = "keys"
    INDEX = "index"
    SNAPSHOT = "snapshots"
    PACK = "data"
    #: The authenticated manifest (sealed; written at the end of each write session).
    MANIFEST = "manifest"


#: Types stored as a single file at the vault root (name is the type's value).
SINGLETONS = frozenset({FileType.CONFIG, FileType.REVISION, FileType.MANIFEST})
#: Files that may be replaced in place; everything else is immutable.
MUTABLE = frozenset({FileType.CONFIG, FileType.REVISION, FileType.KEY, FileType.MANIFEST})


@dataclass(frozen=True)
class Handle:
    """Names one file of a vault: its type and (except singletons) its name."""

    type: FileType
    name: str = ""

    def __post_init__(self) -> None:
        if self.type in SINGLETONS:
            if self.name not in ("", self.type.value):
                raise UsageError(f"{self.type.value} takes no name")
        elif self.type is FileType.KEY:
            if not _SIMPLE.match(self.name):
                raise UsageError(f"invalid key file name {self.name!r}")
        elif not _HEX.match(self.name):
            raise UsageError(f"invalid {self.type.value} file name {self.name!r}")

    def path(self) -> str:
        """The relative path of the file inside the vault (``/`` separated)."""
        if self.type in SINGLETONS:
            return self.type.value
        if self.type is FileType.PACK:
            return f"data/{self.name[:2]}/{self.name}"
        return f"{self.type.value}/{self.name}"

    def __str__(self) -> str:
        return self.path()

    def __lt__(self, other: Handle) -> bool:
        return (self.type.value, self.name) < (other.type.value, other.name)


def handle_from_path(path: str) -> Handle | None:
    """Parse a relative vault path back into a handle; None if it is not one."""
    parts = path.strip("/").split("/")
    try:
        if len(parts) == 1:
            for t in SINGLETONS:
                if parts[0] == t.value:
                    return Handle(t)
            return None
        if parts[0] == "data" and len(parts) == 3 and parts[2][:2] == parts[1]:
            return Handle(FileType.PACK, parts[2])
        if len(parts) == 2:
            for t in (FileType.KEY, FileType.INDEX, FileType.SNAPSHOT):
                if parts[0] == t.value:
                    return Handle(t, parts[1])
    except UsageError:
        return None
    return None


@dataclass(frozen=True)
class FileInfo:
    """What ``stat`` and ``list`` report about a file."""

    handle: Handle
    size: int


class Backend(ABC):
    """One storage location holding a vault. Implementations must be thread-safe."""

    #: A display name with any password removed; safe to print and log.
    location: str = ""

    @abstractmethod
    def create(self) -> None:
        """Create the vault root and its directories (only ``init`` calls this)."""

    @abstractmethod
    def save(self, h: Handle, data: bytes) -> None:
        """Store ``data`` atomically under ``h``, replacing a mutable file."""

    @abstractmethod
    def load(self, h: Handle, offset: int = 0, length: int | None = None) -> bytes:
        """Return ``length`` bytes (all if None) of ``h`` from ``offset``."""

    @abstractmethod
    def stat(self, h: Handle) -> FileInfo:
        """Return size information of ``h`` or raise ``NotFoundError``."""

    @abstractmethod
    def list(self, t: FileType) -> Iterator[FileInfo]:
        """Yield every file of type ``t`` (order unspecified)."""

    @abstractmethod
    def remove(self, h: Handle) -> None:
        """Remove ``h``; raise ``NotFoundError`` if it is not there."""

    def load_verified(self, h: Handle, decode: Callable[[bytes], T], offset: int = 0,
                      length: int | None = None) -> T:
        """Load and decode; ``decode`` raises ``IntegrityError`` on bad data.

        A single backend just applies it; the tier set overrides this to fall
        through to the next tier when a copy fails authentication.
        """
        return decode(self.load(h, offset, length))

    def probe(self) -> None:
        """Raise ``TransientError`` unless the location is reachable now."""
        self.stat(Handle(FileType.CONFIG))

    def close(self) -> None:
        """Release connections; the backend may be used again afterwards."""
        return None
