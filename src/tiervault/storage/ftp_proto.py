"""The FTP protocol exchanges of the FTP backend: transfers (STOR, RETR, ABOR),
listing replies, and the shape of a pooled connection.

Functions take a pooled ``FtpConn`` and mark it ``broken`` whenever they leave
the control connection's state uncertain; ftplib errors escape to the
backend, which translates them.
"""

from __future__ import annotations

import ftplib
import re
import ssl
from collections.abc import Callable

from tiervault.errors import BackendError, IntegrityError, PermanentError, TransientError
from tiervault.storage.base import Handle, too_large
from tiervault.storage.pool import Pooled

#: (name, size) pairs of a directory listing.
Entries = list[tuple[str, int | None]]

BLOCK = 256 * 1024
#: One line of a Unix ``ls -l`` listing (type, size, name); names with blanks do not match.
LS_LINE = re.compile(r"([-dlpscb])[rwxsStT-]{9}[.+@]?\s+\d+\s+\S+\s+\S+\s+(\d+)\s+"
                      r"[A-Za-z]{3}\s+\d{1,2}\s+(?:\d{1,2}:\d{2}|\d{4})\s+(\S+)(?: -> \S+)?")
# Reply texts that make a 5xx a refusal rather than "no such file".
REFUSAL = re.compile(
    r"denied|permission|not permitted|forbidden|not allowed|read-only|read only", re.I
)
# Transport failures on a pooled connection that mean "it went stale while
# idle"; worth one retry on a fresh connection. Timeouts are not: retrying
# a hung server would only double the wait.
STALE = (EOFError, ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


class FtpConn(Pooled):
    """One logged-in control connection and its pool bookkeeping."""

    def __init__(self, ftp: ftplib.FTP) -> None:
        super().__init__()
        self.ftp = ftp

    def close(self, polite: bool = False) -> None:
        close_quietly(self.ftp, polite)


def missing(e: ftplib.error_perm, allow_501: bool = False) -> bool:
    """Whether a 5xx answer means "no such file or directory"."""
    text = str(e)
    codes = ("550", "501") if allow_501 else ("550",)
    return text[:3] in codes and not REFUSAL.search(text)


def stor(c: FtpConn, path: str, data: bytes) -> None:
    """Upload ``data`` to ``path``; a transfer refused or broken off is deleted."""
    try:
        # Not ftplib's storbinary: it re-sends TYPE I each time, a
        # round trip the pool's always-binary connections do not need.
        with c.ftp.transfercmd(f"STOR {path}") as conn:
            conn.sendall(data)
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()  # TLS close_notify, so the server knows the upload is whole
        c.ftp.voidresp()
    except ftplib.error_perm as e:
        if str(e)[:3] == "552":
            # Refused mid-transfer (disk full): drop the partial upload.
            delete_quietly(c, path)
        raise
    except ftplib.error_temp:
        # 452/451/426: the transfer broke off; drop whatever arrived.
        delete_quietly(c, path)
        raise


def rename(c: FtpConn, src: str, dst: str) -> None:
    """RNFR/RNTO, deleting the target first on servers that refuse to replace it."""
    try:
        c.ftp.rename(src, dst)
        return
    except ftplib.error_perm:
        # Some servers refuse to rename onto an existing name; only
        # a successful delete of the target makes a second try worthwhile.
        try:
            c.ftp.delete(dst)
        except ftplib.error_perm:
            pass
        else:
            c.ftp.rename(src, dst)
            return
        raise


def delete_quietly(c: FtpConn, path: str) -> None:
    """Best-effort cleanup that never masks the error being handled."""
    try:
        c.ftp.delete(path)
    except ftplib.error_perm:
        pass
    except ftplib.all_errors:
        c.broken = True


def retr_all(c: FtpConn, path: str, offset: int, bound: int, h: Handle,
             where: str) -> bytes:
    """The file from ``offset`` to its end; cut off (ABOR) past ``bound`` bytes."""
    # Like ftplib's retrbinary minus its per-call TYPE I round trip, and
    # stopping one byte past ``bound`` whatever SIZE said.
    buf = bytearray()
    with c.ftp.transfercmd(f"RETR {path}", rest=offset or None) as conn:
        while chunk := conn.recv(min(BLOCK, bound + 1 - len(buf))):
            buf += chunk
            if len(buf) > bound:
                break
        else:
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()
    if len(buf) > bound:
        abort(c)
        raise too_large(h, where, bound)
    c.ftp.voidresp()
    return bytes(buf)


def retr_range(c: FtpConn, path: str, offset: int, length: int, what: str,
               where: str) -> bytes:
    """Exactly ``length`` bytes from ``offset`` (REST, then ABOR once they are in)."""
    conn = c.ftp.transfercmd(f"RETR {path}", rest=offset or None)
    buf = bytearray()
    try:
        while len(buf) < length:
            chunk = conn.recv(min(BLOCK, length - len(buf)))
            if not chunk:
                break
            buf += chunk
        if len(buf) < length and isinstance(conn, ssl.SSLSocket):
            conn.unwrap()  # the server finished; end TLS cleanly as ftplib does
    finally:
        conn.close()
    if len(buf) < length:
        c.ftp.voidresp()
        raise IntegrityError(f"{what} on {where} is shorter than expected")
    abort(c)
    return bytes(buf)


def abort(c: FtpConn) -> None:
    """Stop a download we no longer need and resynchronise the replies.

    ABOR is sent as a plain command: urgent (OOB) data cannot travel
    over TLS, and servers also accept it in-band. Depending on timing the
    server answers 426+226, 226+225 or just 225, so a NOOP is pipelined
    behind it and replies are read until its 200. If that does not
    work out the data is still good; only the connection is dropped.
    """
    try:
        c.ftp.putcmd("ABOR")
        c.ftp.putcmd("NOOP")
        for _ in range(6):
            if c.ftp.getmultiline().startswith("200"):
                return
        c.broken = True
    except ftplib.all_errors:
        c.broken = True


def mlsd(c: FtpConn, path: str, files: bool) -> Entries:
    """(name, size if known) of the files (or directories) MLSD lists in ``path``."""
    out: Entries = []
    for name, facts in c.ftp.mlsd(path):
        kind = facts.get("type", "").lower()
        if kind in ("cdir", "pdir") or name in (".", ".."):
            continue
        if files != (kind == "file"):
            continue
        size = facts.get("size", "")
        # isascii: str.isdigit() accepts digits int() refuses, such as "²".
        out.append((name, int(size) if files and size.isascii() and size.isdigit() else None))
    return out


def binary(c: FtpConn) -> None:
    """Back to binary mode (after a listing, which ftplib does in ASCII)."""
    try:
        c.ftp.voidcmd("TYPE I")
    except ftplib.all_errors:
        c.broken = True


def parse_stat(reply: str) -> Entries | None:
    """The regular files of a ``STAT dir`` reply, or None unless every line is an
    ``ls -l`` line between a 211/212/213 first and last line."""
    lines = reply.splitlines()
    out: Entries = []
    ok = len(lines) >= 2 and lines[0][:4] in ("211-", "212-", "213-") and \
        lines[-1][:3] == lines[0][:3]
    for line in lines[1:-1] if ok else []:
        line = line.strip()
        if not line or line.startswith("total "):
            continue
        m = LS_LINE.fullmatch(line)
        if m is None:
            return None
        if m.group(1) == "-":  # a regular file (subdirectories, links: not ours)
            out.append((m.group(3), int(m.group(2))))
    return out if ok else None


def is_stale(e: BaseException) -> bool:
    """Whether ``e`` means a pooled connection went stale while idle."""
    if isinstance(e, ftplib.error_temp):
        return str(e)[:3] == "421"
    return isinstance(e, STALE)


def close_quietly(ftp: ftplib.FTP, polite: bool = False) -> None:
    """Close a connection; with ``polite``, say QUIT first (briefly)."""
    if polite and ftp.sock is not None:
        try:
            # Bounded: closing must not wait a full timeout on a hung server.
            ftp.sock.settimeout(min(2.0, ftp.sock.gettimeout() or 2.0))
            ftp.quit()
            return
        except ftplib.all_errors:
            pass
    try:
        ftp.close()
    except OSError:
        pass


def translate(e: BaseException, what: str, location: str, timeout: float,
              scrub: Callable[[str], str]) -> BackendError:
    """The contract's error for an ftplib or socket failure of ``what``."""
    where = f"{what} on {location}"
    if isinstance(e, ftplib.error_perm | ftplib.error_temp):
        msg = scrub(str(e))
        code = msg[:3]
        if code in ("530", "532"):
            return PermanentError(f"{location}: login refused ({msg})")
        if code in ("552", "452"):
            return PermanentError(f"{where}: server storage is full ({msg})")
        if code == "421":
            return TransientError(f"{where}: server is closing the connection ({msg})")
        if isinstance(e, ftplib.error_temp):
            return TransientError(f"{where}: {msg}")
        return PermanentError(f"{where}: {msg}")
    if isinstance(e, ssl.SSLCertVerificationError):
        return PermanentError(
            f"{location}: TLS certificate not trusted ({e.verify_message})"
        )
    if isinstance(e, TimeoutError):
        return TransientError(f"{where}: timed out after {timeout:g}s")
    if isinstance(e, ConnectionRefusedError):
        return TransientError(f"{location}: connection refused")
    if isinstance(e, EOFError | ConnectionError):
        return TransientError(f"{where}: connection lost")
    if isinstance(e, ftplib.Error):
        return TransientError(f"{where}: unexpected server reply ({scrub(str(e))})")
    text = scrub(getattr(e, "strerror", None) or str(e) or type(e).__name__)
    return TransientError(f"{where}: {text}")
