"""Fuzzing every parser of a vault file: hostile bytes raise ``IntegrityError``, nothing else.

A vault lives on servers we do not control, so every byte read back is hostile
until authenticated, and even authenticated data may come from a buggy or
malicious writer that holds the key. Each parser below is driven by hypothesis
with a mix of

- random bytes,
- mutations of valid encodings (bit flips, truncations, insertions,
  deletions, overwrites, "interesting" u8/u32/u64 values written over length
  fields, duplicated slices),
- structure-aware mutations (the decoded msgpack/JSON document with a node
  replaced, removed or added, then re-encoded, then maybe byte-mutated),
- crafted bombs: msgpack headers declaring 4 billion array/map/bin/str/ext
  elements, nesting 100,000 levels deep, JSON nested 100,000 deep, zstd
  frames declaring up to 2^64-1 bytes of content (header only, RLE blocks,
  no content size, skippable frames), pack headers claiming 2^20 entries or a
  4 GiB header.

Sealed files (index, snapshot, tree blob, pack header) are fuzzed twice: as
ciphertext (mutated sealed bytes: authentication must fail cleanly) and as
hostile *plaintext* sealed with the real ``MasterKey`` (it gets past
authentication, so the decompressor and the decoder see it), through the same
code the product uses (``Repository.read_index_file``, ``load_snapshot``,
``TreeReader`` over ``load_blob``, ``header_length``/``parse_header``,
``Codec.decompress``). A parser may only return a well-formed result or raise
``IntegrityError`` (``unwrap_key`` also ``WrongKeyError``: a damaged
ciphertext and a wrong passphrase are indistinguishable); a hang is caught by
hypothesis' deadline, and ``tracemalloc`` bounds the peak allocation of the
crafted "allocation bombs" (< 64 MiB each).

Small garbage inputs per decoder are in ``test_properties.py``; these are the
heavier mutation-based runs. The normal suite runs ``NORMAL`` (300 examples per
parser); ``-m slow`` runs ``SLOW`` (10,000 per parser).

Slow run, done once (2026-11-25, 2-core VM shared with other test runs,
``pytest -m slow -s tests/test_fuzz_parsers.py``): 10,000 cases for each of
the 12 parsers (120,000 in all), no failure, 806 s wall clock (4 min 48 s of
CPU). Cases and seconds per parser: key_file_parse 10,000 / 67 s,
key_file_unwrap 10,000 / 68 s, config 10,000 / 80 s, index_plain 10,000 / 48 s,
index_sealed 10,000 / 52 s, tree_plain 10,000 / 103 s, tree_sealed 10,000 /
91 s, snapshot_plain 10,000 / 95 s, snapshot_sealed 10,000 / 56 s, pack
10,000 / 23 s, pack_header_sealed 10,000 / 75 s, codec 10,000 / 45 s.

Found while writing this (fixed in the parser modules): JSON nested deeper
than the recursion limit raised ``RecursionError`` from key files and
snapshots; a 20-byte zstd frame declaring 500 MiB made ``Codec.decompress``
allocate 500 MiB (now streamed above 16 MiB); key files could ask scrypt for
16 GiB and ~8000x the default work (n=2^22, r=32, p=16), now bounded to 1 GiB
and 128x. Open: the vault config accepts chunker sizes the chunker refuses
(``test_config_chunker_bounds_match_the_chunker``, xfail).
"""

from __future__ import annotations

import copy
import json
import os
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from tiervault.engine.trees import TreeReader
from tiervault.errors import IntegrityError, NotFoundError, WrongKeyError
from tiervault.storage.base import Backend, FileInfo, FileType, Handle
from tiervault.vault.chunker import Chunker, ChunkerParams
from tiervault.vault.codec import MAX_BLOB, Codec
from tiervault.vault.crypto import (
    OVERHEAD,
    KdfParams,
    MasterKey,
    parse_key_file,
    unwrap_key,
    wrap_key,
)
from tiervault.vault.index import INDEX_AAD, MAX_INDEX_SIZE, decode_index, encode_index
from tiervault.vault.pack import (
    _ENTRY,
    _HEADER_AAD,
    MAX_BLOBS_PER_PACK,
    BlobType,
    PackBuilder,
    PackEntry,
    blob_aad,
    header_length,
    parse_header,
    trailer_size,
)
from tiervault.vault.repository import Repository, VaultConfig, content_name, read_config
from tiervault.vault.snapshot import SNAPSHOT_AAD, Snapshot
from tiervault.vault.tree import KINDS, Node, decode_tree, encode_tree

# -- settings "profiles" -------------------------------------------------------------------

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
           HealthCheck.filter_too_much]
#: The normal suite: a few hundred cases per parser (about 1-3 s each).
NORMAL = settings(max_examples=int(os.environ.get("TV_FUZZ_EXAMPLES", "300")),
                  deadline=timedelta(seconds=3), suppress_health_check=_HEALTH,
                  database=None)
