"""What every part of a running console shares: settings, store, clock, waker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tiervault.console.clock import Clock
from tiervault.console.services.waker import Waker
from tiervault.console.store.db import Database, default_url

DEFAULT_INTERVAL = 60      # seconds between check-ins a device is told
LONG_POLL_MAX = 55         # longest a command long-poll is held (s), under proxy timeouts


@dataclass
class Settings:
    """How one console process runs (read once, at the edge: serve's options)."""

    data_dir: Path
    database_url: str | None = None
    interval: int = DEFAULT_INTERVAL
    long_poll_max: float = LONG_POLL_MAX
    https: bool = True
    setup_code: str | None = None           # printed on the terminal until a user exists
    public_url: str | None = None           # what devices dial (the unattended command)
    fingerprint: str | None = None          # SHA256:<hex> of the TLS certificate
    package: str = "tiervault"              # what the device install line gives pip

    @property
    def url(self) -> str:
        """The database URL in use."""
        return self.database_url or default_url(self.data_dir)


@dataclass
class AppContext:
    """Handed to every router and page: nothing is global."""

    settings: Settings
    db: Database
    clock: Clock
    waker: Waker
    extras: dict[str, object] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> AppContext:
        """Open the store named by ``settings`` (migrations are serve's job)."""
        db = Database(settings.url)
        spool = settings.data_dir / "wake"
        return cls(settings=settings, db=db, clock=clock or Clock.from_env(),
                   waker=Waker(db, spool))
