"""A vault on an FTP server, optionally secured with explicit TLS (FTPS).

Built on the standard library's ``ftplib``. Design points:

- Passive mode only (works through NAT and client firewalls).
- A small thread-safe pool of logged-in connections (``storage/pool.py``,
  shared with SFTP), at most ``connections`` at a time. A connection is put
  back only after a clean answer; anything that leaves the protocol state
  uncertain (timeout, reset, half-read transfer that could not be aborted)
  discards it.
- Every socket (control and data) has ``timeout``, so a hung server surfaces
  as ``TransientError`` instead of hanging the backup.
- Saves go to a hidden temporary name in the target directory and are then
  renamed into place, so a reader never sees a partial file.
- FTPS is explicit TLS (``AUTH TLS`` then ``PBSZ 0``/``PROT P``: the data
  channel is encrypted too) with certificate verification on by default.
- The protocol exchanges themselves (STOR, RETR, ABOR, listing replies, error
  translation) are in ``storage/ftp_proto.py``.
- The password never leaves this module: it is not part of ``location`` and
  is scrubbed from every error message.
"""

from __future__ import annotations

import builtins
import ftplib
import functools
import posixpath
import re
import ssl
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import quote

from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    TierVaultError,
    TransientError,
    UsageError,
)
from tiervault.storage.base import (
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
from tiervault.storage.ftp_proto import (
    Entries,
    FtpConn,
    binary,
    delete_quietly,
    is_stale,
    missing,
    mlsd,
    parse_stat,
    rename,
    retr_all,
    retr_range,
    stor,
    translate,
)
from tiervault.storage.pool import Pool, fan_out

T = TypeVar("T")
# Reconnecting is cheaper than finding out (after a full timeout) that a
# NAT box or the server silently dropped a long-idle control connection.
_MAX_IDLE = 60.0
_DIRS_PER_CONNECTION = 8  # listing: below this many directories per connection, don't fan out


class FtpBackend(Backend):
    """A vault under ``path`` on an FTP or FTPS (explicit TLS) server.

    ``tls`` turns on ``AUTH TLS`` with an encrypted data channel; the server
    certificate is verified against the system CAs, or only against
    ``ca_file`` when given. ``insecure`` disables verification (the caller is
    expected to warn). ``timeout`` applies to every socket operation and
    ``connections`` bounds the connections used in parallel.
    """

    def __init__(
        self,
        host: str,
        port: int = 21,
        user: str = "anonymous",
        password: str = "",
        path: str = "/",
        tls: bool = False,
        ca_file: str | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        connections: int = 4,
    ) -> None:
        if connections < 1:
            raise UsageError("ftp: connections must be at least 1")
        if timeout <= 0:
            raise UsageError("ftp: timeout must be positive")
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self.tls = tls
        self.timeout = timeout
        self.connections = connections
        root = path.strip() or "/"
        self._root_rel = root if root == "/" else root.rstrip("/")
        # Absolute paths are used for every command (so the working directory
        # never matters); a relative root is resolved against the login
        # directory on the first connection.
        self._root: str | None = self._root_rel if self._root_rel.startswith("/") else None
        scheme = "ftps" if tls else "ftp"
        hostpart = f"[{host}]" if ":" in host else host
        shown = self._root_rel if self._root_rel.startswith("/") else "/" + self._root_rel
        self.location = f"{scheme}://{quote(user, safe='')}@{hostpart}:{port}{shown}"
        self._context: ssl.SSLContext | None = None
        if tls:
            self._context = self._make_context(ca_file, insecure)
        self._use_mlsd = True
        self._use_stat = True  # STAT DIR lists over the control connection (see _stat_list)
        self._pool: Pool[FtpConn] = Pool(connections, self._connect, _MAX_IDLE)

    # --- connections -----------------------------------------------------

    def _make_context(self, ca_file: str | None, insecure: bool) -> ssl.SSLContext:
        try:
            # With a cafile, only that file is trusted (no system CAs), which
            # is what pinning a private CA or a self-signed server wants.
            ctx = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"{self.location}: cannot load CA file {ca_file!r}: {e}") from None
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect(self) -> FtpConn:
        ftp: ftplib.FTP
        if self._context is not None:
            ftp = ftplib.FTP_TLS(context=self._context, timeout=self.timeout)
        else:
            ftp = ftplib.FTP(timeout=self.timeout)
        try:
            ftp.connect(self.host, self.port)
            if isinstance(ftp, ftplib.FTP_TLS):
                try:
                    ftp.auth()
                except ftplib.error_perm as e:
                    raise PermanentError(
                        f"{self.location}: server refuses TLS ({self._scrub(str(e))})"
                    ) from None
            try:
                ftp.login(self.user, self._password)
            except ftplib.error_perm as e:
                # Definite: retrying a wrong password only risks a lockout.
                raise PermanentError(
                    f"{self.location}: login refused ({self._scrub(str(e))})"
                ) from None
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(True)
            # Binary mode: byte-exact transfers, and SIZE is refused in ASCII.
            ftp.voidcmd("TYPE I")
            if self._root is None:
                home = ftp.pwd()
                self._root = posixpath.normpath(posixpath.join(home, self._root_rel))
        except BaseException:
            ftp.close()
            raise
        return FtpConn(ftp)

    def _call(self, what: str, fn: Callable[[FtpConn], T]) -> T:
        """Run ``fn`` on a pooled connection and translate what goes wrong.

        ``fn`` lets ftplib exceptions escape (translated here) or raises a
        typed error itself after a clean exchange. A pooled connection that
        turns out to be dead is replaced once by a fresh one.
        """
        for attempt in (0, 1):
            try:
                c = self._pool.acquire()
            except ftplib.all_errors as e:  # connecting or logging in
                raise self._translate(e, what) from self._cause(e)
            except (UnicodeError, ValueError) as e:
                raise TransientError(f"{what} on {self.location}: unexpected server reply "
                                     f"({self._scrub(str(e))})") from None
            keep = False
            try:
                result = fn(c)
                keep = True
                return result
            except TierVaultError:
                keep = True
                raise
            except ftplib.error_perm as e:
                # A clean 5xx answer: the connection is still in sync.
                keep = True
                raise self._translate(e, what) from self._cause(e)
            except ftplib.all_errors as e:
                if not (c.reused and attempt == 0 and is_stale(e)):
                    raise self._translate(e, what) from self._cause(e)
            except (UnicodeError, ValueError) as e:
                # Garbage from the server (a listing that is not UTF-8, a SIZE
                # reply that is no number): the exchange is out of step.
                raise TransientError(f"{what} on {self.location}: unexpected server reply "
                                     f"({self._scrub(str(e))})") from None
            finally:
                self._pool.release(c, keep)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- error translation -------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _cause(self, e: BaseException) -> BaseException | None:
        # Keep the original for debugging unless it would print the password.
        return None if self._password and self._password in str(e) else e

    def _translate(self, e: BaseException, what: str) -> BackendError:
        return translate(e, what, self.location, self.timeout, self._scrub)

    def _root_exists(self, c: FtpConn) -> bool:
        try:
            c.ftp.cwd(self._abs(""))
        except ftplib.error_perm:
            return False
        return True

    def _not_found(self, c: FtpConn, what: str) -> BackendError:
        # Like the local backend: a missing root means the tier is not there
        # (unmounted share behind the FTP server), not that the file is gone.
        if not self._root_exists(c):
            return TransientError(f"{self.location}: vault directory is not there")
        return NotFoundError(f"{what} not found on {self.location}")

    def _abs(self, rel: str) -> str:
        assert self._root is not None, "root is resolved on the first connection"
        return posixpath.join(self._root, rel) if rel else self._root

    # --- Backend -----------------------------------------------------------

    def create(self) -> None:
        """Make the vault directory (and its parents) and the type directories."""

        def op(c: FtpConn) -> None:
            root = self._abs("")
            # MKD is not recursive: make each component of the root in turn.
            parents: list[str] = []
            prefix = "/"
            for part in root.strip("/").split("/"):
                if part:
                    prefix = posixpath.join(prefix, part)
                    parents.append(prefix)
            subdirs = [self._abs(t.value) for t in FileType if t not in SINGLETONS]
            for d in parents + subdirs:
                try:
                    c.ftp.mkd(d)
                except ftplib.error_perm:
                    pass  # usually "exists"; whether it is there is checked below
            for d in [root, *subdirs]:
                try:
                    c.ftp.cwd(d)
                except ftplib.error_perm as e:
                    raise PermanentError(
                        f"{self.location}: cannot create {d} ({self._scrub(str(e))})"
                    ) from None

        self._call("vault directory", op)

    def save(self, h: Handle, data: bytes) -> None:
        """Upload to a hidden ``.tmp`` name beside the target, then rename it in place."""
        what = str(h)

        def op(c: FtpConn) -> None:
            final = self._abs(h.path())
            parent, name = posixpath.split(final)
            tmp = posixpath.join(parent, temp_name(name))
            try:
                stor(c, tmp, data)
            except ftplib.error_perm as e:
                if not missing(e):
                    raise
                if not self._root_exists(c):
                    raise TransientError(f"{self.location}: vault directory is not there") from None
                # The fan-out directory (data/xx) is made on first use.
                try:
                    c.ftp.mkd(parent)
                except ftplib.error_perm:
                    pass  # raced with another writer, or a real refusal the retry reports
                stor(c, tmp, data)
            try:
                rename(c, tmp, final)
            except ftplib.error_perm:
                # A clean refusal: tidy up. (After a transport error the
                # connection is gone; the orphan is a hidden .tmp, never listed.)
                delete_quietly(c, tmp)
                raise

        self._call(what, op)

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        """Download a range: REST for the offset, ABOR once ``length`` bytes are in.

        A whole file is first sized (SIZE) against its bound, and the download
        is cut off (ABOR) as soon as it passes the bound.
        """
        if offset < 0 or (length is not None and length < 0):
            raise UsageError(f"invalid range {offset}+{length} for {h}")
        what = str(h)
        bound = read_bound(h, length, max_size)

        def op(c: FtpConn) -> bytes:
            path = self._abs(h.path())
            try:
                if length == 0:
                    c.ftp.size(path)  # existence check only
                    return b""
                if length is None:
                    try:
                        size = c.ftp.size(path)
                    except ftplib.error_perm as e:
                        if str(e)[:3] not in ("500", "502"):
                            raise
                        size = None  # SIZE not implemented: the read bound still holds
                    if size is not None and size - offset > bound:
                        raise too_large(h, self.location, bound, size)
                    return retr_all(c, path, offset, bound, h, self.location)
                return retr_range(c, path, offset, length, what, self.location)
            except ftplib.error_perm as e:
                if offset and str(e)[:3] == "554":
                    # RFC 1123: REST beyond the end of the file.
                    if length is None:
                        return b""
                    raise IntegrityError(
                        f"{what} on {self.location} is shorter than expected"
                    ) from None
                if missing(e, allow_501=length == 0):
                    raise self._not_found(c, what) from None
                raise

        return self._call(what, op)

    def stat(self, h: Handle) -> FileInfo:
        """Size via SIZE (binary mode)."""
        what = str(h)

        def op(c: FtpConn) -> FileInfo:
            try:
                size = c.ftp.size(self._abs(h.path()))
            except ftplib.error_perm as e:
                if missing(e, allow_501=True):
                    raise self._not_found(c, what) from None
                raise
            if size is None:
                raise PermanentError(f"{what} on {self.location}: server does not report sizes")
            return FileInfo(h, size)

        return self._call(what, op)

    def list(self, t: FileType) -> Iterator[FileInfo]:
        """List via MLSD (NLST plus SIZE where the server lacks it)."""
        if t in SINGLETONS:
            try:
                yield self.stat(Handle(t))
            except NotFoundError:
                pass
            return
        dirs = [t.value]
        if t is FileType.PACK:
            entries = self._call(t.value, lambda c: self._listdir(c, t.value, files=False))
            dirs = sorted(
                f"{t.value}/{name}" for name, _ in entries if re.fullmatch(r"[0-9a-f]{2}", name)
            )
        # One directory per pooled call: no connection is held while the
        # caller consumes results (it may use the backend meanwhile). data/ has
        # up to 256 subdirectories, each listing a few round trips: spread them
        # over the pool's connections instead of paying the latency 256 times.
        subdirs = t is FileType.PACK

        def one(d: str) -> Entries:
            return self._call(d, functools.partial(self._listdir_files, rel=d, subdir=subdirs))

        if len(dirs) == 1:
            listed = [(dirs[0], one(dirs[0]))]
        else:
            listed = list(zip(dirs, fan_out(dirs, one, self.connections,
                                            _DIRS_PER_CONNECTION, "ftp-list"), strict=True))
        for d, entries in listed:
            for name, size in entries:
                if name.startswith("."):
                    continue  # temporary uploads
                h = handle_from_path(f"{d}/{name}")
                if h is None or h.type is not t or size is None:
                    continue
                yield FileInfo(h, size)

    def _listdir_files(self, c: FtpConn, rel: str, subdir: bool) -> Entries:
        """The files of ``rel``; a data/xx subdirectory (whose parent was just
        listed) by STAT where the server lists that way, else by _listdir."""
        if subdir and self._use_stat:
            entries = self._stat_list(c, self._abs(rel))
            if entries is not None:
                return entries
        return self._listdir(c, rel, files=True)

    def _stat_list(self, c: FtpConn, path: str) -> Entries | None:
        """``STAT path``: the listing comes back on the control connection, one
        round trip instead of PASV, a data connection and MLSD (RFC 959; 3x
        faster on loopback, more over a WAN). Used only for directories known
        to exist, and only while every line parses as a Unix ``ls -l`` line:
        anything else (refused, another format) turns it off for good and the
        caller lists with MLSD. None means "not answered this way"."""
        try:
            reply = c.ftp.sendcmd(f"STAT {path}")
        except ftplib.error_perm as e:
            if missing(e):
                return []  # removed since its parent was listed
            self._use_stat = False  # not implemented, or refused
            return None
        except ftplib.error_temp:
            raise  # 4xx: the server's trouble, not the command's
        except (ftplib.Error, UnicodeError) as e:
            # An answer out of step (an over-long line, not UTF-8, no 2xx): drop
            # the connection, never STAT again, and let the retry list by MLSD.
            self._use_stat = False
            c.broken = True
            raise TransientError(f"listing {path} on {self.location}: unexpected STAT reply "
                                 f"({self._scrub(str(e))[:200]})") from None
        out = parse_stat(reply)
        if out is None:
            self._use_stat = False
        return out

    def _listdir(self, c: FtpConn, rel: str, files: bool) -> Entries:
        """(name, size) of the files (or subdirectories) of ``rel``.

        A missing directory lists as empty, unless the vault root itself
        is missing (tier unreachable).
        """
        path = self._abs(rel)
        try:
            entries = self._list_names(c, path, files)
        except ftplib.error_perm as e:
            binary(c)
            if not missing(e, allow_501=True):
                raise
            if not self._root_exists(c):
                raise TransientError(f"{self.location}: vault directory is not there") from None
            return []
        # ftplib lists in ASCII mode (TYPE A) and leaves it set, while every
        # other command here relies on binary mode: SIZE is refused in ASCII
        # and a raw RETR would be newline-translated. (On a transport error
        # above the connection is discarded, so there is nothing to restore.)
        binary(c)
        if not files:
            return entries
        out: Entries = []
        for name, size in entries:
            if size is None and not name.startswith("."):
                # NLST, or an MLSD without the size fact: ask for it.
                try:
                    size = c.ftp.size(posixpath.join(path, name))
                except ftplib.error_perm as e:
                    if missing(e, allow_501=True):
                        continue  # a directory, or removed meanwhile
                    raise
            out.append((name, size))
        return out

    def _list_names(self, c: FtpConn, path: str, files: bool) -> Entries:
        """Names of files (or directories) in ``path``, with sizes when cheap."""
        if self._use_mlsd:
            try:
                return mlsd(c, path, files)
            except ftplib.error_perm as e:
                if str(e)[:3] not in ("500", "502"):
                    raise
                self._use_mlsd = False  # not implemented: use NLST from now on
        # Servers differ on whether NLST returns bare names or paths; NLST
        # does not tell files from directories (SIZE on a directory fails).
        names = [posixpath.basename(n.rstrip("/")) for n in c.ftp.nlst(path)]
        return [(n, None) for n in names if n and n not in (".", "..")]

    def remove_temporaries(self) -> builtins.list[str]:
        """DELE the hidden ``.*.tmp`` uploads of writers no longer alive, in every
        vault directory (servers that hide dot files from listings keep theirs)."""
        tops = ["", *(t.value for t in FileType if t not in SINGLETONS)]
        entries = self._call("data", lambda c: self._listdir(c, "data", files=False))
        subdirs = sorted(f"data/{n}" for n, _ in entries if re.fullmatch(r"[0-9a-f]{2}", n))

        def clean(rel: str) -> builtins.list[str]:
            def op(c: FtpConn) -> builtins.list[str]:
                gone = []
                for name, _size in self._listdir_files(c, rel, rel.startswith("data/")):
                    if not is_dead_temporary(name):
                        continue
                    path = posixpath.join(rel, name)
                    try:
                        c.ftp.delete(self._abs(path))
                    except ftplib.error_perm as e:
                        if missing(e):
                            continue  # removed meanwhile
                        raise
                    gone.append(path)
                return gone

            return self._call(rel or "vault directory", op)

        return [p for part in fan_out(tops + subdirs, clean, self.connections,
                                      _DIRS_PER_CONNECTION, "ftp-clean") for p in part]

    def remove(self, h: Handle) -> None:
        """Delete via DELE."""
        what = str(h)

        def op(c: FtpConn) -> None:
            try:
                c.ftp.delete(self._abs(h.path()))
            except ftplib.error_perm as e:
                if missing(e):
                    raise self._not_found(c, what) from None
                raise

        self._call(what, op)

    def probe(self) -> None:
        """Connect, log in and check that the vault directory exists."""

        def op(c: FtpConn) -> None:
            if not self._root_exists(c):
                raise TransientError(f"{self.location}: vault directory is not there")

        self._call("vault directory", op)

    def close(self) -> None:
        """Close the idle pooled connections (in-use ones close on return)."""
        self._pool.reset(polite=True)

    def __repr__(self) -> str:
        return f"FtpBackend({self.location!r})"