#: ``-m slow``: the 10,000 cases per parser the robustness requirement asks for.
SLOW = settings(NORMAL, max_examples=10_000)
#: Peak allocation allowed while parsing one crafted bomb.
MEMORY_BOUND = 64 << 20

KEY = MasterKey(bytes(range(64)))
CODEC = Codec(KEY)
PASSPHRASE = "fuzz passphrase"
CONFIG = VaultConfig("ab" * 16, 1, ChunkerParams())

# -- an in-memory backend, so the product's own load paths run -----------------------------


class MemoryBackend(Backend):
    """A dict of files; enough of the contract for the repository's read paths."""

    location = "memory"

    def __init__(self) -> None:
        self.files: dict[Handle, bytes] = {}

    def create(self) -> None:
        return None

    def save(self, h: Handle, data: bytes) -> None:
        self.files[h] = bytes(data)

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        try:
            data = self.files[h]
        except KeyError:
            raise NotFoundError(f"{h} not found") from None
        end = len(data) if length is None else offset + length
        if end > len(data):
            raise IntegrityError(f"{h} is shorter than expected")
        return data[offset:end]

    def stat(self, h: Handle) -> FileInfo:
        if h not in self.files:
            raise NotFoundError(f"{h} not found")
        return FileInfo(h, len(self.files[h]))

    def list(self, t: FileType) -> Iterator[FileInfo]:
        return iter([FileInfo(h, len(d)) for h, d in self.files.items() if h.type is t])

    def remove(self, h: Handle) -> None:
        self.files.pop(h)


def _repo(backend: Backend) -> Repository:
    return Repository(backend, KEY, CONFIG, "fuzz")


# -- valid encodings (the seeds of the mutations) ----------------------------------------

ID = bytes(range(32))
ID2 = bytes(range(32, 64))


def _seed_nodes() -> list[Node]:
    return [
        Node(name=b"file", type="file", mode=0o644, uid=0, gid=0, user="root", group="root",
             mtime=1_700_000_000_000_000_000, atime=1, ctime=2, size=12, content=[ID, ID2]),
        Node(name=b"dir", type="dir", mode=0o755, uid=1, gid=1, mtime=3, subtree=ID2),
        Node(name=b"link", type="symlink", mode=0o777, uid=0, gid=0, mtime=4,
             target=b"../file", xattrs=[[b"user.a", b"1"]]),
        Node(name=b"hard", type="file", mode=0o600, uid=0, gid=0, mtime=5, size=0,
             content=[], inode=42, dev=7, nlink=2, sparse=True),
        Node(name=b"dev", type="chardev", mode=0o600, uid=0, gid=0, mtime=6, rdev=259),
    ]


SEED_TREE_DOC: dict[str, Any] = {"v": 1, "entries": [dict(n) for n in _seed_nodes()]}
SEED_TREE = encode_tree(_seed_nodes())
SEED_INDEX = encode_index(
    {ID: [PackEntry(BlobType.DATA, ID2, 0, 100, 72), PackEntry(BlobType.DATA, ID, 100, 60, 30)],
     ID2: [PackEntry(BlobType.TREE, bytes(32), 0, 50, 20)]},
    supersedes={"cd" * 32})
SEED_INDEX_DOC: dict[str, Any] = msgpack.unpackb(SEED_INDEX, raw=False)
SEED_SNAPSHOT_OBJ = Snapshot(time="2026-11-25T10:00:00.123456+01:00", hostname="host",
                             username="user", paths=["/home/u", "/etc"], tree="ef" * 32,
                             tags=["daily"], excludes=["*.tmp"],
                             stats={"files_new": 3, "bytes_added": 100}, complete=True,
                             program="tiervault 0.1.0")
SEED_SNAPSHOT = SEED_SNAPSHOT_OBJ.encode()
SEED_SNAPSHOT_DOC: dict[str, Any] = json.loads(SEED_SNAPSHOT)
# A cheap scrypt (n=16) so unwrapping thousands of mutants stays fast.
SEED_KEYFILE = wrap_key(KEY, PASSPHRASE, KdfParams(n=16, r=1, p=1))
SEED_KEYFILE_DOC: dict[str, Any] = json.loads(SEED_KEYFILE)
SEED_CONFIG = CONFIG.encode(KEY)
SEED_CONFIG_DOC: dict[str, Any] = json.loads(SEED_CONFIG)


def _pack_file(nblobs: int) -> bytes:
    pb = PackBuilder()
    for i in range(nblobs):
        plain = bytes([i]) * (50 + 30 * i)
        bid = KEY.blob_id(plain)
        pb.add(BlobType.DATA, bid, CODEC.encode(plain, blob_aad(BlobType.DATA, bid)), len(plain))
    return pb.finish(KEY)


SEED_PACKS = [_pack_file(0), _pack_file(1), _pack_file(3)]

