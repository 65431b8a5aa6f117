"""Servers that misbehave, through the CLI: the backup never hangs and never loses data.

The second tier is a pyftpdlib server that goes wrong on cue
(``tests/servers/bad_ftp.py``: it misbehaves while an "armed" file exists):

- it hangs in the middle of a transfer: every operation has a timeout, the
  tier goes offline, the backup completes on the speed vault; reads that
  must come from that server fail clearly instead of hanging;
- it keeps only the start of each upload and answers "226 OK" anyway:
  ``check --read-data`` finds the damaged packs, ``check --repair`` copies
  good ones from the speed vault, and data restored from the server alone is
  exact again;
- it answers directory listings with garbage: no traceback, a clear error,
  and nothing on the server is deleted;
- it refuses logins (530): a permanent error, the tier is offline at once
  (no retry storm), the backup completes on the speed vault, and the message
  says "login refused" without showing the password;
- it silently loses files: ``check`` must say so and ``--repair`` must refill.

The S3 tier runs behind ``tests/servers/s3_fault_proxy.py``, which answers a
quarter of the requests with 500 InternalError or 503 SlowDown (some before
and some after moto did the work): backups complete through the retries and
restores are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import describe, ok, run_tv, under
from tests.servers.bad_ftp import BadFtpServerProcess
from tests.servers.ftp_server import FtpServerProcess

FTP_USER = "tv"
#: Distinctive, so a leak is found by a plain substring search.
FTP_PASSWORD = "Bad-Ftp-pw-4Lq8Zt"
TIMEOUT = 180
#: Packs are bigger than this; revision, key, index and snapshot files smaller.
LIMIT = 64 * 1024


def files_of(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every vault file below ``root`` (not the revision)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != "revision" and not p.name.startswith("."):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def no_leak(*procs: object) -> None:
    for p in procs:
        text = f"{getattr(p, 'stdout', '')}{getattr(p, 'stderr', '')}"
        assert FTP_PASSWORD not in text, text[-2000:]


@dataclass
class Setup:
    """A vault on a local speed vault and a (misbehaving) FTP server."""

    tmp: Path
    srv: FtpServerProcess
    home: Path
    speed: Path
    src: Path
    url: str

    @property
    def ftp_vault(self) -> Path:
        return self.srv.root / "vault"

    def tiers(self) -> list[dict[str, object]]:
        return json.loads(ok(run_tv(self.home, "--json", "tiers", timeout=TIMEOUT)).stdout)

    def unplug_speed(self) -> Path:
        away = self.tmp / "speed-unplugged"
        self.speed.rename(away)
        return away

    def plug_speed(self, away: Path) -> None:
        away.rename(self.speed)


def _setup(tmp: Path, srv: FtpServerProcess, timeout: float = 5.0) -> Setup:
    url = f"{srv.url}/vault?timeout={timeout:g}"
    home, speed, src = tmp / "home", tmp / "speed", tmp / "src"
    src.mkdir()
    (src / "first.bin").write_bytes(os.urandom(2 << 20))
    (src / "notes.txt").write_text("first backup\n")
    no_leak(ok(run_tv(home, "init", speed, url, timeout=TIMEOUT)))
    no_leak(ok(run_tv(home, "backup", src, timeout=TIMEOUT)))
    return Setup(tmp, srv, home, speed, src, url)


@pytest.fixture
def bad_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BadFtpServerProcess]:
    mode, kw = request.param
    srv = BadFtpServerProcess(tmp_path / "ftproot", mode, armed_file=tmp_path / "armed",
                              user=FTP_USER, password=FTP_PASSWORD, limit=LIMIT, **kw)
    yield srv
    srv.kill()


def _restored(target: Path, src: Path) -> Path:
    return Path(os.fsdecode(under(target, src)))


# -- a server that hangs mid-transfer ------------------------------------------------------------


@pytest.mark.parametrize("bad_server", [("hang", {})], indirect=True)
def test_hanging_server(bad_server: BadFtpServerProcess, tmp_path: Path) -> None:
    s = _setup(tmp_path, bad_server, timeout=1)  # every operation gives up after 1 s
    bad_server.arm()
    (s.src / "second.bin").write_bytes(os.urandom(2 << 20))  # new data: a pack to upload

    start = time.monotonic()
    proc = run_tv(s.home, "backup", s.src, timeout=TIMEOUT)
    took = time.monotonic() - start
    assert proc.returncode == 0, describe(proc)
    assert took < 60, f"the backup took {took:.0f} s against a hung server"
    # It goes offline, or (SPEC §4) drops out of the session as too slow first.
    assert ("offline" in proc.stderr or "leaves this session" in proc.stderr) \
        and "timed out" in proc.stderr, describe(proc)
    no_leak(proc)
    rows = s.tiers()
    assert rows[0]["state"] == "online" and rows[0]["revision"] == rows[0]["max_revision"]
    assert rows[1]["state"] != "online" and rows[1]["expected_revision"] < rows[1]["max_revision"]

    # Everything restores from the speed vault.
    target = tmp_path / "r"
    ok(run_tv(s.home, "restore", "latest", target, timeout=TIMEOUT))
    for name in ("first.bin", "second.bin", "notes.txt"):
        assert (_restored(target, s.src) / name).read_bytes() == (s.src / name).read_bytes()

    # Reading the hung server's packs times out per operation; check reports it.
    start = time.monotonic()
    proc = run_tv(s.home, "check", "--tier", "2", "--read-data", timeout=TIMEOUT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert "timed out" in proc.stdout + proc.stderr
    assert time.monotonic() - start < 60

    # With the speed vault unplugged, a restore that needs the server fails, clearly and soon.
    away = s.unplug_speed()
    start = time.monotonic()
    proc = run_tv(s.home, "restore", "latest", tmp_path / "r2", timeout=TIMEOUT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    assert time.monotonic() - start < 60
    no_leak(proc)
    s.plug_speed(away)


# -- a server that truncates uploads but answers OK ---------------------------------------------


@pytest.mark.parametrize("bad_server", [("truncate", {})], indirect=True)
def test_truncating_server_is_caught_and_healed(bad_server: BadFtpServerProcess,
                                                tmp_path: Path) -> None:
    s = _setup(tmp_path, bad_server)
    bad_server.arm()
    (s.src / "second.bin").write_bytes(os.urandom(3 << 20))
    no_leak(ok(run_tv(s.home, "backup", s.src, timeout=TIMEOUT)))  # the server said all was well
    bad_server.disarm()
    short = [p for p in (s.ftp_vault / "data").rglob("*") if p.is_file()
             and p.stat().st_size == LIMIT]
    assert short, "the server did not truncate anything: the test proves nothing"

    # The server alone cannot give the data back: an error, not wrong data.
    away = s.unplug_speed()
    proc = run_tv(s.home, "restore", "latest", tmp_path / "from-server", timeout=TIMEOUT)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    assert "second.bin" in proc.stdout + proc.stderr, describe(proc)
    s.plug_speed(away)

    proc = run_tv(s.home, "check", "--read-data", timeout=TIMEOUT)
    assert proc.returncode == 1, describe(proc)
    for p in short:
        assert p.name in proc.stdout, describe(proc)

    proc = run_tv(s.home, "check", "--repair", timeout=TIMEOUT)
    assert proc.returncode == 0, describe(proc)
    assert "copied from" in proc.stdout, describe(proc)
    ok(run_tv(s.home, "check", "--read-data", timeout=TIMEOUT))
    assert files_of(s.ftp_vault) == files_of(s.speed)

    # Now the server alone restores everything exactly.
    away = s.unplug_speed()
    target = tmp_path / "from-server-healed"
    no_leak(ok(run_tv(s.home, "restore", "latest", target, timeout=TIMEOUT)))
    for name in ("first.bin", "second.bin", "notes.txt"):
        assert (_restored(target, s.src) / name).read_bytes() == (s.src / name).read_bytes()
    s.plug_speed(away)


# -- a server that answers listings with garbage ------------------------------------------------


def _garbage_round(s: Setup, srv: BadFtpServerProcess, kind: str,
                   tmp: Path) -> subprocess.CompletedProcess[str]:
    """Listings turn to ``kind`` garbage: backup and restore work, check does not crash."""
    srv.arm(kind)
    (s.src / f"{kind}.bin").write_bytes(os.urandom(300_000))
    procs = [run_tv(s.home, "backup", s.src, timeout=TIMEOUT),
             run_tv(s.home, "snapshots", timeout=TIMEOUT),
             run_tv(s.home, "restore", "latest", tmp / f"r-{kind}", timeout=TIMEOUT)]
    for p in procs:
        assert p.returncode == 0, describe(p)
    assert (_restored(tmp / f"r-{kind}", s.src) / f"{kind}.bin").read_bytes() == \
        (s.src / f"{kind}.bin").read_bytes()
    check = run_tv(s.home, "check", timeout=TIMEOUT)
    for p in [*procs, check]:
        assert "Traceback" not in p.stderr, describe(p)
        no_leak(p)
    return check


def _assert_flagged(check: subprocess.CompletedProcess[str], port: int) -> None:
    """The check against the garbage-listing server did not pass it as healthy."""
    assert check.returncode == 1, describe(check)
    assert f"127.0.0.1:{port}" in check.stdout + check.stderr, describe(check)


@pytest.mark.parametrize("bad_server", [("garbage-list", {})], indirect=True)
def test_garbage_listing(bad_server: BadFtpServerProcess, tmp_path: Path) -> None:
    s = _setup(tmp_path, bad_server)
    before = files_of(s.ftp_vault)
    for kind in ("binary", "facts", "long"):
        _assert_flagged(_garbage_round(s, bad_server, kind, tmp_path), bad_server.port)
    bad_server.disarm()
    # Nothing the server held was deleted or changed because of its listings.
    after = files_of(s.ftp_vault)
    # (the manifest is mutable: each write session rewrites it)
    assert {k: v for k, v in after.items() if k in before and k != "manifest"} == \
        {k: v for k, v in before.items() if k != "manifest"}
    ok(run_tv(s.home, "check", "--read-data", timeout=TIMEOUT))


@pytest.mark.parametrize("bad_server", [("garbage-list", {})], indirect=True)
def test_garbage_listing_of_names_only(bad_server: BadFtpServerProcess, tmp_path: Path) -> None:
    s = _setup(tmp_path, bad_server)
    _assert_flagged(_garbage_round(s, bad_server, "names", tmp_path), bad_server.port)


# -- a server that refuses logins --------------------------------------------------------------


@pytest.mark.parametrize("bad_server", [("refuse-login", {})], indirect=True)
def test_refused_login(bad_server: BadFtpServerProcess, tmp_path: Path) -> None:
    s = _setup(tmp_path, bad_server)
    bad_server.arm()
    (s.src / "second.bin").write_bytes(os.urandom(1 << 20))
    start = time.monotonic()
    proc = run_tv(s.home, "--retry-attempts", "10", "--retry-delay", "3", "backup", s.src,
                  timeout=TIMEOUT)
    assert proc.returncode == 0, describe(proc)
    # Permanent: not retried (10 attempts 3 s apart would take 27 s and risk a lockout).
    assert time.monotonic() - start < 15, describe(proc)
    no_leak(proc)
    lines = [ln for ln in proc.stderr.splitlines() if "login refused" in ln]
    assert lines, describe(proc)
    # A refusal is said loudly (issue 8 item 8), not as a quiet "offline".
    assert "530" in lines[0] and "refuses access" in lines[0] and \
        "fix the credentials" in lines[0] and f":{bad_server.port}" in lines[0]
    rows = s.tiers()
    assert rows[1]["state"] == "offline" and "login refused" in str(rows[1]["error"])
    target = tmp_path / "r"
    ok(run_tv(s.home, "restore", "latest", target, timeout=TIMEOUT))
    assert (_restored(target, s.src) / "second.bin").read_bytes() == \
        (s.src / "second.bin").read_bytes()
    # Logins work again: the next backup brings the server level.
    bad_server.disarm()
    no_leak(ok(run_tv(s.home, "backup", s.src, timeout=TIMEOUT)))
    rows = s.tiers()
    assert rows[1]["state"] == "online" and rows[1]["revision"] == rows[1]["max_revision"]
    assert files_of(s.ftp_vault) == files_of(s.speed)


# -- a server that loses files -------------------------------------------------------------------


@pytest.fixture
def good_server(tmp_path: Path) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path / "ftproot", user=FTP_USER, password=FTP_PASSWORD)
    yield srv
    srv.stop()


def _lose_packs(s: Setup, tree_packs: bool) -> list[Path]:
    """Delete the server's data packs (big) or tree packs (a few KiB)."""
    packs = [p for p in (s.ftp_vault / "data").rglob("*") if p.is_file()]
    lost = [p for p in packs if (p.stat().st_size < LIMIT) == tree_packs]
    assert lost and len(lost) < len(packs)
    for p in lost:
        p.unlink()
    return lost


