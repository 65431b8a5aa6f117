"""The console's tables (SQLAlchemy 2 declarative models).

Ids are short random strings (``new_id``); times are stored as UTC and come back aware;
secrets are stored only as SHA-256 hashes. Colours are not stored: they are computed at
read time (services/colours.py).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    """A short random id (12 urlsafe characters, 72 bits)."""
    return secrets.token_urlsafe(9)


class UTCDateTime(TypeDecorator[datetime]):
    """A time stored as naive UTC (portable across SQLite and PostgreSQL), read back aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of every console table (constraints named, so later migrations can alter them
    on SQLite too)."""

    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class Customer(Base):
    """A customer of the provider; every device belongs to one."""

    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    green_hours: Mapped[int] = mapped_column(Integer, default=24)
    orange_hours: Mapped[int] = mapped_column(Integer, default=48)


class Site(Base):
    """A site (office, branch) of a customer."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("customer_id", "name", name="uq_sites_customer_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))


class User(Base):
    """A person who logs in to the console (argon2 password hash)."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A token a script sends as ``Authorization: Bearer tva_...``; acts as its user."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class EnrolToken(Base):
    """A token a new device exchanges for its own credential (lifetime, uses, profile)."""

    __tablename__ = "enrol_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    expires: Mapped[datetime] = mapped_column(UTCDateTime())
    uses_allowed: Mapped[int] = mapped_column(Integer, default=1)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(200))


class Device(Base):
    """An enrolled installation, with what its last check-in and sessions said."""

    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_customer_name", "customer_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    rotate_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    enrolled: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    interval: Mapped[int] = mapped_column(Integer, default=60)
    os: Mapped[str] = mapped_column(String(200), default="")
    host: Mapped[str] = mapped_column(String(200), default="")
    version: Mapped[str] = mapped_column(String(200), default="")
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    running: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True),
                                                           nullable=True)
    selected_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_session_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_success: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    sets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class SessionRow(Base):
    """One session a device reported; unique per (device, session id): replays are no-ops."""

    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("device_id", "session_id", name="uq_sessions_device_session"),
        Index("ix_sessions_device_started", "device_id", "started"),
    )
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    session_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    started: Mapped[datetime] = mapped_column(UTCDateTime())
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    set_name: Mapped[str | None] = mapped_column("set", String(200), nullable=True)
    snapshot: Mapped[str | None] = mapped_column(String(200), nullable=True)
    files_selected: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_selected: Mapped[int] = mapped_column(BigInteger, default=0)
    files_processed: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_processed: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    flags: Mapped[str] = mapped_column(String(16), default="")
    tiers_received: Mapped[list[str]] = mapped_column(JSON, default=list)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    command_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    received: Mapped[datetime] = mapped_column(UTCDateTime())


class CommandRow(Base):
    """A command queued for a device and what became of it."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_device_state", "device_id", "state"),
                      Index("ix_commands_state_expires", "state", "expires"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    type: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    created: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_by: Mapped[str] = mapped_column(String(200))
    expires: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(200), nullable=True)


class AuditRow(Base):
    """One mutating action: who did what to what (the next issue shows the log)."""

    __tablename__ = "audit"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Setting(Base):
    """Console-wide key/value settings (the one-time setup code's hash, ...)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


__all__ = ["ApiToken", "AuditRow", "Base", "CommandRow", "Customer", "Device", "EnrolToken",
           "SessionRow", "Setting", "Site", "UTCDateTime", "User", "new_id"]