# -- crafted inputs ---------------------------------------------------------------------------


def zstd_declaring(size: int, payload: bytes = b"hello", checksum: bool = False) -> bytes:
    """A single-segment zstd frame whose header declares ``size`` bytes; one raw block."""
    fhd = (3 << 6) | (1 << 5) | (4 if checksum else 0)
    block = 1 | (0 << 1) | (len(payload) << 3)  # last block, raw
    out = struct.pack("<IB", 0xFD2FB528, fhd) + struct.pack("<Q", size)
    out += block.to_bytes(3, "little") + payload
    return out + (b"\0\0\0\0" if checksum else b"")


def zstd_rle(declared: int, blocks: list[int]) -> bytes:
    """A frame declaring ``declared`` bytes made of RLE blocks of the given sizes."""
    out = struct.pack("<IB", 0xFD2FB528, (3 << 6) | (1 << 5)) + struct.pack("<Q", declared)
    for i, n in enumerate(blocks):
        last = 1 if i == len(blocks) - 1 else 0
        out += (last | (1 << 1) | (n << 3)).to_bytes(3, "little") + b"\0"
    return out


def zstd_windowed(size_flag: int, window: int, fcs: bytes, payload: bytes) -> bytes:
    """A frame with a window descriptor and an arbitrary frame-content-size field."""
    out = struct.pack("<IBB", 0xFD2FB528, (size_flag & 3) << 6, window & 0xFF) + fcs
    return out + (1 | (len(payload) << 3)).to_bytes(3, "little") + payload


U32_MAX = 2**32 - 1
MSGPACK_BOMBS = [
    b"\xdd\xff\xff\xff\xff",  # array32: 4 billion elements
    b"\xdd\xff\xff\xff\xff" + b"\xc0" * 64,
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xdf\xff\xff\xff\xff" + b"\xa1a\xc0" * 32,
    b"\xc6\xff\xff\xff\xff" + b"x" * 64,  # bin32: 4 GiB
    b"\xdb\xff\xff\xff\xff" + b"x" * 64,  # str32
    b"\xc9\xff\xff\xff\xff\x01" + b"x" * 64,  # ext32
    b"\xdc\xff\xff" + b"\xc0" * 10,  # array16 cut short
    b"\x91" * 100_000 + b"\xc0",  # arrays nested 100,000 deep
    b"\x81\xa1a" * 50_000 + b"\xc0",  # maps nested 50,000 deep
    b"\x82\xa1v\x01\xa7entries\xdd\xff\xff\xff\xff",  # a tree claiming 4 billion entries
    b"\x82\xa1v\x01\xa5packs\x91\x92\xc4\x20" + bytes(32) + b"\xdd\xff\xff\xff\xff",
    b"\xd7\xff" + b"\xff" * 8,  # timestamp ext with an impossible nanosecond field
    b"\xc7\x03\xff\x00\x00\x00",  # timestamp ext of a bad length
]
JSON_BOMBS = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"version": 1, "kdf": "scrypt", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b"1" * 60_000,  # an integer with 60,000 digits
    b'{"n": ' + b"9" * 5000 + b"}",
    b'"' + b"\\u0000" * 10_000 + b'"',
    b'"\\ud800"',
    b"\xef\xbb\xbf{}",
    "{}".encode("utf-16"),
    b"\x00\x00\x00{",
    b"NaN",
    b"[Infinity, -Infinity, 1e999]",
]
ZSTD_BOMBS = [
    zstd_declaring(2**64 - 2),
    zstd_declaring(2**63),
    zstd_declaring(2**40),
    zstd_declaring(MAX_INDEX_SIZE),
    zstd_declaring(MAX_INDEX_SIZE - 1),
    zstd_declaring(500 << 20),
    zstd_declaring(MAX_BLOB),
    zstd_declaring(MAX_BLOB - 1, checksum=True),
    zstd_declaring(17 << 20),
    zstd_declaring(16 << 20),
    zstd_rle(300 << 20, [128 * 1024] * 4),
    zstd_rle(2**40, [128 * 1024]),
    zstandard.ZstdCompressor(write_content_size=False).compress(b"no size" * 100),
    b"\x50\x2a\x4d\x18\xff\xff\xff\xff" + b"x" * 16,  # skippable frame claiming 4 GiB
    b"\x28\xb5\x2f\xfd",
    b"\x28\xb5\x2f\xfd\xe4" + b"\xff" * 8,
]
INTERESTING_INTS = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, U32_MAX,
                    MAX_BLOBS_PER_PACK, MAX_BLOBS_PER_PACK + 1, 2**63 - 1, 2**63, 2**64 - 1]
INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xC0, 0xC1, 0xC4, 0xC6, 0xC9, 0xCF, 0xD3, 0xDB,
                     0xDC, 0xDD, 0xDE, 0xDF, 0xFF, ord("["), ord("{"), ord('"'), ord("9")]