def test_server_losing_data_packs_is_healed(good_server: FtpServerProcess,
                                            tmp_path: Path) -> None:
    s = _setup(tmp_path, good_server)
    lost = _lose_packs(s, tree_packs=False)
    proc = run_tv(s.home, "check", timeout=TIMEOUT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
    assert all(p.name in proc.stdout for p in lost), describe(proc)
    proc = run_tv(s.home, "check", "--repair", timeout=TIMEOUT)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)
    assert files_of(s.ftp_vault) == files_of(s.speed)


def test_server_losing_a_tree_pack_is_healed(good_server: FtpServerProcess,
                                             tmp_path: Path) -> None:
    s = _setup(tmp_path, good_server)
    _lose_packs(s, tree_packs=True)
    proc = run_tv(s.home, "check", "--repair", timeout=TIMEOUT)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, describe(proc)
    assert files_of(s.ftp_vault) == files_of(s.speed)


def test_check_reports_files_a_server_lost(good_server: FtpServerProcess,
                                           tmp_path: Path) -> None:
    s = _setup(tmp_path, good_server)
    for p in (s.ftp_vault / "snapshots").iterdir():
        p.unlink()
    proc = run_tv(s.home, "check", timeout=TIMEOUT)
    assert proc.returncode == 1, describe(proc)
    assert "snapshots/" in proc.stdout, describe(proc)


