"""A real console process for the agent's end-to-end tests.

Until ``tiervault console serve`` is on this branch, the console is started the
way serve does it: migrations, then uvicorn serving ``create_app`` over HTTPS
with a self-signed certificate (its SHA-256 fingerprint is what devices pin).
The first start creates a user, an API token and one enrolment token (with the
profile given) and writes them to ``DATA/boot.json``. The console's clock is
moved through ``TIERVAULT_CONSOLE_CLOCK_FILE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.servers.ftp_server import free_port, make_self_signed_cert

_BOOT = r'''
import json, sys
from pathlib import Path
import uvicorn
from tiervault.console.app import create_app
from tiervault.console.context import AppContext, Settings
from tiervault.console.services import tokens, users
from tiervault.console.services.actor import SYSTEM
from tiervault.console.store.migrate import upgrade

data, port, interval = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
profile = json.loads(sys.argv[4])
ctx = AppContext.create(Settings(data_dir=data, interval=interval, long_poll_max=5))
upgrade(ctx.db)
boot = data / "boot.json"
if not boot.exists():
    with ctx.db.session() as s:
        users.add(s, ctx.clock, SYSTEM, "admin", "a long test password 1")
        _t, api = tokens.create_api(s, ctx.clock, SYSTEM, "admin")
        _e, enrol = tokens.create_enrol(s, ctx.clock, SYSTEM, "acme", "berlin", 3600, 10,
                                        profile)
    boot.write_text(json.dumps({"api": api, "enrol": enrol}))
uvicorn.run(create_app(ctx), host="127.0.0.1", port=port, log_level="warning",
            ssl_certfile=str(data / "console.crt"), ssl_keyfile=str(data / "console.key"))
'''


class ConsoleProc:
    """The console, started, SIGKILLed and restarted on the same port and data."""

    def __init__(self, data: Path, interval: int, profile: dict[str, Any]) -> None:
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self.profile = profile
        self.port = free_port()
        self.clock_file = data / "clock-offset"
        cert, key = make_self_signed_cert(data, "console")
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        self.fingerprint = "SHA256:" + hashlib.sha256(der).hexdigest()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = data / "console.log"
        _ = key

    @property
    def url(self) -> str:
        """Where devices and scripts reach it."""
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> ConsoleProc:
        """Start it and wait until it answers."""
        env = dict(os.environ, TIERVAULT_CONSOLE_CLOCK_FILE=str(self.clock_file))
        log = open(self.logfile, "ab")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(self.data), str(self.port), str(self.interval),
             json.dumps(self.profile)], stdout=log, stderr=log, env=env,
            stdin=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the console exited:\n{self.log()}")
            try:
                if (self.data / "boot.json").exists():
                    httpx.get(self.url + "/api/openapi.json", verify=False, timeout=2)
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"the console did not start:\n{self.log()}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL (no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        """Its output so far."""
        return self.logfile.read_text(errors="replace")[-4000:] if self.logfile.exists() else ""

    def boot(self) -> dict[str, str]:
        """The API token and the enrolment token made at the first start."""
        return json.loads((self.data / "boot.json").read_text())  # type: ignore[no-any-return]

    def move_clock(self, hours: float) -> None:
        """Move the console's clock ``hours`` ahead of real time."""
        self.clock_file.write_text(str(hours * 3600))

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """A management API call as a script would make it."""
        r = httpx.request(method, self.url + "/api/v1" + path, json=body, verify=False,
                          timeout=30,
                          headers={"Authorization": f"Bearer {self.boot()['api']}"})
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()
