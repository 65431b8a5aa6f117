"""Remote commands: queued for one device or many, delivered by long-poll, updated by the
device, expired by the console's clock, cancelled while still queued.

States: queued -> delivered -> running -> succeeded | failed; queued/delivered ->
expired; queued -> cancelled. A delivered command not yet running is handed out again
after REDELIVER_AFTER (delivered at least once); the device runs each id at most once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock, iso
from tiervault.console.errors import BadValue, Conflict, NotFound
from tiervault.console.services import audit, devices
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor
from tiervault.console.services.agent_sql import PENDING
from tiervault.console.services.validate import int_value, object_value, text_value
from tiervault.console.store.models import CommandRow, Device
from tiervault.protocol.messages import (
    COMMAND_PARAMS,
    COMMAND_TYPES,
    FINAL_COMMAND_STATES,
    MAX_NAME,
    Command,
    CommandUpdate,
)

REDELIVER_AFTER = 30          # s before a delivered, not yet running command goes out again
MAX_DEVICES_PER_SEND = 10_000
MAX_TTL = 30 * 24 * 3600
DEVICE_STATES = ("running", "succeeded", "failed")


def expire_due(s: Session, clock: Clock, device_id: str | None = None) -> None:
    """Mark queued or delivered commands past their expiry as expired."""
    stmt = (update(CommandRow)
            .where(CommandRow.state.in_(("queued", "delivered")),
                   CommandRow.expires <= clock.now()))
    if device_id is not None:
        stmt = stmt.where(CommandRow.device_id == device_id)
    s.execute(stmt.values(state="expired", finished=clock.now()))


def queue(s: Session, clock: Clock, actor: Actor, device_refs: list[str], type_: str,
          params: dict[str, Any] | None, ttl: int | None = None) -> list[CommandRow]:
    """One command per device, queued (the caller wakes the devices after the commit).

    Revoked devices among several are left out (a "select all" still reaches the live
    ones; callers tell the user which were left out); only revoked ones: Conflict."""
    require(actor, "commands.send")
    if type_ not in COMMAND_TYPES:
        raise BadValue(f"command type {type_!r}: one of {', '.join(COMMAND_TYPES)}")
    if not device_refs or len(device_refs) > MAX_DEVICES_PER_SEND:
        raise BadValue(f"devices: between 1 and {MAX_DEVICES_PER_SEND}")
    params = object_value(params or {}, "params") or {}
    unknown = sorted(set(params) - set(COMMAND_PARAMS[type_]))
    if unknown:
        takes = ", ".join(COMMAND_PARAMS[type_]) or "no parameters"
        raise BadValue(f"{type_} does not take {', '.join(map(repr, unknown))} "
                       f"(it takes: {takes})")
    lifetime = int_value(ttl, "ttl", optional=True, low=1, high=MAX_TTL) or COMMAND_TYPES[type_]
    devs = devices.exists_all(s, [text_value(r, "device", MAX_NAME) or "" for r in device_refs])
    live = [d for d in devs if not d.revoked]
    if not live:   # sent to revoked devices only; among others they are left out
        dev = devs[0]
        raise Conflict(f"device {dev.name!r} ({dev.id}) is revoked")
    now = clock.now()
    rows = []
    for dev in live:
        row = CommandRow(device_id=dev.id, type=type_, params=params, state="queued",
                         created=now, created_by=actor.label,
                         expires=now + timedelta(seconds=lifetime))
        s.add(row)
        rows.append(row)
    s.flush()
    for row in rows:
        audit.record(s, clock, actor, "command.send", row.id,
                     {"device": row.device_id, "type": type_, "params": params})
    return rows


def deliver(s: Session, clock: Clock, actor: Actor, device_id: str) -> list[Command]:
    """The commands to hand the device now (marked delivered)."""
    require(actor, "agent.commands", device_id)
    if s.connection().execute(PENDING, {"d": device_id}).first() is None:
        return []   # the usual answer, without building ORM objects
    now = clock.now()
    again = now - timedelta(seconds=REDELIVER_AFTER)
    # One indexed read; a write only when something is handed out or expires.
    pending = s.scalars(
        select(CommandRow)
        .where(CommandRow.device_id == device_id,
               CommandRow.state.in_(("queued", "delivered")))
        .order_by(CommandRow.created, CommandRow.id))
    rows = []
    for row in pending:
        if row.expires <= now:
            row.state, row.finished = "expired", now
        elif row.state == "queued" or (row.delivered is not None and row.delivered <= again):
            row.state, row.delivered = "delivered", now
            rows.append(row)
    return [Command(id=r.id, type=r.type, params=r.params or {}, created=iso(r.created) or "",
                    expires=iso(r.expires) or "") for r in rows]


def device_update(s: Session, clock: Clock, actor: Actor, device_id: str, command_id: str,
                  msg: CommandUpdate) -> CommandRow:
    """The device says a command runs, succeeded or failed."""
    require(actor, "agent.command_update", device_id)
    row = s.get(CommandRow, command_id)
    if row is None or row.device_id != device_id:
        raise NotFound(f"no command {command_id!r} for this device")
    if msg.state not in DEVICE_STATES:
        raise BadValue(f"state: one of {', '.join(DEVICE_STATES)}")
    result = object_value(msg.result, "result")
    session_id = text_value(msg.session_id, "session_id", MAX_NAME, optional=True)
    if row.state == msg.state or row.state in ("succeeded", "failed"):
        return row   # a repeated update (the ack was lost): the first one stands
    if row.state == "cancelled":
        raise Conflict(f"command {row.id} was cancelled")
    if msg.state == "running" and row.state not in ("queued", "delivered", "expired"):
        raise Conflict(f"command {row.id} is {row.state}")
    now = clock.now()
    # An expired command that the device got before it expired ran all the same: say so.
    row.state = msg.state
    if msg.state == "running":
        row.started = now
    else:
        row.started = row.started or now
        row.finished = now
        row.result = result
    if session_id:
        row.session_id = session_id
    audit.record(s, clock, actor, f"command.{msg.state}", row.id)
    return row


def cancel(s: Session, clock: Clock, actor: Actor, command_id: str) -> CommandRow:
    """Cancel a command still queued (a delivered one may be running already)."""
    require(actor, "commands.cancel", command_id)
    expire_due(s, clock)
    row = s.get(CommandRow, command_id)
    if row is None:
        raise NotFound(f"no command {command_id!r}")
    if row.state != "queued":
        if row.state in ("delivered", "running"):
            raise Conflict(f"command {row.id} is {row.state}: only a queued command can be "
                           "cancelled (send a 'cancel' command to stop a running job)")
        raise Conflict(f"command {row.id} has ended ({row.state}): only a queued command "
                       "can be cancelled")
    row.state = "cancelled"
    row.finished = clock.now()
    audit.record(s, clock, actor, "command.cancel", row.id)
    return row


def show(s: Session, clock: Clock, actor: Actor, command_id: str) -> dict[str, Any]:
    """One command with its result and session."""
    require(actor, "commands.read", command_id)
    expire_due(s, clock)
    row = s.get(CommandRow, command_id)
    if row is None:
        raise NotFound(f"no command {command_id!r}")
    return to_json(row, s.get(Device, row.device_id), full=True)


def listing(s: Session, clock: Clock, actor: Actor, device_id: str | None = None,
            state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Commands, newest first (of one device, in one state), with result and session."""
    require(actor, "commands.read")
    expire_due(s, clock)
    stmt = select(CommandRow, Device).join(Device, Device.id == CommandRow.device_id)
    if device_id is not None:
        stmt = stmt.where(CommandRow.device_id == device_id)
    if state is not None:
        stmt = stmt.where(CommandRow.state == state)
    stmt = stmt.order_by(CommandRow.created.desc(), CommandRow.id).limit(limit)
    return [_brief(to_json(c, d, full=True)) for c, d in s.execute(stmt).tuples()]


def _brief(cmd: dict[str, Any]) -> dict[str, Any]:
    """A listing's command: a browse result's entries counted, not repeated."""
    result = cmd.get("result")
    if isinstance(result, dict):
        for key in ("entries", "listing"):
            if isinstance(result.get(key), list):
                result = {**result, key: len(result[key])}
        cmd["result"] = result
    return cmd


def to_json(row: CommandRow, dev: Device | None, full: bool = False) -> dict[str, Any]:
    """A command object of the JSON contract (``full`` adds result and session_id)."""
    out: dict[str, Any] = {
        "id": row.id, "device": row.device_id, "device_name": dev.name if dev else None,
        "type": row.type, "params": row.params, "state": row.state,
        "created": iso(row.created), "created_by": row.created_by,
        "expires": iso(row.expires), "delivered": iso(row.delivered),
        "started": iso(row.started), "finished": iso(row.finished),
    }
    if full:
        out.update(result=row.result, session_id=row.session_id)
    return out


def is_final(state: str) -> bool:
    """True for succeeded, failed, expired, cancelled."""
    return state in FINAL_COMMAND_STATES
