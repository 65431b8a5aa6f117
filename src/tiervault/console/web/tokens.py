"""The enrolment tokens page: list, create (secret and install commands shown once), revoke."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tiervault.console.errors import ConsoleError
from tiervault.console.services import customers, install_cmd, tokens
from tiervault.console.web.base import PageUser, Web


def console_url(web: Web, request: Request) -> str:
    """What devices dial: serve's public URL, else the address this page was asked on."""
    return web.ctx.settings.public_url or str(request.base_url).rstrip("/")


def router(web: Web) -> APIRouter:
    """The tokens page's routes."""
    r = APIRouter()

    def page(request: Request, user: PageUser, status: int = 200, **extra: Any) -> Response:
        with web.ctx.db.session() as s:
            rows = [tokens.enrol_json(s, t, web.ctx.clock)
                    for t in tokens.list_enrol(s, user.actor)]
            names = sorted(customers.names(s).values())
        fp = web.ctx.settings.fingerprint
        extra.setdefault("error", "")
        return web.render(request, "tokens.html", user, status=status, tokens=rows,
                          customers=names, fingerprint=fp,
                          linux_shape=install_cmd.linux(console_url(web, request), "TOKEN", fp,
                                                        web.ctx.settings.package),
                          **extra)

    @r.get("/tokens", include_in_schema=False)
    def tokens_page(request: Request) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
        return page(request, user)

    @r.post("/tokens", include_in_schema=False)
    async def create(request: Request) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
        form = await web.form(request, user)
        try:
            ttl = int(str(form.get("ttl_hours") or "24")) * 3600
            uses = int(str(form.get("uses") or "1"))
            raw = str(form.get("profile") or "").strip()
            profile = json.loads(raw) if raw else None
        except ValueError:
            return page(request, user, status=400,
                        error="valid for, uses: whole numbers; profile: a JSON object")
        try:
            with web.ctx.db.session() as s:
                tok, secret = tokens.create_enrol(
                    s, web.ctx.clock, user.actor, str(form.get("customer", "")),
                    str(form.get("site") or "") or None, ttl, uses, profile)
                created = tokens.enrol_json(s, tok, web.ctx.clock)
        except ConsoleError as e:
            return page(request, user, status=400, error=str(e))
        url, fp = console_url(web, request), web.ctx.settings.fingerprint
        return page(request, user, created=created, secret=secret,
                    linux=install_cmd.linux(url, secret, fp, web.ctx.settings.package),
                    macos=install_cmd.macos(url, secret, fp, web.ctx.settings.package))

    @r.post("/tokens/{token_id}/revoke", include_in_schema=False)
    async def revoke(request: Request, token_id: str) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
        await web.form(request, user)
        try:
            with web.ctx.db.session() as s:
                tokens.revoke_enrol(s, web.ctx.clock, user.actor, token_id)
        except ConsoleError as e:
            return web.redirect("/tokens", flash=str(e))
        return web.redirect("/tokens", flash=f"Token {token_id} revoked.")

    return r
