"""Checking every tier, and healing one tier from another (``check --repair``).

Tiers at the max revision must hold identical files. A file that is damaged
or missing on one of them is copied from a tier whose copy verifies (content
hash, and for packs every blob decrypted and authenticated) before it is
written. Packs whose index was lost everywhere get a new index rebuilt from
their headers. Nothing is deleted: a file without any good copy is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tiervault.engine.check import CheckReport, check
from tiervault.engine.progress import Progress
from tiervault.errors import BackendError, IntegrityError, TierVaultError, UsageError
from tiervault.service.session import VaultSession
from tiervault.storage.base import FileType, Handle, handle_from_path
from tiervault.storage.urls import tier_index
from tiervault.tiers.tier import ONLINE, Tier
from tiervault.tiers.tierset import DAMAGED_KEY, SESSION_IN_PROGRESS, TierSet
from tiervault.vault.crypto import parse_key_file
from tiervault.vault.index import INDEX_AAD, decode_index
from tiervault.vault.pack import header_length, parse_header, trailer_size
from tiervault.vault.repository import Repository, check_content_name
from tiervault.vault.snapshot import SNAPSHOT_AAD

_TYPES = (FileType.KEY, FileType.PACK, FileType.INDEX, FileType.SNAPSHOT, FileType.ARCHIVE)


@dataclass
class RepairAction:
    """One file healed (or that could not be)."""

    tier: str
    file: str
    source: str | None
    done: bool
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"tier": self.tier, "file": self.file, "source": self.source, "done": self.done,
                "message": self.message}


@dataclass
class TierCheck:
    """The check result of the vault as one tier holds it."""

    tier: Tier
    report: Any
    repairs: list[RepairAction] = field(default_factory=list)
    #: Errors the first pass found that the repair healed (the report holds what is left).
    fixed: list[dict[str, Any]] = field(default_factory=list)


def select_tiers(sess: VaultSession, sel: str | None) -> list[Tier]:
    """Reachable tiers, or the one named by number (1-based) or URL."""
    tiers = sess.tiers.tiers
    if sel:
        if sel.isdigit():
            i = int(sel) - 1
            if not 0 <= i < len(tiers):
                raise UsageError(f"--tier {sel}: there are {len(tiers)} tiers")
            chosen = [tiers[i]]
        else:
            # The same matching as tier remove/lost: a URL with, without or with a masked password.
            found = tier_index([t.url for t in tiers], sel)
            if found is None:
                raise UsageError(f"--tier {sel}: not a tier of this vault")
            chosen = [tiers[found]]
        if chosen[0].revision is None:
            raise TierVaultError(f"tier {chosen[0].name} is not reachable")
        return chosen
    return [t for t in tiers if t.revision is not None]


def tier_repo(sess: VaultSession, t: Tier) -> Repository:
    """The vault as this one tier holds it (same key, no tier set in between)."""
    return Repository(t.backend, sess.repo.key, sess.repo.config, sess.repo.key_name)


def verify_copy(repo: Repository | None, h: Handle, data: bytes) -> None:
    """Raise IntegrityError unless ``data`` is a good copy of ``h``.

    The content hash (the file's name) already proves an immutable file is
    intact; with the key, packs, indexes and snapshots are also decrypted.
    """
    check_content_name(h, data)
    if h.type is FileType.KEY:
        parse_key_file(data, str(h))  # a good copy of a key file that became unusable
        return
    if h.type not in (FileType.PACK, FileType.INDEX, FileType.SNAPSHOT, FileType.ARCHIVE):
        raise IntegrityError(f"{h} is mutable and cannot be verified; not copied")
    if repo is None:
        return
    what = str(h)
    if h.type is FileType.PACK:
        n = header_length(data[-trailer_size():], len(data), what)
        mv = memoryview(data)
        pid = bytes.fromhex(h.name)
        for e in parse_header(data[-trailer_size() - n:-trailer_size()], repo.key, len(data),
                              what):
            repo.decode_blob(pid, e, mv[e.offset:e.offset + e.length])
    elif h.type is FileType.INDEX:
        plain = repo.key.open(data, INDEX_AAD, what)
        decode_index(repo.codec.decompress(plain, None, what, 1 << 30), what)
    elif h.type is FileType.SNAPSHOT:
        repo.codec.decompress(repo.key.open(data, SNAPSHOT_AAD, what), None, what)
    elif h.type is FileType.ARCHIVE:
        repo.decode_archive_mark(h.name, data)


def heal(ts: TierSet, repo: Repository | None, target: Tier, h: Handle,
         dry_run: bool) -> RepairAction:
    """Copy a verified good copy of ``h`` from another tier onto ``target``."""
    for src in ts.tiers:
        if src is target or src.state != ONLINE:
            continue
        try:
            data = src.backend.load(h)
            verify_copy(repo, h, data)
        except (BackendError, IntegrityError):
            continue
        if not dry_run:
            try:
                target.backend.save(h, data)
            except BackendError as e:
                return RepairAction(target.name, str(h), src.name, False, str(e))
        return RepairAction(target.name, str(h), src.name, not dry_run,
                            "would copy" if dry_run else "copied")
    return RepairAction(target.name, str(h), None, False, "no good copy on any other tier")


_ORDER = {FileType.KEY: 0, FileType.PACK: 1, FileType.INDEX: 2, FileType.ARCHIVE: 3,
          FileType.SNAPSHOT: 4}


def _check_key_files(t: Tier, report: CheckReport) -> None:
    """Every key file a tier lists is a regular file within its size bound that
    parses: one that does not (a 4 GiB file, a symlink) is an error, healed by
    --repair from a tier whose copy is good."""
    try:
        names = [fi.handle for fi in t.backend.list(FileType.KEY)]
    except BackendError as e:
        report.error("keys", f"the key files could not be listed: {e}")
        return
    for h in names:
        try:
            parse_key_file(t.backend.load(h), str(h))
        except IntegrityError as e:
            report.error(str(h), f"unusable key file: {e}")
        except BackendError as e:
            report.error(str(h), f"the key file could not be read: {e}")


def _report_planted(t: Tier, report: CheckReport) -> None:
    """What a local tier's listings skipped (symlinks, FIFOs, devices): never read
    nor copied, but named, so that someone removes them."""
    b: Any = t.backend
    while hasattr(b, "inner"):
        b = b.inner
    for rel in sorted(getattr(b, "skipped", ())):
        report.error(rel, "not a regular file (a symlink, FIFO or device planted in the "
                          "tier?): never read nor copied; remove it")


def _dependency_order(h: Handle) -> tuple[int, str]:
    """Packs before the indexes naming them, indexes before snapshots."""
    return _ORDER.get(h.type, 9), h.name


def _missing_files(tiers: list[Tier]) -> dict[str, list[Handle]]:
    """Files some online tier has and another lacks."""
    names: dict[str, set[Handle]] = {}
    for t in tiers:
        have: set[Handle] = set()
        for ft in _TYPES:
            have.update(fi.handle for fi in t.backend.list(ft))
        names[t.url] = have
    union = set().union(*names.values()) if names else set()
    return {t.url: sorted(union - names[t.url]) for t in tiers}


def check_tiers(sess: VaultSession, progress: Progress, sel: str | None, read_data: bool,
                subset: float | None, repair: bool, dry_run: bool,
                workers: int) -> dict[str, Any]:
    """Check each selected tier; with ``repair``, heal them from each other."""
    if repair:
        sess.inst.require_writer()
    # Read before the repair starts its own writing session, whose marker would
    # otherwise be taken for an interrupted one (a false warning after every repair).
    interrupted = sess.inst.db.get(SESSION_IN_PROGRESS) is not None
    if repair and not dry_run:
        sess.tiers._begin_write()
    results: list[TierCheck] = []
    for t in select_tiers(sess, sel):
        progress.info(f"checking {t.name}")
        try:
            report = check(tier_repo(sess, t), progress, read_data, subset, workers)
        except BackendError as e:
            # One tier failing must not stop the check of the others.
            report = CheckReport()
            report.error("", f"the tier could not be checked: {e}")
        _check_key_files(t, report)
        _report_planted(t, report)
        results.append(TierCheck(t, report))
    online_all = [t for t in sess.tiers.tiers if t.state == ONLINE]
    if len(online_all) > 1 and not interrupted:
        # Tiers at the max revision must hold the same files. Packs no index
        # names are leftovers of an interrupted upload, not damage.
        try:
            lacking = _missing_files(online_all)
        except BackendError:
            lacking = {}
        referenced = {pid.hex() for pid in sess.repo.index.packs()}
        for r in results:
            for h in lacking.get(r.tier.url, []):
                if h.type is FileType.PACK and h.name not in referenced:
                    continue
                r.report.error(str(h), "missing on this tier (another tier at the same "
                                       "revision has it)")
    elif interrupted:
        for r in results:
            r.report.warnings.append("a writing session was interrupted; the tiers are "
                                     "brought level at the next write or sync")
    for r in results:
        why = sess.tiers.untrusted.get(r.tier.name)
        if why is not None:
            r.report.error("", f"this tier is stale or damaged: {why}")
    if repair and not dry_run and sess.tiers.untrusted:
        _heal_untrusted(sess, progress, results)
    if repair:
        online = [r.tier for r in results if r.tier.state == ONLINE]
        missing = _missing_files([t for t in sess.tiers.tiers if t.state == ONLINE]) \
            if len(online) > 1 or sel else {}
        for r in results:
            if r.tier.state != ONLINE:
                continue
            todo = set(missing.get(r.tier.url, []))
            for err in r.report.errors:
                named = handle_from_path(err["file"]) if err["file"] else None
                if named is not None:
                    todo.add(named)
            for h in sorted(todo, key=_dependency_order):
                r.repairs.append(heal(sess.tiers, sess.repo, r.tier, h, dry_run))
        rebuilt = _rebuild_index(sess, results, dry_run)
        if rebuilt and not dry_run:
            _drop_unhealable_indexes(sess, results)
    else:
        rebuilt = []
    if repair and not dry_run and (rebuilt or any(r.repairs for r in results)):
        # Re-check the repaired tiers so the verdict and the counts say what holds
        # now: an error that was healed is reported as repaired, not as an error.
        sess.repo.reload_index()
        for r in results:
            before = r.report
            after = check(tier_repo(sess, r.tier), Progress(), read_data, subset, workers)
            left_files = {e["file"] for e in after.errors}
            for a in r.repairs:  # a heal that failed leaves its error standing
                if not a.done and a.file not in left_files:
                    after.error(a.file, f"not repaired: {a.message}")
                    left_files.add(a.file)
            left = {(e["file"], e["message"]) for e in after.errors}
            r.fixed = [e for e in before.errors if (e["file"], e["message"]) not in left
                       and (not e["file"] or e["file"] not in left_files)]
            after.warnings = before.warnings + [w for w in after.warnings
                                                if w not in before.warnings]
            r.report = after
    ok = all(r.report.ok for r in results)
    if repair and not dry_run:
        sess.inst.db.put(DAMAGED_KEY, None)
    return {
        "ok": ok,
        "tiers": [dict(r.report.to_json(), url=r.tier.name, state=r.tier.state,
                       repairs=[a.to_json() for a in r.repairs], repaired_errors=r.fixed)
                  for r in results],
        "rebuilt_indexes": rebuilt, "dry_run": dry_run, "repair": repair,
    }


def _heal_untrusted(sess: VaultSession, progress: Progress, results: list[TierCheck]) -> None:
    """Bring tiers found stale or damaged level with a good one (a sync that
    copies what they lack and removes what this installation deleted)."""
    from tiervault.service.tierops import pack_references, run_sync

    bad = set(sess.tiers.untrusted)
    done = {r.tier: r for r in run_sync(sess.tiers, progress, sess.inst.sync_workers(),
                                         pack_references(sess.repo), sess.repo,
                                         sess.inst.config.vault_id)}
    for r in results:
        if r.tier.name in bad and r.tier.name in done:
            res = done[r.tier.name]
            r.repairs.append(RepairAction(
                r.tier.name, "(whole tier)", None, res.completed,
                f"synchronized from a good tier ({_files(res.files_copied)} copied, "
                f"{res.files_removed} removed)" if res.completed else str(res.error)))


def _rebuild_index(sess: VaultSession, results: list[TierCheck], dry_run: bool) -> list[str]:
    """Index the packs that no index names, when snapshots need their blobs."""
    needs = any("missing" in e["message"] and not e["file"]
                for r in results for e in r.report.errors)
    if not needs:
        return []
    repo = sess.repo
    indexed = set(repo.index.packs())
    orphans = [fi for fi in repo.backend.list(FileType.PACK)
               if bytes.fromhex(fi.handle.name) not in indexed]
    packs = {}
    for fi in orphans:
        try:
            data = repo.backend.load(fi.handle)
            verify_copy(repo, fi.handle, data)
            n = header_length(data[-trailer_size():], len(data), str(fi.handle))
            packs[bytes.fromhex(fi.handle.name)] = parse_header(
                data[-trailer_size() - n:-trailer_size()], repo.key, len(data), str(fi.handle))
        except (BackendError, IntegrityError):
            continue
    if not packs or dry_run:
        return [f"would index {len(packs)} pack(s)"] if packs else []
    return [repo.write_index(packs)]


def _drop_unhealable_indexes(sess: VaultSession, results: list[TierCheck]) -> None:
    """Remove damaged index files no tier has a good copy of (now superseded)."""
    for r in results:
        for a in r.repairs:
            h = handle_from_path(a.file)
            if a.done or h is None or h.type is not FileType.INDEX:
                continue
            try:
                r.tier.backend.remove(h)
                a.message = "no good copy anywhere; removed (its packs are in the rebuilt index)"
                a.done = True
            except BackendError as e:
                a.message = f"could not remove the damaged index: {e}"


def record_damage(ts: TierSet) -> None:
    """Remember files that failed authentication on a tier, to heal when idle."""
    if not ts.damaged:
        return
    prev = json.loads(ts.db.get(DAMAGED_KEY) or "[]")
    new = [list(d) for d in ts.damaged if list(d) not in prev]
    ts.db.put(DAMAGED_KEY, json.dumps(prev + new))
    ts.damaged.clear()


def heal_recorded(ts: TierSet, progress: Progress) -> list[RepairAction]:
    """Heal the damaged files recorded by earlier reads (idle time)."""
    record_damage(ts)
    raw = ts.db.get(DAMAGED_KEY)
    if not raw or ts.read_only:
        return []
    done: list[RepairAction] = []
    left = []
    by_name = {t.name: t for t in ts.tiers}
    ts._begin_write()
    for tier_name, path in json.loads(raw):
        t = by_name.get(tier_name)
        h = handle_from_path(path)
        if t is None or h is None:
            continue
        if t.state != ONLINE:
            left.append([tier_name, path])
            continue
        a = heal(ts, None, t, h, dry_run=False)
        done.append(a)
        progress.info(f"healed {path} on {tier_name} from {a.source}" if a.done
                      else f"could not heal {path} on {tier_name}: {a.message}")
        if not a.done:
            left.append([tier_name, path])
    ts.db.put(DAMAGED_KEY, json.dumps(left) if left else None)
    ts.end_session()
    return done


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"
