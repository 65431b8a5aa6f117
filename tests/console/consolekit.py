"""A real ``tiervault console serve`` process for tests, the CLI, and a tiny agent.

ConsoleServer starts the console as a user would (a subprocess, SQLite in a tmp dir
unless a database URL is given), waits until it answers, creates a user and an API token
through the CLI, and moves the console's clock through its offset file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.servers.ports import free_port
from tiervault.protocol.messages import AGENT_PREFIX

_BOOT = "import sys; from tiervault.cli.main import main; main(sys.argv[1:])"
PASSWORD = "console password 1"
START_TIMEOUT = 60.0


def tv_console(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None,
               input: str | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    """Run ``tiervault console ARGS`` in a fresh interpreter; never raises on exit != 0."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIERVAULT_CONSOLE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", _BOOT, "console", *map(str, args)],
                          input=input or "", capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert exit 0 and no traceback."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


class ConsoleServer:
    """One running console."""

    def __init__(self, data: Path, *, tls: bool = False, database_url: str | None = None,
                 interval: int = 60, port: int | None = None) -> None:
        self.data = data
        self.tls = tls
        self.database_url = database_url
        self.interval = interval
        self.port = port or free_port()
        self.clock_file = data.parent / f"{data.name}.clock"
        self.clock_file.write_text("0")
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.fingerprint: str | None = None
        self.setup_code: str | None = None
        self.api_token = ""
        self.out_file = data.parent / f"{data.name}.out"

    # -- life ----------------------------------------------------------------------------

    def start(self) -> ConsoleServer:
        """Start ``serve`` and wait until it answers."""
        args = ["serve", "--data", str(self.data), "--listen", f"127.0.0.1:{self.port}",
                "--interval", str(self.interval)]
        if not self.tls:
            args.append("--insecure-http")
        if self.database_url:
            args += ["--database-url", self.database_url]
        env = {**os.environ, "TIERVAULT_CONSOLE_CLOCK_FILE": str(self.clock_file)}
        out = self.out_file.open("a")
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, "console", *args],
                                     stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"console exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http().get("/api/openapi.json").status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"console did not answer:\n{self.output()}")
        for line in self.output().splitlines():
            if line.startswith("fingerprint "):
                self.fingerprint = line.split()[1]
            if line.startswith("setup code: "):
                self.setup_code = line.split()[2]
        return self

    def output(self) -> str:
        """What serve printed so far."""
        return self.out_file.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop serve (SIGKILL with ``sig=signal.SIGKILL``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def bootstrap(self) -> ConsoleServer:
        """The first user and an API token, through the CLI."""
        pw = self.data.parent / f"{self.data.name}.pw"
        pw.write_text(PASSWORD + "\n")
        ok(self.cli("user", "add", "admin", "--password-file", str(pw)))
        self.api_token = self.cli_json("api-token", "create", "admin")["token"]
        return self

    # -- clock ---------------------------------------------------------------------------

    def move_clock(self, seconds: float) -> None:
        """Set the console's clock offset (seconds after real time)."""
        self.clock_file.write_text(str(seconds))

    # -- clients -------------------------------------------------------------------------

    def http(self, token: str | None = None, timeout: float = 30) -> httpx.Client:
        """An HTTP client for the console (TLS not verified: tests pin elsewhere)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                            verify=not self.tls)

    def api(self) -> httpx.Client:
        """A management API client with the bootstrap token."""
        return self.http(self.api_token)

    def local_args(self) -> list[str]:
        """The options of a management command run on the console's store."""
        out = ["--data", str(self.data)]
        if self.database_url:
            out += ["--database-url", self.database_url]
        return out

    def cli(self, *args: str, remote: bool = False, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """``tiervault console ARGS`` on the store (or, ``remote``, over --url)."""
        where: Sequence[str] = self.local_args()
        full_env = {"TIERVAULT_CONSOLE_CLOCK_FILE": str(self.clock_file), **(env or {})}
        if remote:
            where = ["--url", self.url, "--token", self.api_token]
            if self.fingerprint:
                where = [*where, "--fingerprint", self.fingerprint]
        return tv_console(*args, *where, env=full_env)

    def cli_json(self, *args: str, remote: bool = False) -> Any:
        """``tiervault console ARGS --json``, expecting success: the parsed output."""
        return json.loads(ok(self.cli(*args, "--json", remote=remote)).stdout)

    def token(self, customer: str = "Acme", uses: int = 10, ttl: str = "24h",
              site: str | None = None) -> str:
        """A new enrolment token's secret."""
        args = ["token", "create", "--customer", customer, "--uses", str(uses), "--ttl", ttl]
        if site:
            args += ["--site", site]
        return str(self.cli_json(*args)["token"])

    def agent(self, token: str, name: str = "laptop") -> Agent:
        """A newly enrolled lightweight agent."""
        return Agent.enrol(self, token, name)


class AgentRefused(Exception):
    """The console answered an agent request with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Agent:
    """A lightweight agent speaking the protocol (not a daemon)."""

    def __init__(self, console: ConsoleServer, device_id: str, credential: str,
                 interval: int) -> None:
        self.console = console
        self.device_id = device_id
        self.credential = credential
        self.interval = interval

    @classmethod
    def enrol(cls, console: ConsoleServer, token: str, name: str) -> Agent:
        """Enrol with ``token``."""
        body = {"token": token, "name": name, "host": f"{name}.example", "os": "linux",
                "version": "0.2.0"}
        data = cls._send(console, "POST", "/enrol", None, body)
        return cls(console, data["device_id"], data["credential"], data["interval"])

    @staticmethod
    def _send(console: ConsoleServer, method: str, path: str, credential: str | None,
              body: Any = None, params: dict[str, Any] | None = None,
              timeout: float = 30) -> Any:
        with console.http(credential, timeout=timeout) as c:
            content = None if body is None else json.dumps(body).encode()
            r = c.request(method, AGENT_PREFIX + path, content=content, params=params)
        if r.status_code >= 400:
            raise AgentRefused(r.status_code, r.text)
        return r.json() if r.content else None

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """One authenticated agent request."""
        return self._send(self.console, method, path, self.credential, body, **kw)

    def checkin(self, tiers: list[dict[str, Any]] | None = None,
                running: dict[str, Any] | None = None, **extra: Any) -> Any:
        """A check-in."""
        body = {"version": "0.2.0", "os": "linux", "host": "h.example",
                "tiers": tiers if tiers is not None else
                [{"url": "/vault", "state": "online", "revision": 1, "role": "speed-vault"}],
                "running": running, **extra}
        return self.call("POST", "/checkin", body)

    def report(self, *reports: dict[str, Any]) -> list[str]:
        """Report sessions; the accepted ids."""
        return list(self.call("POST", "/sessions", {"reports": list(reports)})["accepted"])

    def poll(self, wait: float = 0, timeout: float = 30) -> list[dict[str, Any]]:
        """The commands waiting (long-poll ``wait`` seconds)."""
        return list(self.call("GET", "/commands", params={"wait": wait},
                              timeout=timeout)["commands"])

    def update(self, command_id: str, state: str, result: dict[str, Any] | None = None,
               session_id: str | None = None) -> Any:
        """Say what became of a command."""
        return self.call("POST", f"/commands/{command_id}",
                         {"state": state, "result": result, "session_id": session_id})


def session(session_id: str, status: str = "success", kind: str = "backup",
            started: str = "", ended: str | None = "", **extra: Any) -> dict[str, Any]:
    """A session report (times default to now, real time)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC).isoformat()
    return {"session_id": session_id, "kind": kind, "status": status,
            "started": started or now, "ended": now if ended == "" else ended, **extra}


def tls_fingerprint(host: str, port: int) -> str:
    """``SHA256:<hex>`` of the certificate a server presents."""
    import hashlib

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw) as s:
        return "SHA256:" + hashlib.sha256(s.getpeercert(binary_form=True) or b"").hexdigest()
