"""The agent's durable parts on a real state database: the session outbox (in order,
none lost, none twice, across restarts) and the at-most-once command journal."""

from __future__ import annotations

import time
from pathlib import Path

from tiervault.daemon.agent.journal import RESTARTED, Journal
from tiervault.daemon.agent.reports import ABANDONED, Outbox
from tiervault.state.db import StateDB


def _job(db: StateDB, status: str = "success", **details: object) -> int:
    sid = db.start_session("job", {"set": "home"})
    db.end_session(sid, status, {"set": "home", "status": status, **details})
    return sid


def test_reports_go_out_in_order_and_survive_a_restart(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    first = _job(db, files_selected=3, bytes_selected=300, tiers_missed=["ftp://h/v"],
                 tiers_received=["/speed"])
    db.start_session("backup")          # the inner row of a job: not reported
    second = _job(db, "failed", error="no tier came online")
    box = Outbox(db, "inst1", time.time() - 3600)
    reports, cursor = box.pending()
    assert [r.session_id for r in reports] == [f"{first}@inst1", f"{second}@inst1"]
    assert reports[0].flags == "L" and reports[0].bytes_selected == 300
    assert reports[0].tiers_received == ["/speed"]
    assert reports[1].status == "failed"
    assert reports[1].errors[0].message == "no tier came online"
    # The console is away: nothing is acknowledged, the same reports wait.
    db.close()
    db = StateDB(tmp_path)
    box = Outbox(db, "inst1", time.time() - 3600)
    again, _ = box.pending()
    assert [r.session_id for r in again] == [r.session_id for r in reports]
    box.advance(cursor)
    db.close()
    db = StateDB(tmp_path)
    box = Outbox(db, "inst1", time.time() - 3600)
    assert box.pending()[0] == []       # none twice
    third = _job(db)
    assert [r.session_id for r in box.pending()[0]] == [f"{third}@inst1"]


def test_replay_waits_behind_a_running_session(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    box = Outbox(db, "i", time.time() - 1)
    running = db.start_session("job", {"set": "home"})
    later = _job(db)
    assert box.pending()[0] == []       # nothing after a session still running
    db.end_session(running, "success", {"set": "home"})
    assert [r.session_id for r in box.pending()[0]] == [f"{running}@i", f"{later}@i"]


def test_a_session_left_running_by_a_dead_daemon_is_reported_failed(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    sid = db.start_session("job", {"set": "home"})
    box = Outbox(db, "i", time.time() + 1)   # this daemon started after it
    (rep,), _ = box.pending()
    assert rep.session_id == f"{sid}@i" and rep.status == "failed"
    assert rep.errors[0].message == ABANDONED


def test_a_command_runs_at_most_once_even_across_a_crash(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    j = Journal(db)
    assert j.begin("c1", "backup") is True
    assert j.begin("c1", "backup") is False       # delivered again: not run again
    db.close()                                     # the daemon dies while c1 runs
    db = StateDB(tmp_path)
    j = Journal(db)
    assert j.begin("c1", "backup") is False
    assert j.recover() == ["c1"]
    (cid, entry), = j.unsent()
    assert cid == "c1" and entry["state"] == "failed"
    assert entry["result"] == {"error": RESTARTED}
    j.acked("c1")
    assert j.unsent() == []
    assert j.begin("c1", "backup") is False


def test_an_outcome_is_kept_until_acknowledged(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    j = Journal(db)
    assert j.begin("c2", "sync")
    j.finish("c2", "succeeded", {"message": "ok"}, "7@i")
    db.close()                                     # killed before the console acked it
    db = StateDB(tmp_path)
    j = Journal(db)
    assert j.recover() == []                       # finished: not reported as a crash
    assert [(c, e["state"], e["session_id"]) for c, e in j.unsent()] == \
        [("c2", "succeeded", "7@i")]
    assert j.begin("c2", "sync") is False


def test_a_job_queued_for_a_command_carries_its_id(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    j = Journal(db)
    j.link_request("req-1", "c3")
    sid = db.start_session("job", {"set": "home", "request_id": "req-1"})
    db.end_session(sid, "success", {"set": "home", "request_id": "req-1"})
    (rep,), _ = Outbox(db, "i", 0, j).pending()
    assert rep.command_id == "c3"
