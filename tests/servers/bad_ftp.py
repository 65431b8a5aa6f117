"""FTP servers that misbehave, for tests: pyftpdlib with handler subclasses, as a subprocess.

As a script::

    python tests/servers/bad_ftp.py --root DIR --port N --user U --password P
        --mode MODE [--armed-file F] [--limit BYTES]

Modes (each only while ``--armed-file`` exists, or always if none is given; the
armed file may name the ``--garbage`` kind to use from now on):

``hang``
    a data transfer (upload or download) that passes ``--limit`` bytes stops
    dead: the session's thread sleeps, nothing more is read, sent or answered;
``truncate``
    uploads keep only their first ``--limit`` bytes, and the server still
    answers ``226`` as if all was well (a full disk on a lying server);
``garbage-list``
    MLSD, NLST, LIST and STAT of a directory answer with junk (``--garbage``: invalid UTF-8, broken
    facts and absurd sizes, path tricks, an over-long line);
``refuse-login``
    every login is answered ``530``;
``size-lies``
    ``SIZE`` answers ``213 1`` for every file, whatever its size (a hostile
    server that hopes the client trusts it and reads what RETR sends).

``BadFtpServerProcess`` runs it like ``FtpServerProcess`` runs the good one
(same root layout, same URL form), so a vault made on a good server can be
served by a bad one afterwards, or the misbehaviour switched on by creating
the armed file.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.servers.ftp_server import FtpServerProcess

_SCRIPT = Path(__file__).resolve()
_HOST = "127.0.0.1"
MODES = ("hang", "truncate", "garbage-list", "refuse-login", "size-lies")
#: How long a "hung" session sleeps (the test kills the server long before).
HANG_SECONDS = 3600.0


GARBAGE_KINDS = ("binary", "facts", "names", "long")


def garbage_listing(kind: str, seed: int = 7) -> bytes:
    """A directory listing no server should send.

    ``binary``: random bytes, not UTF-8; ``facts``: broken MLSD facts (a size of
    "²", of 10^29, negative, missing); ``names``: path tricks and control bytes in
    names; ``long``: a line far longer than any client accepts.
    """
    rnd = random.Random(seed)
    junk = bytes(rnd.randrange(256) for _ in range(600))
    if kind == "binary":
        return b"type=file;size=5; \xff\xfe\xfd not utf-8\r\n" + junk
    if kind == "facts":
        lines = [
            "type=file;size=\u00b2; " + "a0" * 32,  # a Unicode digit that is no number
            "type=file;size=99999999999999999999999999999; " + "ab" * 32,
            "type=file;size=-5; " + "cd" * 32,
            "type=file;size=; " + "ce" * 32,
            "type=file;size=12;" + "ef" * 32,  # no space before the name
            "no facts at all",
            ";;;;====;;; ",
            "type=cdir; .",
            "type=file;size=0x10; " + "f0" * 32,
        ]
    elif kind == "names":
        lines = [
            "type=dir; ../../../../etc",
            "type=file;size=3; ../../../../etc/passwd",
            "type=file;size=3; a/b/c",
            "type=file;size=3; \x00\x00\x00",
            "type=file;size=3; \x1b[31mred",
            "type=file;size=3; " + "A" * 64,
            "type=file;size=3; " + "ab" * 33,
            "type=file;size=3; .." + "ab" * 31,
        ]
    elif kind == "long":
        lines = ["type=file;size=4; " + "x" * 20_000]
    else:
        raise ValueError(kind)
    return ("\r\n".join(lines) + "\r\n").encode()


class BadFtpServerProcess(FtpServerProcess):
    """``FtpServerProcess`` running ``bad_ftp.py`` in ``mode``.

    ``armed_file``: misbehave only while this file exists (``arm()``/``disarm()``).
    ``limit``: bytes after which ``hang`` stalls and ``truncate`` drops data.
    """

    def __init__(self, root: str | Path, mode: str, *, armed_file: str | Path | None = None,
                 limit: int = 64 * 1024, garbage: str = "binary", **kw: Any) -> None:
        if mode not in MODES or garbage not in GARBAGE_KINDS:
            raise ValueError(f"unknown mode {mode!r} or garbage {garbage!r}")
        self.mode = mode
        self.garbage = garbage
        self.armed_file = Path(armed_file) if armed_file is not None else None
        self.limit = limit
        super().__init__(root, **kw)

    def arm(self, garbage: str | None = None) -> None:
        """Start misbehaving (needs ``armed_file``); ``garbage`` switches the listing kind."""
        assert self.armed_file is not None
        self.armed_file.write_text(garbage or "")

    def disarm(self) -> None:
        """Behave again (sessions already hung stay hung)."""
        assert self.armed_file is not None
        self.armed_file.unlink(missing_ok=True)

    def start(self, timeout: float = 15.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        cmd = [sys.executable, str(_SCRIPT), "--root", str(self.root), "--port", str(self.port),
               "--auth-delay", str(self.auth_delay), "--mode", self.mode,
               "--limit", str(self.limit), "--garbage", self.garbage,
               "--user", self.user, "--password", self.password]
        if self.armed_file is not None:
            cmd += ["--armed-file", str(self.armed_file)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_SCRIPT.parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        import socket

        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"bad ftp server exited with {self._proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection((_HOST, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"bad ftp server did not listen on {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        # Hung sessions would make a polite shutdown wait: end it at once.
        self.kill()


def main(argv: list[str] | None = None) -> None:
    """Run a misbehaving pyftpdlib server until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--armed-file")
    ap.add_argument("--limit", type=int, default=64 * 1024)
    ap.add_argument("--garbage", choices=GARBAGE_KINDS, default="binary")
    ap.add_argument("--auth-delay", type=float, default=0.1)
    args = ap.parse_args(argv)

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.log import config_logging
    from pyftpdlib.servers import ThreadedFTPServer

    config_logging(level=logging.WARNING)
    mode, limit, armed_file = args.mode, args.limit, args.armed_file

    def armed() -> bool:
        return armed_file is None or os.path.exists(armed_file)

    def garbage_kind() -> str:
        """``--garbage``, unless the armed file names another kind."""
        try:
            with open(armed_file or "", encoding="ascii") as f:
                kind = f.read().strip()
        except (OSError, ValueError):
            kind = ""
        return kind if kind in GARBAGE_KINDS else str(args.garbage)

    def hang() -> None:
        threading.Event().wait(HANG_SECONDS)

    class Truncating:
        """A file object that keeps only the first ``limit`` bytes written to it."""

        def __init__(self, f: Any) -> None:
            self._f = f
            self._left = limit

        def write(self, data: bytes) -> int:
            keep = data[:max(0, self._left)]
            self._left -= len(keep)
            self._f.write(keep)
            return len(data)  # "all written"

        def __getattr__(self, name: str) -> Any:
            return getattr(self._f, name)

    class BadFS(AbstractedFS):  # type: ignore[misc]
        def open(self, filename: str, mode: str) -> Any:
            f = super().open(filename, mode)
            if mode.startswith("w") and mode_is("truncate") and armed():
                return Truncating(f)
            return f

    def mode_is(name: str) -> bool:
        return mode == name

    class BadDTP(DTPHandler):  # type: ignore[misc]
        def handle_read(self) -> None:
            if mode_is("hang") and armed() and self.tot_bytes_received > limit:
                hang()
            super().handle_read()

        handle_read_event = handle_read  # the base class binds its own as the fast path

        def initiate_send(self) -> None:
            if mode_is("hang") and armed() and self.tot_bytes_sent > limit:
                hang()
            super().initiate_send()

    class BadHandler(FTPHandler):  # type: ignore[misc]
        dtp_handler = BadDTP
        abstracted_fs = BadFS
        use_sendfile = False  # so that downloads go through initiate_send

        def ftp_PASS(self, line: str) -> None:
            if mode_is("refuse-login") and armed() and not self.authenticated and self.username:
                self.respond("530 Login incorrect.")
                self.username = ""
                return
            super().ftp_PASS(line)

        def _garbage(self, path: str, cmd: str) -> str | None:
            if not self.fs.isdir(path):
                self.respond("550 No such directory.")
                return None
            self.push_dtp_data(garbage_listing(garbage_kind()), cmd=cmd)
            return path

        def ftp_MLSD(self, path: str) -> str | None:
            if mode_is("garbage-list") and armed():
                return self._garbage(path, "MLSD")
            return super().ftp_MLSD(path)  # type: ignore[no-any-return]

        def ftp_NLST(self, path: str) -> str | None:
            if mode_is("garbage-list") and armed():
                return self._garbage(path, "NLST")
            return super().ftp_NLST(path)  # type: ignore[no-any-return]

        def ftp_LIST(self, path: str) -> str | None:
            if mode_is("garbage-list") and armed():
                return self._garbage(path, "LIST")
            return super().ftp_LIST(path)  # type: ignore[no-any-return]

        def ftp_SIZE(self, path: str) -> str | None:
            if mode_is("size-lies") and armed() and self.fs.isfile(path):
                self.respond("213 1")
                return path
            return super().ftp_SIZE(path)  # type: ignore[no-any-return]

        def ftp_STAT(self, path: str) -> str | None:
            # STAT DIR lists on the control connection: junk there too.
            if path and mode_is("garbage-list") and armed():
                if not self.fs.isdir(path):
                    self.respond("550 No such directory.")
                    return None
                junk = garbage_listing(garbage_kind()).decode("utf-8", "replace")
                junk = " " + junk.replace("\r", "").replace("\n", "\r\n ")[:60000]
                self.push(f"213-Status of {path}:\r\n{junk}\r\n213 End of status.\r\n")
                return path
            return super().ftp_STAT(path)  # type: ignore[no-any-return]

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.root, perm="elradfmwMT")
    BadHandler.authorizer = authorizer
    BadHandler.auth_failed_timeout = args.auth_delay
    BadHandler.banner = f"tiervault misbehaving test server ({mode})."
    server = ThreadedFTPServer((_HOST, args.port), BadHandler)
    server.max_cons = 512
    server.max_cons_per_ip = 0
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
