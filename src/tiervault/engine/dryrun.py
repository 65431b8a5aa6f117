"""``backup --dry-run``: a blob writer that counts what would be stored and stores nothing."""

from __future__ import annotations

import threading

from tiervault.vault.pack import BlobType
from tiervault.vault.repository import Repository


class DryRunWriter:
    """Stands in for ``BlobWriter``: deduplicates against the index and against
    blobs seen in this run, counts the new ones, and never encodes or uploads."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._seen: set[bytes] = set()
        self.stats = {"blobs_new": 0, "bytes_raw_new": 0, "bytes_stored": 0, "packs": 0}

    def has(self, blob_id: bytes) -> bool:
        """True if the blob is indexed or was seen in this run."""
        return blob_id in self.repo.index or blob_id in self._seen

    def save_blob(self, t: BlobType, data: bytes | memoryview, blob_id: bytes | None = None,
                  force: bool = False) -> tuple[bytes, bool]:
        """Count the blob as new unless known; returns (id, whether it was new)."""
        bid = blob_id or self.repo.key.blob_id(data)
        with self._lock:
            if bid in self._seen or bid in self.repo.index:
                return bid, False
            self._seen.add(bid)
            self.stats["blobs_new"] += 1
            self.stats["bytes_raw_new"] += len(data)
        return bid, True

    def flush(self) -> dict[str, int]:
        """Nothing to upload: the counts so far."""
        return dict(self.stats)

    def close(self) -> None:
        """Nothing to stop."""
