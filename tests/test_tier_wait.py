"""Unit tests of SPEC §3 (the reconnect procedure never holds up a command) and
§4 (a slow tier does not hold the session), issue 8 items 7, 7b and 5.

The tier sets are built by tests/tierkit.py over local directories; a ``Gate``
wrapper makes one tier's operations block in real time (a server that accepts
and never answers, or a slow link) until the test opens it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tierkit import Kit
from tiervault.errors import PermanentError, WaitTimeoutError
from tiervault.storage.base import Backend, FileInfo, FileType, Handle
from tiervault.storage.faulty import Rule
from tiervault.storage.local import LocalBackend
from tiervault.storage.retry import RetryBackend
from tiervault.tiers.tier import OFFLINE, ONLINE, UNSYNCHRONIZED
from tiervault.tiers.tierset import TierSet
from tiervault.vault.repository import content_name


class Gate(Backend):
    """Passes calls to ``inner``; while closed, the chosen operations block."""

    def __init__(self, inner: Backend, ops: set[str]) -> None:
        self.inner = inner
        self.location = inner.location
        self.ops = ops
        self.open = threading.Event()
        self.blocked = 0

    def _gate(self, op: str) -> None:
        if op in self.ops and not self.open.is_set():
            self.blocked += 1
            self.open.wait(30)

    def create(self) -> None:
        self.inner.create()

    def save(self, h: Handle, data: bytes) -> None:
        self._gate("save" if h.type is not FileType.REVISION else "raise")
        self.inner.save(h, data)

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        self._gate("load")
        return self.inner.load(h, offset, length, max_size)

    def stat(self, h: Handle) -> FileInfo:
        return self.inner.stat(h)

    def list(self, t: FileType) -> Iterator[FileInfo]:
        return self.inner.list(t)

    def remove(self, h: Handle) -> None:
        self.inner.remove(h)


def _gated(kit: Kit, i: int, ops: set[str], **kw: object) -> tuple[TierSet, Gate]:
    """A tier set whose tier ``i`` goes through a closed Gate."""
    ts = kit.tierset(**kw)  # type: ignore[arg-type]
    gate = Gate(ts.tiers[i].backend, ops)
    ts.tiers[i].backend = gate
    ts.probe_backend = lambda t: t.backend
    return ts, gate


def _h(data: bytes) -> Handle:
    return Handle(FileType.PACK, content_name(data))


def _ready(kit: Kit) -> None:
    """Both tiers created and holding one write (so both have a revision file)."""
    ts = kit.create()
    ts.save(_h(b"first"), b"first")
    ts.end_session()
    ts.close()


def test_connect_goes_on_without_a_tier_that_does_not_answer(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    _ready(kit)
    ts, gate = _gated(kit, 1, {"load"})
    ts.connect_grace = 0.3
    t0 = time.monotonic()
    ts.connect()
    assert time.monotonic() - t0 < 2.0
    assert [t.state for t in ts.tiers] == [ONLINE, OFFLINE]
    assert ts.load(_h(b"first")) == b"first"  # served by tier 0
    gate.open.set()
    deadline = time.monotonic() + 5
    while ts.tiers[1].state != ONLINE and time.monotonic() < deadline:
        ts.stale()  # an operation boundary applies the late answer
        time.sleep(0.05)
    assert ts.tiers[1].state == ONLINE  # at the max, nothing missed: it rejoins


def test_a_tier_answering_during_a_session_rejoins_unsynchronized(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    _ready(kit)
    ts, gate = _gated(kit, 1, {"load"})
    ts.connect_grace = 0.2
    ts.connect()
    ts.save(_h(b"one"), b"one")
    gate.open.set()
    deadline = time.monotonic() + 5
    while ts.tiers[1].state == OFFLINE and time.monotonic() < deadline:
        ts.save(_h(b"x%f" % time.monotonic()), b"x%f" % time.monotonic())
        time.sleep(0.05)
    assert ts.tiers[1].state == UNSYNCHRONIZED
    ts.end_session()
    assert kit.revision(1) is not None and kit.revision(0) is not None
    assert kit.revision(1) < kit.revision(0)  # type: ignore[operator]


def test_unplugged_local_tier_is_not_retried(tmp_path: Path) -> None:
    slept: list[float] = []
    b = RetryBackend(LocalBackend(tmp_path / "not-there"), attempts=10, sleep=slept.append)
    with pytest.raises(Exception, match="not there"):
        b.load(Handle(FileType.REVISION))
    assert slept == []


def test_slow_tier_drops_out_when_too_far_behind(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    _ready(kit)
    ts, gate = _gated(kit, 1, {"save"})
    ts.lag_bytes = 1000
    ts.connect()
    t0 = time.monotonic()
    for i in range(5):
        data = bytes([i]) * 400
        ts.save(_h(data), data)
    assert time.monotonic() - t0 < 5.0  # did not wait for the blocked tier
    assert ts.tiers[1].state == UNSYNCHRONIZED and ts.tiers[1].record.missed
    assert ts.db.tier(str(kit.dirs[1])).missed  # recorded durably at once
    ts.end_session()
    gate.open.set()
    assert kit.revision(1) < kit.revision(0)  # type: ignore[operator]
    assert len(kit.files(0)) > len(kit.files(1))


def test_tier_still_behind_at_session_end_is_dropped(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    _ready(kit)
    ts, gate = _gated(kit, 1, {"save"})
    ts.connect()
    ts.save(_h(b"late"), b"late")
    t0 = time.monotonic()
    ts.end_session()
    assert time.monotonic() - t0 < 3.0
    gate.open.set()
    assert ts.tiers[1].state == UNSYNCHRONIZED
    assert kit.revision(1) < kit.revision(0)  # type: ignore[operator]


def test_wait_all_tiers_waits_for_the_slow_tier(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    _ready(kit)
    ts, gate = _gated(kit, 1, {"save"}, )
    ts.wait_all_tiers = True
    ts.connect()
    threading.Timer(1.0, gate.open.set).start()
    t0 = time.monotonic()
    ts.save(_h(b"all"), b"all")
    assert time.monotonic() - t0 >= 0.9
    ts.end_session()
    assert [t.state for t in ts.tiers] == [ONLINE, ONLINE]
    assert kit.revision(1) == kit.revision(0)


def test_a_refused_write_raises_once_per_session_and_says_it_once(tmp_path: Path) -> None:
    """Item 5: a full speed vault with the server away: the speed vault answers
    probes (so it comes back at once) and refuses every write."""
    kit = Kit(tmp_path)
    _ready(kit)
    kit.unplug(1)
    kit.faults[0].add(Rule("save", times=-1, type=FileType.PACK, error=PermanentError))
    said: list[str] = []
    ts = kit.tierset(wait_timeout=10)
    ts.notify = said.append
    ts.connect()
    before = kit.revision(0)
    with pytest.raises(WaitTimeoutError):
        ts.save(_h(b"no room"), b"no room")
    assert kit.revision(0) == before + 1  # type: ignore[operator]
    # (The wait's own progress line, "waiting for a tier to come online: ...", names
    # the reason too; whether one is printed depends on when the probes answer.)
    refusals = [m for m in said if "tier " in m and "failed (injected)" in m
                and not m.startswith("waiting for a tier")]
    assert len(refusals) == 1, said
