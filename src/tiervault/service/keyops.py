"""Key management: several passphrases per vault, and changing one.

The master key never changes, so no data is re-encrypted: a key file is just
the master key wrapped by another passphrase.
"""

from __future__ import annotations

from typing import Any

from tiervault.errors import TierVaultError, UsageError
from tiervault.service.session import VaultSession
from tiervault.storage.base import FileType, Handle
from tiervault.vault.crypto import parse_key_file


def list_keys(sess: VaultSession) -> list[dict[str, Any]]:
    """Every key file with its public fields."""
    out = []
    for fi in sorted(sess.repo.backend.list(FileType.KEY), key=lambda f: f.handle.name):
        try:
            doc = parse_key_file(sess.repo.backend.load(fi.handle), str(fi.handle))
            out.append({"id": fi.handle.name, "current": fi.handle.name == sess.repo.key_name,
                        "created": doc.get("created"), "hostname": doc.get("hostname"),
                        "username": doc.get("username")})
        except TierVaultError as e:
            out.append({"id": fi.handle.name, "current": False, "error": str(e)})
    return out


def add_key(sess: VaultSession, new_passphrase: str) -> dict[str, Any]:
    """Add a passphrase."""
    name = sess.repo.add_key(new_passphrase)
    return {"added": name}


def remove_key(sess: VaultSession, key_id: str, dry_run: bool = False) -> dict[str, Any]:
    """Remove a key file (never the one in use, never the last)."""
    keys = [fi.handle.name for fi in sess.repo.backend.list(FileType.KEY)]
    matches = [k for k in keys if k.startswith(key_id)] if key_id else []
    if len(matches) != 1:
        raise UsageError(f"no single key matches {key_id!r} (keys: {', '.join(sorted(keys))})")
    if matches[0] == sess.repo.key_name:
        raise UsageError("refusing to remove the key in use; open the vault with another "
                         "passphrase to remove this one")
    if not dry_run:
        sess.repo.backend.remove(Handle(FileType.KEY, matches[0]))
    return {"removed": matches[0], "dry_run": dry_run}


def change_passphrase(sess: VaultSession, new_passphrase: str) -> dict[str, Any]:
    """Replace the key in use by one with a new passphrase."""
    old = sess.repo.key_name
    new = sess.repo.add_key(new_passphrase)
    sess.repo.backend.remove(Handle(FileType.KEY, old))
    sess.repo.key_name = new
    return {"added": new, "removed": old}
