"""Issue 10's first "Done when": a real console and three real daemons.

Each daemon has its own home, a speed vault and a real FTP server tier; all
enrol with one token whose profile gives them a set scheduled every few
seconds. Then: three green devices with their tiers and sizes; the FTP server
killed (a session flagged L, the server tier offline) and back (synchronizing,
then synchronized); a daemon stopped (offline after 5 intervals, a "backup now"
queued, delivered when it returns, its session carrying the command id); the
console's clock moved (orange at 24 h, red at 48 h); the console SIGKILLed while
devices back up (every session appears once after it restarts); a device
SIGKILLed after a command ran and before the console heard of it (not run again).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_console import ConsoleProc
from tests.daemonkit import DaemonProc
from tests.helpers import describe, ok, run_tv
from tests.servers.ftp_server import FtpServerProcess

pytest.importorskip("uvicorn")
INTERVAL = 1           # seconds between check-ins (offline after 5)
FTP_PASSWORD = "Ftp-fleet-e2e-Qx42"


class Fleet:
    def __init__(self, tmp: Path, database_url: str | None) -> None:
        self.tmp = tmp
        self.src = tmp / "src"
        self.src.mkdir()
        for i in range(5):
            (self.src / f"doc{i}.txt").write_text(f"document {i}\n" * (300 * (i + 1)))
        self.ftp = FtpServerProcess(tmp / "ftp-root", user="tv", password=FTP_PASSWORD)
        profile = {"sets": {"docs": {"paths": [str(self.src)],
                                     "schedules": [{"cron": "*/6 * * * * *"}]}},
                   # slow enough uploads to the server that its synchronization is seen
                   "throttle": [{"tier": 2, "upload": "400KB"}]}
        self.console = ConsoleProc(tmp / "console", INTERVAL, profile, database_url)
        self.homes = [tmp / f"home{i}" for i in range(3)]
        self.daemons = [DaemonProc(self._dir(f"d{i}"), h) for i, h in enumerate(self.homes)]
        self.ids: list[str] = []

    def _dir(self, name: str) -> Path:
        p = self.tmp / name
        p.mkdir()
        return p

    def logs(self) -> str:
        try:
            devs = json.dumps(list(self.devices().values()), indent=1)[-6000:]
        except Exception as e:  # the console may be the thing that is down
            devs = repr(e)
        return "\n".join([f"--- devices ---\n{devs}", f"--- console ---\n{self.console.log()}"]
                         + [f"--- daemon {i} ---\n{d.log()[-3000:]}"
                            for i, d in enumerate(self.daemons)])

    def wait(self, cond: Callable[[], Any], timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > end:
                pytest.fail(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.25)

    def devices(self) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in self.console.api("GET", "/devices?per_page=100")}

    def sessions(self, dev: str) -> list[dict[str, Any]]:
        return self.console.api("GET", f"/devices/{dev}/sessions?limit=1000")  # type: ignore

    def local_reported(self, i: int) -> set[str]:
        """Session ids the device has ended that the console must hold."""
        db = sqlite3.connect(self.homes[i] / "state.db")
        try:
            inst = _installation_id(self.homes[i])
            rows = db.execute("SELECT id FROM sessions WHERE kind IN ('job', 'sync', "
                              "'command') AND ended IS NOT NULL").fetchall()
        finally:
            db.close()
        return {f"{r[0]}@{inst}" for r in rows}


def _installation_id(home: Path) -> str:
    import tomllib

    return str(tomllib.loads((home / "config.toml").read_text())["installation_id"])


@pytest.fixture(name="fleet")
def fleet_fixture(tmp_path: Path,
                  new_database_url: Callable[[], str | None]) -> Iterator[Fleet]:
    """SQLite, or a fresh PostgreSQL database per test (tests/console/databases.py)."""
    f = Fleet(tmp_path, new_database_url())
    f.ftp.start()
    f.console.start()
    try:
        yield f
    finally:
        for d in f.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        f.console.kill()
        f.ftp.kill()


def _tier(dev: dict[str, Any], role: str) -> dict[str, Any]:
    return next(t for t in dev["tiers"] if t.get("role") == role)


def test_fleet_end_to_end(fleet: Fleet) -> None:
    f = fleet
    boot = f.console.boot()
    for i, home in enumerate(f.homes):
        ok(run_tv(home, "init", f.tmp / f"speed{i}", f"{f.ftp.url}/vault{i}"))
        out = json.loads(ok(run_tv(home, "--json", "enrol", f.console.url, "--token",
                                   boot["enrol"], "--fingerprint", f.console.fingerprint,
                                   "--name", f"laptop-{i}")).stdout)
        assert out["customer"] == "acme" and out["sets_added"] == ["docs"]
        assert out["throttle_applied"] is True
        assert (home / "console.credential").stat().st_mode & 0o777 == 0o600
        f.ids.append(out["device_id"])
        f.daemons[i].start()

    # 1. one scheduled backup each: three green devices with both tiers and sizes
    def all_green() -> dict[str, dict[str, Any]] | None:
        devs = f.devices()
        good = [d for d in devs.values() if d["colour"] == "green" and d["online"]
                and d["selected_bytes"] and len(d["tiers"]) == 2
                and all(t["state"] == "online" for t in d["tiers"])]
        return devs if len(good) == 3 else None
    devs = f.wait(all_green, 120, "three green devices")
    # ... and `tiervault console devices --json` shows the same objects
    f.wait(lambda: {d["id"]: d["colour"] for d in f.console.devices_cli()} ==
           dict.fromkeys(f.ids, "green"), 60, "console devices --json: three green")
    for dev in devs.values():
        assert dev["customer"] == "acme" and dev["site"] == "berlin"
        assert dev["last_success"] and dev["last_status"] in ("success", "warnings")
        assert FTP_PASSWORD not in json.dumps(dev)
        assert _tier(dev, "server")["url"].startswith("ftp://tv@127.0.0.1")
        assert _tier(dev, "speed-vault")["used_bytes"] > 0
        assert isinstance(_tier(dev, "server")["revision"], int)
        assert dev["selected_bytes"] == sum(p.stat().st_size for p in f.src.iterdir())

    # 2. the FTP server dies: the next session is flagged L, the server tier offline
    first = f.ids[0]
    f.ftp.kill()
    (f.src / "big.bin").write_bytes(os.urandom(3 << 20))
    # (one that holds the big file: the server must then receive it by synchronization)
    f.wait(lambda: any("L" in (s.get("flags") or "") and (s.get("bytes_selected") or 0)
                       > 3 << 20 for s in f.sessions(first)), 120,
           "a session flagged L holding the new file")
    f.wait(lambda: _tier(f.devices()[first], "server")["state"] == "offline", 60,
           "the server tier shown offline")

    # 3. it returns: synchronizing, then synchronized
    f.ftp.start()
    seen: list[str] = []

    def synced() -> bool:
        st = _tier(f.devices()[first], "server")["state"]
        if not seen or seen[-1] != st:
            seen.append(st)
        return st == "online" and len(seen) > 1
    f.wait(synced, 120, "the server tier synchronized again")
    assert any(s in ("syncing", "unsynchronized") for s in seen), seen

    # 4. a daemon stops: offline after 5 intervals; a backup now waits queued
    third = f.ids[2]
    f.daemons[2].stop()
    f.wait(lambda: not f.devices()[third]["online"], 60, "the device shown offline")
    (cmd,) = f.console.api("POST", "/commands", {"devices": [third], "type": "backup",
                                                 "params": {"set": "docs"}})
    for _ in range(3 * INTERVAL * 4):
        assert f.console.api("GET", f"/commands/{cmd['id']}")["state"] == "queued"
        time.sleep(0.25)
    f.daemons[2].start()
    f.wait(lambda: f.console.api("GET", f"/commands/{cmd['id']}")["state"] != "queued", 30,
           "the command delivered")
    done = f.wait(lambda: (c := f.console.api("GET", f"/commands/{cmd['id']}"))["state"]
                  in ("succeeded", "failed") and c, 120, "the command's result")
    assert done["state"] == "succeeded", done
    assert done["session_id"]
    f.wait(lambda: [s for s in f.sessions(third) if s.get("command_id") == cmd["id"]], 30,
           "the command's session on the console")

    # 5. the console's clock moves: orange at 24 h, red at 48 h
    f.console.move_clock(25)
    f.wait(lambda: {d["colour"] for d in f.devices().values()} == {"orange"}, 60,
           "three orange devices")
    f.console.move_clock(49)
    f.wait(lambda: {d["colour"] for d in f.devices().values()} == {"red"}, 60,
           "three red devices")
    f.console.move_clock(0)


def test_console_and_device_crashes_lose_nothing_and_repeat_nothing(fleet: Fleet) -> None:
    f = fleet
    boot = f.console.boot()
    for i, home in enumerate(f.homes[:2]):
        ok(run_tv(home, "init", f.tmp / f"speed{i}", f"{f.ftp.url}/vault{i}"))
        out = json.loads(ok(run_tv(home, "--json", "enrol", f.console.url, "--token",
                                   boot["enrol"], "--fingerprint", f.console.fingerprint)
                            ).stdout)
        f.ids.append(out["device_id"])
        f.daemons[i].start()
    f.wait(lambda: all(f.sessions(d) for d in f.ids), 120, "a session of each device")

    # The console is SIGKILLed while the devices keep backing up.
    f.console.kill()
    before = [f.local_reported(i) for i in range(2)]
    f.wait(lambda: all(len(f.local_reported(i)) >= len(before[i]) + 2 for i in range(2)), 120,
           "two more sessions on each device")
    f.console.start()
    for i, dev in enumerate(f.ids):
        def caught_up(i: int = i, dev: str = dev) -> bool:
            held = [s["session_id"] for s in f.sessions(dev)]
            return set(held) >= f.local_reported(i)
        f.wait(caught_up, 60, f"device {i}'s sessions on the console")
        held = [s["session_id"] for s in f.sessions(dev)]
        assert len(held) == len(set(held)), "a session counted twice"

    # A command runs; the console is away when the device wants to say so; the device is
    # SIGKILLed before it could: after both return, the command has run exactly once.
    dev = f.ids[1]
    (cmd,) = f.console.api("POST", "/commands", {"devices": [dev], "type": "backup",
                                                 "params": {"set": "docs"}})
    f.wait(lambda: f.console.api("GET", f"/commands/{cmd['id']}")["state"] == "running", 60,
           "the command running")
    f.console.kill()
    d = f.daemons[1]
    d.wait_for(lambda: _journal_state(f.homes[1], cmd["id"]) not in (None, "started"), 120,
               "the command to end on the device")
    assert d.proc is not None
    d.proc.kill()
    d.proc.wait()
    (f.homes[1] / "daemon.json").unlink(missing_ok=True)
    f.console.start()
    d.start()
    done = f.wait(lambda: (c := f.console.api("GET", f"/commands/{cmd['id']}"))["state"]
                  in ("succeeded", "failed") and c, 60, "the command's result")
    assert done["state"] == "succeeded", done
    f.wait(lambda: [s for s in f.sessions(dev) if s.get("command_id") == cmd["id"]], 60,
           "the command's session")
    time.sleep(3 * INTERVAL)   # long enough for a wrong second run to have started
    ran = [s for s in f.sessions(dev) if s.get("command_id") == cmd["id"]]
    assert len(ran) == 1, ran
    assert _journal_state(f.homes[1], cmd["id"]) == "succeeded"
    p = run_tv(f.homes[1], "--json", "status", "--sessions", "0")
    assert p.returncode == 0, describe(p)


def _journal_state(home: Path, cid: str) -> str | None:
    db = sqlite3.connect(home / "state.db")
    try:
        row = db.execute("SELECT v FROM kv WHERE k = 'console.commands'").fetchone()
    finally:
        db.close()
    doc = json.loads(row[0]) if row else {}
    return doc.get(cid, {}).get("state")
