"""The console's pages (server-rendered Jinja2 + htmx, every asset vendored).

``install`` adds the security headers (CSP ``default-src 'self'``) to every response of the
app, serves static/ at /static and mounts the pages: login and first-run setup, the
dashboard, device pages, commands, enrolment tokens and customers. Forms POST with a CSRF token;
the session cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import inspect

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from tiervault.console.context import AppContext
from tiervault.console.errors import ConsoleError
from tiervault.console.web import auth, commands, customers, dashboard, device, tokens
from tiervault.console.web.base import BadForm, LoginNeeded, SetupNeeded, Web
from tiervault.console.web.headers import SecurityHeaders
from tiervault.console.web.render import STATIC, make_env


def _static_version() -> str:
    """A short hash of the static files, so browsers fetch new ones after an upgrade."""
    h = hashlib.sha256()
    for p in sorted(STATIC.rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:10]


def install(app: FastAPI, ctx: AppContext) -> None:
    """Mount the pages and the static files on ``app`` (app.py adds SecurityHeaders
    outermost, so every response carries the CSP)."""
    web = Web(ctx, make_env(ctx.clock, _static_version()))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for module in (auth, dashboard, device, commands, tokens, customers):
        app.include_router(module.router(web))

    @app.exception_handler(LoginNeeded)
    async def _login(request: Request, exc: LoginNeeded) -> Response:
        if request.headers.get("hx-request") == "true":
            return Response(status_code=401, headers={"hx-redirect": "/login"})
        from urllib.parse import quote
        return web.redirect("/login?next=" + quote(exc.next_url, safe=""))

    @app.exception_handler(SetupNeeded)
    async def _setup(request: Request, exc: SetupNeeded) -> Response:
        return web.redirect("/setup")

    @app.exception_handler(BadForm)
    async def _bad_form(request: Request, exc: BadForm) -> Response:
        return web.render(request, "error.html", None, status=403, heading="Refused",
                          message="The form's CSRF token is missing or stale: reload the "
                                  "page and send it again.")

    api_handler = app.exception_handlers.get(ConsoleError)

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError) -> Response:
        # The API keeps its one-line JSON errors; a page answers with a page.
        if api_handler is not None and not _is_page(request):
            answer = api_handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        return web.render(request, "error.html", None, status=exc.status,
                          heading="Not possible", message=str(exc))


    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        # The API keeps FastAPI's 422 with its details; a page says it in words.
        if not _is_page(request):
            return await request_validation_exception_handler(request, exc)
        fields = ", ".join(str(e.get("loc", ["?"])[-1]) for e in exc.errors()) or "a value"
        return web.render(request, "error.html", None, status=400, heading="Bad request",
                          message=f"The address has a bad value ({fields}): go back to the "
                                  "dashboard and try again.")


def _is_page(request: Request) -> bool:
    """True for the pages' own routes (not /api/..., not the agent's)."""
    path = request.url.path
    return not path.startswith("/api/") and not path.endswith(".json")


__all__ = ["SecurityHeaders", "install"]
