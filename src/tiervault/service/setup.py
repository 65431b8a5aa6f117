"""Setting an installation up: ``init`` (a new vault) and ``attach`` (an existing one).

Both check every tier before anything is created: a tier that refuses (a
wrong password, an unknown SSH host key, an untrusted certificate, no
permission) fails the command with the server's own reason, and so does an
unreachable one unless ``allow_offline`` (init) is given. A failed command
leaves no half-made installation home and no speed-vault directory behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiervault.engine.progress import Progress
from tiervault.errors import (
    NotFoundError,
    PermanentError,
    TierVaultError,
    TransientError,
    UsageError,
)
from tiervault.service.installation import Installation, RunOptions
from tiervault.service.session import build_tierset, pending_create_key
from tiervault.state.config import InstallationConfig, load_config
from tiervault.storage.base import Backend, FileType, Handle
from tiervault.storage.retry import RetryBackend
from tiervault.storage.urls import (
    normalize_url,
    open_backend,
    parse_url,
    redact,
    same_tier,
    tier_index,
)
from tiervault.tiers.tier import REFUSED_HINT, Tier, without_prefix
from tiervault.tiers.tierset import SESSION_IN_PROGRESS, TierSet

if TYPE_CHECKING:
    from tiervault.vault.crypto import KdfParams

class TierRefusedError(TierVaultError):
    """A tier answered with a definite refusal while setting up."""


INIT_CONNECT_GRACE = 30.0  # seconds init waits for tiers its probes found answering


@dataclass
class _Rollback:
    """What a failed init/attach must take away again (only what it made)."""

    home: Path
    home_existed: bool
    home_entries: set[str]
    local_made: list[Path] = field(default_factory=list)  # directories that did not exist
    local_filled: dict[Path, set[str]] = field(default_factory=dict)  # existing: prior entries

    @classmethod
    def start(cls, home: Path) -> _Rollback:
        existed = home.exists()
        return cls(home, existed, set(os.listdir(home)) if existed else set())

    def local_tier(self, root: Path) -> None:
        """Remember a local tier's directory before it is created."""
        top = root
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        if top.exists():
            self.local_filled[root] = set(os.listdir(root)) if root.is_dir() else set()
        else:
            self.local_made.append(top)

    def undo(self) -> None:
        """Remove what was created; errors are ignored (the real error is reported)."""
        for top in self.local_made:
            shutil.rmtree(top, ignore_errors=True)
        for root, before in self.local_filled.items():
            _remove_new(root, before)
        if not self.home_existed:
            shutil.rmtree(self.home, ignore_errors=True)
        else:
            _remove_new(self.home, self.home_entries)

def _remove_new(directory: Path, before: set[str]) -> None:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in set(names) - before:
        p = directory / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                pass


def _check_urls(urls: list[str]) -> list[str]:
    out = [normalize_url(u) for u in urls]
    for i, u in enumerate(out):
        if any(same_tier(u, v) for v in out[:i]):
            raise UsageError(f"the same tier is given twice ({redact(u)})")
    return out


def _refusal(name: str, e: BaseException, backend: Backend) -> TierRefusedError:
    reason = without_prefix(str(e), name, backend.location)
    return TierRefusedError(f"tier {name} refuses access: {reason}; {REFUSED_HINT}; "
                            "nothing was created")


# -- checking tiers before creating anything -------------------------------------------------


def _raw(inst: Installation, url: str) -> Backend:
    # Not session.raw_tier_backend: that one reads the state database, which
    # must not be created before the tiers are known to be usable.
    return open_backend(url, inst.opts.env, inst.secrets_for(url))


def _retrying(inst: Installation, url: str) -> Backend:
    return RetryBackend(_raw(inst, url), attempts=inst.retry_attempts,
                        delay=inst.retry_delay, max_delay=max(2.0, inst.retry_delay))


@dataclass
class _Probe:
    url: str
    state: str  # "ready" (root there), "absent" (answers, no root yet), "unreachable"
    error: str = ""