# -- strategies -------------------------------------------------------------------------------


@st.composite
def byte_mutants(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid encoding with one to four low-level edits."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite",
                                   "extend", "byte", "int", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "byte" and data:
            data[min(pos, len(data) - 1)] = draw(st.sampled_from(INTERESTING_BYTES))
        elif op == "int":
            width, fmt = draw(st.sampled_from([(1, "B"), (2, "H"), (4, "I"), (8, "Q")]))
            order = draw(st.sampled_from("<>"))
            value = draw(st.sampled_from(INTERESTING_INTS)) % (1 << (8 * width))
            data[pos:pos + width] = struct.pack(order + fmt, value)
        elif op == "dup" and data:
            end = draw(st.integers(pos, len(data)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


_ID_LIKE = st.sampled_from([ID, ID2, bytes(31), bytes(33), b""])
_MP_SCALARS = (st.none() | st.booleans() | st.sampled_from(INTERESTING_INTS)
               | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
               | st.binary(max_size=40) | _ID_LIKE | st.sampled_from([*KINDS, "v", "", "/"])
               | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)))
_MP_KEYS = (st.sampled_from(["v", "entries", "packs", "supersedes", "name", "type", "mode",
                             "uid", "gid", "size", "content", "subtree", "target", "xattrs",
                             "user", "group", "rdev", "inode", "dev", "nlink", "mtime"])
            | st.text(max_size=6) | st.binary(max_size=6))
msgpack_values = st.recursive(
    _MP_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_MP_KEYS, inner, max_size=4),
    max_leaves=16)

_JSON_SCALARS = (st.none() | st.booleans() | st.sampled_from(INTERESTING_INTS)
                 | st.integers(-(2**200), 2**200) | st.floats() | st.text(max_size=24)
                 | st.sampled_from(["scrypt", "tiervault", "AA==", "ab" * 32, "ab" * 16,
                                    "2026-01-01T00:00:00", "2026-01-01T00:00:00+99:00", ""]))
_JSON_KEYS = st.sampled_from(["v", "version", "kdf", "n", "r", "p", "salt", "nonce", "data",
                              "format", "id", "chunker", "min", "avg", "max", "time", "tree",
                              "paths", "stats", "complete", "tags"]) | st.text(max_size=6)
json_values = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_KEYS, inner, max_size=4),
    max_leaves=16)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def doc_mutants(draw: st.DrawFn, seed: Any, values: st.SearchStrategy[Any],
                keys: st.SearchStrategy[Any]) -> Any:
    """``seed`` (a decoded document) with one to three nodes replaced, removed or added."""
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            if action == "replace":
                doc = draw(values)
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        last = path[-1]
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
        else:
            parent.insert(last, draw(values))
    return doc


def _packb(v: Any) -> bytes:
    return bytes(msgpack.packb(v, use_bin_type=True))


def _dumps(v: Any) -> bytes:
    return json.dumps(v).encode()


def msgpack_inputs(seed: bytes, seed_doc: Any) -> st.SearchStrategy[bytes]:
    """Random, byte-mutated, structure-mutated and bomb inputs for a msgpack decoder."""
    structural = doc_mutants(seed_doc, msgpack_values, _MP_KEYS).map(_packb)
    return st.one_of(
        st.binary(max_size=2048),
        byte_mutants([seed]),
        structural,
        structural.flatmap(lambda b: byte_mutants([b])),
        msgpack_values.map(_packb),
        st.sampled_from(MSGPACK_BOMBS),
        st.tuples(st.sampled_from(MSGPACK_BOMBS), st.integers(0, 64)).map(
            lambda t: seed[:t[1]] + t[0]),
    )


def json_inputs(seed: bytes, seed_doc: Any) -> st.SearchStrategy[bytes]:
    """Random, byte-mutated, structure-mutated and bomb inputs for a JSON decoder."""
    structural = doc_mutants(seed_doc, json_values, _JSON_KEYS).map(_dumps)
    return st.one_of(
        st.binary(max_size=2048),
        byte_mutants([seed]),
        structural,
        structural.flatmap(lambda b: byte_mutants([b])),
        json_values.map(_dumps),
        st.sampled_from(JSON_BOMBS),
    )


zstd_frames = st.one_of(
    st.builds(lambda d, lvl, cs, ck: zstandard.ZstdCompressor(
        level=lvl, write_content_size=cs, write_checksum=ck).compress(d),
        st.binary(max_size=600) | st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8),
                                            st.integers(1, 5000)),
        st.integers(1, 9), st.booleans(), st.booleans()),
    st.builds(zstd_declaring, st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**64 - 2),
              st.binary(max_size=40), st.booleans()),
    st.builds(zstd_rle, st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**40),
              st.lists(st.integers(0, 128 * 1024), min_size=1, max_size=4)),
    st.builds(zstd_windowed, st.integers(0, 3), st.integers(0, 255), st.binary(max_size=8),
              st.binary(max_size=20)),
    st.sampled_from(ZSTD_BOMBS),
)


