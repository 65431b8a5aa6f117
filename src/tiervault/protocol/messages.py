"""Versioned message types of the agent protocol (version 1).

Every message is a dataclass whose fields are JSON values; ``to_json`` and the
``parse_*`` functions are the only way either side turns them into bytes and back.
Paths are under ``AGENT_PREFIX``; the device authenticates with
``Authorization: Bearer <credential>`` (enrolment with the enrolment token instead).

  POST {prefix}/enrol              EnrolRequest   -> EnrolResponse
  POST {prefix}/checkin            CheckIn        -> CheckInResponse
  POST {prefix}/sessions           SessionBatch   -> SessionAck
  GET  {prefix}/commands?wait=S    (long-poll)    -> CommandBatch
  POST {prefix}/commands/{id}      CommandUpdate  -> CommandUpdateAck
  POST {prefix}/rotate             (empty)        -> RotateResponse
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

PROTOCOL_VERSION = 1
AGENT_PREFIX = "/api/agent/v1"

# Limits both sides apply (the console refuses more with a 4xx; the agent never sends more).
MAX_BODY = 1 << 20          # bytes of one request body
MAX_TEXT = 4096             # characters of one free-text field (a message, a name is less)
MAX_NAME = 200              # characters of a name (device, set, customer, host)
MAX_ERRORS = 50             # error entries in one session report
MAX_BATCH = 100             # session reports in one batch
MAX_TIERS = 16              # tiers in one check-in
MAX_LOG = 256 * 1024        # bytes of an uploaded log (tail)
MAX_LISTING = 5000          # entries in one browsed directory listing

# Tier states a device reports (check-in).
TIER_STATES = ("online", "offline", "unsynchronized", "syncing")
# Command types (what `tiervault console command send` takes) and their default lifetime (s).
COMMAND_TYPES: dict[str, int] = {
    "backup": 24 * 3600, "cancel": 3600, "sync": 24 * 3600, "check": 24 * 3600,
    "restore": 24 * 3600, "retention": 24 * 3600, "bandwidth": 7 * 24 * 3600,
    "schedule": 7 * 24 * 3600, "upload-log": 3600, "browse": 120,
}
# The parameters each command type takes (KEY=VALUE of `console command send`): a key
# not listed is refused when the command is queued (a typo must not back up every set).
COMMAND_PARAMS: dict[str, tuple[str, ...]] = {
    "backup": ("set",), "cancel": ("all",), "sync": (),
    "check": ("read_data", "read_data_subset", "subset"),
    "restore": ("snapshot", "target", "paths", "overwrite"),
    "retention": ("set", "keep_last", "keep_hourly", "keep_daily", "keep_weekly",
                  "keep_monthly", "keep_yearly", "keep_within"),
    "bandwidth": ("tier", "upload", "download", "rules"),
    "schedule": ("set", "schedules", "cron", "time", "window", "missed", "days"),
    "upload-log": (), "browse": ("snapshot", "path"),
}
# Command states. queued -> delivered -> running -> succeeded | failed;
# queued/delivered -> expired; queued -> cancelled.
COMMAND_STATES = ("queued", "delivered", "running", "succeeded", "failed", "expired",
                  "cancelled")
FINAL_COMMAND_STATES = ("succeeded", "failed", "expired", "cancelled")
# Session kinds and statuses a device reports.
SESSION_KINDS = ("backup", "sync", "restore", "check", "retention", "job", "other")
SESSION_STATUSES = ("running", "success", "warnings", "failed", "cancelled")


class ProtocolError(ValueError):
    """A message does not have the shape or the bounds of the protocol."""


@dataclass
class EnrolRequest:
    """A device exchanges an enrolment token for its own credential (once)."""

    token: str
    name: str
    host: str
    os: str
    version: str
    protocol: int = PROTOCOL_VERSION
    #: A device enrolled before sends its old id and credential: when they still match
    #: (not revoked), the console keeps that device (history, commands) instead of adding one.
    previous_device_id: str | None = None
    previous_credential: str | None = None


@dataclass
class EnrolResponse:
    """What a device keeps (credential mode 0600) and applies (profile) after enrolling."""

    device_id: str
    credential: str
    customer: str
    site: str | None
    interval: int
    profile: dict[str, Any] | None = None
    #: The device's name on the console (a re-enrolled device keeps its own unless the
    #: request chose one); None from older consoles.
    name: str | None = None


@dataclass
class TierState:
    """One tier as the device sees it at check-in. ``url`` never carries a password."""

    url: str
    state: str                      # one of TIER_STATES
    revision: int | None = None
    last_online: str | None = None  # ISO 8601 with offset
    used_bytes: int | None = None
    sync_percent: float | None = None
    role: str | None = None         # "speed-vault" or "server"


@dataclass
class RunningJob:
    """The job running on the device now, with its progress."""

    kind: str
    set: str | None = None
    started: str | None = None
    files: int = 0
    bytes: int = 0
    phase: str | None = None
    command_id: str | None = None


@dataclass
class CheckIn:
    """Sent every ``console.interval`` seconds."""

    version: str
    os: str
    host: str
    tiers: list[TierState] = field(default_factory=list)
    running: RunningJob | None = None
    selected_bytes: int | None = None
    sets: list[dict[str, Any]] = field(default_factory=list)   # name, paths, schedules
    protocol: int = PROTOCOL_VERSION


@dataclass
class CheckInResponse:
    """The console's answer to a check-in."""

    interval: int
    commands_waiting: bool
    server_time: str
    rotate: bool = False            # the console asks for a new credential (POST /rotate)


