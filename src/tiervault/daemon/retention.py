"""Retention after a set's backup: forget (only that set's snapshots), then prune.

A set's ``retention`` table holds either count-based ``keep_*`` values (as
``tiervault forget`` takes them: keep_last, keep_daily, ...) or, when the
engine provides grandfather-father-son retention (``engine.policy.GfsPolicy``),
its spans (all_days, daily_days, weekly_weeks, monthly_months, yearly_years).
``prune = false`` skips the prune. Both are writes, under the tier rules.
"""

from __future__ import annotations

import dataclasses
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tiervault.engine import policy as policy_mod
from tiervault.engine.policy import Policy
from tiervault.errors import UsageError
from tiervault.service import ops
from tiervault.service.session import VaultSession
from tiervault.vault.snapshot import SnapshotFilter

if TYPE_CHECKING:
    from tiervault.daemon.sets import BackupSet


def _count_fields() -> dict[str, str]:
    """``keep_daily`` -> ``daily`` for every field of Policy."""
    return {f"keep_{f.name}": f.name for f in dataclasses.fields(Policy)}


def _gfs_fields() -> dict[str, str]:
    cls = getattr(policy_mod, "GfsPolicy", None)
    if cls is None or not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: f.name for f in dataclasses.fields(cls)}


def validate_retention(doc: dict[str, Any]) -> None:
    """UsageError if the retention table has unknown or mixed keys."""
    counts, gfs = _count_fields(), _gfs_fields()
    keys = set(doc) - {"prune"}
    unknown = keys - set(counts) - set(gfs)
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(sorted(unknown))} (known: "
                         f"{', '.join(sorted(set(counts) | set(gfs) | {'prune'}))})")
    if keys & set(counts) and keys & set(gfs):
        raise UsageError("use either keep_* counts or the grandfather-father-son spans")
    if "prune" in doc and not isinstance(doc["prune"], bool):
        raise UsageError("prune must be true or false")
    for k in keys:
        v = doc[k]
        if k == "keep_within":
            if not isinstance(v, str):
                raise UsageError("keep_within must be a duration such as \"1y6m\"")
            policy_mod.Duration.parse(v)
        elif k == "keep_tags":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise UsageError("keep_tags must be a list of tags")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UsageError(f"{k} must be a whole number >= 0")


def apply_retention(sess: VaultSession, bs: BackupSet,
                    now: datetime | None = None) -> dict[str, Any] | None:
    """Apply the set's retention (None if it has none); returns what was removed.

    Only this host's snapshots of exactly the set's paths are considered, and
    the same service functions as ``forget`` and ``retention`` do the work, so
    archived snapshots are kept here exactly as there.
    """
    doc = bs.retention
    keys = set(doc) - {"prune"}
    if not keys:
        return None
    which = SnapshotFilter.of([socket.gethostname()], bs.snapshot_paths())
    counts = _count_fields()
    if keys & set(counts):
        kwargs: dict[str, Any] = {counts[k]: doc[k] for k in keys}
        if "tags" in kwargs:
            kwargs["tags"] = tuple(kwargs["tags"])
        if "within" in kwargs:
            kwargs["within"] = policy_mod.Duration.parse(kwargs["within"])
        pol = Policy(**kwargs)
        if pol.empty():
            return None
        out = ops.forget(sess, pol, False, which)
    else:
        gfs = policy_mod.GfsPolicy(**{k: doc[k] for k in keys})
        if gfs.empty():
            return None
        out = ops.apply_retention(sess, gfs, False, now, which=which)
    res: dict[str, Any] = {"kept": [s["id"] for s in out["keep"]],
                           "removed": [s["id"] for s in out["remove"]]}
    if res["removed"] and doc.get("prune", True):
        p = ops.prune(sess, False)
        res["prune"] = {k: p.get(k) for k in ("packs_deleted", "packs_repacked",
                                               "bytes_freed_estimate")}
    return res
