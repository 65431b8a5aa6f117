"""Check-in and long-poll answered without the framework's routing (pure ASGI).

Every device makes these two requests all the time (10,000 devices: ~170 check-ins and
~200 polls a second); routing, dependency solving and request objects cost as much CPU as
the requests' own work. This middleware answers exactly ``POST AGENT_PREFIX/checkin`` and
``GET AGENT_PREFIX/commands`` (with no query, or ``wait=<seconds>`` only) with the same
code (api/agent_core.py) and the same errors as the FastAPI routes; anything else, and
any query it does not read plainly, goes on to the application.
It sits inside BodyLimit and SecurityHeaders, so size limits and headers are unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tiervault.console.api.agent_core import AgentCore
from tiervault.console.errors import ConsoleError, Refused
from tiervault.protocol.messages import AGENT_PREFIX, ProtocolError, to_json

CHECKIN = f"{AGENT_PREFIX}/checkin"
COMMANDS = f"{AGENT_PREFIX}/commands"
_JSON = (b"content-type", b"application/json")


def _bearer(scope: Scope) -> str | None:
    """As api.errors.bearer, on the raw headers."""
    for k, v in scope["headers"]:
        if k == b"authorization":
            scheme, _, token = v.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return str(token.strip())
    return None


def _wait(query: bytes) -> float | None:
    """``wait`` of ``wait=N`` (or 0 for no query); None for anything else."""
    if not query:
        return 0.0
    name, sep, value = query.partition(b"=")
    if name != b"wait" or not sep or not value or len(value) > 16 or b"&" in value:
        return None
    try:
        wait = float(value)
    except ValueError:
        return None
    return wait if math.isfinite(wait) else None


async def _send(send: Send, status: int, body: bytes,
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Receive) -> bytes:
    parts = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        parts.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(parts)


class AgentFastPath:
    """Pure ASGI middleware: answers check-ins and long-polls itself."""

    def __init__(self, app: ASGIApp, core: AgentCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == CHECKIN and method == "POST":
                await self._answer(send, self._checkin(scope, receive))
                return
            if path == COMMANDS and method == "GET":
                wait = _wait(scope.get("query_string", b""))
                if wait is not None:
                    await self._answer(send, self._poll(scope, receive, wait))
                    return
        await self.app(scope, receive, send)

    async def _checkin(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        body = await _body(receive)
        return 200, to_json(await self.core.checkin(_bearer(scope), body))

    async def _poll(self, scope: Scope, receive: Receive, wait: float) -> tuple[int, bytes]:
        batch = await self.core.poll(_bearer(scope), wait,
                                     Request(scope, receive).is_disconnected)
        return (204, b"") if batch is None else (200, to_json(batch))

    async def _answer(self, send: Send, work: Awaitable[tuple[int, bytes]]) -> None:
        """Run ``work`` (a coroutine of (status, body)) and send its answer, or the JSON
        error the application's handlers (api/errors.py) would have sent."""
        extra: tuple[tuple[bytes, bytes], ...] = ()
        try:
            status, body = await work
        except ConsoleError as e:
            status, body = e.status, _error(str(e))
            if type(e) is Refused:
                extra = ((b"www-authenticate", b"Bearer"),)
        except ProtocolError as e:
            status, body = 400, _error(str(e))
        except RecursionError:
            status, body = 400, _error("payload nested too deeply")
        except UnicodeDecodeError:
            status, body = 400, _error("payload is not UTF-8")
        except ConnectionError:
            return
        if status == 204:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await _send(send, status, body, extra)


def _error(message: str) -> bytes:
    # As starlette's JSONResponse renders it.
    return json.dumps({"error": message}, ensure_ascii=False, allow_nan=False,
                      indent=None, separators=(",", ":")).encode("utf-8")
