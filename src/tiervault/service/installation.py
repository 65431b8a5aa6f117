"""An installation: its home, config, state database, lock and storage stack."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tiervault.errors import UsageError
from tiervault.state.config import CONFIG_NAME, InstallationConfig, load_config, save_config
from tiervault.state.db import StateDB
from tiervault.state.home import InstallationLock
from tiervault.storage.urls import is_relative_path


@dataclass
class RunOptions:
    """Per-run overrides from the command line, read once at the edge."""

    retry_attempts: int | None = None
    retry_delay: float | None = None
    wait_timeout: float | None = None
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    #: --limit-upload / --limit-download in bytes per second, for every tier; they
    #: combine with config.toml's [[throttle]] rules (the stricter limit wins).
    limit_upload: float | None = None
    limit_download: float | None = None


class Installation:
    """One client's configuration and state."""

    def __init__(self, home: Path, config: InstallationConfig, opts: RunOptions) -> None:
        self.home = home
        self.config = config
        self.opts = opts
        self._db: StateDB | None = None
        self._lock = InstallationLock(home)

    @classmethod
    def load(cls, home: Path, opts: RunOptions) -> Installation:
        """Open an existing installation; a clear error if there is none."""
        cfg = load_config(home)
        if cfg is None or not cfg.tiers:
            raise UsageError(f"no vault is configured in {home}; run 'tiervault init TIER_URL' "
                             "or 'tiervault attach TIER_URL --read-only|--take-over' (or pass "
                             "--home)")
        for n, url in enumerate(cfg.tiers, 1):
            if is_relative_path(url):
                # Resolved against whatever directory a command runs in (a service
                # runs in /), it would name another place each time: never guess.
                raise UsageError(
                    f"{home / CONFIG_NAME}: tier {n} '{url}' is a relative path, which means a "
                    "different place in every working directory; write its absolute path in "
                    "[vault] tiers (the directory it was created from, e.g. "
                    f"'{os.path.abspath(url)}' if that was here)")
        return cls(home, cfg, opts)

    @classmethod
    def create(cls, home: Path, tiers: list[str], vault_id: str, opts: RunOptions) -> Installation:
        """Write a new installation config (refuses to overwrite one)."""
        existing = load_config(home)
        if existing is not None and existing.tiers:
            raise UsageError(f"{home} already has a vault configured; use another --home")
        cfg = InstallationConfig(installation_id=secrets.token_hex(8), vault_id=vault_id,
                                 tiers=list(tiers))
        save_config(home, cfg)
        return cls(home, cfg, opts)

    def save(self) -> None:
        """Persist config changes."""
        save_config(self.home, self.config)

    @property
    def db(self) -> StateDB:
        """The state database (opened on first use)."""
        if self._db is None:
            self._db = StateDB(self.home)
        return self._db

    def require_writer(self) -> None:
        """Refuse writes in a restore-only installation."""
        if self.config.settings.read_only:
            raise UsageError("this is a restore-only installation (attach --read-only); "
                             "it never writes to the vault")

    def lock(self) -> InstallationLock:
        """Take the installation's write lock (one writing process at a time)."""
        self._lock.acquire()
        return self._lock

    def unlock(self) -> None:
        """Release the write lock only (the daemon lends it to a handed-over command)."""
        self._lock.release()

    def lock_held_elsewhere(self) -> bool:
        """True if another process of this installation is running a command."""
        return self._lock.held_elsewhere()

    def close(self) -> None:
        """Release the database and the lock."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._lock.release()

    @property
    def retry_attempts(self) -> int:
        """Reconnect attempts per operation (CLI over config)."""
        v = self.opts.retry_attempts
        return self.config.settings.retry_attempts if v is None else v

    @property
    def retry_delay(self) -> float:
        """First backoff delay in seconds."""
        v = self.opts.retry_delay
        return self.config.settings.retry_delay if v is None else v

    @property
    def wait_timeout(self) -> float | None:
        """How long a write waits for a tier; None = forever."""
        v = self.opts.wait_timeout
        return self.config.settings.wait_timeout if v is None else v

    def workers(self) -> int:
        """Worker threads for reading and compressing."""
        w = self.config.settings.workers
        return w if w > 0 else max(2, min(8, os.cpu_count() or 2))

    def sync_workers(self) -> int:
        """Parallel copies of a synchronization: they wait on the network, not the CPU."""
        return max(4, self.workers())

    def secrets_for(self, url: str) -> dict[str, str]:
        """Credentials for one tier from the config's [credentials] table."""
        creds = self.config.extra.get("credentials", {})
        if isinstance(creds, dict):
            val = creds.get(url)
            if isinstance(val, dict):
                return {str(k): str(v) for k, v in val.items()}
        return {}
