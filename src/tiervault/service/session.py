"""Opening the storage stack and the vault for one command.

The whole stack is composed here, so it can be read in one place:
raw backend -> reconnect procedure (RetryBackend) -> Tier -> TierSet -> Repository.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tiervault.engine.progress import Progress
from tiervault.service.installation import Installation
from tiervault.state.config import tier_index
from tiervault.storage.base import Backend
from tiervault.storage.retry import RetryBackend
from tiervault.storage.throttle import (
    Limits,
    ThrottledBackend,
    ThrottleSchedule,
    interruptible_sleep,
)
from tiervault.storage.urls import open_backend, parse_url, redact
from tiervault.tiers.sync import SyncResult, sync_all
from tiervault.tiers.tier import CreateOnFirstUse, Tier
from tiervault.tiers.tierset import TierSet

if TYPE_CHECKING:
    from tiervault.state.db import StateDB
    from tiervault.vault.repository import Repository


def raw_tier_backend(inst: Installation, url: str) -> Backend:
    """The raw backend of one tier URL with its credentials.

    A tier that ``init --allow-offline`` could not create yet is created by
    the first operation that reaches it.
    """
    b = open_backend(url, inst.opts.env, inst.secrets_for(url))
    key = pending_create_key(url)
    if inst.db.get(key) is not None:
        b = CreateOnFirstUse(b, lambda: inst.db.put(key, None))
    return b


def throttle_for(inst: Installation, url: str) -> ThrottleSchedule | None:
    """The ``[[throttle]]`` entry of config.toml for this tier (by URL or 1-based number).

    The rules were validated at load (state.config); the same ``tier_index`` decides
    which tier a rule names there and here, so a rule that passed never misses its tier.
    """
    entries = inst.config.extra.get("throttle", [])
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or url not in inst.config.tiers:
        return None
    me = inst.config.tiers.index(url)
    for e in entries:
        if isinstance(e, dict) and tier_index(e.get("tier", ""), inst.config.tiers) == me:
            return ThrottleSchedule.from_config(e)
    return None


def _stricter(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass(frozen=True)
class CappedSchedule(ThrottleSchedule):
    """A config schedule under the command line's --limit-upload/--limit-download.

    At every moment the stricter of the two limits applies, per direction (so a
    free day of the config is still limited by the command line, and a window
    stricter than the command line keeps its limit).
    """

    cap: Limits = field(default_factory=Limits)

    @classmethod
    def over(cls, base: ThrottleSchedule, cap: Limits) -> CappedSchedule:
        """``base`` capped by ``cap``."""
        return cls(base.default, base.windows, base.free_days, cap)

    def limits_at(self, now: datetime) -> Limits:
        """The stricter of the config's limits at ``now`` and the cap."""
        base = super().limits_at(now)
        return Limits(_stricter(base.upload, self.cap.upload),
                      _stricter(base.download, self.cap.download))


def build_tier_backend(inst: Installation, url: str,
                       stop: threading.Event | None = None) -> Backend:
    """One tier's stack: raw backend -> bandwidth limit -> reconnect procedure.

    The limit sits below the retries so that a re-sent upload is counted again.
    Setting ``stop`` ends the limit's waits at once (an interrupted command).
    """
    b = raw_tier_backend(inst, url)
    schedule = throttle_for(inst, url)
    cap = Limits(inst.opts.limit_upload, inst.opts.limit_download)
    if cap != Limits():
        schedule = CappedSchedule.over(schedule or ThrottleSchedule(), cap)
    if schedule is not None:
        b = ThrottledBackend(b, schedule) if stop is None else \
            ThrottledBackend(b, schedule, sleep=interruptible_sleep(stop))
    return RetryBackend(b, attempts=inst.retry_attempts, delay=inst.retry_delay,
                        max_delay=max(2.0, inst.retry_delay))


def tier_key(url: str) -> str:
    """The key of a tier in the state database (never holds a password)."""
    return redact(url)


def pending_create_key(url: str) -> str:
    """The state key marking a tier that is still to be created (init --allow-offline)."""
    return f"create:{tier_key(url)}"


def lost_key(url: str) -> str:
    """The state key marking a tier as given up."""
    return f"lost:{tier_key(url)}"


