"""The daemon's local control API, and the client the CLI uses.

HTTP on 127.0.0.1 (a random port unless one is asked for). Every request
carries ``Authorization: Bearer TOKEN``; the token is random per daemon start
and is written, with the port and the daemon's pid, to ``HOME/daemon.json``
(mode 0600), so only the installation's owner can drive the daemon.

Endpoints (JSON in and out):

- ``GET /status``: the daemon's state, running job, queue, schedules, tiers
- ``GET /sessions?limit=N``: the session history (jobs and syncs), newest first
- ``POST /run`` ``{"set": NAME, "no_scripts": false}``: queue a backup of a set now
- ``POST /cancel`` ``{"all": false}``: stop the running job at a safe point
  (``all``: also drop queued jobs)
- ``POST /handoff`` ``{"command": TEXT, "pid": N}``: queue a write command of
  the CLI (``cli/handoff.py``); ``GET /handoff?id=ID`` says whether it is
  queued (behind what) or granted the lock; ``POST /handoff/done``
  ``{"request_id": ID, "exit_code": N, "cancelled": false}`` gives the lock back
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from tiervault.errors import TierVaultError, UsageError

CONTROL_FILE = "daemon.json"


class ApiError(Exception):
    """An error answered to the client with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Controller(Protocol):
    """What the API drives (the daemon)."""

    def status(self) -> dict[str, Any]:
        """The daemon's state."""

    def sessions(self, limit: int) -> list[dict[str, Any]]:
        """Session history."""

    def request_run(self, set_name: str, no_scripts: bool = False) -> dict[str, Any]:
        """Queue a manual backup (ApiError if the set is unknown)."""

    def request_handoff(self, command: str, pid: int) -> dict[str, Any]:
        """Queue a command of the CLI."""

    def handoff_state(self, request_id: str) -> dict[str, Any]:
        """Where that command is."""

    def handoff_done(self, request_id: str, exit_code: int | None,
                     cancelled: bool = False) -> dict[str, Any]:
        """It ended."""

    def cancel(self, drop_queue: bool) -> dict[str, Any]:
        """Cancel the running job."""


