"""``tiervault console serve``: migrations, TLS, the setup code, uvicorn.

It prints (stdout, one line each): ``listening on URL``, ``fingerprint SHA256:<hex>``
(HTTPS) and, while no user exists, ``setup code: CODE``. DIR/serve.json keeps the URL
and the fingerprint for `console token create` on the same host.
"""

from __future__ import annotations

import fcntl
import gc
import ipaddress
import json
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiervault.console.errors import BadValue

DEFAULT_PORT = 8443
# Garbage collection of a console holding thousands of long-polls: a full collection
# scans every live object (~100 per held device; 500,000 at 5,000 devices: 0.4-0.5 s
# with every request waiting, measured every ~10 s with the defaults 700/10/10). Objects
# die by reference counting; the cycles that need the collector are young and die in
# the young generations. So: the start-up objects are frozen (never scanned again) and
# a full collection runs 100 times less often.
GC_THRESHOLDS = (700, 10, 1000)


@dataclass
class ServeOptions:
    """The options of ``console serve``."""

    data_dir: Path
    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    database_url: str | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure_http: bool = False
    interval: int = 60
    public_url: str | None = None
    package: str = "tiervault"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (``[v6]:PORT`` too) into its parts."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadValue(f"--listen {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listening_socket(host: str, port: int) -> socket.socket:
    """The console's socket, bound and listening; BadValue (one line) when the address
    cannot be had (in use, not this machine's, a privileged port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise BadValue(f"cannot listen on {host}:{port}: {e.strerror or e} (is another "
                       "program using the port? choose another with --listen HOST:PORT)"
                       ) from None
    sock.set_inheritable(True)
    return sock


def _say(line: str) -> None:
    print(line, flush=True)


def read_serve_info(data_dir: Path) -> dict[str, str | None]:
    """What the last ``serve`` of DIR wrote about itself (URL, fingerprint), or {}."""
    try:
        data = json.loads((data_dir / "serve.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def hold_data_dir(data_dir: Path) -> int:
    """Lock DIR for this process (released when it exits); refuse if another serve has it.

    Two ``serve`` processes on one SQLite store would race for its write lock, and the
    second would overwrite serve.json (the URL that ``token create`` prints) with its own.
    """
    fd = os.open(data_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        live = read_serve_info(data_dir)
        where = f" (pid {live.get('pid')}, {live.get('url')})" if live else ""
        raise BadValue(f"another console serve is running on {data_dir}{where}: stop it "
                       "first, or give this one its own --data DIR") from None
    return fd


def run(opts: ServeOptions) -> None:
    """Start the console and serve until SIGTERM / SIGINT."""
    import uvicorn

    from tiervault.console.app import create_app
    from tiervault.console.context import AppContext, Settings
    from tiervault.console.services import users
    from tiervault.console.store.migrate import upgrade
    from tiervault.console.tls import ensure_self_signed, fingerprint_file

    host, port = parse_listen(opts.listen)
    if (opts.cert is None) != (opts.key is None):
        raise BadValue("--cert and --key go together")
    sock = listening_socket(host, port)   # before anything is announced or created
    port = sock.getsockname()[1]   # port 0: the one the system chose
    opts.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if opts.database_url is None:   # SQLite in DIR: one process (PostgreSQL: several)
        lock = hold_data_dir(opts.data_dir)  # noqa: F841 - held until the process exits
    settings = Settings(data_dir=opts.data_dir, database_url=opts.database_url,
                        interval=opts.interval, https=not opts.insecure_http)
    ctx = AppContext.create(settings)
    upgrade(ctx.db)
    ssl: dict[str, str] = {}
    if not opts.insecure_http:
        cert, key = (opts.cert, opts.key) if opts.cert and opts.key else \
            ensure_self_signed(opts.data_dir, host)
        settings.fingerprint = fingerprint_file(cert)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    scheme = "http" if opts.insecure_http else "https"
    shown = host if host not in ("0.0.0.0", "::") else socket.getfqdn()
    settings.public_url = opts.public_url or f"{scheme}://{shown}:{port}"
    settings.package = opts.package
    with ctx.db.session() as s:
        if users.count(s) == 0:
            settings.setup_code = f"{secrets.token_hex(3)}-{secrets.token_hex(3)}"
    if opts.insecure_http and not is_loopback(host):
        print("WARNING: tiervault console: plain HTTP on a network address: credentials and "
              "reports travel unencrypted; use HTTPS (drop --insecure-http)",
              file=sys.stderr, flush=True)
    info = {"url": settings.public_url, "fingerprint": settings.fingerprint,
            "package": settings.package, "pid": os.getpid()}
    (opts.data_dir / "serve.json").write_text(json.dumps(info))
    _say(f"listening on {scheme}://{host}:{port} (devices dial {settings.public_url})")
    if settings.fingerprint:
        _say(f"fingerprint {settings.fingerprint}")
    if settings.setup_code:
        _say(f"setup code: {settings.setup_code} (open {settings.public_url}/setup, "
             "or run: tiervault console user add NAME --data DIR)")
    app = create_app(ctx)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            access_log=False, timeout_keep_alive=75,
                            timeout_graceful_shutdown=5,  # held long-polls: no 55 s stop
                            lifespan="on", **ssl)  # type: ignore[arg-type]
    tune_gc()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            ctx.waker.release_all()   # held long-polls answer now: a quick, quiet stop

    Server(config).run(sockets=[sock])


def tune_gc() -> None:
    """Freeze what start-up made and make full collections rare (see GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
