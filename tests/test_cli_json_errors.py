"""With ``--json``, errors are one JSON object on stderr (as restic's), stdout stays
empty or holds the result document only, the exit codes are unchanged; and the
human summary lines are not printed beside the JSON ones."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import backup, describe, init_vault, one_line_error, run_tv, stderr_lines
from tests.test_hostile_sources import NO_DAC


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("jsonerr")
    src = tmp / "src"
    src.mkdir()
    (src / "f.txt").write_text("hello\n")
    home, vdir = init_vault(tmp)
    backup(home, src)
    return {"tmp": tmp, "home": home, "vault": vdir, "src": src}


def _json_error(proc: subprocess.CompletedProcess[str], code: int) -> dict[str, Any]:
    """Assert exit ``code``, empty stdout and exactly one JSON error object on stderr."""
    assert proc.returncode == code, describe(proc)
    assert proc.stdout == "", describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 1, describe(proc)
    doc = json.loads(lines[0])
    assert doc["message_type"] == "error", doc
    assert doc["exit_code"] == code, doc
    assert isinstance(doc["message"], str) and doc["message"], doc
    assert "Traceback" not in proc.stderr
    return doc  # type: ignore[no-any-return]


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unknown_snapshot_is_a_json_error(vault: dict[str, Path], where: str) -> None:
    args = ["restore", "nosuch", str(vault["tmp"] / "r")]
    argv = ["--json", *args] if where == "before" else [*args, "--json"]
    doc = _json_error(run_tv(vault["home"], *argv), 2)
    assert "nosuch" in doc["message"]


def test_a_wrong_passphrase_is_a_json_error_with_exit_4(vault: dict[str, Path]) -> None:
    proc = run_tv(vault["home"], "snapshots", "--json", env={"TIERVAULT_PASSWORD": "wrong"})
    assert "passphrase" in _json_error(proc, 4)["message"]


def test_no_installation_is_a_json_error(tmp_path: Path) -> None:
    doc = _json_error(run_tv(tmp_path / "nohome", "--json", "snapshots"), 2)
    assert "no vault is configured" in doc["message"]


@pytest.mark.parametrize("argv", [
    ["--json", "backup", "--no-such-option"],
    ["snapshots", "--json", "--no-such-option"],
    ["--json", "restore"],
    ["--json", "no-such-command"],
    ["--json", "--retry-attempts", "zero", "snapshots"],
], ids=["unknown-option", "json-after-command", "missing-argument", "unknown-command",
        "bad-global-value"])
def test_click_usage_errors_are_json_errors_too(vault: dict[str, Path], argv: list[str]) -> None:
    _json_error(run_tv(vault["home"], *argv), 2)


@pytest.mark.parametrize("argv", [["backup", "--no-such-option"], ["restore"],
                                  ["no-such-command"]])
def test_click_usage_errors_are_one_line_without_json(vault: dict[str, Path],
                                                      argv: list[str]) -> None:
    proc = run_tv(vault["home"], *argv)
    line = one_line_error(proc)
    assert proc.returncode == 2
    assert line.startswith("tiervault: error: ") and "--help" in line, line


def test_a_broken_config_is_a_json_error(vault: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(vault["home"], home)
    cfg = home / "config.toml"
    text = cfg.read_text()
    cfg.write_text(re.sub(r"(?m)^retry_attempts = .*$", 'retry_attempts = "ten"', text)
                   if "retry_attempts" in text else text.replace(
                       "[settings]", '[settings]\nretry_attempts = "ten"'))
    doc = _json_error(run_tv(home, "--json", "snapshots"), 2)
    assert "settings.retry_attempts" in doc["message"]


def test_status_json_without_a_daemon_prints_json(vault: dict[str, Path]) -> None:
    proc = run_tv(vault["home"], "status", "--json")
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:  # a history without the daemon: a document on stdout
        json.loads(proc.stdout)
    else:
        _json_error(proc, proc.returncode)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_json_backup_with_unreadable_files_prints_no_human_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok\n")
    secret = src / "secret.txt"
    secret.write_text("no\n")
    secret.chmod(0o000)
    home, _ = init_vault(tmp_path)
    proc = run_tv(home, "--json", "backup", src, wrapper=NO_DAC)
    assert proc.returncode == 6, describe(proc)
    summary = json.loads(proc.stdout)
    assert not summary["complete"]
    for line in stderr_lines(proc):  # every stderr line is a JSON message, none is prose
        doc = json.loads(line)
        assert doc["message_type"] in ("warning", "info"), line
