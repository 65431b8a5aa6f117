"""Property tests of the vault format's building blocks (hypothesis).

Round trips (chunker, packs, trees, indexes, codec, sealing) and robustness:
garbage fed to any decoder of stored data raises ``IntegrityError`` and
nothing else (the CLI turns that into one clear line; anything else would be
a traceback).
"""

from __future__ import annotations

import io
import json
import random
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tiervault.engine.restore import _nonzero_runs
from tiervault.engine.trees import safe_name, split_path
from tiervault.errors import IntegrityError
from tiervault.vault.chunker import Chunker, ChunkerParams
from tiervault.vault.codec import Codec
from tiervault.vault.crypto import OVERHEAD, MasterKey, parse_key_file
from tiervault.vault.index import decode_index, encode_index
from tiervault.vault.pack import (
    _HEADER_AAD,
    BlobType,
    PackBuilder,
    PackEntry,
    header_length,
    parse_header,
    trailer_size,
)
from tiervault.vault.repository import VaultConfig
from tiervault.vault.snapshot import Snapshot
from tiervault.vault.tree import KINDS, Node, decode_tree, encode_tree

KEY = MasterKey(bytes(range(64)))
OTHER_KEY = MasterKey(bytes(range(1, 65)))
SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=8192)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ids = st.binary(min_size=32, max_size=32)
i63 = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
u63 = st.integers(min_value=0, max_value=2**63 - 1)


def _random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# -- chunker ------------------------------------------------------------------------


@FAST
@given(seed=st.integers(0, 2**32), n=st.integers(0, 200_000), cseed=st.integers(0, 2**63 - 1))
def test_chunks_concatenate_to_the_input(seed: int, n: int, cseed: int) -> None:
    data = _random_bytes(seed, n)
    chunks = [bytes(c) for c in Chunker(SMALL, cseed).chunks_of(data)]
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= SMALL.max_size for c in chunks)
    assert all(len(c) >= SMALL.min_size for c in chunks[:-1])


@FAST
@given(data=st.binary(max_size=50_000), cseed=st.integers(0, 2**63 - 1))
def test_chunks_of_arbitrary_bytes(data: bytes, cseed: int) -> None:
    assert b"".join(bytes(c) for c in Chunker(SMALL, cseed).chunks_of(data)) == data


@FAST
@given(seed=st.integers(0, 2**32), n=st.integers(0, 120_000), cseed=st.integers(0, 2**63 - 1))
def test_stream_and_buffer_chunking_agree(seed: int, n: int, cseed: int) -> None:
    """Backup chunks small files from a buffer and big ones from a stream: same cuts."""
    data = _random_bytes(seed, n)
    a = [bytes(c) for c in Chunker(SMALL, cseed).chunks_of(data)]
    b = [bytes(c) for c in Chunker(SMALL, cseed).chunks(io.BytesIO(data))]
    assert a == b


@FAST
@given(seed=st.integers(0, 2**32), cseed=st.integers(0, 2**63 - 1),
       where=st.floats(0.05, 0.95), insert=st.binary(min_size=1, max_size=5000))
def test_boundaries_survive_an_insertion_far_away(seed: int, cseed: int, where: float,
                                                  insert: bytes) -> None:
    data = _random_bytes(seed, 300_000)
    pos = int(len(data) * where)
    edited = data[:pos] + insert + data[pos:]
    old = [bytes(c) for c in Chunker(SMALL, cseed).chunks_of(data)]
    new = set(bytes(c) for c in Chunker(SMALL, cseed).chunks_of(edited))
    # Every chunk that ends before the insertion is kept as is. (One ending exactly at
    # it may move: the chunker decides a cut after looking at the byte that follows.)
    off = 0
    for c in old:
        if off + len(c) < pos:
            assert c in new
        off += len(c)
    # After the edit the cuts fall into step again: only a few chunks are lost
    # (one nearly always; a cascade of a handful now and then, because of min_size).
    lost = [c for c in old if c not in new]
    assert len(lost) <= 16, f"{len(lost)} of {len(old)} chunks changed"


