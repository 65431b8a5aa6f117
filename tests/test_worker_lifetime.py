"""A backup's worker processes never outlive it (trial 5).

Once a backup has met 2,000 entries it forks worker processes for the small
files. Killed with SIGKILL (kill -9, the out-of-memory killer), the backup
takes them with it: a worker left behind held the command's output open, so
``tiervault backup | tee log`` never finished. SIGTERM stops a backup as
Ctrl-C does, with a message and exit code 143.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import _BOOT, FAST_RETRY, ok, run_tv, tv_env


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def many(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    for d in range(60):
        (src / f"d{d:02d}").mkdir(parents=True)
        for i in range(500):
            (src / f"d{d:02d}" / f"f{i:03d}").write_bytes(os.urandom(64) * (1 + i % 16))
    home = tmp_path / "home"
    ok(run_tv(home, "init", str(tmp_path / "vault")))
    return home, src


def _start(home: Path, src: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A backup of ``src``, once its worker processes run (it still runs)."""
    proc = subprocess.Popen([sys.executable, "-c", _BOOT, "--home", str(home), *FAST_RETRY,
                             "backup", str(src)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tv_env())
    deadline = time.monotonic() + 60
    while True:
        kids = _children(proc.pid)
        if len(kids) >= 2:
            return proc, kids
        assert proc.poll() is None, "the backup ended before its workers were seen"
        assert time.monotonic() < deadline, "no worker processes"
        time.sleep(0.01)


def _gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_kill_9_takes_the_workers_along_and_the_output_ends(many: tuple[Path, Path]) -> None:
    home, src = many
    proc, kids = _start(home, src)
    proc.kill()
    # The pipes reach end-of-file: nothing else holds them.
    proc.communicate(timeout=20)
    assert _gone(kids), "worker processes outlived the backup"
    ok(run_tv(home, "backup", str(src)))  # the next backup runs


def test_sigterm_stops_a_backup_like_ctrl_c(many: tuple[Path, Path]) -> None:
    home, src = many
    proc, kids = _start(home, src)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert b"tiervault: terminated" in err and b"Traceback" not in err
    assert _gone(kids)
    ok(run_tv(home, "backup", str(src)))
