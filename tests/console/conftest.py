"""Fixtures: a real ``tiervault console serve`` (plain HTTP on loopback, and TLS).

``console_database_url`` (tests/console/databases.py) is parametrised: every module runs
on SQLite in the data directory and on a fresh database of a real PostgreSQL that the
tests start (TIERVAULT_TEST_DATABASES=sqlite or =postgresql narrows it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.console.consolekit import ConsoleServer


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
