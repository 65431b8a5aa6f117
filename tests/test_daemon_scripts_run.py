"""Issue 8 item 15: a set's pre/post scripts run for every backup of the set.

``tiervault run SET`` (a backup started by hand, as the console would) runs
the set's scripts exactly as a scheduled run does: a failing pre-script fails
the backup (exit 1, no snapshot), the post-script gets the result.
``run --no-scripts`` skips them on purpose. Scripts that an older config put in
a schedule's table are still read, and run for ``run SET`` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.daemonkit import DaemonProc, daemon_fixture  # noqa: F401 - the daemon_proc fixture
from tests.helpers import describe, init_vault, ok, run_tv


def _snapshot_count(home: Path) -> int:
    return len(json.loads(ok(run_tv(home, "--json", "snapshots")).stdout))


def test_run_set_runs_the_sets_scripts_and_no_scripts_skips_them(
        tmp_path: Path, daemon_proc: Callable[[Path], DaemonProc]) -> None:
    home, _ = init_vault(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "db.dump").write_text("rows\n" * 1000)
    marks = tmp_path / "post.out"
    ok(run_tv(home, "set", "add", "bins", src, "--pre-script", "echo pre-running; exit 7",
              "--post-script", f'echo "post: $TIERVAULT_RESULT" >> {marks}; echo post-said',
              "--script-timeout", "30"))
    listed = json.loads(ok(run_tv(home, "--json", "set", "list")).stdout)
    assert listed[0]["pre_script"] == "echo pre-running; exit 7"
    # An old-style set: its scripts live in its schedule's table.
    ok(run_tv(home, "set", "add", "old", src))
    ok(run_tv(home, "schedule", "add", "old", "--cron", "0 3 * * *", "--pre-script",
              "echo old-pre; exit 3"))
    d = daemon_proc(home).start()

    failed = run_tv(home, "--json", "run", "bins", "--wait", "--timeout", "120")
    assert failed.returncode == 1, describe(failed)
    sess = json.loads(failed.stdout)["session"]
    assert sess["status"] == "failed"
    assert "pre-script failed" in sess["details"]["error"]
    assert sess["details"]["scripts"]["pre"]["exit_code"] == 7
    assert "pre-script| pre-running" in sess["details"]["log"]
    assert marks.read_text().splitlines() == ["post: failed"]
    assert _snapshot_count(home) == 0

    text = run_tv(home, "run", "bins", "--wait", "--timeout", "120")
    assert text.returncode == 1 and "pre-script failed" in text.stdout, describe(text)

    skipped = ok(run_tv(home, "--json", "run", "bins", "--wait", "--no-scripts",
                        "--timeout", "120"))
    sess = json.loads(skipped.stdout)["session"]
    assert sess["status"] == "success" and sess["details"]["scripts"] == {}
    assert "the set's scripts are skipped (run --no-scripts)" in sess["details"]["log"]
    assert marks.read_text().splitlines() == ["post: failed", "post: failed"]
    assert _snapshot_count(home) == 1

    old = run_tv(home, "--json", "run", "old", "--wait", "--timeout", "120")
    assert old.returncode == 1, describe(old)
    assert json.loads(old.stdout)["session"]["details"]["scripts"]["pre"]["exit_code"] == 3

    # Moving them to the set (``set scripts --clear``): the daemon re-reads and uses them.
    moved = json.loads(ok(run_tv(home, "--json", "set", "scripts", "old", "--clear",
                                 "--pre-script", "echo moved-pre")).stdout)
    assert moved["pre_script"] == "echo moved-pre"
    assert moved["schedules"][0]["pre_script"] is None
    d.wait_for(lambda: d.log().count("configuration re-read") >= 1, 30, "the re-read")
    sess = json.loads(ok(run_tv(home, "--json", "run", "old", "--wait", "--timeout",
                                "120")).stdout)["session"]
    assert sess["status"] == "success" and "pre-script| moved-pre" in sess["details"]["log"]

    # The text history shows what the scripts printed.
    hist = ok(run_tv(home, "status", "--sessions", "10")).stdout
    assert "pre-script| pre-running" in hist and "post-script| post-said" in hist
    assert "pre-script| old-pre" in hist
    d.stop()
