"""Session reports: stored once per (device, session id); replays are acknowledged again.

A backup session also updates the device's summary (last status, last success, errors)
that the dashboard and the colours read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock, iso, parse_iso
from tiervault.console.errors import BadValue, Conflict, Forbidden, NotFound
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor
from tiervault.console.services.validate import int_value, text_value
from tiervault.console.store.models import CommandRow, Device, SessionRow
from tiervault.protocol.messages import (
    MAX_BATCH,
    MAX_ERRORS,
    MAX_NAME,
    SESSION_KINDS,
    SESSION_STATUSES,
    SessionBatch,
    SessionReport,
)

SUCCESS = ("success", "warnings")


def _time(value: Any, what: str, optional: bool = False) -> datetime | None:
    text = text_value(value, what, 64, optional=optional)
    if text is None:
        return None
    try:
        return parse_iso(text)
    except ValueError:
        raise BadValue(f"{what}: not an ISO 8601 time") from None


def _row(dev: Device, r: SessionReport, now: datetime) -> SessionRow:
    sid = text_value(r.session_id, "session_id", MAX_NAME)
    if not sid:
        raise BadValue("session_id: empty")
    if r.kind not in SESSION_KINDS:
        raise BadValue(f"kind: one of {', '.join(SESSION_KINDS)}")
    if r.status not in SESSION_STATUSES:
        raise BadValue(f"status: one of {', '.join(SESSION_STATUSES)}")
    if not isinstance(r.errors, list) or len(r.errors) > MAX_ERRORS:
        raise BadValue(f"errors: a list of at most {MAX_ERRORS}")
    if not isinstance(r.tiers_received, list) or len(r.tiers_received) > 16:
        raise BadValue("tiers_received: a list of at most 16")
    flags = text_value(r.flags, "flags", 16) or ""
    if set(flags) - set("ALP"):
        raise BadValue("flags: letters of A, L, P")
    started = _time(r.started, "started")
    assert started is not None
    from tiervault.console.services.devices import strip_password

    return SessionRow(
        device_id=dev.id, session_id=sid, kind=r.kind, status=r.status, started=started,
        ended=_time(r.ended, "ended", optional=True),
        set_name=text_value(r.set, "set", MAX_NAME, optional=True),
        snapshot=text_value(r.snapshot, "snapshot", MAX_NAME, optional=True),
        files_selected=int_value(r.files_selected, "files_selected") or 0,
        bytes_selected=int_value(r.bytes_selected, "bytes_selected") or 0,
        files_processed=int_value(r.files_processed, "files_processed") or 0,
        bytes_processed=int_value(r.bytes_processed, "bytes_processed") or 0,
        bytes_sent=int_value(r.bytes_sent, "bytes_sent") or 0,
        flags=flags,
        tiers_received=[strip_password(text_value(t, "tier", 2048) or "")
                        for t in r.tiers_received],
        errors=[{"message": text_value(e.message, "error message"),
                 "path": text_value(e.path, "error path", optional=True)} for e in r.errors],
        command_id=text_value(r.command_id, "command_id", 64, optional=True),
        received=now)


def _summarise(dev: Device, row: SessionRow) -> None:
    if row.kind != "backup" or row.status == "running":
        return
    at = row.ended or row.started
    if dev.last_session_at is None or at >= dev.last_session_at:
        dev.last_session_at = at
        dev.last_status = row.status
        dev.last_errors = row.errors
        if row.bytes_selected and dev.selected_bytes is None:
            dev.selected_bytes = row.bytes_selected
    if row.status in SUCCESS and (dev.last_success is None or at > dev.last_success):
        dev.last_success = at


def ingest(s: Session, clock: Clock, actor: Actor, dev: Device, batch: SessionBatch
           ) -> list[str]:
    """Store the batch's new reports; the ids of every report the console now holds."""
    require(actor, "agent.sessions", dev.id)
    if not isinstance(batch.reports, list) or len(batch.reports) > MAX_BATCH:
        raise BadValue(f"reports: a list of at most {MAX_BATCH}")
    now = clock.now()
    rows = [_row(dev, r, now) for r in batch.reports]
    ids = [r.session_id for r in rows]
    if len(set(ids)) != len(ids):
        raise BadValue("reports: a session id appears twice in one batch")
    held = {sid: did for sid, did in s.execute(
        select(SessionRow.session_id, SessionRow.device_id)
        .where(SessionRow.session_id.in_(ids))).tuples()}
    if any(did != dev.id for did in held.values()):
        raise Conflict("a session id of this batch belongs to another device")
    cmd_ids = {r.command_id for r in rows if r.command_id}
    if cmd_ids:
        owners = dict(s.execute(select(CommandRow.id, CommandRow.device_id)
                                .where(CommandRow.id.in_(cmd_ids))).tuples().all())
        if any(owners.get(c, dev.id) != dev.id for c in cmd_ids):
            raise Forbidden("a report names a command of another device")
    for row in rows:
        if row.session_id in held:
            continue
        s.add(row)
        _summarise(dev, row)
        if row.command_id:
            cmd = s.get(CommandRow, row.command_id)
            if cmd is not None and cmd.session_id is None:
                cmd.session_id = row.session_id
    return ids


def to_json(row: SessionRow) -> dict[str, Any]:
    """A session as the API shows it."""
    return {"session_id": row.session_id, "kind": row.kind, "status": row.status,
            "started": iso(row.started), "ended": iso(row.ended), "set": row.set_name,
            "snapshot": row.snapshot, "files_selected": row.files_selected,
            "bytes_selected": row.bytes_selected, "files_processed": row.files_processed,
            "bytes_processed": row.bytes_processed, "bytes_sent": row.bytes_sent,
            "flags": row.flags, "tiers_received": row.tiers_received,
            "errors": row.errors, "command_id": row.command_id,
            "received": iso(row.received),
            "duration": ((row.ended - row.started).total_seconds() if row.ended else None)}


def of_device(s: Session, actor: Actor, device_id: str, limit: int = 100,
              before: int | None = None) -> list[dict[str, Any]]:
    """A device's sessions, newest first."""
    require(actor, "devices.read", device_id)
    if s.get(Device, device_id) is None:
        raise NotFound(f"no device {device_id!r}")
    stmt = select(SessionRow).where(SessionRow.device_id == device_id)
    if before is not None:
        stmt = stmt.where(SessionRow.pk < before)
    stmt = stmt.order_by(SessionRow.started.desc(), SessionRow.pk.desc()).limit(limit)
    return [to_json(r) for r in s.scalars(stmt)]


def day_statuses(s: Session, device_id: str, since: datetime) -> list[tuple[datetime, str]]:
    """(started, status) of a device's sessions since ``since`` (for the 28-day bar)."""
    return list(s.execute(select(SessionRow.started, SessionRow.status)
                          .where(SessionRow.device_id == device_id,
                                 SessionRow.started >= since)).tuples())
