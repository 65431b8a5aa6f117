"""A tier that lies, loses files or is compromised cannot destroy the others (issue 9).

Two tiers: a real FTP server (read first: the worst case) and a local speed
vault. The test tampers with the server's files on disk the way a hostile or
botched server would: hide key files, snapshots, indexes (each alone and
together), put back an index that prune superseded, roll the whole tier back
to an older state while keeping a current revision, rewrite the config. Then
the user goes on as usual (backup, sync, forget --prune, prune). Every time:

- the honest tier still restores every snapshot byte for byte (checked with a
  separate restore-only installation attached to it alone);
- the tampered tier is named in a warning;
- ``check --repair`` brings it back (a later ``check`` is clean on both).

Plus the two destructive cases of the security review, through the CLI: a
sync from a server that lost its keys/snapshots/indexes while the speed vault
missed a write, and a prune while the server hides its snapshots.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemonkit import DaemonProc, add_to_config
from tests.helpers import describe, ok, run_tv
from tests.servers.ftp_server import FtpServerProcess

FTP_PASSWORD = "hostile-tier-ftp-pw"
TIMEOUT = 180


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path / "ftproot", user="tv", password=FTP_PASSWORD)
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


class Setup:
    """Server tier first, speed vault second; three generations of a source tree."""

    def __init__(self, tmp: Path, ftp: FtpServerProcess) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.server = ftp.root / "vault"
        self.server_url = ftp.url + "/vault"
        self.speed = tmp / "speed"
        self.src = tmp / "src"
        self.expected: dict[str, dict[str, bytes]] = {}
        self.env: dict[str, str] = {}
        ok(self.tv("init", self.server_url, str(self.speed)))

    def tv(self, *args: str) -> object:
        return run_tv(self.home, *args, env=self.env, timeout=TIMEOUT)

    def generation(self, n: int) -> str:
        self.src.mkdir(exist_ok=True)
        files = {f"f{i}": (f"gen {n} file {i} ".encode() * (200 + 50 * i)) for i in range(n + 2)}
        for name, data in files.items():
            (self.src / name).write_bytes(data)
        proc = ok(run_tv(self.home, "--json", "backup", str(self.src), env=self.env,
                         timeout=TIMEOUT))
        sid = json.loads(proc.stdout)["snapshot_id"]
        self.expected[sid] = dict(files)
        return str(sid)

    def honest_restores_everything(self, ids: list[str]) -> None:
        """A restore-only installation on the speed vault alone restores each snapshot."""
        home = self.tmp / f"reader-{len(list(self.tmp.glob('reader-*')))}"
        ok(run_tv(home, "attach", str(self.speed), "--read-only", timeout=TIMEOUT))
        for sid in ids:
            target = self.tmp / f"restore-{sid[:8]}-{home.name}"
            ok(run_tv(home, "restore", sid, str(target), timeout=TIMEOUT))
            got = {p.name: p.read_bytes() for p in (target / str(self.src).lstrip("/")).iterdir()}
            assert got == self.expected[sid], f"snapshot {sid[:8]} differs on the speed vault"


def _ids(d: Path, kind: str) -> set[str]:
    return {p.name for p in (d / kind).iterdir()} if (d / kind).is_dir() else set()


def _hide(d: Path, kinds: list[str], store: Path) -> None:
    for k in kinds:
        shutil.move(str(d / k), str(store / k))
        (d / k).mkdir()


SCENARIOS = ["hide-keys", "hide-snapshots", "hide-index", "hide-all", "replay-index",
             "rollback", "rewrite-config"]


@pytest.mark.parametrize("attack", SCENARIOS)
def test_tampered_server_cannot_hurt_the_speed_vault(tmp_path: Path, ftp: FtpServerProcess,
                                                     attack: str) -> None:
    s = Setup(tmp_path, ftp)
    first = s.generation(1)
    old_state = tmp_path / "server-old"
    shutil.copytree(s.server, old_state)  # for the rollback: a genuine older vault state
    old_index = _ids(s.server, "index")
    second = s.generation(2)
    live = [second]
    if attack == "replay-index":
        ok(s.tv("forget", "--keep-last", "1", "--prune"))
        replayed = old_index - _ids(s.server, "index")
        assert replayed, "prune should have replaced the first index"
    else:
        live.insert(0, first)
    store = tmp_path / "stolen"
    store.mkdir()
    if attack.startswith("hide-"):
        kinds = {"hide-keys": ["keys"], "hide-snapshots": ["snapshots"],
                 "hide-index": ["index"], "hide-all": ["keys", "snapshots", "index"]}[attack]
        _hide(s.server, kinds, store)
    elif attack == "replay-index":
        for name in replayed:
            shutil.copy(old_state / "index" / name, s.server / "index" / name)
    elif attack == "rollback":
        rev = (s.server / "revision").read_bytes()
        shutil.rmtree(s.server)
        shutil.copytree(old_state, s.server)
        (s.server / "revision").write_bytes(rev)  # current-looking revision
    elif attack == "rewrite-config":
        doc = json.loads((s.server / "config").read_text())
        doc["chunker"] = {"min": 64, "avg": 256, "max": 1024}
        (s.server / "config").write_text(json.dumps(doc))

    # A file reverted to its first version: after the replayed index, a backup
    # that deduplicated against the pruned data would be unrestorable (finding 2).
    (s.src / "f0").write_bytes(s.expected[first]["f0"])
    warnings = ""
    for args in (["backup", str(s.src)], ["sync"], ["forget", "--keep-last", "10", "--prune"],
                 ["prune"]):
        proc = s.tv(*args)
        assert proc.returncode == 0, f"{args}: {describe(proc)}"  # type: ignore[attr-defined]
        assert "Traceback" not in proc.stderr  # type: ignore[attr-defined]
        warnings += proc.stderr  # type: ignore[attr-defined]
        if args[0] == "backup":
            live.append(json.loads(ok(run_tv(s.home, "--json", "snapshots", env=s.env))
                                   .stdout)[-1]["id"])
            s.expected[live[-1]] = {p.name: p.read_bytes() for p in s.src.iterdir()}
    # A daemon round: a job of the set (backup, then its retention: forget + prune)
    # and the idle synchronization after it.
    ok(s.tv("set", "add", "src", str(s.src)))
    add_to_config(s.home, '[sets.src.retention]\nkeep_last = 10\n')
    daemon = DaemonProc(tmp_path, s.home).start()
    try:
        job = ok(s.tv("--json", "run", "src", "--wait"))
        assert "Traceback" not in daemon.log(), daemon.log()
        # Idle rounds every 0.5 s: give them a few seconds (a sync session appears
        # only when a tier is behind).
        end = time.monotonic() + 5
        while time.monotonic() < end and not any(
                x["kind"] == "sync" for x in daemon.status("--sessions", "20")["sessions"]):
            time.sleep(0.5)
    finally:
        daemon.stop()
    assert json.loads(job.stdout)["session"]["status"] == "success", describe(job)
    snaps = json.loads(ok(run_tv(s.home, "--json", "snapshots", env=s.env)).stdout)
    live.append(snaps[-1]["id"])
    s.expected[live[-1]] = {p.name: p.read_bytes() for p in s.src.iterdir()}
    s.honest_restores_everything(live)
    assert "stale or damaged" in warnings and "ftp://" in warnings, warnings

    # The speed vault's key file, snapshots and indexes are all still there.
    assert _ids(s.speed, "keys") and set(live) <= _ids(s.speed, "snapshots")

    ok(s.tv("check", "--repair"))
    proc = ok(s.tv("check"))  # type: ignore[arg-type]
    assert "stale or damaged" not in proc.stderr, describe(proc)
    assert set(live) <= _ids(s.server, "snapshots")
    assert _ids(s.server, "keys") == _ids(s.speed, "keys")
    assert _ids(s.server, "index") == _ids(s.speed, "index")


def test_sync_from_a_server_that_lost_everything_keeps_the_speed_vault(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    """Review finding 1: the speed vault missed a write, the server then lost its
    keys, snapshots and indexes but kept its revision; sync must not delete the
    speed vault's only key file, its snapshot or its index."""
    s = Setup(tmp_path, ftp)
    first = s.generation(1)
    away = tmp_path / "unplugged"
    s.speed.rename(away)  # the USB disk is unplugged for one backup
    s.generation(2)
    away.rename(s.speed)
    before = {k: _ids(s.speed, k) for k in ("keys", "snapshots", "index")}
    store = tmp_path / "stolen"
    store.mkdir()
    _hide(s.server, ["keys", "snapshots", "index"], store)
    proc = s.tv("sync")
    assert "Traceback" not in proc.stderr, describe(proc)  # type: ignore[attr-defined]
    for k, names in before.items():
        assert names <= _ids(s.speed, k), f"sync removed {k} from the speed vault"
    s.honest_restores_everything([first])


