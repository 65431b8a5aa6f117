"""Security properties, through the CLI against real servers.

- TLS certificates are verified by default: FTPS with a self-signed
  certificate is refused unless ``?ca_file=`` names it; S3 over https with a
  certificate nobody signed is refused; ``?insecure=1`` connects anyway but
  prints a loud WARNING on stderr on every command (also with ``--json``).
- SFTP host keys are checked against known_hosts: an unknown or a different
  key is refused.
- The passphrase and the server password never show up in any output (text
  or ``--json``, success or failure), in the vault files on either tier, or in
  the installation's databases; only config.toml may hold the password, as
  part of the tier URL the user gave. config.toml and the databases are 0600.
- ``key passwd`` replaces the key file only (no pack, index or snapshot file is
  rewritten); the old passphrase then fails with exit 4. ``key add/list/remove``.
- Dry runs (``forget --prune``, ``prune``, ``tier lost``, ``check --repair``)
  change no file of any tier.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import describe, ok, run_tv
from tests.servers.ftp_server import FtpServerProcess, make_self_signed_cert

TIMEOUT = 180
FTP_USER = "tv"
WARNING_WORDS = ("WARNING", "insecure=1")


def vault_files(*roots: Path) -> dict[str, tuple[str, int]]:
    """path -> (sha256, mtime_ns) of every file below ``roots`` (hidden ones too)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


def warning_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if all(w in ln for w in WARNING_WORDS)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed_cert(tmp_path_factory.mktemp("certs"))


# -- TLS -----------------------------------------------------------------------------------------


def test_ftps_certificate_is_verified_by_default(tmp_path: Path,
                                                 certs: tuple[Path, Path]) -> None:
    with FtpServerProcess(tmp_path / "root", tls=True, user=FTP_USER, password="pw-tls",
                          certfile=certs[0], keyfile=certs[1]) as srv:
        # Self-signed and not in the system CAs: refused, nothing created.
        proc = run_tv(tmp_path / "h1", "init", srv.url + "/v1", timeout=TIMEOUT)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
        assert "certificate" in proc.stderr.lower(), describe(proc)
        assert not (srv.root / "v1" / "config").exists()

        # Trusted through ca_file: works, quietly.
        url = f"{srv.url}/v2?ca_file={quote(str(certs[0]))}"
        proc = ok(run_tv(tmp_path / "h2", "init", url, timeout=TIMEOUT))
        assert (srv.root / "v2" / "config").exists()
        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_bytes(b"over tls\n")
        proc2 = ok(run_tv(tmp_path / "h2", "backup", src, timeout=TIMEOUT))
        assert not warning_lines(proc.stderr + proc2.stderr)

        # insecure=1: works, but every command says loudly that it is insecure.
        url = f"{srv.url}/v3?insecure=1"
        home = tmp_path / "h3"
        runs = [ok(run_tv(home, "init", url, timeout=TIMEOUT)),
                ok(run_tv(home, "backup", src, timeout=TIMEOUT)),
                ok(run_tv(home, "snapshots", timeout=TIMEOUT)),
                ok(run_tv(home, "--json", "snapshots", timeout=TIMEOUT))]
        assert (srv.root / "v3" / "config").exists()
        for proc in runs:
            assert warning_lines(proc.stderr), describe(proc)
            assert "pw-tls" not in proc.stdout + proc.stderr
        json.loads(runs[-1].stdout)  # the warning went to stderr, not into the JSON


def test_s3_https_certificate_is_verified_by_default(tmp_path: Path) -> None:
    from tests.servers.s3_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServerProcess

    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with MotoServerProcess(tls=True) as moto:
        assert moto.endpoint.startswith("https://")
        base = f"s3://tls-bucket/vault?endpoint={quote(moto.endpoint, safe=':/')}&region={REGION}"
        proc = run_tv(tmp_path / "h1", "init", base, env=env, timeout=TIMEOUT)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
        assert "certificate" in proc.stderr.lower(), describe(proc)

        home = tmp_path / "h2"
        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_bytes(b"over https\n")
        runs = [ok(run_tv(home, "init", base + "&insecure=1", env=env, timeout=TIMEOUT)),
                ok(run_tv(home, "backup", src, env=env, timeout=TIMEOUT))]
        for proc in runs:
            assert warning_lines(proc.stderr), describe(proc)
            assert SECRET_KEY not in proc.stdout + proc.stderr


# -- SFTP host keys -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.servers.sshd import SSHD, SshdProcess

    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH sshd is not installed")
    srv = SshdProcess(tmp_path_factory.mktemp("sshd"))
    yield srv
    srv.stop()