def _probe_local(url: str) -> _Probe:
    root = Path(parse_url(url).path)
    if root.exists():
        if not root.is_dir():
            raise UsageError(f"{root} is not a directory")
        if not os.access(root, os.W_OK | os.X_OK):
            raise TierRefusedError(f"tier {url}: permission denied (cannot write to {root}); "
                                   "nothing was created")
        return _Probe(url, "ready")
    top = root.parent
    while not top.exists() and top.parent != top:
        top = top.parent
    if not top.is_dir() or not os.access(top, os.W_OK | os.X_OK):
        raise TierRefusedError(f"tier {url}: cannot create {root}: permission denied in "
                               f"{top}; nothing was created")
    return _Probe(url, "absent")


def _probe_remote(inst: Installation, url: str, progress: Progress) -> _Probe:
    """One quick attempt; the reconnect procedure only if the server did not answer."""
    name = redact(url)
    raw = _raw(inst, url)
    try:
        try:
            raw.probe()
            return _Probe(url, "ready")
        except PermanentError as e:
            raise _refusal(name, e, raw) from None
        except TransientError as e:
            if _root_missing(e):
                return _Probe(url, "absent")
            first = e
    finally:
        raw.close()
    progress.info(f"tier {name} does not answer ({without_prefix(str(first), name, raw.location)})"
                  "; trying again")
    retrying = _retrying(inst, url)
    try:
        retrying.probe()
        return _Probe(url, "ready")
    except PermanentError as e:
        raise _refusal(name, e, retrying) from None
    except TransientError as e:
        if _root_missing(e):
            return _Probe(url, "absent")
        return _Probe(url, "unreachable", without_prefix(str(e), name, retrying.location))
    finally:
        retrying.close()


def _root_missing(e: TransientError) -> bool:
    # The server answered and logged us in; only the vault directory (or the
    # bucket) is not there yet, which is what init creates.
    return "is not there" in str(e)


def _holds_vault(b: Backend) -> bool:
    try:
        b.stat(Handle(FileType.CONFIG))
        return True
    except NotFoundError:
        return False
    except TransientError:
        return False  # the root is missing: no vault there


# -- init --------------------------------------------------------------------------------------


def init_vault(home: Path, urls: list[str], passphrase: str, opts: RunOptions,
               progress: Progress, kdf: KdfParams | None = None,
               allow_offline: bool = False) -> dict[str, Any]:
    """Create a vault on every tier and an installation pointing at it.

    ``kdf``: the key file's scrypt parameters (default: the current defaults).
    """
    from tiervault.vault.crypto import new_key_params, passphrase_warnings
    from tiervault.vault.repository import Repository

    if not urls:
        raise UsageError("init needs at least one tier URL")
    existing = load_config(home)
    if existing is not None and existing.tiers:
        raise UsageError(f"{home} already has a vault configured; use another --home")
    urls = _check_urls(urls)
    cfg = existing or InstallationConfig()
    cfg.tiers = list(urls)
    inst = Installation(home, cfg, opts)
    probes = [_probe_local(u) if parse_url(u).scheme == "file" else
              _probe_remote(inst, u, progress) for u in urls]
    for p in probes:
        if p.state == "ready":
            b = _retrying(inst, p.url)
            try:
                if _holds_vault(b):
                    raise UsageError(f"{redact(p.url)} already holds a vault; use "
                                     "'tiervault attach' to use it")
            finally:
                b.close()
    away = [p for p in probes if p.state == "unreachable"]
    if len(away) == len(probes):
        raise TierVaultError("no tier could be reached (" + "; ".join(
            f"{redact(p.url)}: {p.error}" for p in away) + "); nothing was created")
    if away and not allow_offline:
        raise TierVaultError(
            "cannot reach " + "; ".join(f"{redact(p.url)} ({p.error})" for p in away)
            + "; nothing was created. Try again when it answers, or pass --allow-offline to "
            "create the vault on the other tiers now and fill it by synchronization later")

    undo = _Rollback.start(home)
    for u in urls:
        if parse_url(u).scheme == "file":
            undo.local_tier(Path(parse_url(u).path))
    ts: TierSet | None = None
    try:
        inst.lock()
        for p in away:
            inst.db.put(pending_create_key(p.url), "1")
        ts = build_tierset(inst, progress)
        offline = {p.url for p in away}
        for t in ts.tiers:
            if t.url not in offline:
                _create(t)
        # The probes above found these tiers answering: wait for them as long as a probe
        # may take, not the 1 s a routine command gives a tier (init on a loaded machine).
        ts.connect_grace = INIT_CONNECT_GRACE
        ts.connect()
        if not ts.online():
            raise TierVaultError("no tier could be reached; nothing was created")
        kdf = kdf or new_key_params(opts.env)
        repo = Repository.init(ts, passphrase, kdf)
        ts.end_session()
        inst.config.vault_id = repo.config.id
        inst.config.installation_id = secrets.token_hex(8)
        inst.save()
        return {"vault_id": repo.config.id, "home": str(home),
                "tiers": [{"url": t.name, "state": t.state,
                           "pending": t.url in offline} for t in ts.tiers],
                "kdf": kdf.as_dict(), "warnings": passphrase_warnings(passphrase)}
    except BaseException:
        if ts is not None:
            ts.close()
            ts = None
        inst.close()
        undo.undo()
        raise
    finally:
        if ts is not None:
            ts.close()
        inst.close()


