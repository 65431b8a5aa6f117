"""The installation's SQLite database: files cache, tier revisions, sessions."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tiervault.errors import TierVaultError

_T = TypeVar("_T")

DB_NAME = "state.db"
CACHE_NAME = "files-cache.db"
_CACHE_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    dir BLOB NOT NULL, name BLOB NOT NULL, size INTEGER, mtime INTEGER, ctime INTEGER,
    inode INTEGER, content BLOB, PRIMARY KEY (dir, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs (
    dir BLOB PRIMARY KEY, key BLOB NOT NULL, tree BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tiers (
    url TEXT PRIMARY KEY, revision INTEGER NOT NULL DEFAULT 0, intended INTEGER,
    missed INTEGER NOT NULL DEFAULT 0, last_online REAL, first_offline REAL,
    sync_done INTEGER, sync_total INTEGER, state TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, started REAL, ended REAL,
    status TEXT, details TEXT);
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS known_snapshots (id TEXT PRIMARY KEY, time TEXT, paths TEXT);
CREATE TABLE IF NOT EXISTS deletions (
    type TEXT NOT NULL, name TEXT NOT NULL, time REAL, PRIMARY KEY (type, name)) WITHOUT ROWID;
"""


#: A files cache row as a backup writes it: size, mtime, ctime, inode, content
#: ids joined (32 bytes each).
CacheRow = tuple[int, int, int, int, bytes]


@dataclass
class CachedFile:
    """What the files cache remembers of one file."""

    size: int
    mtime: int
    ctime: int
    inode: int
    content: list[bytes]


@dataclass
class TierRecord:
    """The installation's durable view of one tier (SPEC §4, §6)."""

    url: str
    revision: int = 0
    intended: int | None = None
    missed: bool = False
    last_online: float | None = None
    first_offline: float | None = None
    sync_done: int | None = None
    sync_total: int | None = None
    state: str | None = None


