"""Benchmark tiervault beside restic and borg (and, with --two-tier, restic copy/rclone).

Every figure is re-measured in the same run for every tool, on the same data,
with the tools alternating run by run (A B C A B C ...). Each timed step is
preceded by ``sync``; each command runs as a direct child, so its wall time,
CPU time (user+sys) and peak RSS come from ``os.wait4``. Restores go into a
fresh directory on tmpfs (/dev/shm) and are compared byte for byte with the
dataset. See bench/README.md.

    python bench/run.py --scale 0.3 --runs 3 [--two-tier] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gen_dataset  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TIME_BIN = shutil.which("time", path="/usr/bin:/bin")  # GNU time, for CPU and peak RSS
PASSWORD = "bench-passphrase"
FTP_USER = "bench"
FTP_PASS = "bench-secret"


# --------------------------------------------------------------------------- measuring


@dataclass
class Measure:
    """One timed command."""

    wall: float
    cpu: float
    maxrss_kib: int
    rc: int
    info: dict[str, Any] = field(default_factory=dict)


class StepFailed(Exception):
    """A command exited non-zero (or timed out)."""

    def __init__(self, cmd: Sequence[str], rc: int, tail: str, measure: Measure) -> None:
        super().__init__(f"{' '.join(cmd)} -> exit {rc}\n{tail}")
        self.cmd = list(cmd)
        self.rc = rc
        self.tail = tail
        self.measure = measure


class Runner:
    """Runs commands with their output in per-step log files."""

    def __init__(self, logdir: Path, timeout: float, verbose: bool,
                 wait_idle: float = 0.0) -> None:
        self.logdir = logdir
        self.timeout = timeout
        self.verbose = verbose
        self.wait_idle = wait_idle
        logdir.mkdir(parents=True, exist_ok=True)
        self._seq = 0

    def run(self, label: str, cmd: Sequence[str], env: dict[str, str] | None = None,
            cwd: Path | None = None, check: bool = True, timed: bool = True,
            cold: bool = False) -> Measure:
        """Run ``cmd``; if ``timed``, ``sync`` first (and with ``cold``, drop the page
        cache). Raise StepFailed on failure if ``check``."""
        self._seq += 1
        log = self.logdir / f"{self._seq:04d}-{label}.log"
        if timed or cold:
            os.sync()
        waited = wait_until_idle(self.wait_idle) if timed and self.wait_idle > 0 else 0.0
        if cold:
            drop_caches()
        with open(log, "wb") as out:
            out.write(("$ " + " ".join(cmd) + "\n").encode())
            out.flush()
            rusage_file = log.with_suffix(".rusage")
            full = list(cmd)
            if TIME_BIN:
                # Linux keeps the parent's RSS high-water mark across fork+exec, so
                # ru_maxrss of a direct child is at least this (big) process's RSS;
                # /usr/bin/time is small and reports its own child's figures.
                full = [TIME_BIN, "-f", "%e %U %S %M %x", "-o", str(rusage_file), *cmd]
            busy0 = busy_cpu_seconds()
            t0 = time.perf_counter()
            proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd)
            timer = threading.Timer(self.timeout, proc.kill)
            timer.start()
            tree = TreeSampler(proc.pid, skip_root=bool(TIME_BIN))
            try:
                _, status, ru = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
                tree.stop()
            wall = time.perf_counter() - t0
            busy1 = busy_cpu_seconds()
        rc = os.waitstatus_to_exitcode(status)
        proc.returncode = rc  # reaped by wait4: keep Popen from waiting again
        m = Measure(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, rc)
        if TIME_BIN:
            try:
                fields = rusage_file.read_text().split()[-5:]
                m.cpu = float(fields[1]) + float(fields[2])
                m.maxrss_kib = int(fields[3])
            except (OSError, ValueError, IndexError):
                pass
        # Tools with worker processes (tiervault's directory jobs): /usr/bin/time
        # gives the largest process and the CPU of the waited-for ones only; the
        # sampled sum over the whole process tree counts them all (RSS summed, so
        # pages the processes share count once per process: an overstatement).
        m.info["tree_rss_kib"] = tree.peak_rss_kib
        m.info["tree_pss_kib"] = tree.peak_pss_kib
        m.info["tree_cpu"] = round(tree.cpu(), 2)
        m.maxrss_kib = max(m.maxrss_kib, tree.peak_rss_kib)
        m.cpu = max(m.cpu, tree.cpu())
        m.info["log"] = str(log)
        # CPU that other processes used meanwhile, as a share of the machine: a
        # contamination indicator (other test suites, the FTP server, kernel threads).
        m.info["others_cpu"] = round(max(0.0, busy1 - busy0 - m.cpu) / (wall * NCPU), 3)
        if waited:
            m.info["waited_idle"] = round(waited, 1)
        text = log.read_text(errors="replace")
        m.info.update(_last_json(text))
        if self.verbose:
            print(f"    {label:36s} {wall:8.2f} s  cpu {m.cpu:7.2f} s  "
                  f"rss {m.maxrss_kib / 1024:7.1f} MiB  others {m.info['others_cpu']:4.0%}  "
                  f"rc {rc}", file=sys.stderr)
        if check and rc != 0:
            raise StepFailed(cmd, rc, text[-3000:], m)
        return m


NCPU = os.cpu_count() or 1
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeSampler:
    """Samples a process tree every 100 ms: the peak of its summed RSS and each
    process's CPU time (the last sample of each, summed)."""

    def __init__(self, root: int, skip_root: bool = False) -> None:
        self.root = root
        self.skip_root = skip_root
        self.peak_rss_kib = 0
        #: Proportional set size: a page shared by k processes counts 1/k in each,
        #: so the sum over a tree counts every page once.
        self.peak_pss_kib = 0
        self._cpu: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(0.1):
            self._sample()

    def _sample(self) -> None:
        parent: dict[int, int] = {}
        stats: dict[int, list[str]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(name)] = int(fields[1])
            stats[int(name)] = fields
        tree, todo = set(), [self.root]
        children: dict[int, list[int]] = {}
        for pid, pp in parent.items():
            children.setdefault(pp, []).append(pid)
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo.extend(children.get(pid, []))
        rss = pss = 0
        for pid in tree:
            if (pid == self.root and self.skip_root) or pid not in stats:
                continue
            fields = stats[pid]
            self._cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK
            rss += int(fields[21]) * _PAGE // 1024
            pss += _pss_kib(pid)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_pss_kib = max(self.peak_pss_kib, pss)

    def cpu(self) -> float:
        return sum(v for pid, v in self._cpu.items() if pid != self.root or not self.skip_root)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def busy_cpu_seconds() -> float:
    """Non-idle CPU time of the whole machine so far (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def wait_until_idle(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (at most ``max_wait`` s) until the machine is less than ``threshold`` busy
    over one second; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        b0 = busy_cpu_seconds()
        time.sleep(1.0)
        if (busy_cpu_seconds() - b0) / NCPU < threshold:
            break
    return time.monotonic() - t0


def can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches() -> None:
    """Drop the page cache, dentries and inodes (needs root)."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def _last_json(text: str) -> dict[str, Any]:
    """Useful fields of the last JSON object/list line in a command's output, if any."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line or line[0] not in "[{":
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, list):
            copied = sum(int(o.get("bytes_copied") or 0) for o in obj if isinstance(o, dict))
            return {"bytes_copied": copied}
        if isinstance(obj, dict):
            keys = ("data_added", "data_stored", "bytes_read", "files_new", "files_changed",
                    "bytes_restored", "bytes_copied", "complete", "data_added_packed")
            return {k: obj[k] for k in keys if k in obj}
    return {}


def dir_bytes(path: Path) -> int:
    """Apparent size of all regular files below ``path``."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def compare_trees(a: Path, b: Path) -> list[str]:
    """Differences (missing, extra, different content) between two trees; [] if equal."""
    problems: list[str] = []
    for dirpath, dirs, files in os.walk(a):
        rel = Path(dirpath).relative_to(a)
        other = b / rel
        if not other.is_dir():
            problems.append(f"missing dir {rel}")
            dirs[:] = []
            continue
        theirs = set(os.listdir(other))
        for name in files:
            if name not in theirs:
                problems.append(f"missing {rel / name}")
            elif not filecmp.cmp(Path(dirpath) / name, other / name, shallow=False):
                problems.append(f"differs {rel / name}")
        for name in theirs - set(files) - set(dirs):
            problems.append(f"extra {rel / name}")
        if len(problems) > 20:
            break
    return problems