def test_sftp_host_key_is_checked(sshd: object, tmp_path: Path) -> None:
    from tests.servers.sshd import SshdProcess, known_hosts_line, write_keypair

    assert isinstance(sshd, SshdProcess)

    def url(path: Path, known_hosts: Path) -> str:
        return (f"{sshd.url(str(path))}?known_hosts={quote(str(known_hosts))}"
                f"&key_file={quote(str(sshd.client_key))}&timeout=10")

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    other = tmp_path / "other_known_hosts"
    other.write_text(known_hosts_line(sshd.port, write_keypair(tmp_path / "impostor")))
    for name, kh, words in (("unknown", empty, ("known_hosts",)),
                            ("changed", other, ("host key",))):
        vault = tmp_path / f"vault-{name}"
        proc = run_tv(tmp_path / f"h-{name}", "init", url(vault, kh), timeout=TIMEOUT)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
        assert all(w in proc.stderr for w in words), describe(proc)
        assert not (vault / "config").exists()
    vault = tmp_path / "vault-good"
    ok(run_tv(tmp_path / "h-good", "init", url(vault, sshd.known_hosts), timeout=TIMEOUT))
    assert (vault / "config").exists()


# -- secrets never leak ------------------------------------------------------------------------


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path / "ftproot", user=FTP_USER,
                           password="Ftp-Secret-" + secrets.token_hex(6))
    yield srv
    srv.stop()


def test_passphrase_and_password_never_leak(ftp: FtpServerProcess, tmp_path: Path) -> None:
    password = ftp.password
    passphrase = "Vault-Passphrase-" + secrets.token_hex(6)
    env = {"TIERVAULT_PASSWORD": passphrase}
    home, speed, src = tmp_path / "home", tmp_path / "speed", tmp_path / "src"
    url = f"{ftp.url}/vault"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.bin").write_bytes(os.urandom(300_000))
    (src / "b.txt").write_text("hello\n")
    pwfile = tmp_path / "pw"
    pwfile.write_text(passphrase + "\n")
    pwfile.chmod(0o600)

    runs: list[subprocess.CompletedProcess[str]] = []

    def tv(*args: str | Path, expect: int | None = 0,
           extra_env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
        proc = run_tv(home, *args, env={**env, **(extra_env or {})}, timeout=TIMEOUT)
        runs.append(proc)
        if expect is not None:
            assert proc.returncode == expect, describe(proc)
        assert "Traceback" not in proc.stderr, describe(proc)
        return proc

    tv("init", speed, url)
    tv("backup", src)
    tv("--json", "backup", src, "--tag", "second")
    for j in ((), ("--json",)):
        tv(*j, "tiers")
        tv(*j, "snapshots")
        tv(*j, "ls", "latest")
        tv(*j, "key", "list")
        tv(*j, "check", *(() if j else ("--read-data",)))
        tv(*j, "restore", "latest", tmp_path / f"restore{len(j)}")
    tv("find", "*.bin")
    tv("--json", "forget", "--keep-last", "1", "--dry-run")
    tv("--password-file", pwfile, "snapshots", extra_env={"TIERVAULT_PASSWORD": None})
    tv("snapshots", expect=4, extra_env={"TIERVAULT_PASSWORD": passphrase + "-wrong"})
    tv("--json", "snapshots", expect=4, extra_env={"TIERVAULT_PASSWORD": passphrase + "x"})
    # Failures involving the server: it is down, then it refuses the password.
    ftp.stop()
    (src / "c.txt").write_text("while the server is down\n")
    tv("backup", src)
    tv("--json", "tiers")
    tv("check", "--tier", "2", expect=1)
    ftp.start()
    wrong = run_tv(tmp_path / "home-wrong", "init", tmp_path / "speed2",
                   url.replace(password, password + "-nope"), env=env, timeout=TIMEOUT)
    runs.append(wrong)
    assert "login refused" in wrong.stderr, describe(wrong)

    # The password given in the environment instead of the URL is stored nowhere.
    env_home = tmp_path / "home-env"
    env_url = f"ftp://{FTP_USER}@127.0.0.1:{ftp.port}/vault-env"
    for args in (("init", env_url), ("backup", src)):
        proc = run_tv(env_home, *args, env={**env, "TIERVAULT_FTP_PASSWORD": password},
                      timeout=TIMEOUT)
        runs.append(ok(proc))
    assert (ftp.root / "vault-env" / "config").exists()
    assert password.encode() not in (env_home / "config.toml").read_bytes()

    quoted = quote(password, safe="")
    for proc in runs:
        text = proc.stdout + proc.stderr
        for secret in (password, quoted, passphrase):
            assert secret not in text, f"{secret!r} printed by {proc.args[5:]}:\n{text[-3000:]}"

    # Files: the vault (both tiers) and the installation never hold the passphrase;
    # only config.toml holds the password (inside the tier URL the user gave).
    files = [p for root in (speed, ftp.root, home, env_home, tmp_path / "home-wrong",
                            tmp_path / "speed2")
             if root.exists() for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in files)
    for p in files:
        data = p.read_bytes()
        assert passphrase.encode() not in data, p
        if p.name != "config.toml" or env_home in p.parents:
            assert password.encode() not in data and quoted.encode() not in data, p

    # The installation's files are private.
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for p in home.iterdir():
        if p.name.startswith(("config.toml", "state.db", "files-cache.db")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "state.db").stat().st_mode) == 0o600


# -- keys --------------------------------------------------------------------------------------


