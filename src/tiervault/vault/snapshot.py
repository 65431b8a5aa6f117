"""Snapshot files: when, where from, what (the root tree) and statistics."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tiervault.errors import IntegrityError

SNAPSHOT_AAD = b"tiervault snapshot"


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