def rmtree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


# --------------------------------------------------------------------------- tools


class Tool:
    """A backup program under test, with a fresh repository per run."""

    name = "?"

    def __init__(self, runner: Runner, work: Path, data: Path) -> None:
        self.r = runner
        self.work = work
        self.data = data
        self.backups = 0

    @property
    def repo(self) -> Path:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def fresh(self) -> Measure:
        """Remove any previous repository/cache/state and create a new repository."""
        raise NotImplementedError

    def backup(self, label: str, cold: bool = False) -> Measure:
        raise NotImplementedError

    def restore(self, target: Path) -> Measure:
        raise NotImplementedError

    def cleanup(self) -> None:
        rmtree(self.work)

    def size(self) -> int:
        return dir_bytes(self.repo)


class Tiervault(Tool):
    name = "tiervault"

    def __init__(self, runner: Runner, work: Path, data: Path,
                 tier_urls: Callable[[], list[str]] | None = None) -> None:
        super().__init__(runner, work, data)
        self.exe = str(VENV_BIN / "tiervault")
        self.home = work / "home"
        self.tier_urls = tier_urls

    @property
    def repo(self) -> Path:
        return self.work / "vault"

    #: Where tiervault's bytecode is cached (None: leave the environment alone).
    pycache: Path | None = None

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e["TIERVAULT_PASSWORD"] = PASSWORD
        e.pop("TIERVAULT_HOME", None)
        if self.pycache is not None:
            # An installed tool runs from .pyc files; this editable checkout under
            # PYTHONDONTWRITEBYTECODE=1 would recompile ~90 modules (~0.06 s CPU)
            # on every command. Cache bytecode outside the source tree instead.
            e.pop("PYTHONDONTWRITEBYTECODE", None)
            e["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        return e

    def tv(self, *args: str) -> list[str]:
        return [self.exe, "--home", str(self.home), "--json", *args]

    def fresh(self) -> Measure:
        rmtree(self.work)
        # Created beforehand: `init` on a missing directory first retries ~15 s
        # ("vault directory is not there"), see RESULTS.md.
        self.repo.mkdir(parents=True)
        urls = [str(self.repo)] + (self.tier_urls() if self.tier_urls else [])
        self.backups = 0
        return self.r.run(f"{self.name}-init", self.tv("init", *urls), self.env())

    def backup(self, label: str, cold: bool = False, extra: Sequence[str] = (),
               pre: Sequence[str] = ()) -> Measure:
        self.backups += 1
        cmd = [self.exe, "--home", str(self.home), "--json", *pre, "backup", *extra,
               str(self.data)]
        return self.r.run(f"{self.name}-{label}", cmd, self.env(), cold=cold)

    def sync(self, label: str) -> Measure:
        return self.r.run(f"{self.name}-{label}", self.tv("sync"), self.env())

    def restore(self, target: Path) -> Measure:
        return self.r.run(f"{self.name}-restore", self.tv("restore", "latest", str(target)),
                          self.env())


class Restic(Tool):
    name = "restic"

    @property
    def repo(self) -> Path:
        return self.work / "repo"

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e.update(RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(self.repo),
                 RESTIC_CACHE_DIR=str(self.work / "cache"))
        return e

    def fresh(self) -> Measure:
        rmtree(self.work)
        self.work.mkdir(parents=True)
        self.backups = 0
        return self.r.run("restic-init", ["restic", "init", "--repository-version", "2"],
                          self.env())

    def backup(self, label: str, cold: bool = False) -> Measure:
        self.backups += 1
        return self.r.run(f"restic-{label}",
                          ["restic", "backup", "--compression", "auto", str(self.data)],
                          self.env(), cold=cold)

    def restore(self, target: Path) -> Measure:
        return self.r.run("restic-restore", ["restic", "restore", "latest", "--target",
                                             str(target)], self.env())

    def copy_to(self, dest: Path) -> Measure:
        """Init ``dest`` with the same chunker parameters (untimed), then ``restic copy``."""
        e = self.env()
        e.update(RESTIC_REPOSITORY=str(dest), RESTIC_FROM_REPOSITORY=str(self.repo),
                 RESTIC_FROM_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(self.work / "cache2"))
        self.r.run("restic-init-copy-dest", ["restic", "init", "--repository-version", "2",
                                             "--copy-chunker-params"], e, timed=False)
        return self.r.run("restic-copy", ["restic", "copy"], e)


class Borg(Tool):
    name = "borg"
    exe = "borg"  # Debian's borg 1.2

    @property
    def repo(self) -> Path:
        return self.work / "repo"

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e.update(BORG_PASSPHRASE=PASSWORD, BORG_REPO=str(self.repo),
                 BORG_BASE_DIR=str(self.work / "base"),
                 BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                 BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                 BORG_CHECK_I_KNOW_WHAT_I_AM_DOING="YES",
                 BORG_DELETE_I_KNOW_WHAT_I_AM_DOING="YES")
        return e

    def fresh(self) -> Measure:
        rmtree(self.work)
        self.work.mkdir(parents=True)
        self.backups = 0
        return self.r.run(f"{self.name}-init", [self.exe, "init", "-e", "repokey"], self.env())

    def backup(self, label: str, cold: bool = False) -> Measure:
        self.backups += 1
        return self.r.run(f"{self.name}-{label}",
                          [self.exe, "create", "--compression", "zstd,3",
                           f"::b{self.backups}", str(self.data)], self.env(), cold=cold)

    def restore(self, target: Path) -> Measure:
        target.mkdir(parents=True, exist_ok=True)
        return self.r.run(f"{self.name}-restore", [self.exe, "extract", f"::b{self.backups}"],
                          self.env(), cwd=target)


#: Where `borg14` finds borg 1.4 (PyPI's borgbackup; README, "borg 1.4"): BORG14 or this.
BORG14_DEFAULT = "/opt/borg14/bin/borg"


class Borg14(Borg):
    """borg 1.4 from PyPI, beside Debian's 1.2 (same commands and options)."""

    name = "borg14"
    exe = os.environ.get("BORG14", BORG14_DEFAULT)


# --------------------------------------------------------------------------- FTP server


class FtpServer:
    """bench/ftp_server.py (pyftpdlib, 550 for a missing directory) on loopback."""

    def __init__(self, root: Path, port: int, log: Path) -> None:
        self.root = root
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    def url(self, path: str) -> str:
        return f"ftp://{FTP_USER}:{FTP_PASS}@127.0.0.1:{self.port}/{path}"

    def start(self) -> None:
        if self.proc is not None:
            return
        cmd = [sys.executable, str(HERE / "ftp_server.py"), "--root", str(self.root),
               "--port", str(self.port), "--user", FTP_USER, "--password", FTP_PASS]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ftp server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("ftp server does not listen") from None
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Rclone:
    """rclone with an on-the-fly :ftp: remote and an empty config."""

    def __init__(self, runner: Runner, work: Path, server: FtpServer) -> None:
        self.r = runner
        self.server = server
        work.mkdir(parents=True, exist_ok=True)
        self.conf = work / "rclone.conf"
        self.conf.touch()
        self.obscured = subprocess.run(["rclone", "obscure", FTP_PASS], check=True,
                                       capture_output=True, text=True).stdout.strip()

    def sync(self, label: str, src: Path, dest: str) -> Measure:
        cmd = ["rclone", "--config", str(self.conf), "sync", str(src), f":ftp:{dest}",
               "--ftp-host=127.0.0.1", f"--ftp-port={self.server.port}",
               f"--ftp-user={FTP_USER}", f"--ftp-pass={self.obscured}"]
        return self.r.run(f"rclone-{label}", cmd)


# --------------------------------------------------------------------------- results


class Results:
    """measure lists keyed by (section, tool, step)."""

    def __init__(self) -> None:
        self.m: dict[str, dict[str, dict[str, list[Measure]]]] = {}
        self.sizes: dict[str, dict[str, dict[str, list[int]]]] = {}
        self.failures: list[dict[str, Any]] = []

    def add(self, section: str, tool: str, step: str, m: Measure) -> Measure:
        self.m.setdefault(section, {}).setdefault(tool, {}).setdefault(step, []).append(m)
        return m

    def add_size(self, section: str, tool: str, what: str, n: int) -> None:
        self.sizes.setdefault(section, {}).setdefault(tool, {}).setdefault(what, []).append(n)

    def get(self, section: str, tool: str, step: str) -> list[Measure]:
        return self.m.get(section, {}).get(tool, {}).get(step, [])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        res = cls()
        for sec, tools in data.get("measures", {}).items():
            for tool, steps in tools.items():
                for step, ms in steps.items():
                    for m in ms:
                        res.add(sec, tool, step, Measure(**m))
        res.sizes = data.get("sizes", {})
        res.failures = data.get("failures", [])
        return res

    def to_json(self) -> dict[str, Any]:
        return {
            "measures": {s: {t: {k: [asdict(x) for x in v] for k, v in steps.items()}
                             for t, steps in tools.items()} for s, tools in self.m.items()},
            "sizes": self.sizes,
            "failures": self.failures,
        }


def fmt_range(vals: Sequence[float], unit: str = "s", prec: int = 2) -> str:
    if not vals:
        return "—"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{prec}f} {unit}"
    return f"{med:.{prec}f} {unit} ({min(vals):.{prec}f}-{max(vals):.{prec}f})"


