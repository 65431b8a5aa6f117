#!/usr/bin/env python3
"""Soak test (issue "Nothing lost"): many backup cycles under real faults.

Each cycle mutates a source tree at random (files added, modified in place,
appended, truncated, deleted, renamed; some of them large), then runs a backup
with one fault injected, for real:

``client-kill``          the ``tiervault backup`` process group is SIGKILLed after a
                         random delay (0.05-1.0 s)
``server-kill``          the FTP server (pyftpdlib, a separate process) is SIGKILLed
                         at a random moment of the backup and restarted 1-3 cycles later
``speed-vault-removed``  the speed vault directory is renamed away at a random moment
                         of the backup (an unplugged disk) and brought back 1-3 cycles later
``disk-full``            the speed vault lives on its own tmpfs; the tmpfs is remounted
                         with a size just above what it holds (0-256 KiB free), so the
                         backup gets a real ENOSPC; the size is given back 1-3 cycles later
                         (needs root and ``mount -t tmpfs``; otherwise this fault is
                         skipped and reported as such)
``bit-flip``             one bit of a random immutable vault file (pack, index or
                         snapshot) that both tiers hold identically is flipped on one
                         tier; ``check --repair --read-data`` runs 0-2 cycles later

Only one tier is taken away at a time (with both gone a backup would wait, by
design). When a tier comes back, ``sync`` runs; when a flip is due,
``check --repair --read-data`` runs and the tiers must then hold identical files.

Every snapshot REPORTED complete (exit 0 or 6 with a snapshot id in the
``--json`` summary, including summaries printed by a backup that was killed
afterwards) is recorded with the source state (every file's SHA-256) at that
time. At the end every tier is brought back, synchronized and repaired,
``check --read-data`` must pass on every tier, the tiers must be identical, and
every recorded snapshot is restored and compared byte for byte (snapshots left
by killed backups that never reported are restored too and must match the
source they were taken of). The report counts the faults of each kind, the
cycles, the anomalies and the bytes lost; the exit status is non-zero if
anything was lost or an invariant broke.

Usage: ``python scripts/soak.py --cycles 200 [--seed N] [--work DIR] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers.ftp_server import FtpServerProcess  # noqa: E402

#: In this order, the first cycles of a short run see every kind once.
FAULTS = ["client-kill", "bit-flip", "server-kill", "speed-vault-removed", "disk-full"]
TIER_FAULTS = {"server-kill", "speed-vault-removed", "disk-full"}
PASSPHRASE = "soak test passphrase"
KiB, MiB = 1 << 10, 1 << 20
SOURCE_LIMIT = 8 * MiB
TMPFS_SIZE = 4 << 30  # an upper bound; tmpfs only uses what is stored


def sha256(p: Path) -> str:
    with open(p, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_state(root: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256, size) of every regular file below ``root``."""
    out: dict[str, tuple[str, int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out[p.relative_to(root).as_posix()] = (sha256(p), p.stat().st_size)
    return out


class TierFiles:
    """Hashes of a tier directory's files, cached by (size, mtime) between calls."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], str] = {}

    def state(self, root: Path) -> dict[str, str]:
        out: dict[str, str] = {}
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # a killed upload's temporary file: never read
                p = Path(dirpath) / name
                st = p.stat()
                key = (str(p), st.st_size, st.st_mtime_ns)
                if key not in self._cache:
                    self._cache[key] = sha256(p)
                out[p.relative_to(root).as_posix()] = self._cache[key]
        return out


@dataclass
class Report:
    cycles: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    faults_skipped: Counter[str] = field(default_factory=Counter)
    kills_landed: int = 0  # client kills that hit a running backup
    backups_reported: int = 0
    backups_unreported: int = 0  # killed (or failed under a fault) before reporting
    #: backups that could not complete, legitimately: the only current tier was taken
    #: away while the other was still stale from a killed session (nothing to write to)
    expected_failures: list[str] = field(default_factory=list)
    syncs: int = 0
    repairs: int = 0
    snapshots_checked: int = 0
    snapshots_lost: list[str] = field(default_factory=list)
    files_lost: int = 0
    bytes_lost: int = 0
    anomalies: list[str] = field(default_factory=list)
    final_check_ok: bool = False
    tiers_identical: bool = False
    durations: dict[str, float] = field(default_factory=dict)
    disk_full_method: str = ""

    @property
    def ok(self) -> bool:
        return (not self.snapshots_lost and self.bytes_lost == 0 and self.files_lost == 0
                and not self.anomalies and self.final_check_ok and self.tiers_identical)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "cycles": self.cycles, "faults": dict(self.faults),
                "faults_skipped": dict(self.faults_skipped),
                "client_kills_mid_backup": self.kills_landed,
                "backups_reported": self.backups_reported,
                "backups_unreported": self.backups_unreported,
                "expected_failures": self.expected_failures, "syncs": self.syncs,
                "repairs": self.repairs, "snapshots_restored_and_compared":
                self.snapshots_checked, "snapshots_lost": self.snapshots_lost,
                "files_lost": self.files_lost, "bytes_lost": self.bytes_lost,
                "final_check_read_data_ok": self.final_check_ok,
                "tiers_identical": self.tiers_identical, "anomalies": self.anomalies,
                "disk_full_method": self.disk_full_method,
                "durations_s": {k: round(v, 1) for k, v in self.durations.items()}}

    def text(self) -> str:
        lines = [f"soak: {self.cycles} cycles, {'OK' if self.ok else 'FAILED'}"]
        for kind in FAULTS:
            skipped = self.faults_skipped.get(kind, 0)
            lines.append(f"  {kind:20} {self.faults.get(kind, 0):4} survived"
                         + (f" ({skipped} skipped)" if skipped else ""))
        lines.append(f"  {'none':20} {self.faults.get('none', 0):4}")
        for kind in ("sync-kill", "repair-kill"):
            lines.append(f"  {kind:20} {self.faults.get(kind, 0):4} survived (client killed "
                         f"during {kind.split('-')[0]})")
        lines += [
            f"  client kills that hit a running backup: {self.kills_landed}",
            f"  backups reported complete: {self.backups_reported}; unreported (killed/failed "
            f"under a fault): {self.backups_unreported}, of which {len(self.expected_failures)} "
            "failed because the only current tier was taken away",
            f"  syncs run: {self.syncs}; check --repair runs: {self.repairs}",
            f"  snapshots restored and compared: {self.snapshots_checked}",
            f"  snapshots lost: {len(self.snapshots_lost)}; files lost: {self.files_lost}; "
            f"bytes lost: {self.bytes_lost}",
            f"  final check --read-data on every tier: {'ok' if self.final_check_ok else 'FAILED'}"
            f"; tiers identical: {'yes' if self.tiers_identical else 'NO'}",
            f"  disk full: {self.disk_full_method}",
            "  durations: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.durations.items()),
        ]
        for a in self.anomalies:
            lines.append(f"  ANOMALY: {a}")
        return "\n".join(lines)


class Fatal(Exception):
    """An invariant broke so badly that the soak cannot go on."""


class Soak:
    def __init__(self, work: Path, seed: int, verbose: bool) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.verbose = verbose
        self.report = Report()
        self.tv_bin = str(Path(sys.executable).parent / "tiervault")
        self.home = work / "home"
        self.src = work / "src"
        self.fs = work / "speedfs"
        self.speed = self.fs / "speed-vault"
        self.away = self.fs / "speed-vault.away"
        self.ftp_root = work / "ftp-root"
        self.server_dir = self.ftp_root / "vault"
        self.mounted = False
        self.ftp: FtpServerProcess | None = None
        #: snapshot id -> source state when it was reported complete
        self.reported: dict[str, dict[str, tuple[str, int]]] = {}
        #: source states of backups killed before they reported
        self.unreported: list[dict[str, tuple[str, int]]] = []
        #: what is down and the cycle it comes back at
        self.down: dict[str, int] = {}
        self.flips: list[tuple[int, Path, Path]] = []  # (due cycle, damaged file, good copy)
        self.hashes = TierFiles()
        self.cycle = 0
        self.backup_s = 1.0  # running estimate of a backup's duration
        #: a run was killed since the last write session that ended well: its session
        #: is still marked in progress, and the next run makes the server stale
        self.killed_session = False

    # -- set-up --------------------------------------------------------------------------------

    def setup(self) -> None:
        self.fs.mkdir(parents=True)
        if os.geteuid() == 0:
            p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                                str(self.fs)], capture_output=True, text=True)
            self.mounted = p.returncode == 0
        self.report.disk_full_method = (
            "real ENOSPC: the speed vault is on its own tmpfs, remounted with size = used "
            "+ 0..256 KiB" if self.mounted else
            "SKIPPED: mounting a tmpfs needs root (the fault needs a real full file system)")
        self.src.mkdir()
        for d in ("docs", "photos", "mail", "deep/a/b"):
            (self.src / d).mkdir(parents=True)
        for _ in range(30):
            self.add_file(big=False)
        for _ in range(3):
            self.add_file(big=True)
        self.ftp = FtpServerProcess(self.ftp_root)
        self.ok("init", str(self.speed), self.ftp.url + "/vault")
        self.backup("none")  # cycle 0: the first full backup, without a fault

    def teardown(self) -> None:
        if self.ftp is not None:
            self.ftp.kill()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.fs)], capture_output=True)
            self.mounted = False

    # -- the CLI -------------------------------------------------------------------------------

    def argv(self, args: tuple[str, ...]) -> list[str]:
        return [self.tv_bin, "--home", str(self.home), "--retry-attempts", "1",
                "--retry-delay", "0.05", *args]

    def env(self) -> dict[str, str]:
        e = dict(os.environ, TIERVAULT_PASSWORD=PASSPHRASE)
        e.pop("TIERVAULT_HOME", None)
        return e

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.cycle:4}] {msg}", file=sys.stderr, flush=True)

    def judge(self, args: tuple[str, ...], code: int, err: str) -> None:
        """Tracebacks and exit 3 are never acceptable: note them (exit 3 is fatal)."""
        if "Traceback" in err:
            self.report.anomalies.append(f"cycle {self.cycle}: {' '.join(args)}: traceback: "
                                         f"{err.strip().splitlines()[-1][:300]}")
        if code == 3:
            self.report.anomalies.append(f"cycle {self.cycle}: {' '.join(args)}: exit 3 "
                                         f"(another installation?): {err.strip()[-300:]}")
            raise Fatal("the installation was refused with exit 3")

    def tv(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(self.argv(args), capture_output=True, text=True, env=self.env(),
                           stdin=subprocess.DEVNULL, timeout=timeout)
        self.judge(args, p.returncode, p.stderr)
        return p

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        p = self.tv(*args)
        if p.returncode != 0:
            self.report.anomalies.append(f"cycle {self.cycle}: {' '.join(args)} exited "
                                         f"{p.returncode}: {p.stderr.strip()[-400:]}")
        return p

    # -- the source tree -----------------------------------------------------------------------

    def files(self) -> list[Path]:
        return sorted(p for p in self.src.rglob("*") if p.is_file())

    def dirs(self) -> list[Path]:
        return [self.src, *sorted(p for p in self.src.rglob("*") if p.is_dir())]

    def content(self, size: int) -> bytes:
        if self.rng.random() < 0.5:
            return os.urandom(size)
        words = [b"tier", b"vault", b"speed", b"%d" % self.rng.randrange(1 << 20), b"sync"]
        line = b" ".join(self.rng.choice(words) for _ in range(10)) + b"\n"
        return (line * (size // len(line) + 1))[:size]

    def add_file(self, big: bool) -> None:
        size = self.rng.randrange(512 * KiB, 3 * MiB) if big else self.rng.randrange(0, 40 * KiB)
        d = self.rng.choice(self.dirs())
        (d / f"f{self.rng.randrange(1 << 32):08x}.bin").write_bytes(self.content(size))

    def mutate(self) -> None:
        for _ in range(self.rng.randint(1, 6)):
            files = self.files()
            op = self.rng.choices(["add", "add-big", "overwrite", "append", "patch", "truncate",
                                   "delete", "rename", "mkdir"],
                                  [5, 1, 2, 2, 2, 1, 2, 2, 1])[0]
            if op in ("add", "add-big") or not files:
                self.add_file(big=op == "add-big")
                continue
            p = self.rng.choice(files)
            if op == "overwrite":
                p.write_bytes(self.content(self.rng.randrange(0, max(1, p.stat().st_size * 2)
                                                              + 1000)))
            elif op == "append":
                with open(p, "ab") as f:
                    f.write(self.content(self.rng.randrange(1, 64 * KiB)))
            elif op == "patch":  # in place, same size: only the mtime/ctime tell
                size = p.stat().st_size
                if size:
                    with open(p, "r+b") as f:
                        f.seek(self.rng.randrange(size))
                        f.write(os.urandom(min(size, self.rng.randrange(1, 4096))))
            elif op == "truncate":
                os.truncate(p, self.rng.randrange(0, p.stat().st_size + 1))
            elif op == "delete":
                p.unlink()
            elif op == "rename":
                p.rename(self.rng.choice(self.dirs()) / f"r{self.rng.randrange(1 << 32):08x}"
                         f"{p.suffix}")
            elif op == "mkdir":
                (self.rng.choice(self.dirs()) / f"d{self.rng.randrange(1 << 16):04x}").mkdir(
                    exist_ok=True)
        while sum(p.stat().st_size for p in self.files()) > SOURCE_LIMIT:
            max(self.files(), key=lambda p: p.stat().st_size).unlink()

    # -- faults ----------------------------------------------------------------------------------

    def tier_down(self) -> bool:
        return bool(self.down)

    def take_down(self, kind: str) -> None:
        assert self.ftp is not None
        if kind == "server-kill":
            self.ftp.kill()
        elif kind == "speed-vault-removed":
            self.speed.rename(self.away)
        elif kind == "disk-full":
            used = self.fs_used()
            size = used + self.rng.randrange(0, 256 * KiB)
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self.fs)], check=True)
        self.down[kind] = self.cycle + (1 if self.warming_up else self.rng.randint(1, 3))

    def bring_back(self, kind: str) -> None:
        assert self.ftp is not None
        if kind == "server-kill":
            self.ftp.start()
        elif kind == "speed-vault-removed":
            self.away.rename(self.speed)
        elif kind == "disk-full":
            subprocess.run(["mount", "-o", f"remount,size={TMPFS_SIZE}", str(self.fs)],
                           check=True)
        del self.down[kind]
        self.log(f"{kind}: tier back")

    def fs_used(self) -> int:
        st = os.statvfs(self.fs)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def flip_a_bit(self) -> bool:
        """Flip one bit of an immutable file both tiers hold identically, on one tier."""
        candidates = [p.relative_to(self.speed).as_posix()
                      for sub in ("data", "index", "snapshots")
                      for p in (self.speed / sub).rglob("*")
                      if p.is_file() and not p.name.startswith(".")]
        self.rng.shuffle(candidates)
        damaged_already = {str(f) for _, f, _ in self.flips}
        for rel in candidates[:20]:
            a, b = self.speed / rel, self.server_dir / rel
            if str(a) in damaged_already or str(b) in damaged_already or not b.exists():
                continue
            data = a.read_bytes()
            if data != b.read_bytes() or not data:
                continue
            target, good = (a, b) if self.rng.random() < 0.5 else (b, a)
            buf = bytearray(data)
            buf[self.rng.randrange(len(buf))] ^= 1 << self.rng.randrange(8)
            target.write_bytes(bytes(buf))
            due = self.cycle + (1 if self.warming_up else self.rng.randint(0, 2))
            self.flips.append((due, target, good))
            self.log(f"bit-flip: {target}")
            return True
        return False

    # -- one cycle -------------------------------------------------------------------------------

    @property
    def warming_up(self) -> bool:
        """The first cycles take every fault in turn (tiers come back at once)."""
        return self.cycle <= len(FAULTS)

    def choose_fault(self, cycles: int) -> str:
        if self.warming_up:
            return FAULTS[self.cycle - 1]
        return self.rng.choices(["none", *FAULTS], [2, 3, 2, 2, 2, 2])[0]

    def backup(self, fault: str) -> None:
        state = tree_state(self.src)
        args = ("--json", "backup", str(self.src), "--wait-timeout", "10")
        started = time.monotonic()
        was_killed_session = self.killed_session
        proc = subprocess.Popen(self.argv(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env(), stdin=subprocess.DEVNULL,
                                start_new_session=True)
        killed = False
        if fault == "client-kill":
            try:
                proc.wait(timeout=self.rng.uniform(0.05, 1.1 * self.backup_s))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                self.report.kills_landed += 1
        elif fault in ("server-kill", "speed-vault-removed"):
            try:
                proc.wait(timeout=self.rng.uniform(0.0, 0.7))
            except subprocess.TimeoutExpired:
                pass
            self.take_down(fault)  # mid-backup if it still runs, else before the next one
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self.report.anomalies.append(f"cycle {self.cycle}: backup hung ({fault})")
        if not killed and fault == "none":  # how long a backup takes, to aim the kills
            self.backup_s = 0.8 * self.backup_s + 0.2 * (time.monotonic() - started)
        if not killed:
            self.judge(args, proc.returncode, err)
        summary = None
        for line in out.splitlines():
            if line.startswith("{") and '"snapshot_id"' in line:
                summary = json.loads(line)
        self.killed_session = killed or (self.killed_session and proc.returncode != 0)
        if summary is not None and (killed or proc.returncode in (0, 6)):
            self.reported[summary["snapshot_id"]] = state
            self.report.backups_reported += 1
            self.log(f"backup {summary['snapshot_id'][:8]} reported ({fault}, exit "
                     f"{proc.returncode})")
        else:
            self.unreported.append(state)
            self.report.backups_unreported += 1
            if not killed and fault in TIER_FAULTS and was_killed_session \
                    and proc.returncode in (1, 5):
                self.report.expected_failures.append(
                    f"cycle {self.cycle}: {fault} after a killed session: "
                    f"{err.strip().splitlines()[-1][:200]}")
            elif not killed:
                self.report.anomalies.append(
                    f"cycle {self.cycle}: backup under fault {fault!r} did not complete: exit "
                    f"{proc.returncode}: {err.strip()[-400:]}")
            self.log(f"backup not reported ({fault}, exit {proc.returncode})")

    def level(self) -> bool:
        """Both tiers online at the max revision?"""
        p = self.tv("--json", "tiers")
        if p.returncode != 0:
            return False
        rows = json.loads(p.stdout)
        return all(r["state"] == "online" and r["revision"] == r["max_revision"] for r in rows)

    def kill_sometimes(self, kind: str, *args: str) -> None:
        """With probability 1/3, run ``args`` and SIGKILL it at a random moment first."""
        if self.rng.random() >= 1 / 3:
            return
        proc = subprocess.Popen(self.argv(args), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=self.env(),
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=self.rng.uniform(0.05, 1.5))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            self.killed_session = True
            self.report.faults[kind] += 1
            self.log(f"{kind}: killed")
        _, err = proc.communicate(timeout=120)
        if proc.returncode >= 0:
            self.judge(args, proc.returncode, err)

    def sync(self) -> None:
        self.report.syncs += 1
        self.kill_sometimes("sync-kill", "sync")
        p = self.tv("--json", "sync")
        if p.returncode == 0:
            self.killed_session = False
        if p.returncode != 0 or not self.level():
            self.report.anomalies.append(f"cycle {self.cycle}: sync did not bring the tiers "
                                         f"level: {p.stderr.strip()[-400:]}")

    def repair(self) -> None:
        self.report.repairs += 1
        self.kill_sometimes("repair-kill", "check", "--repair", "--read-data")
        # A killed run leaves its session marked in progress: the next run makes the
        # first tier authoritative and the other unsynchronized (which ``tiers`` does
        # not show yet). check --repair heals online tiers only, so sync first.
        self.tv("sync")
        p = self.tv("--json", "check", "--repair", "--read-data")
        if p.returncode == 0:
            self.killed_session = False
        if p.returncode != 0:
            self.report.anomalies.append(f"cycle {self.cycle}: check --repair exited "
                                         f"{p.returncode}: {(p.stdout + p.stderr)[-600:]}")
        healed = [(due, bad, good) for due, bad, good in self.flips
                  if bad.exists() and good.exists() and bad.read_bytes() == good.read_bytes()]
        for f in self.flips:
            if f not in healed:
                self.report.anomalies.append(f"cycle {self.cycle}: {f[1]} was not healed")
        self.flips = []

    def run_cycle(self, cycles: int) -> None:
        for kind, due in sorted(self.down.items()):
            if due <= self.cycle:
                self.bring_back(kind)
                if not self.down:
                    self.sync()
        if not self.down and self.flips and min(d for d, _, _ in self.flips) <= self.cycle:
            self.repair()
        self.mutate()
        fault = self.choose_fault(cycles)
        if (fault in TIER_FAULTS and self.tier_down()) or (fault == "bit-flip" and self.down):
            self.report.faults_skipped[fault] += 1  # one tier away at a time
            fault = "client-kill" if self.rng.random() < 0.5 else "none"
        if fault == "disk-full" and not self.mounted:
            self.report.faults_skipped[fault] += 1
            fault = "none"
        if fault == "bit-flip" and not self.flip_a_bit():
            self.report.faults_skipped[fault] += 1
            fault = "none"
        if fault == "disk-full":
            self.take_down(fault)
        self.report.faults[fault] += 1
        self.backup(fault)

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        self.cycle += 1
        for kind in sorted(self.down):
            self.bring_back(kind)
        self.sync()
        if self.flips:
            self.repair()
        p = self.tv("--json", "check", "--read-data")
        res = json.loads(p.stdout) if p.stdout.strip() else {}
        tiers = res.get("tiers", [])
        self.report.final_check_ok = p.returncode == 0 and bool(res.get("ok")) and \
            len(tiers) == 2 and all(t["ok"] for t in tiers)
        if not self.report.final_check_ok:
            self.report.anomalies.append(f"final check --read-data failed: "
                                         f"{(p.stdout + p.stderr)[-800:]}")
        a, b = self.hashes.state(self.speed), self.hashes.state(self.server_dir)
        self.report.tiers_identical = a == b and "revision" in a
        if not self.report.tiers_identical:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            self.report.anomalies.append(f"tiers differ in {len(diff)} files: {diff[:5]}")

    def verify_snapshots(self) -> None:
        p = self.tv("--json", "snapshots")
        present = {s["id"] for s in json.loads(p.stdout)} if p.returncode == 0 else set()
        target = self.work / "restore"
        for sid, state in sorted(self.reported.items()):
            if sid not in present:
                self.report.snapshots_lost.append(sid)
                self.report.files_lost += len(state)
                self.report.bytes_lost += sum(size for _, size in state.values())
                continue
            self.compare_restore(sid, target, state)
        for sid in sorted(present - set(self.reported)):
            # Left by a killed backup before it reported: must match what it was taken of.
            shutil.rmtree(target, ignore_errors=True)
            r = self.tv("restore", sid, str(target))
            got = tree_state(target / self.src.relative_to("/")) if r.returncode == 0 else None
            self.report.snapshots_checked += 1
            if got not in self.unreported:
                self.report.anomalies.append(f"unreported snapshot {sid[:8]} matches no "
                                             "source state it could have been taken of")
        shutil.rmtree(target, ignore_errors=True)

    def compare_restore(self, sid: str, target: Path, state: dict[str, tuple[str, int]]) -> None:
        shutil.rmtree(target, ignore_errors=True)
        r = self.tv("restore", sid, str(target))
        self.report.snapshots_checked += 1
        got = tree_state(target / self.src.relative_to("/")) if (target / self.src.relative_to(
            "/")).exists() else {}
        bad = [rel for rel, v in state.items() if got.get(rel) != v]
        extra = set(got) - set(state)
        if bad:
            self.report.files_lost += len(bad)
            self.report.bytes_lost += sum(state[rel][1] for rel in bad)
        if bad or extra or r.returncode != 0:
            self.report.anomalies.append(f"snapshot {sid[:8]} does not restore as backed up: "
                                         f"{len(bad)} files differ or are missing, {len(extra)} "
                                         f"extra, restore exit {r.returncode}")

    def run(self, cycles: int) -> Report:
        t0 = time.monotonic()
        try:
            self.setup()
            t1 = time.monotonic()
            for self.cycle in range(1, cycles + 1):
                self.run_cycle(cycles)
                self.report.cycles = self.cycle
            t2 = time.monotonic()
            self.finish()
            self.verify_snapshots()
            t3 = time.monotonic()
            self.report.durations = {"setup": t1 - t0, "cycles": t2 - t1,
                                     "final verification": t3 - t2, "total": t3 - t0}
        except Fatal as e:
            self.report.anomalies.append(f"stopped at cycle {self.cycle}: {e}")
            # Whatever was reported is counted as lost: it can no longer be read back here.
            with contextlib.suppress(Exception):
                for kind in sorted(self.down):
                    self.bring_back(kind)
            self.report.durations["total"] = time.monotonic() - t0
        finally:
            self.teardown()
        return self.report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--work", help="working directory (default: a fresh temporary one, "
                    "removed afterwards unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every cycle on stderr")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tv-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        ap.error(f"{work} is not empty")
    soak = Soak(work, seed, args.verbose)
    report = soak.run(args.cycles)
    out = report.to_json()
    out["seed"] = seed
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(report.text() + f"\n  seed {seed} (rerun with --seed {seed})")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
