"""The compact master index answers as the dict of PackEntry objects it replaced."""

from __future__ import annotations

import os
from pathlib import Path
from unittest.mock import patch

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiervault.errors import IntegrityError
from tiervault.storage.local import LocalBackend
from tiervault.vault.blobwriter import BlobWriter
from tiervault.vault.crypto import KdfParams
from tiervault.vault.index import MasterIndex, decode_index, decode_index_tables, encode_index
from tiervault.vault.pack import BlobType, PackEntry
from tiervault.vault.repository import Repository


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


@settings(max_examples=30, deadline=None)
@given(packs=st.lists(st.lists(st.binary(min_size=32, max_size=32), max_size=10), max_size=5),
       big=st.booleans())
def test_index_files_decode_to_the_same_tables_as_to_entries(packs: list[list[bytes]],
                                                             big: bool) -> None:
    """load_index decodes index files straight into rows: the index it builds is
    the one PackEntry lists build, and entries_of gives each pack's entries back."""
    doc = {n.to_bytes(32, "big"): [_entry(b, i, big) for i, b in enumerate(ids)]
           for n, ids in enumerate(packs)}
    plain = encode_index(doc, ["ab" * 32])
    by_entries, sup = decode_index(plain, "index x")
    tables, sup2 = decode_index_tables(plain, "index x")
    assert by_entries == doc and sup == sup2 == ["ab" * 32]
    a, b = MasterIndex(), MasterIndex()
    for pid, ents in by_entries.items():
        a.add_pack(pid, ents)
    for pid, table in tables.items():
        b.add_table(pid, table)
    assert a.packs() == b.packs() == doc
    assert all(b.entries_of(pid) == ents for pid, ents in doc.items())
    assert b.entries_of(b"\xff" * 32) == []


def test_a_damaged_entry_is_refused_by_the_table_decoder_too() -> None:
    good = {b"\x01" * 32: [_entry(b"\x02" * 32, 0)]}
    raw = msgpack.unpackb(encode_index(good), raw=False)
    raw["packs"][0][1][0][0] = 7   # no such blob type
    with pytest.raises(IntegrityError, match="blob entry"):
        decode_index_tables(msgpack.packb(raw, use_bin_type=True), "index x")


def test_a_backup_of_many_small_blobs_writes_bounded_index_files(tmp_path: Path) -> None:
    """Index files close at _INDEX_BLOBS blobs as well as at _INDEX_PACKS packs, so
    one never decodes into unbounded memory; the vault reopens with every blob."""
    (tmp_path / "vault").mkdir()
    backend = LocalBackend(tmp_path / "vault")
    repo = Repository.init(backend, "pw", KdfParams(n=16, r=1, p=1))
    writer = BlobWriter(repo, pack_size=4096, uploads=1)
    ids = [writer.save_blob(BlobType.DATA, os.urandom(40))[0] for _ in range(300)]
    with patch("tiervault.vault.blobwriter._INDEX_BLOBS", 100):
        ids += [writer.save_blob(BlobType.DATA, os.urandom(40))[0] for _ in range(300)]
        writer.flush()
    writer.close()
    sizes = [len(repo.read_index_file(n)) for n in writer.index_names]
    assert len(writer.index_names) >= 3, sizes
    again = Repository.open(backend, "pw")
    assert all(bid in again.index for bid in ids)
