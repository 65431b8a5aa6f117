"""Sending commands from the pages (one device or many ticked), cancelling, the list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tiervault.console.errors import BadValue, ConsoleError
from tiervault.console.services import commands as command_service
from tiervault.console.web.base import Web

COMMAND_CHOICES: list[tuple[str, str]] = [
    ("backup", "backup now"), ("sync", "sync tiers now"), ("check", "check"),
    ("cancel", "cancel the running job"), ("retention", "apply retention"),
    ("bandwidth", "set bandwidth"), ("schedule", "edit a schedule"),
    ("upload-log", "upload the daemon's log"), ("restore", "restore")]
#: Form fields each type takes (empty fields are left out of the parameters).
#: They are the parameters the device's agent reads (daemon/agent/commands.py).
KEEP = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
        "keep_within")
PARAMS: dict[str, tuple[str, ...]] = {
    "backup": ("set",), "retention": ("set", *KEEP),
    "schedule": ("set", "time", "days", "cron", "window"),
    "check": ("read_data_subset",), "restore": ("snapshot", "paths", "target", "overwrite"),
    "bandwidth": ("tier", "upload", "download"), "cancel": ("all",),
    "sync": (), "upload-log": ()}


def _one(value: Any) -> str:
    return str(value[0] if isinstance(value, list) else value or "").strip()


def params_from_form(kind: str, form: dict[str, Any]) -> dict[str, Any]:
    """The command's parameters from the form's fields for its type."""
    if kind not in PARAMS:
        raise BadValue(f"command type: one of {', '.join(PARAMS)}")
    out: dict[str, Any] = {}
    for key in PARAMS[kind]:
        raw = form.get(key)
        if key == "paths":
            items = raw if isinstance(raw, list) else _one(raw).split(",")
            paths = [p.strip() for p in items if p and p.strip()]
            if paths:
                out["paths"] = paths
            continue
        value = _one(raw)
        if value:
            out[key] = value
    if kind == "restore" and not out.get("paths"):
        raise BadValue("restore: name at least one path")
    if kind == "restore" and not out.get("target"):
        raise BadValue("restore: name the target directory on the device")
    if kind == "schedule" and not out.get("set"):
        raise BadValue("schedule: name the set")
    if kind == "cancel":
        out = {"all": True} if out.get("all") else {}
    return out


def devices_of(form: dict[str, Any]) -> list[str]:
    """The device ids a form names (one, or the ticked ones)."""
    raw = form.get("device")
    ids = raw if isinstance(raw, list) else ([raw] if raw else [])
    return [str(i) for i in ids if i][:10_000]


def send(web: Web, actor: Any, device_ids: list[str], kind: str,
         params: dict[str, Any]) -> list[dict[str, Any]]:
    """Queue one command per device through the commands service."""
    with web.ctx.db.session() as s:
        rows = command_service.queue(s, web.ctx.clock, actor, device_ids, kind, params)
        made = [command_service.to_json(row, None) for row in rows]
    web.ctx.waker.notify([c["device"] for c in made])
    return made


def router(web: Web) -> APIRouter:
    """The command routes of the pages."""
    r = APIRouter()

    @r.post("/commands/send", include_in_schema=False)
    async def send_form(request: Request) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
        form = await web.form(request, user)
        ids = devices_of(form)
        back = f"/devices/{ids[0]}" if len(ids) == 1 else "/"
        try:
            if not ids:
                raise BadValue("tick at least one device")
            kind = _one(form.get("type"))
            made = send(web, user.actor, ids, kind, params_from_form(kind, form))
        except ConsoleError as e:
            return web.redirect(back, flash=f"Not sent: {e}")
        n, left = len(made), len(set(ids)) - len(made)
        skipped = f" {left} revoked device{'s' if left != 1 else ''} left out." if left > 0 \
            else ""
        return web.redirect(back, flash=f"{kind} queued for {n} device{'s' if n != 1 else ''}"
                            f" ({', '.join(c['id'] for c in made[:5])}"
                            f"{', ...' if n > 5 else ''}).{skipped}")

    @r.post("/commands/{command_id}/cancel", include_in_schema=False)
    async def cancel(request: Request, command_id: str) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
        form = await web.form(request, user)
        back = _one(form.get("back")) or "/commands"
        try:
            with web.ctx.db.session() as s:
                command_service.cancel(s, web.ctx.clock, user.actor, command_id)
        except ConsoleError as e:
            return web.redirect(back, flash=f"Not cancelled: {e}")
        return web.redirect(back, flash=f"Command {command_id} cancelled.")

    @r.get("/commands", include_in_schema=False)
    def command_list(request: Request) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
            rows = command_service.listing(s, web.ctx.clock, user.actor)
        return web.render(request, "commands.html", user, commands=rows)

    return r
