"""Time to serve a command while a tier is away (docs/reliability.md, issue 8 item 7).

A two-tier vault (speed vault + bench/ftp_server.py on loopback) holding one
2 MB snapshot; for each situation the wall time of ``snapshots``,
``restore latest`` and ``backup --no-sync`` (median of ``--runs``), with the
default reconnect settings and the default key derivation, interpreter start
included::

    python bench/tierwait.py [--runs 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.run import FtpServer, free_port  # noqa: E402

PASSWORD = "bench tierwait passphrase"
COMMANDS = {"snapshots": ["snapshots"], "restore latest": ["restore", "latest", "{target}"],
            "backup --no-sync": ["backup", "--no-sync", "{src}"]}


class Mute:
    """Accepts connections on a port and never answers."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tv = [str(Path(sys.executable).parent / "tiervault")]
    work = Path(tempfile.mkdtemp(prefix="tv-tierwait-"))
    env = dict(os.environ, TIERVAULT_PASSWORD=PASSWORD)
    env.pop("TIERVAULT_INSECURE_TEST_KDF", None)
    home, speed, src = work / "home", work / "speed", work / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(2 << 20))
    port = free_port()
    server = FtpServer(work / "ftp", port, work / "ftp.log")
    server.start()

    def run(cmd: list[str]) -> tuple[float, int]:
        n = len(list(work.glob("restore-*")))
        full = tv + ["--home", str(home)] + [
            c.format(target=str(work / f"restore-{n}"), src=str(src)) for c in cmd]
        t0 = time.monotonic()
        p = subprocess.run(full, env=env, capture_output=True, timeout=300)
        return time.monotonic() - t0, p.returncode

    subprocess.run([*tv, "--home", str(home), "init", str(speed), server.url("vault")],
                   env=env, check=True, capture_output=True)
    subprocess.run([*tv, "--home", str(home), "backup", str(src)], env=env, check=True,
                   capture_output=True)
    results: dict[str, dict[str, float]] = {}

    def measure(situation: str) -> None:
        row = {}
        for name, cmd in COMMANDS.items():
            times = []
            for _ in range(args.runs):
                took, rc = run(cmd)
                if rc != 0:
                    raise SystemExit(f"{situation}: {name} exited {rc}")
                times.append(took)
            row[name] = round(statistics.median(times), 2)
        results[situation] = row
        print(situation, row, flush=True)

    try:
        measure("both tiers online")
        server.stop()
        measure("FTP server killed")
        mute = Mute(port)
        measure("server accepts connections, never answers")
        mute.close()
        server.start()
        subprocess.run([*tv, "--home", str(home), "sync"], env=env, capture_output=True)
        speed.rename(work / "unplugged")
        measure("speed vault unplugged")
    finally:
        server.stop()
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
