"""A vault on an SSH server, reached over SFTP with paramiko.

Design notes (the why; the what is in the code):

- Host keys are checked against a known_hosts file and unknown or changed keys
  are refused: a backup that silently trusts whoever answers on the port would
  hand encrypted packs (and our login) to any man in the middle.
- A small pool of SFTP sessions (``storage/pool.py``, shared with FTP), one SSH
  connection each, is shared by the threads using the backend; a session
  found broken is thrown away instead of being returned, so one dead
  connection never poisons later operations.
- Every socket read has a timeout, so a hung server turns into a
  ``TransientError`` instead of a hung backup.
- paramiko's own errors are translated here, at the boundary, into the
  ``NotFoundError`` / ``TransientError`` / ``PermanentError`` of the contract.
- The password is never part of ``location`` and is scrubbed from every
  message we raise.
"""

from __future__ import annotations

import builtins
import os
import stat as stat_mod
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import paramiko
from paramiko.sftp import CMD_EXTENDED

from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TransientError,
    UsageError,
)
from tiervault.storage.base import (
    MUTABLE,
    SINGLETONS,
    Backend,
    FileInfo,
    FileType,
    Handle,
    handle_from_path,
    is_dead_temporary,
    read_bound,
    temp_name,
    too_large,
)
from tiervault.storage.pool import Pool, fan_out
from tiervault.storage.sftp_io import (
    Lost,
    RejectUnknownHost,
    Session,
    connect_error,
    current_user,
    describe,
    display_location,
    finish_writes,
    is_status,
    mkdir_quiet,
    opened,
    read_exactly,
    unsupported,
)

T = TypeVar("T")

# Ranges up to this size are read with plain requests; larger reads pay one
# extra round trip for a stat so they can be fetched with pipelined requests.
_PLAIN_READ_MAX = 64 * 1024
# Seconds between SSH keepalives: detects dead peers and keeps NAT state open.
_KEEPALIVE = 30
# An idle pooled session older than this is reconnected instead of reused:
# servers and middleboxes drop idle connections silently, and a fresh connect
# is cheaper than waiting for a timeout on a dead one.
_MAX_IDLE = 300.0
# Directories listed per session before list() spreads over more connections.
_DIRS_PER_SESSION = 8
_FILE_MODE = 0o600


