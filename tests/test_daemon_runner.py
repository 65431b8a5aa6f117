"""Jobs through the service layer on local tiers: scripts, history, tiers, retention;
notifications; the control API and its token. In-process and fast (cheap KDF).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tiervault.daemon.clock import SystemClock
from tiervault.daemon.notify import SESSION_FAILED, Notifier
from tiervault.daemon.retention import apply_retention
from tiervault.daemon.runner import IdleRound, JobRunner
from tiervault.daemon.scheduler import MANUAL, SCHEDULED, CancelToken, Job
from tiervault.daemon.scripts import run_script
from tiervault.daemon.server import CONTROL_FILE, ApiError, ControlClient, ControlServer
from tiervault.daemon.sets import NotifySettings, parse_set
from tiervault.engine.progress import Progress
from tiervault.errors import TierVaultError, UsageError
from tiervault.service import tierops
from tiervault.service.installation import Installation, RunOptions
from tiervault.service.session import VaultSession
from tiervault.vault.crypto import KdfParams

PW = "daemon runner passphrase"


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.a, self.b = tmp / "speed", tmp / "server"
        self.src = tmp / "src"
        self.src.mkdir()
        for i in range(5):
            (self.src / f"f{i}.txt").write_text(f"file {i}\n" * 100)
        opts = RunOptions(1, 0.01, 0, dict(os.environ))
        tierops.init_vault(self.home, [str(self.a), str(self.b)], PW, opts, Progress(),
                           kdf=KdfParams(n=2**10))
        self.inst = Installation.load(self.home, RunOptions(1, 0.01, 0, dict(os.environ)))
        self.inst.lock()
        self.events: list[dict[str, Any]] = []
        self.notifier = Notifier(NotifySettings(), sent=self.events.append)
        self.runner = JobRunner(self.inst, PW, self.notifier)

    def job(self, doc: dict[str, Any] | None = None, **sched: Any) -> tuple[Job, Any]:
        d = {"paths": [str(self.src)], **(doc or {})}
        if sched:
            d["schedules"] = [{"cron": "@daily", **sched}]
        bs = parse_set("docs", d)
        s = bs.schedules[0] if bs.schedules else None
        return Job("docs", SCHEDULED if s else MANUAL, datetime.now(UTC), 1 if s else None,
                   s), bs

    def run(self, doc: dict[str, Any] | None = None, token: CancelToken | None = None,
            **sched: Any) -> dict[str, Any]:
        job, bs = self.job(doc, **sched)
        return self.runner.run(job, bs, token or CancelToken(SystemClock().now))

    def snapshots(self) -> list[Any]:
        sess = VaultSession(self.inst, PW, Progress(), load_index=False)
        try:
            return sess.repo.snapshots()
        finally:
            sess.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.inst.close()


def test_job_records_history_scripts_and_tiers(env: Env) -> None:
    out = env.tmp / "script.out"
    res = env.run(pre_script=f"echo pre $TIERVAULT_SESSION_ID $TIERVAULT_SET >> {out}; "
                             "echo to-the-log",
                  post_script=f"echo post $TIERVAULT_RESULT $TIERVAULT_SNAPSHOT_ID >> {out}")
    assert res["status"] == "success", res
    sid = res["session_id"]
    assert out.read_text().splitlines() == [f"pre {sid} docs",
                                            f"post success {res['snapshot_id']}"]
    row = next(s for s in env.inst.db.sessions() if s["id"] == sid)
    d = row["details"]
    assert row["kind"] == "job" and row["status"] == "success" and row["ended"]
    assert d["files_selected"] == 5 and d["bytes_selected"] > 0 and d["bytes_sent"] > 0
    assert d["tiers_received"] == [str(env.a), str(env.b)] and d["tiers_missed"] == []
    assert "pre-script| to-the-log" in d["log"]
    assert d["scripts"]["pre"]["exit_code"] == 0


def test_job_with_server_offline_completes_and_says_which_tier_missed_it(env: Env) -> None:
    env.b.rename(env.tmp / "server.off")
    res = env.run()
    assert res["status"] == "success", res
    assert res["tiers_received"] == [str(env.a)]
    assert res["tiers_missed"] == [str(env.b)]
    # back: the idle round brings the server level
    (env.tmp / "server.off").rename(env.b)
    idle = IdleRound(env.inst, env.notifier)
    out = idle.run()
    assert out["error"] is None, out
    assert [r["completed"] for r in out["synced"]] == [True]
    assert out["synced"][0]["bytes_copied"] > 0
    assert {t["state"] for t in idle.tiers} == {"online"}
    sync_row = next(s for s in env.inst.db.sessions() if s["kind"] == "sync")
    assert sync_row["status"] == "success"


def test_failing_pre_script_aborts_or_continues(env: Env) -> None:
    res = env.run(pre_script="echo broken; exit 3", post_script="echo $TIERVAULT_RESULT")
    assert res["status"] == "failed"
    assert "pre-script failed" in res["error"] and "exited with 3" in res["error"]
    assert "pre-script| broken" in res["log"] and "post-script| failed" in res["log"]
    assert "snapshot_id" not in res
    assert env.events and env.events[-1]["event"] == SESSION_FAILED
    res = env.run(pre_script="exit 3", on_pre_failure="continue")
    assert res["status"] == "success" and res["snapshot_id"]
    assert len(env.snapshots()) == 1


def test_script_timeout_kills_the_script(tmp_path: Path) -> None:
    res = run_script("echo started; sleep 30; echo never", 0.3, {"X": "1"})
    assert res.timed_out and not res.ok and res.exit_code is None
    assert res.output.strip() == "started"
    assert res.duration < 5
    res = run_script("echo $X", 5, {"X": "hello"})
    assert res.ok and res.output == "hello\n"


def test_cancelled_job_is_stopped_and_writes_no_snapshot(env: Env) -> None:
    tok = CancelToken(SystemClock().now)
    tok.cancel("cancelled by the user")
    res = env.run(token=tok)
    assert res["status"] == "cancelled" and "cancelled by the user" in res["error"]
    # cancelled in the middle (after the first file): no snapshot references anything
    for i in range(40):
        (env.src / f"more{i}.bin").write_bytes(os.urandom(20_000))
    tok = CancelToken(SystemClock().now)
    calls = {"n": 0}
    real = tok.cancelled

    def cancel_after_some() -> bool:
        calls["n"] += 1
        if calls["n"] == 5:
            tok.cancel("the daemon is shutting down")
        return real()

    tok.cancelled = cancel_after_some  # type: ignore[method-assign]
    res = env.run(token=tok)
    assert res["status"] == "cancelled", res
    assert "safe point" in res["error"]
    assert env.snapshots() == []
    res = env.run()
    assert res["status"] == "success"


def test_retention_applies_to_the_sets_own_snapshots_only(env: Env) -> None:
    other = env.tmp / "other"
    other.mkdir()
    (other / "x").write_text("x")
    job, bs_other = env.job({"paths": [str(other)]})
    for _ in range(3):
        assert env.runner.run(job, bs_other, CancelToken(SystemClock().now))["status"] == \
            "success"
    for _ in range(3):
        res = env.run({"retention": {"keep_last": 2}})
        assert res["status"] == "success", res
    assert res["retention"]["removed"] and len(res["retention"]["kept"]) == 2
    snaps = env.snapshots()
    assert sorted(len([s for s in snaps if s.paths == [str(p)]]) for p in (env.src, other)) \
        == [2, 3]
    # directly: nothing configured -> nothing done
    sess = VaultSession(env.inst, PW, Progress())
    try:
        assert apply_retention(sess, bs_other) is None
    finally:
        sess.close()


def test_notification_command_gets_env_and_json(tmp_path: Path) -> None:
    out = tmp_path / "notified"
    n = Notifier(NotifySettings(command=f"cat > {out}; echo \"$TIERVAULT_EVENT "
                                        f"$TIERVAULT_SET\" >> {out}"))
    n.notify(SESSION_FAILED, "backup of set docs failed: boom", set="docs", session_id=7)
    n.wait()
    body, tail = out.read_text().rsplit("}", 1)
    doc = json.loads(body + "}")
    assert doc["event"] == SESSION_FAILED and doc["session_id"] == 7
    assert tail.strip() == "session_failed docs"


def test_webhook_receives_the_event(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[Any] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.handle_request, daemon=True)
    t.start()
    n = Notifier(NotifySettings(webhook=f"http://127.0.0.1:{srv.server_address[1]}/hook"))
    n.notify("tier_offline", "tier x has been unreachable", tier="x")
    n.wait()
    t.join(5)
    srv.server_close()
    assert got and got[0]["event"] == "tier_offline" and got[0]["tier"] == "x"


class FakeController:
    def __init__(self) -> None:
        self.runs: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"state": "idle"}

    def sessions(self, limit: int) -> list[dict[str, Any]]:
        return [{"id": i} for i in range(limit)]

    def request_run(self, set_name: str) -> dict[str, Any]:
        if set_name != "docs":
            raise ApiError(404, f"no set named {set_name!r}")
        self.runs.append(set_name)
        return {"queued": True, "request_id": "r1"}

    def cancel(self, drop_queue: bool) -> dict[str, Any]:
        return {"cancelled": None, "dropped": [] if not drop_queue else ["x"]}


def test_control_api_needs_the_token_and_the_file_is_private(tmp_path: Path) -> None:
    client = ControlClient(tmp_path)
    with pytest.raises(UsageError, match="no daemon is running"):
        client.status()
    ctl = FakeController()
    srv = ControlServer(tmp_path, ctl)
    srv.start()
    try:
        path = tmp_path / CONTROL_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert client.status() == {"state": "idle"}
        assert len(client.sessions(3)) == 3
        assert client.run("docs")["queued"] and ctl.runs == ["docs"]
        with pytest.raises(UsageError, match="no set named 'nope'"):
            client.run("nope")
        assert client.cancel(True)["dropped"] == ["x"]
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/status")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=5)
        assert ei.value.code == 401
        req.add_header("Authorization", "Bearer wrong")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req, timeout=5)
        assert ei.value.code == 401
    finally:
        srv.close()
    assert not (tmp_path / CONTROL_FILE).exists()
    # a stale control file (daemon killed): a clear error, not a traceback
    (tmp_path / CONTROL_FILE).write_text(json.dumps({"port": srv.port, "token": "t"}))
    with pytest.raises(TierVaultError, match="does not answer"):
        client.status()


def test_cancel_kills_a_running_pre_script(env: Env) -> None:
    tok = CancelToken(SystemClock().now)
    threading.Timer(0.3, tok.cancel, args=("cancelled by the user",)).start()
    res = env.run(token=tok, pre_script="sleep 30", post_script="echo $TIERVAULT_RESULT")
    assert res["status"] == "cancelled" and "pre-script" in res["error"]
    assert res["duration_s"] < 5
    assert "post-script| cancelled" in res["log"]


def test_gfs_retention_when_the_engine_has_it(env: Env) -> None:
    from tiervault.engine import policy as policy_mod
    from tiervault.service import ops

    if not hasattr(policy_mod, "GfsPolicy") or not hasattr(ops, "apply_retention"):
        pytest.skip("grandfather-father-son retention is not in the engine yet")
    for _ in range(2):
        res = env.run({"retention": {"all_days": 0, "daily_days": 1, "weekly_weeks": 0,
                                     "monthly_months": 0, "yearly_years": 0}})
        assert res["status"] == "success", res
    # today's last session is kept (daily), the earlier one of today is not
    assert len(res["retention"]["kept"]) == 1 and len(res["retention"]["removed"]) == 1
    assert len(env.snapshots()) == 1
