"""Read-only queries the pages need beside the services: the 28-day bars of a page of
devices, a device's chart columns and snapshots (bounded, newest first)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock
from tiervault.console.services import colours
from tiervault.console.store.models import SessionRow


def bars(s: Session, clock: Clock, device_ids: list[str]) -> dict[str, list[tuple[str, Any]]]:
    """Each device's 28 (day, worst status) cells, from one query over the page's devices."""
    if not device_ids:
        return {}
    now = clock.now()
    since = now - timedelta(days=colours.BAR_DAYS)
    rows = s.execute(select(SessionRow.device_id, SessionRow.started, SessionRow.status)
                     .where(SessionRow.device_id.in_(device_ids), SessionRow.started >= since)
                     ).all()
    per: dict[str, list[tuple[Any, str]]] = {d: [] for d in device_ids}
    for dev, started, status in rows:
        per[dev].append((started, status))
    return {d: [(c["day"], c["status"]) for c in colours.day_bar(now, sess)]
            for d, sess in per.items()}


def chart(s: Session, device_id: str, limit: int = 500) -> dict[str, list[Any]]:
    """Columns for the chart: time (s), MiB sent, MiB processed, duration (s)."""
    rows = list(s.scalars(select(SessionRow).where(SessionRow.device_id == device_id,
                                                   SessionRow.ended.is_not(None))
                          .order_by(SessionRow.started.desc()).limit(limit)))
    rows.reverse()
    mib = 1024 * 1024
    return {"t": [r.started.timestamp() for r in rows],
            "sent": [round(r.bytes_sent / mib, 3) for r in rows],
            "processed": [round(r.bytes_processed / mib, 3) for r in rows],
            "duration": [max(0.0, (r.ended - r.started).total_seconds()) if r.ended else None
                         for r in rows]}


def snapshots(s: Session, device_id: str, limit: int = 50) -> list[str]:
    """Snapshot ids the device's recent sessions named, newest first, without repeats."""
    out: list[str] = []
    for snap in s.scalars(select(SessionRow.snapshot)
                          .where(SessionRow.device_id == device_id,
                                 SessionRow.snapshot.is_not(None))
                          .order_by(SessionRow.started.desc()).limit(limit * 4)):
        if snap and snap not in out:
            out.append(snap)
    return out[:limit]