def test_default_parameters_resynchronise_on_a_big_buffer() -> None:
    data = _random_bytes(7, 24 * 1024 * 1024)
    ch = Chunker(ChunkerParams(), 12345)
    old = [bytes(c) for c in ch.chunks_of(data)]
    edited = data[:12_000_000] + b"inserted" + data[12_000_000:]
    new = set(bytes(c) for c in Chunker(ChunkerParams(), 12345).chunks_of(edited))
    assert sum(c not in new for c in old) <= 2
    assert b"".join(old) == data


# -- codec and sealing ---------------------------------------------------------------


@FAST
@given(data=st.one_of(st.binary(max_size=20_000),
                      st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=20),
                                st.integers(1, 3000))),
       aad=st.binary(max_size=64))
def test_codec_round_trip(data: bytes, aad: bytes) -> None:
    codec = Codec(KEY)
    packed = codec.compress(data)
    assert codec.decompress(packed, len(data), "x") == data
    assert codec.decompress(packed, None, "x") == data
    sealed = codec.encode(data, aad)
    assert codec.decode(sealed, aad, len(data), "x") == data
    with pytest.raises(IntegrityError):
        codec.decode(sealed, aad + b"!", len(data), "x")
    with pytest.raises(IntegrityError):
        Codec(OTHER_KEY).decode(sealed, aad, len(data), "x")


