"""Customers and sites: every device belongs to a customer (and maybe one of its sites)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiervault.console.clock import Clock
from tiervault.console.errors import BadValue, NotFound
from tiervault.console.services import audit
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor
from tiervault.console.services.validate import name_value
from tiervault.console.store.models import Customer, Site


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


def set_thresholds(s: Session, clock: Clock, actor: Actor, name: str, green_hours: int,
                   orange_hours: int) -> Customer:
    """Change a customer's colour thresholds (hours)."""
    require(actor, "customers.update", name)
    if not 0 < green_hours <= orange_hours <= 24 * 365:
        raise BadValue("thresholds: need 0 < green hours <= orange hours <= 8760")
    cust = s.scalar(select(Customer).where(Customer.name == name))
    if cust is None:
        raise NotFound(f"no customer named {name!r}")
    cust.green_hours, cust.orange_hours = green_hours, orange_hours
    audit.record(s, clock, actor, "customer.thresholds", cust.id,
                 {"green_hours": green_hours, "orange_hours": orange_hours})
    return cust


def names(s: Session) -> dict[str, str]:
    """Customer id -> name."""
    return dict(s.execute(select(Customer.id, Customer.name)).tuples().all())
