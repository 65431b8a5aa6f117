"""The store: migrations from an empty database match the models (no drift); the SQL
colour expression agrees with the pure colour function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tiervault.console.clock import Clock
from tiervault.console.services import colours
from tiervault.console.services.actor import SYSTEM
from tiervault.console.services.devices import DeviceQuery, query
from tiervault.console.store.db import Database
from tiervault.console.store.migrate import HEAD, MIGRATIONS, current, upgrade
from tiervault.console.store.models import Base, Customer, Device


@pytest.fixture
def db(tmp_path: Path, console_database_url: str | None) -> Database:
    return Database(console_database_url or f"sqlite:///{tmp_path / 'console.db'}")


def test_migrations_from_empty_match_the_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from tiervault.console.store.migrate import config

    upgrade(db)
    assert current(db) == HEAD
    with db.engine.connect() as conn:
        assert ScriptDirectory.from_config(config(conn)).get_current_head() == HEAD
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
    upgrade(db)   # a second start changes nothing
    assert current(db) == HEAD
    assert (MIGRATIONS / "env.py").exists()


def test_sql_colours_agree_with_the_colour_function(db: Database) -> None:
    upgrade(db)
    clock = Clock()
    now = clock.now()
    cases = {
        "never": dict(),
        "fresh": dict(last_success=now - timedelta(hours=1), last_status="success"),
        "day": dict(last_success=now - timedelta(hours=30), last_status="success"),
        "old": dict(last_success=now - timedelta(hours=50), last_status="success"),
        "failed": dict(last_success=now - timedelta(hours=1), last_status="failed"),
        "running": dict(running={"kind": "backup"}),
        "strict": dict(last_success=now - timedelta(hours=3), last_status="success"),
        "cancelled": dict(last_status="cancelled"),
    }
    with db.session() as s:
        default = Customer(name="Default", green_hours=24, orange_hours=48)
        strict = Customer(name="Strict", green_hours=2, orange_hours=4)
        s.add_all([default, strict])
        s.flush()
        for name, attrs in cases.items():
            at = attrs.get("last_success") or (now if "last_status" in attrs else None)
            s.add(Device(name=name, customer_id=strict.id if name == "strict" else default.id,
                         credential_hash=name.ljust(64, "0"), enrolled=now, last_seen=now,
                         interval=60, tiers=[], last_errors=[], sets=[],
                         last_session_at=at, **attrs))
    with db.session() as s:
        rows, total = query(s, clock, SYSTEM, DeviceQuery(per_page=100))
        assert total == len(cases)
        by_name = {r["name"]: r["colour"] for r in rows}
        for c in colours.COLOURS:
            filtered, _ = query(s, clock, SYSTEM, DeviceQuery(colour=c, per_page=100))
            assert {r["name"] for r in filtered} == {n for n, v in by_name.items() if v == c}
    assert by_name == {"never": "none", "fresh": "green", "day": "orange", "old": "red",
                       "failed": "red", "running": "blue", "strict": "orange",
                       "cancelled": "red"}


def test_the_day_bar_keeps_the_worst_status_of_each_day() -> None:
    now = datetime(2026, 3, 28, 12, tzinfo=UTC)
    bar = colours.day_bar(now, [(now, "success"), (now - timedelta(hours=1), "failed"),
                                (now - timedelta(days=1), "warnings"),
                                (now - timedelta(days=40), "failed")])
    assert len(bar) == 28 and bar[-1] == {"day": "2026-03-28", "status": "failed"}
    assert bar[-2]["status"] == "warnings" and bar[0]["status"] is None
