"""Devices: authentication by credential, check-ins, the dashboard's rows, revoke, rotate.

A check-in is one indexed read (the credential's hash, with "commands waiting" as a
sub-select) and one update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, Select, func, or_, select, update
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock, iso
from tiervault.console.errors import BadValue, NotFound, Refused
from tiervault.console.services import agent_sql, audit, colours
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor
from tiervault.console.services.fleet_sql import colour_expr, online_expr
from tiervault.console.services.secrets import DEVICE_PREFIX, hash_secret, new_secret
from tiervault.console.services.validate import (
    int_value,
    json_value,
    name_value,
    number_value,
    text_value,
)
from tiervault.console.store.models import CommandRow, Customer, Device, Site
from tiervault.protocol.messages import (
    MAX_NAME,
    MAX_TIERS,
    TIER_STATES,
    CheckIn,
    RunningJob,
    TierState,
)

MAX_PER_PAGE = 500
SORTS = {"name": Device.name, "customer": Customer.name, "os": Device.os,
         "version": Device.version, "host": Device.host, "last_seen": Device.last_seen,
         "last_success": Device.last_success, "status": Device.last_status,
         "used": Device.used_bytes, "selected": Device.selected_bytes}


def strip_password(url: str) -> str:
    """A URL without the password of its netloc (tiers are shown, secrets are not)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


# -- the agent side ----------------------------------------------------------------------

def authenticate(s: Session, credential: str | None) -> Device:
    """The device of a credential; Refused for a missing, unknown or revoked one."""
    if not credential or not credential.startswith(DEVICE_PREFIX) or len(credential) > 200:
        raise Refused("no device credential (Authorization: Bearer tvd_...)")
    dev = s.scalar(select(Device).where(Device.credential_hash == hash_secret(credential)))
    if dev is None or dev.revoked:
        raise Refused("unknown or revoked device credential")
    return dev


def authenticate_id(s: Session, credential: str | None) -> str:
    """The id of a credential's device (one indexed read of two columns, no ORM object);
    Refused for a missing, unknown or revoked one."""
    if not credential or not credential.startswith(DEVICE_PREFIX) or len(credential) > 200:
        raise Refused("no device credential (Authorization: Bearer tvd_...)")
    row = s.connection().execute(agent_sql.AUTH, {"h": hash_secret(credential)}).first()
    if row is None or row[1]:
        raise Refused("unknown or revoked device credential")
    return str(row[0])


def authenticate_pending(conn: Connection, credential: str | None) -> tuple[str, bool]:
    """(device id, whether a command is queued or delivered for it) of a credential: one
    statement, a long-poll's whole transaction when nothing waits. Refused as above."""
    if not credential or not credential.startswith(DEVICE_PREFIX) or len(credential) > 200:
        raise Refused("no device credential (Authorization: Bearer tvd_...)")
    row = conn.execute(agent_sql.AUTH_PENDING, {"h": hash_secret(credential)}).first()
    if row is None or row[1]:
        raise Refused("unknown or revoked device credential")
    return str(row[0]), bool(row[2])


@dataclass
class CheckedIn:
    """What the check-in route answers with."""

    device_id: str
    interval: int
    commands_waiting: bool
    rotate: bool


def checkin(conn: Connection, clock: Clock, actor_of: Callable[[str], Actor],
            credential: str | None, read: Callable[[], CheckIn]) -> CheckedIn:
    """Authenticate and store a check-in: one indexed read and one UPDATE (statements of
    services/agent_sql.py: this is the route every device calls every interval).

    ``actor_of(device_id)`` gives the actor whose permission is checked; ``read()`` parses
    the message (after the credential is checked: a stranger gets 401, not 400).
    """
    if not credential or not credential.startswith(DEVICE_PREFIX) or len(credential) > 200:
        raise Refused("no device credential (Authorization: Bearer tvd_...)")
    now = clock.now()
    row = conn.execute(agent_sql.CHECKIN_READ, {"h": hash_secret(credential), "now": now}).first()
    if row is None or row[1]:
        raise Refused("unknown or revoked device credential")
    dev_id, _revoked, interval, rotate, is_waiting = row
    require(actor_of(dev_id), "agent.checkin", dev_id)
    conn.execute(agent_sql.CHECKIN_WRITE,
                 agent_sql.checkin_params(dev_id, checkin_values(read(), now)))
    return CheckedIn(dev_id, int(interval), bool(is_waiting), bool(rotate))


