"""Real SSH/SFTP servers for tests.

``SshdProcess`` runs the system's OpenSSH server (``/usr/sbin/sshd``) on
127.0.0.1 with its own host key, client key, config and known_hosts, all in a
temporary directory; it logs in as the current user with public-key
authentication. Tests can ``kill()`` it (SIGKILL of the daemon *and* of every
connection it forked, like a crash or a pulled cable) and ``start()`` it again
on the same port.

``PasswordSftpServer`` is a small paramiko-based SFTP server used only for
password authentication: OpenSSH checks passwords against the system's user
database, and the root user of a CI container has no password. Giving root one,
or creating a throwaway user, would modify the machine running the tests and
need root; an in-process server needs neither.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_FAILURE, SFTP_OK, SFTP_OP_UNSUPPORTED

from tests.servers.ports import free_port

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"


def write_keypair(path: Path, comment: str = "tiervault-test") -> str:
    """Write an unencrypted Ed25519 key (OpenSSH format, mode 0600) and ``.pub``.

    Returns the public key line. Uses ``cryptography`` so no ssh-keygen is needed.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    line = f"{public} {comment}"
    Path(f"{path}.pub").write_text(line + "\n")
    return line


def known_hosts_line(port: int, public_line: str) -> str:
    """A known_hosts entry for ``HOST:port`` (``[host]:port`` form unless port 22)."""
    name = HOST if port == 22 else f"[{HOST}]:{port}"
    keytype, b64 = public_line.split()[:2]
    return f"{name} {keytype} {b64}\n"


def _wait_port(port: int, alive: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("server exited during start-up")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"server did not listen on port {port} within {timeout}s")


