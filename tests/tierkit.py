"""Building tier sets over local directories with fault injection, for tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tiervault.state.db import StateDB
from tiervault.storage.faulty import FaultyBackend
from tiervault.storage.local import LocalBackend
from tiervault.storage.retry import RetryBackend
from tiervault.tiers.tier import Tier
from tiervault.tiers.tierset import TierSet


class FakeClock:
    """Injectable time: sleeping advances it instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, d: float) -> None:
        self.sleeps.append(d)
        self.now += d


@dataclass
class Kit:
    """Tier directories, their fault wrappers and a state database."""

    root: Path
    n: int = 2
    attempts: int = 3
    clock: FakeClock = field(default_factory=FakeClock)
    faults: list[FaultyBackend] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = StateDB(self.root / "home")
        for i in range(self.n):
            d = self.root / f"tier{i}"
            self.dirs.append(d)
            self.faults.append(FaultyBackend(LocalBackend(d, fsync=False),
                                             sleep=self.clock.sleep))

    def tierset(self, wait_timeout: float | None = 5.0) -> TierSet:
        """A fresh tier set (as a new process would build it) from the database."""
        tiers = [Tier(str(d), RetryBackend(f, attempts=self.attempts, delay=0.01,
                                           sleep=self.clock.sleep),
                      self.db.tier(str(d)))
                 for d, f in zip(self.dirs, self.faults, strict=True)]
        return TierSet(tiers, self.db, "test", wait_timeout=wait_timeout, probe_interval=1.0,
                       clock=self.clock, sleep=self.clock.sleep,
                       probe_backend=lambda t: self.faults[self.dirs.index(Path(t.url))])

    def create(self) -> TierSet:
        """Create every tier and connect."""
        ts = self.tierset()
        ts.create()
        ts.connect()
        return ts

    def files(self, i: int) -> dict[str, bytes]:
        """Every vault file of tier ``i`` except the revision file."""
        d = self.dirs[i]
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
                if p.is_file() and p.name != "revision" and not p.name.startswith(".")}

    def revision(self, i: int) -> int | None:
        """Tier ``i``'s revision file, or None."""
        p = self.dirs[i] / "revision"
        return int(p.read_text()) if p.exists() else None

    def unplug(self, i: int) -> None:
        """Make tier ``i`` unreachable (its directory disappears)."""
        self.dirs[i].rename(self.dirs[i].with_name(self.dirs[i].name + ".off"))

    def plug(self, i: int) -> None:
        """Bring tier ``i`` back."""
        self.dirs[i].with_name(self.dirs[i].name + ".off").rename(self.dirs[i])
