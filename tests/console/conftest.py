"""Fixtures of the console tests."""

from tests.console.databases import (  # noqa: F401 - fixtures
    console_database_url,
    console_store,
    new_database_url,
    postgres_server,
    postgres_url,
)
