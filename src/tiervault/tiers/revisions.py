"""Revision rules of the tier set (SPEC §3-§5) as plain functions over tiers.

- ``check_revision``: a tier's revision read now against the one recorded;
  a difference this installation cannot explain means another installation
  wrote to the vault.
- ``classify``: a tier below the highest revision, or one recorded as having
  missed writes, is unsynchronized; the others are online.
"""

from __future__ import annotations

from tiervault.errors import BackendError, NotFoundError, SecondInstallationError
from tiervault.storage.base import FileType, Handle
from tiervault.tiers.tier import OFFLINE, UNSYNCHRONIZED, Tier


def max_revision(tiers: list[Tier]) -> int:
    """The highest revision the installation knows for any tier."""
    return max(t.record.revision for t in tiers)


def check_revision(t: Tier, rev: int, top: int, vault_name: str) -> None:
    """Accept ``rev`` read from ``t`` (updating its record) or raise
    SecondInstallationError; ``top`` is the highest revision known."""
    rec = t.record
    if rec.intended is not None:
        # A raise was in flight when we stopped: either value is consistent.
        if rev == rec.intended:
            rec.revision = rev
        if rev in (rec.intended, rec.revision):
            rec.intended = None
    if rev == rec.revision:
        return
    if t.lost:
        # A given-up tier came back: whatever it holds is stale; sync refills it.
        rec.missed = True
        return
    never_seen = rec.last_online is None and rec.revision == 0
    if never_seen and rev <= top:
        rec.revision = rev  # a tier added with older content: sync brings it level
        return
    if rev == 0 and rec.revision > 0 and is_empty(t):
        rec.revision = 0  # an empty replacement (new disk): refilled by sync
        rec.missed = True
        return
    raise SecondInstallationError(
        f"another installation has written to vault {vault_name} on {t.name} "
        f"(tier revision {rev}, this installation expected {rec.revision}); nothing was "
        f"written. If this computer replaces the other one, run 'tiervault attach "
        f"--take-over' here; if this one should only restore, attach it again with "
        f"--read-only in a new --home")


def is_empty(t: Tier) -> bool:
    """True if the tier holds no vault at all (no config file)."""
    try:
        t.backend.stat(Handle(FileType.CONFIG))
        return False
    except NotFoundError:
        return True
    except BackendError:
        return False


def classify(tiers: list[Tier]) -> None:
    """Mark each tier that answered online or unsynchronized."""
    top = max_revision(tiers)
    for t in tiers:
        if t.revision is None or (t.state == OFFLINE and t.error is not None
                                  and t.revision is None):
            continue
        if t.record.missed or t.record.revision < top:
            t.state = UNSYNCHRONIZED
        else:
            t.mark_online()


def why_waiting(tiers: list[Tier]) -> str:
    """One line: each tier and why it cannot serve."""
    parts = []
    for t in tiers:
        why = t.error or t.state
        if t.state == UNSYNCHRONIZED:
            why = "behind, needs a tier at the max revision to sync from"
        parts.append(f"{t.name}: {why}")
    return "; ".join(parts)