def test_repair_refills_files_of_several_kinds(good_server: FtpServerProcess,
                                               tmp_path: Path) -> None:
    s = _setup(tmp_path, good_server)
    for d in ("snapshots", "index"):
        for p in (s.ftp_vault / d).iterdir():
            p.unlink()
    proc = run_tv(s.home, "check", "--repair", timeout=TIMEOUT)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert proc.returncode == 0, describe(proc)
    assert files_of(s.ftp_vault) == files_of(s.speed)


# -- S3 answering 500 and 503 SlowDown -----------------------------------------------------------


def test_s3_with_500s_and_slowdowns(tmp_path: Path) -> None:
    from tests.servers.s3_fault_proxy import S3FaultProxy
    from tests.servers.s3_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServerProcess

    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    retries = ("--retry-attempts", "15", "--retry-delay", "0.02")
    with MotoServerProcess() as moto, S3FaultProxy(moto.endpoint, rate=0.25, seed=3) as proxy:
        # The S3 bucket is the only tier: everything goes through the faults.
        url = f"s3://tv-faults/vault?endpoint={quote(proxy.endpoint, safe=':/')}&region={REGION}"
        home, src = tmp_path / "home", tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        files = {src / "big.bin": os.urandom(9 << 20),  # a multipart upload (over 8 MiB)
                 src / "sub" / "small.txt": b"small\n",
                 **{src / "sub" / f"f{i}.bin": os.urandom(20_000) for i in range(20)}}
        for p, data in files.items():
            p.write_bytes(data)
        ok(run_tv(home, *retries, "init", url, env=env, timeout=TIMEOUT))
        proc = run_tv(home, *retries, "backup", "--wait-timeout", "10", src, env=env,
                      timeout=TIMEOUT)
        assert proc.returncode == 0, describe(proc)
        proc = run_tv(home, *retries, "--json", "tiers", env=env, timeout=TIMEOUT)
        row = json.loads(ok(proc).stdout)[0]
        assert row["state"] == "online" and row["revision"] == row["max_revision"]
        target = tmp_path / "r"
        ok(run_tv(home, *retries, "restore", "latest", target, env=env, timeout=TIMEOUT))
        for p, data in files.items():
            assert Path(os.fsdecode(under(target, p))).read_bytes() == data, p
        ok(run_tv(home, *retries, "check", "--read-data", env=env, timeout=TIMEOUT))
        stats = dict(proxy.stats)
    # About a quarter of the requests failed, of every kind.
    assert stats["faults_before"] + stats["faults_after"] >= stats["requests"] // 8, stats
    assert min(stats["faults_before"], stats["faults_after"], stats["500"], stats["503"]) >= 1


def test_bad_ftp_helper_really_misbehaves(tmp_path: Path) -> None:
    """The harness itself: armed or not, as told (so a pass above means something)."""
    import ftplib

    srv = BadFtpServerProcess(tmp_path / "root", "refuse-login", armed_file=tmp_path / "a",
                              user=FTP_USER, password=FTP_PASSWORD)
    try:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", srv.port, timeout=5)
        ftp.login(FTP_USER, FTP_PASSWORD)
        ftp.quit()
        srv.arm()
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", srv.port, timeout=5)
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp.login(FTP_USER, FTP_PASSWORD)
        ftp.close()
    finally:
        srv.kill()
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
