"""What every page shares: the logged-in user, CSRF checks, rendering, redirects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from sqlalchemy.orm import Session

from tiervault.console.context import AppContext
from tiervault.console.services import users
from tiervault.console.services.actor import Actor, user_actor
from tiervault.console.store.models import User
from tiervault.console.web import session as sess

FORM_MAX = 64 * 1024          # a page form is small; the API has its own limit


def is_local(url: str | None) -> bool:
    """True for a path of this console ("/x"), never another site ("//x", "/\\x")."""
    return bool(url) and str(url).startswith("/") and not str(url).startswith("//") \
        and "\\" not in str(url) and not any(ord(ch) < 32 for ch in str(url))


class LoginNeeded(Exception):
    """The page needs a logged-in user (answered with a redirect to /login)."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class SetupNeeded(Exception):
    """No user exists yet: every page leads to the setup page."""


class BadForm(Exception):
    """A form POST without a valid CSRF token or from another origin (403)."""


@dataclass(frozen=True)
class PageUser:
    """The logged-in user of one request."""

    id: str
    name: str
    cookie: str

    @property
    def actor(self) -> Actor:
        """The audit log's actor for this user."""
        return user_actor(self.id, self.name)


class Web:
    """The pages' shared parts for one app: context, templates, helpers."""

    def __init__(self, ctx: AppContext, env: Environment) -> None:
        self.ctx = ctx
        self.env = env

    # -- users ------------------------------------------------------------------------
    def has_users(self, s: Session) -> bool:
        """True once a user exists (remembered: users are not deleted in this issue)."""
        if self.ctx.extras.get("web.has_users"):
            return True
        if users.count(s) > 0:
            self.ctx.extras["web.has_users"] = True
            return True
        return False

    def user(self, request: Request, s: Session) -> PageUser:
        """The logged-in user, or LoginNeeded / SetupNeeded."""
        if not self.has_users(s):
            raise SetupNeeded()
        cookie = request.cookies.get(sess.SESSION_COOKIE)
        claim = sess.read_session(cookie)
        if claim is not None and cookie is not None:
            row = s.get(User, claim.user_id)
            if row is not None and claim.valid_for(sess.signing_key(self.ctx), row.password_hash):
                return PageUser(row.id, row.name, cookie)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginNeeded(target)

    # -- CSRF -------------------------------------------------------------------------
    def csrf_token(self, request: Request, user: PageUser | None) -> str:
        """The token forms of this page carry."""
        if user is not None:
            return sess.csrf_for_session(sess.signing_key(self.ctx), user.cookie)
        return request.cookies.get(sess.ANON_CSRF_COOKIE) or ""

    async def form(self, request: Request, user: PageUser | None) -> dict[str, Any]:
        """The POSTed form after the CSRF and origin checks (BadForm when they fail).

        Repeated names (ticked boxes) come back as lists.
        """
        origin = request.headers.get("origin")
        # host:port only: behind a TLS-terminating proxy the scheme may differ
        own = request.headers.get("host", "").lower()
        if origin and origin != "null" and urlsplit(origin).netloc.lower() != own:
            raise BadForm()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > FORM_MAX):
            raise BadForm()
        data = await request.form(max_files=0, max_fields=2000)
        out: dict[str, Any] = {}
        for key in data:
            values = [v for v in data.getlist(key) if isinstance(v, str)]
            out[key] = values if len(values) > 1 else (values[0] if values else "")
        sent = request.headers.get("x-csrf-token") or out.get("csrf_token")
        if not isinstance(sent, str):
            raise BadForm()
        if user is not None:
            expected = self.csrf_token(request, user)
        else:
            expected = request.cookies.get(sess.ANON_CSRF_COOKIE) or ""
        if not sess.same(sent, expected):
            raise BadForm()
        return out

    # -- responses --------------------------------------------------------------------
    def render(self, request: Request, template: str, user: PageUser | None, /,
               status: int = 200, **values: Any) -> HTMLResponse:
        """A page (or fragment) with the user, CSRF token and flash message filled in."""
        anon_cookie = None
        csrf = self.csrf_token(request, user)
        if user is None and not csrf:
            csrf = anon_cookie = sess.new_anon_csrf()
        values.setdefault("flash", request.query_params.get("flash", ""))
        html = self.env.get_template(template).render(
            user=user.name if user else None, csrf=csrf, **values)
        resp = HTMLResponse(html, status_code=status,
                            headers={"cache-control": "no-store"})
        if anon_cookie:
            resp.set_cookie(sess.ANON_CSRF_COOKIE, anon_cookie, httponly=True,
                            samesite="strict", secure=self.secure(request), path="/")
        return resp

    def secure(self, request: Request) -> bool:
        """Cookies are Secure when the console is served over HTTPS."""
        return request.url.scheme == "https" or self.ctx.settings.https

    @staticmethod
    def redirect(url: str, flash: str | None = None) -> Response:
        """303 to a page of ours (never elsewhere), with an optional message."""
        if not is_local(url):
            url = "/"
        if flash:
            from urllib.parse import urlencode
            url += ("&" if "?" in url else "?") + urlencode({"flash": flash})
        return RedirectResponse(url, status_code=303)
