"""Issue 8 item 16: a configuration re-read (SIGHUP or a changed file) takes effect.

With the daemon running, a ``[[throttle]]`` rule is added to ``config.toml``
and SIGHUP sent: the next backup of 4 MiB of random data to the (only) tier is
throttled to 512 KB/s (about 8 s, where the same backup unthrottled takes a
fraction of that). Notification settings added the same way are used by the
next failed backup. A setting that needs a restart (``daemon.timezone``) is
named in the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.daemonkit import DaemonProc, add_to_config, daemon_fixture  # noqa: F401 - the daemon_proc fixture
from tests.helpers import init_vault, ok, run_tv


def _run(home: Path, set_name: str) -> dict[str, Any]:
    """``run SET --wait``: the session's details."""
    p = run_tv(home, "--json", "run", set_name, "--wait", "--timeout", "300")
    return json.loads(p.stdout)["session"]["details"]  # type: ignore[no-any-return]


def test_throttle_notify_and_restart_only_settings_on_reread(
        tmp_path: Path, daemon_proc: Callable[[Path], DaemonProc]) -> None:
    home, _ = init_vault(tmp_path)
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    for d in (fast, slow):
        d.mkdir()
        (d / "random.bin").write_bytes(os.urandom(4 << 20))
    ok(run_tv(home, "set", "add", "fast", fast))
    ok(run_tv(home, "set", "add", "slow", slow))
    ok(run_tv(home, "set", "add", "broken", tmp_path / "not-there"))  # its backups fail
    d = daemon_proc(home).start()
    unthrottled = _run(home, "fast")
    assert unthrottled["status"] == "success"

    alerts = tmp_path / "alerts.txt"
    add_to_config(home, f'''
[[throttle]]
tier = "1"
upload = "512KB"

[daemon]
timezone = "Pacific/Auckland"

[daemon.notify]
command = "echo $TIERVAULT_EVENT >> {alerts}"
''')
    d.hup()
    d.wait_for(lambda: "configuration re-read" in d.log(), 30, "the re-read")

    throttled = _run(home, "slow")
    assert throttled["status"] == "success", throttled
    assert throttled["duration_s"] >= 5.0, (throttled["duration_s"], unthrottled["duration_s"])
    assert unthrottled["duration_s"] < throttled["duration_s"] / 2

    reread = next(ln for ln in d.log().splitlines() if "configuration re-read" in ln)
    assert "in effect now:" in reread and "throttle" in reread and "daemon.notify" in reread, \
        reread
    assert "daemon.timezone changed; this takes effect after a restart" in d.log()

    assert _run(home, "broken")["status"] == "failed"
    d.wait_for(lambda: alerts.exists() and "session_failed" in alerts.read_text(), 30,
               "the notification command")
    # The zone that needs a restart is still the one the daemon started with.
    assert d.status()["timezone"] != "Pacific/Auckland"
    d.stop()
