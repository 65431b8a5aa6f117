"""Temporary uploads left by a crash are removed: after `sync` the tiers are identical.

Through the CLI, with a speed vault and a real FTP server that receives
slowly (pyftpdlib's throttled data channel), so an upload can be caught in
the middle: once with the client SIGKILLed mid-upload, once with the server
SIGKILLed mid-upload. Each leaves a hidden ``.<name>.<token>.<rand>.tmp`` on
the server; the next `sync` removes it, and both tiers hold the same files,
hidden files included. (Before, the leftovers stayed forever.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import FAST_RETRY, describe, init_vault, ok, run_tv, tv_env
from tests.servers.ftp_server import FtpServerProcess
from tests.test_e2e_tiers import tree_digests

_BOOT = "import sys; from tiervault.cli.main import main; main(sys.argv[1:])"
SLOW = 1 << 20  # the server takes uploads at 1 MiB/s


@dataclass
class TwoTiers:
    home: Path
    speed: Path
    served: Path  # the FTP server's vault directory on disk
    src: Path
    server: FtpServerProcess

    def restart_server(self, read_limit: int | None) -> None:
        self.server.kill()
        self.server.read_limit = read_limit
        self.server.start()

    def start_backup(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", _BOOT, "--home", str(self.home),
                                 *FAST_RETRY, "backup", "--no-sync", str(self.src)],
                                env=tv_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def assert_identical(self) -> None:
        """Same files on both tiers, hidden ones included, and no temporary left."""
        mine = tree_digests(self.speed, skip_hidden=False)
        theirs = tree_digests(self.served, skip_hidden=False)
        assert mine == theirs, (sorted(set(mine) ^ set(theirs)),
                                sorted(k for k in set(mine) & set(theirs)
                                       if mine[k] != theirs[k]))
        assert not [k for k in mine if k.endswith(".tmp")], mine


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[TwoTiers]:
    server = FtpServerProcess(tmp_path / "ftp-root", user="tv", password="temporaries-pw")
    try:
        home, speed = init_vault(tmp_path, "speed")
        ok(run_tv(home, "tier", "add", server.url + "/vault"))
        src = tmp_path / "src"
        src.mkdir()
        (src / "small.txt").write_text("a first snapshot\n")
        ok(run_tv(home, "backup", str(src)))
        for i in range(2):
            (src / f"big{i}.bin").write_bytes(os.urandom(6 << 20))
        t = TwoTiers(home, speed, tmp_path / "ftp-root" / "vault", src, server)
        t.assert_identical()
        yield t
    finally:
        server.kill()


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp") if p.is_file()]


def _wait_for_partial_upload(t: TwoTiers, proc: subprocess.Popen[bytes]) -> Path:
    """The temporary the server is receiving, once it holds 256 KiB."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the backup ended before an upload could be caught"
        for p in _temporaries(t.served):
            try:
                if p.stat().st_size >= 256 << 10:
                    return p
            except FileNotFoundError:
                pass
        time.sleep(0.02)
    raise AssertionError("no upload reached the server")


def test_client_killed_mid_upload_then_sync(tiers: TwoTiers) -> None:
    t = tiers
    t.restart_server(read_limit=SLOW)
    proc = t.start_backup()
    partial = _wait_for_partial_upload(t, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the server closes the broken upload
    assert partial.exists(), "the killed upload left no temporary"
    t.restart_server(read_limit=None)

    p = run_tv(t.home, "sync")
    assert p.returncode == 0, describe(p)
    assert "Traceback" not in p.stderr
    assert not partial.exists()
    assert "temporary upload" in p.stderr, describe(p)
    # The killed session may have completed a pack on one tier that no index
    # names: sync neither spreads it nor removes it on the other tier's word;
    # prune removes it (SPEC §5).
    assert run_tv(t.home, "prune").returncode == 0
    t.assert_identical()


def test_server_killed_mid_upload_then_sync(tiers: TwoTiers) -> None:
    t = tiers
    t.restart_server(read_limit=SLOW)
    proc = t.start_backup()
    partial = _wait_for_partial_upload(t, proc)
    t.server.kill()
    out, err = proc.communicate(timeout=300)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), err.decode())
    assert done.returncode == 0, describe(done)  # completed on the speed vault
    assert partial.exists(), "the killed server kept no partial upload"
    t.server.read_limit = None
    t.server.start()

    p = run_tv(t.home, "sync")
    assert p.returncode == 0, describe(p)
    assert not partial.exists()
    t.assert_identical()
    # And nothing is left to do: a second sync finds the tiers level.
    ok(run_tv(t.home, "sync"))
    t.assert_identical()
