"""Alembic migrations, run programmatically (no alembic.ini): ``upgrade(db)`` on start."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from tiervault.console.store.db import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Several serve processes on one PostgreSQL upgrade one at a time.
LOCK_KEY = 0x7469657276  # "tierv"


def config(connection: Connection) -> Config:
    """An Alembic config for this package's migrations, on an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the store's schema to ``revision`` (an empty database gets every table)."""
    with db.engine.connect() as conn:
        if db.is_postgres:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            conn.commit()
        try:
            command.upgrade(config(conn), revision)
            conn.commit()
        finally:
            if db.is_postgres:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()


def current(db: Database) -> str | None:
    """The schema revision of the store (None for an empty one)."""
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
