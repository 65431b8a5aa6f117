"""A real FTP/FTPS server for tests, run as a separate process.

As a script::

    python tests/servers/ftp_server.py --root DIR --port N [--user U --password P]
        [--tls --certfile F --keyfile F]

starts a pyftpdlib server on 127.0.0.1 (anonymous with write access when no
user is given). ``FtpServerProcess`` launches that script as a subprocess so
tests can kill it (SIGKILL, like a crash or a pulled cable) and start it again
on the same port; ``make_self_signed_cert`` writes a certificate for FTPS.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_SCRIPT = Path(__file__).resolve()
_HOST = "127.0.0.1"


def make_self_signed_cert(directory: str | Path, name: str = "server") -> tuple[Path, Path]:
    """Write ``name.crt`` and ``name.key`` (PEM) into ``directory``.

    The certificate is valid for ``localhost`` and ``127.0.0.1`` and is its
    own CA, so passing the certificate file as a client's CA file makes
    verification succeed (and fail without it).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tiervault test server")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(_HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class FtpServerProcess:
    """A pyftpdlib server in a subprocess serving ``root``.

    ``tls=True`` makes TLS mandatory on the control and data channels, with
    ``certfile``/``keyfile`` (see ``make_self_signed_cert``) or, if none is
    given, a fresh self-signed certificate; either way ``.certfile`` is the
    file a client passes as its CA file. ``refuse_rename_over`` makes RNTO onto an existing file
    fail with 550, as some servers do. ``auth_delay`` is how long a failed
    login is answered after (pyftpdlib's default of 3 s slows tests).
    ``idle_timeout`` makes the server drop idle sessions (421) sooner than
    pyftpdlib's 300 s. ``read_limit`` (bytes per second, plain FTP only)
    makes uploads to the server slow, so a test can catch one in the middle;
    it may be changed before a ``start()``. The port is chosen once and kept
    across ``start()`` calls, so a client can reconnect to a restarted server.
    """

    def __init__(
        self,
        root: str | Path,
        port: int | None = None,
        tls: bool = False,
        user: str = "tv",
        password: str = "secret",
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        auth_delay: float = 0.1,
        refuse_rename_over: bool = False,
        idle_timeout: float | None = None,
        read_limit: int | None = None,
    ) -> None:
        if tls and certfile is None:
            # Self-signed on the fly; clients trust it via ``self.certfile``.
            certfile, keyfile = make_self_signed_cert(tempfile.mkdtemp(prefix="tv-ftp-cert-"))
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if port is None:
            # Imported here: this file also runs as a script, without the tests package.
            from tests.servers.ports import free_port

            port = free_port()
        self.port = port
        self.tls = tls
        self.user = user
        self.password = password
        self.certfile: str | Path | None = certfile
        self.keyfile: str | Path | None = keyfile
        self.auth_delay = auth_delay
        self.refuse_rename_over = refuse_rename_over
        self.idle_timeout = idle_timeout
        self.read_limit = read_limit
        fd, log = tempfile.mkstemp(prefix="tv-ftp-server-", suffix=".log")
        os.close(fd)
        #: The server's stderr (warnings, tracebacks) for post-mortems.
        self.log_path = Path(log)
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """``ftp://user:password@127.0.0.1:port`` (``ftps://`` with TLS)."""
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.user}:{self.password}@{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 15.0) -> None:
        """Start the server (again, on the same port) and wait until it accepts."""
        if self._proc is not None and self._proc.poll() is None:
            return
        cmd = [sys.executable, str(_SCRIPT), "--root", str(self.root), "--port", str(self.port),
               "--auth-delay", str(self.auth_delay)]
        if self.refuse_rename_over:
            cmd.append("--refuse-rename-over")
        if self.idle_timeout is not None:
            cmd += ["--idle-timeout", str(self.idle_timeout)]
        if self.read_limit:
            cmd += ["--read-limit", str(self.read_limit)]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password]
        if self.tls:
            cmd += ["--tls", "--certfile", str(self.certfile)]
            if self.keyfile is not None:
                cmd += ["--keyfile", str(self.keyfile)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"ftp server exited with {self._proc.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                with socket.create_connection((_HOST, self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"ftp server did not listen on {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (SIGTERM) and wait for it."""
        self._end(signal.SIGTERM)

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGSTOP) and return once the kernel shows it stopped.

        ``kill`` returns before the target has taken the signal; on a busy
        machine a request sent right after could still be answered.
        """
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)
        stat = Path(f"/proc/{self._proc.pid}/stat")
        deadline = time.monotonic() + timeout
        while stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
            if time.monotonic() > deadline:
                raise RuntimeError("ftp server did not stop on SIGSTOP")
            time.sleep(0.005)

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), like a crash."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> FtpServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _thread_safe_cwd(handler: Any) -> None:
    """pyftpdlib's CWD checks a directory by chdir-ing the whole *process* into
    it and back; in the threaded server two concurrent CWDs can leave the
    process inside a client's directory that is later deleted, and every later
    command fails. Check the directory without chdir."""

    def ftp_cwd(self: Any, path: str) -> Any:
        if not self.fs.isdir(path) or not os.access(path, os.X_OK):
            self.respond("550 No such directory.")
            return None
        self.fs.cwd = self.fs.fs2ftp(path)
        self.respond(f'250 "{self.fs.cwd}" is the current directory.')
        return path

    handler.ftp_CWD = ftp_cwd


