"""A compact map from 32-byte ids (keyed hashes) to 64-bit values.

The master index holds one entry per blob: a million small files are a
million blobs. A Python dict costs ~150 bytes an entry (the id's bytes object,
an int, the slot); this table keeps two 8-byte words per slot in ``array``s
(open addressing, linear probing, at most 2/3 full), about 16-48 bytes an
entry and no Python object per entry. Ids are uniformly distributed hashes, so
their first 8 bytes are the slot's key; a key match is confirmed against the
full id, which the owner looks up from the value (``id_of``), so a shared
prefix can never make one blob stand for another.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

_MIN_CAPACITY = 1024


def _key(blob_id: bytes) -> int:
    # Never 0: 0 marks an empty slot.
    return int.from_bytes(blob_id[:8], "little") | 1


class IdTable:
    """Id -> value, first value kept (``setdefault``). Lookups may run in any
    thread at the same time as one writer (the owner serialises writers):
    a slot's value is written before its key, and a resize swaps in new arrays
    in one assignment, so a reader sees an entry whole or not at all."""

    def __init__(self, id_of: Callable[[int], bytes], capacity: int = _MIN_CAPACITY) -> None:
        self._id_of = id_of
        self._n = 0
        cap = _MIN_CAPACITY
        while cap < capacity:
            cap *= 2
        self._slots = _empty(cap)

    def __len__(self) -> int:
        return self._n

    def get(self, blob_id: bytes) -> int:
        """The value of ``blob_id``, or -1."""
        keys, vals, mask = self._slots
        k = _key(blob_id)
        i = (k >> 1) & mask
        while True:
            at = keys[i]
            if at == 0:
                return -1
            if at == k:
                v = vals[i]
                if self._id_of(v) == blob_id:
                    return v
            i = (i + 1) & mask

    def setdefault(self, blob_id: bytes, value: int) -> None:
        """Map ``blob_id`` to ``value`` unless it is mapped already."""
        if (self._n + 1) * 3 > len(self._slots[0]) * 2:
            self.reserve(self._n + 1)
        keys, vals, mask = self._slots
        k = _key(blob_id)
        i = (k >> 1) & mask
        while True:
            at = keys[i]
            if at == 0:
                vals[i] = value
                keys[i] = k   # after the value: a reader never sees a half entry
                self._n += 1
                return
            if at == k and self._id_of(vals[i]) == blob_id:
                return
            i = (i + 1) & mask

    def reserve(self, n: int) -> None:
        """Make room for ``n`` entries in all (at most 2/3 full), doubling."""
        keys, vals, _mask = self._slots
        cap = len(keys)
        while n * 3 > cap * 2:
            cap *= 2
        if cap == len(keys):
            return
        nkeys, nvals, nmask = new = _empty(cap)
        for k, v in zip(keys, vals, strict=True):
            if k:
                i = (k >> 1) & nmask
                while nkeys[i]:
                    i = (i + 1) & nmask
                nvals[i] = v
                nkeys[i] = k
        self._slots = new

    def values(self) -> Iterator[int]:
        """Every value (in no particular order); a snapshot of the table."""
        keys, vals, _mask = self._slots
        return (v for k, v in zip(keys, vals, strict=True) if k)


def _empty(capacity: int) -> tuple[array[int], array[int], int]:
    zeros = bytes(8 * capacity)
    return array("Q", zeros), array("Q", zeros), capacity - 1
