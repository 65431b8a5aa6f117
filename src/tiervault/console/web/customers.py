"""The customers page: each customer's colour thresholds, changed in place."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tiervault.console.errors import ConsoleError
from tiervault.console.services import customers
from tiervault.console.web.base import Web


def _hours(text: object) -> int | None:
    raw = str(text or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError(raw)
    return int(raw)


def router(web: Web) -> APIRouter:
    """The customers page's routes."""
    r = APIRouter()

    @r.get("/customers", include_in_schema=False)
    def customers_page(request: Request) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
            rows = customers.listing(s, user.actor)
        return web.render(request, "customers.html", user, customers=rows)

    @r.post("/customers/{name}/thresholds", include_in_schema=False)
    async def set_thresholds(request: Request, name: str) -> Response:
        with web.ctx.db.session() as s:
            user = web.user(request, s)
        form = await web.form(request, user)
        try:
            green, orange = _hours(form.get("green_hours")), _hours(form.get("orange_hours"))
        except ValueError as e:
            return web.redirect("/customers", flash=f"Thresholds: {e} is not a whole number "
                                                    "of hours; nothing changed.")
        try:
            with web.ctx.db.session() as s:
                cust = customers.set_thresholds(s, web.ctx.clock, user.actor, name, green,
                                                orange)
                shown = (cust.name, cust.green_hours, cust.orange_hours)
        except ConsoleError as e:
            return web.redirect("/customers", flash=f"{e}; nothing changed.")
        return web.redirect("/customers", flash=f"{shown[0]}: green under {shown[1]} h, "
                                                f"orange under {shown[2]} h, red after.")

    return r
