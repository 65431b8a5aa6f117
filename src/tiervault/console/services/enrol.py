"""Enrolment: a device exchanges an enrolment token (once per use) for its own credential."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock
from tiervault.console.errors import BadValue, Refused
from tiervault.console.services import audit
from tiervault.console.services.actor import device_actor
from tiervault.console.services.secrets import (
    DEVICE_PREFIX,
    ENROL_PREFIX,
    hash_secret,
    new_secret,
)
from tiervault.console.services.validate import name_value, text_value
from tiervault.console.store.models import Customer, Device, EnrolToken, Site
from tiervault.protocol.messages import MAX_NAME, PROTOCOL_VERSION, EnrolRequest, EnrolResponse


def _previous(s: Session, req: EnrolRequest) -> Device | None:
    """The device this one was, when its old id and credential still match (not revoked)."""
    dev_id = text_value(req.previous_device_id, "previous device id", 64, optional=True)
    cred = text_value(req.previous_credential, "previous credential", 200, optional=True)
    if not dev_id or not cred:
        return None
    dev = s.get(Device, dev_id)
    if dev is None or dev.revoked or dev.credential_hash != hash_secret(cred):
        return None
    return dev


def enrol(s: Session, clock: Clock, req: EnrolRequest, interval: int) -> EnrolResponse:
    """A device for a valid token; Refused for an unknown, used, expired or revoked one.

    A device that proves it was enrolled (old id and credential, not revoked) keeps its row.
    """
    token = text_value(req.token, "token", 200)
    assert token is not None
    if req.protocol != PROTOCOL_VERSION:
        raise BadValue(f"protocol version {req.protocol!r} is not {PROTOCOL_VERSION}: "
                       "update tiervault on this device")
    name = name_value(req.name, "name")
    host = text_value(req.host, "host", MAX_NAME) or ""
    os_name = text_value(req.os, "os", MAX_NAME) or ""
    version = text_value(req.version, "version", MAX_NAME) or ""
    if not token.startswith(ENROL_PREFIX):
        raise Refused("not an enrolment token (they start with tve_)")
    now = clock.now()
    tok = s.scalar(select(EnrolToken).where(EnrolToken.secret_hash == hash_secret(token)))
    if tok is None or tok.revoked:
        raise Refused("unknown or revoked enrolment token")
    if tok.expires <= now:
        raise Refused("the enrolment token has expired: create a new one")
    # One atomic conditional update: two devices racing for the last use cannot both win.
    won = s.execute(update(EnrolToken)
                    .where(EnrolToken.id == tok.id, EnrolToken.uses < EnrolToken.uses_allowed)
                    .values(uses=EnrolToken.uses + 1))
    if getattr(won, "rowcount", 0) != 1:
        raise Refused("the enrolment token has been used up: create a new one")
    credential = new_secret(DEVICE_PREFIX)
    dev = _previous(s, req)
    if dev is not None:   # enrolled before (a new certificate, URL or customer): same device
        if name == host and dev.name:
            name = dev.name   # only the default (the host name) was asked: keep its name
        dev.name, dev.customer_id, dev.site_id = name, tok.customer_id, tok.site_id
        dev.credential_hash, dev.rotate_pending = hash_secret(credential), False
        dev.interval, dev.os, dev.host, dev.version = interval, os_name, host, version
        s.flush()
        audit.record(s, clock, device_actor(dev.id), "device.reenrol", dev.id,
                     {"token": tok.id, "name": name, "host": host})
    else:
        dev = Device(name=name, customer_id=tok.customer_id, site_id=tok.site_id,
                     credential_hash=hash_secret(credential), revoked=False, enrolled=now,
                     interval=interval, os=os_name, host=host, version=version, tiers=[],
                     running=None, last_errors=[], sets=[], rotate_pending=False)
        s.add(dev)
        s.flush()
        audit.record(s, clock, device_actor(dev.id), "device.enrol", dev.id,
                     {"token": tok.id, "name": name, "host": host})
    cust = s.get(Customer, tok.customer_id)
    site = s.get(Site, tok.site_id) if tok.site_id else None
    return EnrolResponse(device_id=dev.id, credential=credential,
                         customer=cust.name if cust else "", site=site.name if site else None,
                         interval=interval, profile=tok.profile, name=dev.name)
