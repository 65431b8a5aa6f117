"""`init` and `tier add` through the CLI against real servers that refuse or do not answer.

A definite refusal (wrong FTP password, unknown SSH host key, untrusted FTPS
certificate) fails `init` at once with the server's reason and creates nothing
anywhere; an unreachable server fails it too unless `--allow-offline`. Tier
paths are stored absolute.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.helpers import describe, ok, one_line_error, run_tv, stderr_lines, tv_json
from tests.servers.ftp_server import FtpServerProcess
from tests.servers.ports import free_port
from tests.servers.sshd import SSHD

FTP_USER = "tv"
FTP_PASSWORD = "In1t-ftp-pw-Kx"
#: The defaults (10 attempts, 0.5 s first delay): a refusal must not wait on retries.
DEFAULT_RETRY = ("--retry-attempts", "10", "--retry-delay", "0.5")


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path / "ftproot", user=FTP_USER, password=FTP_PASSWORD)
    yield srv
    srv.stop()


def _ftp_url(port: int, password: str = FTP_PASSWORD, scheme: str = "ftp") -> str:
    return f"{scheme}://{FTP_USER}:{password}@127.0.0.1:{port}/vault"


def _assert_nothing_created(*paths: Path) -> None:
    for p in paths:
        assert not p.exists(), f"{p} was created by a failed init"


def _refused_init(tmp_path: Path, url: str) -> str:
    home, speed = tmp_path / "home", tmp_path / "speed"
    start = time.monotonic()
    p = run_tv(home, *DEFAULT_RETRY, "init", speed, url)
    took = time.monotonic() - start
    assert p.returncode == 1, describe(p)
    line = one_line_error(p)
    assert "created vault" not in p.stdout
    assert took < 10, f"a definite refusal took {took:.1f} s (retried?)"
    _assert_nothing_created(home, speed)
    return line


def test_init_with_a_wrong_ftp_password_fails_and_creates_nothing(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    line = _refused_init(tmp_path, _ftp_url(ftp.port, "WRONG-pw"))
    assert "login refused" in line and "530" in line, line
    assert "WRONG-pw" not in line
    assert not (ftp.root / "vault").exists()


def test_init_with_an_untrusted_ftps_certificate_fails(tmp_path: Path) -> None:
    srv = FtpServerProcess(tmp_path / "ftpsroot", tls=True, user=FTP_USER,
                           password=FTP_PASSWORD)
    try:
        line = _refused_init(tmp_path, _ftp_url(srv.port, scheme="ftps"))
        assert "certificate" in line, line
    finally:
        srv.stop()


@pytest.mark.skipif(not os.path.exists(SSHD), reason="sshd not installed")
def test_init_with_an_unknown_ssh_host_key_fails(tmp_path: Path) -> None:
    from tests.servers.sshd import SshdProcess

    sshd = SshdProcess(tmp_path / "sshd")
    try:
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        url = (f"{sshd.url(str(tmp_path / 'sftp-vault'))}?known_hosts={empty}"
               f"&key_file={sshd.client_key}")
        line = _refused_init(tmp_path, url)
        assert "host key" in line and "ssh-keyscan" in line, line
        assert not (tmp_path / "sftp-vault").exists()
    finally:
        sshd.stop()


def test_init_with_nothing_listening_fails_unless_allow_offline(tmp_path: Path) -> None:
    port = free_port()
    home, speed = tmp_path / "home", tmp_path / "speed"
    p = run_tv(home, "init", speed, _ftp_url(port))
    errors = [ln for ln in stderr_lines(p) if ln.startswith("tiervault: error:")]
    assert p.returncode == 1 and len(errors) == 1 and "Traceback" not in p.stderr, describe(p)
    assert "connection refused" in errors[0] and "--allow-offline" in errors[0], errors
    _assert_nothing_created(home, speed)

    # With --allow-offline the vault is made on the speed vault ...
    p = ok(run_tv(home, "init", speed, _ftp_url(port), "--allow-offline"))
    assert "does not answer yet" in p.stdout, describe(p)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("made while the server was away")
    ok(run_tv(home, "backup", src))
    # ... and the server's tier is created and filled when it appears.
    srv = FtpServerProcess(tmp_path / "ftproot", port=port, user=FTP_USER,
                           password=FTP_PASSWORD)
    try:
        ok(run_tv(home, "sync"))
        rows = tv_json(home, "tiers")
        assert [r["state"] for r in rows] == ["online", "online"], rows
        assert rows[0]["revision"] == rows[1]["revision"]
        assert (srv.root / "vault" / "config").exists()
        speed_files = sorted(p.relative_to(speed).as_posix() for p in speed.rglob("*")
                             if p.is_file() and not p.name.startswith("."))
        server_files = sorted(p.relative_to(srv.root / "vault").as_posix()
                              for p in (srv.root / "vault").rglob("*")
                              if p.is_file() and not p.name.startswith("."))
        assert speed_files == server_files
    finally:
        srv.stop()


def test_tier_add_of_a_refusing_server_is_not_added(tmp_path: Path,
                                                    ftp: FtpServerProcess) -> None:
    home = tmp_path / "home"
    ok(run_tv(home, "init", tmp_path / "speed"))
    before = (home / "config.toml").read_bytes()
    p = run_tv(home, *DEFAULT_RETRY, "tier", "add", _ftp_url(ftp.port, "WRONG-pw"))
    line = one_line_error(p)
    assert p.returncode == 1 and "login refused" in line and "not added" in line, line
    assert (home / "config.toml").read_bytes() == before
    assert len(tv_json(home, "tiers")) == 1


def test_a_password_changed_later_is_reported_loudly(tmp_path: Path,
                                                     ftp: FtpServerProcess) -> None:
    home = tmp_path / "home"
    ok(run_tv(home, "init", tmp_path / "speed", _ftp_url(ftp.port)))
    ftp.stop()
    ftp.password = "changed-on-the-server"
    ftp.start()
    p = ok(run_tv(home, "snapshots"))
    warnings = [ln for ln in stderr_lines(p) if ln.startswith("warning:")]
    assert warnings and "refuses access" in warnings[0] and "login refused" in warnings[0] \
        and "fix the credentials" in warnings[0], describe(p)
    rows = tv_json(home, "tiers")
    assert rows[1]["state"] == "offline" and rows[1]["refused"] is True, rows
    p = ok(run_tv(home, "tiers"))
    assert "REFUSED" in p.stdout, describe(p)


def test_relative_tier_paths_are_stored_absolute(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    ok(run_tv(home, "init", "sv", "relative/dir", cwd=work))
    with open(home / "config.toml", "rb") as f:
        tiers = tomllib.load(f)["vault"]["tiers"]
    assert tiers == [str(work / "sv"), str(work / "relative" / "dir")]
    # From another working directory (a service runs in /) both tiers are there.
    rows = tv_json(home, "tiers")
    p = ok(run_tv(home, "--json", "tiers", cwd="/"))
    assert [r["state"] for r in rows] == ["online", "online"], p.stdout
    ok(run_tv(home, "tier", "add", "third", cwd=work))
    assert (work / "third").is_dir()
    ok(run_tv(home, "tier", "remove", str(work / "third"), cwd="/"))


def test_an_old_config_with_a_relative_path_says_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(run_tv(home, "init", tmp_path / "sv"))
    with open(home / "config.toml", "rb") as f:
        doc = tomllib.load(f)
    doc["vault"]["tiers"].append("relative/dir")
    with open(home / "config.toml", "wb") as f:
        tomli_w.dump(doc, f)
    p = run_tv(home, "tiers", cwd="/")
    assert p.returncode == 2, describe(p)
    line = one_line_error(p)
    assert "relative/dir" in line and "relative path" in line and "absolute path" in line, line


def test_the_daemon_notifies_a_refusal_at_once(tmp_path: Path, ftp: FtpServerProcess) -> None:
    """The daemon's idle round sends ``tier_refused`` the first time it meets the refusal."""
    from typing import Any

    from tiervault.daemon.notify import TIER_REFUSED, Notifier
    from tiervault.daemon.runner import IdleRound
    from tiervault.daemon.sets import NotifySettings
    from tiervault.service.installation import Installation, RunOptions

    home = tmp_path / "home"
    ok(run_tv(home, "init", tmp_path / "speed", _ftp_url(ftp.port)))
    ftp.stop()
    ftp.password = "changed-on-the-server"
    ftp.start()
    inst = Installation.load(home, RunOptions(1, 0.01, 0, dict(os.environ)))
    events: list[dict[str, Any]] = []
    try:
        idle = IdleRound(inst, Notifier(NotifySettings(), sent=events.append))
        idle.run()
        idle.run()
    finally:
        inst.close()
    refused = [e for e in events if e["event"] == TIER_REFUSED]
    assert len(refused) == 1, events  # once, not on every round
    assert "login refused" in refused[0]["message"] and "fix the credentials" in \
        refused[0]["message"], refused


def test_quiet_init_keeps_only_the_passphrase_advice(tmp_path: Path) -> None:
    """-q hides the lines that only report success (trial 4)."""
    home, speed = tmp_path / "home", tmp_path / "speed"
    speed.mkdir()
    p = run_tv(home, "-q", "init", speed)
    assert p.returncode == 0, describe(p)
    assert p.stdout.splitlines() == [
        "keep the passphrase safe: without it the backups cannot be read"], p.stdout
    loud = run_tv(tmp_path / "home2", "init", tmp_path / "speed2")
    assert "created vault" in loud.stdout and "installation home:" in loud.stdout
