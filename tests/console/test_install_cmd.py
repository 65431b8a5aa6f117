"""The tokens page's one-line install commands, run by a real shell against stand-ins for
pip, systemctl, loginctl, launchctl and tiervault: the enrol arguments arrive intact
(even with shell syntax in them) and the service files are written as the docs say."""

from __future__ import annotations

import os
import plistlib
import subprocess
from pathlib import Path

import pytest

from tiervault.console.services import install_cmd

NASTY_URL = "https://console.example:8443/$(touch pwned);`id`"
TOKEN = "tve_abc-DEF_123"
FINGERPRINT = "SHA256:" + "ab" * 32


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture()
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A home and a PATH of stand-ins that log how they were called."""
    home, bin_dir, log = tmp_path / "home", tmp_path / "bin", tmp_path / "calls.log"
    home.mkdir()
    bin_dir.mkdir()
    record = f'printf "%s\\n" "$(basename "$0") $*" >> "{log}"\n'
    _stub(bin_dir / "python3", record + 'if [ "$2" = site ]; then echo "$HOME/.local"; fi\n')
    for name in ("systemctl", "loginctl", "launchctl"):
        _stub(bin_dir / name, record)
    local_bin = home / ".local" / "bin"
    local_bin.mkdir(parents=True)
    _stub(local_bin / "tiervault", record.replace('"$(basename "$0") $*"',
                                                  '"tiervault" "$@"'))
    env = {"HOME": str(home), "USER": "me", "PATH": f"{bin_dir}:/usr/bin:/bin"}
    return tmp_path, env


def _run(line: str, env: dict[str, str], cwd: Path) -> list[str]:
    proc = subprocess.run(["bash", "-c", line], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return (cwd / "calls.log").read_text().splitlines()


def test_linux_line_enrols_and_writes_the_systemd_unit(
        sandbox: tuple[Path, dict[str, str]]) -> None:
    root, env = sandbox
    calls = _run(install_cmd.linux(NASTY_URL, TOKEN, FINGERPRINT), env, root)
    assert calls[0] == "python3 -m pip install --user tiervault"
    i = calls.index("tiervault")
    assert calls[i:i + 9] == ["tiervault", "--password-file",
                              f"{env['HOME']}/.config/tiervault/passphrase", "enrol",
                              NASTY_URL, "--token", TOKEN, "--fingerprint", FINGERPRINT]
    assert "systemctl --user enable --now tiervault" in calls
    assert "loginctl enable-linger me" in calls
    assert not (root / "pwned").exists()
    unit = (Path(env["HOME"]) / ".config/systemd/user/tiervault.service").read_text()
    assert ("ExecStart=%h/.local/bin/tiervault --password-file "
            "%h/.config/tiervault/passphrase daemon\n") in unit
    passphrase = Path(env["HOME"]) / ".config/tiervault/passphrase"
    assert passphrase.stat().st_mode & 0o777 == 0o600 and len(passphrase.read_text()) > 40
    first = passphrase.read_text()
    _run(install_cmd.linux(NASTY_URL, TOKEN, FINGERPRINT), env, root)
    assert passphrase.read_text() == first   # a second run keeps the vault's passphrase
    assert "[Install]\nWantedBy=default.target\n" in unit


def test_macos_line_enrols_and_writes_the_launchd_agent(
        sandbox: tuple[Path, dict[str, str]]) -> None:
    root, env = sandbox
    calls = _run(install_cmd.macos(NASTY_URL, TOKEN, None), env, root)
    i = calls.index("tiervault")
    assert calls[i:i + 7] == ["tiervault", "--password-file",
                              f"{env['HOME']}/.config/tiervault/passphrase", "enrol",
                              NASTY_URL, "--token", TOKEN]
    assert "--fingerprint" not in calls
    plist_path = Path(env["HOME"]) / "Library/LaunchAgents/org.tiervault.daemon.plist"
    assert any(c.startswith("launchctl bootstrap gui/") and c.endswith(str(plist_path))
               for c in calls)
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["Label"] == "org.tiervault.daemon"
    assert plist["ProgramArguments"] == [
        f"{env['HOME']}/.local/bin/tiervault", "--password-file",
        f"{env['HOME']}/.config/tiervault/passphrase", "daemon"]
    assert plist["StandardErrorPath"] == f"{env['HOME']}/Library/Logs/tiervault.log"
    assert not (root / "pwned").exists()
    assert os.path.isdir(Path(env["HOME"]) / "Library/Logs")


def test_the_package_pip_installs_is_the_consoles_choice(
        sandbox: tuple[Path, dict[str, str]]) -> None:
    root, env = sandbox
    wheel = "https://files.example/tiervault-0.2.0-py3-none-any.whl"
    calls = _run(install_cmd.linux(NASTY_URL, TOKEN, None, wheel), env, root)
    assert calls[0] == f"python3 -m pip install --user {wheel}"
