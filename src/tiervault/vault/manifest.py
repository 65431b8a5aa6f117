"""The authenticated manifest: what a vault holds, sealed under the master key.

Written at the end of each write session (file ``manifest`` at the vault
root). It names the live snapshots, index files and key files and carries a
counter that only grows. A tier cannot forge one without the key, so a tier
whose manifest is older than the one this installation last saw (a rollback),
or whose listing lacks what its manifest names (hidden files), is detected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tiervault.errors import IntegrityError, NotFoundError
from tiervault.storage.base import Backend, FileType, Handle
from tiervault.vault.crypto import MasterKey

MANIFEST_AAD = b"tiervault manifest v1"
MANIFEST = Handle(FileType.MANIFEST)
#: Largest manifest accepted (a million snapshot ids fit).
MAX_MANIFEST = 256 * 1024 * 1024


@dataclass
class Manifest:
    """One manifest's content."""

    counter: int
    vault_id: str
    snapshots: set[str] = field(default_factory=set)
    indexes: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, object]:
        """The plaintext form (also how the installation keeps its record)."""
        return {"v": 1, "counter": self.counter, "vault": self.vault_id,
                "snapshots": sorted(self.snapshots), "indexes": sorted(self.indexes),
                "keys": sorted(self.keys)}

    @classmethod
    def from_json(cls, doc: object, what: str) -> Manifest:
        """Parse the plaintext form; IntegrityError if malformed."""
        try:
            if not isinstance(doc, dict) or doc.get("v") != 1:
                raise ValueError
            counter = doc["counter"]
            if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
                raise ValueError
            lists = [doc[k] for k in ("snapshots", "indexes", "keys")]
            if not all(isinstance(x, list) and all(isinstance(i, str) for i in x)
                       for x in lists):
                raise ValueError
            return cls(counter, str(doc["vault"]), set(lists[0]), set(lists[1]), set(lists[2]))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{what} is damaged (structure)") from None

    def seal(self, key: MasterKey) -> bytes:
        """The file content: a plaintext counter line, then the sealed body.

        The counter is in clear (and bound into the seal) so that a sync
        without the passphrase can still tell which of two manifests is newer.
        """
        head = f"{_MAGIC} {self.counter}\n".encode()
        return head + key.seal(json.dumps(self.to_json()).encode(), MANIFEST_AAD + head)

    @classmethod
    def open(cls, key: MasterKey, data: bytes, what: str = "manifest") -> Manifest:
        """Authenticate and parse a sealed manifest."""
        if len(data) > MAX_MANIFEST:
            raise IntegrityError(f"{what} is damaged (too large)")
        counter = manifest_counter(data, what)
        head = data[:data.index(b"\n") + 1]
        plain = key.open(data[len(head):], MANIFEST_AAD + head, what)
        try:
            doc = json.loads(plain)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise IntegrityError(f"{what} is damaged (not JSON)") from None
        m = cls.from_json(doc, what)
        if m.counter != counter:
            raise IntegrityError(f"{what} is damaged (counter)")
        return m


_MAGIC = "tiervault-manifest"


def manifest_counter(data: bytes, what: str) -> int:
    """The (unauthenticated) counter of a manifest file, readable without the key."""
    line = data[:64].split(b"\n", 1)[0]
    try:
        magic, num = line.decode("ascii").split(" ")
        if magic != _MAGIC or not num.isdigit():
            raise ValueError
        return int(num)
    except (ValueError, UnicodeDecodeError):
        raise IntegrityError(f"{what} is damaged (not a manifest)") from None


def read_manifest(backend: Backend, key: MasterKey, where: str) -> Manifest | None:
    """One backend's manifest; None if it has none; IntegrityError if it does not
    authenticate."""
    try:
        data = backend.load(MANIFEST)
    except NotFoundError:
        return None
    return Manifest.open(key, data, f"the manifest on {where}")
