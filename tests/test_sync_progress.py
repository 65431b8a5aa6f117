"""A synchronization records its progress while it copies the packs, not only when
each kind of file is done (newcomer trial 3: `tiers` and the console showed
"syncing 0%" for the whole copy of 200 MB)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.tierkit import Kit
from tiervault.storage.base import FileType, Handle
from tiervault.tiers.sync import sync_all
from tiervault.vault.repository import content_name


def test_the_recorded_progress_moves_during_the_copy_of_the_packs(tmp_path: Path) -> None:
    kit = Kit(tmp_path, n=2, attempts=2)
    ts = kit.create()
    ts.end_session()
    kit.unplug(1)
    ts = kit.tierset()
    ts.connect()
    for _ in range(60):   # 60 packs of 1 MiB: 60 MB to copy
        data = os.urandom(1 << 20)
        ts.save(Handle(FileType.PACK, content_name(data)), data)
    ts.end_session()
    kit.plug(1)
    ts = kit.tierset()
    ts.connect()
    url = str(kit.dirs[1])
    seen: list[tuple[int | None, int | None]] = []

    def progress(_tier: object, done: int, total: int) -> None:
        rec = kit.db.tier(url)
        seen.append((rec.sync_done, rec.sync_total))

    res = sync_all(ts, progress=progress)[0]
    assert res.completed, res
    recorded = {d for d, t in seen if d and t and 0 < d < t}
    assert len(recorded) >= 10, seen[-5:]   # it moved, in many steps
    assert kit.db.tier(url).sync_total is None   # and was cleared at the end
