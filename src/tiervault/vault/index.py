"""Index files (which blob lives where) and the in-memory master index."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from tiervault.errors import IntegrityError
from tiervault.vault.pack import MAX_BLOBS_PER_PACK, BlobType, PackEntry

INDEX_AAD = b"tiervault index"
#: Largest decompressed index file we accept.
MAX_INDEX_SIZE = 512 * 1024 * 1024


def encode_index(packs: dict[bytes, list[PackEntry]], supersedes: Iterable[str] = ()) -> bytes:
    """Serialise an index file's plaintext."""
    doc = {
        "v": 1,
        "packs": [[pid, [[int(e.type), e.id, e.offset, e.length, e.raw_length] for e in ents]]
                  for pid, ents in packs.items()],
        "supersedes": sorted(supersedes),
    }
    return bytes(msgpack.packb(doc, use_bin_type=True))


def decode_index(plain: bytes, what: str) -> tuple[dict[bytes, list[PackEntry]], list[str]]:
    """Parse an index file's plaintext; IntegrityError on anything unexpected."""
    try:
        doc = msgpack.unpackb(plain, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises many types on hostile input
        raise IntegrityError(f"{what} is damaged (not an index)") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise IntegrityError(f"{what} is not a supported index")
    packs_raw, sup = doc.get("packs"), doc.get("supersedes", [])
    if not isinstance(packs_raw, list) or not isinstance(sup, list):
        raise IntegrityError(f"{what} is damaged (structure)")
    packs: dict[bytes, list[PackEntry]] = {}
    for item in packs_raw:
        if not (isinstance(item, list) and len(item) == 2 and _is_id(item[0])
                and isinstance(item[1], list) and len(item[1]) <= MAX_BLOBS_PER_PACK):
            raise IntegrityError(f"{what} is damaged (pack entry)")
        packs[item[0]] = [_entry(e, what) for e in item[1]]
    if not all(isinstance(s, str) and len(s) == 64 for s in sup):
        raise IntegrityError(f"{what} is damaged (supersedes)")
    return packs, sup


def _is_id(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) == 32


def _uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


def _entry(e: Any, what: str) -> PackEntry:
    if not (isinstance(e, list) and len(e) == 5 and e[0] in (0, 1) and _is_id(e[1])
            and all(_uint(x) for x in e[2:])):
        raise IntegrityError(f"{what} is damaged (blob entry)")
    return PackEntry(BlobType(e[0]), e[1], e[2], e[3], e[4])


class MasterIndex:
    """Every known blob's location, merged from all index files; thread-safe."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, tuple[bytes, PackEntry]] = {}
        self._packs: dict[bytes, list[PackEntry]] = {}
        self._lock = threading.Lock()

    def add_pack(self, pack_id: bytes, entries: list[PackEntry]) -> None:
        """Record the blobs of one pack."""
        with self._lock:
            self._packs[pack_id] = entries
            for e in entries:
                self._blobs.setdefault(e.id, (pack_id, e))

    def lookup(self, blob_id: bytes) -> tuple[bytes, PackEntry] | None:
        """The pack and entry holding ``blob_id``, or None."""
        return self._blobs.get(blob_id)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def packs(self) -> dict[bytes, list[PackEntry]]:
        """A copy of the pack table."""
        with self._lock:
            return dict(self._packs)

    def blob_ids(self) -> Iterator[bytes]:
        """Every indexed blob id."""
        return iter(list(self._blobs))
