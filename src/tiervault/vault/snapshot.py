"""Snapshot files: when, where from, what (the root tree) and statistics."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tiervault.errors import IntegrityError

SNAPSHOT_AAD = b"tiervault snapshot"
#: The tag that marked an archive before archive marks (``archives/<id>``) existed.
LEGACY_ARCHIVE_TAG = "archive"
#: The first program version that writes archive marks; in snapshots written by
#: an older one the tag ``archive`` is the archive flag, in newer ones a user tag.
ARCHIVE_MARKS_SINCE = (0, 2)


@dataclass
class Snapshot:
    """One backup session's result."""

    time: str  # ISO 8601 with offset
    hostname: str
    username: str
    paths: list[str]
    tree: str  # hex id of the root tree
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    complete: bool = True
    program: str = ""
    id: str = ""  # the file name; not stored inside

    def datetime(self) -> datetime:
        """The snapshot time as an aware datetime."""
        return datetime.fromisoformat(self.time)

    def legacy_archived(self) -> bool:
        """True if an older tiervault archived this snapshot with the ``archive`` tag."""
        if LEGACY_ARCHIVE_TAG not in self.tags:
            return False
        m = re.fullmatch(r"tiervault (\d+)\.(\d+)(?:\..*)?", self.program)
        return m is None or (int(m[1]), int(m[2])) < ARCHIVE_MARKS_SINCE

    def encode(self) -> bytes:
        """JSON plaintext (without the id)."""
        doc = asdict(self)
        doc.pop("id")
        doc["v"] = 1
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def decode(cls, plain: bytes, snap_id: str) -> Snapshot:
        """Parse and validate; IntegrityError naming the snapshot on damage."""
        what = f"snapshot {snap_id[:8]}"
        try:
            doc = json.loads(plain)
        except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
            raise IntegrityError(f"{what} is damaged (not JSON)") from None
        if not isinstance(doc, dict) or doc.pop("v", None) != 1:
            raise IntegrityError(f"{what} is not a supported snapshot")
        try:
            snap = cls(**doc, id=snap_id)
            _check(snap)
        except (TypeError, ValueError):
            raise IntegrityError(f"{what} is damaged (fields)") from None
        return snap


@dataclass(frozen=True)
class SnapshotFilter:
    """Which snapshots a command considers (restic's ``--host/--path/--tag``).

    ``hosts``: any of them. ``paths``: every one of them is among the
    snapshot's paths (absolute, as backed up; restic's meaning). ``tags``: any
    of the groups, a group being a comma-separated list of tags the snapshot
    must all have.
    """

    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, hosts: Iterable[str] = (), paths: Iterable[str] = (),
           tags: Iterable[str] = ()) -> SnapshotFilter:
        """A filter from command-line values (paths made absolute, as backup stores them)."""
        return cls(tuple(hosts), tuple(sorted({_abs(p) for p in paths})), tuple(tags))

    def empty(self) -> bool:
        """True if it lets every snapshot through."""
        return not (self.hosts or self.paths or self.tags)

    def matches(self, s: Snapshot) -> bool:
        """True if ``s`` passes every given criterion."""
        if self.hosts and s.hostname not in self.hosts:
            return False
        if self.paths and not set(self.paths) <= {_abs(p) for p in s.paths}:
            return False
        if self.tags:
            have = set(s.tags)
            groups = [{t for t in g.split(",") if t} for g in self.tags]
            if not any(g <= have for g in groups):
                return False
        return True

    def select(self, snaps: Sequence[Snapshot]) -> list[Snapshot]:
        """The snapshots that match, in their order."""
        return [s for s in snaps if self.matches(s)]

    def describe(self) -> str:
        """The options that make up this filter, for messages."""
        parts = [f"--host {h}" for h in self.hosts] + [f"--path {p}" for p in self.paths] + [
            f"--tag {t}" for t in self.tags]
        return " ".join(parts)


def _abs(p: str) -> str:
    # The spelling backup records: absolute, normalised, symlinks not resolved.
    return os.path.normpath(os.path.abspath(p)) if p else p


def _check(s: Snapshot) -> None:
    strs: list[Any] = [s.time, s.hostname, s.username, s.tree, s.program]
    if not all(isinstance(x, str) for x in strs):
        raise ValueError("field type")
    for lst in (s.paths, s.tags, s.excludes):
        if not isinstance(lst, list) or not all(isinstance(x, str) for x in lst):
            raise ValueError("list field")
    if not isinstance(s.stats, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in s.stats.items()):
        raise ValueError("stats")
    if len(s.tree) != 64 or not isinstance(s.complete, bool):
        raise ValueError("tree")
    bytes.fromhex(s.tree)
    if s.datetime().tzinfo is None:
        raise ValueError("time without offset")
