"""A tier that serves huge small files, symlinks or FIFOs cannot make the client misbehave.

Through the CLI, in a subprocess whose address space is limited to 1 GiB
(RLIMIT_AS): a multi-gigabyte (sparse) revision or key file on a local tier
or on a real FTP server is refused before it is read, the command goes on
with the other tier, and nothing is copied by sync; planted symlinks and
FIFOs in a local tier are refused, not read, and not copied. On the code
before size bounds existed, these runs died of MemoryError (a traceback).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import describe, init_vault, ok, run_tv
from tests.servers.ftp_server import FtpServerProcess

HUGE = 4 << 30  # 4 GiB, sparse: costs no disk
LIMIT = 1 << 30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def tv(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with at most 1 GiB of address space; never a traceback."""
    p = run_tv(home, *args, preexec_fn=_limited)
    assert "Traceback" not in p.stderr and "MemoryError" not in p.stderr, describe(p)
    return p


def sparse(path: Path, size: int = HUGE) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def files(root: Path) -> dict[str, bytes]:
    """Every regular file below ``root`` (hidden ones too), but the revision."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink() and n != "revision":
                # The planted sparse files are named, not read.
                big = p.stat().st_size > 64 << 20
                out[p.relative_to(root).as_posix()] = b"<huge>" if big else p.read_bytes()
    return out


@pytest.fixture
def vault(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """(home, speed vault, second local tier, source dir), one snapshot, tiers level."""
    home, speed = init_vault(tmp_path, "speed")
    second = tmp_path / "second"
    ok(run_tv(home, "tier", "add", str(second)))
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_text(f"file {i}\n" * 100)
    ok(run_tv(home, "backup", str(src)))
    assert files(speed) == files(second)
    return home, speed, second, src


def _make_stale(home: Path, tier: Path, src: Path) -> None:
    """``tier`` misses one backup (unplugged meanwhile)."""
    away = tier.with_name(tier.name + ".away")
    tier.rename(away)
    (src / "new.txt").write_text("written while the second tier was away\n")
    ok(run_tv(home, "backup", "--no-sync", str(src)))
    away.rename(tier)


def _restored_ok(home: Path, src: Path, target: Path) -> None:
    p = tv(home, "restore", "latest", str(target))
    assert p.returncode == 0, describe(p)
    got = target / src.relative_to("/")
    assert {f.name: f.read_bytes() for f in got.iterdir()} == \
        {f.name: f.read_bytes() for f in src.iterdir()}


def test_huge_revision_on_a_local_tier_fails_over(vault: tuple[Path, Path, Path, Path],
                                                  tmp_path: Path) -> None:
    home, speed, _second, src = vault
    sparse(speed / "revision")
    p = tv(home, "--json", "snapshots")
    assert p.returncode == 0, describe(p)
    assert len(json.loads(p.stdout)) == 1
    assert "revision" in p.stderr and "larger than its bound of 64 bytes" in p.stderr, \
        describe(p)
    _restored_ok(home, src, tmp_path / "restored")
    rows = json.loads(tv(home, "--json", "tiers").stdout)
    assert rows[0]["state"] == "offline" and "larger than its bound" in str(rows[0]), rows


def test_huge_key_file_on_a_local_tier_is_skipped_and_not_synced(
        vault: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    home, speed, second, src = vault
    _make_stale(home, second, src)
    sparse(speed / "keys" / "000000000000huge")  # sorts before the real key
    p = tv(home, "--json", "snapshots")
    assert p.returncode == 0, describe(p)
    assert len(json.loads(p.stdout)) == 2
    p = tv(home, "sync")
    assert p.returncode == 0, describe(p)
    assert "keys/000000000000huge" in p.stderr and "larger than its bound" in p.stderr, \
        describe(p)
    assert not (second / "keys" / "000000000000huge").exists()
    mine, theirs = files(speed), files(second)
    del mine["keys/000000000000huge"]
    assert mine == theirs
    # The second tier alone opens and restores the vault.
    speed.rename(speed.with_name("speed.away"))
    _restored_ok(home, src, tmp_path / "restored")


def test_planted_symlinks_and_fifos_are_refused_and_not_synced(
        vault: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    home, speed, second, src = vault
    _make_stale(home, second, src)
    secret = tmp_path / "secret"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- not for the server\n")
    (speed / "keys" / "0000stolen").symlink_to(secret)
    os.mkfifo(speed / "keys" / "0000fifo")
    pack = next(p for p in (speed / "data").rglob("*") if p.is_file())
    outside = tmp_path / ("ab" * 32)
    outside.write_bytes(secret.read_bytes())
    (speed / "data" / "ab").mkdir(exist_ok=True)
    (speed / "data" / "ab" / outside.name).symlink_to(outside)
    p = tv(home, "--json", "snapshots")
    assert p.returncode == 0, describe(p)
    p = tv(home, "sync")  # must not block on the FIFO, nor copy the links' targets
    assert p.returncode == 0, describe(p)
    for name in ("keys/0000stolen", "keys/0000fifo", f"data/ab/{outside.name}"):
        assert not (second / name).exists(), name
    assert not any(b"not for the server" in v for v in files(second).values())
    assert (second / pack.relative_to(speed)).read_bytes() == pack.read_bytes()
    # check names each planted file (security trial: it said "no errors").
    p = tv(home, "check")
    assert p.returncode == 1 and "Traceback" not in p.stderr, describe(p)
    for name in ("keys/0000stolen", "keys/0000fifo", f"data/ab/{outside.name}"):
        assert name in p.stdout + p.stderr and "not a regular file" in p.stdout + p.stderr, \
            describe(p)
    _restored_ok(home, src, tmp_path / "restored")


def test_a_server_key_file_swapped_for_a_huge_one_is_named_and_repaired(
        ftp_vault: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    """Security trial: a key file on the server replaced by a 4 GiB sparse file was
    never reported by check, --repair left it, and with the speed vault away the
    error was "wrong passphrase"."""
    home, speed, served, src = ftp_vault
    key = next((served / "keys").iterdir())
    key.unlink()
    sparse(key)
    p = tv(home, "check")
    assert p.returncode == 1 and f"keys/{key.name}" in p.stdout + p.stderr, describe(p)
    ok(tv(home, "check", "--repair"))
    assert key.read_bytes() == (speed / "keys" / key.name).read_bytes()
    speed.rename(speed.with_name("speed.away"))
    _restored_ok(home, src, tmp_path / "restored")


# -- a real FTP server serving oversized files ------------------------------------------------


@pytest.fixture
def ftp_vault(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, Path]]:
    """(home, speed vault, the FTP server's vault directory, source), one snapshot."""
    srv = FtpServerProcess(tmp_path / "ftp-root", user="tv", password="hostile-sizes-pw")
    try:
        home, speed = init_vault(tmp_path, "speed")
        ok(run_tv(home, "tier", "add", srv.url + "/vault"))
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("served by a hostile server\n" * 1000)
        ok(run_tv(home, "backup", str(src)))
        yield home, speed, tmp_path / "ftp-root" / "vault", src
    finally:
        srv.kill()


def test_oversized_files_served_by_ftp_fail_over(ftp_vault: tuple[Path, Path, Path, Path],
                                                 tmp_path: Path) -> None:
    home, speed, served, src = ftp_vault
    good_rev = (served / "revision").read_bytes()
    sparse(served / "revision")
    p = tv(home, "--json", "snapshots")
    assert p.returncode == 0, describe(p)
    assert "ftp://" in p.stderr and "larger than its bound of 64 bytes" in p.stderr, describe(p)

    # The server is the only tier left, and it serves a huge key file first.
    (served / "revision").write_bytes(good_rev)
    sparse(served / "keys" / "000000000000huge")
    speed.rename(speed.with_name("speed.away"))
    p = tv(home, "--json", "snapshots")
    assert p.returncode == 0, describe(p)
    assert len(json.loads(p.stdout)) == 1
    _restored_ok(home, src, tmp_path / "restored")