def test_key_passwd_add_list_remove(ftp: FtpServerProcess, tmp_path: Path) -> None:
    home, speed, src = tmp_path / "home", tmp_path / "speed", tmp_path / "src"
    old, new, extra = "old pass " + secrets.token_hex(4), "new pass " + secrets.token_hex(4), \
        "extra pass " + secrets.token_hex(4)
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(200_000))

    def tv(pw: str, *args: str | Path, expect: int = 0,
           new_pw: str | None = None) -> subprocess.CompletedProcess[str]:
        env: dict[str, str | None] = {"TIERVAULT_PASSWORD": pw, "TIERVAULT_NEW_PASSWORD": new_pw}
        proc = run_tv(home, *args, env=env, timeout=TIMEOUT)
        assert proc.returncode == expect, describe(proc)
        assert "Traceback" not in proc.stderr
        return proc

    tv(old, "init", speed, f"{ftp.url}/vault")
    tv(old, "backup", src)
    ftp_vault = ftp.root / "vault"

    def immutable() -> dict[str, tuple[str, int]]:
        return {k: v for k, v in vault_files(speed, ftp_vault).items()
                if "/keys/" not in k and not k.endswith(("/revision", "/manifest"))}

    def keys() -> list[dict[str, object]]:
        return json.loads(tv(new, "--json", "key", "list").stdout)  # type: ignore[no-any-return]

    before = immutable()
    assert any("/data/" in k for k in before)
    old_key = [p.name for p in (speed / "keys").iterdir()]
    tv(old, "key", "passwd", new_pw=new)
    assert immutable() == before  # no pack, index or snapshot rewritten (names, bytes, mtimes)
    new_key = [p.name for p in (speed / "keys").iterdir()]
    assert len(new_key) == 1 and new_key != old_key
    assert sorted(p.name for p in (ftp_vault / "keys").iterdir()) == new_key
    proc = tv(old, "snapshots", expect=4)
    assert "passphrase" in proc.stderr
    tv(new, "snapshots")

    tv(new, "key", "add", new_pw=extra)
    rows = keys()
    assert len(rows) == 2 and [r["current"] for r in rows].count(True) == 1
    added = next(r["id"] for r in rows if not r["current"])
    tv(extra, "snapshots")
    proc = tv(new, "key", "remove", next(r["id"] for r in rows if r["current"]), expect=2)
    assert "in use" in proc.stderr
    tv(new, "key", "remove", str(added))
    assert len(keys()) == 1
    tv(extra, "snapshots", expect=4)
    assert immutable() == before
    target = tmp_path / "r"
    tv(new, "restore", "latest", target)
    assert (target / str(src).lstrip("/") / "a.bin").read_bytes() == (src / "a.bin").read_bytes()


# -- dry runs ----------------------------------------------------------------------------------


def test_dry_runs_change_nothing(ftp: FtpServerProcess, tmp_path: Path) -> None:
    home, speed, src = tmp_path / "home", tmp_path / "speed", tmp_path / "src"
    src.mkdir()
    ok(run_tv(home, "init", speed, f"{ftp.url}/vault", timeout=TIMEOUT))
    for i in range(3):  # three snapshots, each with data the others lack
        (src / f"f{i}.bin").write_bytes(os.urandom(100_000))
        if i:
            (src / f"f{i - 1}.bin").unlink()
        ok(run_tv(home, "backup", src, timeout=TIMEOUT))
    ftp_vault = ftp.root / "vault"

    def unchanged(*args: str | Path, words: tuple[str, ...] = ()) -> None:
        before = vault_files(speed, ftp_vault)
        proc = run_tv(home, *args, timeout=TIMEOUT)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, describe(proc)
        assert vault_files(speed, ftp_vault) == before, f"{args} changed the vault"
        for w in words:
            assert w in proc.stdout, describe(proc)

    unchanged("forget", "--keep-last", "1", "--prune", "--dry-run",
              words=("would remove", "prune (would)"))
    unchanged("prune", "--dry-run", words=("prune (would)",))
    unchanged("--json", "forget", "--keep-last", "1", "--prune", "--dry-run")
    assert len(json.loads(ok(run_tv(home, "--json", "snapshots")).stdout)) == 3

    # A damaged pack on the server: check --repair --dry-run says what it would copy.
    pack = max((p for p in (ftp_vault / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size // 2)
    unchanged("check", "--repair", "--dry-run", words=("would copy",))

    # The speed vault died: tier lost --dry-run names the authority, changes nothing.
    away = tmp_path / "speed-away"
    speed.rename(away)
    before = vault_files(away, ftp_vault)
    proc = run_tv(home, "tier", "lost", "--dry-run", str(speed), timeout=TIMEOUT)
    assert proc.returncode == 0 and "would give up" in proc.stdout, describe(proc)
    assert vault_files(away, ftp_vault) == before
    assert not speed.exists()
    away.rename(speed)
    rows = json.loads(ok(run_tv(home, "--json", "tiers")).stdout)
    assert all(r["state"] == "online" for r in rows), rows
