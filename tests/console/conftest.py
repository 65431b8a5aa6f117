"""Fixtures: a real ``tiervault console serve`` (plain HTTP on loopback, and TLS).

``console_database_url`` is None (SQLite in the data directory); a PostgreSQL suite
overrides it to run the same tests on a real PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from tests.console.consolekit import ConsoleServer

#: An admin URL of a running PostgreSQL (postgresql+psycopg://postgres@HOST:PORT/postgres):
#: when set, every test module gets a fresh database on it instead of SQLite.
PG_ADMIN_ENV = "TIERVAULT_TEST_CONSOLE_PG"


@pytest.fixture(scope="module")
def console_database_url() -> Iterator[str | None]:
    """The console's database URL (None: SQLite in its data directory)."""
    admin = os.environ.get(PG_ADMIN_ENV)
    if not admin:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tv_{secrets.token_hex(6)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory,
            console_database_url: str | None) -> Iterator[ConsoleServer]:
    """A console on plain HTTP, 127.0.0.1, with a user and an API token."""
    data = tmp_path_factory.mktemp("console") / "data"
    server = ConsoleServer(data, database_url=console_database_url).start().bootstrap()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def console_tls(tmp_path_factory: pytest.TempPathFactory,
                console_database_url: str | None) -> Iterator[ConsoleServer]:
    """A console on HTTPS with its self-signed certificate."""
    data = tmp_path_factory.mktemp("console-tls") / "data"
    server = ConsoleServer(data, tls=True, database_url=console_database_url).start()
    server.bootstrap()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _real_clock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts (and ends) with the console's clock at real time."""
    servers = [request.getfixturevalue(n) for n in ("console", "console_tls")
               if n in request.fixturenames]
    for s in servers:
        s.move_clock(0)
    yield
    for s in servers:
        s.move_clock(0)
