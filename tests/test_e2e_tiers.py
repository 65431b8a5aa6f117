"""End-to-end tier scenarios through the real CLI against real server processes.

Every command is the installed ``tiervault`` console script in a subprocess;
servers (pyftpdlib FTP, OpenSSH sftp, moto S3) are separate processes that are
SIGKILLed and restarted like a crash or a pulled cable, and the speed vault
"disappears" by renaming its directory away (an unplugged disk). The rules
checked are those of SPEC §2-§6: offline backups, revisions, unsynchronized
detection, synchronization to byte-identical tiers, reads falling through to
the server, the bounded and unbounded wait, and second-installation refusal.

No run may print the FTP password (an autouse fixture checks every output).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import tomli_w

from tests.servers.ftp_server import FtpServerProcess

TIERVAULT = str(Path(sys.executable).parent / "tiervault")
PASSPHRASE = "e2e tiers passphrase"
#: Distinctive, so a leak is found by a plain substring search.
FTP_PASSWORD = "Ftp-Pa55-e2e-7Kq9zW"
FAST = ("--retry-attempts", "2", "--retry-delay", "0.1")
BIG_FILE = 50 << 20  # three of these: ~150 MiB of incompressible data

#: Every stdout/stderr of every CLI run of the current test (checked for leaks).
_OUTPUTS: list[str] = []


@pytest.fixture(autouse=True)
def _no_password_in_any_output() -> Iterator[None]:
    _OUTPUTS.clear()
    yield
    leaks = [o for o in _OUTPUTS if FTP_PASSWORD in o]
    assert not leaks, f"the FTP password was printed: {leaks[0][-2000:]}"


# -- files -----------------------------------------------------------------------------------


def _digest(p: Path) -> str:
    with open(p, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_digests(root: Path, skip_hidden: bool = True) -> dict[str, str]:
    """relative path -> sha256 of every regular file below ``root``.

    ``skip_hidden`` leaves out hidden names (the backends' temporary uploads).
    """
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if skip_hidden and name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                out[p.relative_to(root).as_posix()] = _digest(p)
    return out


def all_files(root: Path) -> dict[str, str]:
    """Every file below ``root`` including hidden ones (to prove nothing was written)."""
    return tree_digests(root, skip_hidden=False) if root.exists() else {}


def write_big_files(src: Path, n: int = 3, size: int = BIG_FILE) -> None:
    """``n`` files of random (incompressible) data."""
    chunk = 1 << 20
    for i in range(n):
        with open(src / f"big{i}.bin", "wb") as f:
            for _ in range(size // chunk):
                f.write(os.urandom(chunk))


# -- servers -----------------------------------------------------------------------------------


class ServerTier(Protocol):
    """The second tier: a real server process that can be killed and restarted."""

    kind: str
    url: str
    env: dict[str, str]

    def kill(self) -> None: ...
    def start(self) -> None: ...
    def after_restart(self) -> None: ...
    def files(self) -> dict[str, str]: ...
    def close(self) -> None: ...


class FtpTier:
    kind = "ftp"

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "ftp-root"
        self.proc = FtpServerProcess(self.root, user="tv", password=FTP_PASSWORD)
        self.url = self.proc.url + "/vault"
        self.dir = self.root / "vault"
        self.env: dict[str, str] = {}

    def kill(self) -> None:
        self.proc.kill()

    def start(self) -> None:
        self.proc.start()

    def after_restart(self) -> None:
        pass  # the files are on disk: the server comes back with its data

    def files(self) -> dict[str, str]:
        return tree_digests(self.dir)

    def close(self) -> None:
        self.proc.kill()


class SftpTier:
    kind = "sftp"

    def __init__(self, tmp: Path) -> None:
        from tests.servers.sshd import SshdProcess

        self.proc = SshdProcess(tmp / "sshd")
        self.dir = (tmp / "sftp-vault").resolve()
        self.url = (self.proc.url(str(self.dir))
                    + f"?known_hosts={self.proc.known_hosts}&key_file={self.proc.client_key}")
        self.env: dict[str, str] = {}

    def kill(self) -> None:
        self.proc.kill()

    def start(self) -> None:
        self.proc.start()

    def after_restart(self) -> None:
        pass

    def files(self) -> dict[str, str]:
        return tree_digests(self.dir)

    def close(self) -> None:
        self.proc.kill()


class S3Tier:
    """moto keeps everything in memory: a restarted server is EMPTY."""

    kind = "s3"
    bucket = "tiervault-e2e"

    def __init__(self, tmp: Path) -> None:
        from tests.servers.s3_server import ACCESS_KEY, SECRET_KEY, MotoServerProcess

        self.proc = MotoServerProcess()
        self.url = self.proc.url(self.bucket, "vault")
        self.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def _client(self) -> Any:
        import boto3

        from tests.servers.s3_server import REGION

        return boto3.client("s3", endpoint_url=self.proc.endpoint, region_name=REGION,
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def kill(self) -> None:
        self.proc.kill()

    def start(self) -> None:
        self.proc.start()

    def after_restart(self) -> None:
        # The operator re-provisions the (now empty) bucket; a missing bucket is
        # an unreachable tier, like an unplugged disk.
        self._client().create_bucket(Bucket=self.bucket)

    def files(self) -> dict[str, str]:
        s3 = self._client()
        out: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                  Prefix="vault/"):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                out[obj["Key"][len("vault/"):]] = hashlib.sha256(body).hexdigest()
        return out

    def close(self) -> None:
        self.proc.kill()


SERVERS: dict[str, Callable[[Path], ServerTier]] = {"ftp": FtpTier, "sftp": SftpTier,
                                                     "s3": S3Tier}


# -- the CLI -----------------------------------------------------------------------------------


def describe(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\n--- stdout ---\n{p.stdout[-3000:]}\n--- stderr ---\n" \
           f"{p.stderr[-3000:]}"


def err_lines(p: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.strip()]


def _is_info(line: str) -> bool:
    """A progress note: a JSON info message, or a text line about a tier or the wait."""
    if line.startswith("{"):
        try:
            return json.loads(line).get("message_type") == "info"  # type: ignore[no-any-return]
        except ValueError:
            return False
    return line.startswith(("tier ", "waiting for a tier"))


def the_error_line(p: subprocess.CompletedProcess[str]) -> str:
    """Assert stderr holds exactly one error line, the last one, beside progress notes."""
    lines = err_lines(p)
    errors = [ln for ln in lines if not _is_info(ln)]
    assert len(errors) == 1 and lines[-1] == errors[0], describe(p)
    if errors[0].startswith("{"):  # --json: the error is a JSON object (docs/cli.md)
        doc = json.loads(errors[0])
        assert doc["message_type"] == "error" and doc["exit_code"] == p.returncode, describe(p)
        return str(doc["message"])
    assert errors[0].startswith("tiervault: error: "), describe(p)
    return errors[0]


@dataclass
class Setup:
    """One installation (home), its speed vault directory, a source tree and a server."""

    tmp: Path
    server: ServerTier
    home: Path = field(init=False)
    speed: Path = field(init=False)
    src: Path = field(init=False)
    vault_id: str = ""

    def __post_init__(self) -> None:
        self.home = self.tmp / "home"
        self.speed = self.tmp / "speed-vault"
        self.src = self.tmp / "src"
        self.src.mkdir()
        (self.src / "docs").mkdir()
        for i in range(20):
            (self.src / "docs" / f"note{i}.txt").write_text(f"note {i}\n" * (i + 1))
        (self.src / "photo.raw").write_bytes(os.urandom(300_000))

    # running ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e.pop("TIERVAULT_HOME", None)
        e["TIERVAULT_PASSWORD"] = PASSPHRASE
        e.update(self.server.env)
        return e

    def argv(self, args: tuple[str | Path, ...], home: Path | None) -> list[str]:
        return [TIERVAULT, "--home", str(home or self.home), *FAST, *map(str, args)]

    def tv(self, *args: str | Path, home: Path | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the CLI; never raises on a non-zero exit."""
        p = subprocess.run(self.argv(args, home), capture_output=True, text=True,
                           env=self.env(), stdin=subprocess.DEVNULL, timeout=timeout)
        _OUTPUTS.extend([p.stdout, p.stderr])
        assert "Traceback" not in p.stderr, describe(p)
        return p

    def ok(self, *args: str | Path, home: Path | None = None) -> subprocess.CompletedProcess[str]:
        p = self.tv(*args, home=home)
        assert p.returncode == 0, describe(p)
        return p

    def json(self, *args: str | Path, home: Path | None = None) -> Any:
        return json.loads(self.ok("--json", *args, home=home).stdout)

    def start_tv(self, *args: str | Path, home: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(args, home), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env(),
                                stdin=subprocess.DEVNULL)

    def finish(self, proc: subprocess.Popen[str],
               timeout: float = 180) -> subprocess.CompletedProcess[str]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"tiervault did not finish within {timeout} s: {err[-3000:]}")
        _OUTPUTS.extend([out, err])
        p = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert "Traceback" not in err, describe(p)
        return p

    # the vault --------------------------------------------------------------------------

    def init(self) -> None:
        res = self.json("init", self.speed, self.server.url)
        self.vault_id = res["vault_id"]
        assert [t["state"] for t in res["tiers"]] == ["online", "online"], res

    def backup(self, *extra: str) -> dict[str, Any]:
        p = self.ok("--json", "backup", *extra, self.src)
        summary: dict[str, Any] = json.loads(p.stdout)
        return summary

    def tiers(self, home: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(speed vault row, server row) of ``tiers --json``."""
        rows = self.json("tiers", home=home)
        assert len(rows) == 2, rows
        speed, server = rows
        assert speed["url"] == str(self.speed), rows
        return speed, server

    def speed_files(self) -> dict[str, str]:
        return tree_digests(self.speed)

    def assert_level(self, rows: list[dict[str, Any]] | None = None) -> None:
        """Every tier online at one revision, holding byte-identical files."""
        rows = rows or self.json("tiers")
        for _ in range(3):
            # A tier that answers after the 1 s grace (a loaded machine, moto) is "offline"
            # for that command: ask again before calling it so.
            if {r["state"] for r in rows} == {"online"}:
                break
            rows = self.json("tiers")
        assert {r["state"] for r in rows} == {"online"}, rows
        assert len({r["revision"] for r in rows}) == 1, rows
        assert {r["revision"] for r in rows} == {rows[0]["max_revision"]}, rows
        mine, theirs = self.speed_files(), self.server.files()
        assert "revision" in mine and "config" in mine
        assert mine == theirs, _tree_diff(mine, theirs)

    def restore_and_compare(self, target: Path, ref: str = "latest") -> None:
        self.ok("restore", ref, target)
        restored = target / self.src.relative_to("/")
        assert tree_digests(restored, skip_hidden=False) == tree_digests(self.src, False)

    def mutate(self, tag: str) -> None:
        (self.src / "docs" / f"{tag}.txt").write_text(f"written while {tag}\n" * 50)
        with open(self.src / "docs" / "note0.txt", "a") as f:
            f.write(f"changed: {tag}\n")


def _tree_diff(a: dict[str, str], b: dict[str, str]) -> str:
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    return f"only on speed vault: {only_a[:10]}; only on server: {only_b[:10]}; " \
           f"differ: {differ[:10]}"


@pytest.fixture
def make_setup(tmp_path: Path) -> Iterator[Callable[[str], Setup]]:
    servers: list[ServerTier] = []

    def make(kind: str) -> Setup:
        server = SERVERS[kind](tmp_path)
        servers.append(server)
        return Setup(tmp_path, server)

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def ftp_setup(make_setup: Callable[[str], Setup]) -> Setup:
    s = make_setup("ftp")
    s.init()
    return s


class Watcher(threading.Thread):
    """Fires ``action`` once ``condition`` holds (or after ``after`` seconds) while
    ``proc`` runs; records whether it fired before the process ended."""

    def __init__(self, proc: subprocess.Popen[str], condition: Callable[[], bool],
                 action: Callable[[], None], after: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.proc, self.condition, self.action, self.after = proc, condition, action, after
        self.fired_while_running = False
        self.ran_past_action = False  # the process still ran when the action returned
        self.fired_at: float | None = None

    def run(self) -> None:
        start = time.monotonic()
        while self.proc.poll() is None:
            if self.condition() or time.monotonic() - start >= self.after:
                running = self.proc.poll() is None
                self.action()
                self.fired_while_running = running
                self.ran_past_action = self.proc.poll() is None
                self.fired_at = time.monotonic() - start
                return
            time.sleep(0.005)


def _rename(a: Path, b: Path) -> None:
    a.rename(b)


def _grown(d: Path, limit: int) -> Callable[[], bool]:
    def cond() -> bool:
        total = 0
        for dirpath, _dirs, files in os.walk(d):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    pass
        return total > limit

    return cond


# -- 1 and 7: a backup while the server is down, on every server kind ----------------------------


@pytest.mark.parametrize("kind", ["ftp", "sftp", "s3"])
def test_backup_with_server_down_then_sync(make_setup: Callable[[str], Setup],
                                           kind: str) -> None:
    s = make_setup(kind)
    s.init()
    first = s.backup()
    s.assert_level()

    s.server.kill()
    s.mutate("server down")
    second = s.backup()
    assert second["complete"] is True

    speed, server = s.tiers()
    assert speed["state"] == "online" and speed["revision"] == speed["max_revision"], speed
    assert server["state"] == "offline", server
    assert server["revision"] is None, server
    assert server["expected_revision"] < speed["revision"], (speed, server)
    assert server["missed_writes"] is True, server
    if kind == "ftp":
        assert "***" in server["url"] and FTP_PASSWORD not in server["url"], server

    s.server.start()
    if kind == "s3":
        # moto came back empty, without even the bucket: still unreachable.
        _speed, server = s.tiers()
        assert server["state"] == "offline", server
        s.server.after_restart()
    speed, server = s.tiers()
    assert server["state"] == "unsynchronized", server
    assert server["revision"] < speed["revision"], (speed, server)

    rows = s.json("sync")
    assert any(r.get("completed") for r in rows), rows
    s.assert_level(rows)
    s.assert_level()
    snaps = {x["id"] for x in s.json("snapshots")}
    assert {first["snapshot_id"], second["snapshot_id"]} <= snaps

    # Both snapshots restore from the server alone.
    s.speed.rename(s.speed.with_name("speed-vault.unplugged"))
    s.restore_and_compare(s.tmp / "restored")
    s.speed.with_name("speed-vault.unplugged").rename(s.speed)


# -- 2: the server killed in the middle of a large pack upload ------------------------------------


def test_server_killed_mid_upload(ftp_setup: Setup) -> None:
    s = ftp_setup
    write_big_files(s.src)
    server = s.server
    assert isinstance(server, FtpTier)
    proc = s.start_tv("--json", "backup", s.src)
    w = Watcher(proc, _grown(server.dir / "data", 3 << 20), server.kill)
    w.start()
    res = s.finish(proc)
    w.join()
    assert res.returncode == 0, describe(res)
    assert w.fired_while_running, "the backup ended before the server could be killed"
    summary = json.loads(res.stdout)
    assert summary["complete"] and summary["total_bytes_processed"] > 3 * BIG_FILE

    speed, srv = s.tiers()
    assert speed["state"] == "online" and srv["state"] == "offline", (speed, srv)
    assert srv["expected_revision"] < speed["revision"]
    assert summary["snapshot_id"] in {x["id"] for x in s.json("snapshots")}
    s.restore_and_compare(s.tmp / "restored")

    server.start()
    assert s.tiers()[1]["state"] == "unsynchronized"
    s.json("sync")
    s.assert_level()


# -- 3: the speed vault disappears mid-backup and comes back --------------------------------------


def test_speed_vault_unplugged_mid_backup(ftp_setup: Setup) -> None:
    s = ftp_setup
    s.backup()
    write_big_files(s.src)
    away = s.speed.with_name("speed-vault.away")
    proc = s.start_tv("--json", "backup", s.src)
    w = Watcher(proc, _grown(s.speed / "data", 3 << 20), lambda: _rename(s.speed, away))
    w.start()
    res = s.finish(proc)
    w.join()
    assert res.returncode == 0, describe(res)
    assert w.fired_while_running, "the backup ended before the speed vault was unplugged"
    summary = json.loads(res.stdout)

    speed, srv = s.tiers()
    assert speed["state"] == "offline" and srv["state"] == "online", (speed, srv)
    assert speed["expected_revision"] < srv["revision"]
    away.rename(s.speed)
    speed, srv = s.tiers()
    assert speed["state"] == "unsynchronized", speed
    assert srv["state"] == "online", srv
    s.json("sync")
    s.assert_level()
    assert summary["snapshot_id"] in {x["id"] for x in s.json("snapshots")}
    s.restore_and_compare(s.tmp / "restored")


# -- 4: both tiers down ---------------------------------------------------------------------------


def test_both_tiers_down_wait_timeout_exits_5(ftp_setup: Setup) -> None:
    s = ftp_setup
    s.backup()
    s.server.kill()
    s.speed.rename(s.speed.with_name("speed-vault.off"))
    s.mutate("both down")
    before = all_files(s.speed.with_name("speed-vault.off"))

    t0 = time.monotonic()
    p = s.tv("--json", "backup", "--wait-timeout", "3", s.src)
    took = time.monotonic() - t0
    assert p.returncode == 5, describe(p)
    assert 3 <= took < 60, took
    line = the_error_line(p)
    assert "3 s" in line and s.vault_id[:8] in line, line

    # Without --json: the same single error line ends the output (the lines before
    # it are the wait's progress notes: which tier is offline, what it waits for).
    p = s.tv("backup", "--wait-timeout", "3", s.src)
    assert p.returncode == 5, describe(p)
    assert "3 s" in the_error_line(p)
    assert all_files(s.speed.with_name("speed-vault.off")) == before


def test_waiting_backup_completes_when_a_tier_returns(ftp_setup: Setup) -> None:
    s = ftp_setup
    s.backup()
    s.server.kill()
    off = s.speed.with_name("speed-vault.off")
    s.speed.rename(off)
    s.mutate("waiting")

    t0 = time.monotonic()
    proc = s.start_tv("backup", s.src)
    time.sleep(2)
    assert proc.poll() is None, "the backup did not wait for a tier"
    s.server.start()
    res = s.finish(proc, timeout=90)
    took = time.monotonic() - t0
    assert res.returncode == 0, describe(res)
    assert took >= 2
    assert "waiting for a tier" in res.stderr, describe(res)

    speed, srv = s.tiers()
    assert srv["state"] == "online" and srv["revision"] == srv["max_revision"], srv
    assert speed["state"] == "offline", speed
    off.rename(s.speed)
    assert s.tiers()[0]["state"] == "unsynchronized"
    s.json("sync")
    s.assert_level()
    s.restore_and_compare(s.tmp / "restored")


# -- 5: restore from the server alone -------------------------------------------------------------


def test_restore_with_speed_vault_gone_reads_from_server(ftp_setup: Setup) -> None:
    s = ftp_setup
    write_big_files(s.src, n=1, size=8 << 20)
    s.backup()
    s.mutate("second")
    s.backup()
    s.assert_level()
    off = s.speed.with_name("speed-vault.off")
    s.speed.rename(off)
    s.restore_and_compare(s.tmp / "restored")
    snaps = s.json("snapshots")
    assert len(snaps) == 2
    off.rename(s.speed)
    # A restore writes nothing: the speed vault is current when it returns.
    speed, srv = s.tiers()
    assert speed["state"] == srv["state"] == "online", (speed, srv)
    s.assert_level()


# -- 6: a copied installation ---------------------------------------------------------------------


def test_copied_installation_is_refused_until_take_over(ftp_setup: Setup) -> None:
    s = ftp_setup
    s.backup()
    copy = s.tmp / "home-copy"
    shutil.copytree(s.home, copy)
    s.mutate("original")
    s.backup()  # the original moves on: the copy's recorded revisions are now stale

    def snapshot_tiers() -> tuple[dict[str, str], dict[str, str]]:
        server = s.server
        assert isinstance(server, FtpTier)
        return all_files(s.speed), all_files(server.root)

    before = snapshot_tiers()
    s.mutate("copy")
    for args in (("backup", s.src), ("--json", "backup", s.src), ("tiers",), ("sync",)):
        p = s.tv(*args, home=copy)
        assert p.returncode == 3, describe(p)
        lines = err_lines(p)
        assert len(lines) == 1, describe(p)
        line = lines[0]
        assert s.vault_id[:8] in line, line
        assert "attach" in line and "--take-over" in line, line
        assert FTP_PASSWORD not in line
        assert snapshot_tiers() == before, f"{args} wrote to a tier"

    res = s.json("attach", s.speed, s.server.url, "--take-over", home=copy)
    assert res["take_over"] is True and res["vault_id"] == s.vault_id
    taken = s.ok("--json", "backup", s.src, home=copy)
    taken_id = json.loads(taken.stdout)["snapshot_id"]

    before = snapshot_tiers()
    s.mutate("original again")
    p = s.tv("backup", s.src)
    assert p.returncode == 3, describe(p)
    lines = err_lines(p)
    assert len(lines) == 1 and "--take-over" in lines[0], describe(p)
    assert snapshot_tiers() == before
    # The new writer's view: everything level, its snapshot there.
    speed, srv = s.tiers(home=copy)
    assert speed["state"] == srv["state"] == "online"
    assert taken_id in {x["id"] for x in s.json("snapshots", home=copy)}
    assert s.speed_files() == s.server.files()


# -- 7: a new local tier filled by synchronization ------------------------------------------------


def test_tier_add_fills_new_local_dir_by_sync(ftp_setup: Setup) -> None:
    s = ftp_setup
    s.backup()
    s.mutate("two")
    s.backup()
    extra = s.tmp / "usb-disk"
    res = s.json("tier", "add", extra)
    assert res["added"] is True
    rows = s.json("tiers")
    assert [r["url"] for r in rows] == [str(s.speed), rows[1]["url"], str(extra)]
    assert {r["state"] for r in rows} == {"online"}, rows
    assert len({r["revision"] for r in rows}) == 1, rows
    assert tree_digests(extra) == s.speed_files() == s.server.files()

    # From now on backups go to all three tiers.
    s.mutate("three")
    s.backup()
    rows = s.json("tiers")
    assert {r["state"] for r in rows} == {"online"} and len({r["revision"] for r in rows}) == 1
    assert tree_digests(extra) == s.speed_files() == s.server.files()
    # ... and the new tier alone can serve a restore.
    s.speed.rename(s.speed.with_name("speed.off"))
    s.server.kill()
    s.restore_and_compare(s.tmp / "restored")


# -- the command's own synchronization when it is done --------------------------------------------


def test_next_backup_brings_a_returned_server_level(ftp_setup: Setup) -> None:
    """A write command synchronizes stale tiers when it is done (no explicit sync)."""
    s = ftp_setup
    s.backup()
    s.server.kill()
    s.mutate("down")
    s.backup("--no-sync")
    s.server.start()
    assert s.tiers()[1]["state"] == "unsynchronized"
    s.mutate("back")
    s.backup()  # writes only to the speed vault, then syncs the server
    s.assert_level()
    s.restore_and_compare(s.tmp / "restored")


def test_speed_vault_blip_mid_backup_is_healed_by_the_backup(ftp_setup: Setup) -> None:
    """The speed vault vanishes for half a second during a large backup: the
    backup completes, and its closing synchronization brings it level."""
    s = ftp_setup
    s.backup()
    # The server's uploads are held to 40 MB/s so that the backup of ~150 MiB outlasts
    # the blip on any machine: the closing synchronization must meet the vault back.
    cfg = s.home / "config.toml"
    doc = tomllib.loads(cfg.read_text())
    doc["throttle"] = [{"tier": "2", "upload": "40MB"}]
    cfg.write_text(tomli_w.dumps(doc))
    write_big_files(s.src)
    away = s.speed.with_name("speed-vault.away")

    def blip() -> None:
        s.speed.rename(away)
        time.sleep(0.5)
        away.rename(s.speed)

    proc = s.start_tv("--json", "backup", s.src)
    w = Watcher(proc, _grown(s.speed / "data", 3 << 20), blip)
    w.start()
    res = s.finish(proc)
    w.join()
    assert res.returncode == 0, describe(res)
    assert w.fired_while_running
    assert w.ran_past_action, "the backup ended before the speed vault came back"
    s.assert_level()
    assert json.loads(res.stdout)["snapshot_id"] in {x["id"] for x in s.json("snapshots")}
    s.restore_and_compare(s.tmp / "restored")


def test_speed_vault_unplugged_while_behind_is_not_recreated(ftp_setup: Setup) -> None:
    s = ftp_setup
    s.backup()
    away = s.speed.with_name("speed-vault.away")
    s.speed.rename(away)
    s.mutate("speed away")
    s.backup("--no-sync")
    away.rename(s.speed)
    assert s.tiers()[0]["state"] == "unsynchronized"
    # A long backup: it writes to the server only (the speed vault is behind);
    # meanwhile the speed vault's disk is unplugged.
    write_big_files(s.src)
    proc = s.start_tv("--json", "backup", s.src)
    server = s.server
    assert isinstance(server, FtpTier)
    w = Watcher(proc, _grown(server.dir / "data", 3 << 20), lambda: _rename(s.speed, away))
    w.start()
    res = s.finish(proc)
    w.join()
    assert res.returncode == 0, describe(res)
    assert w.fired_while_running
    assert not s.speed.exists(), \
        f"the closing sync recreated the unplugged speed vault: {sorted(os.listdir(s.speed))}"