def ratio(a: Sequence[float], b: Sequence[float]) -> str:
    if not a or not b or statistics.median(b) <= 0 or statistics.median(a) < 0:
        return "—"
    return f"{statistics.median(a) / statistics.median(b):.2f}x"


# --------------------------------------------------------------------------- scenarios


MAIN_STEPS = [
    ("init", "init (vault dir pre-created)"),
    ("backup_initial_cold", "initial backup, cold cache (fresh repo)"),
    ("backup_initial", "initial backup, warm cache (fresh repo)"),
    ("backup_unchanged", "backup, nothing changed"),
    ("backup_mutated", "backup after small mutation"),
    ("restore", "full restore (tmpfs)"),
]


def main_run(tool: Tool, res: Results, data: Path, restore_root: Path, run: int,
             verify: bool, cold: bool) -> None:
    """One run of the single-tier scenario for ``tool``; the dataset is left unmutated."""
    sec = "main"
    mutated = False
    try:
        if cold:
            tool.fresh()
            res.add(sec, tool.name, "backup_initial_cold",
                    tool.backup("backup-initial-cold", cold=True))
        res.add(sec, tool.name, "init", tool.fresh())
        res.add(sec, tool.name, "backup_initial", tool.backup("backup-initial"))
        res.add_size(sec, tool.name, "after initial backup", tool.size())
        res.add(sec, tool.name, "backup_unchanged", tool.backup("backup-unchanged"))
        gen_dataset.mutate(data)
        mutated = True
        res.add(sec, tool.name, "backup_mutated", tool.backup("backup-mutated"))
        res.add_size(sec, tool.name, "after 3 backups", tool.size())
        target = restore_root / f"{tool.name}-{run}"
        rmtree(target)
        target.mkdir(parents=True)
        m = res.add(sec, tool.name, "restore", tool.restore(target))
        restored = target / data.relative_to("/")
        problems = compare_trees(data, restored) if verify else []
        if not verify and dir_bytes(restored) != dir_bytes(data):
            problems = ["restored byte count differs"]
        m.info["verify"] = problems[:5] or "ok"
        if problems:
            res.failures.append({"section": sec, "tool": tool.name, "run": run,
                                 "step": "restore-verify", "problems": problems[:20]})
            print(f"  !! {tool.name} restore differs: {problems[:5]}", file=sys.stderr)
        rmtree(target)
    except StepFailed as e:
        res.failures.append({"section": sec, "tool": tool.name, "run": run, "cmd": e.cmd,
                             "rc": e.rc, "tail": e.tail[-1500:],
                             "wall": e.measure.wall})
        print(f"  !! {tool.name} run {run} failed: {e}", file=sys.stderr)
    finally:
        if mutated:
            gen_dataset.mutate(data)
        tool.cleanup()


