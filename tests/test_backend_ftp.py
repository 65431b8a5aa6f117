"""The backend contract, and FTP-specific failure modes, on real pyftpdlib servers.

Servers run as subprocesses (``tests/servers/ftp_server.py``) so they can be
killed and restarted; every test gets a fresh vault directory on a shared
server unless it needs to hurt the server itself.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.backend_contract import BackendContract, Planter, plant_file
from tests.servers.ftp_server import FtpServerProcess, make_self_signed_cert
from tests.servers.ports import free_port
from tiervault.errors import (
    BackendError,
    NotFoundError,
    PermanentError,
    TierVaultError,
    TransientError,
)
from tiervault.storage.base import Backend, FileType, Handle
from tiervault.storage.ftp import FtpBackend

PASSWORD = "Hunter2-vault-pw"
USER = "tv"
_paths = itertools.count()


def _fresh_path() -> str:
    return f"/vault{next(_paths)}"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed_cert(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path_factory.mktemp("ftproot"), user=USER, password=PASSWORD)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ftps_server(
    tmp_path_factory: pytest.TempPathFactory, certs: tuple[Path, Path]
) -> Iterator[FtpServerProcess]:
    srv = FtpServerProcess(tmp_path_factory.mktemp("ftpsroot"), tls=True, user=USER,
                           password=PASSWORD, certfile=certs[0], keyfile=certs[1])
    yield srv
    srv.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[FtpServerProcess]:
    """A server this test may kill, stop or freeze."""
    srv = FtpServerProcess(tmp_path / "root", user=USER, password=PASSWORD)
    yield srv
    if srv.pid is not None:
        os.kill(srv.pid, signal.SIGCONT)  # in case the test froze it
    srv.stop()


def _ftp(srv: FtpServerProcess, path: str | None = None, **kw: object) -> FtpBackend:
    args: dict[str, object] = {"user": USER, "password": PASSWORD, "timeout": 5.0}
    args.update(kw)
    return FtpBackend("127.0.0.1", srv.port, path=path or _fresh_path(), **args)  # type: ignore[arg-type]


def _ftps(srv: FtpServerProcess, certs: tuple[Path, Path], path: str | None = None,
          **kw: object) -> FtpBackend:
    kw.setdefault("ca_file", str(certs[0]))
    return _ftp(srv, path, tls=True, **kw)


def _errors_text(e: BaseException) -> str:
    """Everything a traceback could print about ``e`` and its causes."""
    parts = []
    seen: BaseException | None = e
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


class TestFtp(BackendContract):
    @pytest.fixture
    def backend(self, ftp_server: FtpServerProcess) -> Iterator[Backend]:
        b = _ftp(ftp_server)
        b.create()
        yield b
        b.close()

    @pytest.fixture
    def plant_temporary(self, ftp_server: FtpServerProcess, backend: FtpBackend) -> Planter:
        return lambda h, token: plant_file(ftp_server.root / backend._root_rel.lstrip("/"),
                                           h, token)

    @pytest.fixture
    def unreachable(self) -> Backend:
        return FtpBackend("127.0.0.1", free_port(), USER, PASSWORD, "/v", timeout=2)


class TestFtps(BackendContract):
    @pytest.fixture
    def backend(self, ftps_server: FtpServerProcess, certs: tuple[Path, Path]) -> Iterator[Backend]:
        b = _ftps(ftps_server, certs)
        b.create()
        yield b
        b.close()

    @pytest.fixture
    def plant_temporary(self, ftps_server: FtpServerProcess, backend: FtpBackend) -> Planter:
        return lambda h, token: plant_file(ftps_server.root / backend._root_rel.lstrip("/"),
                                           h, token)

    @pytest.fixture
    def unreachable(self, certs: tuple[Path, Path]) -> Backend:
        return FtpBackend("127.0.0.1", free_port(), USER, PASSWORD, "/v", tls=True,
                          ca_file=str(certs[0]), timeout=2)


def test_location_has_no_password(ftp_server: FtpServerProcess,
                                  ftps_server: FtpServerProcess) -> None:
    b = FtpBackend("127.0.0.1", ftp_server.port, USER, PASSWORD, "/a/b")
    assert b.location == f"ftp://{USER}@127.0.0.1:{ftp_server.port}/a/b"
    s = FtpBackend("127.0.0.1", 990, USER, PASSWORD, "rel", tls=True)
    assert s.location == f"ftps://{USER}@127.0.0.1:990/rel"
    for x in (b, s):
        assert PASSWORD not in x.location and PASSWORD not in repr(x)


def test_wrong_password_is_permanent_and_quick(ftp_server: FtpServerProcess) -> None:
    b = _ftp(ftp_server, password="wrong-" + PASSWORD)
    start = time.monotonic()
    with pytest.raises(PermanentError, match="login refused") as ei:
        b.probe()
    assert time.monotonic() - start < 2
    assert PASSWORD not in _errors_text(ei.value)


def test_ftps_wrong_password(ftps_server: FtpServerProcess, certs: tuple[Path, Path]) -> None:
    with pytest.raises(PermanentError, match="login refused"):
        _ftps(ftps_server, certs, password="nope").probe()


def test_untrusted_certificate_is_refused(ftps_server: FtpServerProcess) -> None:
    # No ca_file: only the system CAs are trusted, and they never signed ours.
    b = FtpBackend("127.0.0.1", ftps_server.port, USER, PASSWORD, "/", tls=True, timeout=5)
    with pytest.raises(PermanentError, match="certificate") as ei:
        b.probe()
    assert PASSWORD not in _errors_text(ei.value)


def test_insecure_skips_verification(ftps_server: FtpServerProcess) -> None:
    b = FtpBackend("127.0.0.1", ftps_server.port, USER, PASSWORD, _fresh_path(), tls=True,
                   insecure=True, timeout=5)
    b.create()
    b.save(Handle(FileType.INDEX, "ab"), b"hello")
    assert b.load(Handle(FileType.INDEX, "ab")) == b"hello"
    b.close()


def test_plain_client_refused_by_tls_only_server(ftps_server: FtpServerProcess) -> None:
    # The test server demands TLS, so a pass here proves the FTPS tests use it.
    with pytest.raises(PermanentError):
        _ftp(ftps_server).probe()


def test_missing_root_is_transient(ftp_server: FtpServerProcess) -> None:
    b = _ftp(ftp_server)
    h = Handle(FileType.INDEX, "abcd")
    for op in (b.probe, lambda: b.stat(h), lambda: b.load(h), lambda: b.load(h, 1, 2),
               lambda: b.remove(h), lambda: b.save(h, b"x"),
               lambda: list(b.list(FileType.INDEX)), lambda: list(b.list(FileType.PACK))):
        with pytest.raises(TransientError, match="not there"):
            op()
    b.create()
    b.save(h, b"x")
    assert b.load(h) == b"x"
    b.close()


def test_relative_path_resolves_against_login_dir(ftp_server: FtpServerProcess) -> None:
    name = _fresh_path().lstrip("/")
    b = _ftp(ftp_server, path=name + "/")
    b.create()
    b.save(Handle(FileType.CONFIG), b"{}")
    assert (ftp_server.root / name / "config").read_bytes() == b"{}"
    b.close()


def test_temp_and_junk_files_not_listed(ftp_server: FtpServerProcess) -> None:
    path = _fresh_path()
    b = _ftp(ftp_server, path)
    b.create()
    d = ftp_server.root / path.lstrip("/")
    (d / "index" / ".abc.1234.tmp").write_bytes(b"partial")
    (d / "index" / "not-hex").write_bytes(b"junk")
    (d / "index" / "abcdef").mkdir()  # a directory is not a file
    (d / "data" / "zz").mkdir()
    (d / "data" / "ab").mkdir()
    (d / "data" / "ab" / "cd01").write_bytes(b"wrong fan-out directory")
    (d / "data" / "ab" / ".ab01.5678.tmp").write_bytes(b"partial")
    assert list(b.list(FileType.INDEX)) == []
    assert list(b.list(FileType.PACK)) == []
    b.close()


def test_no_temp_files_left_behind(ftp_server: FtpServerProcess) -> None:
    path = _fresh_path()
    b = _ftp(ftp_server, path)
    b.create()
    for i in range(3):
        b.save(Handle(FileType.PACK, f"{i:02x}" * 4), b"x" * i)
        b.save(Handle(FileType.REVISION), str(i).encode())
    root = ftp_server.root / path.lstrip("/")
    assert [p for p in root.rglob("*") if p.name.endswith(".tmp")] == []
    b.close()


def test_nlst_fallback(ftp_server: FtpServerProcess) -> None:
    b = _ftp(ftp_server)
    b.create()
    packs = {Handle(FileType.PACK, f"{i:02x}aa"): i for i in range(1, 4)}
    for h, n in packs.items():
        b.save(h, b"p" * n)
    b.save(Handle(FileType.KEY, "k1"), b"key")
    b._use_mlsd = False  # as if the server lacked MLSD
    assert {fi.handle: fi.size for fi in b.list(FileType.PACK)} == packs
    assert [(fi.handle.name, fi.size) for fi in b.list(FileType.KEY)] == [("k1", 3)]
    assert list(b.list(FileType.SNAPSHOT)) == []
    b.close()


def test_server_refusing_rename_over_existing(tmp_path: Path) -> None:
    with FtpServerProcess(tmp_path / "root", user=USER, password=PASSWORD,
                          refuse_rename_over=True) as srv:
        b = _ftp(srv)
        b.create()
        rev = Handle(FileType.REVISION)
        b.save(rev, b"1")
        b.save(rev, b"22")
        assert b.load(rev) == b"22"
        b.close()


def test_range_reads_keep_connection_usable(ftp_server: FtpServerProcess,
                                            ftps_server: FtpServerProcess,
                                            certs: tuple[Path, Path]) -> None:
    # Each partial read aborts a running transfer; the pooled connection must
    # come back in sync (no reply left over for the next command).
    data = os.urandom(3 * 1024 * 1024)
    h = Handle(FileType.PACK, "ee11")
    for b in (_ftp(ftp_server, connections=1), _ftps(ftps_server, certs, connections=1)):
        b.create()
        b.save(h, data)
        for off in (0, 1, 1000, 2 * 1024 * 1024, len(data) - 10):
            assert b.load(h, off, 10) == data[off:off + 10]
            assert b.stat(h).size == len(data)
        with pytest.raises(NotFoundError):
            b.stat(Handle(FileType.PACK, "ee12"))
        assert b.load(h, len(data)) == b""
        assert b.load(h, 5, 0) == b""
        b.close()


def test_binary_mode_after_listing(ftp_server: FtpServerProcess) -> None:
    # ftplib switches to ASCII for listings; a later SIZE or ranged RETR on
    # the same pooled connection must still be byte-exact.
    b = _ftp(ftp_server, connections=1)
    b.create()
    data = b"\r\n\n\r" * 5000
    h = Handle(FileType.PACK, "cd02")
    b.save(h, data)
    for _ in range(2):
        assert [fi.size for fi in b.list(FileType.PACK)] == [len(data)]
        assert b.stat(h).size == len(data)
        assert b.load(h, 3, 9000) == data[3:9003]
        assert list(b.list(FileType.SNAPSHOT)) == []  # an empty listing too
        assert b.load(h, 1, 5) == data[1:6]
    b.close()


def test_server_closing_idle_connections(tmp_path: Path) -> None:
    # Servers drop idle sessions (421); a pooled connection that went stale
    # is replaced transparently instead of failing the operation.
    with FtpServerProcess(tmp_path / "root", user=USER, password=PASSWORD,
                          idle_timeout=0.5) as srv:
        b = _ftp(srv)
        b.create()
        h = Handle(FileType.INDEX, "aa")
        b.save(h, b"x")
        time.sleep(1.2)
        assert b.load(h) == b"x"
        time.sleep(1.2)
        assert b.stat(h).size == 1
        b.close()


def test_killed_server_is_transient_then_recovers(own_server: FtpServerProcess) -> None:
    b = _ftp(own_server, timeout=3)
    b.create()
    h = Handle(FileType.INDEX, "aa")
    b.save(h, b"before")
    own_server.kill()
    ops: list[Callable[[], object]] = [
        lambda: b.stat(h), lambda: b.load(h), lambda: b.save(Handle(FileType.INDEX, "bb"), b"x"),
        lambda: list(b.list(FileType.INDEX)), b.probe,
    ]
    start = time.monotonic()
    for op in ops:
        with pytest.raises(TransientError) as ei:
            op()
        assert PASSWORD not in _errors_text(ei.value)
    assert time.monotonic() - start < 5
    own_server.start()
    assert b.load(h) == b"before"
    b.save(Handle(FileType.INDEX, "bb"), b"after")
    assert sorted(fi.handle.name for fi in b.list(FileType.INDEX)) == ["aa", "bb"]
    b.close()


def test_frozen_server_times_out(own_server: FtpServerProcess) -> None:
    b = _ftp(own_server, timeout=0.5)
    b.create()
    h = Handle(FileType.INDEX, "aa")
    b.save(h, b"x")
    assert own_server.pid is not None
    own_server.freeze()
    try:
        start = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            b.load(h)  # on the pooled connection
        b.close()
        with pytest.raises(TransientError, match="timed out"):
            b.stat(h)  # a new connection: the kernel accepts, the server never greets
        assert time.monotonic() - start < 3
    finally:
        os.kill(own_server.pid, signal.SIGCONT)
    assert b.load(h) == b"x"
    b.close()


def test_silent_listener_times_out() -> None:
    # Something that accepts TCP but never speaks FTP must not hang us.
    with socket.socket() as lsn:
        lsn.bind(("127.0.0.1", 0))
        lsn.listen(8)
        b = FtpBackend("127.0.0.1", lsn.getsockname()[1], USER, PASSWORD, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(TransientError):
            b.probe()
        assert time.monotonic() - start < 2


def test_password_never_in_errors(ftp_server: FtpServerProcess, ftps_server: FtpServerProcess,
                                  certs: tuple[Path, Path]) -> None:
    b = _ftp(ftp_server)
    b.create()
    missing = Handle(FileType.PACK, "ab" * 32)
    failures: list[Callable[[], object]] = [
        lambda: b.load(missing),
        lambda: b.stat(missing),
        lambda: b.remove(missing),
        lambda: _ftp(ftp_server).probe(),  # root missing
        lambda: _ftp(ftp_server, password=PASSWORD + "x").probe(),
        lambda: FtpBackend("127.0.0.1", free_port(), USER, PASSWORD, timeout=1).probe(),
        lambda: FtpBackend("127.0.0.1", ftps_server.port, USER, PASSWORD, tls=True).probe(),
        lambda: _ftp(ftps_server).probe(),
    ]
    for op in failures:
        with pytest.raises(BackendError) as ei:
            op()
        assert isinstance(ei.value, TierVaultError)
        assert PASSWORD not in _errors_text(ei.value), ei.value
    b.close()


# -- listing pack directories by STAT ------------------------------------------------------------


def _pack_names(n: int) -> list[str]:
    return [f"{i:02x}" + os.urandom(31).hex() for i in range(n)]


def test_pack_listing_by_stat_equals_mlsd_and_is_used(ftp_server: FtpServerProcess) -> None:
    """data/xx directories are listed with STAT (one control-channel round trip);
    the result must equal the MLSD listing, sizes included."""
    path = _fresh_path()
    b = _ftp(ftp_server, path)
    b.create()
    names = _pack_names(40) + _pack_names(3)  # some directories hold several packs
    for i, name in enumerate(names):
        b.save(Handle(FileType.PACK, name), os.urandom(100 + i))
    answered = []
    real = b._stat_list

    def counting(c: object, p: str) -> object:
        r = real(c, p)  # type: ignore[arg-type]
        answered.append(r is not None)
        return r

    b._stat_list = counting  # type: ignore[assignment, method-assign]
    by_stat = sorted((fi.handle.name, fi.size) for fi in b.list(FileType.PACK))
    assert answered and all(answered)  # every data/xx directory was listed by STAT
    assert b._use_stat
    mlsd = _ftp(ftp_server, path)
    mlsd._use_stat = False
    by_mlsd = sorted((fi.handle.name, fi.size) for fi in mlsd.list(FileType.PACK))
    assert by_stat == by_mlsd
    assert len(by_stat) == len(set(names))
    b.close()
    mlsd.close()


def test_pack_listing_falls_back_to_mlsd_when_stat_does_not_parse(
        ftp_server: FtpServerProcess) -> None:
    """A directory whose STAT lines do not parse (a name with a blank, as a
    foreign file) turns STAT off; the listing is still complete."""
    path = _fresh_path()
    b = _ftp(ftp_server, path)
    b.create()
    names = _pack_names(12)
    for name in names:
        b.save(Handle(FileType.PACK, name), b"x" * 10)
    (ftp_server.root / path.strip("/") / "data" / names[0][:2] / "a foreign file").write_bytes(b"")
    listed = sorted(fi.handle.name for fi in b.list(FileType.PACK))
    assert listed == sorted(names)
    assert not b._use_stat
    b.close()


def test_retr_is_cut_off_past_the_bound_whatever_size_says(tmp_path: Path) -> None:
    """A server that under-reports SIZE still cannot make the client read more than
    the bound: the download is aborted one byte past it."""
    from tests.servers.bad_ftp import BadFtpServerProcess
    from tiervault.errors import IntegrityError

    srv = BadFtpServerProcess(tmp_path / "root", "size-lies", user=USER, password=PASSWORD)
    try:
        b = FtpBackend("127.0.0.1", srv.port, USER, PASSWORD, "/v", timeout=5)
        b.create()
        (tmp_path / "root" / "v" / "revision").write_bytes(b"1" * (20 << 20))
        rev = Handle(FileType.REVISION)
        with pytest.raises(IntegrityError, match="larger than its bound of 64 bytes"):
            b.load(rev)
        (tmp_path / "root" / "v" / "keys").mkdir(exist_ok=True)
        (tmp_path / "root" / "v" / "keys" / "k").write_bytes(b"x" * (20 << 20))
        with pytest.raises(IntegrityError, match="larger than its bound of 65536 bytes"):
            b.load(Handle(FileType.KEY, "k"))
        # The connections are still good afterwards.
        b.save(rev, b"5\n")
        assert b.load(rev) == b"5\n"
        b.close()
    finally:
        srv.kill()

