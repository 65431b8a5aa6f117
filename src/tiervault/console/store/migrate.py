"""Alembic migrations, run programmatically (no alembic.ini): ``upgrade(db)`` on start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from tiervault.console.store.db import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Several serve processes on one PostgreSQL upgrade one at a time.
LOCK_KEY = 0x7469657276  # "tierv"
#: The newest revision (a test checks it is the migrations' head): a store already there
#: is used without loading Alembic (the CLI on the console's host starts faster).
HEAD = "0001"

if TYPE_CHECKING:
    from alembic.config import Config


def config(connection: Connection) -> Config:
    """An Alembic config for this package's migrations, on an open connection."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the store's schema to ``revision`` (an empty database gets every table)."""
    from alembic import command

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


def ensure_current(db: Database) -> None:
    """Upgrade unless the store is at HEAD already (checked with one plain query)."""
    try:
        with db.engine.connect() as conn:
            rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        rev = None
    if rev != HEAD:
        upgrade(db)
