"""What a user sees on a terminal: a progress bar that moves during a throttled
upload (speed and ETA shown, binary units only), ends at its total, and is
cleared before the summary, which starts on a line of its own. Run on a
pseudo-terminal, with a real FTP server whose uploads are throttled."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.helpers import _BOOT, FAST_RETRY, backup, cheapen_key, ok, run_tv, tv_env
from tests.servers.ftp_server import FtpServerProcess

MiB = 1024 * 1024
_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def run_on_pty(home: Path, *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; (exit code, raw output)."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = tv_env({"COLUMNS": "160", "LINES": "40", "TERM": "xterm"})
    proc = subprocess.Popen([sys.executable, "-c", _BOOT, "--home", str(home), *FAST_RETRY,
                             *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


def screen(raw: str, width: int = 160) -> list[str]:
    """The lines a terminal shows after ``raw`` (a minimal VT100: enough for rich)."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        m = _CSI.match(raw, i)
        if m:
            arg, op = m.group(1), m.group(2)
            n = int(arg) if arg.isdigit() else None
            if op == "A":
                row = max(0, row - (n or 1))
            elif op == "B":
                row += n or 1
            elif op == "G":
                col = (n or 1) - 1
            elif op == "K":
                while len(lines) <= row:
                    lines.append([])
                if n == 2:
                    lines[row] = []
                else:
                    del lines[row][col:]
            i = m.end()
            continue
        ch = raw[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
        elif ch == "\x1b" or ch < " ":
            continue
        else:
            if col >= width:
                row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line) + 1) if len(line) <= col else "")
            line[col] = ch
            col += 1
    return ["".join(ln).rstrip() for ln in lines]


_FRAME = re.compile(r"(\d+(?:\.\d)?) (B|KiB|MiB)/(\d+\.\d) MiB")
_UNIT = {"B": 1, "KiB": 1024, "MiB": MiB}


def frames(raw: str) -> list[tuple[float, float, str]]:
    """Every bar rendered: (bytes done, total, the frame's text)."""
    out = []
    for part in re.split(r"\r|\x1b\[2K", raw):
        m = _FRAME.search(part)
        if m and "━" in part:
            out.append((float(m.group(1)) * _UNIT[m.group(2)], float(m.group(3)) * MiB, part))
    return out


