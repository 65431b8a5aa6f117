"""Issue 8 item 18: one session history, in the state database, readable without the daemon.

``status`` and ``status --sessions N`` work with the daemon stopped (they say
so, exit 0, and show the history); ``status --json`` has one session list that
honours ``--sessions``; every time is ISO 8601 with an offset; a running job
shows its set; the text history shows the scripts' output; per-set retention
is in the daemon's log and the session's log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.daemonkit import DaemonProc, add_to_config, daemon_fixture  # noqa: F401 - the daemon_proc fixture
from tests.helpers import describe, init_vault, ok, run_tv

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")
TIME_KEYS = {"started", "ended", "due", "deadline", "now", "next_run", "next_round"}


def _times(doc: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in TIME_KEYS:
                yield k, v
            yield from _times(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _times(v)


def _session_lists(doc: Any) -> int:
    """How many lists of session rows the document holds."""
    n = 0
    if isinstance(doc, dict):
        for v in doc.values():
            if isinstance(v, list) and v and all(isinstance(x, dict) and "kind" in x
                                                 for x in v):
                n += 1
            n += _session_lists(v)
    return n


def test_history_without_the_daemon_iso_times_and_script_output(
        tmp_path: Path, daemon_proc: Callable[[Path], DaemonProc]) -> None:
    home, _ = init_vault(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n" * 500)
    ok(run_tv(home, "set", "add", "docs", src))
    add_to_config(home, "[sets.docs.retention]\nkeep_last = 1\n")
    d = daemon_proc(home).start()
    for _ in range(2):
        ok(run_tv(home, "run", "docs", "--wait", "--timeout", "120"))
        (src / "a.txt").write_text((src / "a.txt").read_text() + "more\n")
    running = d.status("--sessions", "3")
    d.stop()

    # Stopped: the history is still there, from the state database.
    text = run_tv(home, "status", "--sessions", "5")
    assert text.returncode == 0, describe(text)
    assert "not running" in text.stdout.splitlines()[0]
    jobs = [ln for ln in text.stdout.splitlines() if " docs " in ln and "success" in ln]
    assert len(jobs) == 2, text.stdout
    assert "retention of set docs: 1 snapshot(s) kept, 1 removed" in d.log()

    assert running["daemon_running"] is True
    st = json.loads(ok(run_tv(home, "--json", "status", "--sessions", "1")).stdout)
    assert st["daemon_running"] is False
    assert len(st["sessions"]) == 1 and _session_lists(st) == 1
    assert "recent" not in st
    full = json.loads(ok(run_tv(home, "--json", "status", "--sessions", "10")).stdout)
    job = next(s for s in full["sessions"] if s["kind"] == "job")
    assert job["details"]["set"] == "docs"
    assert any("retention of set docs" in ln for ln in job["details"]["log"])
    for doc in (st, full, running):
        for k, v in _times(doc):
            assert v is None or (isinstance(v, str) and ISO.match(v)), (k, v)

    # A running job shows its set, not "?"; the text history shows the scripts' output.
    ok(run_tv(home, "set", "add", "slow", src, "--pre-script", "echo dumped-the-db; sleep 120"))
    d.start()
    ok(run_tv(home, "run", "slow"))
    d.wait_for(lambda: (d.status().get("running") or {}).get("set") == "slow", 30,
               "the slow job")
    line = next(ln for ln in ok(run_tv(home, "status")).stdout.splitlines()
                if "running" in ln and ln.startswith("#"))
    assert " slow " in line and " ? " not in line, line
    ok(run_tv(home, "cancel"))
    d.wait_for(lambda: "pre-script| dumped-the-db" in ok(run_tv(home, "status")).stdout, 30,
               "the script's output in the history")
    d.stop()
