"""The agent routes' statements, built once (SQL core on the tables, no ORM objects).

Every device calls these every interval: 10,000 devices are ~170 check-ins and ~200
long-polls a second. Built from table columns with bind parameters, they skip the ORM's
per-call statement building and compilation (SQLAlchemy caches the compiled form of a
statement object that is reused), which cost most of a check-in's CPU.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, exists, func, or_, select, update

from tiervault.console.store.models import CommandRow, Device

_D: Table = Device.__table__  # type: ignore[assignment]
_C: Table = CommandRow.__table__  # type: ignore[assignment]

#: (id, revoked) of the device of a credential hash ``h``.
AUTH = select(_D.c.id, _D.c.revoked).where(_D.c.credential_hash == bindparam("h"))

#: A check-in's read: (id, revoked, interval, rotate_pending, commands waiting at ``now``).
CHECKIN_READ = select(
    _D.c.id, _D.c.revoked, _D.c.interval, _D.c.rotate_pending,
    exists().where(_C.c.device_id == _D.c.id, _C.c.state == "queued",
                   _C.c.expires > bindparam("now", type_=_C.c.expires.type)),
).where(_D.c.credential_hash == bindparam("h"))

#: A check-in's write (``selected_bytes`` and ``used_bytes`` None: keep the stored ones).
CHECKIN_WRITE = (
    update(_D).where(_D.c.id == bindparam("dev_id"))
    .values(last_seen=bindparam("last_seen"), version=bindparam("version"),
            os=bindparam("os"), host=bindparam("host"), tiers=bindparam("tiers"),
            running=bindparam("running"), sets=bindparam("sets"),
            selected_bytes=func.coalesce(bindparam("selected_bytes",
                                                   type_=_D.c.selected_bytes.type),
                                         _D.c.selected_bytes),
            used_bytes=func.coalesce(bindparam("used_bytes", type_=_D.c.used_bytes.type),
                                     _D.c.used_bytes)))

_OPEN = or_(_C.c.state == "queued", _C.c.state == "delivered")   # no expanding IN per call

#: Whether device ``d`` has a command queued or delivered (a long-poll's usual answer: no).
PENDING = select(_C.c.id).where(_C.c.device_id == bindparam("d"), _OPEN).limit(1)

#: A long-poll's read: (id, revoked, a command queued or delivered) of credential hash ``h``.
AUTH_PENDING = select(
    _D.c.id, _D.c.revoked, exists().where(_C.c.device_id == _D.c.id, _OPEN),
).where(_D.c.credential_hash == bindparam("h"))


def checkin_params(dev_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """CHECKIN_WRITE's parameters from services.devices.checkin_values."""
    return {"dev_id": dev_id, "last_seen": values["last_seen"], "version": values["version"],
            "os": values["os"], "host": values["host"], "tiers": values["tiers"],
            "running": values["running"], "sets": values["sets"],
            "selected_bytes": values.get("selected_bytes"),
            "used_bytes": values.get("used_bytes")}
