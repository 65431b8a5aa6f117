"""The lost-speed-vault deadlock (issue: nothing lost): newest writes only on
the speed vault, the speed vault destroyed; ``tier lost`` (and the automatic
give-up after ``tier_unavailable_days``) lets backups resume on the server and
the lost snapshots are reported."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TV = str(Path(sys.executable).parent / "tiervault")


def tv(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TIERVAULT_PASSWORD="pw")
    p = subprocess.run([TV, "--home", str(home), "--retry-attempts", "1", "--retry-delay", "0.05",
                        *args], env=env, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    assert "Traceback" not in p.stderr
    return p


@pytest.fixture
def deadlock(tmp_path: Path) -> tuple[Path, Path, Path, Path, str]:
    """Speed vault A holds a snapshot the server B never got; A is destroyed."""
    home, a, b, src = tmp_path / "home", tmp_path / "A", tmp_path / "B", tmp_path / "src"
    src.mkdir()
    (src / "old.txt").write_text("old")
    tv(home, "init", str(a), str(b))
    tv(home, "backup", str(src))
    b.rename(tmp_path / "B.off")
    (src / "newest.txt").write_bytes(os.urandom(200_000))
    newest = json.loads(tv(home, "--json", "backup", str(src), "--no-sync").stdout)
    (tmp_path / "B.off").rename(b)
    shutil.rmtree(a)  # the speed vault dies before the server was synchronized
    return home, a, b, src, newest["snapshot_id"]


def test_writes_wait_until_the_dead_tier_is_given_up(deadlock: tuple) -> None:
    home, a, b, src, newest = deadlock
    rows = json.loads(tv(home, "tiers", "--json").stdout)
    assert [r["state"] for r in rows] == ["offline", "unsynchronized"]
    # Without giving A up, every write waits: the server is behind.
    p = tv(home, "backup", str(src), "--wait-timeout", "1", check=False)
    assert p.returncode == 5
    dry = json.loads(tv(home, "--json", "tier", "lost", str(a), "--dry-run").stdout)
    assert [s["id"] for s in dry["lost_snapshots"]] == [newest]
    assert json.loads(tv(home, "tiers", "--json").stdout)[1]["state"] == "unsynchronized"
    res = json.loads(tv(home, "--json", "tier", "lost", str(a)).stdout)
    assert res["authoritative_tier"] == str(b)
    assert [s["id"] for s in res["lost_snapshots"]] == [newest]
    # Writes resume on the server; the data of the lost snapshot is uploaded again.
    out = json.loads(tv(home, "--json", "backup", str(src)).stdout)
    rows = json.loads(tv(home, "tiers", "--json").stdout)
    assert rows[1]["state"] == "online" and rows[1]["revision"] == rows[1]["max_revision"]
    ids = [s["id"] for s in json.loads(tv(home, "snapshots", "--json").stdout)]
    assert newest not in ids and out["snapshot_id"] in ids
    target = home.parent / "restored"
    tv(home, "restore", "latest", str(target))
    for f in ("old.txt", "newest.txt"):
        assert (target / str(src).lstrip("/") / f).read_bytes() == (src / f).read_bytes()
    tv(home, "check", "--read-data")


def test_a_replaced_speed_vault_is_refilled(deadlock: tuple) -> None:
    home, a, _b, src, _ = deadlock
    tv(home, "tier", "lost", str(a))
    tv(home, "backup", str(src))
    a.mkdir()  # a new, empty disk mounted where the old one was
    tv(home, "sync")
    rows = json.loads(tv(home, "tiers", "--json").stdout)
    assert [r["state"] for r in rows] == ["online", "online"]
    assert rows[0]["revision"] == rows[1]["revision"]


def test_given_up_automatically_after_the_limit(deadlock: tuple) -> None:
    home, a, _b, src, newest = deadlock
    tv(home, "tiers")  # records when A was first seen offline
    db = sqlite3.connect(home / "state.db")
    db.execute("UPDATE tiers SET first_offline = ? WHERE url = ?",
               (time.time() - 3 * 86400, str(a)))
    db.commit()
    p = tv(home, "tiers")
    assert "unreachable for 3 day(s)" in p.stderr and "given up after 14 days" in p.stderr
    db.execute("UPDATE tiers SET first_offline = ? WHERE url = ?",
               (time.time() - 15 * 86400, str(a)))
    db.commit()
    db.close()
    p = tv(home, "backup", str(src))
    assert "given up" in p.stderr and newest[:8] in p.stderr and "is lost" in p.stderr
    rows = json.loads(tv(home, "tiers", "--json").stdout)
    assert rows[0]["lost"] and rows[1]["state"] == "online"