def two_tier_run(kind: str, res: Results, runner: Runner, work: Path, data: Path,
                 server: FtpServer, rclone: Rclone | None, run: int) -> None:
    """One run of one two-tier scenario (``kind``); the dataset is left unmutated."""
    sec = "two_tier"
    mutated = False
    try:
        if kind == "tv-single":
            tv = Tiervault(runner, work / "tv1", data)
            tv.fresh()
            res.add(sec, "tiervault", "single_backup", tv.backup("single-backup"))
            res.add_size(sec, "tiervault", "single vault", tv.size())
            tv.cleanup()
        elif kind == "tv-two":
            ftpdir = f"tv2-{run}"
            rmtree(server.root / ftpdir)
            (server.root / ftpdir).mkdir()  # see Tiervault.fresh
            tv = Tiervault(runner, work / "tv2", data, lambda: [server.url(ftpdir)])
            tv.fresh()
            res.add(sec, "tiervault", "two_tier_backup", tv.backup("two-tier-backup"))
            res.add_size(sec, "tiervault", "ftp vault", dir_bytes(server.root / ftpdir))
            res.add(sec, "tiervault", "sync_noop", tv.sync("sync-noop"))
            # offline period: server down, mutated data backed up to the speed vault only
            server.stop()
            gen_dataset.mutate(data)
            mutated = True
            before = dir_bytes(tv.repo)
            res.add(sec, "tiervault", "offline_backup_mutated",
                    tv.backup("offline-backup-mutated", extra=["--no-sync"],
                              pre=["--retry-attempts", "1", "--retry-delay", "0.1"]))
            res.add_size(sec, "tiervault", "offline delta (speed vault growth)",
                         dir_bytes(tv.repo) - before)
            server.start()
            ftp_before = dir_bytes(server.root / ftpdir)
            res.add(sec, "tiervault", "sync_after_offline_mutated",
                    tv.sync("sync-after-offline-mutated"))
            res.add_size(sec, "tiervault", "offline delta uploaded",
                         dir_bytes(server.root / ftpdir) - ftp_before)
            tv.cleanup()
            rmtree(server.root / ftpdir)
        elif kind == "tv-offline-full":
            ftpdir = f"tv3-{run}"
            rmtree(server.root / ftpdir)
            (server.root / ftpdir).mkdir()
            tv = Tiervault(runner, work / "tv3", data, lambda: [server.url(ftpdir)])
            tv.fresh()
            server.stop()
            res.add(sec, "tiervault", "offline_backup_full",
                    tv.backup("offline-backup-full", extra=["--no-sync"],
                              pre=["--retry-attempts", "1", "--retry-delay", "0.1"]))
            server.start()
            res.add(sec, "tiervault", "sync_after_offline_full",
                    tv.sync("sync-after-offline-full"))
            res.add_size(sec, "tiervault", "offline full uploaded",
                         dir_bytes(server.root / ftpdir))
            tv.cleanup()
            rmtree(server.root / ftpdir)
        elif kind == "tv-throttled":
            # SPEC §4: a slow server (5 MB/s upload) must not hold the backup; the
            # server drops out of the session and the sync brings it level afterwards.
            ftpdir = f"tv4-{run}"
            rmtree(server.root / ftpdir)
            (server.root / ftpdir).mkdir()
            tv = Tiervault(runner, work / "tv4", data, lambda: [server.url(ftpdir)])
            tv.fresh()
            with open(tv.home / "config.toml", "a", encoding="utf-8") as f:
                f.write('\n[[throttle]]\ntier = "2"\nupload = "5MB"\n')
            res.add(sec, "tiervault", "throttled_backup",
                    tv.backup("throttled-backup", extra=["--no-sync"]))
            res.add(sec, "tiervault", "sync_after_throttled", tv.sync("sync-after-throttled"))
            res.add_size(sec, "tiervault", "throttled ftp vault", dir_bytes(server.root / ftpdir))
            tv.cleanup()
            rmtree(server.root / ftpdir)
        elif kind == "restic":
            assert rclone is not None
            rs = Restic(runner, work / "restic", data)
            rs.fresh()
            res.add(sec, "restic", "backup", rs.backup("backup"))
            res.add(sec, "restic", "copy", rs.copy_to(rs.work / "repo2"))
            res.add_size(sec, "restic", "repo", rs.size())
            dest = f"restic-{run}"
            rmtree(server.root / dest)
            res.add(sec, "rclone", "sync_full", rclone.sync("sync-full", rs.repo, dest))
            res.add(sec, "rclone", "sync_noop", rclone.sync("sync-noop", rs.repo, dest))
            gen_dataset.mutate(data)
            mutated = True
            res.add(sec, "restic", "backup_mutated", rs.backup("backup-mutated"))
            ftp_before = dir_bytes(server.root / dest)
            res.add(sec, "rclone", "sync_mutated", rclone.sync("sync-mutated", rs.repo, dest))
            res.add_size(sec, "rclone", "delta uploaded",
                         dir_bytes(server.root / dest) - ftp_before)
            rs.cleanup()
            rmtree(server.root / dest)
        else:
            raise ValueError(kind)
    except StepFailed as e:
        res.failures.append({"section": sec, "tool": kind, "run": run, "cmd": e.cmd,
                             "rc": e.rc, "tail": e.tail[-1500:], "wall": e.measure.wall})
        print(f"  !! {kind} run {run} failed: {e}", file=sys.stderr)
        server.start()
    finally:
        if mutated:
            gen_dataset.mutate(data)


