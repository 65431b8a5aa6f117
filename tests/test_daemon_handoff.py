"""Issue 8 item 17: write commands typed while the daemon runs are handed over to it.

A real daemon process holds the installation lock. ``backup PATH``,
``forget --keep-last 1`` and ``prune --dry-run`` typed beside it succeed, with
the same output, ``--json`` and exit codes as the same commands run directly
on an identical installation without a daemon. A command typed while the
daemon runs a backup waits its turn (and says so); a dry run does not wait;
Ctrl-C while waiting takes a command out of the queue; ``cancel`` ends the
daemon's backup and the waiting command runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.daemonkit import DaemonProc, daemon_fixture, normalized  # noqa: F401 - the daemon_proc fixture
from tests.helpers import describe, init_vault, ok, run_tv, tv_env


def _sources(tmp: Path) -> tuple[Path, Path]:
    src, other = tmp / "src", tmp / "other"
    for d, n in ((src, 6), (other, 3)):
        d.mkdir()
        for i in range(n):
            (d / f"f{i}.txt").write_text(f"{d.name} file {i}\n" * (500 * (i + 1)))
    return src, other


def test_write_commands_beside_a_running_daemon_match_direct_runs(
        tmp_path: Path, daemon_proc: Callable[[Path], DaemonProc]) -> None:
    src, other = _sources(tmp_path)
    direct, _ = init_vault(tmp_path, "direct")
    handed, _ = init_vault(tmp_path, "handed")
    for home in (direct, handed):
        ok(run_tv(home, "backup", src))
        ok(run_tv(home, "backup", src))
    ok(run_tv(handed, "set", "add", "docs", src))
    d = daemon_proc(handed).start()

    commands: list[tuple[str, ...]] = [
        ("backup", str(other)),
        ("--json", "backup", str(other)),
        ("forget", "--keep-last", "1"),
        ("prune", "--dry-run"),
        ("--json", "prune", "--dry-run"),
        ("forget", "--keep-last", "1", "--dry-run"),
        ("--json", "prune"),
        ("sync",),
        ("backup", str(tmp_path / "no-such-dir")),  # an error: same code, same one line
        ("forget",),                                  # a usage error
    ]
    write_codes = []
    for args in commands:
        a = run_tv(direct, *args)
        if "--dry-run" not in args:
            write_codes.append(a.returncode)
        b = run_tv(handed, *args)
        assert "Traceback" not in a.stderr + b.stderr, describe(b)
        assert b.returncode == a.returncode, f"{args}\n{describe(a)}\n{describe(b)}"
        # (``sync`` prints the tier's path, which names the installation)
        assert normalized(b.stdout.replace("handed", "direct")) == normalized(a.stdout), \
            f"{args}\n{describe(b)}"
        assert [ln for ln in b.stderr.splitlines() if "waits its turn" not in ln] == \
            a.stderr.splitlines(), f"{args}\n{describe(a)}\n{describe(b)}"
        if "--json" in args and a.returncode == 0:
            assert set(json.loads(b.stdout)) == set(json.loads(a.stdout))
        assert "wait for it to finish" not in b.stderr
    assert d.proc is not None and d.proc.poll() is None, "the daemon must still run"

    # Both installations hold the same snapshots (same paths), so the writes happened.
    snaps = [sorted(s["paths"] for s in json.loads(ok(run_tv(h, "--json", "snapshots")).stdout))
             for h in (direct, handed)]
    assert snaps[0] == snaps[1]
    # The daemon recorded each write it lent the lock to; the dry runs needed no turn.
    st = d.status("--sessions", "50")
    cmds = [s for s in st["sessions"] if s["kind"] == "command"]
    texts = [s["details"]["command"] for s in cmds]
    assert sum("backup" in t for t in texts) == 3, texts
    assert any(t.endswith(" sync") for t in texts), texts
    assert not any("--dry-run" in t for t in texts), texts
    assert sorted(s["details"]["exit_code"] for s in cmds) == sorted(write_codes), cmds
    assert all(s["ended"] for s in cmds)
    # The daemon has the lock back: its own backups still run.
    rid = json.loads(ok(run_tv(handed, "--json", "run", "docs")).stdout)["request_id"]
    assert d.wait_job(rid)["status"] == "success"


def test_a_command_waits_for_the_running_backup_and_ctrl_c_leaves_the_queue(
        tmp_path: Path, daemon_proc: Callable[[Path], DaemonProc]) -> None:
    src, other = _sources(tmp_path)
    home, _ = init_vault(tmp_path)
    ok(run_tv(home, "backup", src))
    ok(run_tv(home, "set", "add", "slow", src, "--pre-script", "sleep 120"))
    d = daemon_proc(home).start()
    rid = json.loads(ok(run_tv(home, "--json", "run", "slow")).stdout)["request_id"]
    d.wait_for(lambda: (d.status().get("running") or {}).get("set") == "slow", 20,
               "the slow backup to run")

    def typed(*args: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        out, err = tmp_path / f"out{len(args)}{args[0]}", tmp_path / f"err{len(args)}{args[0]}"
        p = subprocess.Popen(d.argv(*args), stdout=out.open("wb"), stderr=err.open("wb"),
                             stdin=subprocess.DEVNULL, env=tv_env())
        return p, out, err

    waiting, out, err = typed("backup", str(other))
    d.wait_for(lambda: "waits its turn" in err.read_text(), 20, "backup to say it waits")
    assert waiting.poll() is None
    assert "backup of set slow" in err.read_text()

    # A dry run does not wait for the backup: it reads beside it.
    t0 = time.monotonic()
    dry = ok(run_tv(home, "prune", "--dry-run"))
    assert "waits its turn" not in dry.stderr and "prune (would)" in dry.stdout
    assert (d.status().get("running") or {}).get("set") == "slow", "done before the backup"
    assert time.monotonic() - t0 < 60

    # Ctrl-C while waiting: the command ends (130) and leaves the daemon's queue.
    cancelled, _o, cerr = typed("forget", "--keep-last", "1")
    d.wait_for(lambda: any("forget" in (q.get("command") or "")
                           for q in d.status().get("queue", [])), 20, "forget to be queued")
    cancelled.send_signal(signal.SIGINT)
    assert cancelled.wait(30) == 130, cerr.read_text()
    d.wait_for(lambda: not any("forget" in (q.get("command") or "")
                               for q in d.status().get("queue", [])), 10, "forget to leave")

    assert waiting.poll() is None, "it waits for the backup to end"
    ok(run_tv(home, "cancel"))  # the daemon's backup ends (in its pre-script)
    assert waiting.wait(60) == 0, err.read_text()
    assert "snapshot" in out.read_text()
    job = d.wait_job(rid)
    assert job["status"] == "cancelled"
    sessions = d.status("--sessions", "20")["sessions"]
    mine = [s for s in sessions if s["kind"] == "command"]
    assert len(mine) == 1 and mine[0]["status"] == "success", mine
    assert mine[0]["details"]["exit_code"] == 0
    # The handed-over backup started after the daemon's own backup ended.
    assert mine[0]["started"] >= job["ended"]
    snaps = json.loads(ok(run_tv(home, "--json", "snapshots")).stdout)
    assert any(s["paths"] == [str(other)] for s in snaps)


def test_backup_typed_after_a_daemon_job_uses_the_files_cache(
        tmp_path: Path, daemon_proc: Callable[[Path], DaemonProc]) -> None:
    """Newcomer trial 3: after the daemon's own backup, `backup PATH` handed over to it
    died with `sqlite3.OperationalError: database is locked` (the daemon kept its
    files-cache transaction open between jobs)."""
    src, other = _sources(tmp_path)
    home, _ = init_vault(tmp_path, "home")
    ok(run_tv(home, "set", "add", "docs", src))
    d = daemon_proc(home).start()
    job = json.loads(ok(run_tv(home, "--json", "run", "docs", "--wait")).stdout)
    assert job["session"]["status"] == "success", job
    for path in (other, src):
        p = run_tv(home, "--json", "backup", str(path), timeout=120)
        assert p.returncode == 0 and "Traceback" not in p.stderr, describe(p)
    # The set's files were cached by the daemon's job: the typed backup reads none.
    summary = json.loads(p.stdout)
    assert summary["files_new"] == 0 and summary["files_changed"] == 0, summary
    assert summary["files_unmodified"] == 6, summary
    assert d.proc is not None and d.proc.poll() is None
