"""restic's backup options (issue 8 item 24, backup part), through the CLI:
--dry-run, --files-from(-verbatim/-raw), --exclude-if-present, --exclude-caches,
--exclude-larger-than, --iexclude, --host, --stdin/--stdin-filename, and the
same filters on the daemon's ``set add``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.helpers import (
    _BOOT,
    FAST_RETRY,
    backup,
    describe,
    init_vault,
    ok,
    one_line_error,
    restore,
    run_tv,
    tv_env,
    tv_json,
    under,
)

SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


@pytest.fixture
def vault(tmp_path: Path) -> tuple[Path, Path]:
    return init_vault(tmp_path)


def _listed(home: Path, snap: str = "latest") -> set[str]:
    return {e["path"] for e in tv_json(home, "ls", snap)}


def _vault_files(vault: Path) -> dict[str, bytes]:
    return {str(p.relative_to(vault)): p.read_bytes() for p in sorted(vault.rglob("*"))
            if p.is_file()}


def test_dry_run_counts_and_writes_nothing(tmp_path: Path, vault: tuple[Path, Path]) -> None:
    home, vdir = vault
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha\n")
    (src / "b.bin").write_bytes(os.urandom(100_000))
    before = _vault_files(vdir)
    s = tv_json(home, "backup", "--dry-run", str(src))
    assert s["dry_run"] is True and s["snapshot_id"] is None
    assert (s["files_new"], s["files_changed"], s["files_unmodified"]) == (2, 0, 0)
    assert s["data_added"] >= 100_000
    assert _vault_files(vdir) == before, "a dry run wrote to the vault"
    cache = home / "files-cache.db"
    if cache.exists():  # opened for lookups; nothing recorded
        with sqlite3.connect(cache) as db:
            assert db.execute("SELECT count(*) FROM files").fetchone() == (0,)
    assert tv_json(home, "snapshots") == []
    proc = ok(run_tv(home, "backup", "-n", str(src)))
    assert proc.stdout.startswith("dry run: would save 2 files (2 new, 0 changed, 0 unchanged)")
    assert "nothing was written" in proc.stdout
    # After a real backup, a dry run sees the files as unchanged and adds nothing.
    backup(home, str(src))
    (src / "c.txt").write_bytes(b"gamma\n")
    s = tv_json(home, "backup", "--dry-run", str(src))
    assert (s["files_new"], s["files_changed"], s["files_unmodified"]) == (1, 0, 2)
    assert s["data_added"] < 4096
    assert len(tv_json(home, "snapshots")) == 1


def test_files_from_and_files_from_raw(tmp_path: Path, vault: tuple[Path, Path]) -> None:
    home, _ = vault
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "one.odt").write_bytes(b"1")
    (src / "docs" / "two.odt").write_bytes(b"2")
    (src / "docs" / "skip.tmp").write_bytes(b"x")
    (src / "notes.txt").write_bytes(b"n")
    (src / "other.txt").write_bytes(b"o")
    odd = src / "line\nbreak.txt"
    odd.write_bytes(b"odd")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my files\n\n{src}/docs/*.odt\n{src}/notes.txt\n{src}/nothing-*\n")
    proc = run_tv(home, "--json", "backup", "--files-from", str(listing))
    assert proc.returncode == 0, describe(proc)
    assert "nothing-*" in proc.stderr  # a pattern that matches nothing is named...
    s = json.loads(proc.stdout)
    assert s["complete"] is True and s["files_new"] == 3  # ...and skipped, as restic does
    assert sorted(s["paths"]) == sorted([f"{src}/docs/one.odt", f"{src}/docs/two.odt",
                                         f"{src}/notes.txt"])
    files = {p for p in _listed(home) if p.startswith(str(src) + "/")}
    assert files == {f"{src}/docs", f"{src}/docs/one.odt", f"{src}/docs/two.odt",
                     f"{src}/notes.txt"}

    raw = tmp_path / "list.raw"
    raw.write_bytes(os.fsencode(odd) + b"\0" + os.fsencode(src / "other.txt") + b"\0")
    s = tv_json(home, "backup", "--files-from-raw", str(raw))
    assert s["files_new"] == 2
    assert {os.fsdecode(odd), str(src / "other.txt")} <= _listed(home)

    # Combined with PATHS; an empty list and no PATHS is a usage error.
    s = tv_json(home, "backup", "--files-from", str(listing), str(src / "other.txt"))
    assert s["total_files_processed"] == 4
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    line = one_line_error(run_tv(home, "backup", "--files-from", str(empty)))
    assert "nothing to back up" in line
    line = one_line_error(run_tv(home, "backup", "--files-from", str(tmp_path / "nope")))
    assert "cannot read" in line


def test_exclude_if_present_and_exclude_caches(tmp_path: Path, vault: tuple[Path, Path]) -> None:
    home, _ = vault
    src = tmp_path / "src"
    for d in ("keep", "tagged", "headed", "wrong-header", "cache", "fake-cache"):
        (src / d).mkdir(parents=True)
        (src / d / "data.txt").write_bytes(b"data")
    (src / "tagged" / ".nobackup").write_bytes(b"")
    (src / "headed" / ".skipme").write_bytes(b"SKIP this directory")
    (src / "wrong-header" / ".skipme").write_bytes(b"not the header")
    (src / "cache" / "CACHEDIR.TAG").write_bytes(SIGNATURE + b"\n# a cache\n")
    (src / "fake-cache" / "CACHEDIR.TAG").write_bytes(b"Signature: not the right one\n")
    s = tv_json(home, "backup", "--exclude-if-present", ".nobackup",
                "--exclude-if-present", ".skipme:SKIP", "--exclude-caches", str(src))
    assert s["complete"] is True
    dirs = {Path(p).name for p in _listed(home) if Path(p).parent == src}
    assert dirs == {"keep", "wrong-header", "fake-cache"}
    # Without the options everything is there.
    tv_json(home, "backup", str(src))
    dirs = {Path(p).name for p in _listed(home) if Path(p).parent == src}
    assert dirs == {"keep", "tagged", "headed", "wrong-header", "cache", "fake-cache"}


def test_exclude_larger_than_and_iexclude(tmp_path: Path, vault: tuple[Path, Path]) -> None:
    home, _ = vault
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.txt").write_bytes(b"s" * 1000)
    (src / "edge.txt").write_bytes(b"e" * 1024)
    (src / "big.bin").write_bytes(b"b" * 1025)
    for name in ("photo.jpg", "Photo.JPG", "movie.Mp4", "keep.txt.bak"):
        (src / name).write_bytes(b"p")
    s = tv_json(home, "backup", "--exclude-larger-than", "1k", "--iexclude", "*.JPG",
                "--iexclude", "*.mp4", str(src))
    names = {Path(p).name for p in _listed(home) if Path(p).parent == src}
    assert names == {"small.txt", "edge.txt", "keep.txt.bak"}, names
    assert s["total_files_processed"] == 3
    # --exclude stays case-sensitive.
    tv_json(home, "backup", "--exclude", "*.JPG", str(src))
    names = {Path(p).name for p in _listed(home) if Path(p).parent == src}
    assert "photo.jpg" in names and "Photo.JPG" not in names
    ifile = tmp_path / "iex.txt"
    ifile.write_text("*.BIN\n# comment\n")
    tv_json(home, "backup", "--iexclude-file", str(ifile), str(src))
    assert str(src / "big.bin") not in _listed(home)
    line = one_line_error(run_tv(home, "backup", "--exclude-larger-than", "huge", str(src)))
    assert "exclude-larger-than" in line
    assert run_tv(home, "backup", "--exclude-larger-than", "huge", str(src)).returncode == 2


def test_host_is_recorded_and_selects_the_parent(tmp_path: Path,
                                                  vault: tuple[Path, Path]) -> None:
    home, _ = vault
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"f")
    s = tv_json(home, "backup", "--host", "laptop-7", str(src))
    assert s["hostname"] == "laptop-7"
    snaps = tv_json(home, "snapshots", "--host", "laptop-7")
    assert [x["hostname"] for x in snaps] == ["laptop-7"]
    assert snaps[0]["id"] == s["snapshot_id"]
    again = tv_json(home, "backup", "--host", "laptop-7", str(src))
    assert again["parent"] == s["snapshot_id"]
    assert tv_json(home, "backup", str(src))["parent"] is None  # this host's first


def test_stdin_backup(tmp_path: Path, vault: tuple[Path, Path]) -> None:
    home, _ = vault
    dump = os.urandom(3 * 1024 * 1024) + b"-- end of dump\n"
    proc = run_tv(home, "--json", "backup", "--stdin", "--stdin-filename", "db.sql",
                  input=dump)
    assert proc.returncode == 0, describe(proc)
    s = json.loads(proc.stdout)
    assert s["paths"] == ["/db.sql"] and s["files_new"] == 1
    assert s["total_bytes_processed"] == len(dump)
    entries = tv_json(home, "ls", "latest")
    assert [(e["path"], e.get("size")) for e in entries] == [("/db.sql", len(dump))]
    target = tmp_path / "out"
    restore(home, "latest", str(target))
    assert Path(os.fsdecode(under(target, "/db.sql"))).read_bytes() == dump
    # The same dump again: unchanged against the parent, nothing new stored.
    s = json.loads(ok(run_tv(home, "--json", "backup", "--stdin", "--stdin-filename",
                             "db.sql", input=dump)).stdout)
    assert (s["files_new"], s["files_changed"], s["files_unmodified"]) == (0, 0, 1)
    assert s["data_added"] < 4096
    # The default name is "stdin", as restic's.
    s = json.loads(ok(run_tv(home, "--json", "backup", "--stdin", input=b"x")).stdout)
    assert s["paths"] == ["/stdin"]
    for bad in (["--stdin", str(tmp_path)], ["--stdin", "--stdin-filename", "a/b"],
                ["--stdin-filename", "x", str(tmp_path)], []):
        proc = run_tv(home, "backup", *bad, input=b"")
        assert proc.returncode == 2, describe(proc)
        one_line_error(proc)


def test_set_add_takes_the_filters(tmp_path: Path, vault: tuple[Path, Path]) -> None:
    home, _ = vault
    src = tmp_path / "src"
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "CACHEDIR.TAG").write_bytes(SIGNATURE)
    (src / "tagged").mkdir()
    (src / "tagged" / ".nobackup").write_bytes(b"")
    (src / "big.bin").write_bytes(b"b" * 5000)
    (src / "PIC.JPG").write_bytes(b"p")
    (src / "x.log").write_bytes(b"l")
    (src / "keep.txt").write_bytes(b"k")
    exfile = tmp_path / "excludes.txt"
    exfile.write_text("# logs\n*.log\n")
    res = tv_json(home, "set", "add", "docs", str(src), "--exclude-file", str(exfile),
                  "--iexclude", "*.jpg", "--exclude-if-present", ".nobackup",
                  "--exclude-caches", "--exclude-larger-than", "4k")
    assert res["excludes"] == ["*.log"]
    doc = tomllib.loads((home / "config.toml").read_text())["sets"]["docs"]
    assert doc["iexcludes"] == ["*.jpg"] and doc["exclude_caches"] is True
    assert doc["exclude_if_present"] == [".nobackup"] and doc["exclude_larger_than"] == 4096
    # A real daemon runs the set: the filters reach its backup.
    daemon = subprocess.Popen([sys.executable, "-c", _BOOT, "--home", str(home), *FAST_RETRY,
                               "daemon", "--probe-interval", "0.5", "--tick", "0.1"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=tv_env())
    try:
        deadline = time.monotonic() + 60
        while not (home / "daemon.json").exists():
            assert daemon.poll() is None and time.monotonic() < deadline, "no daemon"
            time.sleep(0.1)
        ok(run_tv(home, "run", "docs", "--wait"))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    names = {Path(p).name for p in _listed(home) if Path(p).parent == src}
    assert names == {"keep.txt"}, names
    line = one_line_error(run_tv(home, "set", "add", "bad", str(src),
                                 "--exclude-larger-than", "lots"))
    assert "exclude-larger-than" in line


def test_one_file_system_leaves_a_mount_point_empty(tmp_path: Path,
                                                    vault: tuple[Path, Path]) -> None:
    """-x: a directory on another file system is kept as an empty directory
    (trial 4 found the flag did nothing: the device was never recorded)."""
    home, _vdir = vault
    src = tmp_path / "src"
    (src / "mnt").mkdir(parents=True)
    (src / "here.txt").write_bytes(b"on the source's file system\n")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tvx", str(src / "mnt")],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (src / "mnt" / "other.txt").write_bytes(b"on another file system\n")
        (src / "mnt" / "deeper").mkdir()
        ok(run_tv(home, "backup", "-x", str(src)))
        listed = _listed(home)
        assert {str(src / "here.txt"), str(src / "mnt")} <= listed
        assert not any(p.startswith(str(src / "mnt") + "/") for p in listed), listed
        ok(run_tv(home, "backup", str(src)))  # without -x the mount is walked
        assert str(src / "mnt" / "other.txt") in _listed(home)
    finally:
        subprocess.run(["umount", str(src / "mnt")], check=False)


def test_a_files_cache_damaged_inside_is_rebuilt(tmp_path: Path,
                                                 vault: tuple[Path, Path]) -> None:
    """A files cache whose header is intact but whose pages are garbage (trial 4:
    "database disk image is malformed" and a traceback) is dropped and rebuilt:
    the backup completes, reading the files again."""
    home, _vdir = vault
    src = tmp_path / "src"
    for d in range(20):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(30):
            (src / f"d{d}" / f"f{f}.txt").write_bytes(os.urandom(100))
            os.utime(src / f"d{d}" / f"f{f}.txt", (time.time() - 60,) * 2)
    ok(run_tv(home, "backup", str(src)))
    cache = home / "files-cache.db"
    for suffix in ("-wal", "-shm"):
        Path(str(cache) + suffix).unlink(missing_ok=True)
    raw = bytearray(cache.read_bytes())
    assert len(raw) > 3 * 4096
    raw[4096:] = os.urandom(len(raw) - 4096)   # header page intact, the rest garbage
    cache.write_bytes(bytes(raw))
    (src / "d0" / "f0.txt").write_bytes(b"changed after the damage")
    s = tv_json(home, "backup", str(src))
    assert s["complete"] is True
    target = tmp_path / "restored"
    ok(run_tv(home, "restore", "latest", str(target)))
    assert (Path(os.fsdecode(under(target, src))) / "d0" / "f0.txt").read_bytes() == \
        b"changed after the damage"
    # ... and the cache works again: the next backup reads nothing.
    s = tv_json(home, "backup", str(src))
    assert s["files_new"] + s["files_changed"] == 0
