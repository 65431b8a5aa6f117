"""The dashboard: counts per colour, the device table (filtered, sorted and paged in SQL)
and the form that sends a command to the ticked devices. htmx asks for the table alone."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tiervault.console.errors import ConsoleError
from tiervault.console.services import colours, devices
from tiervault.console.web import queries
from tiervault.console.web.base import PageUser, Web
from tiervault.console.web.commands import COMMAND_CHOICES
from tiervault.protocol.messages import SESSION_STATUSES

FILTERS = ("q", "colour", "customer", "status", "os", "version", "sort")
COLUMNS: list[tuple[str | None, str]] = [
    ("colour", "Colour"), ("name", "Name"), ("customer", "Customer / site"), ("os", "OS"),
    ("version", "Version"), ("status", "Last status"), ("last_success", "Last success"),
    (None, "Speed vault"), (None, "Server"), ("selected", "Selected"), ("used", "Used"),
    (None, "Last errors"), ("last_seen", "Last seen"), (None, "Last 28 days")]
COLOUR_NAMES = {"green": "green", "orange": "orange", "red": "red", "blue": "running",
                "none": "never backed up"}
PER_PAGE = 50


def tier_status(d: dict[str, Any], role: str) -> str:
    """'online', 'syncing 40%', ... of the device's tiers in one role ('' when none)."""
    out = []
    for t in d.get("tiers") or []:
        if (t.get("role") or "server") != role:
            continue
        text = str(t.get("state") or "")
        if text == "syncing" and t.get("sync_percent") is not None:
            text += f" {float(t['sync_percent']):.0f}%"
        out.append(text)
    return ", ".join(out)


def _filters(request: Request) -> dict[str, str]:
    f = {k: (request.query_params.get(k) or "").strip()[:200] for k in FILTERS}
    f["sort"] = f["sort"] or "name"
    return f


def _query(f: dict[str, str], page: int) -> devices.DeviceQuery:
    colour, status = f["colour"] or None, f["status"] or None
    if colour == "offline":          # offline is a badge, not a colour
        colour, status = None, "offline"
    return devices.DeviceQuery(q=f["q"] or None, colour=colour, customer=f["customer"] or None,
                               status=status, os=f["os"] or None, version=f["version"] or None,
                               sort=f["sort"], page=page, per_page=PER_PAGE)


def _url(f: dict[str, str], **change: Any) -> str:
    values = {**f, **{k: str(v) for k, v in change.items()}}
    return "/?" + urlencode({k: v for k, v in values.items() if v and not
                             (k == "sort" and v == "name") and not (k == "page" and v == "1")})


def page_number(text: str | None) -> int:
    """The ?page= value: a whole number from 1, anything else is page 1."""
    raw = (text or "").strip()
    return max(1, min(int(raw), 10**6)) if raw.isdigit() else 1


def table_values(web: Web, user: PageUser, f: dict[str, str], page: int) -> dict[str, Any]:
    """What _devices.html needs: one page of rows, the counts and the links.

    A page past the last one shows the last one (a filter may have shrunk the list)."""
    with web.ctx.db.session() as s:
        rows, total = devices.query(s, web.ctx.clock, user.actor, _query(f, page))
        last = max(1, (total + PER_PAGE - 1) // PER_PAGE)
        if page > last:
            page = last
            rows, total = devices.query(s, web.ctx.clock, user.actor, _query(f, page))
        counts: dict[str, int] = dict(devices.colour_counts(s, web.ctx.clock, user.actor))
        counts["total"] = sum(v for k, v in counts.items() if k in colours.COLOURS)
        bars = queries.bars(s, web.ctx.clock, [d["id"] for d in rows])
    pages = max(1, (total + PER_PAGE - 1) // PER_PAGE)

    def sort_url(key: str) -> str:
        return _url(f, sort=("-" + key) if f["sort"] == key else key, page=1)

    return {"devices": rows, "total": total, "counts": counts, "bars": bars, "page": page,
            "pages": pages, "f": f, "columns": COLUMNS, "colours": colours.COLOURS,
            "colour_names": COLOUR_NAMES, "statuses": SESSION_STATUSES,
            "tier_status": tier_status, "sort_url": sort_url,
            "page_url": lambda p: _url(f, page=p), "here": _url(f, page=page)}


def router(web: Web) -> APIRouter:
    """The dashboard's routes."""
    r = APIRouter()

    @r.get("/", include_in_schema=False)
    def dashboard(request: Request) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
        f = _filters(request)
        try:
            values = table_values(web, user, f, page_number(request.query_params.get("page")))
        except ConsoleError as e:
            return web.redirect("/", flash=str(e))
        fragment = (request.headers.get("hx-request") == "true"
                    and request.headers.get("hx-target") == "devices")
        return web.render(request, "_devices.html" if fragment else "dashboard.html", user,
                          command_types=COMMAND_CHOICES, **values)

    return r
