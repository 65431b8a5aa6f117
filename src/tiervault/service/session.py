"""Opening the storage stack and the vault for one command."""

from __future__ import annotations

from tiervault.engine.progress import Progress
from tiervault.service.installation import Installation
from tiervault.storage.base import Backend
from tiervault.storage.retry import RetryBackend
from tiervault.storage.urls import open_backend
from tiervault.vault.repository import Repository


def build_tier_backend(inst: Installation, url: str) -> Backend:
    """One tier's stack: raw backend wrapped in the reconnect procedure.

    All wrappers are composed here, so the whole stack is visible in one place.
    """
    raw = open_backend(url, inst.opts.env, inst.secrets_for(url))
    return RetryBackend(raw, attempts=inst.retry_attempts, delay=inst.retry_delay)


def build_backend(inst: Installation, progress: Progress) -> Backend:
    """The backend the vault layer sees (one tier for now)."""
    return build_tier_backend(inst, inst.config.tiers[0])


class VaultSession:
    """An opened vault for one command; close() releases everything."""

    def __init__(self, inst: Installation, passphrase: str, progress: Progress,
                 load_index: bool = True) -> None:
        self.inst = inst
        self.progress = progress
        self.backend = build_backend(inst, progress)
        try:
            self.repo = Repository.open(self.backend, passphrase, load_index=load_index)
        except BaseException:
            self.backend.close()
            raise

    def close(self) -> None:
        """Close connections."""
        self.backend.close()