# --------------------------------------------------------------------------- report


def _out(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(work: Path) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    fs = _out(["stat", "-f", "-c", "%T", str(work)])
    commit = _out(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"])
    dirty = [ln for ln in _out(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "src"]).splitlines() if ln.strip()]
    return [
        f"tiervault source: commit {commit[:90]}"
        + (f" + uncommitted changes in {len(dirty)} file(s) under src/" if dirty else ""),
        f"CPU: {cpu}, {os.cpu_count()} vCPU; RAM {mem:.1f} GiB; "
        f"kernel {platform.release()}; work dir fs {fs}, restore target tmpfs",
        f"Python {platform.python_version()}; "
        f"tiervault {_out([str(VENV_BIN / 'tiervault'), '--version'])}; "
        f"{_out(['restic', 'version']).split(' compiled')[0]}; {_out(['borg', '--version'])}; "
        f"borg14: {_out([Borg14.exe, '--version']) or 'not installed'}; "
        f"{_out(['rclone', 'version']).splitlines()[0] if _out(['rclone', 'version']) else '?'}",
    ]


def render(res: Results, args: argparse.Namespace, stamp: gen_dataset.Stamp,
           info: list[str], elapsed: float) -> str:
    lines: list[str] = []
    w = lines.append
    w(f"Dataset: {stamp.files} files, {stamp.bytes / 1e6:.1f} MB (scale {stamp.scale}, "
      f"seed {stamp.seed}); {args.runs} runs, tools alternating; "
      f"median (min-max); total bench time {elapsed / 60:.1f} min.")
    for i in info:
        w(i)
    w("")
    tools = [t for t in ("tiervault", "restic", "borg", "borg14") if t in res.m.get("main", {})]
    if tools:
        peers = [t for t in tools if t != "tiervault"] if "tiervault" in tools else []
        w("| step | " + " | ".join(tools + [f"tv/{p}" for p in peers]) + " |")
        w("|---|" + "---:|" * (len(tools) + len(peers)))

        def row(title: str, vals: dict[str, list[float]], unit: str, prec: int) -> None:
            if not any(vals.values()):
                return
            cells = [fmt_range(vals[t], unit, prec) for t in tools]
            cells += [ratio(vals["tiervault"], vals[p]) for p in peers]
            w(f"| {title} | " + " | ".join(cells) + " |")

        def measures(step: str, key: Callable[[Measure], float]) -> dict[str, list[float]]:
            return {t: [key(m) for m in res.get("main", t, step)] for t in tools}

        for step, title in MAIN_STEPS:
            row(title, measures(step, lambda m: m.wall), "s", 2)
        for step, title in (("backup_initial", "CPU (user+sys), initial backup warm"),
                            ("backup_mutated", "CPU (user+sys), backup after mutation"),
                            ("restore", "CPU (user+sys), restore")):
            row(title, measures(step, lambda m: m.cpu), "s", 2)
        for what in ("after initial backup", "after 3 backups"):
            row(f"repo size {what}",
                {t: [x / 1e6 for x in res.sizes.get("main", {}).get(t, {}).get(what, [])]
                 for t in tools}, "MB", 1)
        for step, title in (("backup_initial", "peak RSS, initial backup"),
                            ("backup_unchanged", "peak RSS, unchanged backup"),
                            ("backup_mutated", "peak RSS, backup after mutation"),
                            ("restore", "peak RSS, restore")):
            row(title, measures(step, lambda m: m.maxrss_kib / 1024), "MiB", 0)
        w("")
    if "two_tier" in res.m:
        w(two_tier_table(res))
    w(contention_table(res))
    if res.failures:
        w("Failures:")
        for f in res.failures:
            w(f"- {json.dumps(f)[:1500]}")
    return "\n".join(lines)


def contention_table(res: Results) -> str:
    """How much CPU other processes took during each tool's timed steps."""
    out = ["CPU used by other processes during the timed steps (share of the machine; "
           "includes the FTP server in the two-tier section):", "",
           "| section | tool | median | max | steps > 25% |", "|---|---|---:|---:|---:|"]
    for sec, tools in res.m.items():
        for tool, steps in tools.items():
            vals = [float(m.info.get("others_cpu", 0.0)) for ms in steps.values() for m in ms]
            if vals:
                out.append(f"| {sec} | {tool} | {statistics.median(vals):.0%} | "
                           f"{max(vals):.0%} | {sum(v > 0.25 for v in vals)}/{len(vals)} |")
    out.append("")
    return "\n".join(out)


def two_tier_table(res: Results) -> str:
    sec = "two_tier"

    def rss(tool: str, step: str) -> list[float]:
        return [m.maxrss_kib / 1024 for m in res.get(sec, tool, step)]

    def plus(a: list[float], b: list[float]) -> list[float]:
        return [x + y for x, y in zip(a, b, strict=False)]

    def minus(a: list[float], b: list[float]) -> list[float]:
        return [x - y for x, y in zip(a, b, strict=False)]

    Pair = tuple[list[float], list[float]]  # walls, CPU times

    def get(tool: str, step: str) -> Pair:
        ms = res.get(sec, tool, step)
        return [m.wall for m in ms], [m.cpu for m in ms]

    def add(a: Pair, b: Pair) -> Pair:
        return plus(a[0], b[0]), plus(a[1], b[1])

    def sub(a: Pair, b: Pair) -> Pair:
        return minus(a[0], b[0]), minus(a[1], b[1])

    tv1 = get("tiervault", "single_backup")
    tv2 = get("tiervault", "two_tier_backup")
    rb = get("restic", "backup")
    rclone_full = get("rclone", "sync_full")
    rows: list[tuple[str, Pair, str, Pair]] = [
        ("initial backup to both tiers", tv2, "restic backup + restic copy",
         add(rb, get("restic", "copy"))),
        ("initial backup to both tiers", tv2, "restic backup + rclone sync to FTP",
         add(rb, rclone_full)),
        ("initial backup, speed vault only", tv1, "restic backup (local)", rb),
        ("cost of the 2nd tier (two-tier - single)", sub(tv2, tv1),
         "rclone sync of the repo to FTP", rclone_full),
        ("cost of the 2nd tier (two-tier - single)", sub(tv2, tv1), "restic copy",
         get("restic", "copy")),
        ("sync after offline full backup", get("tiervault", "sync_after_offline_full"),
         "rclone sync of the repo to FTP", rclone_full),
        ("backup after mutation, server down (--no-sync)",
         get("tiervault", "offline_backup_mutated"), "restic backup after mutation",
         get("restic", "backup_mutated")),
        ("sync after offline mutated backup",
         get("tiervault", "sync_after_offline_mutated"), "rclone sync of the new packs",
         get("rclone", "sync_mutated")),
        ("no-op sync", get("tiervault", "sync_noop"), "no-op rclone sync",
         get("rclone", "sync_noop")),
        ("backup, server down, full data (--no-sync)",
         get("tiervault", "offline_backup_full"), "restic backup (local)", rb),
        ("two-tier backup, server throttled to 5 MB/s (--no-sync)",
         get("tiervault", "throttled_backup"), "tiervault backup, speed vault only", tv1),
        ("sync after the throttled backup", get("tiervault", "sync_after_throttled"),
         "tiervault backup, speed vault only", tv1),
    ]
    out = ["| tiervault step | tiervault wall | tv CPU | peer step | peer wall | peer CPU "
           "| wall ratio | CPU ratio |",
           "|---|---:|---:|---|---:|---:|---:|---:|"]
    for a_title, a, b_title, b in rows:
        out.append(f"| {a_title} | {fmt_range(a[0])} | {fmt_range(a[1])} | {b_title} | "
                   f"{fmt_range(b[0])} | {fmt_range(b[1])} | {ratio(a[0], b[0])} | "
                   f"{ratio(a[1], b[1])} |")
    out.append("")
    out.append("| peak RSS | MiB |")
    out.append("|---|---:|")
    for tool, step, title in [("tiervault", "two_tier_backup", "tiervault two-tier backup"),
                              ("tiervault", "sync_after_offline_full",
                               "tiervault sync after offline full backup"),
                              ("restic", "copy", "restic copy"),
                              ("rclone", "sync_full", "rclone sync to FTP")]:
        out.append(f"| {title} | {fmt_range(rss(tool, step), 'MiB', 0)} |")
    out.append("")
    sz = res.sizes.get(sec, {})
    out.append("| bytes | MB |")
    out.append("|---|---:|")
    for tool, what in [("tiervault", "single vault"), ("tiervault", "ftp vault"),
                       ("tiervault", "offline full uploaded"),
                       ("tiervault", "offline delta (speed vault growth)"),
                       ("tiervault", "offline delta uploaded"),
                       ("tiervault", "throttled ftp vault"), ("restic", "repo"),
                       ("rclone", "delta uploaded")]:
        vals = [x / 1e6 for x in sz.get(tool, {}).get(what, [])]
        out.append(f"| {tool}: {what} | {fmt_range(vals, 'MB', 1)} |")
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--scale", type=float, default=1.0, help="dataset scale (1.0 ~ 1 GB)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/tvbench"),
                    help="work dir for dataset and repositories (default /var/tmp/tvbench)")
    ap.add_argument("--data", type=Path, help="dataset dir (default WORK/data-sSCALE-SEED)")
    ap.add_argument("--restore-root", type=Path, default=Path("/dev/shm/tvbench-restore"))
    ap.add_argument("--tools", default="tiervault,restic,borg",
                    help="comma-separated subset of tiervault,restic,borg,borg14 (borg 1.4 "
                         "from PyPI; BORG14=path, default " + BORG14_DEFAULT + ")")
    ap.add_argument("--two-tier", action="store_true", help="also the two-tier figures")
    ap.add_argument("--only-two-tier", action="store_true", help="only the two-tier figures")
    ap.add_argument("--two-tier-kinds", default="tv-single,tv-two,tv-offline-full,tv-throttled,"
                    "restic", help="which two-tier scenarios (comma list)")
    ap.add_argument("--no-verify", action="store_true",
                    help="compare restored byte counts only, not contents")
    ap.add_argument("--no-cold", action="store_true",
                    help="skip the cold-cache initial backup (needs root to drop caches)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before each timed step, wait up to SECONDS for other processes "
                         "to go quiet (machine < 15%% busy); default 0: don't wait")
    ap.add_argument("--no-pycache", action="store_true",
                    help="run tiervault with the environment as is (with "
                         "PYTHONDONTWRITEBYTECODE=1 every command recompiles it)")
    ap.add_argument("--timeout", type=float, default=3600, help="per command, seconds")
    ap.add_argument("--json-out", type=Path, help="raw measurements (default WORK/results.json)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                    help="only print the tables of an earlier run's raw measurements")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.render:
        raw = json.loads(args.render.read_text())
        runs = int(raw.get("args", {}).get("runs", 0))
        print(render(Results.from_json(raw), argparse.Namespace(runs=runs),
                     gen_dataset.Stamp(**raw["dataset"]), raw.get("machine", []),
                     float(raw.get("elapsed", 0.0))))
        return 0

    t_start = time.monotonic()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data: Path = args.data or work / f"data-s{args.scale:g}-{args.seed}"
    stamp = gen_dataset.ensure(data, args.seed, args.scale, quiet=args.quiet)
    runner = Runner(work / "logs" / time.strftime("%Y%m%d-%H%M%S"), args.timeout,
                    not args.quiet, args.wait_idle)
    res = Results()
    info = machine_info(work)
    if not args.quiet:
        print("\n".join(info), file=sys.stderr)
    rmtree(args.restore_root)
    args.restore_root.mkdir(parents=True)
    repos = work / "repos"

    cold = not args.no_cold and can_drop_caches()
    if not args.no_cold and not cold:
        print("cannot write /proc/sys/vm/drop_caches: no cold-cache figures", file=sys.stderr)
    if not args.no_pycache:
        info.append("tiervault runs from cached bytecode (PYTHONPYCACHEPREFIX), "
                    "not recompiled per command")
        Tiervault.pycache = work / "pycache"
        env = Tiervault(runner, work, data).env()
        subprocess.run([sys.executable, "-m", "compileall", "-q",
                        str(ROOT / "src" / "tiervault")], env=env, check=False,
                       stdout=subprocess.DEVNULL)
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    classes: dict[str, type[Tool]] = {"tiervault": Tiervault, "restic": Restic, "borg": Borg,
                                      "borg14": Borg14}
    if not args.only_two_tier:
        for run in range(1, args.runs + 1):
            for name in names:
                if not args.quiet:
                    print(f"[main] run {run}/{args.runs}: {name}", file=sys.stderr)
                tool = classes[name](runner, repos / name, data)
                main_run(tool, res, data, args.restore_root, run, not args.no_verify,
                         cold)

    if args.two_tier or args.only_two_tier:
        server = FtpServer(work / "ftp-root", free_port(), work / "ftp-server.log")
        rmtree(server.root)
        server.root.mkdir(parents=True)
        server.start()
        kinds = args.two_tier_kinds.split(",")
        # rclone is needed only beside restic (a tiervault-only run needs neither).
        rclone = Rclone(runner, work / "rclone", server) if "restic" in kinds else None
        try:
            for run in range(1, args.runs + 1):
                for kind in kinds:
                    if not args.quiet:
                        print(f"[two-tier] run {run}/{args.runs}: {kind}", file=sys.stderr)
                    two_tier_run(kind, res, runner, repos / "two-tier", data, server,
                                 rclone, run)
        finally:
            server.stop()
            rmtree(server.root)
    rmtree(args.restore_root)

    text = render(res, args, stamp, info, time.monotonic() - t_start)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    out = args.json_out or work / "results.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                               "elapsed": time.monotonic() - t_start,
                               "dataset": asdict(stamp), "machine": info,
                               **res.to_json()}, indent=1))
    if not args.quiet:
        print(f"raw measurements: {out}; logs: {runner.logdir}", file=sys.stderr)
    return 1 if res.failures else 0


if __name__ == "__main__":
    sys.exit(main())
