"""The vault over one backend (or a tier set, which looks like one).

Reading: key, config, master index, blobs, snapshots. Writing goes through a
``BlobWriter`` that packs blobs and uploads packs in background threads, then
writes the index naming them; snapshots are written last. That order keeps the
vault valid at every instant: an interrupted backup leaves only unreferenced
packs, which ``prune`` removes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import blake3

from tiervault import __version__
from tiervault.errors import IntegrityError, NotFoundError, UsageError, WrongKeyError
from tiervault.storage.base import Backend, FileInfo, FileType, Handle
from tiervault.vault.chunker import Chunker, ChunkerParams
from tiervault.vault.codec import Codec
from tiervault.vault.crypto import KdfParams, MasterKey, parse_key_file, unwrap_key, wrap_key
from tiervault.vault.index import (
    INDEX_AAD,
    MAX_INDEX_SIZE,
    ROW_SIZE,
    MasterIndex,
    decode_index,
    decode_index_tables,
    encode_index,
)
from tiervault.vault.pack import PackEntry, blob_aad
from tiervault.vault.snapshot import SNAPSHOT_AAD, Snapshot, SnapshotFilter

if TYPE_CHECKING:
    from tiervault.vault.blobwriter import BlobWriter

#: Version 2 adds the config MAC and the manifest; version 1 vaults are read and
#: upgraded in place by their first write session.
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
PACK_TARGET = 8 * 1024 * 1024
_MAX_SNAPSHOT = 64 * 1024 * 1024
_MAX_CONFIG = 64 * 1024
#: A key file is a small JSON document (about 500 bytes).
_MAX_KEY_FILE = 64 * 1024


def content_name(data: bytes | bytearray | memoryview) -> str:
    """The file name of an immutable vault file: BLAKE3 of its stored bytes."""
    return blake3.blake3(data, max_threads=1).hexdigest()


def check_content_name(h: Handle, data: bytes) -> None:
    """Raise IntegrityError if an immutable file's bytes do not match its name."""
    if h.type in (FileType.PACK, FileType.INDEX, FileType.SNAPSHOT) and \
            content_name(data) != h.name:
        raise IntegrityError(f"{h} is damaged (content does not match its name)")


_CONFIG_MAC = b"config"


def _mac_input(doc: dict[str, object]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":")).encode()


@dataclass(frozen=True)
class VaultConfig:
    """The vault's public, write-once parameters (authenticated from version 2)."""

    id: str
    version: int
    chunker: ChunkerParams
    created: str | None = None
    mac: str | None = None  # None: a version 1 config, written before the MAC existed

    def _doc(self) -> dict[str, object]:
        return {"format": "tiervault", "version": FORMAT_VERSION, "id": self.id,
                "chunker": {"min": self.chunker.min_size, "avg": self.chunker.avg_size,
                            "max": self.chunker.max_size},
                "created": self.created or datetime.now(UTC).isoformat(timespec="seconds")}

    def encode(self, key: MasterKey) -> bytes:
        """JSON bytes of the config file (current version, with its MAC)."""
        doc = self._doc()
        doc["mac"] = key.mac(_CONFIG_MAC, _mac_input(doc))
        return json.dumps(doc, indent=1).encode()

    def authentic(self, key: MasterKey, raw: bytes) -> bool:
        """True if ``raw`` (this config's bytes) carries a valid MAC under ``key``."""
        try:
            doc = json.loads(raw)
            return isinstance(doc, dict) and isinstance(doc.get("mac"), str) and \
                secrets.compare_digest(doc["mac"], key.mac(_CONFIG_MAC, _mac_input(doc)))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return False

    @classmethod
    def decode(cls, raw: bytes) -> VaultConfig:
        """Parse the config file; IntegrityError if it is not a tiervault vault."""
        try:
            doc = json.loads(raw)
            if doc.get("format") != "tiervault":
                raise ValueError
            if doc["version"] not in SUPPORTED_VERSIONS:
                raise IntegrityError(f"vault format version {doc['version']} is not supported")
            mac = doc.get("mac")
            if doc["version"] >= 2 and not isinstance(mac, str):
                raise ValueError  # a version 2 config always carries its MAC
            c = doc["chunker"]
            params = ChunkerParams(int(c["min"]), int(c["avg"]), int(c["max"]))
            # The ranges pyfastcdc accepts, so a damaged config is damage, not a crash.
            if not (64 <= params.min_size <= 1 << 20 and 256 <= params.avg_size <= 1 << 22
                    and 1 << 10 <= params.max_size <= 1 << 24
                    and params.min_size <= params.avg_size <= params.max_size):
                raise ValueError
            vid = str(doc["id"])
            bytes.fromhex(vid)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError,
                OverflowError, RecursionError):  # 1e400 is inf; deep nesting recurses
            raise IntegrityError("the vault config file is damaged or not a tiervault vault") \
                from None
        created = doc.get("created")
        return cls(vid, int(doc["version"]), params,
                   created if isinstance(created, str) else None,
                   mac if isinstance(mac, str) else None)


