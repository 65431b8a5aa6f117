"""A real ``tiervault console serve`` (HTTPS, self-signed) for the agent's end-to-end tests.

A thin layer over ``tests.console.consolekit.ConsoleServer``: the first start
bootstraps a user and an API token through ``tiervault console``, and makes one
enrolment token (customer acme, site berlin) with the profile given. The
console's clock is moved through its offset file.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.console.consolekit import ConsoleServer, ok


class ConsoleProc:
    """The console, started, SIGKILLed and restarted on the same port and data."""

    def __init__(self, data: Path, interval: int, profile: dict[str, Any],
                 database_url: str | None = None) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.profile = profile
        self.server = ConsoleServer(data / "store", tls=True, interval=interval,
                                    database_url=database_url)
        self.tokens: dict[str, str] = {}

    @property
    def url(self) -> str:
        """Where devices and scripts reach it."""
        return self.server.url

    @property
    def fingerprint(self) -> str:
        """The certificate's SHA-256 fingerprint serve printed (at its last start)."""
        assert self.server.fingerprint
        return self.server.fingerprint

    @property
    def cert_dir(self) -> Path:
        """Where serve keeps its certificate and key."""
        return self.server.data / "tls"

    def start(self) -> ConsoleProc:
        """Start it (bootstrapping the first time) and wait until it answers."""
        self.server.start()
        if not self.tokens:
            self.server.bootstrap()
            prof = self.data / "profile.json"
            prof.write_text(json.dumps(self.profile))
            out = self.server.cli_json("token", "create", "--customer", "acme", "--site",
                                       "berlin", "--uses", "10", "--profile", str(prof))
            self.tokens = {"api": self.server.api_token, "enrol": out["token"]}
        return self

    def kill(self) -> None:
        """SIGKILL (no clean shutdown)."""
        self.server.stop(signal.SIGKILL)

    def log(self) -> str:
        """Its output so far."""
        return self.server.output()[-4000:] if self.server.out_file.exists() else ""

    def boot(self) -> dict[str, str]:
        """The API token and the enrolment token made at the first start."""
        return self.tokens

    def move_clock(self, hours: float) -> None:
        """Move the console's clock ``hours`` ahead of real time."""
        self.server.move_clock(hours * 3600)

    def devices_cli(self) -> list[dict[str, Any]]:
        """``tiervault console devices --json`` on the console's store."""
        return self.server.cli_json("devices")  # type: ignore[no-any-return]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """A management API call as a script would make it."""
        with self.server.api() as c:
            r = c.request(method, "/api/v1" + path, json=body)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()


__all__ = ["ConsoleProc", "ok"]