def _descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (sshd forks one or more per connection, and
    those call setsid(), so killing a process group would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The command name may contain spaces and parentheses: split after the last ")".
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class SshdProcess:
    """OpenSSH's sshd on 127.0.0.1, configured and keyed inside ``tmpdir``.

    Attributes: ``port``, ``host``, ``user`` (the current user, who may log in
    with ``client_key``), ``client_key`` (private key path), ``known_hosts``
    (a file holding this server's host key), ``log`` (sshd's stderr).
    """

    def __init__(self, tmpdir: str | Path, port: int | None = None,
                 password_auth: bool = False) -> None:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is not installed (apt-get install openssh-server)")
        self.dir = Path(tmpdir).resolve()  # sshd insists on absolute paths
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = HOST
        self.user = getpass.getuser()
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "client_ed25519_key"
        self.authorized_keys = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

        host_pub = write_keypair(self.host_key, "tiervault-test-host")
        self.authorized_keys.write_text(write_keypair(self.client_key) + "\n")
        self.known_hosts.write_text(known_hosts_line(self.port, host_pub))
        self.config.write_text("\n".join([
            f"ListenAddress {HOST}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"PidFile {self.dir / 'sshd.pid'}",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # tmp dirs are not owned/moded the way sshd wants
            "PermitRootLogin prohibit-password",  # CI runs as root; keys only
            "Subsystem sftp internal-sftp",
            "MaxStartups 64",  # tests connect in parallel
            "MaxSessions 64",
            "UseDNS no",
            "LogLevel INFO",
            "",
        ]))
        self.start()

    def url(self, path: str) -> str:
        """``sftp://user@127.0.0.1:port/path`` for an absolute ``path``."""
        return f"sftp://{self.user}@{HOST}:{self.port}/{str(path).lstrip('/')}"

    def backend_args(self, path: str | Path) -> dict[str, Any]:
        """Keyword arguments for ``SftpBackend`` reaching ``path`` on this server."""
        return {"host": HOST, "port": self.port, "user": self.user, "path": str(path),
                "key_file": str(self.client_key), "known_hosts": str(self.known_hosts)}

    @property
    def running(self) -> bool:
        """True while the daemon process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start sshd (again) on the same port and wait until it listens."""
        if self.running:
            return
        try:
            # Privilege separation directory, missing in fresh containers.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError:
            pass  # not root: sshd then runs without privilege separation
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            _wait_port(self.port, lambda: self.running)
        except RuntimeError as e:
            self.kill()
            raise RuntimeError(f"sshd: {e}; log:\n{self.log.read_text()[-2000:]}") from None

    def _signal_all(self, sig: int) -> None:
        if self._proc is None:
            return
        pids = [*_descendants(self._proc.pid), self._proc.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for pid in pids[:-1]:
            # Reap only our own child via Popen; the others are reaped by init.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _exists(pid):
                time.sleep(0.01)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        """Stop the daemon and every open connection (SIGTERM)."""
        self._signal_all(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the daemon and every open connection at once (SIGKILL): a crash."""
        self._signal_all(signal.SIGKILL)

    def __enter__(self) -> SshdProcess:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------- password server


class _LocalHandle(paramiko.SFTPHandle):
    """An open file of ``_LocalSftp``: reads and writes go to a real local file."""

    def __init__(self, f: Any, path: str, flags: int) -> None:
        super().__init__(flags)
        self.readfile = f
        self.writefile = f
        self.path = path

    def stat(self) -> paramiko.SFTPAttributes | int:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 0)

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        try:
            paramiko.SFTPServer.set_file_attr(self.path, attr)
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 0)
        return SFTP_OK


class _LocalSftp(paramiko.SFTPServerInterface):
    """Serves the directory ``root`` as ``/`` (paths cannot escape it)."""

    def __init__(self, server: Any, *args: Any, root: str, posix_rename: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.root = root
        self.posix = posix_rename

    def _real(self, path: str) -> str:
        return self.root + self.canonicalize(path)

    def canonicalize(self, path: str) -> str:
        return os.path.normpath("/" + path).replace("//", "/")

    def _call(self, fn: Any, *args: Any) -> int:
        try:
            fn(*args)
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 0)
        return SFTP_OK

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> Any:
        real = self._real(path)
        mode = attr.st_mode if attr.st_mode is not None else 0o666
        try:
            fd = os.open(real, flags | getattr(os, "O_BINARY", 0), mode & 0o7777)
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 0)
        fmode = "r+b" if flags & (os.O_WRONLY | os.O_RDWR) else "rb"
        if flags & os.O_WRONLY and not flags & os.O_RDWR:
            fmode = "wb" if not flags & os.O_APPEND else "ab"
        return _LocalHandle(os.fdopen(fd, fmode), real, flags)

    def list_folder(self, path: str) -> Any:
        real = self._real(path)
        try:
            out = []
            for name in os.listdir(real):
                a = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(real, name)))
                a.filename = name
                out.append(a)
            return out
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 0)

    def stat(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 0)

    def lstat(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.lstat(self._real(path)))
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 0)

    def remove(self, path: str) -> int:
        return self._call(os.remove, self._real(path))

    def rename(self, oldpath: str, newpath: str) -> int:
        # SFTP v3 semantics: never replace an existing file.
        if os.path.lexists(self._real(newpath)):
            return SFTP_FAILURE
        return self._call(os.rename, self._real(oldpath), self._real(newpath))

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        if not self.posix:
            return SFTP_OP_UNSUPPORTED
        return self._call(os.replace, self._real(oldpath), self._real(newpath))

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        mode = attr.st_mode if attr.st_mode is not None else 0o777
        return self._call(os.mkdir, self._real(path), mode & 0o7777)

    def rmdir(self, path: str) -> int:
        return self._call(os.rmdir, self._real(path))

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return self._call(paramiko.SFTPServer.set_file_attr, self._real(path), attr)


class _PasswordAuth(paramiko.ServerInterface):
    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        if username == self.user and password == self.password:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class PasswordSftpServer:
    """A paramiko SFTP server on 127.0.0.1 accepting one user/password.

    Serves ``root`` as ``/``; ``posix_rename=False`` makes it behave like a
    plain SFTP v3 server (no posix-rename, rename never replaces). Attributes:
    ``port``, ``host``, ``user``, ``password``, ``known_hosts``.
    """

    def __init__(self, tmpdir: str | Path, root: str | Path, user: str = "tiervault",
                 password: str = "s3cret-Pw!", posix_rename: bool = True) -> None:
        self.dir = Path(tmpdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = str(Path(root).resolve())
        self.user = user
        self.password = password
        self.host = HOST
        self._posix = posix_rename
        key_path = self.dir / "pw_host_ed25519_key"
        pub = write_keypair(key_path, "tiervault-test-pw-host")
        self._host_key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(16)
        self.port = int(self._sock.getsockname()[1])
        self.known_hosts = self.dir / "pw_known_hosts"
        self.known_hosts.write_text(known_hosts_line(self.port, pub))
        self._transports: list[paramiko.Transport] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError as e:
                if self._closed or e.errno in (errno.EBADF, errno.EINVAL):
                    return
                continue
            t = paramiko.Transport(conn)
            t.add_server_key(self._host_key)
            t.set_subsystem_handler("sftp", paramiko.SFTPServer, _LocalSftp,
                                    root=self.root, posix_rename=self._posix)
            self._transports.append(t)
            try:
                t.start_server(server=_PasswordAuth(self.user, self.password))
            except (paramiko.SSHException, EOFError, OSError):
                t.close()

    def stop(self) -> None:
        """Close the listener and every connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for t in self._transports:
            t.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PasswordSftpServer:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
