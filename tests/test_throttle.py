"""Bandwidth throttling: schedule rules in milliseconds with a fake clock, and
the real rate over a 20 MB transfer to an FTP server on loopback for backup,
restore and sync."""

from __future__ import annotations

import os
import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

import pytest
import tomli_w

from tests.servers.ftp_server import FtpServerProcess
from tests.tierkit import FakeClock
from tiervault.engine.backupopts import BackupOptions
from tiervault.engine.progress import Progress
from tiervault.errors import UsageError
from tiervault.service import ops
from tiervault.service.installation import Installation, RunOptions
from tiervault.service.session import VaultSession
from tiervault.service.tierops import init_vault, run_sync
from tiervault.storage.throttle import (
    Limits,
    ThrottledBackend,
    ThrottleSchedule,
    TokenBucket,
    Window,
    parse_days,
    parse_rate,
)

MB = 1000 * 1000


def test_parse_rate() -> None:
    assert parse_rate("2MB") == 2 * MB
    assert parse_rate("512KiB") == 512 * 1024
    assert parse_rate(None) is None and parse_rate("0") is None
    with pytest.raises(UsageError):
        parse_rate("fast")


def test_token_bucket_rate_is_exact_over_time() -> None:
    clock = FakeClock()
    b = TokenBucket(clock, clock.sleep)
    for _ in range(100):
        b.take(200_000, 1 * MB)
    assert clock.now == pytest.approx(20.0, rel=0.01)  # 20 MB at 1 MB/s


def test_schedule_windows_and_free_days() -> None:
    office = Window(parse_days(["mon", "tue", "wed", "thu", "fri"]), dtime(8), dtime(18),
                    Limits(upload=512_000))
    night = Window(parse_days(["fri"]), dtime(22), dtime(6), Limits(upload=10 * MB))
    s = ThrottleSchedule(Limits(upload=2 * MB, download=5 * MB), (office, night),
                         parse_days(["sun"]))
    assert s.limits_at(datetime(2026, 11, 25, 9, 0)).upload == 512_000  # Wednesday
    assert s.limits_at(datetime(2026, 11, 25, 19, 0)) == Limits(2 * MB, 5 * MB)
    assert s.limits_at(datetime(2026, 11, 27, 23, 0)).upload == 10 * MB  # Friday night
    assert s.limits_at(datetime(2026, 11, 28, 3, 0)).upload == 10 * MB  # ...after midnight
    assert s.limits_at(datetime(2026, 11, 29, 9, 0)) == Limits()  # Sunday: unlimited


def test_schedule_from_config() -> None:
    s = ThrottleSchedule.from_config({
        "upload": "1MB", "free_days": ["sat", "sun"],
        "window": [{"days": ["mon"], "start": "08:00", "end": "18:00", "upload": "100KB"}]})
    assert s.limits_at(datetime(2026, 11, 23, 10, 0)).upload == 100_000
    assert s.limits_at(datetime(2026, 11, 24, 10, 0)).upload == MB


def _throttled(sess: VaultSession) -> ThrottledBackend:
    b = sess.tiers.tiers[1].backend.inner  # type: ignore[attr-defined]
    assert isinstance(b, ThrottledBackend)
    return b


def _holds(limit: float, rate: float) -> bool:
    """The limit holds: never more than 10 % above it; and the transfer is limited by
    it, not by a loaded machine (at least 60 % of it: a busy 2-core CI box is slower)."""
    return 0.6 * limit <= rate <= 1.1 * limit


def _rate(b: ThrottledBackend, nbytes: int) -> float:
    assert b.first is not None and b.last is not None
    return nbytes / (b.last - b.first)


@pytest.fixture
def throttled_vault(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = FtpServerProcess(tmp_path / "ftp")
    home = tmp_path / "home"
    opts = RunOptions(retry_attempts=2, retry_delay=0.1)
    init_vault(home, [str(tmp_path / "speed"), server.url + "/vault"], "pw", opts, Progress())
    cfg = home / "config.toml"
    import tomllib

    doc = tomllib.loads(cfg.read_text())
    doc["throttle"] = [{"tier": "2", "upload": "4MB", "download": "4MB"}]
    cfg.write_text(tomli_w.dumps(doc))
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(20 * MB))
    yield home, opts, src, server, tmp_path
    server.stop()


def _session(home: Path, opts: RunOptions) -> VaultSession:
    return VaultSession(Installation.load(home, opts), "pw", Progress())


def test_backup_restore_and_sync_hold_the_rate(throttled_vault) -> None:  # type: ignore[no-untyped-def]
    home, opts, src, server, tmp = throttled_vault
    limit = 4 * MB
    sess = _session(home, opts)
    sess.tiers.wait_all_tiers = True  # the upload happens in the backup (--wait-all-tiers)
    ops.backup(sess, BackupOptions([str(src)], workers=2))
    sess.end_writes()
    up = _throttled(sess)
    assert up.bytes_up > 20 * MB
    assert _holds(limit, _rate(up, up.bytes_up))
    sess.close()

    # Restore from the server alone: the speed vault is unplugged.
    (tmp / "speed").rename(tmp / "speed.off")
    sess = _session(home, opts)
    t0 = time.monotonic()
    ops.restore(sess, "latest", str(tmp / "out"), [])
    down = _throttled(sess)
    assert down.bytes_down > 20 * MB
    assert _holds(limit, _rate(down, down.bytes_down))
    assert time.monotonic() - t0 >= 20 * MB / limit * 0.9
    sess.close()
    (tmp / "speed.off").rename(tmp / "speed")

    # Sync after an offline period: the server missed a 20 MB backup.
    server.stop()
    (src / "more.bin").write_bytes(os.urandom(20 * MB))
    sess = _session(home, opts)
    ops.backup(sess, BackupOptions([str(src)], workers=2))
    sess.end_writes()
    sess.close()
    server.start()
    sess = _session(home, opts)
    res = run_sync(sess.tiers, Progress())
    assert res and res[0].completed
    b = _throttled(sess)
    assert b.bytes_up >= 20 * MB
    assert _holds(limit, _rate(b, b.bytes_up))
    sess.close()