class Repository:
    """An opened vault: decrypts, indexes and stores blobs, trees and snapshots."""

    def __init__(self, backend: Backend, key: MasterKey, config: VaultConfig,
                 key_name: str) -> None:
        self.backend = backend
        self.key = key
        self.config = config
        self.key_name = key_name
        self.codec = Codec(key)
        self.index = MasterIndex()
        self.index_files: set[str] = set()
        self.damaged_indexes: list[tuple[str, str]] = []
        #: Files this installation removed, by kind: never used again if a tier puts
        #: them back (a replayed index, a resurrected snapshot, an old key file).
        self.removed: dict[FileType, set[str]] = {}
        #: Index files named as superseded by another index (prune replaced them).
        self.superseded_indexes: set[str] = set()

    # -- creating and opening -------------------------------------------------

    @classmethod
    def init(cls, backend: Backend, passphrase: str, kdf: KdfParams | None = None,
             chunker: ChunkerParams | None = None) -> Repository:
        """Create a new vault on an empty location."""
        try:
            backend.stat(Handle(FileType.CONFIG))
            raise UsageError(f"{backend.location} already holds a vault")
        except NotFoundError:
            pass
        key = MasterKey.generate()
        config = VaultConfig(secrets.token_hex(16), FORMAT_VERSION, chunker or ChunkerParams())
        name = secrets.token_hex(8)
        backend.save(Handle(FileType.KEY, name), wrap_key(key, passphrase, kdf))
        backend.save(Handle(FileType.CONFIG), config.encode(key))
        return cls(backend, key, config, name)

    @classmethod
    def open(cls, backend: Backend, passphrase: str, load_index: bool = True,
             removed: dict[FileType, set[str]] | None = None) -> Repository:
        """Open an existing vault; WrongKeyError if no key file fits.

        ``removed``: the files this installation deleted (never used again).
        """
        config = read_config(backend)
        key, name = open_key(backend, passphrase, (removed or {}).get(FileType.KEY, set()))
        repo = cls(backend, key, config, name)
        repo.removed = dict(removed or {})
        if load_index:
            repo.load_index()
        return repo

    def chunker(self) -> Chunker:
        """A new chunker (not thread-safe: one per worker)."""
        return Chunker(self.config.chunker, self.key.chunker_seed)

    # -- sealed files -----------------------------------------------------------

    def save_file(self, t: FileType, plain: bytes, aad: bytes) -> str:
        """Compress, seal and store an immutable file; returns its name."""
        data = self.codec.encode(plain, aad)
        name = content_name(data)
        self.backend.save(Handle(t, name), data)
        return name

    def load_file(self, h: Handle, aad: bytes, limit: int) -> bytes:
        """Load, verify and open an immutable sealed file."""
        what = str(h)

        def decode(data: bytes) -> bytes:
            check_content_name(h, data)
            if len(data) > limit:
                raise IntegrityError(f"{what} is damaged (too large)")
            plain = self.key.open(data, aad, what)
            return self.codec.decompress(plain, None, what, limit)

        return self.backend.load_verified(h, decode, max_size=limit)

    # -- index ------------------------------------------------------------------

    def load_index(self, workers: int = 4) -> None:
        """Read every index file into the master index.

        A damaged index file (on every tier) is skipped and remembered in
        ``damaged_indexes``: its blobs look missing, so backups upload them
        again, ``check`` reports it and ``check --repair`` rebuilds it, while
        ``prune`` refuses to run (its packs would look unreferenced).
        """
        names = self.names(FileType.INDEX)

        def read(name: str) -> tuple[dict[bytes, bytes], list[str]] | IntegrityError:
            # Tables of rows, not PackEntry objects: every index file is decoded
            # before any is merged, and a million entries as objects is ~250 MB.
            try:
                h = Handle(FileType.INDEX, name)
                return decode_index_tables(self.load_file(h, INDEX_AAD, MAX_INDEX_SIZE), str(h))
            except IntegrityError as e:
                return e

        with ThreadPoolExecutor(workers) as ex:
            docs = list(zip(names, ex.map(read, names), strict=True))
        # An index that another names as superseded is never loaded again: its
        # packs may be gone (prune), and deduplicating against them would lose data.
        self.superseded_indexes = {s for _n, d in docs if not isinstance(d, IntegrityError)
                                   for s in d[1]}
        self.index.reserve(len(self.index) + sum(
            len(t) for _n, d in docs if not isinstance(d, IntegrityError)
            for t in d[0].values()) // ROW_SIZE)
        for name, doc in docs:
            if isinstance(doc, IntegrityError):
                self.damaged_indexes.append((name, str(doc)))
                continue
            if name in self.superseded_indexes:
                continue
            for pid, table in doc[0].items():
                self.index.add_table(pid, table)
            self.index_files.add(name)

    def reload_index(self) -> None:
        """Forget the in-memory index and read the index files again."""
        self.index = MasterIndex()
        self.index_files = set()
        self.damaged_indexes = []
        self.load_index()

    def read_index_file(self, name: str) -> dict[bytes, list[PackEntry]]:
        """One index file's packs."""
        return self.read_index_doc(name)[0]

    def open_index_file(self, name: str) -> None:
        """Load and authenticate one index file (IntegrityError if it does not open
        with the key), without decoding its entries."""
        self.load_file(Handle(FileType.INDEX, name), INDEX_AAD, MAX_INDEX_SIZE)

    def read_index_doc(self, name: str) -> tuple[dict[bytes, list[PackEntry]], list[str]]:
        """One index file's packs and the index files it supersedes."""
        h = Handle(FileType.INDEX, name)
        return decode_index(self.load_file(h, INDEX_AAD, MAX_INDEX_SIZE), str(h))

    def write_index(self, packs: dict[bytes, list[PackEntry]],
                    supersedes: set[str] | frozenset[str] = frozenset()) -> str:
        """Write one index file naming ``packs``; returns its name."""
        name = self.save_file(FileType.INDEX, encode_index(packs, supersedes), INDEX_AAD)
        self.index_files.add(name)
        return name

    # -- blobs --------------------------------------------------------------------

    def decode_blob(self, pid: bytes, e: PackEntry, sealed: bytes | memoryview) -> bytes:
        """Open one sealed blob and check that its content matches its id."""
        what = f"blob {e.id.hex()[:16]} in pack {pid.hex()}"
        plain = self.codec.decode(sealed, blob_aad(e.type, e.id), e.raw_length, what)
        if self.key.blob_id(plain) != e.id:
            raise IntegrityError(f"{what} is damaged (content does not match id)")
        return plain

    def load_blob(self, blob_id: bytes) -> bytes:
        """The plaintext of a blob, from the first tier that has a good copy."""
        loc = self.index.lookup(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is missing from the index")
        pid, e = loc
        return self.backend.load_verified(
            Handle(FileType.PACK, pid.hex()), lambda d: self.decode_blob(pid, e, d),
            e.offset, e.length)

    def load_blobs_from_pack(self, pid: bytes,
                             entries: list[PackEntry]) -> list[tuple[PackEntry, bytes]]:
        """Decode several blobs of one pack with a single ranged read."""
        start = min(e.offset for e in entries)
        end = max(e.offset + e.length for e in entries)

        def decode(data: bytes) -> list[tuple[PackEntry, bytes]]:
            mv = memoryview(data)
            return [(e, self.decode_blob(pid, e, mv[e.offset - start:e.offset - start + e.length]))
                    for e in entries]

        return self.backend.load_verified(Handle(FileType.PACK, pid.hex()), decode,
                                          start, end - start)

    def stream_blobs_from_pack(self, pid: bytes, entries: list[PackEntry],
                               consumer: Callable[[PackEntry, bytes], None]) -> None:
        """Decode blobs of one pack with a single ranged read, handing each to
        ``consumer`` as soon as it is verified (memory: one range, one blob).

        ``consumer`` may be called again for the same blob with the same bytes
        if a later blob of the range is damaged and the read moves on to the
        next tier, so it must be idempotent (restore's positional writes are).
        """
        start = min(e.offset for e in entries)
        end = max(e.offset + e.length for e in entries)

        def decode(data: bytes) -> None:
            mv = memoryview(data)
            for e in entries:
                consumer(e, self.decode_blob(pid, e, mv[e.offset - start:e.offset - start
                                                        + e.length]))

        self.backend.load_verified(Handle(FileType.PACK, pid.hex()), decode, start, end - start)

    def writer(self, pack_size: int = PACK_TARGET, uploads: int = 2) -> BlobWriter:
        """A writer that packs and uploads new blobs."""
        from tiervault.vault.blobwriter import BlobWriter  # it needs this module

        return BlobWriter(self, pack_size, uploads)

    # -- snapshots ------------------------------------------------------------------

    def save_snapshot(self, snap: Snapshot, archived: bool = False) -> str:
        """Store a snapshot (after its data and index); returns its id.

        With ``archived`` its archive mark is written first, so that the
        snapshot is never in the vault unprotected (an interrupted session
        leaves at most a mark naming no snapshot, which is harmless).
        """
        snap.program = f"tiervault {__version__}"
        data = self.codec.encode(snap.encode(), SNAPSHOT_AAD)
        snap.id = content_name(data)
        if archived:
            self.mark_archive(snap.id)
        self.backend.save(Handle(FileType.SNAPSHOT, snap.id), data)
        return snap.id

    def load_snapshot(self, snap_id: str) -> Snapshot:
        """Read one snapshot."""
        plain = self.load_file(Handle(FileType.SNAPSHOT, snap_id), SNAPSHOT_AAD, _MAX_SNAPSHOT)
        return Snapshot.decode(plain, snap_id)

    def list_snapshot_ids(self) -> list[str]:
        """Ids of every snapshot file."""
        return self.names(FileType.SNAPSHOT)

    def names(self, t: FileType) -> list[str]:
        """Live files of one kind: listed by any online tier, not removed by us."""
        gone = self.removed.get(t, set())
        return [n for n in listing(self.backend, t) if n not in gone]

    def snapshots(self, on_error: Callable[[str, Exception], None] | None = None,
                  workers: int = 4) -> list[Snapshot]:
        """Every readable snapshot, oldest first; damaged ones go to ``on_error``."""
        ids = self.list_snapshot_ids()

        def one(sid: str) -> Snapshot | None:
            try:
                return self.load_snapshot(sid)
            except IntegrityError as e:
                if on_error is None:
                    raise
                on_error(sid, e)
                return None

        with ThreadPoolExecutor(workers) as ex:
            snaps = [s for s in ex.map(one, ids) if s is not None]
        return sorted(snaps, key=lambda s: (s.datetime(), s.id))

    def find_snapshot(self, ref: str, which: SnapshotFilter | None = None) -> Snapshot:
        """Resolve ``latest`` (the newest that ``which`` lets through), a full id
        or a unique prefix (an id is taken as given: ``which`` does not apply)."""
        if ref == "latest":
            damaged: list[Exception] = []
            snaps = self.snapshots(on_error=lambda _sid, e: damaged.append(e))
            if not snaps and damaged:
                raise damaged[0]
            if not snaps:
                raise UsageError("the vault has no snapshots yet")
            if which is not None and not which.empty():
                snaps = which.select(snaps)
                if not snaps:
                    raise UsageError(f"no snapshot matches {which.describe()}; see "
                                     "'tiervault snapshots' for hosts, paths and tags")
            return self._indexed(snaps[-1])
        ref = ref.lower()
        if not ref or any(c not in "0123456789abcdef" for c in ref):
            raise UsageError(f"{ref!r} is not a snapshot id")
        matches = [s for s in self.list_snapshot_ids() if s.startswith(ref)]
        if not matches:
            raise UsageError(f"no snapshot matches {ref!r}")
        if len(matches) > 1:
            raise UsageError(f"{ref!r} matches {len(matches)} snapshots; give more characters")
        return self._indexed(self.load_snapshot(matches[0]))

    def _indexed(self, snap: Snapshot) -> Snapshot:
        """Reload the index if ``snap`` is newer than it (another installation wrote it).

        A snapshot is written after the index naming its data, so reading the
        index again after the snapshot always covers it.
        """
        if bytes.fromhex(snap.tree) not in self.index:
            self.reload_index()
        return snap

    def remove_snapshot(self, snap_id: str) -> None:
        """Delete a snapshot file."""
        self.backend.remove(Handle(FileType.SNAPSHOT, snap_id))

    # -- archive marks ----------------------------------------------------------------

    def archive_marks(self) -> set[str]:
        """Ids of the snapshots that have an archive mark (``archives/<id>``).

        Presence is what counts: a mark is never decoded to decide, so a
        damaged mark still protects its snapshot (``check`` reports it).
        """
        return {fi.handle.name for fi in self.backend.list(FileType.ARCHIVE)}

    def archived_ids(self, snaps: list[Snapshot]) -> set[str]:
        """Which of ``snaps`` are archived: a mark, or the legacy ``archive`` tag."""
        marks = self.archive_marks()
        return {s.id for s in snaps if s.id in marks or s.legacy_archived()}

    def mark_archive(self, snap_id: str) -> None:
        """Write the archive mark of a snapshot (a small sealed file)."""
        plain = json.dumps({"v": 1, "snapshot": snap_id,
                            "marked": datetime.now(UTC).isoformat()}).encode()
        self.backend.save(Handle(FileType.ARCHIVE, snap_id),
                          self.codec.encode(plain, _archive_aad(snap_id)))

    def release_archive(self, snap_id: str) -> None:
        """Remove the archive mark of a snapshot (if it has one)."""
        try:
            self.backend.remove(Handle(FileType.ARCHIVE, snap_id))
        except NotFoundError:
            pass

    def decode_archive_mark(self, snap_id: str, data: bytes) -> dict[str, str]:
        """Open a stored archive mark; IntegrityError unless it is one for ``snap_id``."""
        what = f"archives/{snap_id}"
        if len(data) > _MAX_CONFIG:
            raise IntegrityError(f"{what} is damaged (too large)")
        plain = self.codec.decompress(self.key.open(data, _archive_aad(snap_id), what), None,
                                      what, _MAX_CONFIG)
        try:
            doc = json.loads(plain)
            if doc.get("v") != 1 or doc.get("snapshot") != snap_id:
                raise ValueError
        except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
            raise IntegrityError(f"{what} is damaged (not an archive mark)") from None
        return {k: str(v) for k, v in doc.items()}

    def load_archive_mark(self, snap_id: str) -> dict[str, str]:
        """Read and authenticate one archive mark."""
        h = Handle(FileType.ARCHIVE, snap_id)
        return self.backend.load_verified(h, lambda d: self.decode_archive_mark(snap_id, d))

    # -- keys -----------------------------------------------------------------------

    def add_key(self, passphrase: str, kdf: KdfParams | None = None) -> str:
        """Wrap the master key with another passphrase; returns the key file name."""
        name = secrets.token_hex(8)
        self.backend.save(Handle(FileType.KEY, name), wrap_key(self.key, passphrase, kdf))
        return name


def _archive_aad(snap_id: str) -> bytes:
    """The mark is bound to its name: it cannot be renamed to mark another snapshot."""
    return b"tiervault archive " + snap_id.encode()


def union_listing(backend: Backend, t: FileType) -> list[FileInfo]:
    """The files of one kind: over a tier set, those ANY online tier lists, so
    that one tier hiding files cannot hide them from the vault."""
    from tiervault.tiers.tierset import TierSet

    return backend.list_union(t) if isinstance(backend, TierSet) else list(backend.list(t))


def listing(backend: Backend, t: FileType) -> list[str]:
    """Names of the files of one kind (see ``union_listing``)."""
    return [fi.handle.name for fi in union_listing(backend, t)]


def read_config(backend: Backend) -> VaultConfig:
    """Read the vault config; a clear error if the location holds no vault."""
    def decode(raw: bytes) -> VaultConfig:
        if len(raw) > _MAX_CONFIG:
            raise IntegrityError("the vault config file is damaged")
        return VaultConfig.decode(raw)

    try:
        # Through load_verified: a damaged copy on one tier falls through to the next.
        return backend.load_verified(Handle(FileType.CONFIG), decode, max_size=_MAX_CONFIG)
    except NotFoundError:
        raise UsageError(f"{backend.location} holds no tiervault vault (run init?)") from None


def _parsed_key_file(what: str) -> Callable[[bytes], bytes]:
    def check(data: bytes) -> bytes:
        parse_key_file(data, what)
        return data

    return check


def open_key(backend: Backend, passphrase: str,
             removed: set[str] | frozenset[str] = frozenset()) -> tuple[MasterKey, str]:
    """Try every key file with ``passphrase`` (except those removed: an old key
    file a tier puts back must not open the vault with an old passphrase)."""
    damaged: list[str] = []
    for name in sorted(set(listing(backend, FileType.KEY)) - set(removed)):
        fi = FileInfo(Handle(FileType.KEY, name), 0)
        try:
            what = str(fi.handle)
            # Parsing inside load_verified: a damaged copy falls through to the next tier.
            raw = backend.load_verified(fi.handle, _parsed_key_file(what),
                                        max_size=_MAX_KEY_FILE)
            return unwrap_key(raw, passphrase, what), fi.handle.name
        except WrongKeyError:
            continue
        except (IntegrityError, NotFoundError) as e:
            damaged.append(str(e))
    if damaged:
        raise WrongKeyError(f"wrong passphrase (and damaged key files: {'; '.join(damaged)})")
    raise WrongKeyError(f"wrong passphrase for the vault at {backend.location}")
