"""Giving up a tier that stays unreachable (``tier lost``, and automatically).

Without this, a speed vault that died holding the newest writes would leave
the server "unsynchronized" forever and every write waiting. Declaring the
tier lost makes the most recent reachable tier authoritative; snapshots that
only existed on the lost tier are reported as lost, never silently, and the
data they referenced is uploaded again by the next backup (its blobs are no
longer in the index, so the files cache does not skip those files).
"""

from __future__ import annotations

import json
import time
from typing import Any

from tiervault.engine.progress import Progress
from tiervault.errors import TierVaultError, UsageError
from tiervault.service.installation import Installation
from tiervault.service.session import build_tierset, lost_key
from tiervault.storage.base import FileType
from tiervault.tiers.tier import OFFLINE, ONLINE, Tier
from tiervault.tiers.tierset import TierSet

_DAY = 86400.0
LOST_SNAPSHOTS = "lost_snapshots"


def unavailable_days(t: Tier, now: float | None = None) -> float | None:
    """How long an offline tier has been unreachable, in days."""
    if t.state != OFFLINE or t.record.first_offline is None:
        return None
    return ((now or time.time()) - t.record.first_offline) / _DAY


def warnings_for(inst: Installation, ts: TierSet) -> list[str]:
    """Warnings about tiers that are on their way to being given up."""
    limit = inst.config.settings.tier_unavailable_days
    out = []
    for t in ts.tiers:
        days = unavailable_days(t)
        if days is not None and days >= 1 and not t.lost:
            out.append(f"tier {t.name} has been unreachable for {days:.0f} day(s); it will be "
                       f"given up after {limit} days (or now with 'tiervault tier lost')")
    return out


def plan_lost(ts: TierSet, t: Tier, known: dict[str, dict[str, Any]]) -> tuple[Tier, list[dict[
        str, Any]]]:
    """The tier that takes over and the snapshots that would be lost."""
    others = [x for x in ts.tiers if x is not t and x.revision is not None]
    if not others:
        raise TierVaultError(f"no other tier is reachable to take over from {t.name}")
    authority = max(others, key=lambda x: (x.revision or 0, -ts.tiers.index(x)))
    present = {fi.handle.name for fi in authority.backend.list(FileType.SNAPSHOT)}
    lost = sorted((v for k, v in known.items() if k not in present), key=lambda v: v["time"])
    return authority, lost


def declare_lost(inst: Installation, ts: TierSet, t: Tier, dry_run: bool,
                 reason: str) -> dict[str, Any]:
    """Give up ``t``; returns what was (or would be) done."""
    known = inst.db.known_snapshots()
    authority, lost = plan_lost(ts, t, known)
    res = {"tier": t.name, "authoritative_tier": authority.name,
           "authoritative_revision": authority.revision, "lost_snapshots": lost,
           "dry_run": dry_run, "reason": reason}
    if dry_run:
        return res
    inst.db.put(lost_key(t.url), json.dumps({"since": time.time(), "reason": reason}))
    ts.declare_lost(t, authority)
    ts.end_session()
    inst.db.forget_snapshots([s["id"] for s in lost])
    previous = json.loads(inst.db.get(LOST_SNAPSHOTS) or "[]")
    inst.db.put(LOST_SNAPSHOTS, json.dumps(previous + [dict(s, lost_with=t.name) for s in lost]))
    return res


def give_up_long_unavailable(inst: Installation, ts: TierSet,
                             progress: Progress) -> list[dict[str, Any]]:
    """Warn about long-unreachable tiers; give up those past the limit."""
    limit = inst.config.settings.tier_unavailable_days
    done = []
    for t in ts.tiers:
        days = unavailable_days(t)
        if days is None or t.lost:
            continue
        if days >= limit and any(x.revision is not None for x in ts.tiers if x is not t):
            res = declare_lost(inst, ts, t, False, f"unreachable for {days:.0f} days")
            progress.info(f"tier {t.name} has been unreachable for {days:.0f} days and was "
                          f"given up; {res['authoritative_tier']} is now authoritative")
            for s in res["lost_snapshots"]:
                progress.info(f"snapshot {s['id'][:8]} ({s['time']}) was only on {t.name} and "
                              "is lost")
            done.append(res)
    for w in warnings_for(inst, ts):
        progress.info(f"warning: {w}")
    return done


def tier_lost(inst: Installation, url: str, dry_run: bool, progress: Progress) -> dict[str, Any]:
    """``tiervault tier lost N|URL``."""
    from tiervault.service.tierops import resolve_tier

    inst.require_writer()
    idx = resolve_tier(inst, url)
    inst.lock()
    ts = build_tierset(inst, progress)
    try:
        ts.connect()
        t = ts.tiers[idx]
        if t.state == ONLINE:
            raise UsageError(f"{t.name} is online; to stop using it run 'tiervault tier remove'")
        return declare_lost(inst, ts, t, dry_run, "declared lost by the user")
    finally:
        ts.close()