def _create(t: Tier) -> None:
    try:
        t.backend.create()
    except PermanentError as e:
        raise _refusal(t.name, e, t.backend) from None


# -- attach ------------------------------------------------------------------------------------

_CHOOSE = ("attach needs --read-only (restore on another computer: list, browse and restore, "
           "never write, never disturb the vault's writer) or --take-over (this computer "
           "replaces the writer; the old installation then stops with exit 3)")


def attach(home: Path, urls: list[str], passphrase: str, opts: RunOptions, progress: Progress,
           take_over: bool, read_only: bool = False) -> dict[str, Any]:
    """Connect this installation to an existing vault.

    ``take_over``: become its writer (the old installation then stops with
    exit 3); on a home that is already configured only the vault's ownership
    and the recorded revisions change, everything else in config.toml stays.
    ``read_only``: a restore-only installation that never writes and so never
    clashes with the writer.
    """
    if take_over and read_only:
        raise UsageError("--take-over and --read-only exclude each other")
    if not (take_over or read_only):
        raise UsageError(_CHOOSE)
    existing = load_config(home)
    configured = existing is not None and bool(existing.tiers)
    if configured and read_only:
        raise UsageError(f"{home} already has a vault configured; attach --read-only in "
                         "another --home")
    if configured:
        assert existing is not None
        cfg = existing
        _same_tiers(cfg, urls)
    else:
        if not urls:
            raise UsageError("attach needs the vault's tier URLs")
        cfg = existing or InstallationConfig()
        cfg.tiers = _check_urls(urls)
        cfg.settings.read_only = read_only
    inst = Installation(home, cfg, opts)
    undo = _Rollback.start(home)
    ts: TierSet | None = None
    try:
        inst.lock()
        ts = build_tierset(inst, progress)
        if take_over and not configured:
            _create_new_local_tiers(ts, undo)
        # Said only if attach succeeds: a failure names its reasons in its one line.
        said: list[str] = []
        ts.notify = said.append
        res = _attach(inst, ts, passphrase, take_over, read_only,
                      existing.vault_id if configured and existing else None)
        for m in said:
            progress.info(m)
        inst.config.installation_id = inst.config.installation_id or secrets.token_hex(8)
        inst.save()
        return res
    except BaseException:
        if ts is not None:
            ts.close()
            ts = None
        inst.close()
        if not configured:
            undo.undo()
        raise
    finally:
        if ts is not None:
            ts.close()
        inst.close()


