"""Which blobs the snapshots use (shared by prune and check)."""

from __future__ import annotations

from collections.abc import Callable

from tiervault.engine.trees import TreeReader
from tiervault.errors import IntegrityError, NotFoundError
from tiervault.vault.repository import Repository
from tiervault.vault.snapshot import Snapshot


def used_blobs(repo: Repository, snaps: list[Snapshot],
               on_error: Callable[[Snapshot, str], None] | None = None,
               on_tree: Callable[[], None] | None = None) -> set[bytes]:
    """Every tree and data blob referenced by ``snaps`` (each tree visited once)."""
    used: set[bytes] = set()
    trees = TreeReader(repo, cache_size=0)
    for s in snaps:
        stack = [bytes.fromhex(s.tree)]
        while stack:
            tid = stack.pop()
            if tid in used:
                continue
            used.add(tid)
            try:
                nodes = trees.load(tid)
            except (IntegrityError, NotFoundError) as e:
                # NotFoundError: the pack holding the tree is gone from this tier.
                if on_error is None:
                    raise
                on_error(s, str(e))
                continue
            if on_tree:
                on_tree()
            for n in nodes:
                if n.kind == "dir":
                    stack.append(n["subtree"])
                elif n.kind == "file":
                    for bid in n.get("content") or []:
                        if on_error is not None and bid not in repo.index:
                            on_error(s, f"data blob {bid.hex()[:16]} is missing")
                        used.add(bid)
    return used
