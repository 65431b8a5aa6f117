"""One way for every test server to choose its port.

``bind(0)`` hands out ports from Linux's ephemeral range, which every outgoing
connection also draws from: on four pytest workers a port chosen that way can be
taken by someone's client socket (or handed to another worker) before the server
binds it ("address already in use"). Ports here come from below that range, and
each is claimed with an exclusive file so no two workers of a run pick the same.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

_LOW, _HIGH = 20000, 32000
_CLAIM_TTL = 1800.0  # a claim older than this (a finished run) may be reused


def _claim(port: int) -> bool:
    """Claim ``port`` for this process; False when a live claim exists."""
    d = Path(tempfile.gettempdir()) / f"tiervault-test-ports-{os.getuid()}"
    d.mkdir(exist_ok=True)
    f = d / str(port)
    try:
        fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        try:
            if time.time() - f.stat().st_mtime < _CLAIM_TTL:
                return False
            f.unlink()
        except FileNotFoundError:
            pass
        return _claim_once(f)
    os.close(fd)
    return True


def _claim_once(f: Path) -> bool:
    try:
        os.close(os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that nothing listens on and no other test of this run chose."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(_LOW, _HIGH)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        if _claim(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
