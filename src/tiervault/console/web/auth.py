"""Log in, log out, and the first-run setup page (one-time code printed by serve)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tiervault.console.errors import ConsoleError
from tiervault.console.services import users
from tiervault.console.web import session as sess
from tiervault.console.web.base import PageUser, Web, is_local


def _safe_next(url: str | None) -> str:
    return url if url and is_local(url) else "/"


def router(web: Web) -> APIRouter:
    """The routes of logging in and setting up."""
    r = APIRouter()

    @r.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Response:
        with web.ctx.db.session() as s:
            if not web.has_users(s):
                return web.redirect("/setup")
        return web.render(request, "login.html", None, next=_safe_next(next), name="",
                          error="")

    @r.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await web.form(request, None)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        nxt = _safe_next(str(form.get("next", "/")))
        with web.ctx.db.session() as s:
            try:
                user = users.verify(s, name, password)
            except ConsoleError as e:
                return web.render(request, "login.html", None, status=401, next=nxt,
                                  name=name, error=str(e))
            cookie = sess.make_session(sess.signing_key(web.ctx), user.id, user.password_hash)
        resp = web.redirect(nxt)
        resp.set_cookie(sess.SESSION_COOKIE, cookie, max_age=sess.SESSION_SECONDS,
                        httponly=True, samesite="strict", secure=web.secure(request), path="/")
        resp.delete_cookie(sess.ANON_CSRF_COOKIE, path="/")
        return resp

    @r.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        with web.ctx.db.session() as s:
            user: PageUser = web.user(request, s)
        await web.form(request, user)
        resp = web.redirect("/login")
        resp.delete_cookie(sess.SESSION_COOKIE, path="/")
        return resp

    @r.get("/setup", include_in_schema=False)
    def setup_page(request: Request) -> Response:
        with web.ctx.db.session() as s:
            if web.has_users(s):
                return web.redirect("/login")
        return web.render(request, "setup.html", None, name="", error="",
                          min_password=users.MIN_PASSWORD)

    @r.post("/setup", include_in_schema=False)
    async def setup(request: Request) -> Response:
        form = await web.form(request, None)
        name = str(form.get("name", ""))
        password = str(form.get("password", ""))
        error = ""
        if password != str(form.get("password2", "")):
            error = "the two passwords differ"
        else:
            try:
                with web.ctx.db.session() as s:
                    users.setup_first(s, web.ctx.clock, web.ctx.settings.setup_code,
                                      str(form.get("code", "")), name, password)
            except ConsoleError as e:
                error = str(e)
        if error:
            return web.render(request, "setup.html", None, status=400, name=name,
                              error=error, min_password=users.MIN_PASSWORD)
        return web.redirect("/login", flash=f"User {name} created: log in.")

    return r
