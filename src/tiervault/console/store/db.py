"""The engine and session factory: SQLite in the data directory by default, any URL given.

SQLite runs with WAL and a busy timeout so that the web threads and the agent routes do
not fail on each other's writes; PostgreSQL (``postgresql+psycopg://...``) is how several
``serve`` processes share one store.

``run(fn)`` runs ``fn(session)`` in a transaction on the store's own executor: on SQLite
ONE thread (every agent request's transaction in turn: no two of them wait on SQLite's
write lock, whose busy handler sleeps in steps of up to 100 ms), on PostgreSQL a few
threads (no more than the connection pool holds).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_NAME = "console.db"
BUSY_TIMEOUT_MS = 10_000
PG_POOL = 10
PG_WORKERS = 8            # threads of ``run`` on PostgreSQL (< PG_POOL: web threads get theirs)
T = TypeVar("T")


def default_url(data_dir: str | os.PathLike[str]) -> str:
    """The embedded store: ``DIR/console.db``."""
    return f"sqlite:///{Path(data_dir).resolve() / SQLITE_NAME}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _private(path: str | None) -> None:
    """The SQLite file (its -wal/-shm take its mode) readable by its owner only: it holds
    the key that signs login cookies and every device's credential hash."""
    if not path or path == ":memory:":
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Database:
    """One engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False,
                                      "timeout": BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs.update(pool_size=PG_POOL, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _private(self.engine.url.database)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite store."""
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL (the waker then also uses LISTEN/NOTIFY)."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        s = self.sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    async def run(self, fn: Callable[[Session], T]) -> T:
        """``fn(session)`` in one transaction (``session``), on the store's executor."""
        def work() -> T:
            with self.session() as s:
                return fn(s)
        return await asyncio.get_running_loop().run_in_executor(self._executor_(), work)

    async def run_core(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in one transaction on the store's executor, without an ORM
        session (the agent's hot path: SQL core statements only)."""
        def work() -> T:
            with self.engine.begin() as conn:
                return fn(conn)
        return await asyncio.get_running_loop().run_in_executor(self._executor_(), work)

    def _executor_(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1 if self.is_sqlite else PG_WORKERS, thread_name_prefix="console-db")
        return self._executor

    def dispose(self) -> None:
        """Stop the executor and close every pooled connection."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.engine.dispose()