def codec_payloads(plain: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """What ``Codec.decompress`` may see after authentication: flag byte + body."""
    frames = st.one_of(zstd_frames, zstd_frames.flatmap(lambda f: byte_mutants([f])))
    return st.one_of(
        plain.map(lambda p: b"\x00" + p),
        plain.map(CODEC.compress),
        frames.map(lambda f: b"\x01" + f),
        st.tuples(st.integers(2, 255), st.binary(max_size=64)).map(
            lambda t: bytes([t[0]]) + t[1]),
        st.just(b""),
    )


# -- targets ------------------------------------------------------------------------------------


def _sealed_file(t: FileType, sealed: bytes) -> tuple[MemoryBackend, str]:
    b = MemoryBackend()
    name = content_name(sealed)
    b.save(Handle(t, name), sealed)
    return b, name


def check_key_file_parse(raw: bytes) -> None:
    doc = parse_key_file(raw, "keys/fuzz")
    n, r, p = doc["n"], doc["r"], doc["p"]
    assert all(type(x) is int for x in (n, r, p))
    # What an untrusted key file may cost us: at most 512 MiB and 32x the default work.
    assert n <= 2**20 and 128 * n * r <= 1 << 29 and n * r * p <= 2**25


def check_key_file_unwrap(raw: bytes) -> None:
    try:
        doc = parse_key_file(raw, "keys/fuzz")
    except IntegrityError:
        doc = None
    if doc is not None and doc["n"] * doc["r"] * doc["p"] > 2**12:
        # Legitimately expensive parameters (bounded by check_key_file_parse):
        # running scrypt at that cost thousands of times would test nothing more.
        reject()
    try:
        key = unwrap_key(raw, PASSPHRASE, "keys/fuzz")
    except WrongKeyError:
        return
    assert key.material == KEY.material


def check_config(raw: bytes) -> None:
    for cfg in (VaultConfig.decode(raw), _config_via_backend(raw)):
        c = cfg.chunker
        assert 64 <= c.min_size <= c.avg_size <= c.max_size
        bytes.fromhex(cfg.id)


def _config_via_backend(raw: bytes) -> VaultConfig:
    b = MemoryBackend()
    b.save(Handle(FileType.CONFIG), raw)
    return read_config(b)


def _check_index_result(packs: dict[bytes, list[PackEntry]], sup: list[str] | None) -> None:
    for pid, ents in packs.items():
        assert isinstance(pid, bytes) and len(pid) == 32
        for e in ents:
            assert isinstance(e, PackEntry) and e.type in (BlobType.DATA, BlobType.TREE)
            assert len(e.id) == 32 and min(e.offset, e.length, e.raw_length) >= 0
    if sup is not None:
        assert all(isinstance(s, str) and len(s) == 64 for s in sup)


def check_index_plain(raw: bytes) -> None:
    _check_index_result(*decode_index(raw, "index/fuzz"))


def check_index_sealed(sealed: bytes) -> None:
    b, name = _sealed_file(FileType.INDEX, sealed)
    _check_index_result(_repo(b).read_index_file(name), None)


def _check_nodes(nodes: list[Node]) -> None:
    for n in nodes:
        assert isinstance(n, Node) and isinstance(n.name, bytes) and n.kind in KINDS
        if n.kind == "dir":
            assert isinstance(n["subtree"], bytes) and len(n["subtree"]) == 32


def check_tree_plain(raw: bytes) -> None:
    _check_nodes(decode_tree(raw, "tree fuzz"))


def check_tree_sealed(case: tuple[bytes, bytes, int]) -> None:
    """A tree blob as the restore walks it: index entry -> pack -> decode -> vetted names."""
    sealed, bid, raw_len = case
    b = MemoryBackend()
    pack = b"\0" * 7 + sealed  # not at offset 0, like most blobs
    pid = bytes.fromhex(content_name(pack))
    b.save(Handle(FileType.PACK, pid.hex()), pack)
    repo = _repo(b)
    repo.index.add_pack(pid, [PackEntry(BlobType.TREE, bid, 7, len(sealed), raw_len)])
    nodes = TreeReader(repo).load(bid)
    _check_nodes(nodes)
    assert all(n.name not in (b"", b".", b"..") and b"/" not in n.name for n in nodes)


def check_snapshot_plain(raw: bytes) -> None:
    s = Snapshot.decode(raw, "ab" * 32)
    assert isinstance(s.tree, str) and len(s.tree) == 64 and s.datetime().tzinfo is not None


def check_snapshot_sealed(sealed: bytes) -> None:
    b, name = _sealed_file(FileType.SNAPSHOT, sealed)
    s = _repo(b).load_snapshot(name)
    assert s.id == name and len(s.tree) == 64


def _parse_pack(data: bytes) -> list[PackEntry]:
    """How check, repair and index rebuilding read a pack's header."""
    n = header_length(data[-trailer_size():], len(data), "data/fuzz")
    sealed = data[-trailer_size() - n:-trailer_size()]
    return parse_header(sealed, KEY, len(data), "data/fuzz")


def check_pack(data: bytes) -> None:
    entries = _parse_pack(data)
    body_end = len(data) - trailer_size() - header_length(data[-4:], len(data), "x")
    for e in entries:
        assert e.type in (BlobType.DATA, BlobType.TREE) and len(e.id) == 32
        assert e.length >= OVERHEAD and e.offset + e.length <= body_end


def check_codec(case: tuple[bytes, int | None]) -> None:
    payload, raw_len = case
    out = CODEC.decompress(payload, raw_len, "blob fuzz")
    assert isinstance(out, bytes) and len(out) <= (MAX_BLOB if raw_len is None else raw_len)
    if raw_len is not None:
        assert len(out) == raw_len


# -- strategies per target --------------------------------------------------------------------

index_plain = msgpack_inputs(SEED_INDEX, SEED_INDEX_DOC)
tree_plain = msgpack_inputs(SEED_TREE, SEED_TREE_DOC)
snapshot_plain = json_inputs(SEED_SNAPSHOT, SEED_SNAPSHOT_DOC)


def sealed_inputs(plain: st.SearchStrategy[bytes], aad: bytes,
                  seed_plain: bytes) -> st.SearchStrategy[bytes]:
    """Hostile plaintext sealed with the real key, and mutated ciphertext of a valid file."""
    valid = CODEC.encode(seed_plain, aad)
    return st.one_of(
        codec_payloads(plain).map(lambda p: KEY.seal(p, aad)),
        byte_mutants([valid, KEY.seal(b"\x00" + seed_plain, aad)]),
        st.binary(max_size=512),
    )


@st.composite
def tree_blobs(draw: st.DrawFn) -> tuple[bytes, bytes, int]:
    """(sealed blob, its id, its raw length in the index) for a hostile tree plaintext."""
    plain = draw(tree_plain)
    if draw(st.integers(0, 3)):
        payload = draw(st.sampled_from([b"\x00" + plain, CODEC.compress(plain)]))
        bid, raw_len = KEY.blob_id(plain), len(plain)
        if not draw(st.integers(0, 4)):
            raw_len = draw(st.sampled_from(INTERESTING_INTS[:11]) | st.integers(0, 2**32))
    else:
        payload = draw(codec_payloads(st.just(plain)))
        bid = draw(st.sampled_from([KEY.blob_id(plain), ID]))
        raw_len = draw(st.sampled_from(INTERESTING_INTS[:11]) | st.integers(0, 2**32))
    aad_id = bid if draw(st.integers(0, 9)) else ID2
    sealed = KEY.seal(payload, blob_aad(BlobType.TREE, aad_id))
    if not draw(st.integers(0, 9)):
        sealed = draw(byte_mutants([sealed]))
    return sealed, bid, raw_len


@st.composite
def hostile_headers(draw: st.DrawFn) -> bytes:
    """A pack whose header is hostile but sealed with the right key."""
    magic = draw(st.sampled_from([b"TVPH\x01", b"TVPH\x01", b"TVPH\x02", b"TVP", b""]))
    entries = draw(st.lists(st.tuples(
        st.integers(0, 255), st.binary(min_size=32, max_size=32),
        st.sampled_from(INTERESTING_INTS) | st.integers(0, 4096),
        st.sampled_from(INTERESTING_INTS[:11]) | st.integers(0, 4096),
        st.sampled_from(INTERESTING_INTS[:11]) | st.integers(0, 2**32 - 1)), max_size=6))
    count = draw(st.sampled_from([len(entries)] * 4 + [0, len(entries) + 1, MAX_BLOBS_PER_PACK,
                                                       MAX_BLOBS_PER_PACK + 1, U32_MAX]))
    plain = magic + struct.pack("<I", count)[:draw(st.sampled_from([4, 4, 4, 2]))]
    plain += b"".join(_ENTRY.pack(t, i, o % 2**64, ln % 2**32, r % 2**32)
                      for t, i, o, ln, r in entries)
    plain += draw(st.sampled_from([b"", b"", b"\0", b"junk"]))
    body = draw(st.binary(max_size=300) | st.builds(bytes, st.integers(0, 5000)))
    sealed = KEY.seal(plain, _HEADER_AAD)
    trailer = draw(st.sampled_from([len(sealed)] * 4 + [0, len(sealed) + 1, len(sealed) - 1,
                                                        U32_MAX]))
    return body + sealed + struct.pack("<I", trailer)


@dataclass(frozen=True)
class Target:
    """One parser under fuzz: its inputs and what it must do with them."""

    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], None]


