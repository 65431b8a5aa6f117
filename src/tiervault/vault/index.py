"""Index files (which blob lives where) and the in-memory master index."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from tiervault.errors import IntegrityError
from tiervault.vault.idtable import IdTable
from tiervault.vault.pack import MAX_BLOBS_PER_PACK, BlobType, PackEntry

INDEX_AAD = b"tiervault index"
_LIMIT = 1 << 63
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


def _unpack(plain: bytes, what: str) -> tuple[list[Any], list[str]]:
    """An index file's pack list (structure checked) and the files it supersedes."""
    try:
        doc = msgpack.unpackb(plain, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises many types on hostile input
        raise IntegrityError(f"{what} is damaged (not an index)") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise IntegrityError(f"{what} is not a supported index")
    packs_raw, sup = doc.get("packs"), doc.get("supersedes", [])
    if not isinstance(packs_raw, list) or not isinstance(sup, list):
        raise IntegrityError(f"{what} is damaged (structure)")
    for item in packs_raw:
        if not (isinstance(item, list) and len(item) == 2 and _is_id(item[0])
                and isinstance(item[1], list) and len(item[1]) <= MAX_BLOBS_PER_PACK):
            raise IntegrityError(f"{what} is damaged (pack entry)")
    if not all(isinstance(s, str) and len(s) == 64 for s in sup):
        raise IntegrityError(f"{what} is damaged (supersedes)")
    return packs_raw, sup


def decode_index(plain: bytes, what: str) -> tuple[dict[bytes, list[PackEntry]], list[str]]:
    """Parse an index file's plaintext; IntegrityError on anything unexpected."""
    packs_raw, sup = _unpack(plain, what)
    packs: dict[bytes, list[PackEntry]] = {}
    for pid, ents in packs_raw:
        packs[pid] = [PackEntry(BlobType(e[0]), e[1], e[2], e[3], e[4])
                      for e in (_checked(e, what) for e in ents)]
    return packs, sup


def decode_index_tables(plain: bytes, what: str) -> tuple[dict[bytes, bytes], list[str]]:
    """Like ``decode_index``, but each pack's entries as one table of rows (what
    ``MasterIndex.add_table`` takes): no Python object per blob outlives the call."""
    packs_raw, sup = _unpack(plain, what)
    pack = _ROW.pack
    tables: dict[bytes, bytes] = {}
    for i, (pid, ents) in enumerate(packs_raw):
        tables[pid] = b"".join(pack(*_checked(e, what)) for e in ents)
        packs_raw[i] = None  # let the decoded entries go as we go
    return tables, sup


def _is_id(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) == 32


def _checked(e: Any, what: str) -> list[Any]:
    # Hot: once per blob of every index file loaded. Exact types (no bools).
    if type(e) is list and len(e) == 5:
        t, bid, off, ln, raw = e
        if type(t) is int and 0 <= t <= 1 and type(bid) is bytes and len(bid) == 32 \
                and type(off) is int and type(ln) is int and type(raw) is int \
                and 0 <= off < _LIMIT and 0 <= ln < _LIMIT and 0 <= raw < _LIMIT:
            return e
    raise IntegrityError(f"{what} is damaged (blob entry)")


def rows(entries: Iterable[PackEntry]) -> bytes:
    """Entries as one table of rows (``MasterIndex.add_table``)."""
    pack = _ROW.pack
    return b"".join(pack(int(e.type), e.id, e.offset, e.length, e.raw_length) for e in entries)


#: One blob's row in the master index's per-pack table: type, id, offset, length,
#: raw length (57 bytes, instead of a PackEntry and a tuple of Python objects).
_ROW = struct.Struct("<B32sQQQ")
_TYPES = (BlobType(0), BlobType(1))
_ROW_BITS = (MAX_BLOBS_PER_PACK - 1).bit_length() + 1
_ROW_MASK = (1 << _ROW_BITS) - 1
#: Bytes of one row: a table of n blobs is n * ROW_SIZE bytes long.
ROW_SIZE = _ROW.size


class MasterIndex:
    """Every known blob's location, merged from all index files; thread-safe.

    Compact: a pack's entries are one ``bytes`` table of fixed-size rows, and an
    ``IdTable`` maps a blob id to its (pack number, row) with no Python object per
    blob: a blob costs its 57-byte row and 16-48 bytes of table (a dict of ids
    cost ~210 bytes). ``lookup`` builds the PackEntry when asked.
    """

    def __init__(self) -> None:
        self._pack_ids: list[bytes] = []
        self._pack_no: dict[bytes, int] = {}
        self._tables: list[bytes] = []
        self._where = IdTable(self._id_of)  # blob id -> pack number << _ROW_BITS | row
        self._lock = threading.Lock()

    def _id_of(self, v: int) -> bytes:
        off = (v & _ROW_MASK) * _ROW.size + 1
        return self._tables[v >> _ROW_BITS][off:off + 32]

    def reserve(self, blobs: int) -> None:
        """Make room for ``blobs`` blobs in all (saves regrowing while loading)."""
        with self._lock:
            self._where.reserve(blobs)

    def add_pack(self, pack_id: bytes, entries: list[PackEntry]) -> None:
        """Record the blobs of one pack (again: its new entries replace the old)."""
        self.add_table(pack_id, rows(entries))

    def add_table(self, pack_id: bytes, table: bytes) -> None:
        """``add_pack`` for entries already in rows (``rows``, ``decode_index_tables``)."""
        with self._lock:
            no = self._pack_no.get(pack_id)
            if no is not None:
                # Rare (check --repair): the pack's old blobs may now be elsewhere,
                # so the id table is rebuilt, first location found winning as ever.
                self._tables[no] = table
                where = IdTable(self._id_of, len(self._where))
                for other, rows_ in enumerate(self._tables):
                    _add_rows(where, other, rows_)
                self._where = where
                return
            no = len(self._pack_ids)
            self._pack_ids.append(pack_id)
            self._tables.append(table)
            self._pack_no[pack_id] = no
            _add_rows(self._where, no, table)

    def entries_of(self, pack_id: bytes) -> list[PackEntry]:
        """The entries recorded for one pack (empty if none)."""
        with self._lock:
            no = self._pack_no.get(pack_id)
            table = self._tables[no] if no is not None else b""
        return [PackEntry(_TYPES[t], bid, off, ln, raw)
                for t, bid, off, ln, raw in _ROW.iter_unpack(table)]

    def lookup(self, blob_id: bytes) -> tuple[bytes, PackEntry] | None:
        """The pack and entry holding ``blob_id``, or None."""
        v = self._where.get(blob_id)
        if v < 0:
            return None
        no = v >> _ROW_BITS
        t, bid, off, ln, raw = _ROW.unpack_from(self._tables[no], (v & _ROW_MASK) * _ROW.size)
        return self._pack_ids[no], PackEntry(_TYPES[t], bid, off, ln, raw)

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and self._where.get(blob_id) >= 0

    def __len__(self) -> int:
        return len(self._where)

    def packs(self) -> dict[bytes, list[PackEntry]]:
        """The pack table (built on each call: callers hold it only while they work)."""
        with self._lock:
            pairs = list(zip(self._pack_ids, self._tables, strict=True))
        return {pid: [PackEntry(_TYPES[t], bid, off, ln, raw)
                      for t, bid, off, ln, raw in _ROW.iter_unpack(table)]
                for pid, table in pairs}

    def blob_ids(self) -> Iterator[bytes]:
        """Every indexed blob id."""
        with self._lock:
            where = self._where
            ids = [self._id_of(v) for v in where.values()]
        return iter(ids)


def _add_rows(where: IdTable, no: int, table: bytes) -> None:
    base = no << _ROW_BITS
    size = _ROW.size
    for i in range(len(table) // size):
        off = i * size + 1
        where.setdefault(table[off:off + 32], base | i)
