"""A real ``tiervault daemon`` process for end-to-end tests, driven like a user would.

Commands go through ``tests.helpers.run_tv`` (a fresh interpreter each); the
daemon runs with short intervals and logs to ``TMP/daemon.log``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import _BOOT, FAST_RETRY, describe, run_tv, tv_env


class DaemonProc:
    """One installation's daemon, started and stopped by the test."""

    def __init__(self, tmp: Path, home: Path) -> None:
        self.tmp, self.home = tmp, home
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = tmp / "daemon.log"

    def argv(self, *args: str | Path) -> list[str]:
        return [sys.executable, "-c", _BOOT, "--home", str(self.home), *FAST_RETRY,
                *map(str, args)]

    def start(self, *extra: str, env: dict[str, str | None] | None = None) -> DaemonProc:
        """Start it (``env``: changes to its environment, as ``tv_env``) and wait for its
        control file."""
        log = open(self.logfile, "ab")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(self.argv("daemon", "--probe-interval", "0.5", "--tick",
                                               "0.1", *extra),
                                     stdout=log, stderr=log, env=tv_env(env),
                                     stdin=subprocess.DEVNULL)
        self.wait_for(lambda: (self.home / "daemon.json").exists(), 30, "the daemon to start")
        return self

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.wait_for(lambda: not (self.home / "daemon.json").exists(), 10,
                      "the control file to go")

    def hup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def wait_for(self, cond: Callable[[], Any], timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"the daemon exited ({self.proc.returncode}) while waiting for "
                            f"{what}\n--- daemon log ---\n{self.log()[-4000:]}")
            if time.monotonic() > end:
                pytest.fail(f"timed out waiting for {what}\n--- daemon log ---\n"
                            f"{self.log()[-4000:]}")
            time.sleep(0.1)

    def status(self, *args: str) -> dict[str, Any]:
        p = run_tv(self.home, "--json", "status", *args)
        assert p.returncode == 0, describe(p)
        return json.loads(p.stdout)  # type: ignore[no-any-return]

    def wait_job(self, request_id: str, timeout: float = 60) -> dict[str, Any]:
        """The ended session of a ``run`` request."""
        def done() -> dict[str, Any] | None:
            for s in self.status("--sessions", "50")["sessions"]:
                if s["details"].get("request_id") == request_id and s["ended"]:
                    return s
            return None
        return self.wait_for(done, timeout, f"job {request_id}")  # type: ignore[no-any-return]


@pytest.fixture(name="daemon_proc")
def daemon_fixture(tmp_path: Path) -> Iterator[Callable[[Path], DaemonProc]]:
    """``daemon_proc(home)`` gives a DaemonProc that is killed after the test."""
    made: list[DaemonProc] = []

    def make(home: Path) -> DaemonProc:
        d = DaemonProc(tmp_path, home)
        made.append(d)
        return d

    yield make
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def add_to_config(home: Path, text: str) -> None:
    """Append TOML to the installation's config.toml (as a user with an editor would)."""
    path = home / "config.toml"
    path.write_text(path.read_text() + "\n" + text)


_VOLATILE = [
    (re.compile(r"\b[0-9a-f]{8,64}\b"), "ID"),
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?"), "TIME"),
    (re.compile(r"\d+(\.\d+)?( ?(B|KiB|MiB|GiB|KB|MB|GB)\b)?"), "N"),
]


def normalized(text: str) -> str:
    """Output with ids, times and numbers replaced, to compare two runs' shapes."""
    for pat, rep in _VOLATILE:
        text = pat.sub(rep, text)
    return text

