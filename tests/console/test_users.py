"""Users: no default password; the first user through the one-time setup code; every
mutating action leaves an audit row naming its actor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiervault.console.clock import Clock
from tiervault.console.errors import Conflict, Forbidden, Refused
from tiervault.console.services import access, audit, tokens, users
from tiervault.console.services.actor import SYSTEM, device_actor, user_actor
from tiervault.console.store.db import Database
from tiervault.console.store.migrate import upgrade


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'console.db'}")
    upgrade(d)
    return d


def test_the_first_user_needs_the_setup_code_and_only_once(db: Database) -> None:
    clock = Clock()
    with db.session() as s:
        assert users.count(s) == 0
        with pytest.raises(Refused):
            users.setup_first(s, clock, "abc-def", "wrong", "admin", "password 1")
        with pytest.raises(Refused):
            users.setup_first(s, clock, None, "", "admin", "password 1")
    with db.session() as s:
        users.setup_first(s, clock, "abc-def", " abc-def ", "admin", "password 1")
    with db.session() as s:
        with pytest.raises(Conflict):
            users.setup_first(s, clock, "abc-def", "abc-def", "evil", "password 2")
        assert users.verify(s, "admin", "password 1").name == "admin"
        with pytest.raises(Refused):
            users.verify(s, "admin", "password 2")
        with pytest.raises(Refused):
            users.verify(s, "nobody", "password 1")
        stored = users.by_name(s, "admin")
        assert stored is not None and stored.password_hash
        assert stored.password_hash.startswith("$argon2")


def test_mutations_are_audited_with_their_actor(db: Database) -> None:
    clock = Clock()
    with db.session() as s:
        u = users.add(s, clock, SYSTEM, "alice", "password 1")
        tokens.create_enrol(s, clock, user_actor(u.id, "alice"), "Audit Ltd", None, 60, 1,
                            None)
    with db.session() as s:
        rows = audit.recent(s)
    assert [(r["actor"], r["action"]) for r in reversed(rows)] == [
        ("system", "user.create"), ("alice", "customer.create"), ("alice", "token.create")]


def test_a_device_may_only_use_its_own_agent_routes() -> None:
    dev = device_actor("d1")
    access.require(dev, "agent.checkin", "d1")
    with pytest.raises(Forbidden):
        access.require(dev, "agent.checkin", "d2")
    with pytest.raises(Forbidden):
        access.require(dev, "commands.send")
    with pytest.raises(Forbidden):
        access.require(user_actor("u", "alice"), "agent.checkin", "d1")
