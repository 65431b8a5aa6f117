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
- Every ``load`` is bounded: by ``length`` when given, else by ``max_size``
  or the type's bound (``MAX_SIZE``). The bound is checked against the size
  the server declares before reading and enforced while reading; a file past
  it raises ``IntegrityError`` (reads fall through to the next tier), so a
  hostile server can never make the client read gigabytes.
- ``list`` yields every file of a type, never temporary files.
- ``save`` writes to a temporary name carrying ``WRITER_TOKEN`` (see
  ``temp_name``); ``remove_temporaries`` removes the temporaries of writers
  that are no longer alive (docs/format.md, "Temporary files").
- A backend whose root is missing is unreachable (``TransientError``);
  only ``create`` makes the root.
"""

from __future__ import annotations

import builtins
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from tiervault.errors import IntegrityError, UsageError

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
    ARCHIVE = "archives"  # archives/<snapshot id>: that snapshot is archived
    #: The authenticated manifest (sealed; written at the end of each write session).
    MANIFEST = "manifest"


#: Immutable files whose name is the BLAKE3 hash of their stored bytes.
CONTENT_NAMED = frozenset({FileType.PACK, FileType.INDEX, FileType.SNAPSHOT})


#: Types stored as a single file at the vault root (name is the type's value).
SINGLETONS = frozenset({FileType.CONFIG, FileType.REVISION, FileType.MANIFEST})
#: Files that may be replaced in place; everything else is immutable.
MUTABLE = frozenset({FileType.CONFIG, FileType.REVISION, FileType.KEY, FileType.MANIFEST})

#: The most bytes a whole-file ``load`` of each type may return (docs/format.md).
#: Packs are ``pack_size_mib`` (default 8) plus one chunk and their header.
MAX_SIZE: dict[FileType, int] = {
    FileType.REVISION: 64,
    FileType.CONFIG: 64 * 1024,
    FileType.KEY: 64 * 1024,
    FileType.ARCHIVE: 64 * 1024,
    FileType.MANIFEST: 64 * 1024 * 1024,
    FileType.SNAPSHOT: 64 * 1024 * 1024,
    FileType.INDEX: 512 * 1024 * 1024,
    FileType.PACK: 1024 * 1024 * 1024,
}

#: Names this process's temporary uploads: a temporary carrying another token
#: belongs to a writer that is gone once this process holds the installation's
#: write lock (only one writer at a time; its lock dies with it). Random per
#: process and never changed, so it is not mutable state.
WRITER_TOKEN = secrets.token_hex(6)
_TMP_SUFFIX = ".tmp"


def read_bound(h: Handle, length: int | None, max_size: int | None) -> int:
    """The most bytes a ``load(h, offset, length, max_size)`` may return."""
    if length is not None:
        if max_size is not None and length > max_size:
            raise UsageError(f"a read of {length} bytes of {h} exceeds its bound {max_size}")
        return length
    bound = MAX_SIZE[h.type]
    return bound if max_size is None else min(bound, max_size)


def too_large(h: Handle, where: str, bound: int, size: int | None = None) -> IntegrityError:
    """The error of a file past its read bound (declared ``size`` if known)."""
    claim = f" (it is {size} bytes)" if size is not None else ""
    return IntegrityError(f"{h} on {where} is larger than its bound of {bound} bytes{claim}: "
                          "damaged or planted, not read")


def temp_name(final: str) -> str:
    """The hidden temporary name a save of the file ``final`` uploads to first."""
    return f".{final}.{WRITER_TOKEN}.{secrets.token_hex(4)}{_TMP_SUFFIX}"


def is_temporary(name: str) -> bool:
    """Whether a directory entry is a temporary upload (ours or another writer's)."""
    return name.startswith(".") and name.endswith(_TMP_SUFFIX) and len(name) > 5


def is_dead_temporary(name: str) -> bool:
    """A temporary that no live writer will rename: not this process's.

    Names written before tokens existed (``.<name>.<8 hex>.tmp``) count as
    dead too, as does any other ``.*.tmp`` in a vault directory.
    """
    if not is_temporary(name):
        return False
    parts = name[1:-len(_TMP_SUFFIX)].rsplit(".", 2)
    return not (len(parts) == 3 and parts[1] == WRITER_TOKEN)


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
            for t in (FileType.KEY, FileType.INDEX, FileType.SNAPSHOT, FileType.ARCHIVE):
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
    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        """Return ``length`` bytes (all if None) of ``h`` from ``offset``.

        A whole-file read returns at most ``max_size`` bytes (default and
        upper limit: ``MAX_SIZE`` of the type); more is ``IntegrityError``.
        """

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
                      length: int | None = None, max_size: int | None = None) -> T:
        """Load and decode; ``decode`` raises ``IntegrityError`` on bad data.

        A single backend just applies it; the tier set overrides this to fall
        through to the next tier when a copy fails authentication.
        """
        return decode(self.load(h, offset, length, max_size))

    def remove_temporaries(self) -> builtins.list[str]:
        """Remove leftover temporary uploads of writers no longer alive; their paths.

        Call only while holding the installation's write lock. Every backend
        that saves through temporaries (or S3 multipart uploads) overrides
        this; wrappers pass it on.
        """
        return []

    def probe(self) -> None:
        """Raise ``TransientError`` unless the location is reachable now."""
        self.stat(Handle(FileType.CONFIG))

    def close(self) -> None:
        """Release connections; the backend may be used again afterwards."""
        return None
