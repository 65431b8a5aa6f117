"""Check: is the vault complete and undamaged?

Structure: config, keys, every index file, every snapshot, every tree, every
pack the index names exists with a plausible size, every data blob a tree
names is indexed. ``read_data``: every pack is read whole, its name checked
against its content, its header against the index, and every blob decrypted
and authenticated.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tiervault.engine.progress import Progress
from tiervault.engine.usage import used_blobs
from tiervault.errors import IntegrityError, NotFoundError, TierVaultError
from tiervault.storage.base import FileType, Handle
from tiervault.vault.index import MasterIndex
from tiervault.vault.pack import header_length, parse_header, trailer_size
from tiervault.vault.repository import Repository, check_content_name
from tiervault.vault.snapshot import Snapshot


@dataclass
class CheckReport:
    """What check found: errors make it fail, warnings do not."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def error(self, file: str, message: str, snapshots: list[str] | None = None) -> None:
        """Record one damaged or missing file."""
        self.errors.append({"file": file, "message": message, "snapshots": snapshots or []})

    @property
    def ok(self) -> bool:
        """True when no error was found."""
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        """The JSON report."""
        return {"ok": self.ok, "errors": self.errors, "warnings": self.warnings,
                "counts": self.counts}


def check(repo: Repository, progress: Progress, read_data: bool = False,
          subset: float | None = None, workers: int = 4) -> CheckReport:
    """Run the checks; never raises for damage, only reports it."""
    rep = CheckReport()
    progress.phase("index")
    index_names = [fi.handle.name for fi in repo.backend.list(FileType.INDEX)]
    # Rebuild the in-memory index from the index files that are good, so that
    # one damaged index does not hide the rest of the vault.
    repo.index = MasterIndex()
    for name in index_names:
        try:
            for pid, ents in repo.read_index_file(name).items():
                repo.index.add_pack(pid, ents)
        except (IntegrityError, NotFoundError) as e:
            rep.error(f"index/{name}", str(e))
    pack_sizes = {fi.handle.name: fi.size for fi in repo.backend.list(FileType.PACK)}
    packs = repo.index.packs()
    for pid, entries in packs.items():
        name = pid.hex()
        if name not in pack_sizes:
            rep.error(f"data/{name[:2]}/{name}", "pack named by the index is missing")
        elif entries and max(e.offset + e.length for e in entries) + trailer_size() > \
                pack_sizes[name]:
            rep.error(f"data/{name[:2]}/{name}", "pack is shorter than the index says")
    for name in pack_sizes:
        if bytes.fromhex(name) not in packs:
            rep.warnings.append(f"data/{name[:2]}/{name} is not referenced by any index "
                                "(left by an interrupted backup; prune removes it)")
    progress.phase("snapshots")
    snaps: list[Snapshot] = repo.snapshots(
        on_error=lambda sid, e: rep.error(f"snapshots/{sid}", str(e)))
    bad: dict[str, list[str]] = {}

    def on_error(s: Snapshot, msg: str) -> None:
        bad.setdefault(msg, []).append(s.id)

    used_blobs(repo, snaps, on_error=on_error, on_tree=lambda: progress.add(1))
    for msg, sids in bad.items():
        rep.error("", msg, sorted(set(sids)))
    marks = _check_archive_marks(repo, rep, snaps)
    rep.counts = {"snapshots": len(snaps), "packs": len(pack_sizes), "index_files":
                  len(index_names), "blobs": len(repo.index), "archive_marks": marks}
    if read_data:
        _read_data(repo, rep, progress, pack_sizes, snaps, subset, workers)
    return rep


def _check_archive_marks(repo: Repository, rep: CheckReport, snaps: list[Snapshot]) -> int:
    """Authenticate every archive mark; a mark naming no snapshot is only a warning
    (left by an interrupted archived backup, or by a snapshot lost with a tier)."""
    ids = {s.id for s in snaps}
    names = sorted(repo.archive_marks())
    for name in names:
        try:
            repo.load_archive_mark(name)
        except (IntegrityError, NotFoundError) as e:
            # Still counts as archived (presence decides): never a reason to forget it.
            rep.error(f"archives/{name}", str(e))
            continue
        if name not in ids:
            rep.warnings.append(f"archives/{name} marks a snapshot that is not in the vault "
                                "(harmless; 'archive release' removes the mark)")
    return len(names)


def _read_data(repo: Repository, rep: CheckReport, progress: Progress, pack_sizes: dict[str, int],
               snaps: list[Snapshot], subset: float | None, workers: int) -> None:
    names = sorted(pack_sizes)
    if subset is not None and subset < 1:
        k = max(1, round(len(names) * subset)) if names else 0
        names = sorted(random.sample(names, k))
    progress.phase("read data")
    progress.set_total(len(names), sum(pack_sizes[n] for n in names))
    damaged: list[tuple[str, str]] = []
    packs = repo.index.packs()

    def one(name: str) -> None:
        pid = bytes.fromhex(name)
        h = Handle(FileType.PACK, name)
        try:
            data = repo.backend.load(h)
            check_content_name(h, data)
            n = header_length(data[-trailer_size():], len(data), str(h))
            entries = parse_header(data[-trailer_size() - n:-trailer_size()], repo.key, len(data),
                                   str(h))
            mv = memoryview(data)
            for e in entries:
                repo.decode_blob(pid, e, mv[e.offset:e.offset + e.length])
            indexed = {(e.id, e.offset, e.length) for e in packs.get(pid, [])}
            if indexed and indexed != {(e.id, e.offset, e.length) for e in entries}:
                raise IntegrityError(f"{h} does not match its index entry")
            progress.add(1, len(data))
        except (IntegrityError, NotFoundError) as e:
            damaged.append((str(h), str(e)))
        except TierVaultError as e:
            damaged.append((str(h), f"could not be read: {e}"))

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, names))
    for file, msg in damaged:
        pid = bytes.fromhex(file.rsplit("/", 1)[1])
        affected = _snapshots_using_pack(repo, snaps, pid)
        rep.error(file, msg, affected)


def _snapshots_using_pack(repo: Repository, snaps: list[Snapshot], pid: bytes) -> list[str]:
    blobs = {e.id for e in repo.index.packs().get(pid, [])}
    if not blobs:
        return []
    out = []
    for s in snaps:
        try:
            if blobs & used_blobs(repo, [s], on_error=lambda *_: None):
                out.append(s.id)
        except TierVaultError:
            out.append(s.id)
    return out
