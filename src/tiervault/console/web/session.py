"""Login sessions and CSRF tokens of the pages: signed cookies, no server-side state.

The signing key is one random secret in the store's settings table, so every ``serve``
process on one database accepts the same cookies. A session names its user and an expiry,
and is bound to the user's password hash: a new password ends every old session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from tiervault.console.context import AppContext
from tiervault.console.store.models import Setting

SESSION_COOKIE = "tv_session"
ANON_CSRF_COOKIE = "tv_csrf"
SESSION_SECONDS = 12 * 3600
KEY_SETTING = "web_session_key"
_KEY_CACHE = "web.session_key"     # ctx.extras entry: the key, read once per process


def signing_key(ctx: AppContext) -> bytes:
    """The console's cookie signing key (created once, shared through the store)."""
    cached = ctx.extras.get(_KEY_CACHE)
    if isinstance(cached, bytes):
        return cached
    with ctx.db.session() as s:
        row = s.get(Setting, KEY_SETTING)
        if row is None:
            s.add(Setting(key=KEY_SETTING, value=secrets.token_urlsafe(32)))
            try:
                s.commit()
            except IntegrityError:      # another process made it first: use theirs
                s.rollback()
            row = s.get(Setting, KEY_SETTING)
        assert row is not None
        key = row.value.encode()
    ctx.extras[_KEY_CACHE] = key
    return key


def _mac(key: bytes, *parts: str) -> str:
    msg = "\x1f".join(parts).encode()
    return base64.urlsafe_b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()[:43]


def _binding(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def make_session(key: bytes, user_id: str, password_hash: str | None,
                 now: float | None = None) -> str:
    """A cookie value for ``user_id``, valid SESSION_SECONDS."""
    expires = str(int((now or time.time()) + SESSION_SECONDS))
    return f"{user_id}.{expires}.{_mac(key, 'session', user_id, expires, _binding(password_hash))}"


@dataclass(frozen=True)
class SessionClaim:
    """What a cookie says before the user is looked up."""

    user_id: str
    expires: int
    mac: str

    def valid_for(self, key: bytes, password_hash: str | None, now: float | None = None) -> bool:
        """True when the MAC matches this user's password hash and it has not expired."""
        if self.expires < (now or time.time()):
            return False
        want = _mac(key, "session", self.user_id, str(self.expires), _binding(password_hash))
        return hmac.compare_digest(want, self.mac)


def read_session(value: str | None) -> SessionClaim | None:
    """Parse a cookie value (None when it is not one of ours)."""
    if not value or value.count(".") != 2:
        return None
    user_id, expires, mac = value.split(".")
    if not expires.isdigit() or not user_id or len(value) > 400:
        return None
    return SessionClaim(user_id, int(expires), mac)


def csrf_for_session(key: bytes, cookie: str) -> str:
    """The CSRF token of a logged-in session (synchroniser token, derived, not stored)."""
    return _mac(key, "csrf", cookie)


def new_anon_csrf() -> str:
    """A random token for the forms shown before login (double-submit cookie)."""
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
