"""A device's page: facts, tiers, sets, chart, commands, sessions, and snapshot browsing
(a "browse" command the device answers with a listing; files picked there are restored
by a "restore" command)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup

from tiervault.console.errors import ConsoleError, NotFound
from tiervault.console.services import commands as command_service
from tiervault.console.services import devices
from tiervault.console.services import sessions as session_service
from tiervault.console.web import queries
from tiervault.console.web.base import PageUser, Web
from tiervault.console.web.commands import COMMAND_CHOICES, params_from_form, send
from tiervault.protocol.messages import MAX_LISTING

BROWSE_WAITING = ("queued", "delivered", "running")


def _entries(result: dict[str, Any] | None, path: str) -> tuple[list[dict[str, Any]], bool]:
    """The listing's entries (name, path, type, size, mtime), bounded by MAX_LISTING."""
    raw = (result or {}).get("entries") or (result or {}).get("listing") or []
    out: list[dict[str, Any]] = []
    for e in raw[:MAX_LISTING] if isinstance(raw, list) else []:
        if not isinstance(e, dict):
            continue
        # `tiervault ls --json` names entries by path; a name alone is in this directory
        full = e.get("path") if isinstance(e.get("path"), str) else None
        name = e.get("name") if isinstance(e.get("name"), str) else None
        if not full and not name:
            continue
        name = name or str(full).rstrip("/").rsplit("/", 1)[-1] or str(full)
        full = full or path.rstrip("/") + "/" + name
        out.append({"name": name, "path": full, "type": str(e.get("type") or "file"),
                    "size": e.get("size") if isinstance(e.get("size"), int) else None,
                    "mtime": e.get("mtime")})
    truncated = bool((result or {}).get("truncated")) or (isinstance(raw, list)
                                                          and len(raw) > MAX_LISTING)
    return out, truncated


def router(web: Web) -> APIRouter:
    """The device page's routes."""
    r = APIRouter()

    def load(request: Request, device_id: str) -> tuple[PageUser, dict[str, Any]]:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
            return user, devices.get(s, web.ctx.clock, user.actor, device_id)

    def full_page(request: Request, user: PageUser, d: dict[str, Any],
                  listing_html: str = "") -> Response:
        with web.ctx.db.session() as s:
            values: dict[str, Any] = {
                "sessions": session_service.of_device(s, user.actor, d["id"]),
                "commands": command_service.listing(s, web.ctx.clock, user.actor,
                                                    device_id=d["id"], limit=100),
                "snapshots": queries.snapshots(s, d["id"]),
                "bars": queries.bars(s, web.ctx.clock, [d["id"]])}
        sets = [x for x in d.get("sets") or [] if isinstance(x, dict)]
        return web.render(request, "device.html", user, d=d, sets=[
            {"name": x.get("name", ""), "paths": [str(p) for p in x.get("paths") or []],
             "schedules": [str(p) for p in x.get("schedules") or []]} for x in sets],
            command_types=COMMAND_CHOICES, listing_html=Markup(listing_html), **values)

    @r.get("/devices/{device_id}", include_in_schema=False)
    def device_page(request: Request, device_id: str) -> Response:
        try:
            user, d = load(request, device_id)
        except NotFound as e:
            return web.render(request, "error.html", None, status=404, heading="Not found",
                              message=str(e))
        return full_page(request, user, d)

    @r.get("/devices/{device_id}/chart.json", include_in_schema=False)
    def chart(request: Request, device_id: str) -> Response:
        _user, d = load(request, device_id)
        with web.ctx.db.session() as s:
            return JSONResponse(queries.chart(s, d["id"]))

    def listing(request: Request, user: PageUser, d: dict[str, Any], command_id: str
                ) -> Response:
        with web.ctx.db.session() as s:
            c = command_service.show(s, web.ctx.clock, user.actor, command_id)
        if c["device"] != d["id"] or c["type"] != "browse":
            raise NotFound(f"no browse command {command_id!r} for this device")
        state, params, result = c["state"], dict(c["params"] or {}), c["result"]
        path = str(params.get("path") or "/")
        entries, truncated = _entries(result if isinstance(result, dict) else None, path)
        message = (result or {}).get("error") if isinstance(result, dict) else None
        fragment = web.render(request, "_listing.html", user, state=state, device_id=d["id"],
                              command_id=command_id,
                              snapshot=str(params.get("snapshot") or ""), path=path,
                              entries=entries, truncated=truncated, online=d["online"],
                              message=message)
        if request.headers.get("hx-request") == "true":
            return fragment
        # Without htmx the listing comes inside the whole device page.
        return full_page(request, user, d, bytes(fragment.body).decode())

    @r.post("/devices/{device_id}/browse", include_in_schema=False)
    async def browse(request: Request, device_id: str) -> Response:
        user, d = load(request, device_id)
        form = await web.form(request, user)
        # "open" is a directory button of a listing (whose ticked boxes are named "path")
        path = form.get("open") or form.get("path") or "/"
        path = path[0] if isinstance(path, list) else path
        params = {"snapshot": str(form.get("snapshot") or "latest")[:200],
                  "path": str(path)[:4096]}
        try:
            made = send(web, user.actor, [d["id"]], "browse", params)
        except ConsoleError as e:
            return web.render(request, "error.html", user, status=400, heading="Not sent",
                              message=str(e))
        return listing(request, user, d, made[0]["id"])

    @r.get("/devices/{device_id}/browse/{command_id}", include_in_schema=False)
    def browse_result(request: Request, device_id: str, command_id: str) -> Response:
        user, d = load(request, device_id)
        return listing(request, user, d, command_id)

    @r.post("/devices/{device_id}/restore", include_in_schema=False)
    async def restore(request: Request, device_id: str) -> Response:
        user, d = load(request, device_id)
        form = await web.form(request, user)
        back = f"/devices/{d['id']}"
        ticked = form.get("path")            # the listing's boxes, one per picked entry
        form["paths"] = ticked if isinstance(ticked, list) else [ticked] if ticked else []
        try:
            made = send(web, user.actor, [d["id"]], "restore",
                        params_from_form("restore", form))
        except ConsoleError as e:
            return web.redirect(back, flash=f"Not sent: {e}")
        return web.redirect(back + "#commands", flash=f"restore queued ({made[0]['id']}).")

    return r