TARGETS = [
    Target("key_file_parse", json_inputs(SEED_KEYFILE, SEED_KEYFILE_DOC), check_key_file_parse),
    Target("key_file_unwrap", json_inputs(SEED_KEYFILE, SEED_KEYFILE_DOC),
           check_key_file_unwrap),
    Target("config", json_inputs(SEED_CONFIG, SEED_CONFIG_DOC), check_config),
    Target("index_plain", index_plain, check_index_plain),
    Target("index_sealed", sealed_inputs(index_plain, INDEX_AAD, SEED_INDEX), check_index_sealed),
    Target("tree_plain", tree_plain, check_tree_plain),
    Target("tree_sealed", tree_blobs(), check_tree_sealed),
    Target("snapshot_plain", snapshot_plain, check_snapshot_plain),
    Target("snapshot_sealed", sealed_inputs(snapshot_plain, SNAPSHOT_AAD, SEED_SNAPSHOT),
           check_snapshot_sealed),
    Target("pack", st.one_of(byte_mutants(SEED_PACKS), st.binary(max_size=1024)), check_pack),
    Target("pack_header_sealed", hostile_headers(), check_pack),
    Target("codec", st.tuples(codec_payloads(st.binary(max_size=1024)),
                              st.none() | st.sampled_from(INTERESTING_INTS[:11])
                              | st.integers(0, 2**40)), check_codec),
]
#: Cases run per target in this process (printed by the slow run).
COUNTS: dict[str, int] = {}