def _create_new_local_tiers(ts: TierSet, undo: _Rollback) -> None:
    """A replacement computer's new speed vault: created here, filled by synchronization."""
    for t in ts.tiers:
        u = parse_url(t.url)
        if u.scheme == "file" and not Path(u.path).exists():
            _probe_local(t.url)  # a refusal (permission) is said before anything is made
            undo.local_tier(Path(u.path))
            _create(t)


def _same_tiers(cfg: InstallationConfig, given: list[str]) -> None:
    """On a configured home, take-over keeps the configured tiers (and their credentials)."""
    seen: set[int] = set()
    for g in given:
        i = tier_index(cfg.tiers, g)
        if i is None:
            raise UsageError(
                f"{redact(g)} is not a tier of this installation (tiers: "
                f"{', '.join(redact(u) for u in cfg.tiers)}); take-over keeps the configured "
                "tiers: run 'tiervault attach --take-over' alone, and change tiers with "
                "'tiervault tier add/remove'")
        seen.add(i)
    missing = [redact(u) for i, u in enumerate(cfg.tiers) if i not in seen]
    if given and missing:
        raise UsageError(f"take-over covers every configured tier; missing: "
                         f"{', '.join(missing)} (or run 'tiervault attach --take-over' alone)")


def _attach(inst: Installation, ts: TierSet, passphrase: str, take_over: bool,
            read_only: bool, configured_vault: str | None) -> dict[str, Any]:
    from tiervault.vault.repository import open_key, read_config

    revs = _adopt(ts)
    refused = [t for t in ts.tiers if t.revision is None and t.refused]
    if refused:
        t = refused[0]
        raise TierRefusedError(f"tier {t.name} refuses access: {t.error}; {REFUSED_HINT}")
    if not ts.online():
        why = "; ".join(f"{t.name}: {t.error}" for t in ts.tiers if t.error)
        raise TierVaultError(f"no tier of the vault could be reached ({why})")
    away = [t for t in ts.tiers if t.revision is None]
    if take_over and away:
        raise TierVaultError(
            "cannot take over while " + "; ".join(f"{t.name} is unreachable ({t.error})"
                                                  for t in away)
            + ": every tier must answer, or it would later take this installation for "
            "another one. Try again when it is back, or leave it out (tiervault tier remove)")
    cfg = read_config(ts)
    _same_vault(ts, cfg.id)
    if configured_vault and cfg.id != configured_vault:
        raise UsageError(f"the tiers hold vault {cfg.id[:8]}, but this installation is set up "
                         f"for vault {configured_vault[:8]}; use another --home")
    open_key(ts, passphrase)
    if take_over:
        # The old session marker belongs to writes the other installation has
        # since superseded: the tiers are adopted as they are now.
        ts.db.put(SESSION_IN_PROGRESS, None)
        ts._raise(ts.online())
        ts.end_session()
    inst.config.vault_id = cfg.id
    return {"vault_id": cfg.id, "home": str(inst.home), "take_over": take_over,
            "read_only": read_only, "revisions": revs,
            "tiers": [{"url": t.name, "state": t.state, "revision": t.revision}
                      for t in ts.tiers]}


def _same_vault(ts: TierSet, vault_id: str) -> None:
    """Every reachable tier holding a vault must hold this one (not merely any)."""
    from tiervault.vault.repository import read_config

    for t in ts.tiers:
        if t.revision is None:
            continue
        try:
            other = read_config(t.backend).id
        except (UsageError, TierVaultError):
            continue  # empty (a new speed vault) or unreadable: filled by synchronization
        if other != vault_id:
            raise UsageError(f"{t.name} holds another vault ({other[:8]}, not {vault_id[:8]}); "
                             "give only the tiers of one vault")


def _adopt(ts: TierSet) -> dict[str, int | None]:
    """Take each reachable tier's revision as the one expected."""
    revs: dict[str, int | None] = {}
    for t in ts.tiers:
        rev = ts._read_rev(t)
        revs[t.name] = rev
        if rev is None:
            continue
        t.record.intended = None
        t.record.missed = False
        t.record.revision = rev
        t.revision = rev
    ts._classify()
    ts._save_records()
    return revs
