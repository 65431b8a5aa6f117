"""The paramiko plumbing of the SFTP backend: sessions, host key policy, reads
and writes that paramiko gets wrong on its own (see each helper's why)."""

from __future__ import annotations

import getpass
import stat as stat_mod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, cast

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from tiervault.errors import (
    BackendError,
    IntegrityError,
    PermanentError,
    TransientError,
    UsageError,
)
from tiervault.storage.pool import Pooled

_DIR_MODE = 0o700


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in known_hosts (raised by our policy)."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"host key for {hostname} not found in known_hosts")
        self.hostname = hostname
        self.key = key


class RejectUnknownHost(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising a distinct type so we can explain the fix."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        raise UnknownHostKey(hostname, key)


class Session(Pooled):
    """One SSH connection with its SFTP channel, owned by one thread at a time.

    ``broken`` is set when a reply may still be outstanding (e.g. after a
    timeout): the session is out of step with the server and is not reused.
    """

    def __init__(self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient) -> None:
        super().__init__()
        self.client = client
        self.sftp = sftp

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return (
            not self.broken
            and transport is not None
            and transport.is_active()
            and not self.sftp.get_channel().closed  # type: ignore[union-attr]
        )

    def close(self, polite: bool = False) -> None:
        try:
            self.sftp.close()
        except Exception:
            pass  # closing a dead session may fail in any way; it is gone either way
        try:
            self.client.close()
        except Exception:
            pass


class Lost(Exception):
    """Internal: the session broke mid-operation (short read on a dead channel)."""


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception as e:  # no $USER and no passwd entry (minimal containers)
        raise UsageError("sftp: no user given and the local user name is unknown") from e


def display_location(user: str, host: str, port: int, root: str) -> str:
    shown_host = f"[{host}]" if ":" in host else host
    if root.startswith("/"):
        shown = root
    elif root == ".":
        shown = "/~"
    else:
        shown = "/~/" + root  # relative to the login directory
    return f"sftp://{user}@{shown_host}:{port}{shown}"


def describe(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    return text or type(e).__name__


def is_status(e: BaseException) -> bool:
    """True for an SFTP status reply, which paramiko raises as a bare OSError.

    ENOENT and EACCES arrive as FileNotFoundError/PermissionError, every other
    status as OSError without errno. Socket failures are OSError subclasses
    with an errno (ConnectionResetError, TimeoutError, ...).
    """
    if isinstance(e, FileNotFoundError | PermissionError):
        return True
    return type(e) is OSError and e.errno is None


def unsupported(e: OSError) -> bool:
    return e.errno is None and "unsupported" in str(e).lower()


def mkdir_quiet(sftp: paramiko.SFTPClient, path: str) -> None:
    """mkdir that accepts an existing directory (SFTP reports it as a bare failure)."""
    try:
        sftp.mkdir(path, _DIR_MODE)
    except OSError:
        a = sftp.stat(path)  # its error (e.g. parent missing) is the one to report
        if a.st_mode is not None and not stat_mod.S_ISDIR(a.st_mode):
            raise
        # Exists already (created earlier or by a concurrent save): fine.


@contextmanager
def opened(s: Session, path: str) -> Iterator[paramiko.SFTPFile]:
    """Open ``path`` for reading; close it unless the session fell out of step.

    After a timeout a reply may still be outstanding; closing the file would
    wait for the server once more, so the session is marked broken instead.
    """
    f = s.sftp.open(path, "rb")
    try:
        yield f
    except BaseException as e:
        if not (is_status(e) or isinstance(e, BackendError | IntegrityError)):
            s.broken = True
        raise
    finally:
        if not s.broken:
            f.close()


def read_exactly(f: paramiko.SFTPFile, n: int) -> bytes:
    """Read ``n`` bytes (fewer only at EOF) in request-sized pieces.

    paramiko's ``read(n)`` grows its result with ``bytes +=``, quadratic in
    ``n``: a 32 MiB read took seconds instead of a fraction of one.
    """
    parts: list[bytes] = []
    got = 0
    while got < n:
        piece = f.read(min(n - got, f.MAX_REQUEST_SIZE))
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def finish_writes(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile) -> None:
    """Collect the replies of pipelined writes still in flight, raising on failure.

    paramiko checks these replies only while it writes; those still pending
    when the file is closed are read and *discarded*, so a disk-full error on
    the last writes would go unnoticed and the rename would publish a truncated
    file. paramiko has no public call for this.
    """
    reqs = cast(Any, f)._reqs
    while reqs:
        cast(Any, sftp)._read_response(reqs.popleft())  # raises on an error status


def connect_error(e: Exception, where: str, host: str, port: int, kh: str,
                  user: str) -> tuple[type[BackendError], str]:
    """(error class, message) for a failure to connect, saying how to fix it."""
    add = f"ssh-keyscan -p {port} {host} >> {kh}"
    if isinstance(e, UnknownHostKey):
        return (PermanentError,
                f"{where}: the server's host key ({e.key.get_name()} {e.key.fingerprint}) "
                f"is not in {kh}; after checking the fingerprint with the server's "
                f"administrator, add it with: {add}")
    if isinstance(e, paramiko.BadHostKeyException):
        return (PermanentError,
                f"{where}: the server's host key CHANGED (now {e.key.get_name()} "
                f"{e.key.fingerprint}, {kh} expects {e.expected_key.fingerprint}); "
                f"this may be an attack. If the change is legitimate, remove the old "
                f"entry (ssh-keygen -R '[{host}]:{port}' -f {kh}) and add the "
                f"new key with: {add}")
    if isinstance(e, paramiko.AuthenticationException):
        return (PermanentError,
                f"{where}: authentication as {user} failed; check user, password and key file")
    if isinstance(e, IncompatiblePeer):
        return PermanentError, f"{where}: incompatible SSH server: {describe(e)}"
    # Refused, unreachable, DNS failure, timeout, dropped during the handshake:
    # the server is not there right now.
    return TransientError, f"{where}: cannot connect: {describe(e)}"
