"""SIGINT stops a backup or a restore within about a second (issue 8 item 23).

Real processes against a real FTP server, with the bandwidth limits of
config.toml slowing the transfers, as in the newcomer's trial. An interrupted
restore leaves only complete files, each with its metadata, and no temporaries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.helpers import _BOOT, FAST_RETRY, describe, ok, run_tv, tv_env
from tests.servers.ftp_server import FtpServerProcess

MB = 1000 * 1000
OLD_NS = 1_400_000_000 * 10**9 + 123_456_789
#: Generous: the requirement is "about a second"; today's main took 6.9 and 8.9 s.
STOP_BOUND = 3.0


def _throttle(home: Path, rules: list[dict[str, str]], pack_size_mib: int = 4) -> None:
    cfg = home / "config.toml"
    doc = tomllib.loads(cfg.read_text())
    doc["throttle"] = rules
    doc.setdefault("settings", {})["pack_size_mib"] = pack_size_mib
    cfg.write_text(tomli_w.dumps(doc))


def _spawn(home: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _BOOT, "--home", str(home), *FAST_RETRY,
                             *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=tv_env())


def _interrupt(proc: subprocess.Popen[bytes]) -> tuple[float, str]:
    """SIGINT ``proc``; returns the seconds it took to exit and its stderr."""
    assert proc.poll() is None, "the command ended before it could be interrupted"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the interrupted command did not exit within 60 s") from None
    return time.monotonic() - t0, err.decode(errors="replace")


def _wait_for(cond: object, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"ended early ({proc.returncode}): {out!r} {err!r}")
        assert time.monotonic() < deadline, "timed out waiting for the command's progress"
        time.sleep(0.05)


@pytest.fixture
def ftp_vault(tmp_path: Path) -> Iterator[tuple[Path, Path, FtpServerProcess]]:
    server = FtpServerProcess(tmp_path / "ftp-root")
    home = tmp_path / "home"
    speed = tmp_path / "speed"
    ok(run_tv(home, "init", str(speed), server.url + "/vault"))
    yield home, speed, server
    server.stop()


def _packs(root: Path) -> list[Path]:
    return [p for p in (root / "data").rglob("*") if p.is_file() and not p.name.startswith(".")] \
        if (root / "data").is_dir() else []


def test_sigint_stops_a_throttled_backup_to_ftp_quickly(
        tmp_path: Path, ftp_vault: tuple[Path, Path, FtpServerProcess]) -> None:
    home, _speed, server = ftp_vault
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"big{i}.bin").write_bytes(os.urandom(4 * MB))
    # Both tiers limited, so that neither can run ahead: the backup is held by uploads
    # (4 MiB packs at 1 MB/s: each upload waits about 4 s on the limit).
    _throttle(home, [{"tier": "1", "upload": "1MB"}, {"tier": "2", "upload": "1MB"}])
    proc = _spawn(home, "backup", str(src))
    _wait_for(lambda: len(_packs(server.root / "vault")) >= 1, proc)
    took, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert took < STOP_BOUND, f"took {took:.1f} s to stop after SIGINT\n{err}"
    assert "tiervault: " in err and ("aborted" in err or "interrupted" in err), err

    # The vault is fine: no snapshot was written, check passes, the next backup works
    # and stores everything (interrupted uploads are only unreferenced data).
    assert json.loads(ok(run_tv(home, "--json", "snapshots")).stdout) == []
    proc2 = run_tv(home, "check")
    assert proc2.returncode == 0, describe(proc2)
    _throttle(home, [])
    s = json.loads(ok(run_tv(home, "--json", "backup", str(src))).stdout)
    assert s["complete"] and s["files_new"] == 3
    ok(run_tv(home, "check", "--read-data"))


def test_sigint_during_a_restore_leaves_only_complete_files_with_their_metadata(
        tmp_path: Path, ftp_vault: tuple[Path, Path, FtpServerProcess]) -> None:
    home, speed, _server = ftp_vault
    src = tmp_path / "src"
    (src / "a-small").mkdir(parents=True)
    (src / "b-big").mkdir()
    small = {}
    for i in range(8):
        p = src / "a-small" / f"s{i}.txt"
        p.write_bytes(b"small file %d\n" % i * (i + 1))
        p.chmod(0o640 if i % 2 else 0o755)
        os.utime(p, ns=(OLD_NS, OLD_NS + i))
        small[p] = p.read_bytes()
    for i in range(3):
        (src / "b-big" / f"big{i}.bin").write_bytes(os.urandom(4 * MB))
    _throttle(home, [])
    ok(run_tv(home, "backup", str(src)))
    # Restore from the server alone (the speed vault unplugged), downloads at 2 MB/s:
    # the small files come with the first pack, the big ones take seconds more.
    speed.rename(speed.with_name("speed.off"))
    _throttle(home, [{"tier": "2", "download": "2MB"}])
    target = tmp_path / "out"
    proc = _spawn(home, "restore", "latest", str(target))
    restored = Path(str(target) + str(src))

    def some_small_file_done() -> bool:
        return any((restored / "a-small" / f"s{i}.txt").exists() for i in range(8))

    _wait_for(some_small_file_done, proc)
    took, err = _interrupt(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert took < STOP_BOUND, f"took {took:.1f} s to stop after SIGINT\n{err}"

    names = [p for p in restored.rglob("*")]
    leftovers = [p for p in names if ".tiervault-" in p.name]
    assert leftovers == [], f"temporaries left behind: {leftovers}"
    done = 0
    for p in names:
        if not p.is_file():
            continue
        orig = src / p.relative_to(restored)
        st, want = p.stat(), orig.stat()
        # Every file left is complete and has its metadata, never 0600 and "now".
        assert p.read_bytes() == orig.read_bytes(), f"{p} is partial"
        assert oct(st.st_mode & 0o7777) == oct(want.st_mode & 0o7777), p
        assert st.st_mtime_ns == want.st_mtime_ns, p
        assert (st.st_uid, st.st_gid) == (want.st_uid, want.st_gid), p
        done += 1
    assert done >= 1
    assert not all((restored / "b-big" / f"big{i}.bin").exists() for i in range(3)), \
        "the restore finished before it was interrupted"

    # Running the restore again completes it.
    _throttle(home, [])
    ok(run_tv(home, "restore", "latest", str(target)))
    for p, data in small.items():
        assert (restored / p.relative_to(src)).read_bytes() == data
    for i in range(3):
        big = f"b-big/big{i}.bin"
        assert (restored / big).read_bytes() == (src / big).read_bytes()
