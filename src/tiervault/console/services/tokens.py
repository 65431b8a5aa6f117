"""Enrolment tokens (tve_...) and API tokens (tva_...): secrets shown once, stored hashed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock, iso
from tiervault.console.errors import BadValue, NotFound, Refused
from tiervault.console.services import audit, customers, install_cmd
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor, api_actor
from tiervault.console.services.secrets import (
    API_PREFIX,
    ENROL_PREFIX,
    hash_secret,
    new_secret,
)
from tiervault.console.services.validate import object_value
from tiervault.console.store.models import ApiToken, Customer, EnrolToken, Site, User
from tiervault.protocol.profile import profile_problem, redacted

MAX_TTL = 365 * 24 * 3600
MAX_USES = 1_000_000
LAST_USED_EVERY = 60   # s: an API token's last_used is written at most this often


# -- enrolment tokens -------------------------------------------------------------------

def create_enrol(s: Session, clock: Clock, actor: Actor, customer: str, site: str | None,
                 ttl: int, uses: int, profile: dict[str, Any] | None
                 ) -> tuple[EnrolToken, str]:
    """A new enrolment token and its secret (shown once)."""
    require(actor, "tokens.create")
    if not 0 < ttl <= MAX_TTL:
        raise BadValue(f"ttl: between 1 s and {MAX_TTL // 86400} days")
    if not 0 < uses <= MAX_USES:
        raise BadValue(f"uses: between 1 and {MAX_USES}")
    profile = object_value(profile, "profile")
    if (problem := profile_problem(profile)) is not None:
        raise BadValue(f"profile: {problem}")
    cust, site_row = customers.get_or_create(s, clock, actor, customer, site)
    secret = new_secret(ENROL_PREFIX)
    now = clock.now()
    tok = EnrolToken(customer_id=cust.id, site_id=site_row.id if site_row else None,
                     secret_hash=hash_secret(secret), created=now,
                     expires=now + timedelta(seconds=ttl), uses_allowed=uses, uses=0,
                     profile=profile, revoked=False, created_by=actor.label)
    s.add(tok)
    s.flush()
    audit.record(s, clock, actor, "token.create", tok.id,
                 {"customer": cust.name, "site": site, "ttl": ttl, "uses": uses})
    return tok, secret


def enrol_state(tok: EnrolToken, clock: Clock) -> str:
    """valid, expired, used or revoked."""
    if tok.revoked:
        return "revoked"
    if tok.uses >= tok.uses_allowed:
        return "used"
    if tok.expires <= clock.now():
        return "expired"
    return "valid"


def enrol_json(s: Session, tok: EnrolToken, clock: Clock) -> dict[str, Any]:
    """An enrolment token as the API and `token list --json` show it (never the secret)."""
    cust = s.get(Customer, tok.customer_id)
    site = s.get(Site, tok.site_id) if tok.site_id else None
    return {"id": tok.id, "customer": cust.name if cust else None,
            "site": site.name if site else None, "created": iso(tok.created),
            "expires": iso(tok.expires), "uses_allowed": tok.uses_allowed, "uses": tok.uses,
            "revoked": tok.revoked, "state": enrol_state(tok, clock),
            "created_by": tok.created_by, "profile": redacted(tok.profile)}


def list_enrol(s: Session, actor: Actor) -> list[EnrolToken]:
    """Every enrolment token, newest first."""
    require(actor, "tokens.read")
    return list(s.scalars(select(EnrolToken).order_by(EnrolToken.created.desc())))


def revoke_enrol(s: Session, clock: Clock, actor: Actor, token_id: str) -> EnrolToken:
    """Stop a token from enrolling any more devices."""
    require(actor, "tokens.revoke", token_id)
    tok = s.get(EnrolToken, token_id)
    if tok is None:
        raise NotFound(f"no enrolment token {token_id!r}")
    tok.revoked = True
    audit.record(s, clock, actor, "token.revoke", tok.id)
    return tok


def unattended_command(console_url: str | None, secret: str, fingerprint: str | None,
                       package: str = "tiervault") -> str:
    """The one line that installs tiervault, enrols and starts the service (Linux).

    The same line the tokens page shows (services/install_cmd.py; macOS there too).
    """
    return install_cmd.linux(console_url or "https://CONSOLE:8443", secret, fingerprint,
                             package)


# -- API tokens -------------------------------------------------------------------------

def create_api(s: Session, clock: Clock, actor: Actor, user_name: str
               ) -> tuple[ApiToken, str]:
    """A new API token acting as ``user_name``, and its secret (shown once)."""
    require(actor, "api_tokens.create", user_name)
    user = s.scalar(select(User).where(User.name == user_name))
    if user is None:
        raise NotFound(f"no user named {user_name!r}")
    secret = new_secret(API_PREFIX)
    tok = ApiToken(user_id=user.id, secret_hash=hash_secret(secret), created=clock.now(),
                   revoked=False)
    s.add(tok)
    s.flush()
    audit.record(s, clock, actor, "api_token.create", tok.id, {"user": user_name})
    return tok, secret


def revoke_api(s: Session, clock: Clock, actor: Actor, token_id: str) -> ApiToken:
    """Stop an API token working."""
    require(actor, "api_tokens.revoke", token_id)
    tok = s.get(ApiToken, token_id)
    if tok is None:
        raise NotFound(f"no API token {token_id!r}")
    tok.revoked = True
    audit.record(s, clock, actor, "api_token.revoke", tok.id)
    return tok


def authenticate_api(s: Session, clock: Clock, secret: str) -> Actor:
    """The actor of an API token secret; Refused for an unknown or revoked one."""
    if not secret.startswith(API_PREFIX) or len(secret) > 200:
        raise Refused("not an API token (they start with tva_)")
    row = s.execute(select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
                    .where(ApiToken.secret_hash == hash_secret(secret))).first()
    if row is None or row[0].revoked:
        raise Refused("unknown or revoked API token")
    tok, user_name = row
    now = clock.now()
    if tok.last_used is None or (now - tok.last_used).total_seconds() > LAST_USED_EVERY:
        tok.last_used = now
    return api_actor(tok.id, user_name)


def api_json(tok: ApiToken, user: str) -> dict[str, Any]:
    """An API token as listed (never the secret)."""
    return {"id": tok.id, "user": user, "created": iso(tok.created),
            "last_used": iso(tok.last_used), "revoked": tok.revoked}
