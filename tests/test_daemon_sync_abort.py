"""A job starting during the idle synchronization aborts it; the sync resumes later
without copying again what it had copied (measured in bytes and per file).

The real daemon loop, job runner and idle round run in-process on two local
tiers; the "server" directory is made slow (a pause per pack copied) so that
the job reliably arrives in the middle of the sync.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tests.test_daemon_runner import Env
from tiervault.daemon.clock import SystemClock
from tiervault.daemon.main import Daemon
from tiervault.daemon.runner import IdleRound, JobRunner
from tiervault.daemon.scheduler import MemoryStore, Scheduler
from tiervault.daemon.sets import parse_set
from tiervault.storage.base import FileType, Handle
from tiervault.storage.local import LocalBackend


def wait_until(cond: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_job_aborts_sync_and_sync_resumes_without_recopying(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = Env(tmp_path)
    env.inst.config.settings.pack_size_mib = 1
    for i in range(16):
        (env.src / f"big{i}.bin").write_bytes(os.urandom(1 << 20))
    # The server is unplugged during the first backup: it misses ~16 MiB of packs.
    env.b.rename(tmp_path / "server.off")
    first = env.run()
    assert first["status"] == "success" and first["tiers_missed"] == [str(env.b)]
    (tmp_path / "server.off").rename(env.b)
    before = _vault_bytes(env.b)

    saved: list[tuple[Handle, int, str]] = []
    lock = threading.Lock()
    real_save = LocalBackend.save

    def slow_save(self: LocalBackend, h: Handle, data: bytes) -> None:
        if self.root == env.b and h.type == FileType.PACK:
            time.sleep(0.15)  # a slow line to the server
        real_save(self, h, data)
        if self.root == env.b:
            with lock:
                saved.append((h, len(data), threading.current_thread().name))

    monkeypatch.setattr(LocalBackend, "save", slow_save)

    bs = parse_set("docs", {"paths": [str(env.src)]})
    clock = SystemClock()
    sch = Scheduler(UTC, MemoryStore())
    sch.configure({"docs": bs}, clock.now())
    idle = IdleRound(env.inst, env.notifier)
    runner = JobRunner(env.inst, "daemon runner passphrase", env.notifier)
    d = Daemon(clock, sch, {"docs": bs}, runner, idle, probe_interval=0.2, tick_interval=0.05,
               history_fn=lambda n: env.inst.db.sessions(n))
    loop = threading.Thread(target=d.loop, daemon=True)
    loop.start()
    try:
        def packs_copied() -> int:
            with lock:
                return sum(1 for h, _n, _t in saved if h.type == FileType.PACK)

        wait_until(lambda: packs_copied() >= 3, 30, "the sync to copy a few packs")
        (env.src / "new.txt").write_text("written while the server was syncing\n")
        req = d.request_run("docs")
        assert req["queued"]
        wait_until(lambda: any(s["kind"] == "job" and s["ended"] and
                               s["details"].get("request_id") == req["request_id"]
                               for s in env.inst.db.sessions()), 60, "the job to end")
        wait_until(lambda: any(s["kind"] == "sync" and s["status"] == "success"
                               for s in env.inst.db.sessions()), 60, "the sync to finish")
    finally:
        d.stop()
        loop.join(30)
    assert not loop.is_alive()

    rows = sorted(env.inst.db.sessions(), key=lambda s: s["id"])
    syncs = [s for s in rows if s["kind"] == "sync"]
    job = next(s for s in rows if s["kind"] == "job"
               and s["details"]["request_id"] == req["request_id"])
    # The first sync was aborted by the job, part-way; a later one completed.
    assert syncs[0]["status"] == "cancelled", syncs[0]
    assert syncs[0]["details"]["aborted"]
    part = syncs[0]["details"]["results"][0]
    assert not part["completed"] and "aborted" in part["error"]
    assert 0 < part["bytes_copied"] < (16 << 20)
    assert syncs[0]["started"] < job["started"] < syncs[-1]["started"]
    assert syncs[-1]["status"] == "success"
    # The job ran while the server was behind: held on the speed vault only.
    assert job["status"] == "success"
    assert job["details"]["tiers_missed"] == [str(env.b)]

    # Nothing was copied twice: per file, and in bytes.
    copies = Counter(h for h, _n, _t in saved if h.type != FileType.REVISION)
    assert copies and max(copies.values()) == 1, [h for h, c in copies.items() if c > 1]
    total_synced = sum(r["bytes_copied"] for s in syncs for r in s["details"]["results"])
    copied_bytes = sum(n for h, n, _t in saved if h.type != FileType.REVISION)
    assert total_synced == copied_bytes
    # every byte copied is a byte the server lacked: the resumed sync did not start over
    assert total_synced == _vault_bytes(env.b) - before
    assert _vault_files(env.a) == _vault_files(env.b)
    env.inst.close()


def _vault_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and p.name != "revision" and not p.name.startswith(".")}


def _vault_bytes(root: Path) -> int:
    return sum(_vault_files(root).values())
