"""Trusting tiers only as far as the key proves (SPEC §5, issue 9).

- At the start of every session each online tier is checked against its
  authenticated manifest and against the installation's own record (the last
  manifest it saw or wrote, and the files it deleted). A tier whose manifest
  is missing, does not authenticate or is older than the record, whose
  listing lacks what the manifest or the record names, whose config fails its
  MAC, or which holds files this installation deleted, is stale or damaged:
  it is named in one warning line, not used while a good tier is online, and
  healed by the next sync (or ``check --repair``).
- At the end of every write session a new manifest is written (and a version
  1 config is upgraded in place with its MAC).
- ``mutable_check`` is what sync uses to validate key files, the config and
  the manifest before copying them (sync lives below the vault layer).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tiervault.errors import BackendError, IntegrityError, NotFoundError
from tiervault.state.db import StateDB
from tiervault.storage.base import FileType, Handle
from tiervault.tiers.tier import Tier
from tiervault.tiers.tierset import TierSet
from tiervault.vault.crypto import parse_key_file
from tiervault.vault.index import INDEX_AAD
from tiervault.vault.manifest import MANIFEST, Manifest, manifest_counter, read_manifest
from tiervault.vault.repository import Repository, VaultConfig
from tiervault.vault.snapshot import SNAPSHOT_AAD

RECORD_KEY = "trust:manifest"
CONFIG_MAC_KEY = "trust:config_mac"
_CHECKED = (FileType.SNAPSHOT, FileType.INDEX, FileType.KEY)
#: (handle, source bytes, target bytes or None) -> None to copy, or why not.
MutableCheck = Callable[[Handle, bytes, bytes | None], str | None]


def removed_files(db: StateDB) -> dict[FileType, set[str]]:
    """What this installation deleted, by kind."""
    return {t: db.deleted(t.value) for t in (FileType.KEY, FileType.INDEX, FileType.SNAPSHOT,
                                             FileType.PACK)}


def load_record(db: StateDB) -> Manifest | None:
    """The last manifest this installation saw or wrote."""
    raw = db.get(RECORD_KEY)
    if raw is None:
        return None
    try:
        return Manifest.from_json(json.loads(raw), "the installation's manifest record")
    except (ValueError, IntegrityError):
        return None


def _save_record(db: StateDB, m: Manifest) -> None:
    db.put(RECORD_KEY, json.dumps(m.to_json()))


def tier_problem(t: Tier, repo: Repository, record: Manifest | None,
                 removed: dict[FileType, set[str]], config_mac_seen: bool,
                 vault_id: str) -> tuple[str | None, Manifest | None]:
    """Why ``t`` is stale or damaged (None if it is fine), and its manifest."""
    b = t.backend
    try:
        raw = b.load(Handle(FileType.CONFIG))
        cfg = VaultConfig.decode(raw)
    except NotFoundError:
        return "its config file is missing", None
    except IntegrityError:
        return "its config file is damaged", None
    if vault_id and cfg.id != vault_id:
        return "its config belongs to another vault", None
    if cfg.mac is not None and not cfg.authentic(repo.key, raw):
        return "its config fails authentication", None
    if cfg.mac is None and config_mac_seen:
        return "its config lost its authentication code (replaced)", None
    try:
        m = read_manifest(b, repo.key, t.name)
    except IntegrityError:
        return "its manifest fails authentication", None
    if m is None and record is not None:
        return "its manifest is missing", None
    if m is not None and m.vault_id != cfg.id:
        return "its manifest belongs to another vault", None
    if m is not None and record is not None and m.counter < record.counter:
        return (f"its manifest is older than the last one seen ({m.counter} < "
                f"{record.counter}): rolled back?"), m
    for kind in _CHECKED:
        listed = {fi.handle.name for fi in b.list(kind)}
        want: set[str] = set()
        for src in (m, record):
            if src is not None:
                want |= {FileType.SNAPSHOT: src.snapshots, FileType.INDEX: src.indexes,
                         FileType.KEY: src.keys}[kind]
        lacking = sorted(want - removed[kind] - listed)
        if lacking:
            return f"it lacks {_some(kind, lacking)}, which the vault holds", m
        replayed = sorted(listed & removed[kind])
        if replayed and kind is not FileType.KEY:
            return f"it holds {_some(kind, replayed)}, deleted earlier (put back?)", m
    return None, m


def _some(kind: FileType, names: list[str]) -> str:
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{kind.value}/{names[0]}{more}"


def verify_tiers(ts: TierSet, repo: Repository, db: StateDB, vault_id: str,
                 read_only: bool = False) -> None:
    """Check every online tier (see the module docstring); distrust bad ones."""
    record = load_record(db)
    removed = removed_files(db)
    mac_seen = db.get(CONFIG_MAC_KEY) is not None
    best = record
    good_config: VaultConfig | None = None
    for t in list(ts.online()):
        try:
            why, m = tier_problem(t, repo, record, removed, mac_seen, vault_id)
        except BackendError:
            continue  # unreachable now: the reads that follow take it offline
        if why is not None:
            ts.distrust(t, why)
            continue
        if m is not None and (best is None or m.counter > best.counter):
            best = m
        if good_config is None:
            try:
                good_config = VaultConfig.decode(t.backend.load(Handle(FileType.CONFIG)))
            except (BackendError, IntegrityError):
                pass
    checked = best

    def verify(t: Tier) -> str | None:
        return tier_problem(t, repo, checked, removed, mac_seen, vault_id)[0]

    ts.verify = verify
    if good_config is not None and good_config != repo.config:
        repo.config = good_config  # the first tier's config was not the honest one
    if not read_only and best is not None and best is not record:
        _save_record(db, best)
    if not read_only and good_config is not None and good_config.mac is not None:
        db.put(CONFIG_MAC_KEY, "1")


def write_manifest(ts: TierSet, repo: Repository, db: StateDB) -> None:
    """End of a write session: upgrade a version 1 config, write the manifest."""
    if not ts.in_session or not ts.online():
        return
    if repo.config.mac is None:
        raw = repo.config.encode(repo.key)
        ts.save(Handle(FileType.CONFIG), raw)
        repo.config = VaultConfig.decode(raw)
        db.put(CONFIG_MAC_KEY, "1")
    record = load_record(db)
    removed = removed_files(db)
    repo.removed = removed
    counter = (record.counter if record else 0) + 1
    for t in ts.online():
        try:
            counter = max(counter, manifest_counter(t.backend.load(MANIFEST), t.name) + 1)
        except (BackendError, IntegrityError):
            pass
    m = Manifest(counter, repo.config.id,
                 authentic(repo, FileType.SNAPSHOT, repo.names(FileType.SNAPSHOT), record),
                 authentic(repo, FileType.INDEX, repo.names(FileType.INDEX), record)
                 - repo.superseded_indexes,
                 authentic(repo, FileType.KEY, repo.names(FileType.KEY), record))
    ts.save(MANIFEST, m.seal(repo.key))
    # Recorded after it is written: a crash in between leaves tiers newer than
    # the record, which is accepted; the other order would condemn every tier.
    _save_record(db, m)


def authentic(repo: Repository, kind: FileType, names: list[str],
              record: Manifest | None) -> set[str]:
    """The names worth sealing in a manifest: those the last manifest already named,
    and new ones that open with the key. A file a hostile tier planted (any bytes
    under their own hash) is never named, so it cannot make an honest tier that
    lacks it look stale."""
    known: set[str] = set()
    if record is not None:
        known = {FileType.SNAPSHOT: record.snapshots, FileType.INDEX: record.indexes,
                 FileType.KEY: record.keys}[kind]
    out: set[str] = set()
    for name in names:
        if name in known:
            out.add(name)
            continue
        try:
            if kind is FileType.SNAPSHOT:
                repo.load_snapshot(name)
            elif kind is FileType.INDEX:
                repo.open_index_file(name)  # sealed with the key: written by us
            else:
                parse_key_file(repo.backend.load(Handle(kind, name)),
                               f"keys/{name}")
        except IntegrityError:
            continue  # not ours: planted or damaged; check names it
        except BackendError:
            continue  # unreadable now: the next session's manifest names it
        out.add(name)
    return out


def mutable_check(repo: Repository | None, db: StateDB, vault_id: str) -> MutableCheck:
    """Whether sync may copy a mutable file over (or next to) the target's.

    Key files and the config are written once: an existing one is never
    replaced (except a version 1 config by its authenticated upgrade). Without
    the key (``repo`` None) nothing is replaced, only missing files are added.
    """
    removed = removed_files(db)

    def check(h: Handle, data: bytes, theirs: bytes | None) -> str | None:
        try:
            if h.type in (FileType.INDEX, FileType.SNAPSHOT):
                # Given back from a target to the source: only what opens with the
                # key (a hostile tier can plant any bytes under their own hash).
                if repo is None:
                    return "cannot verify it without the passphrase"
                repo.key.open(data, INDEX_AAD if h.type is FileType.INDEX else SNAPSHOT_AAD,
                              str(h))
                return None
            if h.type is FileType.KEY:
                if h.name in removed[FileType.KEY]:
                    return "removed by this installation"
                parse_key_file(data, str(h))
                return None if theirs is None else "key files are never replaced"
            if h.type is FileType.CONFIG:
                cfg = VaultConfig.decode(data)
                if vault_id and cfg.id != vault_id:
                    return "it belongs to another vault"
                if repo is None:
                    return None if theirs is None else "cannot verify it without the passphrase"
                if cfg.mac is None or not cfg.authentic(repo.key, data):
                    return None if theirs is None else "it is not authenticated"
                return None
            if h.type is FileType.MANIFEST:
                n = manifest_counter(data, str(h))
                if repo is not None:
                    Manifest.open(repo.key, data, str(h))
                if theirs is None:
                    return None
                try:
                    if manifest_counter(theirs, str(h)) >= n:
                        return "the target's manifest is as new"
                except IntegrityError:
                    pass
                # Without the key a newer counter is all we can tell: a forged
                # one is caught (and healed) by the next session with the key.
                return None
        except IntegrityError as e:
            return str(e)
        return None

    return check
