"""Unit tests of the reconnect procedure and the tier set rules (SPEC §3-§6).

Fault injection and a fake clock make retries and waits run in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tierkit import FakeClock, Kit
from tiervault.errors import (
    IntegrityError,
    NotFoundError,
    PermanentError,
    SecondInstallationError,
    TransientError,
    WaitTimeoutError,
)
from tiervault.storage.base import FileType, Handle
from tiervault.storage.faulty import FaultyBackend, Rule
from tiervault.storage.local import LocalBackend
from tiervault.storage.retry import RetryBackend
from tiervault.tiers.sync import sync_all
from tiervault.tiers.tier import OFFLINE, ONLINE, UNSYNCHRONIZED, Tier
from tiervault.vault.repository import check_content_name, content_name


def _h(data: bytes, t: FileType = FileType.PACK) -> Handle:
    return Handle(t, content_name(data))


# -- the reconnect procedure ------------------------------------------------------------

def test_retry_recovers_from_transient_failures(tmp_path: Path) -> None:
    clock = FakeClock()
    inner = FaultyBackend(LocalBackend(tmp_path / "v"))
    inner.inner.create()
    inner.add(Rule("save", times=3))
    b = RetryBackend(inner, attempts=10, delay=0.5, max_delay=2.0, sleep=clock.sleep)
    b.save(_h(b"x"), b"x")
    assert b.load(_h(b"x")) == b"x"
    assert clock.sleeps == [0.5, 1.0, 2.0]  # exponential backoff, capped


def test_retry_gives_up_after_attempts(tmp_path: Path) -> None:
    clock = FakeClock()
    inner = FaultyBackend(LocalBackend(tmp_path / "v"))
    inner.inner.create()
    rule = inner.add(Rule("load", times=-1))
    b = RetryBackend(inner, attempts=4, delay=0.1, sleep=clock.sleep)
    with pytest.raises(TransientError):
        b.load(_h(b"x"))
    assert rule.fired == 4
    assert len(clock.sleeps) == 3


@pytest.mark.parametrize("error", [PermanentError, NotFoundError])
def test_definite_answers_are_not_retried(tmp_path: Path, error: type) -> None:
    inner = FaultyBackend(LocalBackend(tmp_path / "v"))
    inner.inner.create()
    rule = inner.add(Rule("save", times=-1, error=error))
    b = RetryBackend(inner, attempts=10, sleep=FakeClock().sleep)
    with pytest.raises(error):
        b.save(_h(b"x"), b"x")
    assert rule.fired == 1


def test_hang_is_a_timeout_then_retried(tmp_path: Path) -> None:
    clock = FakeClock()
    inner = FaultyBackend(LocalBackend(tmp_path / "v"), sleep=clock.sleep)
    inner.inner.create()
    inner.add(Rule("save", kind="hang", delay=30.0))
    b = RetryBackend(inner, attempts=3, delay=0.1, sleep=clock.sleep)
    b.save(_h(b"y"), b"y")
    assert clock.now >= 30.0


# -- reads ------------------------------------------------------------------------------

def _write(ts: object, data: bytes) -> Handle:
    h = _h(data)
    ts.save(h, data)  # type: ignore[attr-defined]
    return h


def test_reads_come_from_the_first_online_tier(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    h = _write(ts, b"hello")
    ts._writes.wait_idle(10)  # the second tier's copy lands in the background: let it finish first
    kit.faults[0].calls.clear()
    kit.faults[1].calls.clear()
    assert ts.load(h) == b"hello"
    assert ("load", str(h)) in kit.faults[0].calls
    assert ("load", str(h)) not in kit.faults[1].calls


def test_read_falls_through_on_transport_failure(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    h = _write(ts, b"hello")
    kit.faults[0].add(Rule("load", times=-1))
    assert ts.load(h) == b"hello"
    assert ts.tiers[0].state == OFFLINE


def test_read_falls_through_on_corrupt_data(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    h = _write(ts, b"precious data")
    ts._writes.wait_idle(10)  # a write returns once one tier has it: both must hold it here
    kit.faults[0].add(Rule("load", kind="flip"))
    data = ts.load_verified(h, lambda d: (check_content_name(h, d), d)[1])
    assert data == b"precious data"
    assert ts.damaged and ts.damaged[0][1] == str(h)
    assert ts.tiers[0].state == ONLINE  # damage is not an outage


def test_read_fails_when_every_copy_is_corrupt(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    h = _write(ts, b"precious data")
    for f in kit.faults:
        f.add(Rule("load", kind="flip"))
    with pytest.raises(IntegrityError):
        ts.load_verified(h, lambda d: (check_content_name(h, d), d)[1])


# -- writes and revisions ---------------------------------------------------------------------

def test_writes_go_to_every_tier_and_raise_revisions(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    _write(ts, b"a")
    assert kit.revision(0) == kit.revision(1) == 1
    ts.end_session()  # a write returns once one tier has it; the session's end waits a grace
    assert kit.files(0) == kit.files(1)
    _write(ts, b"b")
    assert kit.revision(0) == kit.revision(1) == 2


def test_failed_write_drops_tier_and_raises_the_others(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    _write(ts, b"a")
    kit.faults[1].add(Rule("save", times=-1))
    _write(ts, b"last write of the session")
    ts.end_session()
    assert ts.tiers[1].state == OFFLINE
    # SPEC §4: the dropped tier ends below the max even though the failed
    # write was the session's last.
    assert kit.revision(0) == 2 and kit.revision(1) == 1
    assert ts.max_revision == 2
    assert ts.tiers[1].record.missed


def test_permanent_write_error_drops_tier_too(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    kit.faults[0].add(Rule("save", times=-1, error=PermanentError))
    _write(ts, b"a")
    assert ts.tiers[0].state == OFFLINE
    assert kit.files(1) and not kit.files(0)


def test_write_waits_then_times_out_when_no_tier_is_online(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    kit.create()
    kit.unplug(0)
    kit.unplug(1)
    ts = kit.tierset(wait_timeout=20)
    ts.connect()
    with pytest.raises(WaitTimeoutError):
        _write(ts, b"a")
    assert kit.clock.now >= 20


def test_waiting_write_completes_when_a_tier_returns(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    kit.create()
    kit.unplug(1)
    kit.unplug(0)
    ts = kit.tierset(wait_timeout=None)
    ts.connect()
    sleeps = 0
    orig = kit.clock.sleep

    def sleep(d: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 5:
            kit.plug(1)
        orig(d)

    ts.sleep = sleep
    h = _write(ts, b"waited")
    assert (kit.dirs[1] / h.path()).exists()
    assert kit.revision(1) == ts.max_revision


def test_second_installation_is_refused_without_writing(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    _write(ts, b"a")
    ts.end_session()
    # Another installation raised the revision on tier 0.
    (kit.dirs[0] / "revision").write_text("7\n")
    before = [kit.files(0), kit.files(1)]
    ts2 = kit.tierset()
    with pytest.raises(SecondInstallationError):
        ts2.connect()
    assert [kit.files(0), kit.files(1)] == before
    assert kit.revision(1) == 1


def test_pending_raise_after_crash_is_consistent(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    _write(ts, b"a")
    ts.end_session()
    # A crash between recording the intended raise and writing it on tier 1.
    for t in ts.tiers:
        t.record.intended = 2
    kit.db.save_tiers([t.record for t in ts.tiers])
    (kit.dirs[0] / "revision").write_text("2\n")
    ts2 = kit.tierset()
    ts2.connect()  # either value is consistent: no second-installation error
    assert ts2.tiers[0].record.revision == 2
    assert ts2.tiers[1].state == UNSYNCHRONIZED


def test_crash_mid_session_converges_on_first_tier(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    _write(ts, b"a")
    # Crash: the session never ended; tier 1 has a file tier 0 lacks.
    (kit.dirs[1] / "data" / "zz").mkdir(exist_ok=True)
    extra = b"half-done write"
    (kit.dirs[1] / _h(extra).path()).parent.mkdir(exist_ok=True)
    (kit.dirs[1] / _h(extra).path()).write_bytes(extra)
    ts2 = kit.tierset()
    ts2.connect()
    assert ts2.tiers[0].state == ONLINE and ts2.tiers[1].state == UNSYNCHRONIZED
    # Without the key, sync cannot tell whether the source still needs the
    # extra pack: it keeps it (prune removes it later) ...
    sync_all(ts2)
    assert (kit.dirs[1] / _h(extra).path()).exists()
    # ... and with the key too: sync removes only what this installation
    # deleted (issue 9); an unreferenced pack is prune's business.
    ts2.tiers[1].record.missed = True
    ts2.tiers[1].state = UNSYNCHRONIZED
    sync_all(ts2, references=lambda t: set())
    assert (kit.dirs[1] / _h(extra).path()).exists()
    assert kit.revision(0) == kit.revision(1) == ts2.max_revision


# -- synchronization -----------------------------------------------------------------------------

def _listed(t: Tier) -> set[str]:
    """As if the tier's index named exactly the packs it holds."""
    return {fi.handle.name for fi in t.backend.list(FileType.PACK)}


