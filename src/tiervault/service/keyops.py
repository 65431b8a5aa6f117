"""Key management: several passphrases per vault, and changing one.

The master key never changes, so no data is re-encrypted: a key file is just
the master key wrapped by another passphrase.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from tiervault.engine.progress import Progress
from tiervault.errors import IntegrityError, NotFoundError, TierVaultError, UsageError
from tiervault.service.installation import Installation
from tiervault.service.session import VaultSession, build_tierset
from tiervault.storage.base import FileType, Handle
from tiervault.vault.crypto import (
    MasterKey,
    key_file_params,
    new_key_params,
    parse_key_file,
    passphrase_warnings,
    unwrap_key,
)
from tiervault.vault.manifest import read_manifest
from tiervault.vault.repository import read_config

#: Field added to an exported key file: which vault it opens.
_EXPORT = "tiervault_export"


def list_keys(sess: VaultSession) -> list[dict[str, Any]]:
    """Every key file with its public fields."""
    out = []
    for fi in sorted(sess.repo.backend.list(FileType.KEY), key=lambda f: f.handle.name):
        try:
            doc = parse_key_file(sess.repo.backend.load(fi.handle), str(fi.handle))
            out.append({"id": fi.handle.name, "current": fi.handle.name == sess.repo.key_name,
                        "created": doc.get("created"), "hostname": doc.get("hostname"),
                        "username": doc.get("username"),
                        "kdf": key_file_params(doc).as_dict()})
        except TierVaultError as e:
            out.append({"id": fi.handle.name, "current": False, "error": str(e)})
    return out


def add_key(sess: VaultSession, new_passphrase: str) -> dict[str, Any]:
    """Add a passphrase (its key file gets the current scrypt parameters)."""
    kdf = new_key_params(sess.inst.opts.env)
    name = sess.repo.add_key(new_passphrase, kdf)
    return {"added": name, "kdf": kdf.as_dict(), "warnings": passphrase_warnings(new_passphrase)}


def remove_key(sess: VaultSession, key_id: str, dry_run: bool = False) -> dict[str, Any]:
    """Remove a key file (never the one in use, never the last)."""
    keys = [fi.handle.name for fi in sess.repo.backend.list(FileType.KEY)]
    matches = [k for k in keys if k.startswith(key_id)] if key_id else []
    if len(matches) != 1:
        raise UsageError(f"no single key matches {key_id!r} (keys: {', '.join(sorted(keys))})")
    if matches[0] == sess.repo.key_name:
        raise UsageError("refusing to remove the key in use; open the vault with another "
                         "passphrase to remove this one")
    if len(keys) < 2:
        raise UsageError("refusing to remove the last key file: nothing could open the vault")
    if not dry_run:
        sess.repo.backend.remove(Handle(FileType.KEY, matches[0]))
    return {"removed": matches[0], "dry_run": dry_run}


def change_passphrase(sess: VaultSession, new_passphrase: str) -> dict[str, Any]:
    """Replace the key in use by one with a new passphrase.

    The new key file gets the current scrypt parameters, whatever the old one
    had: giving the same passphrase again only upgrades the parameters.
    """
    old = sess.repo.key_name
    h = Handle(FileType.KEY, old)
    old_kdf = key_file_params(parse_key_file(sess.repo.backend.load(h), str(h)))
    kdf = new_key_params(sess.inst.opts.env)
    new = sess.repo.add_key(new_passphrase, kdf)
    sess.repo.backend.remove(h)
    sess.repo.key_name = new
    return {"added": new, "removed": old, "kdf": kdf.as_dict(),
            "previous_kdf": old_kdf.as_dict(), "warnings": passphrase_warnings(new_passphrase)}


def export_key(sess: VaultSession, path: str) -> dict[str, Any]:
    """Write the key file in use (the master key sealed under the passphrase,
    never in clear) to ``path``, mode 0600, refusing to overwrite."""
    h = Handle(FileType.KEY, sess.repo.key_name)
    doc = parse_key_file(sess.repo.backend.load(h), str(h))
    doc[_EXPORT] = {"vault": sess.repo.config.id, "key": sess.repo.key_name}
    data = json.dumps(doc, indent=1).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; choose a new file name") from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"exported": sess.repo.key_name, "file": path, "vault": sess.repo.config.id}


def _opens_vault(key: MasterKey, ts: Any, raw_config: bytes) -> bool:
    """True if ``key`` is this vault's: its config MAC, manifest or an index opens."""
    cfg = read_config(ts)
    if cfg.mac is not None:
        return cfg.authentic(key, raw_config)
    try:
        if read_manifest(ts, key, "the vault") is not None:
            return True
    except IntegrityError:
        return False
    from tiervault.vault.repository import Repository

    repo = Repository(ts, key, cfg, "")
    for name in repo.names(FileType.INDEX)[:1]:
        try:
            repo.read_index_file(name)
            return True
        except IntegrityError:
            return False
    return True  # an empty vault: nothing to check the key against


def import_key(inst: Installation, progress: Progress, passphrase: str,
               path: str) -> dict[str, Any]:
    """Put an exported key file back into the vault (works when no key file is
    left on any tier: the vault is not opened through its key files)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    key = unwrap_key(raw, passphrase, path)
    doc = parse_key_file(raw, path)
    want = doc.get(_EXPORT, {}).get("vault") if isinstance(doc.get(_EXPORT), dict) else None
    inst.require_writer()
    inst.lock()
    ts = build_tierset(inst, progress)
    try:
        ts.connect()
        cfg = read_config(ts)
        if want is not None and want != cfg.id:
            raise UsageError(f"{path} is the key of vault {str(want)[:8]}, not of this vault "
                             f"({cfg.id[:8]})")
        try:
            raw_config = ts.load(Handle(FileType.CONFIG))
        except NotFoundError:
            raise UsageError("the vault has no config file") from None
        if not _opens_vault(key, ts, raw_config):
            raise UsageError(f"{path} does not open this vault")
        name = secrets.token_hex(8)
        ts.save(Handle(FileType.KEY, name), raw)
        ts.end_session()
    finally:
        ts.close()
    return {"imported": name, "file": path}