@dataclass
class SessionError:
    """One error of a session."""

    message: str
    path: str | None = None


@dataclass
class SessionReport:
    """A finished (or failed) session; idempotent by ``session_id`` for one device."""

    session_id: str
    kind: str                                   # one of SESSION_KINDS
    status: str                                 # one of SESSION_STATUSES
    started: str                                # ISO 8601 with offset
    ended: str | None = None
    set: str | None = None
    snapshot: str | None = None
    files_selected: int = 0
    bytes_selected: int = 0
    files_processed: int = 0
    bytes_processed: int = 0
    bytes_sent: int = 0
    flags: str = ""                             # letters of A (archive), L (local only), P
    tiers_received: list[str] = field(default_factory=list)   # tier URLs, no passwords
    errors: list[SessionError] = field(default_factory=list)
    command_id: str | None = None


@dataclass
class SessionBatch:
    """Reports in the order the device made them (oldest first)."""

    reports: list[SessionReport]


@dataclass
class SessionAck:
    """Ids the console now holds (new or already held): the device may forget them."""

    accepted: list[str]


@dataclass
class Command:
    """A command handed to a device."""

    id: str
    type: str                                   # one of COMMAND_TYPES
    params: dict[str, Any]
    created: str
    expires: str


@dataclass
class CommandBatch:
    """Commands for the device (empty when a long-poll times out)."""

    commands: list[Command]


@dataclass
class CommandUpdate:
    """A device says what became of a command: running, then succeeded or failed."""

    state: str
    result: dict[str, Any] | None = None
    session_id: str | None = None


@dataclass
class CommandUpdateAck:
    """The command's state as the console holds it after the update."""

    id: str
    state: str


@dataclass
class RotateResponse:
    """A new credential; the old one stops working when this is answered."""

    credential: str


def to_json(msg: Any) -> bytes:
    """A message as UTF-8 JSON bytes."""
    if not is_dataclass(msg) or isinstance(msg, type):
        raise TypeError("not a protocol message")
    return json.dumps(asdict(msg), separators=(",", ":")).encode()


def _build(cls: type[Any], data: Any, depth: int = 0) -> Any:
    """A dataclass from parsed JSON, checking field names and basic types."""
    if depth > 4:
        raise ProtocolError("message nested too deeply")
    if not isinstance(data, dict):
        raise ProtocolError(f"{cls.__name__}: expected an object")
    known = {f.name: f for f in fields(cls)}
    nested = _NESTED.get(cls.__name__, {})
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            continue   # newer peers may add fields
        sub = nested.get(key)
        if sub is not None and value is not None:
            if isinstance(value, list):
                value = [_build(sub, v, depth + 1) for v in value]
            else:
                value = _build(sub, value, depth + 1)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ProtocolError(f"{cls.__name__}: {e}") from None


_NESTED: dict[str, dict[str, type[Any]]] = {
    "CheckIn": {"tiers": TierState, "running": RunningJob},
    "SessionReport": {"errors": SessionError},
    "SessionBatch": {"reports": SessionReport},
    "CommandBatch": {"commands": Command},
}


def parse(cls: type[Any], body: bytes) -> Any:
    """Parse JSON bytes into message ``cls``; ProtocolError when they are not one."""
    if len(body) > MAX_BODY * 8:
        raise ProtocolError("message too large")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"not JSON: {e}") from None
    return _build(cls, data)


__all__ = [
    "AGENT_PREFIX", "COMMAND_STATES", "COMMAND_TYPES", "FINAL_COMMAND_STATES", "MAX_BATCH",
    "MAX_BODY", "MAX_ERRORS", "MAX_LISTING", "MAX_LOG", "MAX_NAME", "MAX_TEXT", "MAX_TIERS",
    "PROTOCOL_VERSION", "SESSION_KINDS", "SESSION_STATUSES", "TIER_STATES", "CheckIn",
    "CheckInResponse", "Command", "CommandBatch", "CommandUpdate", "CommandUpdateAck",
    "EnrolRequest", "EnrolResponse", "ProtocolError", "RotateResponse", "RunningJob",
    "SessionAck", "SessionBatch", "SessionError", "SessionReport", "TierState", "parse",
    "to_json",
]