def test_returning_tier_is_unsynchronized_then_synced(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    _write(ts, b"a")
    ts.end_session()
    kit.unplug(1)
    ts = kit.tierset()
    ts.connect()
    for i in range(5):
        _write(ts, b"offline %d" % i)
    ts.remove(_h(b"a"))
    ts.end_session()
    kit.plug(1)
    ts = kit.tierset()
    ts.connect()
    assert ts.tiers[1].state == UNSYNCHRONIZED
    # Every pack the source holds is named by its index (sync copies only those).
    res = sync_all(ts, references=_listed)
    assert res[0].completed and res[0].files_copied == 5 and res[0].files_removed == 1
    assert kit.files(0) == kit.files(1)
    assert kit.revision(0) == kit.revision(1) == ts.max_revision
    assert ts.tiers[1].state == ONLINE


def test_sync_aborted_by_a_write_resumes_without_recopying(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    ts.end_session()
    kit.unplug(1)
    ts = kit.tierset()
    ts.connect()
    for i in range(20):
        _write(ts, b"%d" % i * 5000)
    ts.end_session()
    kit.plug(1)
    ts = kit.tierset()
    ts.connect()
    copied = 0

    def progress(t: object, done: int, total: int) -> None:
        nonlocal copied
        copied += 1
        if copied == 8:
            ts.abort_sync.set()  # what any write does

    first = sync_all(ts, progress, workers=1)[0]
    assert not first.completed
    assert ts.tiers[1].state == UNSYNCHRONIZED
    second = sync_all(ts, workers=1)[0]
    assert second.completed
    assert first.files_copied + second.files_copied == 20
    assert first.bytes_copied + second.bytes_copied == sum(
        len(b"%d" % i * 5000) for i in range(20))
    assert kit.files(0) == kit.files(1)


def test_sync_gives_a_lost_pack_back_to_the_source(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    h = _write(ts, b"only good copy")
    ts.end_session()
    kit.unplug(1)
    ts = kit.tierset()
    ts.connect()
    _write(ts, b"newer")
    ts.end_session()
    (kit.dirs[0] / h.path()).unlink()  # the speed vault lost a pack its index names
    kit.plug(1)
    ts = kit.tierset()
    ts.connect()
    res = sync_all(ts, references=lambda t: {h.name} | _listed(t))[0]
    assert res.completed and res.files_healed == 1 and res.files_removed == 0
    assert (kit.dirs[0] / h.path()).read_bytes() == b"only good copy"
    assert kit.files(0) == kit.files(1)


def test_sync_never_copies_damaged_source_files(tmp_path: Path) -> None:
    kit = Kit(tmp_path)
    ts = kit.create()
    ts.end_session()
    kit.unplug(1)
    ts = kit.tierset()
    ts.connect()
    h = _write(ts, b"will be damaged")
    ts.end_session()
    p = kit.dirs[0] / h.path()
    p.write_bytes(b"will be damagee")
    kit.plug(1)
    ts = kit.tierset()
    ts.connect()
    res = sync_all(ts)[0]
    assert not res.completed and "damaged" in (res.error or "")
    assert not (kit.dirs[1] / h.path()).exists()


def test_tiers_that_answer_probes_but_refuse_writes_end_in_the_wait_timeout(
        tmp_path: Path) -> None:
    """A full disk: every tier reads fine (so it comes back online at once) but
    refuses every write. The write must not spin: it paces its rounds and gives
    up with WaitTimeoutError after the wait timeout (found by the soak: a backup
    looped ~160 times a second for minutes)."""
    kit = Kit(tmp_path)
    ts = kit.create()
    for f in kit.faults:
        f.add(Rule("save", times=10**9))
    ts2 = kit.tierset(wait_timeout=5.0)
    ts2.connect()
    start = kit.clock.now
    with pytest.raises(WaitTimeoutError, match="within 5 s"):
        _write(ts2, b"no room")
    assert 5.0 <= kit.clock.now - start < 30.0
    assert len(kit.clock.sleeps) < 200  # paced by the probe interval, not a hot loop
    del ts
