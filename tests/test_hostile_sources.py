"""Backing up hostile source trees through the CLI: odd names, special files, moving targets.

What a user's disk may hold, and what the backup must do with it:

- names with newlines, control bytes, invalid UTF-8, 255-byte components and a
  path of about 4,000 bytes: stored and restored byte for byte;
- FIFOs and UNIX sockets: recorded, never opened for reading (a FIFO with no
  writer would block a reader forever), so the backup never hangs;
- files that grow, shrink, are replaced or vanish while being read: the backup
  completes (exit 0, or 6 with a warning when it noticed), and whatever it
  stored is a state the file really had (checked with a file whose byte at
  offset i is always the same, whatever its length);
- files whose size lies (/proc reports 0 bytes, /sys 4096): the content read is
  stored and restored, a symlink to /proc/self/status is not followed;
- files and directories the user may not read (the backup runs as ``nobody``):
  the backup completes with one warning per item and exit code 6, the
  snapshot is marked partial, and everything readable restores exactly.

Every CLI run has a timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import describe, ok, run_tv, under

#: A hang shows up as a timeout, not as a stuck suite.
TIMEOUT = 120


def tree_state(root: bytes) -> dict[bytes, tuple[Any, ...]]:
    """relative path (bytes) -> (kind, content / target / rdev, permission bits)."""
    out: dict[bytes, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), mode)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None, mode)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p), None)
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("fifo", None, mode)
            elif stat.S_ISCHR(st.st_mode):
                out[rel] = ("chardev", st.st_rdev, mode)
            elif stat.S_ISSOCK(st.st_mode):
                out[rel] = ("socket", None, mode)
            else:
                out[rel] = ("other", None, mode)
    return out


def last_snapshot(home: Path) -> dict[str, Any]:
    snaps = json.loads(ok(run_tv(home, "--json", "snapshots", timeout=TIMEOUT)).stdout)
    return snaps[-1]  # type: ignore[no-any-return]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short absolute path, readable by every user (tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="tvh-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _init(base: Path, name: str = "v") -> tuple[Path, Path]:
    home, vault = base / f"{name}-home", base / name
    ok(run_tv(home, "init", vault, timeout=TIMEOUT))
    return home, vault


# -- names and special files ------------------------------------------------------------------

ODD_NAMES = [
    b"new\nline", b"\n", b"ctrl\x01\x02\x03\x1b[31mred\x1b[0m", b"tab\there", b"cr\rhere",
    b"del\x7f", b"\xff\xfe not utf-8 \x80", b"latin1 caf\xe9", b" leading space",
    b"trailing space ", b"-starts-with-dash", b"glob*?[x]", b"back\\slash", b"quote\"'`$(x)",
    b"percent%s%n", "emoji-\U0001F600".encode(), b"a" * 255, b"\xc3" * 255, b"...",
    b".hidden", b"~",
]


def _make_odd_tree(src: bytes, depth_target: int) -> bytes:
    """Odd names, special files and a deep path; returns the deep file's path."""
    os.makedirs(src)
    for i, name in enumerate(ODD_NAMES):
        with open(os.path.join(src, name), "wb") as f:
            f.write(name + b" content %d\n" % i)
    d = os.path.join(src, b"dir \n\x01\xff")
    os.mkdir(d)
    for name in ODD_NAMES[:6]:
        os.mkdir(os.path.join(d, name + b".d"))
        with open(os.path.join(d, name + b".d", name), "wb") as f:
            f.write(os.urandom(100))
    os.symlink(b"target with\nnewline and \xff", os.path.join(src, b"link\n"))
    os.symlink(b"a" * 255, os.path.join(src, b"link-to-long"))
    os.symlink(b"/proc/self/status", os.path.join(src, b"proc-link"))
    os.mkfifo(os.path.join(src, b"fifo\nno writer"))
    os.mkfifo(os.path.join(src, b"fifo2"))
    os.mknod(os.path.join(src, b"null-dev"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.path.join(src, b"sock"))
    sock.close()
    # A path of about ``depth_target`` bytes made of 200-byte components.
    deep = os.path.join(src, b"deep")
    while len(deep) + 201 + 20 < depth_target:
        deep = os.path.join(deep, b"d" * 190 + b"%010d" % len(deep))
    os.makedirs(deep)
    leaf = os.path.join(deep, b"x" * max(1, depth_target - len(deep) - 1))
    with open(leaf, "wb") as f:
        f.write(b"the deepest file\n")
    return leaf


def test_odd_names_special_files_and_a_4000_byte_path(short_dir: Path) -> None:
    src = os.path.join(os.fsencode(short_dir), b"src")
    leaf = _make_odd_tree(src, 4000)
    assert 3990 <= len(leaf) <= 4000
    home, _vault = _init(short_dir)
    start = time.monotonic()
    proc = run_tv(home, "--json", "backup", src, timeout=TIMEOUT)
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60
    summary = json.loads(proc.stdout)
    assert summary["complete"] and summary["warnings"] == []

    # The listing names the odd entries byte for byte (JSON keeps undecodable bytes
    # as surrogate escapes of the file system encoding).
    ls = json.loads(ok(run_tv(home, "--json", "ls", "latest", timeout=TIMEOUT)).stdout)
    kinds = {os.fsencode(e["path"]): e["type"] for e in ls}
    assert kinds[os.path.join(src, b"sock")] == "socket"
    assert kinds[os.path.join(src, b"fifo\nno writer")] == "fifo"
    assert kinds[leaf] == "file"

    # Restore into a short target so the 4,000-byte path still fits PATH_MAX.
    target = os.fsencode(short_dir) + b"/r"
    proc = run_tv(home, "--json", "restore", "latest", target, timeout=TIMEOUT)
    assert proc.returncode == 0, describe(proc)
    before, after = tree_state(src), tree_state(under(Path(os.fsdecode(target)), src))
    before.pop(b"sock")  # sockets belong to the process that made them: not recreated
    assert after == before
    with open(under(Path(os.fsdecode(target)), leaf), "rb") as f:
        assert f.read() == b"the deepest file\n"


def test_fifo_given_as_a_backup_path_is_not_read(short_dir: Path) -> None:
    """A FIFO named on the command line (nobody ever writes to it) must not block."""
    fifo = short_dir / "lonely-fifo"
    os.mkfifo(fifo)
    home, _vault = _init(short_dir)
    proc = run_tv(home, "--json", "backup", fifo, timeout=60)
    assert proc.returncode == 0, describe(proc)
    ls = json.loads(ok(run_tv(home, "--json", "ls", "latest", str(fifo))).stdout)
    assert [e["type"] for e in ls if e["path"] == str(fifo)] == ["fifo"]


# -- files changing while they are read ----------------------------------------------------------

_BLOCK = os.urandom((1 << 20) + 7)  # not a power of two: chunks never line up with it


def pattern(n: int) -> bytes:
    """The first ``n`` bytes of the pattern every version of the moving file follows."""
    reps = n // len(_BLOCK) + 1
    return (_BLOCK * reps)[:n]


class Mutator(threading.Thread):
    """Keeps resizing (and now and then replacing) files while a backup reads them.

    Every byte ever written at offset i is ``pattern(...)[i]``, so any read of the
    file, however it interleaves with the changes, is a prefix of the pattern.
    """

    def __init__(self, paths: list[Path], size: int) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.size = size
        self.stop = threading.Event()
        self.rounds = 0
        self.full = pattern(size + (8 << 20))

    def run(self) -> None:
        import random

        rnd = random.Random(1)
        while not self.stop.is_set():
            p = rnd.choice(self.paths)
            action = rnd.choice(["shrink", "grow", "grow", "replace", "vanish"])
            try:
                if action == "shrink":  # (truncating to more than the size would add zeros)
                    os.truncate(p, rnd.randrange(0, os.path.getsize(p) + 1))
                elif action == "grow":
                    cur = os.path.getsize(p)
                    new = rnd.randrange(cur, cur + (8 << 20))
                    with open(p, "r+b") as f:
                        f.seek(cur)
                        f.write(self.full[cur:new])
                elif action == "replace":
                    tmp = p.with_suffix(".tmp")
                    tmp.write_bytes(self.full[:rnd.randrange(0, self.size)])
                    os.replace(tmp, p)
                else:
                    p.unlink()
                    time.sleep(0.005)
                    p.write_bytes(self.full[:rnd.randrange(0, self.size)])
            except FileNotFoundError:
                pass
            self.rounds += 1
            time.sleep(0.002)


def test_files_changing_while_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 24 << 20
    moving = [src / f"moving{i}.bin" for i in range(3)]
    for p in moving:
        p.write_bytes(pattern(size))
    stable = {src / f"stable{i}.txt": os.urandom(1000 * (i + 1)) for i in range(20)}
    for p, data in stable.items():
        p.write_bytes(data)
    home, _vault = _init(tmp_path)

    mut = Mutator(moving, size)
    mut.start()
    try:
        results = []
        for _ in range(2):  # the second run also meets the files cache
            proc = run_tv(home, "--json", "backup", src, timeout=TIMEOUT)
            assert proc.returncode in (0, 6), describe(proc)
            assert "Traceback" not in proc.stderr
            results.append(json.loads(proc.stdout))
    finally:
        mut.stop.set()
        mut.join()
    assert mut.rounds > 10  # the files really were moving during the backups

    for summary in results:
        # A noticed change is a warning and makes the snapshot partial (exit 6).
        assert summary["complete"] == (summary["warnings"] == [])
        for w in summary["warnings"]:
            assert "moving" in w["path"], w

    for summary in results:
        target = tmp_path / f"restore-{summary['short_id']}"
        proc = run_tv(home, "--json", "restore", summary["snapshot_id"], target, timeout=TIMEOUT)
        assert proc.returncode == 0, describe(proc)
        restored = Path(os.fsdecode(under(target, src)))
        for p, data in stable.items():
            assert (restored / p.name).read_bytes() == data
        warned = {Path(w["path"]).name for w in summary["warnings"]}
        for p in moving:
            r = restored / p.name
            if not r.exists():  # it vanished or was replaced at the wrong moment
                continue
            got = r.read_bytes()
            want = pattern(len(got))
            if p.name in warned:
                # A read racing a truncate may see zeros where the data was cut
                # off (Linux); the backup noticed the change and said so.
                assert all(a == b or a == 0 for a, b in zip(got, want, strict=True))
            else:
                assert got == want, f"{p.name}: changed unnoticed, or stored wrongly"


def test_proc_and_sys_files_whose_size_lies(tmp_path: Path) -> None:
    """/proc files say 0 bytes and /sys ones 4096: what was read is what is restored."""
    paths = ["/proc/version", "/proc/filesystems", "/proc/cpuinfo"]
    if os.path.exists("/sys/kernel/address_bits"):
        paths.append("/sys/kernel/address_bits")
    src = tmp_path / "src"
    src.mkdir()
    (src / "status-link").symlink_to("/proc/self/status")
    (src / "plain.txt").write_bytes(b"plain\n")
    home, _vault = _init(tmp_path)
    proc = run_tv(home, "--json", "backup", *paths, src, timeout=TIMEOUT)
    # The size changed between stat and read, which the backup may report (exit 6).
    assert proc.returncode in (0, 6), describe(proc)
    assert "Traceback" not in proc.stderr
    target = tmp_path / "r"
    ok(run_tv(home, "--json", "restore", "latest", target, timeout=TIMEOUT))
    for p in ("/proc/version", "/proc/filesystems", "/sys/kernel/address_bits"):
        if p in paths:
            got = Path(os.fsdecode(under(target, p))).read_bytes()
            assert got == Path(p).read_bytes() and got, p
    cpuinfo = Path(os.fsdecode(under(target, "/proc/cpuinfo"))).read_bytes()
    assert len(cpuinfo) > 20 and b":" in cpuinfo, cpuinfo[:100]  # not the 0 bytes stat says
    link = Path(os.fsdecode(under(target, src / "status-link")))
    assert link.is_symlink() and os.readlink(link) == "/proc/self/status"
    assert Path(os.fsdecode(under(target, src / "plain.txt"))).read_bytes() == b"plain\n"


# -- permission denied --------------------------------------------------------------------------

#: Root without the capabilities that bypass file permissions. (Running as
#: ``nobody`` is not possible here: the interpreter lives under /root, mode 0700.)
#: For such a process, permission bits apply to root-owned files as to anyone's.
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
          "--inh-caps", "-dac_override,-dac_read_search", "--"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop CAP_DAC_OVERRIDE")
def test_unreadable_files_and_directories(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "ok-dir" / "sub").mkdir(parents=True)
    readable = {
        src / "ok.txt": b"readable\n",
        src / "ok-dir" / "a.bin": os.urandom(5000),
        src / "ok-dir" / "sub" / "b.txt": b"deeper\n",
    }
    for p, data in readable.items():
        p.write_bytes(data)
    secret = src / "secret.txt"  # cannot be opened
    secret.write_bytes(b"nobody may read this\n")
    secret.chmod(0o000)
    big_secret = src / "big-secret.bin"  # cannot be opened either (the streamed path)
    big_secret.write_bytes(os.urandom(9 << 20))
    big_secret.chmod(0o200)
    locked = src / "locked-dir"  # cannot be listed
    locked.mkdir()
    (locked / "inside.txt").write_bytes(b"x")
    locked.chmod(0o000)
    list_only = src / "list-only-dir"  # names can be listed, entries not examined
    list_only.mkdir()
    (list_only / "hidden.txt").write_bytes(b"y")
    list_only.chmod(0o400)
    home, _vault = _init(tmp_path)
    try:
        probe = subprocess.run([*NO_DAC, "cat", str(secret)], capture_output=True)
        assert probe.returncode != 0, "dropping CAP_DAC_OVERRIDE did not take effect"

        proc = run_tv(home, "backup", src, wrapper=NO_DAC, timeout=TIMEOUT)
        assert proc.returncode == 6, describe(proc)
        assert "Traceback" not in proc.stderr
        err = proc.stderr
        for name in ("secret.txt", "big-secret.bin", "locked-dir", "hidden.txt"):
            assert name in err, describe(proc)
        assert "incomplete" in err, describe(proc)

        proc = run_tv(home, "--json", "backup", src, wrapper=NO_DAC, timeout=TIMEOUT)
        assert proc.returncode == 6, describe(proc)
        summary = json.loads(proc.stdout)
        assert not summary["complete"]
        warned = {Path(w["path"]).name for w in summary["warnings"]}
        assert warned == {"secret.txt", "big-secret.bin", "locked-dir", "hidden.txt"}, summary
        assert all("denied" in w["message"].lower() for w in summary["warnings"]), summary
        assert last_snapshot(home)["complete"] is False
    finally:
        for d in (locked, list_only):
            d.chmod(0o755)

    target = tmp_path / "r"
    ok(run_tv(home, "--json", "restore", "latest", target, timeout=TIMEOUT))
    restored = Path(os.fsdecode(under(target, src)))
    for p, data in readable.items():
        assert (restored / p.relative_to(src)).read_bytes() == data
    assert not (restored / "secret.txt").exists()
    assert not (restored / "big-secret.bin").exists()
    assert not (restored / "locked-dir").exists()
    assert (restored / "list-only-dir").is_dir()
    assert not (restored / "list-only-dir" / "hidden.txt").exists()


def test_backup_of_a_tree_with_a_fifo_in_a_busy_directory_finishes(short_dir: Path) -> None:
    """Many FIFOs and sockets among files: none is opened, the backup is quick."""
    src = short_dir / "src"
    src.mkdir()
    for i in range(50):
        os.mkfifo(src / f"fifo{i:02d}")
        (src / f"file{i:02d}").write_bytes(b"%d\n" % i)
    for i in range(5):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(src / f"s{i}"))
        s.close()
    home, _vault = _init(short_dir)
    start = time.monotonic()
    proc = run_tv(home, "--json", "backup", src, timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert time.monotonic() - start < 30
    ls = json.loads(ok(run_tv(home, "--json", "ls", "latest", str(src))).stdout)
    kinds = sorted(e["type"] for e in ls if e["path"] != str(src))
    assert kinds.count("fifo") == 50 and kinds.count("socket") == 5 and kinds.count("file") == 50