def build_tierset(inst: Installation, progress: Progress, read_only: bool = False,
                  stop: threading.Event | None = None) -> TierSet:
    """The tier set over every configured tier (``stop``: see build_tier_backend)."""
    tiers = []
    for url in inst.config.tiers:
        if parse_url(url).params.get("insecure", "").lower() in ("1", "true", "yes", "on"):
            progress.info(f"WARNING: TLS certificate verification is DISABLED for {redact(url)} "
                          "(insecure=1): anyone between you and the server can read and alter "
                          "your backups' traffic; use ca_file= for a private CA instead")
        rec = inst.db.tier(tier_key(url))
        lost = inst.db.get(lost_key(url)) is not None
        tiers.append(Tier(url, build_tier_backend(inst, url, stop), rec, lost=lost))
    probes: dict[str, Backend] = {}

    def probe_backend(t: Tier) -> Backend:
        # One attempt per probe while waiting: the wait loop does the pacing.
        if t.url not in probes:
            probes[t.url] = raw_tier_backend(inst, t.url)
        return probes[t.url]

    restore_only = inst.config.settings.read_only
    return TierSet(tiers, inst.db, inst.config.vault_id[:8], wait_timeout=inst.wait_timeout,
                   notify=progress.info, read_only=read_only or restore_only,
                   probe_backend=probe_backend, adopt_revisions=restore_only)


class VaultSession:
    """An opened vault for one command; close() releases everything."""

    def __init__(self, inst: Installation, passphrase: str, progress: Progress,
                 load_index: bool = True, read_only: bool = False) -> None:
        #: When the command started to wait for its tiers: summaries count from here,
        #: so waiting for a tier is part of the duration the user is shown.
        self.started = time.monotonic()
        self.inst = inst
        self.progress = progress
        #: Set when the command is interrupted: the engine and throttled transfers stop.
        self.stop = threading.Event()
        self.tiers = build_tierset(inst, progress, read_only, self.stop)
        self.backend: Backend = self.tiers
        try:
            self.tiers.connect()
            if not read_only:
                from tiervault.service.lost import give_up_long_unavailable

                give_up_long_unavailable(inst, self.tiers, progress)
            # Imported here: the vault format (crypto, compression) loads only
            # when a session opens, not for commands that merely build tier sets.
            from tiervault.service import trust
            from tiervault.vault.repository import Repository

            self.repo = Repository.open(self.backend, passphrase, load_index=False,
                                        removed=trust.removed_files(inst.db))
            # Before anything is read from the listings: a tier that is stale or
            # damaged behind a current revision must not be the one read.
            trust.verify_tiers(self.tiers, self.repo, inst.db, inst.config.vault_id,
                               read_only=read_only)
            if load_index:
                self.repo.load_index()
                _set_aside_foreign_indexes(self.repo, inst.db, progress)
            for name, err in self.repo.damaged_indexes:
                progress.warn(f"index/{name}", f"{err}; run 'tiervault check --repair'")
        except BaseException:
            self.tiers.close()
            raise

    def end_writes(self) -> None:
        """The command's writes are done: seal them in a new manifest; the next
        write is a new session.

        Tiers still writing get a short grace; one still behind drops out of the
        session and is synchronized afterwards (all are waited for with
        ``tiers.wait_all_tiers``).
        """
        from tiervault.service.trust import write_manifest

        write_manifest(self.tiers, self.repo, self.inst.db)
        self.tiers.end_session()

    def elapsed_ms(self) -> int:
        """Milliseconds since the session was opened (waiting for tiers included)."""
        return int((time.monotonic() - self.started) * 1000)

    def sync(self, **kwargs: Any) -> list[SyncResult]:
        """Synchronize reachable stale tiers (the application is idle now)."""
        self.tiers.end_session()

        def report(t: Tier, done: int, total: int) -> None:
            self.progress.add(0, 0)

        self.progress.phase("sync")
        return sync_all(self.tiers, report, **kwargs)

    def close(self) -> None:
        """Close connections (stopping any transfer still waiting on a bandwidth limit)."""
        self.stop.set()
        self.tiers.close()


def _set_aside_foreign_indexes(repo: Repository, db: StateDB, progress: Progress) -> None:
    """An index that does not open with the key and that no manifest of this
    installation named was never ours (a hostile tier can plant any bytes under
    their own hash): it is ignored, with a note, instead of counting as damage that
    makes backups partial and prune refuse."""
    from tiervault.service.trust import load_record

    record = load_record(db)
    if record is None:
        return
    ours = [(n, e) for n, e in repo.damaged_indexes if n in record.indexes]
    for name, _err in repo.damaged_indexes:
        if name not in record.indexes:
            progress.info(f"index/{name} does not open with the key and no manifest names "
                          "it: ignored (planted on a tier?)")
    repo.damaged_indexes = ours
