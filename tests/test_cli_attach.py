"""`attach` through the CLI: the two modes, and a take-over that keeps the configuration.

A real FTP server holds the second tier; its password lives only in config.toml's
``[credentials]`` (or the environment), never in the URL, so a take-over that
dropped that table would leave the server silently unusable.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.helpers import describe, ok, one_line_error, run_tv, tv_json
from tests.servers.ftp_server import FtpServerProcess

FTP_USER = "tv"
FTP_PASSWORD = "Att4ch-ftp-pw-Zq"


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path / "ftproot", user=FTP_USER, password=FTP_PASSWORD)
    yield srv
    srv.stop()


def _url(srv: FtpServerProcess) -> str:
    return f"ftp://{FTP_USER}@127.0.0.1:{srv.port}/vault"


def _config(home: Path) -> dict[str, Any]:
    with open(home / "config.toml", "rb") as f:
        return tomllib.load(f)


def _write_config(home: Path, doc: dict[str, Any]) -> None:
    with open(home / "config.toml", "wb") as f:
        tomli_w.dump(doc, f)


def _setup(tmp_path: Path, srv: FtpServerProcess, creds_in_config: bool) -> tuple[Path, Path]:
    """A two-tier installation with sets, a schedule, a throttle rule and credentials."""
    home, speed = tmp_path / "home", tmp_path / "speed"
    env = None if creds_in_config else {"TIERVAULT_FTP_PASSWORD": FTP_PASSWORD}
    if creds_in_config:
        home.mkdir()
        _write_config(home, {"credentials": {_url(srv): {"password": FTP_PASSWORD}}})
    ok(run_tv(home, "init", speed, _url(srv), env=env))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first")
    ok(run_tv(home, "set", "add", "docs", src, env=env))
    ok(run_tv(home, "schedule", "add", "docs", "--days", "daily", "--time", "03:00", env=env))
    doc = _config(home)
    doc["throttle"] = [{"tier": "2", "upload": "50MB"}]
    _write_config(home, doc)
    ok(run_tv(home, "backup", src, env=env))
    return home, speed


@pytest.mark.parametrize("creds_in_config", [True, False], ids=["credentials", "env"])
def test_take_over_after_exit_3_keeps_the_whole_config(
        tmp_path: Path, ftp: FtpServerProcess, creds_in_config: bool) -> None:
    home, speed = _setup(tmp_path, ftp, creds_in_config)
    env = None if creds_in_config else {"TIERVAULT_FTP_PASSWORD": FTP_PASSWORD}
    src = tmp_path / "src"
    copy = tmp_path / "home-copy"
    shutil.copytree(home, copy)
    (src / "b.txt").write_text("written by the copy")
    ok(run_tv(copy, "backup", src, env=env))  # the copy becomes the writer

    p = run_tv(home, "backup", src, env=env)
    assert p.returncode == 3, describe(p)
    line = one_line_error(p)
    assert "attach --take-over" in line and "--read-only" in line, line
    before = _config(home)

    # The message's advice, as printed: no URLs, or the URLs as the messages show them.
    ok(run_tv(home, "attach", speed, _url(ftp), "--take-over", env=env))
    after = _config(home)
    assert after == before, "take-over changed config.toml"
    assert after["sets"]["docs"]["schedules"], after  # sets and schedules kept
    assert after["throttle"] == [{"tier": "2", "upload": "50MB"}]
    if creds_in_config:
        assert after["credentials"] == {_url(ftp): {"password": FTP_PASSWORD}}

    # The server tier still works with the credentials as configured.
    (src / "c.txt").write_text("after the take-over")
    ok(run_tv(home, "backup", src, env=env))
    rows = tv_json(home, "tiers", env=env)
    assert [r["state"] for r in rows] == ["online", "online"], rows
    assert rows[0]["revision"] == rows[1]["revision"]
    # ... and now the copy is the one refused.
    assert run_tv(copy, "backup", src, env=env).returncode == 3


def test_take_over_alone_uses_the_configured_tiers(tmp_path: Path,
                                                   ftp: FtpServerProcess) -> None:
    home, _speed = _setup(tmp_path, ftp, creds_in_config=True)
    copy = tmp_path / "home-copy"
    shutil.copytree(home, copy)
    ok(run_tv(copy, "backup", tmp_path / "src"))
    assert run_tv(home, "snapshots").returncode == 3
    before = _config(home)
    res = tv_json(home, "attach", "--take-over")
    assert res["take_over"] is True
    assert _config(home) == before
    ok(run_tv(home, "backup", tmp_path / "src"))


def test_take_over_refuses_other_tiers_on_a_configured_home(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    home, _speed = _setup(tmp_path, ftp, creds_in_config=True)
    before = _config(home)
    p = run_tv(home, "attach", tmp_path / "elsewhere", "--take-over")
    assert p.returncode == 2, describe(p)
    assert "not a tier of this installation" in one_line_error(p)
    assert _config(home) == before


def test_plain_attach_refuses_and_explains_both_modes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(run_tv(home, "init", tmp_path / "vault"))
    desk = tmp_path / "desktop-home"
    p = run_tv(desk, "attach", tmp_path / "vault")
    assert p.returncode == 2, describe(p)
    line = one_line_error(p)
    assert "--read-only" in line and "--take-over" in line, line
    assert not desk.exists(), "a refused attach created the installation home"
    # The writer is undisturbed.
    ok(run_tv(home, "backup", tmp_path))


def test_read_only_desktop_never_locks_out_the_writer(tmp_path: Path) -> None:
    home, vault = tmp_path / "home", tmp_path / "vault"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    ok(run_tv(home, "init", vault))
    ok(run_tv(home, "backup", src))
    desk = tmp_path / "desk"
    ok(run_tv(desk, "attach", vault, "--read-only"))
    assert run_tv(desk, "backup", src).returncode == 2
    ok(run_tv(home, "backup", src))
    assert len(tv_json(desk, "snapshots")) == 2


def test_attach_with_a_wrong_password_creates_nothing(tmp_path: Path,
                                                      ftp: FtpServerProcess) -> None:
    home = tmp_path / "home"
    ok(run_tv(home, "init", tmp_path / "speed", _url(ftp),
              env={"TIERVAULT_FTP_PASSWORD": FTP_PASSWORD}))
    new = tmp_path / "new-home"
    p = run_tv(new, "attach", _url(ftp), "--take-over",
               env={"TIERVAULT_FTP_PASSWORD": "wrong"})
    line = one_line_error(p)
    assert "refuses access" in line and "login refused" in line, line
    assert not new.exists()


def test_take_over_on_a_replacement_computer_creates_and_fills_its_speed_vault(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    env = {"TIERVAULT_FTP_PASSWORD": FTP_PASSWORD}
    old_home = tmp_path / "old-laptop"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("from the old laptop")
    ok(run_tv(old_home, "init", tmp_path / "old-speed", _url(ftp), env=env))
    ok(run_tv(old_home, "backup", src, env=env))
    new_home, new_speed = tmp_path / "new-laptop", tmp_path / "new-disk" / "speed"
    res = tv_json(new_home, "attach", new_speed, _url(ftp), "--take-over", env=env)
    assert res["take_over"] is True
    (src / "g.txt").write_text("from the new laptop")
    ok(run_tv(new_home, "backup", src, env=env))  # its closing sync fills the new speed vault
    rows = tv_json(new_home, "tiers", env=env)
    assert [r["state"] for r in rows] == ["online", "online"], rows
    assert len(tv_json(new_home, "snapshots", env=env)) == 2
    assert (new_speed / "config").exists()
    assert run_tv(old_home, "backup", src, env=env).returncode == 3
