"""A real ``tiervault console serve`` process for the hostile-input and fuzz tests.

``start_console(dir, database_url)`` starts it over plain HTTP on a free loopback port
(SQLite in ``dir`` or the PostgreSQL database given), creates a user, an API token and an
enrolment token through the CLI, and yields a ``Console``: HTTP clients for the agent and
the management routes, ``enrol(name)``, the server's log, and ``pages()`` fetched as the
logged-in user.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import tv_env
from tests.servers.ports import free_port
from tiervault.protocol import messages as m

BOOT = "import sys; from tiervault.cli.main import main; main(sys.argv[1:])"
USER, PASSWORD = "admin", "hostile test password 1"


def console_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``tiervault console ARGS`` in a fresh interpreter (never raises on exit codes)."""
    return subprocess.run([sys.executable, "-c", BOOT, "console", *args], capture_output=True,
                          text=True, env=tv_env(), timeout=timeout)


def find_secret(obj: Any, prefix: str) -> str:
    """The first string starting with ``prefix`` anywhere in a JSON value."""
    if isinstance(obj, str) and obj.startswith(prefix):
        return obj
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
    for v in items:
        with contextlib.suppress(LookupError):
            return find_secret(v, prefix)
    raise LookupError(f"no {prefix}... in {obj!r}")


@dataclass
class Enrolled:
    """A device enrolled through the agent route."""

    device_id: str
    credential: str


@dataclass
class Console:
    """A running console and what the tests need of it."""

    base: str
    log_path: Path
    api_token: str
    enrol_token: str
    http: httpx.Client = field(init=False)
    api: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base, timeout=60)
        self.api = httpx.Client(base_url=self.base, timeout=60,
                                headers={"authorization": f"Bearer {self.api_token}"})

    def close(self) -> None:
        self.http.close()
        self.api.close()

    def log(self) -> str:
        """Everything the serve process printed so far."""
        return self.log_path.read_text(errors="replace")

    def enrol(self, name: str) -> Enrolled:
        """Enrol a device called ``name`` with the module's enrolment token."""
        req = m.EnrolRequest(token=self.enrol_token, name=name, host="host", os="linux",
                             version="1.0")
        r = self.http.post(f"{m.AGENT_PREFIX}/enrol", content=m.to_json(req),
                           headers={"content-type": "application/json"})
        assert r.status_code == 200, (r.status_code, r.text)
        resp = m.parse(m.EnrolResponse, r.content)
        return Enrolled(resp.device_id, resp.credential)

    def pages(self, *paths: str) -> list[str]:
        """The HTML of ``paths`` as the logged-in user ([] when there is no login page)."""
        with httpx.Client(base_url=self.base, timeout=60, follow_redirects=True) as web:
            page = web.get("/login")
            if page.status_code == 404:
                return []
            form = {"name": USER, "password": PASSWORD, "next": "/"}
            hit = re.search(r'name="csrf_token"\s+value="([^"]*)"', page.text)
            headers = {"origin": self.base}
            if hit:
                form["csrf_token"] = hit.group(1)
                headers["x-csrf-token"] = hit.group(1)
            r = web.post("/login", data=form, headers=headers)
            assert r.status_code == 200, (r.status_code, r.text[:500])
            out = []
            for p in paths:
                r = web.get(p)
                assert r.status_code == 200 and "/login" not in str(r.url), (p, r.status_code)
                out.append(r.text)
            return out


@contextlib.contextmanager
def serve(data: Path, database_url: str | None) -> Iterator[tuple[str, Path]]:
    """A bare ``console serve`` process over HTTP on a free port; yields (base URL, log)."""
    store = ["--data", str(data)] + (["--database-url", database_url] if database_url else [])
    port = free_port()
    log_path = data / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", BOOT, "console", "serve", *store,
             "--listen", f"127.0.0.1:{port}", "--insecure-http"],
            stdout=log, stderr=subprocess.STDOUT, env=tv_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(base, proc, log_path)
        yield base, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def admin(data: Path, database_url: str | None) -> str:
    """Create the user (once per store) and a new API token for it; the token."""
    store = ["--data", str(data)] + (["--database-url", database_url] if database_url else [])
    pw = data / "password"
    if not pw.exists():
        pw.write_text(PASSWORD + "\n")
        ok(console_cli("user", "add", USER, "--password-file", str(pw), *store))
    return find_secret(json.loads(ok(console_cli("api-token", "create", USER, "--json",
                                                 *store))), "tva_")


def enrol_token(base: str, api: str, uses: int = 1000) -> str:
    """A new enrolment token of customer "hostile" (through the remote CLI)."""
    out = ok(console_cli("token", "create", "--customer", "hostile", "--uses", str(uses),
                         "--ttl", "24h", "--json", "--url", base, "--token", api))
    return find_secret(json.loads(out), "tve_")


@contextlib.contextmanager
def start_console(data: Path, database_url: str | None) -> Iterator[Console]:
    """A serve process with a user, an API token and an enrolment token (1000 uses)."""
    with serve(data, database_url) as (base, log_path):
        api = admin(data, database_url)
        c = Console(base, log_path, api, enrol_token(base, api))
        try:
            yield c
        finally:
            c.close()


def ok(p: subprocess.CompletedProcess[str]) -> str:
    """stdout of a CLI run that must succeed."""
    assert p.returncode == 0, (p.args, p.returncode, p.stdout, p.stderr)
    return p.stdout


def wait_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the console answers HTTP (fail when the process ends first)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{base}/api/openapi.json", timeout=2)
            return
        time.sleep(0.2)
    raise AssertionError(f"console did not answer: {log.read_text(errors='replace')[-3000:]}")