def test_prune_while_the_server_hides_its_snapshots_deletes_nothing_needed(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    """Review finding 1 (prune): with the server listed first hiding its
    snapshots, prune must not delete the packs the speed vault's snapshots use."""
    s = Setup(tmp_path, ftp)
    ids = [s.generation(1), s.generation(2)]
    store = tmp_path / "stolen"
    store.mkdir()
    _hide(s.server, ["snapshots"], store)
    proc = s.tv("prune")
    assert "Traceback" not in proc.stderr, describe(proc)  # type: ignore[attr-defined]
    s.honest_restores_everything(ids)


def test_check_names_a_rolled_back_tier_and_repair_heals_it(tmp_path: Path,
                                                           ftp: FtpServerProcess) -> None:
    """Without any sync in between: ``check`` reports the tier, ``--repair`` heals it."""
    s = Setup(tmp_path, ftp)
    s.generation(1)
    old_state = tmp_path / "server-old"
    shutil.copytree(s.server, old_state)
    ids = [s.generation(1), s.generation(2)]
    rev = (s.server / "revision").read_bytes()
    shutil.rmtree(s.server)
    shutil.copytree(old_state, s.server)
    (s.server / "revision").write_bytes(rev)
    proc = s.tv("check")
    assert proc.returncode == 1, describe(proc)  # type: ignore[arg-type,attr-defined]
    assert "rolled back" in proc.stdout + proc.stderr  # type: ignore[attr-defined]
    latest = json.loads(ok(run_tv(s.home, "--json", "snapshots", env=s.env)).stdout)[-1]["id"]
    assert latest == ids[-1]  # `restore latest` would use the honest tier
    ok(s.tv("check", "--repair"))  # type: ignore[arg-type]
    ok(s.tv("check"))  # type: ignore[arg-type]
    assert set(ids) <= _ids(s.server, "snapshots")


def test_files_planted_under_their_own_hash_never_condemn_or_reach_the_speed_vault(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    """Security trial (blocker): random bytes in the server's snapshots/ and index/,
    named by their BLAKE3 hash (no key needed), got into the next manifest; from then
    on the honest speed vault was "stale or damaged" and check --repair copied the junk
    onto it. Now only files that open with the key are sealed or given back."""
    from tiervault.vault.repository import content_name

    s = Setup(tmp_path, ftp)
    first = s.generation(1)
    planted = []
    for kind in ("snapshots", "index"):
        junk = os.urandom(300)
        name = content_name(junk)
        (s.server / kind / name).write_bytes(junk)
        planted.append((kind, name))
    live = [first]
    for args in (["backup", str(s.src)], ["sync"], ["check"], ["check", "--repair"],
                 ["backup", str(s.src)], ["sync"]):
        proc = s.tv(*args)
        assert "Traceback" not in proc.stderr, describe(proc)  # type: ignore[attr-defined]
        assert f"{s.speed} is stale" not in proc.stderr, f"{args}: {describe(proc)}"  # type: ignore[attr-defined]
        if args[0] == "backup":
            assert proc.returncode in (0, 6), describe(proc)  # type: ignore[attr-defined]
            live.append(json.loads(ok(s.tv("--json", "snapshots")).stdout)[-1]["id"])  # type: ignore[attr-defined]
            s.expected[live[-1]] = {p.name: p.read_bytes() for p in s.src.iterdir()}
    for kind, name in planted:
        assert not (s.speed / kind / name).exists(), f"{kind}/{name} spread to the speed vault"
    ok(s.tv("forget", "--keep-last", "10", "--prune"))
    s.honest_restores_everything(live)


def test_a_plain_sync_heals_a_tier_that_lost_files_behind_its_revision(
        tmp_path: Path, ftp: FtpServerProcess) -> None:
    """Security trial: `tiervault sync` said both tiers were online and healed nothing
    when the server had lost keys/ and snapshots/ but kept its revision."""
    s = Setup(tmp_path, ftp)
    s.generation(1)
    store = tmp_path / "stolen"
    store.mkdir()
    _hide(s.server, ["keys", "snapshots"], store)
    proc = ok(s.tv("sync"))  # type: ignore[arg-type]
    assert "stale or damaged" in proc.stderr and "is synchronized" in proc.stdout + proc.stderr, \
        describe(proc)
    assert _ids(s.server, "keys") == _ids(s.speed, "keys")
    assert _ids(s.server, "snapshots") == _ids(s.speed, "snapshots")
    assert "stale or damaged" not in ok(s.tv("check")).stderr  # type: ignore[arg-type]
