"""Users: names and argon2 password hashes. No default password, ever."""

from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock, iso
from tiervault.console.errors import BadValue, Conflict, Refused
from tiervault.console.services import audit
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor
from tiervault.console.services.secrets import same
from tiervault.console.services.validate import name_value
from tiervault.console.store.models import User

MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def _hasher() -> PasswordHasher:
    return PasswordHasher()


def count(s: Session) -> int:
    """How many users exist (0: the console answers only its setup page)."""
    return int(s.scalar(select(func.count()).select_from(User)) or 0)


def add(s: Session, clock: Clock, actor: Actor, name: str, password: str) -> User:
    """A new user with this password."""
    require(actor, "users.create", name)
    name = name_value(name, "user name")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadValue(f"password: needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if s.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"a user named {name!r} exists already")
    user = User(name=name, password_hash=_hasher().hash(password), created=clock.now())
    s.add(user)
    s.flush()
    audit.record(s, clock, actor, "user.create", user.id, {"name": name})
    return user


def setup_first(s: Session, clock: Clock, expected_code: str | None, code: str, name: str,
                password: str) -> User:
    """The setup page: the first user, allowed only with the one-time code and no user yet."""
    if count(s) > 0:
        raise Conflict("the console is set up already; log in")
    if not expected_code or not same(expected_code, code.strip()):
        raise Refused("wrong setup code (it is printed on the console's terminal)")
    from tiervault.console.services.actor import SYSTEM

    return add(s, clock, SYSTEM, name, password)


def verify(s: Session, name: str, password: str) -> User:
    """The user when the password matches; Refused otherwise (same message either way)."""
    user = s.scalar(select(User).where(User.name == name))
    if user is None or not user.password_hash:
        _hasher().hash("timing equaliser")
        raise Refused("wrong user name or password")
    try:
        _hasher().verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Refused("wrong user name or password") from None
    return user


def by_name(s: Session, name: str) -> User | None:
    """The user of this name."""
    return s.scalar(select(User).where(User.name == name))


def to_json(user: User) -> dict[str, Any]:
    """A user as the API shows it."""
    return {"id": user.id, "name": user.name, "created": iso(user.created)}
