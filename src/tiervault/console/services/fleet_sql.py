"""The colour and the offline badge as SQL expressions, so the dashboard can filter, count
and sort 10,000 devices in the database. They follow services/colours.py exactly (a test
checks the two agree)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, or_, select
from sqlalchemy.orm import Session

from tiervault.console.services.colours import OFFLINE_INTERVALS
from tiervault.console.store.models import Customer, Device


def online_expr(s: Session, now: datetime) -> ColumnElement[bool]:
    """``online`` for every device: one term per distinct check-in interval in use."""
    intervals = [int(i) for i in s.scalars(select(Device.interval).distinct())]
    # A device that never checked in is offline too (its NULL must not drop out of
    # "not online" filters and counts): the comparison is made false, not NULL.
    terms = [and_(Device.interval == iv, Device.last_seen.is_not(None),
                  Device.last_seen > now - timedelta(seconds=OFFLINE_INTERVALS * max(iv, 1)))
             for iv in intervals]
    return or_(false(), *terms) if terms else false()


def _threshold_groups(s: Session) -> tuple[tuple[int, int], dict[tuple[int, int], list[str]]]:
    """The most common (green, orange) pair and the customers of every other pair."""
    rows = s.execute(select(Customer.id, Customer.green_hours, Customer.orange_hours)).all()
    pairs: dict[tuple[int, int], list[str]] = {}
    for cid, g, o in rows:
        pairs.setdefault((int(g), int(o)), []).append(cid)
    if not pairs:
        return (24, 48), {}
    common = Counter({p: len(v) for p, v in pairs.items()}).most_common(1)[0][0]
    return common, {p: v for p, v in pairs.items() if p != common}


def _younger_than(now: datetime, s: Session, orange: bool) -> ColumnElement[bool]:
    common, others = _threshold_groups(s)

    def hours(p: tuple[int, int]) -> int:
        return p[1] if orange else p[0]

    other_ids = [cid for ids in others.values() for cid in ids]
    terms: list[ColumnElement[bool]] = [
        and_(Device.customer_id.in_(ids), Device.last_success > now - timedelta(hours=hours(p)))
        for p, ids in others.items()]
    default_term = Device.last_success > now - timedelta(hours=hours(common))
    if other_ids:
        default_term = and_(Device.customer_id.not_in(other_ids), default_term)
    return or_(default_term, *terms)


def colour_expr(s: Session, now: datetime, is_online: ColumnElement[bool]) -> Any:
    """The colour of every device as one CASE expression."""
    return case(
        (and_(is_online, Device.running.is_not(None)), "blue"),
        (and_(Device.last_success.is_(None), Device.last_session_at.is_(None)), "none"),
        (or_(Device.last_status == "failed", Device.last_success.is_(None)), "red"),
        (_younger_than(now, s, orange=False), "green"),
        (_younger_than(now, s, orange=True), "orange"),
        else_="red",
    )
