"""Opening the storage stack and the vault for one command.

The whole stack is composed here, so it can be read in one place:
raw backend -> reconnect procedure (RetryBackend) -> Tier -> TierSet -> Repository.
"""

from __future__ import annotations

from typing import Any

from tiervault.engine.progress import Progress
from tiervault.errors import UsageError
from tiervault.service.installation import Installation
from tiervault.storage.base import Backend
from tiervault.storage.retry import RetryBackend
from tiervault.storage.throttle import ThrottledBackend, ThrottleSchedule
from tiervault.storage.urls import open_backend, parse_url, redact
from tiervault.tiers.sync import SyncResult, sync_all
from tiervault.tiers.tier import Tier
from tiervault.tiers.tierset import TierSet


def raw_tier_backend(inst: Installation, url: str) -> Backend:
    """The raw backend of one tier URL with its credentials."""
    return open_backend(url, inst.opts.env, inst.secrets_for(url))


def throttle_for(inst: Installation, url: str) -> ThrottleSchedule | None:
    """The ``[[throttle]]`` entry of config.toml for this tier (by URL or 1-based number)."""
    entries = inst.config.extra.get("throttle", [])
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise UsageError("config.toml: [[throttle]] must be a list of tables")
    number = str(inst.config.tiers.index(url) + 1) if url in inst.config.tiers else ""
    for e in entries:
        if not isinstance(e, dict):
            raise UsageError("config.toml: [[throttle]] must be a list of tables")
        sel = str(e.get("tier", ""))
        if sel in (number, tier_key(url), url):
            return ThrottleSchedule.from_config(e)
    return None


def build_tier_backend(inst: Installation, url: str) -> Backend:
    """One tier's stack: raw backend -> bandwidth limit -> reconnect procedure.

    The limit sits below the retries so that a re-sent upload is counted again.
    """
    b = raw_tier_backend(inst, url)
    schedule = throttle_for(inst, url)
    if schedule is not None:
        b = ThrottledBackend(b, schedule)
    return RetryBackend(b, attempts=inst.retry_attempts, delay=inst.retry_delay,
                        max_delay=max(2.0, inst.retry_delay))


def tier_key(url: str) -> str:
    """The key of a tier in the state database (never holds a password)."""
    return redact(url)


def lost_key(url: str) -> str:
    """The state key marking a tier as given up."""
    return f"lost:{tier_key(url)}"


def build_tierset(inst: Installation, progress: Progress, read_only: bool = False) -> TierSet:
    """The tier set over every configured tier."""
    tiers = []
    for url in inst.config.tiers:
        if parse_url(url).params.get("insecure", "").lower() in ("1", "true", "yes", "on"):
            progress.info(f"WARNING: TLS certificate verification is DISABLED for {redact(url)} "
                          "(insecure=1): anyone between you and the server can read and alter "
                          "your backups' traffic; use ca_file= for a private CA instead")
        rec = inst.db.tier(tier_key(url))
        lost = inst.db.get(lost_key(url)) is not None
        tiers.append(Tier(url, build_tier_backend(inst, url), rec, lost=lost))
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
        self.inst = inst
        self.progress = progress
        self.tiers = build_tierset(inst, progress, read_only)
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
            for name, err in self.repo.damaged_indexes:
                progress.warn(f"index/{name}", f"{err}; run 'tiervault check --repair'")
        except BaseException:
            self.tiers.close()
            raise

    def end_writes(self) -> None:
        """The command's writes are done: seal them in a new manifest; the next
        write is a new session."""
        from tiervault.service.trust import write_manifest

        write_manifest(self.tiers, self.repo, self.inst.db)
        self.tiers.end_session()

    def sync(self, **kwargs: Any) -> list[SyncResult]:
        """Synchronize reachable stale tiers (the application is idle now)."""
        self.tiers.end_session()

        def report(t: Tier, done: int, total: int) -> None:
            self.progress.add(0, 0)

        self.progress.phase("sync")
        return sync_all(self.tiers, report, **kwargs)

    def close(self) -> None:
        """Close connections."""
        self.tiers.close()
