"""Customers and sites: every device belongs to a customer (and maybe one of its sites)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock
from tiervault.console.errors import BadValue, NotFound
from tiervault.console.services import audit
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor
from tiervault.console.services.validate import name_value
from tiervault.console.store.models import Customer, Device, Site


def get_or_create(s: Session, clock: Clock, actor: Actor, name: str,
                  site: str | None = None) -> tuple[Customer, Site | None]:
    """The customer (and site) of these names, created when new."""
    name = name_value(name, "customer")
    cust = s.scalar(select(Customer).where(Customer.name == name))
    if cust is None:
        cust = Customer(name=name, green_hours=24, orange_hours=48)
        s.add(cust)
        s.flush()
        audit.record(s, clock, actor, "customer.create", cust.id, {"name": name})
    site_row = None
    if site is not None:
        site = name_value(site, "site")
        site_row = s.scalar(select(Site).where(Site.customer_id == cust.id,
                                               Site.name == site))
        if site_row is None:
            site_row = Site(customer_id=cust.id, name=site)
            s.add(site_row)
            s.flush()
            audit.record(s, clock, actor, "site.create", site_row.id,
                         {"customer": name, "name": site})
    return cust, site_row


def set_thresholds(s: Session, clock: Clock, actor: Actor, name: str,
                   green_hours: int | None, orange_hours: int | None) -> Customer:
    """Change a customer's colour thresholds (hours; None keeps that one)."""
    require(actor, "customers.update", name)
    cust = s.scalar(select(Customer).where((Customer.name == name) | (Customer.id == name)))
    if cust is None:
        raise NotFound(f"no customer named {name!r} (list them: tiervault console customer list)")
    green = cust.green_hours if green_hours is None else green_hours
    orange = cust.orange_hours if orange_hours is None else orange_hours
    for label, hours in (("green", green), ("orange", orange)):
        if not 0 < hours <= 24 * 365:
            raise BadValue(f"{label} threshold {hours} h: give whole hours from 1 to 8760")
    if green > orange:
        raise BadValue(f"thresholds: green ({green} h) must not exceed orange ({orange} h)")
    cust.green_hours, cust.orange_hours = green, orange
    audit.record(s, clock, actor, "customer.thresholds", cust.id,
                 {"green_hours": green, "orange_hours": orange})
    return cust


def names(s: Session) -> dict[str, str]:
    """Customer id -> name."""
    return dict(s.execute(select(Customer.id, Customer.name)).tuples().all())


def to_json(cust: Customer, device_count: int) -> dict[str, Any]:
    """A customer as the API and ``console customer list --json`` show it."""
    return {"id": cust.id, "name": cust.name, "green_hours": cust.green_hours,
            "orange_hours": cust.orange_hours, "devices": device_count}


def listing(s: Session, actor: Actor) -> list[dict[str, Any]]:
    """Every customer with its thresholds and number of devices, by name."""
    require(actor, "customers.read")
    counts = dict(s.execute(select(Device.customer_id, func.count())
                            .group_by(Device.customer_id)).tuples().all())
    return [to_json(c, int(counts.get(c.id, 0)))
            for c in s.scalars(select(Customer).order_by(Customer.name))]


def show(s: Session, actor: Actor, name: str) -> dict[str, Any]:
    """One customer (by name or id)."""
    require(actor, "customers.read")
    cust = s.scalar(select(Customer).where((Customer.name == name) | (Customer.id == name)))
    if cust is None:
        raise NotFound(f"no customer named {name!r} (list them: tiervault console customer list)")
    n = s.scalar(select(func.count()).select_from(Device)
                 .where(Device.customer_id == cust.id)) or 0
    return to_json(cust, int(n))