class SftpBackend(Backend):
    """Files under ``path`` on an SSH server; a missing ``path`` means unreachable.

    ``path`` is absolute or relative to the login directory. Authentication uses
    ``key_file`` and/or ``password``; if neither is given, the SSH agent and the
    default keys in ``~/.ssh`` are tried. The server's host key must already be
    in ``known_hosts`` (default ``~/.ssh/known_hosts``). At most ``connections``
    SSH connections are opened; ``timeout`` bounds connecting and every wait for
    the server.
    """

    def __init__(
        self,
        host: str,
        port: int = 22,
        user: str | None = None,
        password: str | None = None,
        path: str = ".",
        key_file: str | None = None,
        known_hosts: str | None = None,
        timeout: float = 30.0,
        connections: int = 4,
    ) -> None:
        if not host:
            raise UsageError("sftp: no host given")
        if not 0 < port < 65536:
            raise UsageError(f"sftp: invalid port {port}")
        if connections < 1:
            raise UsageError("sftp: connections must be at least 1")
        if timeout <= 0:
            raise UsageError("sftp: timeout must be positive")
        self.host = host
        self.port = port
        self.user = user or current_user()
        self._password = password or None
        self.key_file = os.path.expanduser(key_file) if key_file else None
        self._known_hosts_given = known_hosts is not None
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self.timeout = timeout
        if path == "~" or path.startswith("~/"):
            path = path[2:] or "."  # SFTP does not expand "~": the login dir is the default
        self.root = path.rstrip("/") or ("/" if path.startswith("/") else ".")
        self.location = display_location(self.user, host, port, self.root)

        self._key: paramiko.PKey | None = None
        self._lock = threading.Lock()  # guards the key file's one-time load
        self._connections = connections
        self._pool: Pool[Session] = Pool(connections, self._connect, _MAX_IDLE)
        # Protocol extensions we try once and stop using if the server lacks them
        # (OpenSSH has both; other servers may not).
        self._has_posix_rename = True
        self._has_fsync = True

    # ----------------------------------------------------------------- errors

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _err(self, cls: type[BackendError], msg: str) -> BackendError:
        """Build ``cls(msg)`` with the password scrubbed from the message."""
        return cls(self._scrub(msg))

    def _safe(self, cause: BaseException) -> BaseException | None:
        """``cause`` if chaining it cannot show the password, else None."""
        if self._password and self._password in str(cause):
            return None
        return cause

    def _connect_error(self, e: Exception) -> BackendError:
        return self._err(*connect_error(e, self.location, self.host, self.port,
                                        self.known_hosts, self.user))

    def _status_error(self, e: OSError, what: str, s: Session) -> BackendError:
        """Translate an SFTP status reply (the connection itself is fine)."""
        if isinstance(e, FileNotFoundError):
            try:
                s.sftp.stat(self.root)
            except FileNotFoundError:
                return self._err(
                    TransientError, f"{self.location}: vault directory is not there")
            except Exception as e2:  # the connection died under us: not a definite answer
                s.broken = True
                return self._err(TransientError, f"{what} on {self.location}: {describe(e2)}")
            return self._err(NotFoundError, f"{what} not found on {self.location}")
        if isinstance(e, PermissionError):
            return self._err(PermanentError, f"{what} on {self.location}: permission denied")
        # SFTP v3 folds disk full, quota exceeded and I/O errors into one
        # "Failure" status: all definite refusals from a server that is up.
        return self._err(PermanentError, f"{what} on {self.location}: {describe(e)}")

    # ------------------------------------------------------------------- pool

    def _load_key(self) -> paramiko.PKey | None:
        if self.key_file is None:
            return None
        with self._lock:
            if self._key is None:
                try:
                    try:
                        self._key = paramiko.PKey.from_path(self.key_file)
                    except (paramiko.PasswordRequiredException, TypeError):
                        # An encrypted key (paramiko 5 lets cryptography's
                        # TypeError through for OpenSSH-format keys). Like ssh
                        # and paramiko, the password also unlocks the key.
                        if not self._password:
                            raise
                        # from_path hands the password to cryptography as is,
                        # which wants bytes (the annotation says str).
                        self._key = paramiko.PKey.from_path(
                            self.key_file, cast(str, self._password.encode()))
                except Exception as e:  # unreadable, encrypted, corrupt, unknown type
                    hint = "" if self._password else " (encrypted keys need the password)"
                    raise self._err(
                        PermanentError,
                        f"{self.location}: cannot use key file {self.key_file}: "
                        f"{describe(e)}{hint}") from self._safe(e)
            return self._key

    def _connect(self) -> Session:
        pkey = self._load_key()
        client = paramiko.SSHClient()
        try:
            # load_system_host_keys, not load_host_keys: the latter would make
            # paramiko rewrite the user's known_hosts file on close.
            try:
                client.load_system_host_keys(self.known_hosts)
            except FileNotFoundError:
                if self._known_hosts_given:
                    raise self._err(
                        PermanentError,
                        f"{self.location}: known_hosts file {self.known_hosts} does not "
                        f"exist; create it with: ssh-keyscan -p {self.port} {self.host} "
                        f">> {self.known_hosts}") from None
            except OSError as e:
                raise self._err(
                    PermanentError,
                    f"{self.location}: cannot read {self.known_hosts}: {describe(e)}") from e
            client.set_missing_host_key_policy(RejectUnknownHost())
            # Agent and default keys only when nothing explicit was configured:
            # otherwise a wrong key_file could silently "work" via another key.
            fallback = pkey is None and self._password is None
            client.connect(
                self.host, self.port, username=self.user, password=self._password,
                pkey=pkey, timeout=self.timeout, banner_timeout=self.timeout,
                auth_timeout=self.timeout, channel_timeout=self.timeout,
                allow_agent=fallback, look_for_keys=fallback)
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(_KEEPALIVE)
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            assert channel is not None
            channel.settimeout(self.timeout)  # every SFTP reply wait is bounded
        except BaseException as e:
            client.close()
            if isinstance(e, BackendError) or not isinstance(e, Exception):
                raise
            raise self._connect_error(e) from self._safe(e)
        return Session(client, sftp)

    def _run(self, what: str, op: Callable[[Session], T], idempotent: bool = True) -> T:
        """Run ``op`` on a pooled session, translating every failure.

        An idempotent operation that fails because a *reused* session turned out
        dead (server restarted since) is retried once on a fresh connection;
        timeouts are not retried, as the server may be hung.
        """
        for attempt in (0, 1):
            s = self._pool.acquire()
            keep = False
            try:
                result = op(s)
                keep = True
                return result
            except (BackendError, IntegrityError):
                keep = True
                raise
            except Exception as e:
                if is_status(e) and s.alive():
                    keep = True
                    raise self._status_error(cast(OSError, e), what, s) from self._safe(e)
                lost = e
            finally:
                self._pool.release(s, keep)
            # The connection is broken: others from the same server likely too.
            self._pool.reset()
            if attempt == 0 and s.reused and idempotent and not isinstance(lost, TimeoutError):
                continue
            if isinstance(lost, TimeoutError):
                msg = f"{what} on {self.location}: server did not answer within {self.timeout:g}s"
            else:
                msg = f"{what} on {self.location}: connection lost ({describe(lost)})"
            raise self._err(TransientError, msg) from self._safe(lost)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ paths

    def _abs(self, rel: str) -> str:
        if self.root == "/":
            return "/" + rel
        return f"{self.root}/{rel}"

    def _path(self, h: Handle) -> str:
        return self._abs(h.path())

    # ------------------------------------------------------------- operations

    def create(self) -> None:
        """Create the root (like ``mkdir -p``) and the type directories."""

        def op(s: Session) -> None:
            sftp = s.sftp
            try:
                exists = stat_mod.S_ISDIR(sftp.stat(self.root).st_mode or 0)
            except FileNotFoundError:
                exists = False
            # mkdir -p, but only when needed: parents may not be stat-able.
            parts = [] if exists else [p for p in self.root.split("/") if p and p != "."]
            prefix = "/" if self.root.startswith("/") else ""
            for p in parts:
                prefix = f"{prefix}{p}" if prefix in ("", "/") else f"{prefix}/{p}"
                mkdir_quiet(sftp, prefix)
            for t in FileType:
                if t not in SINGLETONS:
                    mkdir_quiet(sftp, self._abs(t.value))

        self._run("vault directory", op)

    def save(self, h: Handle, data: bytes) -> None:
        """Write to a temporary name in the same directory, then rename into place."""

        def op(s: Session) -> None:
            sftp = s.sftp
            path = self._path(h)
            d, _, name = path.rpartition("/")
            tmp = f"{d}/{temp_name(name)}"
            try:
                f = sftp.open(tmp, "wbx")
            except FileNotFoundError:
                if h.type in SINGLETONS:
                    raise
                # data/xx/ is created on first use, and archives/ in a vault made
                # before that directory existed.
                mkdir_quiet(sftp, d)
                f = sftp.open(tmp, "wbx")
            try:
                try:
                    f.chmod(_FILE_MODE)
                except OSError as e:
                    if not unsupported(e):
                        raise  # some servers cannot set modes; the data is encrypted anyway
                f.set_pipelined(True)
                f.write(data)
                finish_writes(sftp, f)
                synced = self._fsync(sftp, f)
                f.close()  # paramiko ignores errors of the close itself
                if not synced and (sftp.stat(tmp).st_size or 0) != len(data):
                    # Without fsync a late write error may only show as a short file.
                    raise OSError(f"wrote {len(data)} bytes but the file is shorter")
                self._rename(sftp, tmp, path, h)
            except BaseException as e:
                if is_status(e) and s.alive():
                    f.close()
                    try:
                        sftp.remove(tmp)
                    except Exception:
                        pass  # best effort; list() never shows temp files anyway
                else:
                    # A reply may still be outstanding (timeout): closing the file
                    # or removing the temp file would wait again. Drop the session.
                    s.broken = True
                raise

        self._run(str(h), op)

    def _fsync(self, sftp: paramiko.SFTPClient, f: paramiko.SFTPFile) -> bool:
        """fsync the file on the server; False if the server cannot.

        fsync@openssh.com makes the bytes durable before the rename publishes
        them, and reports write errors a plain close would not; paramiko has no
        public call for it.
        """
        if not self._has_fsync:
            return False
        try:
            cast(Any, sftp)._request(CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError as e:
            if not unsupported(e):
                raise
            self._has_fsync = False
            return False
        return True

    def _rename(self, sftp: paramiko.SFTPClient, tmp: str, path: str, h: Handle) -> None:
        if self._has_posix_rename:
            try:
                sftp.posix_rename(tmp, path)  # atomic replace, like rename(2)
                return
            except OSError as e:
                if not unsupported(e):
                    raise
                self._has_posix_rename = False
        try:
            sftp.rename(tmp, path)
        except FileNotFoundError:
            raise
        except OSError:
            # Plain SFTP v3 rename refuses to replace an existing file.
            try:
                sftp.stat(path)
            except FileNotFoundError:
                raise
            if h.type in MUTABLE:
                # Not atomic: readers may briefly see the file missing (never partial).
                sftp.remove(path)
                sftp.rename(tmp, path)
            else:
                # Immutable files are content-addressed: the one there is the same.
                sftp.remove(tmp)

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        """Read ``length`` bytes (all if None) from ``offset``; short file → IntegrityError.

        A whole file is sized first (fstat) against its bound, and neither the
        prefetch nor the reads go past the bound.
        """
        if offset < 0 or (length is not None and length < 0):
            raise UsageError("negative offset or length")
        bound = read_bound(h, length, max_size)

        def op(s: Session) -> bytes:
            with opened(s, self._path(h)) as f:
                if length is None:
                    size = f.stat().st_size or 0
                    if size - offset > bound:
                        raise too_large(h, self.location, bound, size)
                    want = max(size - offset, 0)
                    if want == 0:
                        return b""
                    f.seek(offset)
                    # Pipelined reads: one round trip's latency, not one per 32 KiB.
                    f.prefetch(offset + want)
                elif length == 0:
                    return b""
                else:
                    want = length
                    f.seek(offset)
                    if length > _PLAIN_READ_MAX:
                        # Prefetch only what exists: paramiko handles reads past
                        # EOF in its prefetch machinery poorly.
                        size = f.stat().st_size or 0
                        if offset + length > size:
                            raise IntegrityError(
                                f"{h} on {self.location} is shorter than expected")
                        f.prefetch(offset + length)
                data = read_exactly(f, want)
            if len(data) != want:
                # paramiko's read() swallows EOF; tell a short file from a dead link.
                if not s.alive():
                    raise Lost("connection closed during read")
                raise IntegrityError(f"{h} on {self.location} is shorter than expected")
            return data

        return self._run(str(h), op)

    def stat(self, h: Handle) -> FileInfo:
        """Return the size of ``h``; NotFoundError if it is not there."""
        return self._run(str(h), lambda s: FileInfo(h, s.sftp.stat(self._path(h)).st_size or 0))

    def list(self, t: FileType) -> Iterator[FileInfo]:
        """Yield every file of type ``t``; temp files and stray names are skipped."""
        if t in SINGLETONS:
            try:
                yield self.stat(Handle(t))
            except NotFoundError:
                pass
            return

        def pack_dirs(s: Session) -> list[str]:
            try:
                names = s.sftp.listdir(self._abs(t.value))
            except FileNotFoundError:
                s.sftp.stat(self.root)  # root missing → translated to TransientError
                return []  # data/ itself is missing: nothing stored yet
            return [f"{t.value}/{n}" for n in sorted(names) if len(n) == 2]

        def scan(s: Session, d: str) -> list[FileInfo]:
            out: list[FileInfo] = []
            for a in self._entries(s, d, top=d == t.value):
                    if a.filename.startswith("."):
                        continue  # temp files of saves in progress
                    if a.st_mode is not None and not stat_mod.S_ISREG(a.st_mode):
                        continue
                    fh = handle_from_path(f"{d}/{a.filename}")
                    if fh is None or fh.type is not t:
                        continue
                    out.append(FileInfo(fh, a.st_size or 0))
            return out

        dirs = self._run(t.value, pack_dirs) if t is FileType.PACK else [t.value]
        # Collected first and yielded after the sessions are back in the pool,
        # so a slow consumer never holds a connection.
        for r in fan_out(dirs, lambda d: self._run(t.value, lambda s: scan(s, d)),
                         self._connections, _DIRS_PER_SESSION, "sftp-list"):
            yield from r

    def _entries(self, s: Session, d: str, top: bool) -> builtins.list[paramiko.SFTPAttributes]:
        """The entries of vault directory ``d``; [] if it is missing (a type
        directory of a ``top`` level: unless the root is missing too)."""
        try:
            return s.sftp.listdir_attr(self._abs(d) if d else self.root)
        except FileNotFoundError:
            if top:
                s.sftp.stat(self.root)  # root missing → TransientError
            return []  # type dir missing, or a data/xx removed concurrently

    def remove_temporaries(self) -> builtins.list[str]:
        """Remove the hidden ``.*.tmp`` uploads of writers no longer alive."""
        def subdirs(s: Session) -> builtins.list[str]:
            return [f"data/{a.filename}" for a in self._entries(s, "data", top=True)
                    if len(a.filename) == 2 and stat_mod.S_ISDIR(a.st_mode or 0)]

        def clean(d: str) -> builtins.list[str]:
            def op(s: Session) -> builtins.list[str]:
                gone = []
                for a in self._entries(s, d, top=True):
                    if is_dead_temporary(a.filename) and not stat_mod.S_ISDIR(a.st_mode or 0):
                        path = f"{d}/{a.filename}" if d else a.filename
                        try:
                            s.sftp.remove(self._abs(path))
                        except FileNotFoundError:
                            continue  # removed meanwhile
                        gone.append(path)
                return gone

            return self._run(d or "vault directory", op)

        dirs = ["", *(t.value for t in FileType if t not in SINGLETONS)]
        dirs += self._run("data", subdirs)
        return [p for part in fan_out(dirs, clean, self._connections, _DIRS_PER_SESSION,
                                      "sftp-clean") for p in part]

    def remove(self, h: Handle) -> None:
        """Remove ``h``; NotFoundError if it is not there."""
        # Not retried after a lost connection: the first attempt may have removed
        # it, and a retry would then wrongly report NotFoundError.
        self._run(str(h), lambda s: s.sftp.remove(self._path(h)), idempotent=False)

    def probe(self) -> None:
        """Raise TransientError unless the server answers and the vault directory exists."""

        def op(s: Session) -> None:
            a = s.sftp.stat(self.root)
            if a.st_mode is not None and not stat_mod.S_ISDIR(a.st_mode):
                raise self._err(TransientError, f"{self.location}: vault path is not a directory")

        self._run("vault directory", op)

    def close(self) -> None:
        """Close all pooled connections; later calls reconnect."""
        self._pool.reset()