def _fuzz(target: Target, profile: settings) -> None:
    @profile
    @given(target.inputs)
    def run(data: Any) -> None:
        COUNTS[target.name] = COUNTS.get(target.name, 0) + 1
        try:
            target.check(data)
        except IntegrityError:
            pass

    start = time.monotonic()
    run()
    print(f"\nfuzz {target.name}: {COUNTS.get(target.name, 0)} cases in "
          f"{time.monotonic() - start:.1f} s")


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_fuzz(target: Target) -> None:
    _fuzz(target, NORMAL)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_fuzz_10k(target: Target) -> None:
    _fuzz(target, SLOW)


def test_seeds_are_valid() -> None:
    """The seeds parse: mutations start from real encodings, not from garbage."""
    assert unwrap_key(SEED_KEYFILE, PASSPHRASE, "k").material == KEY.material
    got = VaultConfig.decode(SEED_CONFIG)
    assert (got.id, got.chunker, got.version) == (CONFIG.id, CONFIG.chunker, 2)
    assert got.mac is not None and got.authentic(KEY, SEED_CONFIG)
    assert decode_index(SEED_INDEX, "i")[0]
    assert decode_tree(SEED_TREE, "t") == sorted(_seed_nodes(), key=lambda n: n.name)
    assert Snapshot.decode(SEED_SNAPSHOT, "ab" * 32).tree == "ef" * 32
    assert [len(_parse_pack(p)) for p in SEED_PACKS] == [0, 1, 3]
    check_index_sealed(CODEC.encode(SEED_INDEX, INDEX_AAD))
    check_snapshot_sealed(CODEC.encode(SEED_SNAPSHOT, SNAPSHOT_AAD))
    bid = KEY.blob_id(SEED_TREE)
    check_tree_sealed((CODEC.encode(SEED_TREE, blob_aad(BlobType.TREE, bid)), bid,
                       len(SEED_TREE)))


# -- allocation bombs: bounded memory -----------------------------------------------------------