@FAST
@given(data=st.binary(max_size=2000), aad=st.binary(max_size=32), pos=st.integers(0),
       bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(data: bytes, aad: bytes, pos: int, bit: int) -> None:
    sealed = bytearray(KEY.seal(data, aad))
    assert KEY.open(bytes(sealed), aad, "x") == data
    sealed[pos % len(sealed)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        KEY.open(bytes(sealed), aad, "x")


@FAST
@given(payload=st.binary(max_size=3000), raw_len=st.one_of(st.none(), st.integers(0, 10_000)))
@example(payload=b"\x01" + b"\x28\xb5\x2f\xfd" + b"\xff" * 20, raw_len=None)
def test_decompress_garbage_raises_integrity_error(payload: bytes, raw_len: int | None) -> None:
    try:
        Codec(KEY).decompress(payload, raw_len, "x")
    except IntegrityError:
        pass


# -- packs ---------------------------------------------------------------------------


blob_specs = st.lists(st.tuples(st.sampled_from(list(BlobType)), ids,
                                st.binary(min_size=OVERHEAD, max_size=300), u63.filter(
                                    lambda x: x < 2**32)),
                      max_size=40)


@FAST
@given(blobs=blob_specs)
def test_pack_header_round_trip(blobs: list[tuple[BlobType, bytes, bytes, int]]) -> None:
    pb = PackBuilder()
    for t, bid, sealed, raw in blobs:
        pb.add(t, bid, sealed, raw)
    data = pb.finish(KEY)
    n = header_length(data[-trailer_size():], len(data), "pack")
    entries = parse_header(data[-trailer_size() - n:-trailer_size()], KEY, len(data), "pack")
    assert entries == pb.entries
    for e, (t, bid, sealed, raw) in zip(entries, blobs, strict=True):
        assert (e.type, e.id, e.raw_length) == (t, bid, raw)
        assert data[e.offset:e.offset + e.length] == sealed


@FAST
@given(plain=st.binary(max_size=400), size=st.integers(0, 2**40))
@example(plain=b"TVPH\x01", size=100)
@example(plain=b"TVPH\x01\x01\x00\x00\x00", size=100)
@example(plain=b"TVPH\x01\x01\x00\x00\x00" + b"\x07" + bytes(32) + bytes(16), size=10**6)
def test_parse_header_garbage_raises_integrity_error(plain: bytes, size: int) -> None:
    """Garbage sealed with the right key (gets past authentication) and unsealed garbage."""
    for sealed in (KEY.seal(plain, _HEADER_AAD), plain):
        try:
            parse_header(sealed, KEY, size, "pack")
        except IntegrityError:
            pass


@FAST
@given(count=st.integers(0, 50), fields=st.lists(st.tuples(st.integers(0, 255), u63, u63, u63),
                                                 max_size=50), size=st.integers(0, 10**7))
def test_parse_header_hostile_entries(count: int, fields: list[tuple[int, int, int, int]],
                                      size: int) -> None:
    plain = b"TVPH\x01" + struct.pack("<I", count)
    for t, off, ln, raw in fields:
        plain += struct.pack("<B32sQII", t, bytes(32), off, ln % 2**32, raw % 2**32)
    try:
        entries = parse_header(KEY.seal(plain, _HEADER_AAD), KEY, size, "pack")
    except IntegrityError:
        return
    for e in entries:
        assert e.offset + e.length <= size


@FAST
@given(trailer=st.binary(max_size=8), size=st.integers(0, 2**40))
def test_header_length_garbage(trailer: bytes, size: int) -> None:
    try:
        n = header_length(trailer, size, "pack")
    except IntegrityError:
        return
    assert 0 < n <= size - trailer_size()


# -- trees -----------------------------------------------------------------------------


xattrs = st.lists(st.lists(st.binary(max_size=20), min_size=2, max_size=2), max_size=4)


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from(KINDS))
    n = Node(name=draw(st.binary(min_size=0, max_size=40)), type=kind)
    for f in ("mode", "uid", "gid", "mtime", "atime", "ctime"):
        if draw(st.booleans()):
            n[f] = draw(i63)
    if kind == "dir":
        n["subtree"] = draw(ids)
    if kind == "file":
        n["size"] = draw(u63)
        n["content"] = draw(st.lists(ids, max_size=5))
        if draw(st.booleans()):
            n["inode"], n["dev"], n["nlink"] = draw(u63), draw(u63), draw(st.integers(2, 99))
        if draw(st.booleans()):
            n["sparse"] = True
    if kind == "symlink":
        n["target"] = draw(st.binary(max_size=100))
    if kind in ("chardev", "blockdev"):
        n["rdev"] = draw(u63)
    if draw(st.booleans()):
        n["xattrs"] = draw(xattrs)
    if draw(st.booleans()):
        n["user"] = draw(st.text(max_size=10))
        n["group"] = draw(st.text(max_size=10))
    return n


@FAST
@given(ns=st.lists(nodes(), max_size=12, unique_by=lambda n: n.name))
def test_tree_round_trip(ns: list[Node]) -> None:
    enc = encode_tree(ns)
    dec = decode_tree(enc, "tree")
    assert dec == sorted(ns, key=lambda n: n.name)
    assert all(isinstance(n, Node) for n in dec)
    # Deterministic: the same entries in any order give the same bytes (dedup).
    assert encode_tree(list(reversed(ns))) == enc


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.binary(max_size=40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), inner, max_size=5),
    max_leaves=30)

tree_keys = st.sampled_from(["name", "type", "mode", "uid", "mtime", "size", "content",
                             "subtree", "target", "xattrs", "user", "group", "rdev", "nlink"])
tree_like = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1", None]),
     "entries": st.lists(st.dictionaries(tree_keys, msgpack_values, max_size=8), max_size=5)})


def _pack(v: object) -> bytes:
    return bytes(msgpack.packb(v, use_bin_type=True))


@FAST
@given(data=st.one_of(st.binary(max_size=500), msgpack_values.map(_pack), tree_like.map(_pack)))
@example(data=b"\xdd\xff\xff\xff\xff")  # array32 claiming 4 billion entries
@example(data=b"\x91" * 100_000 + b"\xc0")  # deep nesting
def test_decode_tree_garbage_raises_integrity_error(data: bytes) -> None:
    try:
        out = decode_tree(data, "tree")
    except IntegrityError:
        return
    for n in out:
        assert isinstance(n.name, bytes) and n.kind in KINDS


