"""The audit log: one row per mutating action (who, what, on what, details)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock, iso
from tiervault.console.services.actor import Actor
from tiervault.console.store.models import AuditRow


def record(s: Session, clock: Clock, actor: Actor, action: str, target: str,
           details: dict[str, Any] | None = None) -> None:
    """Add one audit row to the session's transaction."""
    s.add(AuditRow(time=clock.now(), actor=actor.label, action=action, target=target,
                   details=details))


def recent(s: Session, limit: int = 100) -> list[dict[str, Any]]:
    """The newest audit rows, newest first."""
    rows = s.scalars(select(AuditRow).order_by(AuditRow.pk.desc()).limit(limit))
    return [{"time": iso(r.time), "actor": r.actor, "action": r.action, "target": r.target,
             "details": r.details} for r in rows]