def _tier(t: Any) -> dict[str, Any]:
    if not isinstance(t, TierState):
        raise BadValue("tiers: a list of tier objects")
    state = text_value(t.state, "tier state", 32)
    if state not in TIER_STATES:
        raise BadValue(f"tier state: one of {', '.join(TIER_STATES)}")
    url = text_value(t.url, "tier url", 2048)
    assert url is not None
    return {"url": strip_password(url), "state": state,
            "revision": int_value(t.revision, "tier revision", optional=True),
            "last_online": text_value(t.last_online, "tier last_online", 64, optional=True),
            "used_bytes": int_value(t.used_bytes, "tier used_bytes", optional=True),
            "sync_percent": number_value(t.sync_percent, "tier sync_percent", optional=True),
            "role": text_value(t.role, "tier role", 32, optional=True)}


def _running(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    if not isinstance(r, RunningJob):
        raise BadValue("running: one job object")
    return {"kind": text_value(r.kind, "running kind", 32),
            "set": text_value(r.set, "running set", MAX_NAME, optional=True),
            "started": text_value(r.started, "running started", 64, optional=True),
            "files": int_value(r.files, "running files"),
            "bytes": int_value(r.bytes, "running bytes"),
            "phase": text_value(r.phase, "running phase", MAX_NAME, optional=True),
            "command_id": text_value(r.command_id, "running command_id", 64, optional=True)}


def checkin_values(msg: CheckIn, now: Any) -> dict[str, Any]:
    """The device columns a check-in sets (validated first: all or nothing)."""
    if not isinstance(msg.tiers, list) or len(msg.tiers) > MAX_TIERS:
        raise BadValue(f"tiers: a list of at most {MAX_TIERS}")
    if not isinstance(msg.sets, list) or len(msg.sets) > 100:
        raise BadValue("sets: a list of at most 100")
    tiers = [_tier(t) for t in msg.tiers]
    values: dict[str, Any] = {
        "last_seen": now,
        "version": text_value(msg.version, "version", MAX_NAME) or "",
        "os": text_value(msg.os, "os", MAX_NAME) or "",
        "host": text_value(msg.host, "host", MAX_NAME) or "",
        "tiers": tiers, "running": _running(msg.running),
        "sets": json_value(msg.sets, "sets"),
    }
    selected = int_value(msg.selected_bytes, "selected_bytes", optional=True)
    if selected is not None:
        values["selected_bytes"] = selected
    used = [t["used_bytes"] for t in tiers if t["used_bytes"] is not None]
    values["used_bytes"] = max(used) if used else None
    return values


# -- the management side ----------------------------------------------------------------

@dataclass
class DeviceQuery:
    """The dashboard's filters, sort and page."""

    q: str | None = None
    colour: str | None = None
    customer: str | None = None
    status: str | None = None        # a last session status, or "online" / "offline"
    os: str | None = None
    version: str | None = None
    sort: str = "name"               # a key of SORTS or "colour", "-" first for descending
    page: int = 1
    per_page: int = 50


def _like(text: str) -> str:
    esc = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


def _base(s: Session, clock: Clock) -> tuple[Select[Any], Any, Any]:
    now = clock.now()
    on = online_expr(s, now)
    col = colour_expr(s, now, on)
    stmt = (select(Device, Customer.name, Site.name, Customer.green_hours,
                   Customer.orange_hours, col.label("colour"), on.label("online"))
            .join(Customer, Customer.id == Device.customer_id)
            .outerjoin(Site, Site.id == Device.site_id))
    return stmt, col, on


def _filtered(stmt: Select[Any], q: DeviceQuery, col: Any, on: Any) -> Select[Any]:
    if q.q:
        pat = _like(q.q)
        stmt = stmt.where(or_(func.lower(Device.name).like(pat, escape="\\"),
                              func.lower(Device.host).like(pat, escape="\\"),
                              func.lower(Customer.name).like(pat, escape="\\")))
    if q.colour:
        if q.colour not in colours.COLOURS:
            raise BadValue(f"colour {q.colour!r}: one of {', '.join(colours.COLOURS)} "
                           "(offline is a badge: use status offline)")
        stmt = stmt.where(col == q.colour)
    if q.customer:
        stmt = stmt.where(Customer.name == q.customer)
    if q.status == "online":
        stmt = stmt.where(on)
    elif q.status == "offline":
        stmt = stmt.where(~on)
    elif q.status:
        stmt = stmt.where(Device.last_status == q.status)
    if q.os:
        stmt = stmt.where(func.lower(Device.os).like(_like(q.os), escape="\\"))
    if q.version:
        stmt = stmt.where(Device.version == q.version)
    return stmt


def query(s: Session, clock: Clock, actor: Actor, q: DeviceQuery
          ) -> tuple[list[dict[str, Any]], int]:
    """One page of the dashboard's rows (device JSON objects) and the total matching."""
    require(actor, "devices.read")
    per_page = int_value(q.per_page, "per_page", low=1, high=MAX_PER_PAGE) or 50
    page = int_value(q.page, "page", low=1, high=10**7) or 1
    stmt, col, on = _base(s, clock)
    stmt = _filtered(stmt, q, col, on)
    total = int(s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0)
    key = q.sort.lstrip("-")
    order = col if key == "colour" else SORTS.get(key)
    if order is None:
        raise BadValue(f"sort: one of colour, {', '.join(SORTS)}")
    order = order.desc() if q.sort.startswith("-") else order.asc()
    stmt = stmt.order_by(order, Device.id).offset((page - 1) * per_page).limit(per_page)
    return [_json(clock, *row) for row in s.execute(stmt).all()], total


def colour_counts(s: Session, clock: Clock, actor: Actor, q: DeviceQuery | None = None
                  ) -> dict[str, int]:
    """Devices per colour (and "offline"), for the counts on top of the dashboard."""
    require(actor, "devices.read")
    stmt, col, on = _base(s, clock)
    sub = _filtered(stmt, q or DeviceQuery(), col, on).subquery()
    counts = dict.fromkeys(colours.COLOURS, 0)
    for c, n in s.execute(select(sub.c.colour, func.count()).group_by(sub.c.colour)).all():
        counts[str(c)] = int(n)
    counts["offline"] = int(s.scalar(select(func.count()).select_from(sub)
                                     .where(~sub.c.online)) or 0)
    return counts


def get(s: Session, clock: Clock, actor: Actor, device_id: str) -> dict[str, Any]:
    """One device's JSON object."""
    require(actor, "devices.read", device_id)
    stmt, _col, _on = _base(s, clock)
    row = s.execute(stmt.where(Device.id == device_id)).first()
    if row is None:
        raise NotFound(f"no device {device_id!r}")
    out = _json(clock, *row)
    dev = row[0]
    out.update(sets=dev.sets, interval=dev.interval, enrolled=iso(dev.enrolled),
               revoked=dev.revoked, last_session_at=iso(dev.last_session_at))
    return out


def find(s: Session, ref: str) -> Device:
    """A device by id, else by a unique name (a live device before revoked ones of the
    same name); NotFound otherwise."""
    dev = s.get(Device, ref)
    if dev is not None:
        return dev
    found = list(s.scalars(select(Device).where(Device.name == ref).limit(50)))
    if len(found) > 1:
        # A revoked device keeps its name in the history; a live one of that name is meant.
        found = [d for d in found if not d.revoked] or found
    if len(found) == 1:
        return found[0]
    if found:
        raise BadValue(f"more than one device is named {ref!r}: use its id")
    raise NotFound(f"no device {ref!r}")


def _json(clock: Clock, dev: Device, customer: str, site: str | None, green_hours: int,
          orange_hours: int, _sql_colour: str, _sql_online: bool) -> dict[str, Any]:
    """The device object of the JSON contract (colour and online from services/colours)."""
    now = clock.now()
    is_online = colours.online(now, dev.last_seen, dev.interval)
    colour = colours.colour(now, is_online=is_online, running=dev.running,
                            last_status=dev.last_status, last_session_at=dev.last_session_at,
                            last_success=dev.last_success, green_hours=green_hours,
                            orange_hours=orange_hours)
    return {
        "id": dev.id, "name": dev.name, "customer": customer, "site": site,
        "colour": colour, "online": is_online,
        "last_seen": iso(dev.last_seen), "last_success": iso(dev.last_success),
        "last_status": dev.last_status, "os": dev.os, "version": dev.version,
        "host": dev.host, "tiers": dev.tiers or [], "selected_bytes": dev.selected_bytes,
        "used_bytes": dev.used_bytes, "last_errors": dev.last_errors or [],
        "running": dev.running if is_online else None,
    }


def revoke(s: Session, clock: Clock, actor: Actor, ref: str) -> Device:
    """The device's credential stops working at once; its queued commands are cancelled
    (they could never be delivered), those delivered and unreported count as failed."""
    dev = find(s, ref)
    require(actor, "devices.revoke", dev.id)
    if dev.revoked:
        return dev   # once is enough (nothing queued is left; no second audit entry)
    dev.revoked = True
    now = clock.now()
    dropped = s.execute(update(CommandRow)
                        .where(CommandRow.device_id == dev.id, CommandRow.state == "queued")
                        .values(state="cancelled", finished=now))
    s.execute(update(CommandRow)
              .where(CommandRow.device_id == dev.id,
                     CommandRow.state.in_(("delivered", "running")))
              .values(state="failed", finished=now,
                      result={"error": "the device was revoked before it reported"}))
    audit.record(s, clock, actor, "device.revoke", dev.id,
                 {"commands_cancelled": int(getattr(dropped, "rowcount", 0) or 0)})
    return dev


def request_rotation(s: Session, clock: Clock, actor: Actor, ref: str) -> Device:
    """Ask the device to rotate its credential at its next check-in."""
    dev = find(s, ref)
    require(actor, "devices.rotate", dev.id)
    dev.rotate_pending = True
    audit.record(s, clock, actor, "device.rotate_request", dev.id)
    return dev


def rotate(s: Session, clock: Clock, actor: Actor, dev: Device) -> str:
    """A new credential for the device (the agent's /rotate); the old one stops working."""
    require(actor, "agent.rotate", dev.id)
    credential = new_secret(DEVICE_PREFIX)
    dev.credential_hash = hash_secret(credential)
    dev.rotate_pending = False
    audit.record(s, clock, actor, "device.rotate", dev.id)
    return credential


def rename(s: Session, clock: Clock, actor: Actor, ref: str, name: str) -> Device:
    """Give a device another name."""
    dev = find(s, ref)
    require(actor, "devices.rotate", dev.id)
    dev.name = name_value(name, "device name")
    audit.record(s, clock, actor, "device.rename", dev.id, {"name": dev.name})
    return dev


def exists_all(s: Session, refs: list[str]) -> list[Device]:
    """Devices by id or unique name, in order; NotFound names the first missing one."""
    return [find(s, r) for r in refs]