# -- indexes ---------------------------------------------------------------------------


entries = st.lists(st.builds(PackEntry, st.sampled_from(list(BlobType)), ids, u63, u63, u63),
                   max_size=10)


@FAST
@given(packs=st.dictionaries(ids, entries, max_size=8),
       sup=st.lists(st.text("0123456789abcdef", min_size=64, max_size=64), max_size=3))
def test_index_round_trip(packs: dict[bytes, list[PackEntry]], sup: list[str]) -> None:
    got, got_sup = decode_index(encode_index(packs, sup), "index")
    assert got == packs
    assert got_sup == sorted(sup)


index_like = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 2]),
     "packs": st.lists(st.lists(msgpack_values | ids | st.lists(
         st.lists(st.integers(-2, 2**64 - 1) | ids | st.booleans(), max_size=6), max_size=3),
         max_size=3), max_size=4),
     "supersedes": st.lists(msgpack_values, max_size=2)})


@FAST
@given(data=st.one_of(st.binary(max_size=500), msgpack_values.map(_pack),
                      index_like.map(_pack)))
def test_decode_index_garbage_raises_integrity_error(data: bytes) -> None:
    try:
        packs, _sup = decode_index(data, "index")
    except IntegrityError:
        return
    for pid, ents in packs.items():
        assert isinstance(pid, bytes) and len(pid) == 32
        assert all(isinstance(e, PackEntry) for e in ents)


# -- JSON documents: snapshots, key files, the vault config ---------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
GOOD_SNAPSHOT = {"v": 1, "time": "2024-01-02T03:04:05+00:00", "hostname": "h",
                 "username": "u", "paths": ["/x"], "tree": "ab" * 32, "tags": [],
                 "excludes": [], "stats": {"files": 1}, "complete": True, "program": "p"}


def _snapshot_like(draw: st.DrawFn) -> bytes:
    doc: dict[str, object] = dict(GOOD_SNAPSHOT)
    for k in draw(st.lists(st.sampled_from([*GOOD_SNAPSHOT, "extra", "id"]), max_size=3)):
        if draw(st.booleans()):
            doc.pop(k, None)
        else:
            doc[k] = draw(json_values)
    return json.dumps(doc).encode()


@FAST
@given(data=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                      st.composite(_snapshot_like)()))
@example(data=DEEP_JSON)
@example(data=b'{"v": 1, "x": ' + DEEP_JSON + b"}")
@example(data=json.dumps(dict(GOOD_SNAPSHOT, time="2024-01-02T03:04:05")).encode())
@example(data=json.dumps(dict(GOOD_SNAPSHOT, stats={"a": 1.5})).encode())
def test_snapshot_decode_garbage_raises_integrity_error(data: bytes) -> None:
    try:
        s = Snapshot.decode(data, "ab" * 32)
    except IntegrityError:
        return
    assert isinstance(s.tree, str) and len(s.tree) == 64
    s.datetime()


def test_snapshot_round_trip() -> None:
    s = Snapshot.decode(json.dumps(GOOD_SNAPSHOT).encode(), "cd" * 32)
    assert Snapshot.decode(s.encode(), "cd" * 32) == s


GOOD_KEY = {"version": 1, "kdf": "scrypt", "n": 1024, "r": 8, "p": 1, "salt": "AA==",
            "nonce": "AA==", "data": "AA=="}


def _key_like(draw: st.DrawFn) -> bytes:
    doc: dict[str, object] = dict(GOOD_KEY)
    for k in draw(st.lists(st.sampled_from(list(GOOD_KEY)), max_size=3)):
        doc[k] = draw(json_values)
    return json.dumps(doc).encode()


@FAST
@given(data=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                      st.composite(_key_like)()))
@example(data=DEEP_JSON)
@example(data=b'{"version": 1, "kdf": "scrypt", "n": 1e400, "r": 8, "p": 1}')
def test_parse_key_file_garbage_raises_integrity_error(data: bytes) -> None:
    try:
        doc = parse_key_file(data, "keys/x")
    except IntegrityError:
        return
    assert isinstance(doc["n"], int) and doc["n"] <= 2**20


