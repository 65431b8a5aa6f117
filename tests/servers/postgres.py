"""A real PostgreSQL server for tests (Debian's ``postgresql`` 15), run as a child process.

``PostgresServer`` runs ``initdb`` into a fresh temporary directory and starts ``postgres``
on a free port of 127.0.0.1 (its Unix socket in that directory too, so it never meets a
system cluster). PostgreSQL refuses to run as root, so when the tests run as root the
directory is handed to the ``postgres`` user and both programs run as that user.
Authentication is ``trust`` (loopback only; the cluster lives as long as the test session).
``create_database`` gives each test module a database of its own and returns its
SQLAlchemy URL (``postgresql+psycopg://...``); ``stop`` ends the server and removes the
directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers.ports import free_port

PG_BIN = Path(os.environ.get("TIERVAULT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
_HOST = "127.0.0.1"
_SUPERUSER = "postgres"


def available() -> str | None:
    """None when PostgreSQL can run here, else why not (for a pytest skip)."""
    for prog in ("initdb", "postgres"):
        if not (PG_BIN / prog).is_file():
            return f"PostgreSQL not installed ({PG_BIN / prog} missing)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


class PostgresServer:
    """One throw-away PostgreSQL cluster; use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.port = 0
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._databases = 0

    # -- running it -----------------------------------------------------------------------

    def _as_owner(self, argv: list[str]) -> list[str]:
        """``argv`` run as the postgres user when we are root (setpriv execs: no extra pid)."""
        if os.geteuid() != 0:
            return argv
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                "--reset-env", *argv]

    def start(self) -> PostgresServer:
        """initdb and start; returns when the server accepts connections."""
        reason = available()
        if reason:
            raise RuntimeError(reason)
        self.root = Path(tempfile.mkdtemp(prefix="tv-pg-"))
        data = self.root / "data"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        initdb_log = self.root / "initdb.log"
        with open(initdb_log, "wb") as out:
            rc = subprocess.call(
                self._as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-U", _SUPERUSER,
                                "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                                "--no-sync"]),
                stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        if rc != 0:
            raise RuntimeError(f"initdb failed ({rc}): {initdb_log.read_text(errors='replace')}")
        self.port = free_port()
        with open(self.root / "postgres.log", "wb") as log:   # the child keeps its own fd
            self._proc = subprocess.Popen(self._as_owner([
                str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port),
                "-k", str(self.root), "-c", f"listen_addresses={_HOST}",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200",
                "-c", "logging_collector=off", "-c", "log_min_messages=warning",
            ]), stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._proc.returncode}): {self.log()}")
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        """The server's log (for failure messages)."""
        if self.root is None:
            return ""
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop the server (fast shutdown, then kill) and remove its directory."""
        if self._proc is not None and self._proc.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM, "smart", waits for clients).
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ------------------------------------------------------------------------

    def dsn(self, database: str) -> str:
        """A libpq connection string (what psycopg.connect takes)."""
        return f"host={_HOST} port={self.port} user={_SUPERUSER} dbname={database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` (what ``console serve --database-url`` takes)."""
        return f"postgresql+psycopg://{_SUPERUSER}@{_HOST}:{self.port}/{database}"

    def create_database(self, prefix: str = "tv") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = "".join(c if c.isalnum() else "_" for c in prefix.lower())[:40]
        name = f"{name}_{self._databases}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, ending its connections first."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