def iso_time(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 with the local offset (how every time is shown)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def _connect(path: Path, schema: str, synchronous: str) -> sqlite3.Connection:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.executescript(schema)
    except sqlite3.DatabaseError as e:
        raise TierVaultError(f"the state database {path} is damaged: {e}; "
                             "move it away to start afresh") from None
    return db


def _is_damage(e: sqlite3.DatabaseError) -> bool:
    """A damaged database file, as opposed to a busy or unreachable one."""
    text = str(e)
    return type(e) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text


class StateDB:
    """The durable state (every commit synced) and the files cache.

    The files cache is a separate database committed in batches without
    syncing: losing it only costs re-reading files, while tier revisions must
    be on disk before the tier is written.
    """

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = _connect(home / DB_NAME, _SCHEMA, "FULL")
        self._cache_path = home / CACHE_NAME
        self._cache: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._cache_lock = threading.RLock()

    def _files(self) -> sqlite3.Connection:
        if self._cache is None:
            try:
                self._cache = _connect(self._cache_path, _CACHE_SCHEMA, "OFF")
            except TierVaultError:
                # A damaged cache is simply rebuilt.
                self._cache_path.unlink(missing_ok=True)
                self._cache = _connect(self._cache_path, _CACHE_SCHEMA, "OFF")
        if not self._cache.in_transaction:
            self._cache.execute("BEGIN")  # a batch: committed by commit_cache or close
        return self._cache

    def _on_cache(self, work: Callable[[sqlite3.Connection], _T], damaged: _T) -> _T:
        """Run ``work`` on the files cache. A cache found damaged inside (its
        header may be fine: "database disk image is malformed") is deleted and
        starts afresh, and ``damaged`` is the answer: it only costs re-reading."""
        with self._cache_lock:
            try:
                return work(self._files())
            except sqlite3.DatabaseError as e:
                if not _is_damage(e):
                    raise
                self._drop_cache()
                return damaged

    def _drop_cache(self) -> None:
        if self._cache is not None:
            try:
                self._cache.close()
            except sqlite3.Error:
                pass
            self._cache = None
        for suffix in ("", "-wal", "-shm"):
            Path(str(self._cache_path) + suffix).unlink(missing_ok=True)

    def commit_cache(self) -> None:
        """Make the files cache updates so far visible; no transaction stays open, so
        another process of the installation (a command the daemon lent its lock to)
        can write the cache."""
        self._end_cache("COMMIT")

    def rollback_cache(self) -> None:
        """Drop the files cache updates of a backup that did not complete."""
        self._end_cache("ROLLBACK")

    def _end_cache(self, sql: str) -> None:
        with self._cache_lock:
            if self._cache is not None and self._cache.in_transaction:
                try:
                    self._cache.execute(sql)
                except sqlite3.DatabaseError as e:
                    if not _is_damage(e):
                        raise
                    self._drop_cache()  # a damaged cache starts afresh

    def close(self) -> None:
        """Commit the files cache and close both databases."""
        with self._cache_lock:
            self.commit_cache()
            if self._cache is not None:
                self._cache.close()
                self._cache = None
        with self._lock:
            self._db.close()

    # -- files cache ---------------------------------------------------------------

    def cached_dir(self, directory: bytes) -> dict[bytes, CachedFile]:
        """Every cached file of one directory, by name."""
        rows: list[Any] = self._on_cache(lambda db: db.execute(
            "SELECT name, size, mtime, ctime, inode, content FROM files WHERE dir = ?",
            (directory,)).fetchall(), [])
        out = {}
        for name, size, mtime, ctime, inode, content in rows:
            ids = [content[i:i + 32] for i in range(0, len(content), 32)]
            out[name] = CachedFile(size, mtime, ctime, inode, ids)
        return out

    def update_dir(self, directory: bytes, entries: dict[bytes, CacheRow],
                   drop: Collection[bytes]) -> None:
        """Replace cache rows of one directory (committed in batches): by name,
        (size, mtime, ctime, inode, content ids joined)."""
        def work(db: sqlite3.Connection) -> None:
            if drop:
                db.executemany("DELETE FROM files WHERE dir = ? AND name = ?",
                               [(directory, n) for n in drop])
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(directory, n, *row) for n, row in entries.items()])

        self._on_cache(work, None)

    def cached_tree(self, directory: bytes) -> tuple[bytes, bytes] | None:
        """(key, tree id) of the tree last written for a directory, if any."""
        row = self._on_cache(lambda db: db.execute(
            "SELECT key, tree FROM dirs WHERE dir = ?", (directory,)).fetchone(), None)
        return (bytes(row[0]), bytes(row[1])) if row is not None else None

    def set_tree(self, directory: bytes, key: bytes | None, tree: bytes) -> None:
        """Remember the tree written for a directory and its key (None: forget it)."""
        def work(db: sqlite3.Connection) -> None:
            if key is None:
                db.execute("DELETE FROM dirs WHERE dir = ?", (directory,))
            else:
                db.execute("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?)", (directory, key, tree))

        self._on_cache(work, None)

    def cache_snapshot(self, scope: str) -> str | None:
        """The snapshot the cache rows of ``scope`` (host and paths) were last
        completed with; None after an interrupted backup of that scope."""
        row = self._on_cache(lambda db: db.execute(
            "SELECT v FROM meta WHERE k = ?", ("snapshot " + scope,)).fetchone(), None)
        return str(row[0]) if row is not None and row[0] else None

    def set_cache_snapshot(self, scope: str, snapshot_id: str | None) -> None:
        """Record (or, with None, forget) the snapshot a backup of ``scope`` completed."""
        self._on_cache(lambda db: db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            ("snapshot " + scope, snapshot_id or "")), None)

    def clear_files_cache(self) -> None:
        """Forget every cached file and tree (the vault changed under us)."""
        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM files")
            db.execute("DELETE FROM dirs")
            db.execute("DELETE FROM meta")

        self._on_cache(work, None)

    # -- tiers -----------------------------------------------------------------------

    def tier(self, url: str) -> TierRecord:
        """The record of one tier (a fresh one if never seen)."""
        with self._lock:
            row = self._db.execute(
                "SELECT url, revision, intended, missed, last_online, first_offline, "
                "sync_done, sync_total, state FROM tiers WHERE url = ?", (url,)).fetchone()
        if row is None:
            return TierRecord(url)
        return TierRecord(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6], row[7],
                          row[8])

    def save_tier(self, rec: TierRecord) -> None:
        """Durably store one tier's record (committed before returning)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO tiers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.url, rec.revision, rec.intended, int(rec.missed), rec.last_online,
                 rec.first_offline, rec.sync_done, rec.sync_total, rec.state))

    def save_tiers(self, recs: Iterable[TierRecord]) -> None:
        """Store several tier records in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for r in recs:
                    self.save_tier(r)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def remove_tier(self, url: str) -> None:
        """Forget a tier."""
        with self._lock:
            self._db.execute("DELETE FROM tiers WHERE url = ?", (url,))

    # -- sessions and small values ---------------------------------------------------

    def start_session(self, kind: str, details: dict[str, Any] | None = None) -> int:
        """Record the start of a session (with what is known so far); returns its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO sessions (kind, started, status, details) "
                "VALUES (?, ?, 'running', ?)",
                (kind, time.time(), None if details is None else json.dumps(details)))
            return int(cur.lastrowid or 0)

    def end_session(self, sid: int, status: str, details: dict[str, Any]) -> None:
        """Record how a session ended."""
        with self._lock:
            self._db.execute("UPDATE sessions SET ended = ?, status = ?, details = ? WHERE id = ?",
                             (time.time(), status, json.dumps(details), sid))

    def sessions(self, limit: int = 100,
                 kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The most recent sessions (of ``kinds``), newest first; times in ISO 8601."""
        sql = "SELECT id, kind, started, ended, status, details FROM sessions"
        args: list[Any] = []
        if kinds:
            sql += f" WHERE kind IN ({', '.join('?' * len(kinds))})"
            args += kinds
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?",
                                    (*args, limit)).fetchall()
        out = []
        for r in rows:
            try:
                details = json.loads(r[5]) if r[5] else {}
            except ValueError:
                details = {}
            out.append({"id": r[0], "kind": r[1], "started": iso_time(r[2]),
                        "ended": iso_time(r[3]), "status": r[4],
                        "duration_s": None if r[3] is None else round(r[3] - r[2], 3),
                        "details": details})
        return out

    def sessions_after(self, after: int, limit: int = 100) -> list[dict[str, Any]]:
        """Sessions with an id above ``after``, oldest first, with raw epoch times
        (the console agent replays them in this order)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, started, ended, status, details FROM sessions WHERE id > ? "
                "ORDER BY id LIMIT ?", (after, limit)).fetchall()
        out = []
        for r in rows:
            try:
                details = json.loads(r[5]) if r[5] else {}
            except ValueError:
                details = {}
            out.append({"id": r[0], "kind": r[1], "started": r[2], "ended": r[3],
                        "status": r[4], "details": details if isinstance(details, dict) else {}})
        return out

    # -- snapshots this installation knows of (to report lost ones) ----------------------

    def note_snapshots(self, snaps: list[tuple[str, str, list[str]]], replace: bool) -> None:
        """Remember snapshots (id, time, paths); ``replace`` forgets all others."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if replace:
                    self._db.execute("DELETE FROM known_snapshots")
                self._db.executemany("INSERT OR REPLACE INTO known_snapshots VALUES (?, ?, ?)",
                                     [(i, t, json.dumps(p)) for i, t, p in snaps])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget_snapshots(self, ids: list[str]) -> None:
        """Drop snapshots from the known set."""
        with self._lock:
            self._db.executemany("DELETE FROM known_snapshots WHERE id = ?", [(i,) for i in ids])

    def known_snapshots(self) -> dict[str, dict[str, Any]]:
        """Every snapshot this installation knows of."""
        with self._lock:
            rows = self._db.execute("SELECT id, time, paths FROM known_snapshots").fetchall()
        return {r[0]: {"id": r[0], "time": r[1], "paths": json.loads(r[2])} for r in rows}

    def get(self, key: str) -> str | None:
        """A small stored value."""
        with self._lock:
            row = self._db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str | None) -> None:
        """Store (or delete with None) a small value."""
        with self._lock:
            if value is None:
                self._db.execute("DELETE FROM kv WHERE k = ?", (key,))
            else:
                self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    # -- deletions this installation made (SPEC §5: only these travel between tiers) ----

    def record_deletions(self, kind: str, names: Iterable[str]) -> None:
        """Durably record files about to be deleted (committed before returning)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR IGNORE INTO deletions VALUES (?, ?, ?)",
                                     [(kind, n, now) for n in names])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget_deletion(self, kind: str, name: str) -> None:
        """``name`` is written again (an archive mark made again after a release):
        it is no longer a deletion for sync to carry to other tiers."""
        with self._lock:
            self._db.execute("DELETE FROM deletions WHERE type = ? AND name = ?", (kind, name))

    def deleted(self, kind: str) -> set[str]:
        """The names of files of one kind this installation deleted."""
        with self._lock:
            rows = self._db.execute("SELECT name FROM deletions WHERE type = ?",
                                    (kind,)).fetchall()
        return {str(r[0]) for r in rows}