class ControlServer:
    """Serves the API in a background thread."""

    def __init__(self, home: Path, controller: Controller, port: int = 0) -> None:
        self.home = home
        self.controller = controller
        self.token = secrets.token_urlsafe(32)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="control-api",
                                        daemon=True)

    def start(self) -> None:
        """Write the control file and serve."""
        write_control_file(self.home, {"pid": os.getpid(), "port": self.port,
                                       "token": self.token, "host": "127.0.0.1"})
        self._thread.start()

    def close(self) -> None:
        """Stop serving and remove the control file (if still ours)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        path = self.home / CONTROL_FILE
        try:
            doc = json.loads(path.read_text())
            if doc.get("token") == self.token:
                path.unlink()
        except (OSError, ValueError):
            pass

    def dispatch(self, method: str, path: str, body: dict[str, Any]) -> Any:
        """Route one request."""
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query)
        c = self.controller
        if method == "GET" and url.path == "/status":
            return c.status()
        if method == "GET" and url.path == "/sessions":
            try:
                limit = int(query.get("limit", ["50"])[0])
            except ValueError:
                raise ApiError(400, "limit must be a number") from None
            return c.sessions(max(1, min(limit, 1000)))
        if method == "POST" and url.path == "/run":
            name = body.get("set")
            if not isinstance(name, str) or not name:
                raise ApiError(400, "give the set to run: {\"set\": NAME}")
            if body.get("no_scripts"):
                return c.request_run(name, True)
            return c.request_run(name)
        if method == "POST" and url.path == "/cancel":
            return c.cancel(bool(body.get("all", False)))
        if url.path.startswith("/handoff"):
            return self._handoff(method, url.path, query, body)
        raise ApiError(404, f"no endpoint {method} {url.path}")

    def _handoff(self, method: str, path: str, query: dict[str, list[str]],
                 body: dict[str, Any]) -> Any:
        c = self.controller
        if method == "POST" and path == "/handoff":
            cmd, pid = body.get("command"), body.get("pid")
            if not isinstance(cmd, str) or not isinstance(pid, int) or isinstance(pid, bool):
                raise ApiError(400, "give {\"command\": TEXT, \"pid\": N}")
            return c.request_handoff(cmd, pid)
        if method == "GET" and path == "/handoff":
            return c.handoff_state(query.get("id", [""])[0])
        if method == "POST" and path == "/handoff/done":
            rid, code = body.get("request_id"), body.get("exit_code")
            if not isinstance(rid, str) or not (code is None or isinstance(code, int)):
                raise ApiError(400, "give {\"request_id\": ID, \"exit_code\": N}")
            return c.handoff_done(rid, code, bool(body.get("cancelled", False)))
        raise ApiError(404, f"no endpoint {method} {path}")


def _handler(server: ControlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tiervault-daemon"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the daemon logs what matters itself

        def _reply(self, status: int, doc: Any) -> None:
            data = json.dumps(doc, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, method: str) -> None:
            auth = self.headers.get("Authorization", "")
            if not hmac.compare_digest(auth.encode(), f"Bearer {server.token}".encode()):
                self._reply(401, {"error": "missing or wrong token"})
                return
            body: dict[str, Any] = {}
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                try:
                    raw = json.loads(self.rfile.read(min(n, 1 << 20)))
                except ValueError:
                    self._reply(400, {"error": "the body is not JSON"})
                    return
                if not isinstance(raw, dict):
                    self._reply(400, {"error": "the body must be a JSON object"})
                    return
                body = raw
            try:
                self._reply(200, server.dispatch(method, self.path, body))
            except ApiError as e:
                self._reply(e.status, {"error": str(e)})
            except Exception as e:  # answer, never drop the connection
                self._reply(500, {"error": f"internal error: {e!r}"})

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


def running_daemon(home: Path) -> dict[str, Any] | None:
    """The control file of a daemon that is alive for ``home`` (None if none is)."""
    try:
        doc = json.loads((home / CONTROL_FILE).read_text())
        pid = int(doc["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return dict(doc)


def write_control_file(home: Path, doc: dict[str, Any]) -> None:
    """``HOME/daemon.json`` with mode 0600, atomically."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / CONTROL_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class ControlClient:
    """Talks to the running daemon of an installation."""

    def __init__(self, home: Path, timeout: float = 30.0,
                 opener: Callable[..., Any] = urllib.request.urlopen) -> None:
        self.home = home
        self.timeout = timeout
        self._open = opener

    def _endpoint(self) -> tuple[str, str]:
        path = self.home / CONTROL_FILE
        try:
            doc = json.loads(path.read_text())
            return f"http://{doc.get('host', '127.0.0.1')}:{int(doc['port'])}", str(doc["token"])
        except FileNotFoundError:
            raise UsageError(f"no daemon is running for {self.home} (start it with "
                             "'tiervault daemon')") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TierVaultError(f"cannot read {path}: {e}") from None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API call; a clear TierVaultError if the daemon is not there or refuses."""
        base, token = self._endpoint()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        try:
            with self._open(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", str(e))
            except (ValueError, AttributeError):
                msg = str(e)
            if e.code in (400, 404):
                raise UsageError(msg) from None
            raise TierVaultError(f"the daemon refused: {msg}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise TierVaultError(f"the daemon of {self.home} does not answer ({reason}); is "
                                 "it running? (start it with 'tiervault daemon')") from None

    def status(self) -> dict[str, Any]:
        """GET /status."""
        res: dict[str, Any] = self.request("GET", "/status")
        return res

    def sessions(self, limit: int = 50) -> list[dict[str, Any]]:
        """GET /sessions."""
        res: list[dict[str, Any]] = self.request("GET", f"/sessions?limit={limit}")
        return res

    def run(self, set_name: str, no_scripts: bool = False) -> dict[str, Any]:
        """POST /run."""
        res: dict[str, Any] = self.request("POST", "/run", {"set": set_name,
                                                            "no_scripts": no_scripts})
        return res

    def handoff(self, command: str, pid: int) -> dict[str, Any]:
        """POST /handoff."""
        res: dict[str, Any] = self.request("POST", "/handoff", {"command": command, "pid": pid})
        return res

    def handoff_state(self, request_id: str) -> dict[str, Any]:
        """GET /handoff?id=ID."""
        q = urllib.parse.quote(request_id)
        res: dict[str, Any] = self.request("GET", f"/handoff?id={q}")
        return res

    def handoff_done(self, request_id: str, exit_code: int | None,
                     cancelled: bool = False) -> dict[str, Any]:
        """POST /handoff/done."""
        res: dict[str, Any] = self.request("POST", "/handoff/done", {
            "request_id": request_id, "exit_code": exit_code, "cancelled": cancelled})
        return res

    def cancel(self, drop_queue: bool = False) -> dict[str, Any]:
        """POST /cancel."""
        res: dict[str, Any] = self.request("POST", "/cancel", {"all": drop_queue})
        return res
