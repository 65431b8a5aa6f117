"""The stores the console tests run on: SQLite (embedded) and a real PostgreSQL.

``console_store`` is parametrised (``sqlite``, ``postgresql``); ``console_database_url`` is
``None`` for the embedded SQLite store in the data directory, otherwise the
``postgresql+psycopg://`` URL of a fresh database (one per test module) on a PostgreSQL
cluster started once per test session; ``new_database_url()`` gives one more fresh store
(for a fixture that starts a new console per test). tests/console/
conftest.py imports these fixtures, so every console test that starts a console through
it runs twice, ``[sqlite]`` and ``[postgresql]``.

``TIERVAULT_TEST_DATABASES`` (comma-separated, default ``sqlite,postgresql``) narrows the
list; the PostgreSQL variant is skipped with its reason when PostgreSQL is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.servers.postgres import PostgresServer, available

STORES = ("sqlite", "postgresql")


def selected_stores() -> list[str]:
    """The stores to run on (TIERVAULT_TEST_DATABASES, default both)."""
    raw = os.environ.get("TIERVAULT_TEST_DATABASES", ",".join(STORES))
    return [s.strip() for s in raw.split(",") if s.strip() in STORES]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole test session (skipped when not installed)."""
    reason = available()
    if reason:
        pytest.skip(reason)
    with PostgresServer() as pg:
        yield pg


@pytest.fixture(scope="module", params=selected_stores())
def console_store(request: pytest.FixtureRequest) -> str:
    """The store of this module's run: "sqlite" or "postgresql"."""
    store: str = request.param
    return store


@pytest.fixture(scope="module")
def new_database_url(request: pytest.FixtureRequest,
                     console_store: str) -> Iterator[Callable[[], str | None]]:
    """A function giving a fresh store per call: None (SQLite: the data directory's own)
    or the URL of a new empty PostgreSQL database; the databases are dropped at the end
    of the module."""
    made: list[str] = []
    pg: PostgresServer | None = None
    if console_store == "postgresql":
        pg = request.getfixturevalue("postgres_server")
    prefix = request.module.__name__.rsplit(".", 1)[-1]

    def make() -> str | None:
        if pg is None:
            return None
        made.append(pg.create_database(prefix))
        return made[-1]

    yield make
    for url in made:
        if pg is not None:
            pg.drop_database(url)


@pytest.fixture(scope="module")
def console_database_url(new_database_url: Callable[[], str | None]) -> str | None:
    """None (SQLite in the data directory) or this module's PostgreSQL database URL."""
    return new_database_url()


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest,
                 postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty PostgreSQL database for this module (PostgreSQL-only tests)."""
    url = postgres_server.create_database(request.module.__name__.rsplit(".", 1)[-1])
    yield url
    postgres_server.drop_database(url)
