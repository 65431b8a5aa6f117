"""The compact master index answers as the dict of PackEntry objects it replaced."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from tiervault.vault.index import MasterIndex
from tiervault.vault.pack import BlobType, PackEntry


def _entry(bid: bytes, i: int, big: bool = False) -> PackEntry:
    scale = 1 << 40 if big else 1
    return PackEntry(BlobType(i % 2), bid, i * 100 * scale, 50 + i, 70 + i * scale)


@settings(max_examples=50, deadline=None)
@given(packs=st.lists(st.lists(st.binary(min_size=32, max_size=32), max_size=20), max_size=8),
       big=st.booleans())
def test_lookups_and_the_pack_table_match_a_plain_model(packs: list[list[bytes]],
                                                        big: bool) -> None:
    idx = MasterIndex()
    model: dict[bytes, tuple[bytes, PackEntry]] = {}
    table: dict[bytes, list[PackEntry]] = {}
    for n, ids in enumerate(packs):
        pid = n.to_bytes(32, "big")
        ents = [_entry(b, i, big) for i, b in enumerate(ids)]
        idx.add_pack(pid, ents)
        table[pid] = ents
        for e in ents:
            model.setdefault(e.id, (pid, e))   # the first location found wins
    assert len(idx) == len(model)
    for bid, want in model.items():
        assert bid in idx and idx.lookup(bid) == want
    assert idx.lookup(os.urandom(32)) is None
    assert idx.packs() == table
    assert sorted(idx.blob_ids()) == sorted(model)


def test_a_pack_added_again_replaces_its_entries() -> None:
    idx = MasterIndex()
    a, b, c = (bytes([i]) * 32 for i in range(3))
    p1, p2 = b"\x01" * 32, b"\x02" * 32
    idx.add_pack(p1, [_entry(a, 0), _entry(b, 1)])
    idx.add_pack(p2, [_entry(b, 5)])
    idx.add_pack(p1, [_entry(c, 3), _entry(a, 4)])   # rebuilt (check --repair)
    assert idx.lookup(a) == (p1, _entry(a, 4))
    assert idx.lookup(c) == (p1, _entry(c, 3))
    assert idx.lookup(b) == (p2, _entry(b, 5))       # only p2 has it now
    assert idx.packs()[p1] == [_entry(c, 3), _entry(a, 4)]
