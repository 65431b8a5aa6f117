"""Backup counts (issue 8 item 19), through the CLI.

new = not in the parent snapshot (same host and paths); changed = in the parent
with other content; unchanged = the parent's content, whether the files cache
let the backup skip reading the file or not. Unreadable files are in none of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import backup, describe, init_vault, run_tv

OLD_NS = 1_500_000_000 * 10**9


def _counts(s: dict[str, object]) -> tuple[object, object, object]:
    return s["files_new"], s["files_changed"], s["files_unmodified"]


def _fresh_tree(src: Path) -> None:
    """Files that look just written: the files cache does not trust their mtimes
    (dated a little ahead, so that they stay "recent" however slow the machine)."""
    (src / "sub").mkdir(parents=True)
    soon = time.time_ns() + 600 * 10**9
    for i in range(5):
        f = src / ("sub" if i % 2 else ".") / f"f{i}.txt"
        f.write_bytes(b"content %d\n" % i)
        os.utime(f, ns=(soon, soon))


def test_recently_modified_files_count_unchanged_on_the_next_backup(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _fresh_tree(src)
    home, _ = init_vault(tmp_path)
    assert _counts(backup(home, str(src))) == (5, 0, 0)
    again = backup(home, str(src))
    # Re-read for safety (the racy-mtime rule) or skipped: either way unchanged.
    assert _counts(again) == (0, 0, 5), again
    assert again["total_files_processed"] == 5
    # The text summary says the same.
    proc = run_tv(home, "backup", str(src))
    assert proc.returncode == 0, describe(proc)
    assert "(0 new, 0 changed, 5 unchanged)" in proc.stdout, describe(proc)


def test_no_cache_counts_unchanged_files_as_unchanged(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _fresh_tree(src)
    for root, _dirs, files in os.walk(src):
        for f in files:
            os.utime(os.path.join(root, f), ns=(OLD_NS, OLD_NS))
    home, _ = init_vault(tmp_path)
    backup(home, str(src))
    s = backup(home, "--no-cache", str(src))
    assert s["bytes_read"] == s["total_bytes_processed"] > 0  # everything was read...
    assert _counts(s) == (0, 0, 5), s  # ...and found to be the parent's content


def test_changed_and_new_against_the_parent(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _fresh_tree(src)
    home, _ = init_vault(tmp_path)
    backup(home, str(src))
    st = (src / "f0.txt").stat()
    (src / "f0.txt").write_bytes(b"other content\n")
    os.utime(src / "f0.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # only content tells
    (src / "sub" / "added.txt").write_bytes(b"new\n")  # a recent mtime: read
    (src / "sub" / "f1.txt").unlink()
    s = backup(home, str(src))
    assert _counts(s) == (1, 1, 3), s
    s = backup(home, "--no-cache", str(src))
    assert _counts(s) == (0, 0, 5), s


def test_without_a_parent_every_file_is_new(tmp_path: Path) -> None:
    """The parent has the same paths and host: another path set has none, even
    where the files cache knows the files (they are not read again)."""
    src = tmp_path / "src"
    _fresh_tree(src)
    for root, _dirs, files in os.walk(src):
        for f in files:
            os.utime(os.path.join(root, f), ns=(OLD_NS, OLD_NS))
    home, _ = init_vault(tmp_path)
    backup(home, str(src))
    sub = backup(home, str(src / "sub"))
    assert _counts(sub) == (2, 0, 0), sub
    assert sub["bytes_read"] == 0  # the cache still saved the reads
    other_host = backup(home, "--host", "elsewhere", str(src))
    assert _counts(other_host) == (5, 0, 0), other_host
    assert _counts(backup(home, "--host", "elsewhere", str(src))) == (0, 0, 5)


def _without_dac_override() -> list[str] | None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_unreadable_files_are_not_counted(tmp_path: Path) -> None:
    wrapper = _without_dac_override() if os.geteuid() == 0 else []
    if wrapper is None:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (setpriv missing)")
    src = tmp_path / "src"
    _fresh_tree(src)
    locked = src / "locked.txt"
    locked.write_bytes(b"nobody may read this")
    locked.chmod(0)
    home, _ = init_vault(tmp_path)
    for expected in ((5, 0, 0), (0, 0, 5)):
        proc = run_tv(home, "--json", "backup", str(src), wrapper=wrapper)
        assert proc.returncode == 6, describe(proc)
        import json

        s = json.loads(proc.stdout)
        assert _counts(s) == expected, s
        assert s["total_files_processed"] == 5
        assert [w["path"] for w in s["warnings"]] == [str(locked)]
