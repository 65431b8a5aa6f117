"""A restore races a process that swaps restored directories for symlinks.

The threat (issue 9, "the client machine"): root restores into a user's home
while the user keeps renaming freshly restored directories away and putting
symlinks to somewhere else (here: ``outside``, standing for a directory the user
could not write) in their place. A restore that walks paths by name follows
those symlinks and creates, replaces and chmods files there. A descriptor-
relative restore must not: ``outside`` keeps exactly its contents (names, bytes,
modes, mtimes), and the restore ends with warnings, not a traceback.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any

from tests.helpers import backup, describe, init_vault, run_tv, under

OUTER, INNER, FILES = 30, 10, 10  # 330 directories, 3,000 files
T2001 = 978_307_200_000_000_000


def fingerprint(root: Path) -> dict[str, tuple[Any, ...]]:
    """Names, types, modes, sizes, mtimes and content hashes of everything below root."""
    out: dict[str, tuple[Any, ...]] = {}
    base = os.fsencode(root)

    def one(p: bytes) -> None:
        st = os.lstat(p)
        body = None
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                body = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(p)
        out[os.fsdecode(os.path.relpath(p, base))] = (
            st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, body)

    one(base)
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            one(os.path.join(dirpath, name))
    return out


def make_source(src: Path) -> None:
    for i in range(OUTER):
        for j in range(INNER):
            d = src / f"d{i:02}" / f"e{j}"
            d.mkdir(parents=True)
            for k in range(FILES):
                (d / f"f{k}").write_bytes(f"restored {i} {j} {k}\n".encode())
        for k in range(FILES):
            (src / f"d{i:02}" / f"f{k}").write_bytes(f"restored {i} {k}\n".encode())
    for p in src.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


def make_outside(outside: Path) -> None:
    """What a swapped directory points to: the same names as a restored directory."""
    for sub in ("", *[f"e{j}" for j in range(INNER)]):
        d = outside / sub
        d.mkdir(parents=True, exist_ok=True)
        for k in range(FILES):
            p = d / f"f{k}"
            p.write_bytes(b"precious, not to be touched\n")
            os.chmod(p, 0o600)
            os.utime(p, ns=(T2001, T2001))
    for d in [outside, *[outside / f"e{j}" for j in range(INNER)]]:
        os.chmod(d, 0o700)
        os.utime(d, ns=(T2001, T2001))


class Swapper(threading.Thread):
    """Keeps renaming restored directories away and symlinking ``outside`` in their place."""

    def __init__(self, base: bytes, outside: Path) -> None:
        super().__init__(daemon=True)
        self.base, self.outside = base, os.fsencode(outside)
        self.done = threading.Event()
        self.swaps = 0

    def swap(self, path: bytes) -> None:
        away = path + b".away"
        try:
            os.rename(path, away)
            os.symlink(self.outside, path)
            self.swaps += 1
        except OSError:
            pass  # raced with the restore (or an earlier swap): try the next one

    def run(self) -> None:
        for _ in range(1_000_000):  # bounded; ends with the restore long before
            if self.done.is_set():
                return
            try:
                tops = [e for e in os.scandir(self.base) if e.is_dir(follow_symlinks=False)
                        and not e.name.endswith(b".away")]
            except OSError:
                continue
            for top in tops:
                try:
                    inner = [e.path for e in os.scandir(top.path)
                             if e.is_dir(follow_symlinks=False)
                             and not e.name.endswith(b".away")]
                except OSError:
                    inner = []
                for p in inner[:3]:
                    self.swap(p)
                if int(top.name[1:]) % 2:
                    self.swap(top.path)


def test_swapping_directories_for_symlinks_never_writes_outside(tmp_path: Path) -> None:
    src, outside, target = tmp_path / "src", tmp_path / "outside", tmp_path / "target"
    make_source(src)
    make_outside(outside)
    home, _vault = init_vault(tmp_path)
    snap = backup(home, src)["snapshot_id"]
    before = fingerprint(outside)

    base = under(target, src)
    os.makedirs(base)
    swapper = Swapper(base, outside)
    swapper.start()
    try:
        proc = run_tv(home, "restore", snap, target)
    finally:
        swapper.done.set()
        swapper.join()

    assert "Traceback" not in proc.stderr, describe(proc)
    assert swapper.swaps > 0, describe(proc)
    assert fingerprint(outside) == before, describe(proc)
    # The swapped directories were noticed: warnings, exit 1.
    assert proc.returncode == 1, describe(proc)
    assert "warning" in proc.stderr.lower() or "error" in proc.stderr.lower(), describe(proc)
    # What the restore did write stayed inside the target.
    restored = [p for p in target.rglob("f0") if not p.is_symlink()]
    assert restored, describe(proc)
