"""Removing the temporary uploads that dead writers left on the tiers.

A save uploads to a hidden temporary name carrying this process's
``WRITER_TOKEN`` and renames it into place (S3: a multipart upload completed
at the end). A writer killed mid-upload, or a server killed mid-upload,
leaves the temporary behind. Only one process of one installation writes to
a vault at a time, and it holds the installation's write lock, which the
kernel drops when the process dies: so a process that holds the lock knows
that every temporary not carrying its own token is dead, and removes it.

It happens where a tier is written anyway and the cost of a full listing is
paid already or rare: on both ends of a synchronization, on every online
tier at ``prune``, and on the tier a crashed session's recovery keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tiervault.errors import BackendError
from tiervault.tiers.tier import Tier


def clean_tiers(tiers: Iterable[Tier], notify: Callable[[str], None]) -> int:
    """Remove dead temporaries from each reachable tier; returns how many.

    The caller holds the installation's write lock. A tier that fails is
    left for next time (its leftovers are hidden and harmless meanwhile).
    """
    total = 0
    for t in tiers:
        try:
            removed = t.backend.remove_temporaries()
        except BackendError as e:
            notify(f"tier {t.name}: leftover temporary uploads not removed: {e}")
            continue
        if removed:
            notify(f"tier {t.name}: removed {len(removed)} temporary upload(s) of an "
                   "interrupted session")
        total += len(removed)
    return total