@pytest.fixture(scope="module")
def slow_ftp(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A vault on one FTP tier whose uploads and downloads are throttled to 3 MB/s."""
    tmp = tmp_path_factory.mktemp("pty")
    server = FtpServerProcess(tmp / "ftp")
    home = tmp / "home"
    ok(run_tv(home, "init", str(tmp / "speed"), server.url + "/vault"))
    cheapen_key(tmp / "speed")
    cfg = home / "config.toml"
    doc = tomllib.loads(cfg.read_text())
    # Only the server tier holds the data: the speed vault is removed, so that the
    # upload is the pace of the whole backup (no slow tier left behind).
    ok(run_tv(home, "tier", "remove", str(tmp / "speed")))
    doc = tomllib.loads(cfg.read_text())
    doc["throttle"] = [{"tier": "1", "upload": "3MB", "download": "3MB"}]
    # Small packs: the backup's reading is held back by the upload (a few packs in
    # flight), as it is for a large backup with the default 8 MiB packs.
    doc.setdefault("settings", {})["pack_size_mib"] = 1
    cfg.write_text(tomli_w.dumps(doc))
    src = tmp / "src"
    src.mkdir()
    for n in range(3):
        (src / f"part{n}.bin").write_bytes(os.urandom(3 * MiB))
    yield {"home": home, "src": src, "tmp": tmp}
    server.stop()


def _check_terminal(raw: str, summary_word: str, total: float) -> None:
    shown = frames(raw)
    assert shown, raw[-3000:]
    # One unit system: no decimal kB/MB/GB anywhere on the terminal.
    assert not re.search(r"\d ?(kB|MB|GB)\b", raw), raw[-3000:]
    # The bar moved while bytes were sent: several distinct counts below the total...
    moving = {d for d, _t, _ in shown if d < total * 0.95}
    assert len(moving) >= 3, [f for _, _, f in shown]
    # ...with a speed and an estimate of the time left.
    assert any(re.search(r"(KiB|MiB)/s", f) and re.search(r"\d:\d\d:\d\d", f)
               for _, _, f in shown), [f for _, _, f in shown]
    # It ended at its total.
    last_done, last_total, _ = shown[-1]
    assert last_total == pytest.approx(total, rel=0.02)
    assert last_done == pytest.approx(last_total, rel=0.02), shown[-1]
    # The summary starts on a line of its own, and the bar is gone from the screen.
    lines = [ln for ln in screen(raw) if ln.strip()]
    assert any(ln.startswith(summary_word) for ln in lines), lines
    assert not any("━" in ln for ln in lines), lines


def test_backup_bar_moves_with_a_throttled_upload_and_ends_cleanly(slow_ftp: Any) -> None:
    code, raw = run_on_pty(slow_ftp["home"], "backup", str(slow_ftp["src"]))
    assert code == 0, raw[-3000:]
    _check_terminal(raw, "snapshot ", 9 * MiB)
    summary = next(ln for ln in screen(raw) if ln.startswith("snapshot "))
    assert "MiB processed" in summary and "3 files" in summary, summary


def _has_snapshot(slow_ftp: Any) -> None:
    """The restore tests need the backup test's snapshot; under xdist they may run in
    another worker (another module fixture) or alone: back up then, quietly."""
    snaps = json.loads(ok(run_tv(slow_ftp["home"], "--json", "snapshots")).stdout)
    if not snaps:
        ok(run_tv(slow_ftp["home"], "-q", "backup", str(slow_ftp["src"]), timeout=300))


def test_restore_bar_ends_at_the_total_before_the_summary(slow_ftp: Any) -> None:
    _has_snapshot(slow_ftp)
    target = slow_ftp["tmp"] / "restored"
    code, raw = run_on_pty(slow_ftp["home"], "restore", "latest", str(target))
    assert code == 0, raw[-3000:]
    _check_terminal(raw, "restored ", 9 * MiB)


def test_no_bar_and_no_info_lines_with_quiet(slow_ftp: Any, tmp_path: Path) -> None:
    _has_snapshot(slow_ftp)
    code, raw = run_on_pty(slow_ftp["home"], "-q", "restore", "latest", str(tmp_path / "r"))
    assert code == 0, raw
    assert "━" not in raw and "restored" not in raw, raw


def test_human_sizes_are_binary_everywhere(tmp_path: Path) -> None:
    from tests.helpers import init_vault

    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(1536 * 1024))
    home, _ = init_vault(tmp_path)
    backup(home, src)
    out = ok(run_tv(home, "ls", "-l", "-H", "latest", str(src / "f.bin"))).stdout
    assert "1.5 MiB" in out, out
    out = ok(run_tv(home, "restore", "latest", str(tmp_path / "r"))).stdout
    assert "1.5 MiB" in out and "1 file," in out, out


# -- verbosity -----------------------------------------------------------------------------


def _aged(path: Path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_verbose_lists_each_file_as_new_changed_unchanged(tmp_path: Path) -> None:
    from tests.helpers import init_vault

    src = tmp_path / "src"
    src.mkdir()
    for name in ("keep", "edit"):
        (src / name).write_text(f"{name}\n")
        _aged(src / name, 3600)  # old enough for the files cache to trust
    home, _ = init_vault(tmp_path)
    first = ok(run_tv(home, "-v", "backup", src))
    assert re.search(rf"^new +{re.escape(str(src / 'keep'))}$", first.stderr, re.M), first.stderr
    assert re.search(rf"^new +{re.escape(str(src / 'edit'))}$", first.stderr, re.M)
    (src / "edit").write_text("edited, longer\n")
    _aged(src / "edit", 1800)
    second = ok(run_tv(home, "--verbose", "backup", src))
    assert re.search(rf"^unchanged +{re.escape(str(src / 'keep'))}$", second.stderr, re.M), \
        second.stderr
    assert re.search(rf"^changed +{re.escape(str(src / 'edit'))}$", second.stderr, re.M), \
        second.stderr
    assert "snapshot " in second.stdout
    restored = ok(run_tv(home, "-v", "restore", "latest", tmp_path / "r"))
    for name in ("keep", "edit"):
        assert re.search(rf"^restored +{re.escape(str(tmp_path / 'r'))}.*/{name}$",
                         restored.stderr, re.M), restored.stderr


def test_quiet_keeps_problems_and_drops_the_rest(tmp_path: Path) -> None:
    from tests.helpers import init_vault

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    home, _ = init_vault(tmp_path)
    ok(run_tv(home, "tier", "add", tmp_path / "second"))
    quiet = ok(run_tv(home, "-q", "backup", src))
    assert quiet.stdout == "" and quiet.stderr == "", quiet
    (tmp_path / "second").rename(tmp_path / "second.unplugged")
    quiet = ok(run_tv(home, "--quiet", "backup", src, "--no-sync"))
    assert quiet.stdout == "", quiet.stdout
    assert "offline" in quiet.stderr, quiet.stderr  # a problem is still said
    bad = run_tv(home, "-q", "-v", "snapshots")
    assert bad.returncode == 2 and "cannot be combined" in bad.stderr


# -- --limit-upload / --limit-download -----------------------------------------------------


def _timed_backup(home: Path, src: Path, *glob: str) -> float:
    t0 = time.monotonic()
    ok(run_tv(home, *glob, "backup", src))
    return time.monotonic() - t0


@pytest.fixture
def three_mib(tmp_path: Path) -> tuple[Path, Path]:
    from tests.helpers import init_vault

    src = tmp_path / "src"
    src.mkdir()
    (src / "blob").write_bytes(os.urandom(3 * MiB))
    home, _ = init_vault(tmp_path)
    return home, src


def test_limit_upload_bare_number_is_kib_per_second(three_mib: tuple[Path, Path]) -> None:
    home, src = three_mib
    # 3 MiB at 1024 KiB/s: about 3 s (the local tier is throttled like any other).
    assert _timed_backup(home, src, "--limit-upload", "1024") >= 2.4


def test_limit_upload_combines_with_config_and_the_stricter_wins(
        three_mib: tuple[Path, Path]) -> None:
    home, src = three_mib
    cfg = home / "config.toml"
    doc = tomllib.loads(cfg.read_text())
    doc["throttle"] = [{"tier": "1", "upload": "1MiB"}]
    cfg.write_text(tomli_w.dumps(doc))
    assert _timed_backup(home, src, "--limit-upload", "64MiB") >= 2.4  # the config's 1 MiB/s


def test_limit_download_throttles_a_restore(three_mib: tuple[Path, Path], tmp_path: Path) -> None:
    home, src = three_mib
    ok(run_tv(home, "backup", src))
    t0 = time.monotonic()
    ok(run_tv(home, "--limit-download", "1MiB", "restore", "latest", tmp_path / "r"))
    assert time.monotonic() - t0 >= 2.4


def test_a_bad_rate_is_a_usage_error(three_mib: tuple[Path, Path]) -> None:
    from tests.helpers import one_line_error

    proc = run_tv(three_mib[0], "--limit-upload", "fast", "snapshots")
    line = one_line_error(proc)
    assert proc.returncode == 2 and "--limit-upload" in line and "KiB/s" in line, line