GOOD_CONFIG = {"format": "tiervault", "version": 1, "id": "ab" * 16,
               "chunker": {"min": 512, "avg": 1024, "max": 4096}}


def _config_like(draw: st.DrawFn) -> bytes:
    doc = json.loads(json.dumps(GOOD_CONFIG))
    for k in draw(st.lists(st.sampled_from(["format", "version", "id", "chunker", "min", "avg",
                                            "max"]), max_size=3)):
        target = doc["chunker"] if k in ("min", "avg", "max") else doc
        if isinstance(target, dict):  # "chunker" itself may have been replaced already
            target[k] = draw(json_values)
    return json.dumps(doc).encode()


@FAST
@given(data=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                      st.composite(_config_like)()))
@example(data=DEEP_JSON)
@example(data=json.dumps(dict(GOOD_CONFIG, chunker={"min": 1e400, "avg": 1, "max": 1})).encode())
@example(data=json.dumps(dict(GOOD_CONFIG, chunker={"min": "nan", "avg": 1, "max": 1})).encode())
@example(data=json.dumps(dict(GOOD_CONFIG, chunker={"min": float("nan"), "avg": 1024,
                                                      "max": 4096})).encode())
@example(data=json.dumps(dict(GOOD_CONFIG, id=["ab"])).encode())
@example(data=json.dumps(dict(GOOD_CONFIG, version=[1])).encode())
def test_vault_config_garbage_raises_integrity_error(data: bytes) -> None:
    try:
        cfg = VaultConfig.decode(data)
    except IntegrityError:
        return
    assert 64 <= cfg.chunker.min_size <= cfg.chunker.avg_size <= cfg.chunker.max_size
    bytes.fromhex(cfg.id)


def test_vault_config_round_trip() -> None:
    from tiervault.vault.crypto import MasterKey

    cfg = VaultConfig.decode(json.dumps(GOOD_CONFIG).encode())
    key = MasterKey.generate()
    raw = cfg.encode(key)
    again = VaultConfig.decode(raw)
    assert (again.id, again.chunker, again.version) == (cfg.id, cfg.chunker, 2)
    assert again.authentic(key, raw) and not again.authentic(MasterKey.generate(), raw)


# -- path vetting and sparse writes -------------------------------------------------


@FAST
@given(name=st.binary(max_size=20))
def test_safe_name_is_one_harmless_component(name: bytes) -> None:
    if safe_name(name):
        assert name not in (b"", b".", b"..") and b"/" not in name and b"\0" not in name


@FAST
@given(path=st.text(max_size=40))
def test_split_path_never_yields_dot_dot(path: str) -> None:
    assume("\0" not in path)
    try:
        comps = split_path(path)
    except ValueError:
        assert ".." in path
        return
    assert all(c not in (b"", b".", b"..") and b"/" not in c for c in comps)


@FAST
@given(blocks=st.lists(st.sampled_from(["zero", "data", "tail-zero"]), max_size=12),
       head=st.integers(0, 5000), off=st.integers(0, 20_000), seed=st.integers(0, 1000))
def test_nonzero_runs_rebuild_the_data(blocks: list[str], head: int, off: int,
                                       seed: int) -> None:
    rnd = random.Random(seed)
    data = bytes(head)
    for b in blocks:
        if b == "zero":
            data += bytes(4096)
        elif b == "data":
            data += rnd.randbytes(rnd.randint(1, 6000))
        else:
            data += rnd.randbytes(100) + bytes(3000)
    runs = _nonzero_runs(data, off)
    buf = bytearray(len(data))
    for start, end in runs:
        assert 0 <= start < end <= len(data)
        buf[start:end] = data[start:end]
    assert bytes(buf) == data
    # Skipped ranges are whole aligned blocks of zeros (or zero edges).
    assert runs == sorted(runs)
