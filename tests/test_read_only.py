"""Restore-only installations: restore while the writer keeps backing up;
neither stops with exit 3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

TV = str(Path(sys.executable).parent / "tiervault")


def tv(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TIERVAULT_PASSWORD="pw")
    return subprocess.run([TV, "--home", str(home), "--retry-attempts", "1", "--retry-delay",
                           "0.05", *args], env=env, capture_output=True, text=True, timeout=120)


def test_reader_and_writer_side_by_side(tmp_path: Path) -> None:
    writer, reader = tmp_path / "writer", tmp_path / "reader"
    a, b, src = tmp_path / "A", tmp_path / "B", tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(3_000_000))
    assert tv(writer, "init", str(a), str(b)).returncode == 0
    assert tv(writer, "backup", str(src)).returncode == 0
    p = tv(reader, "attach", str(a), str(b), "--read-only")
    assert p.returncode == 0, p.stderr
    codes: list[int] = []

    def keep_backing_up() -> None:
        for i in range(4):
            (src / f"n{i}").write_bytes(os.urandom(100_000))
            codes.append(tv(writer, "backup", str(src)).returncode)

    th = threading.Thread(target=keep_backing_up)
    th.start()
    restores = []
    for i in range(4):
        r = tv(reader, "restore", "latest", str(tmp_path / f"out{i}"))
        restores.append((r.returncode, r.stderr))
        assert tv(reader, "snapshots", "--json").returncode == 0
    th.join()
    assert codes == [0, 0, 0, 0]
    assert all(rc == 0 for rc, _ in restores), restores
    # The writer is still the writer, and the reader still reads.
    assert tv(writer, "backup", str(src)).returncode == 0
    snaps = json.loads(tv(reader, "snapshots", "--json").stdout)
    assert len(snaps) == 6
    out = tmp_path / "final"
    assert tv(reader, "restore", "latest", str(out)).returncode == 0
    assert (out / str(src).lstrip("/") / "f.bin").read_bytes() == (src / "f.bin").read_bytes()


def test_read_only_installation_refuses_writes(tmp_path: Path) -> None:
    writer, reader = tmp_path / "writer", tmp_path / "reader"
    a, src = tmp_path / "A", tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    assert tv(writer, "init", str(a)).returncode == 0
    assert tv(reader, "attach", str(a), "--read-only").returncode == 0
    before = sorted(str(p) for p in a.rglob("*"))
    for args in (("backup", str(src)), ("forget", "--keep-last", "1"), ("prune",),
                 ("sync",), ("check", "--repair")):
        p = tv(reader, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert "restore-only" in p.stderr and "Traceback" not in p.stderr
    assert sorted(str(p) for p in a.rglob("*")) == before
