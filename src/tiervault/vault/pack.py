"""Pack files: many sealed blobs, then a sealed header listing them.

Layout: ``blob_0 .. blob_n-1 | sealed header | u32 LE length of sealed header``.
The header lets ``check --repair`` rebuild a lost index from the packs alone.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from tiervault.errors import IntegrityError
from tiervault.vault.crypto import OVERHEAD, MasterKey

_MAGIC = b"TVPH\x01"
_ENTRY = struct.Struct("<B32sQII")  # type, id, offset, length, raw length
_TRAILER = struct.Struct("<I")
_HEADER_AAD = b"tiervault pack header"
#: A pack never holds more blobs than this (bounds what a hostile header can claim).
MAX_BLOBS_PER_PACK = 1 << 20


class BlobType(IntEnum):
    """What a blob holds."""

    DATA = 0
    TREE = 1


def blob_aad(t: BlobType, blob_id: bytes) -> bytes:
    """Associated data binding a sealed blob to its type and id."""
    return bytes((int(t),)) + blob_id


class PackEntry(NamedTuple):
    """Where one blob sits in a pack (a named tuple: millions are made quickly)."""

    type: BlobType
    id: bytes
    offset: int
    length: int
    raw_length: int


class PackBuilder:
    """Accumulates sealed blobs in memory and finishes them into a pack file."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.entries: list[PackEntry] = []

    def add(self, t: BlobType, blob_id: bytes, sealed: bytes | memoryview,
            raw_length: int) -> None:
        """Append one sealed blob."""
        self.entries.append(PackEntry(t, blob_id, len(self.buf), len(sealed), raw_length))
        self.buf += sealed

    def __len__(self) -> int:
        return len(self.buf)

    def finish(self, key: MasterKey) -> bytearray:
        """The complete pack file (the builder's own buffer: no copy)."""
        header = bytearray(_MAGIC)
        header += struct.pack("<I", len(self.entries))
        for e in self.entries:
            header += _ENTRY.pack(int(e.type), e.id, e.offset, e.length, e.raw_length)
        sealed = key.seal(bytes(header), _HEADER_AAD)
        self.buf += sealed
        self.buf += _TRAILER.pack(len(sealed))
        return self.buf


def header_length(trailer: bytes, pack_size: int, what: str) -> int:
    """Size of the sealed header from the pack's last 4 bytes, validated."""
    if len(trailer) != _TRAILER.size:
        raise IntegrityError(f"{what} is damaged (no trailer)")
    (n,) = _TRAILER.unpack(trailer)
    if n < OVERHEAD + len(_MAGIC) + 4 or n > pack_size - _TRAILER.size:
        raise IntegrityError(f"{what} is damaged (header length)")
    return int(n)


def parse_header(sealed: bytes, key: MasterKey, pack_size: int, what: str) -> list[PackEntry]:
    """Open and parse a pack header; every entry must lie inside the pack's body."""
    plain = key.open(sealed, _HEADER_AAD, what)
    if not plain.startswith(_MAGIC) or len(plain) < len(_MAGIC) + 4:
        raise IntegrityError(f"{what} is damaged (header magic)")
    (count,) = struct.unpack_from("<I", plain, len(_MAGIC))
    body_end = pack_size - len(sealed) - _TRAILER.size
    if count > MAX_BLOBS_PER_PACK or len(plain) != len(_MAGIC) + 4 + count * _ENTRY.size:
        raise IntegrityError(f"{what} is damaged (header size)")
    entries = []
    for i in range(count):
        t, bid, off, ln, raw = _ENTRY.unpack_from(plain, len(_MAGIC) + 4 + i * _ENTRY.size)
        if t not in (0, 1) or ln < OVERHEAD or off + ln > body_end:
            raise IntegrityError(f"{what} is damaged (header entry {i})")
        entries.append(PackEntry(BlobType(t), bid, off, ln, raw))
    return entries


def trailer_size() -> int:
    """Bytes of the trailing header-length field."""
    return _TRAILER.size