def main(argv: list[str] | None = None) -> None:
    """Run a pyftpdlib server until terminated."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default=_HOST)
    ap.add_argument("--user")
    ap.add_argument("--password", default="")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    ap.add_argument("--auth-delay", type=float, default=0.1,
                    help="seconds before answering a failed login (pyftpdlib default 3)")
    ap.add_argument("--refuse-rename-over", action="store_true",
                    help="answer 550 to RNTO onto an existing file, like some servers")
    ap.add_argument("--idle-timeout", type=float, default=300.0,
                    help="seconds before an idle session is closed with 421")
    ap.add_argument("--read-limit", type=int, default=0,
                    help="bytes per second the server receives on a data connection")
    args = ap.parse_args(argv)

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.log import config_logging
    from pyftpdlib.servers import ThreadedFTPServer

    # Per-command INFO logging would flood the test log.
    config_logging(level=logging.WARNING)
    _thread_safe_cwd(FTPHandler)
    authorizer = DummyAuthorizer()
    perm = "elradfmwMT"
    if args.user:
        authorizer.add_user(args.user, args.password, args.root, perm=perm)
    else:
        authorizer.add_anonymous(args.root, perm=perm)

    refuse_rename_over = args.refuse_rename_over

    class RenameMixin:
        """Optionally behave like servers that will not rename onto a file."""

        def ftp_RNTO(self, path: str) -> object:
            if refuse_rename_over and self.fs.lexists(path):  # type: ignore[attr-defined]
                self._rnfr = None
                self.respond("550 File exists.")  # type: ignore[attr-defined]
                return None
            return super().ftp_RNTO(path)  # type: ignore[misc]

    handler: type[FTPHandler]
    if args.tls:
        from pyftpdlib.handlers import TLS_FTPHandler

        if not args.certfile:
            ap.error("--tls needs --certfile")

        class TlsHandler(RenameMixin, TLS_FTPHandler):  # type: ignore[misc]
            certfile = args.certfile
            keyfile = args.keyfile
            # Refuse plaintext logins and data: the client must really use TLS.
            tls_control_required = True
            tls_data_required = True

        handler = TlsHandler
    else:

        class PlainHandler(RenameMixin, FTPHandler):  # type: ignore[misc]
            pass

        handler = PlainHandler
        if args.read_limit:
            from pyftpdlib.handlers import ThrottledDTPHandler

            class SlowDTP(ThrottledDTPHandler):  # type: ignore[misc]
                read_limit = args.read_limit

            handler.dtp_handler = SlowDTP
    handler.authorizer = authorizer
    handler.auth_failed_timeout = args.auth_delay
    handler.timeout = args.idle_timeout
    handler.banner = "tiervault test server ready."
    server = ThreadedFTPServer((args.host, args.port), handler)
    server.max_cons = 512
    server.max_cons_per_ip = 0
    # SIGTERM ends serve_forever via SystemExit, which closes every session.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
