"""The daemon's side of handing the lock to a CLI command (fake clock, no threads).

A handed-over command waits behind the running backup, is granted the lock
(``lend``) when its turn comes, holds off scheduled backups while it has it,
and gives it back (``reclaim``) when it reports its end or its process dies;
each lease is a ``command`` session. The end-to-end test with real processes
is ``test_daemon_handoff.py``.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from tests.test_daemon_schedule import FakeIdle, FakeRunner, make_daemon, utc
from tiervault.daemon.clock import FakeClock
from tiervault.daemon.main import Daemon
from tiervault.daemon.sets import parse_set


class Rows:
    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}

    def start_session(self, kind: str, details: dict[str, Any] | None = None) -> int:
        sid = len(self.rows) + 1
        self.rows[sid] = {"kind": kind, "status": "running", "details": details}
        return sid

    def end_session(self, sid: int, status: str, details: dict[str, Any]) -> None:
        self.rows[sid].update(status=status, details=details)


def _daemon() -> tuple[Daemon, FakeClock, FakeRunner, list[str], set[int], Rows]:
    clock = FakeClock(utc(2024, 3, 4, 9, 0))
    sets = {"home": parse_set("home", {"paths": ["/home"],
                                       "schedules": [{"cron": "30 9 * * *"}]})}
    runner = FakeRunner(clock, duration=600)
    d = make_daemon(clock, sets, runner, FakeIdle(), tz=ZoneInfo("UTC"))
    calls: list[str] = []
    alive = {101, 102}
    rows = Rows()
    d.lend = lambda: calls.append("lend")
    d.reclaim = lambda: calls.append("reclaim") is None
    d.alive = lambda pid: pid in alive
    d.history = rows
    return d, clock, runner, calls, alive, rows


def test_a_command_waits_for_the_running_backup_then_holds_the_lock() -> None:
    d, clock, runner, calls, _alive, rows = _daemon()
    d.request_run("home")
    req = d.request_handoff("forget --keep-last 1", 101)
    assert req["state"] == "queued" and req["position"] == 2
    d.tick()  # the backup runs to its end (inline); the command is next
    assert runner.runs and calls == []
    d.tick()
    assert calls == ["lend"] and d.handoff_state(req["request_id"])["state"] == "granted"
    assert d.status()["state"] == "command"
    assert d.status()["running"]["command"] == "forget --keep-last 1"
    clock.advance(1500)  # the 09:30 schedule falls due while the lock is lent: it waits
    d.tick()
    assert len(runner.runs) == 1 and [j.set_name for j in d.queue] == ["home"]
    d.handoff_done(req["request_id"], 0)
    d.tick()
    assert calls == ["lend", "reclaim"]
    assert d.handoff_state(req["request_id"]) == {"state": "ended", "status": "success",
                                                   "exit_code": 0}
    (row,) = [r for r in rows.rows.values() if r["kind"] == "command"]
    assert row["status"] == "success" and row["details"]["exit_code"] == 0
    d.tick()  # and the scheduled backup runs after it
    assert len(runner.runs) == 2


def test_a_dead_command_gives_the_lock_back_and_dead_waiters_leave() -> None:
    d, _clock, _runner, calls, alive, rows = _daemon()
    a = d.request_handoff("prune", 101)
    b = d.request_handoff("backup /x", 102)
    d.tick()
    assert calls == ["lend"] and d.handoff_state(a["request_id"])["state"] == "granted"
    alive.discard(101)
    alive.discard(102)
    d.tick()
    assert calls == ["lend", "reclaim"] and not d.queue and d.lease is None
    assert rows.rows[1]["status"] == "failed"
    assert rows.rows[1]["details"]["error"] == "its process ended without reporting"
    assert d.handoff_state(a["request_id"])["state"] == "ended"
    assert len(rows.rows) == 1, "the dead waiter never got the lock"
    # Ctrl-C while waiting: the command leaves the queue.
    alive.add(103)
    d.request_run("home")
    c = d.request_handoff("forget", 103)
    d.handoff_done(c["request_id"], None, cancelled=True)
    assert [j.set_name for j in d.queue] == ["home"]
    del b
