"""Setting aside tiers that are stale or damaged behind a current revision (issue 9).

A tier rolled back or hiding files is, while another tier is online, neither
read nor written nor a sync source: it counts as having missed writes and is
healed like one. Alone, it is read (with a warning) and set aside as soon as
a good tier comes online. A tier that comes online after the session's
manifest check is checked the same way before it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiervault.errors import BackendError
from tiervault.tiers.tier import ONLINE, UNSYNCHRONIZED, Tier

if TYPE_CHECKING:
    from tiervault.tiers.tierset import TierSet


def set_aside(ts: TierSet, t: Tier, why: str) -> None:
    """Stop using ``t`` while another tier is online; see the module docstring."""
    if t.state != ONLINE or t.name in ts.untrusted:
        return
    ts.untrusted[t.name] = why
    others = [x for x in ts.online() if x is not t and x.name not in ts.untrusted]
    if not others:
        ts.notify(f"WARNING: tier {t.name} is stale or damaged ({why}) and no other tier "
                  "is online: reading it anyway; it is not used to synchronize others")
        return
    ts.notify(f"WARNING: tier {t.name} is stale or damaged ({why}); using "
              f"{others[0].name} instead (run 'tiervault check --repair' to heal it)")
    t.state = UNSYNCHRONIZED
    t.record.missed = True
    ts._save_records([t])


def vet(ts: TierSet, t: Tier) -> None:
    """Check a tier that just came online (once the session can: ``ts.verify``)."""
    if ts.verify is None or t.state != ONLINE:
        return
    try:
        why = ts.verify(t)
    except BackendError as e:
        ts._go_offline(t, e)
        return
    if why is not None:
        set_aside(ts, t, why)
        return
    for name, was in list(ts.untrusted.items()):
        bad = next(x for x in ts.tiers if x.name == name)
        if bad.state == ONLINE:
            # A good tier is here now: the bad one read for want of another goes aside.
            del ts.untrusted[name]
            set_aside(ts, bad, was)
