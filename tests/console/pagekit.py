"""Helpers for the page tests: a logged-in browser-like client (cookies, CSRF tokens)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.console.consolekit import PASSWORD, ConsoleServer

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)"')
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    m = CSRF_FIELD.search(html) or CSRF_META.search(html)
    assert m is not None and m.group(1), "no CSRF token on the page"
    return m.group(1)


def login(console: ConsoleServer, name: str = "admin", password: str = PASSWORD
          ) -> httpx.Client:
    """A client logged in through the login form (as a person: cookies kept)."""
    c = console.http()
    page = c.get("/login")
    assert page.status_code == 200, page.text
    r = c.post("/login", data={"csrf_token": csrf_of(page.text), "name": name,
                               "password": password}, follow_redirects=True)
    assert r.status_code == 200 and "Log out" in r.text, r.text[:500]
    return c


def post_form(c: httpx.Client, page_url: str, action: str, data: dict[str, Any]
              ) -> httpx.Response:
    """POST a form of ``page_url`` with that page's CSRF token (redirects not followed)."""
    token = csrf_of(c.get(page_url).text)
    return c.post(action, data={"csrf_token": token, **data}, follow_redirects=False)