def _peak(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (Python and the C extensions using its allocator) by ``fn``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            fn()
        except IntegrityError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _sealed_index(frame: bytes) -> Callable[[], object]:
    b, name = _sealed_file(FileType.INDEX, KEY.seal(b"\x01" + frame, INDEX_AAD))
    return lambda: _repo(b).read_index_file(name)


def _sealed_snapshot(frame: bytes) -> Callable[[], object]:
    b, name = _sealed_file(FileType.SNAPSHOT, KEY.seal(b"\x01" + frame, SNAPSHOT_AAD))
    return lambda: _repo(b).load_snapshot(name)


def _tree_blob(frame: bytes, raw_len: int) -> Callable[[], object]:
    sealed = KEY.seal(b"\x01" + frame, blob_aad(BlobType.TREE, ID))
    return lambda: decode_tree(CODEC.decode(sealed, blob_aad(BlobType.TREE, ID), raw_len, "t"),
                               "t")


BIG_HEADER = KEY.seal(b"TVPH\x01" + struct.pack("<I", MAX_BLOBS_PER_PACK), _HEADER_AAD)
BOMBS: dict[str, Callable[[], object]] = {
    "index: zstd frame declaring 500 MiB": _sealed_index(zstd_declaring(500 << 20)),
    "index: zstd frame declaring the 512 MiB limit": _sealed_index(zstd_declaring(MAX_INDEX_SIZE)),
    "index: RLE frame declaring 300 MiB, 512 KiB real": _sealed_index(
        zstd_rle(300 << 20, [128 * 1024] * 4)),
    "snapshot: zstd frame declaring 64 MiB": _sealed_snapshot(zstd_declaring(MAX_BLOB)),
    "tree blob: index says 4 GiB, frame declares 4 GiB": _tree_blob(
        zstd_declaring(U32_MAX), U32_MAX),
    "tree blob: index says 2^40, RLE frame declares 2^40": _tree_blob(
        zstd_rle(2**40, [128 * 1024]), 2**40),
    "codec: frame without a content size": lambda: CODEC.decompress(
        b"\x01" + zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 1000),
        None, "x", MAX_INDEX_SIZE),
    **{f"tree: msgpack bomb {i}": partial(decode_tree, b, "t")
       for i, b in enumerate(MSGPACK_BOMBS)},
    **{f"index: msgpack bomb {i}": partial(decode_index, b, "i")
       for i, b in enumerate(MSGPACK_BOMBS)},
    **{f"key file: JSON bomb {i}": partial(parse_key_file, b, "k")
       for i, b in enumerate(JSON_BOMBS)},
    **{f"snapshot: JSON bomb {i}": partial(Snapshot.decode, b, "a" * 64)
       for i, b in enumerate(JSON_BOMBS)},
    **{f"config: JSON bomb {i}": partial(VaultConfig.decode, b)
       for i, b in enumerate(JSON_BOMBS)},
    "pack: header claiming 2^20 entries": lambda: parse_header(BIG_HEADER, KEY, 10**12, "p"),
    "pack: trailer claiming a 4 GiB header": partial(
        header_length, struct.pack("<I", U32_MAX), 1 << 20, "p"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_allocation_bomb_is_bounded(name: str) -> None:
    start = time.monotonic()
    peak = _peak(BOMBS[name])
    assert peak < MEMORY_BOUND, f"{name}: peak allocation {peak / 2**20:.0f} MiB"
    assert time.monotonic() - start < 10, f"{name}: took {time.monotonic() - start:.1f} s"


@pytest.mark.parametrize("name", list(BOMBS))
def test_allocation_bomb_raises_integrity_error(name: str) -> None:
    with pytest.raises(IntegrityError):
        BOMBS[name]()


def test_real_content_over_16_mib_still_decodes() -> None:
    """The streamed path (frames over 16 MiB) returns exactly the content, bounded by limit."""
    data = os.urandom(1 << 20) * 20
    payload = CODEC.compress(data)
    assert CODEC.decompress(payload, None, "x", MAX_INDEX_SIZE) == data
    assert CODEC.decompress(payload, len(data), "x") == data
    with pytest.raises(IntegrityError):
        CODEC.decompress(payload, None, "x", len(data) - 1)
    with pytest.raises(IntegrityError):
        CODEC.decompress(payload[:-1000], None, "x", MAX_INDEX_SIZE)


def test_unreasonable_scrypt_parameters_are_refused_before_any_work() -> None:
    """n=2^22, r=32, p=16 is within each documented bound but asks for 16 GiB."""
    for n, r, p in [(2**22, 32, 16), (2**22, 8, 1), (2**20, 16, 1), (2**20, 8, 16),
                    (2**21, 1, 1), (2**17, 64, 1), (2**17, 8, 32)]:
        doc = dict(SEED_KEYFILE_DOC, n=n, r=r, p=p)
        start = time.monotonic()
        with pytest.raises(IntegrityError, match="unreasonable"):
            unwrap_key(_dumps(doc), PASSPHRASE, "keys/x")
        assert time.monotonic() - start < 1
    parse_key_file(_dumps(dict(SEED_KEYFILE_DOC, n=2**15, r=8, p=1)), "keys/old-default")
    parse_key_file(_dumps(dict(SEED_KEYFILE_DOC, n=2**17, r=8, p=1)), "keys/previous-default")
    parse_key_file(_dumps(dict(SEED_KEYFILE_DOC, n=2**15, r=8, p=4)), "keys/default")
    parse_key_file(_dumps(dict(SEED_KEYFILE_DOC, n=2**20, r=4, p=8)), "keys/largest")


@pytest.mark.parametrize("sizes", [(64, 64, 64), (1 << 20, 1 << 23, 1 << 26),
                                   (1 << 21, 1 << 21, 1 << 21)])
def test_config_chunker_bounds_match_the_chunker(sizes: tuple[int, int, int]) -> None:
    raw = _dumps(dict(SEED_CONFIG_DOC, chunker=dict(zip(("min", "avg", "max"), sizes,
                                                          strict=True))))
    try:
        cfg = VaultConfig.decode(raw)
    except IntegrityError:
        return
    Chunker(cfg.chunker, KEY.chunker_seed)  # must not raise once the config was accepted
