"""Every setting of config.toml is checked when it is loaded: a wrong type or an
out-of-range value is one line naming the file, the key and what is allowed
(exit 2), never a traceback and never a silently different behaviour."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.helpers import init_vault, ok, one_line_error, run_tv


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-tier vault (two local directories) and its installation home."""
    tmp = tmp_path_factory.mktemp("cfg")
    home, vault = init_vault(tmp)
    ok(run_tv(home, "tier", "add", str(tmp / "second")))
    return home, vault


def _home_with(base: tuple[Path, Path], tmp: Path, change: Any) -> Path:
    home = tmp / "home"
    shutil.copytree(base[0], home)
    cfg = home / "config.toml"
    doc = tomllib.loads(cfg.read_text())
    change(doc)
    cfg.write_text(tomli_w.dumps(doc))
    return home


def _setting(key: str, value: Any) -> Any:
    return lambda doc: doc.setdefault("settings", {}).__setitem__(key, value)


def _expect_error(home: Path, *words: str) -> str:
    proc = run_tv(home, "snapshots")
    line = one_line_error(proc)
    assert proc.returncode == 2, line
    assert line.startswith("tiervault: error: "), line
    assert str(home / "config.toml") in line, line
    for w in words:
        assert w in line, line
    return line


BAD_SETTINGS = [
    ("retry_attempts", "ten", "whole number from 1 to 1000"),
    ("retry_attempts", 0, "whole number from 1 to 1000"),
    ("retry_attempts", 2.5, "whole number"),
    ("retry_attempts", True, "whole number"),
    ("retry_delay", "x", "number from 0 to 3600"),
    ("retry_delay", -1, "number from 0 to 3600"),
    ("wait_timeout", "soon", "number of at least 0"),
    ("wait_timeout", -5, "number of at least 0"),
    ("tier_unavailable_days", "x", "whole number from 1 to 36500"),
    ("tier_unavailable_days", 0, "whole number from 1 to 36500"),
    ("workers", "x", "whole number from 0 to 256"),
    ("workers", -1, "whole number from 0 to 256"),
    ("pack_size_mib", -1, "whole number from 1 to 128"),
    ("pack_size_mib", 4096, "whole number from 1 to 128"),
    ("compression_level", 99, "whole number from 1 to 22"),
    ("compression_level", "3", "whole number from 1 to 22"),
    ("read_only", "no", "true or false"),
    ("read_only", 0, "true or false"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_SETTINGS,
                         ids=[f"{k}={v!r}" for k, v, _ in BAD_SETTINGS])
def test_a_wrong_setting_is_one_line_naming_file_key_and_what_is_allowed(
        base: tuple[Path, Path], tmp_path: Path, key: str, value: Any, allowed: str) -> None:
    home = _home_with(base, tmp_path, _setting(key, value))
    _expect_error(home, f"settings.{key}", allowed)


GOOD_SETTINGS = [("retry_attempts", 3), ("retry_delay", 0.2), ("retry_delay", 1),
                 ("wait_timeout", 0), ("tier_unavailable_days", 30), ("workers", 0),
                 ("pack_size_mib", 16), ("compression_level", 19), ("read_only", False)]


@pytest.mark.parametrize(("key", "value"), GOOD_SETTINGS,
                         ids=[f"{k}={v!r}" for k, v in GOOD_SETTINGS])
def test_a_good_setting_is_accepted(base: tuple[Path, Path], tmp_path: Path, key: str,
                                    value: Any) -> None:
    home = _home_with(base, tmp_path, _setting(key, value))
    ok(run_tv(home, "snapshots"))


def test_read_only_as_a_string_does_not_make_a_restore_only_installation(
        base: tuple[Path, Path], tmp_path: Path) -> None:
    home = _home_with(base, tmp_path, _setting("read_only", "no"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    proc = run_tv(home, "backup", str(src))
    line = one_line_error(proc)
    assert proc.returncode == 2 and "settings.read_only" in line, line
    assert "restore-only" not in line


def _throttle(*rules: dict[str, Any]) -> Any:
    return lambda doc: doc.__setitem__("throttle", list(rules))


BAD_THROTTLE = [
    ({"tier": "7", "upload": "1MB"}, ["throttle[1].tier", '"7"', "from 1 to 2"]),
    ({"tier": 0, "upload": "1MB"}, ["throttle[1].tier", "from 1 to 2"]),
    ({"tier": "ftp://nobody@example.com/v", "upload": "1MB"}, ["throttle[1].tier"]),
    ({"upload": "1MB"}, ["throttle[1].tier", "is missing"]),
    ({"tier": "2", "upload": "fast"}, ["throttle[1].upload", '"fast"', "512KB"]),
    ({"tier": "2", "download": -3}, ["throttle[1].download"]),
    ({"tier": "2", "download": True}, ["throttle[1].download"]),
    ({"tier": "2", "uplaod": "1MB"}, ["throttle[1]", "uplaod"]),
    ({"tier": "2", "free_days": ["someday"]}, ["throttle[1].free_days", "mon"]),
    ({"tier": "2", "free_days": "sat"}, ["throttle[1].free_days"]),
    ({"tier": "2", "window": [{"start": "8am", "end": "18:00"}]},
     ["throttle[1].window[1].start", "HH:MM"]),
    ({"tier": "2", "window": [{"start": "08:00"}]}, ["throttle[1].window[1].end", "missing"]),
    ({"tier": "2", "window": [{"start": "08:00", "end": "18:00", "upload": "lots"}]},
     ["throttle[1].window[1].upload"]),
    ({"tier": "2", "window": [{"start": "08:00", "end": "18:00", "days": ["xyz"]}]},
     ["throttle[1].window[1].days"]),
]


@pytest.mark.parametrize(("rule", "words"), BAD_THROTTLE,
                         ids=[str(i) for i in range(len(BAD_THROTTLE))])
def test_a_wrong_throttle_rule_names_its_key(base: tuple[Path, Path], tmp_path: Path,
                                             rule: dict[str, Any], words: list[str]) -> None:
    home = _home_with(base, tmp_path, _throttle(rule))
    _expect_error(home, *words)


def test_two_rules_for_one_tier_are_refused(base: tuple[Path, Path], tmp_path: Path) -> None:
    home = _home_with(base, tmp_path, _throttle({"tier": "2", "upload": "1MB"},
                                                {"tier": 2, "download": "1MB"}))
    _expect_error(home, "throttle[2].tier", "throttle[1]")


def test_good_throttle_rules_are_accepted(base: tuple[Path, Path], tmp_path: Path) -> None:
    second = str(base[1].parent / "second")
    home = _home_with(base, tmp_path, _throttle(
        {"tier": "1", "upload": "2MB", "download": 0, "free_days": ["sat", "sunday"],
         "window": [{"days": ["mon"], "start": "08:00", "end": "18:00", "upload": "512KiB"}]},
        {"tier": second, "upload": 1000}))
    ok(run_tv(home, "snapshots"))


BAD_OTHER = [
    (lambda d: d.__setitem__("throtle", [{"tier": "1"}]), ["throtle", "known"]),
    (lambda d: d["vault"].__setitem__("tiers", "/one/dir"), ["vault.tiers"]),
    (lambda d: d.__setitem__("credentials", {"ftp://u@h/v": {"pasword": "x"}}),
     ['credentials."ftp://u@h/v".pasword', "password"]),
    (lambda d: d.__setitem__("credentials", {"ftp://u@h/v": {"password": 12}}),
     ['credentials."ftp://u@h/v".password', "string"]),
    (lambda d: d.__setitem__("daemon", {"probe_interval": "often"}),
     ["daemon.probe_interval", "number"]),
    (lambda d: d.__setitem__("daemon", {"timezone": "Mars/Olympus"}), ["daemon.timezone"]),
    (lambda d: d.__setitem__("daemon", {"notify": {"timeout": "x"}}), ["daemon.notify.timeout"]),
    (lambda d: d.__setitem__("sets", {"s1": {"paths": ["/x"], "one_file_system": "yes"}}),
     ["sets.s1.one_file_system", "true or false"]),
    (lambda d: d.__setitem__("sets", {"s1": {"paths": ["/x"],
                                             "schedules": [{"cron": "99 * * * *"}]}}),
     ["sets.s1.schedules[1]", "minute"]),
    (lambda d: d.__setitem__("sets", "home"), ["sets", "table"]),
]


@pytest.mark.parametrize(("change", "words"), BAD_OTHER,
                         ids=[str(i) for i in range(len(BAD_OTHER))])
def test_other_tables_are_checked_at_load(base: tuple[Path, Path], tmp_path: Path,
                                          change: Any, words: list[str]) -> None:
    home = _home_with(base, tmp_path, change)
    _expect_error(home, *words)


def test_tier_remove_keeps_the_throttle_rules_valid(tmp_path: Path) -> None:
    home, _ = init_vault(tmp_path)
    for name in ("second", "third"):
        ok(run_tv(home, "tier", "add", str(tmp_path / name)))
    cfg = home / "config.toml"
    doc = tomllib.loads(cfg.read_text())
    doc["throttle"] = [{"tier": "2", "upload": "1MB"}, {"tier": "3", "upload": "3MB"},
                       {"tier": 1, "download": "5MB"}]
    cfg.write_text(tomli_w.dumps(doc))
    ok(run_tv(home, "tier", "remove", str(tmp_path / "second")))
    ok(run_tv(home, "snapshots"))  # the file is still valid
    rules = tomllib.loads(cfg.read_text())["throttle"]
    # The removed tier's rule is gone; the third tier is now number 2 and keeps its limit.
    assert rules == [{"tier": "2", "upload": "3MB"}, {"tier": 1, "download": "5MB"}], rules
