"""The backend contract and SFTP specifics against a real OpenSSH server."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.sshd import SSHD

if not os.path.exists(SSHD):
    pytest.skip(f"{SSHD} not installed (apt-get install openssh-server)",
                allow_module_level=True)

from tests.backend_contract import BackendContract, Planter, plant_file
from tests.servers.sshd import (
    PasswordSftpServer,
    SshdProcess,
    _descendants,
    free_port,
    known_hosts_line,
    write_keypair,
)
from tiervault.errors import (
    BackendError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from tiervault.storage.base import Backend, FileType, Handle
from tiervault.storage.sftp import SftpBackend


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdProcess]:
    server = SshdProcess(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[SshdProcess]:
    """A server of this test alone, for tests that kill or freeze it."""
    server = SshdProcess(tmp_path / "sshd")
    yield server
    server.stop()


@pytest.fixture
def backend(sshd: SshdProcess, tmp_path: Path) -> Iterator[Backend]:
    b = SftpBackend(**sshd.backend_args(tmp_path / "vault"), timeout=10)
    b.create()
    yield b
    b.close()


@pytest.fixture
def plant_temporary(tmp_path: Path) -> Planter:
    return lambda h, token: plant_file(tmp_path / "vault", h, token)


@pytest.fixture
def unreachable(sshd: SshdProcess, tmp_path: Path) -> Iterator[Backend]:
    args = sshd.backend_args(tmp_path / "vault")
    args["port"] = free_port()  # nothing listens there
    b = SftpBackend(**args, timeout=5)
    yield b
    b.close()


class TestSftp(BackendContract):
    pass


def _raises(cls: type[BaseException], fn: object, *args: object) -> BaseException:
    with pytest.raises(cls) as info:
        fn(*args)  # type: ignore[operator]
    return info.value


# ------------------------------------------------------------------ host keys


def test_unknown_host_key_is_refused(sshd: SshdProcess, tmp_path: Path) -> None:
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    b = SftpBackend(**{**sshd.backend_args(tmp_path), "known_hosts": str(kh)})
    e = _raises(PermanentError, b.probe)
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {kh}" in str(e)
    assert "SHA256:" in str(e)  # the fingerprint to check before adding
    assert kh.read_text() == ""  # never auto-added


def test_changed_host_key_is_refused(sshd: SshdProcess, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts_line(sshd.port, write_keypair(tmp_path / "other")))
    b = SftpBackend(**{**sshd.backend_args(tmp_path), "known_hosts": str(kh)})
    e = _raises(PermanentError, b.probe)
    assert "CHANGED" in str(e) and "ssh-keyscan" in str(e)


def test_host_key_of_other_port_does_not_count(sshd: SshdProcess, tmp_path: Path) -> None:
    # A non-22 port needs its own "[host]:port" entry, as with OpenSSH.
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts.read_text().replace(f"[127.0.0.1]:{sshd.port}", "127.0.0.1"))
    b = SftpBackend(**{**sshd.backend_args(tmp_path), "known_hosts": str(kh)})
    _raises(PermanentError, b.probe)


def test_hashed_known_hosts_entry(sshd: SshdProcess, tmp_path: Path) -> None:
    # HashKnownHosts (Debian's default for ~/.ssh/known_hosts) stores names hashed.
    from paramiko.hostkeys import HostKeys

    kh = tmp_path / "known_hosts"
    name, rest = sshd.known_hosts.read_text().split(" ", 1)
    kh.write_text(f"{HostKeys.hash_host(name)} {rest}")
    b = SftpBackend(**{**sshd.backend_args(tmp_path), "known_hosts": str(kh)})
    b.probe()
    b.close()


def test_missing_known_hosts_file(sshd: SshdProcess, tmp_path: Path) -> None:
    b = SftpBackend(**{**sshd.backend_args(tmp_path), "known_hosts": str(tmp_path / "nope")})
    assert "ssh-keyscan" in str(_raises(PermanentError, b.probe))


# ----------------------------------------------------------- authentication


def test_wrong_key_is_permanent(sshd: SshdProcess, tmp_path: Path) -> None:
    write_keypair(tmp_path / "stranger")
    b = SftpBackend(**{**sshd.backend_args(tmp_path), "key_file": str(tmp_path / "stranger")})
    assert "authentication as" in str(_raises(PermanentError, b.probe))


def test_missing_key_file_is_permanent(sshd: SshdProcess, tmp_path: Path) -> None:
    b = SftpBackend(**{**sshd.backend_args(tmp_path), "key_file": str(tmp_path / "nokey")})
    _raises(PermanentError, b.probe)


def test_encrypted_key_unlocked_by_password(sshd: SshdProcess, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    (tmp_path / "enc").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"key-pass")))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    with sshd.authorized_keys.open("a") as f:
        f.write(pub + "\n")
    args = {**sshd.backend_args(tmp_path), "key_file": str(tmp_path / "enc")}
    e = _raises(PermanentError, SftpBackend(**args).probe)
    assert "key file" in str(e)
    b = SftpBackend(**args, password="key-pass")
    b.probe()
    b.close()


@pytest.fixture
def pw_server(tmp_path: Path) -> Iterator[PasswordSftpServer]:
    (tmp_path / "served").mkdir()
    server = PasswordSftpServer(tmp_path / "pw", tmp_path / "served")
    yield server
    server.stop()


def _pw_backend(s: PasswordSftpServer, password: str, path: str = "/vault",
                port: int | None = None) -> SftpBackend:
    return SftpBackend(s.host, port or s.port, user=s.user, password=password, path=path,
                       known_hosts=str(s.known_hosts), timeout=5)


def test_password_auth(pw_server: PasswordSftpServer) -> None:
    b = _pw_backend(pw_server, pw_server.password)
    b.create()
    h = Handle(FileType.INDEX, "ab")
    b.save(h, b"hello")
    assert b.load(h) == b"hello"
    assert [fi.handle for fi in b.list(FileType.INDEX)] == [h]
    b.close()


def test_wrong_password_is_permanent(pw_server: PasswordSftpServer) -> None:
    b = _pw_backend(pw_server, "not-" + pw_server.password)
    assert "authentication as" in str(_raises(PermanentError, b.probe))


def test_password_never_shown(pw_server: PasswordSftpServer, tmp_path: Path) -> None:
    pw = pw_server.password
    texts: list[str] = []
    good = _pw_backend(pw_server, pw)
    texts.append(good.location)
    assert good.location == f"sftp://{pw_server.user}@127.0.0.1:{pw_server.port}/vault"
    good.create()
    # Every kind of failure message: missing file, wrong password, no server,
    # unknown host key, missing vault directory.
    for fn, cls in [
        (lambda: good.load(Handle(FileType.INDEX, "cd")), NotFoundError),
        (_pw_backend(pw_server, pw + "x").probe, PermanentError),
        (_pw_backend(pw_server, pw, port=free_port()).probe, TransientError),
        (_pw_backend(pw_server, pw, path="/absent").probe, TransientError),
        (SftpBackend(pw_server.host, pw_server.port, user=pw_server.user, password=pw,
                     known_hosts=os.devnull).probe, PermanentError),
    ]:
        e = _raises(cls, fn)
        texts.append(str(e))
        chain: BaseException | None = e
        while chain is not None:
            texts.append(str(chain))
            chain = chain.__cause__
    assert all(pw not in t for t in texts), texts
    good.close()


def test_plain_v3_rename_fallback(tmp_path: Path) -> None:
    # A server without posix-rename@openssh.com and fsync@openssh.com.
    (tmp_path / "served").mkdir()
    with PasswordSftpServer(tmp_path / "pw", tmp_path / "served", posix_rename=False) as s:
        b = _pw_backend(s, s.password)
        b.create()
        rev = Handle(FileType.REVISION)
        b.save(rev, b"1")
        b.save(rev, b"22")  # replaces: remove + rename
        assert b.load(rev) == b"22"
        pack = Handle(FileType.PACK, "ab" * 32)
        b.save(pack, b"same")
        b.save(pack, b"same")  # already there: the temp file is dropped
        assert b.load(pack) == b"same"
        assert sorted(os.listdir(tmp_path / "served" / "vault" / "data" / "ab")) == ["ab" * 32]
        b.close()


# ---------------------------------------------------------------- failures


def test_kill_and_restart(own_sshd: SshdProcess, tmp_path: Path) -> None:
    b = SftpBackend(**own_sshd.backend_args(tmp_path / "vault"), timeout=5)
    b.create()
    h = Handle(FileType.INDEX, "ab")
    b.save(h, b"before")
    own_sshd.kill()
    t0 = time.monotonic()
    _raises(TransientError, b.load, h)
    _raises(TransientError, b.save, Handle(FileType.INDEX, "cd"), b"x")
    _raises(TransientError, b.probe)
    assert time.monotonic() - t0 < 5  # refused at once, not a timeout
    own_sshd.start()
    assert b.load(h) == b"before"  # the pool dropped its dead sessions
    b.save(Handle(FileType.INDEX, "cd"), b"after")
    assert b.load(Handle(FileType.INDEX, "cd")) == b"after"
    b.close()


def test_restart_between_operations_is_invisible(own_sshd: SshdProcess, tmp_path: Path) -> None:
    # Idle pooled sessions die with the server; a reused dead session is
    # replaced transparently for idempotent operations.
    b = SftpBackend(**own_sshd.backend_args(tmp_path / "vault"), timeout=5)
    b.create()
    h = Handle(FileType.INDEX, "ab")
    b.save(h, b"x")
    own_sshd.kill()
    own_sshd.start()
    assert b.load(h) == b"x"
    b.close()


@pytest.mark.parametrize("operation", ["load", "save", "list"])
def test_stalled_server_times_out(own_sshd: SshdProcess, tmp_path: Path, operation: str) -> None:
    b = SftpBackend(**own_sshd.backend_args(tmp_path / "vault"), timeout=1.5)
    b.create()
    h = Handle(FileType.INDEX, "ab")
    b.save(h, b"x")
    assert own_sshd._proc is not None
    frozen = _descendants(own_sshd._proc.pid)  # the processes serving our session
    assert frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        if operation == "load":
            e = _raises(TransientError, b.load, h)
        elif operation == "save":
            e = _raises(TransientError, b.save, Handle(FileType.INDEX, "cd"), b"y" * 100_000)
        else:
            e = _raises(TransientError, lambda: list(b.list(FileType.INDEX)))
        assert "did not answer" in str(e)
        assert time.monotonic() - t0 < 2.9  # one timeout, no second wait while cleaning up
        # The stalled session was dropped: a new connection works meanwhile.
        assert b.load(h) == b"x"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    b.close()


def test_silent_listener_times_out(sshd: SshdProcess, tmp_path: Path) -> None:
    # Accepts TCP connections but never speaks SSH.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        args = {**sshd.backend_args(tmp_path), "port": listener.getsockname()[1]}
        b = SftpBackend(**args, timeout=1)
        t0 = time.monotonic()
        _raises(TransientError, b.probe)
        assert time.monotonic() - t0 < 4


def test_missing_root_is_unreachable(sshd: SshdProcess, tmp_path: Path) -> None:
    b = SftpBackend(**sshd.backend_args(tmp_path / "not" / "yet"))
    h = Handle(FileType.PACK, "ab" * 32)
    for fn, args in [(b.probe, ()), (b.load, (h,)), (b.stat, (h,)), (b.save, (h, b"x")),
                     (b.remove, (h,))]:
        _raises(TransientError, fn, *args)
    _raises(TransientError, lambda: list(b.list(FileType.PACK)))
    _raises(TransientError, lambda: list(b.list(FileType.INDEX)))
    b.create()  # mkdir -p
    b.probe()
    b.save(h, b"x")
    assert b.load(h) == b"x"
    b.close()


# ------------------------------------------------------------------ details


def test_location_and_layout(sshd: SshdProcess, tmp_path: Path) -> None:
    b = SftpBackend(**sshd.backend_args(tmp_path / "v"))
    assert b.location == f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{tmp_path}/v"
    assert SftpBackend("h", path="rel/dir", user="u").location == "sftp://u@h:22/~/rel/dir"
    assert SftpBackend("h", path="~/rel/", user="u").location == "sftp://u@h:22/~/rel"
    assert SftpBackend("::1", 2222, user="u", path="/x").location == "sftp://u@[::1]:2222/x"
    b.create()
    assert sorted(os.listdir(tmp_path / "v")) == ["archives", "data", "index", "keys", "snapshots"]
    b.save(Handle(FileType.PACK, "cd" * 32), b"x")
    assert (tmp_path / "v" / "data" / "cd" / ("cd" * 32)).read_bytes() == b"x"
    assert (tmp_path / "v" / "data" / "cd" / ("cd" * 32)).stat().st_mode & 0o077 == 0
    b.close()


def test_no_temp_files_listed(backend: SftpBackend, tmp_path: Path) -> None:
    root = tmp_path / "vault"
    (root / "index" / ".abc.1234.tmp").write_bytes(b"partial")
    (root / "index" / "not-hex").write_bytes(b"junk")
    (root / "data" / "ab").mkdir()
    (root / "data" / "ab" / ".abcd.99.tmp").write_bytes(b"partial")
    (root / "data" / "ab" / "cd00").write_bytes(b"wrong dir")
    assert list(backend.list(FileType.INDEX)) == []
    assert list(backend.list(FileType.PACK)) == []


def test_failed_save_leaves_no_temp_file(backend: SftpBackend, tmp_path: Path) -> None:
    # A directory where the file should go: the rename fails on the server
    # (works as root too, unlike permission tricks).
    (tmp_path / "vault" / "index" / "ab").mkdir()
    _raises(PermanentError, backend.save, Handle(FileType.INDEX, "ab"), b"x")
    assert os.listdir(tmp_path / "vault" / "index") == ["ab"]
    backend.save(Handle(FileType.INDEX, "cd"), b"y")  # the session is still usable


def test_list_many_pack_dirs(backend: SftpBackend) -> None:
    # Enough data/xx directories for list() to spread them over connections.
    saved = {Handle(FileType.PACK, f"{i:02x}" * 32) for i in range(0, 256, 5)}
    for h in saved:
        backend.save(h, h.name.encode())
    listed = list(backend.list(FileType.PACK))
    assert {fi.handle for fi in listed} == saved
    assert all(fi.size == 64 for fi in listed)


def test_close_then_reuse(backend: SftpBackend) -> None:
    h = Handle(FileType.SNAPSHOT, "ab")
    backend.save(h, b"x")
    backend.close()
    assert backend.load(h) == b"x"


def test_pool_is_bounded(sshd: SshdProcess, tmp_path: Path) -> None:
    b = SftpBackend(**sshd.backend_args(tmp_path / "vault"), connections=2)
    b.create()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            h = Handle(FileType.INDEX, f"{i:02x}")
            b.save(h, bytes([i]) * 1000)
            assert b.load(h) == bytes([i]) * 1000
        except BaseException as e:  # collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert b._pool.idle <= 2
    b.close()


def test_errors_are_backend_errors(unreachable: SftpBackend) -> None:
    assert isinstance(_raises(BackendError, unreachable.stat, Handle(FileType.CONFIG)),
                      TransientError)
