"""Errors at the HTTP boundary: a body size limit, and a 4xx (never a 500) for bad input."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiervault.console.errors import ConsoleError, Refused
from tiervault.protocol.messages import MAX_BODY, ProtocolError


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413, a NUL
    character in the path or the query string 400."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            # No id, name or filter holds a NUL, and PostgreSQL refuses one in any text.
            await _answer(send, 400, "NUL character in the request's path or query")
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _answer(send, 413, "request body too large")
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _answer(send, 413, "request body too large")


async def _answer(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    """The handlers that turn our errors and bad input into one-line JSON 4xx answers."""

    @app.exception_handler(ConsoleError)
    async def _console(_r: Request, e: ConsoleError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if type(e) is Refused else None
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)

    @app.exception_handler(ProtocolError)
    async def _protocol(_r: Request, e: ProtocolError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=400)

    @app.exception_handler(RecursionError)
    async def _deep(_r: Request, _e: RecursionError) -> JSONResponse:
        return JSONResponse({"error": "payload nested too deeply"}, status_code=400)

    @app.exception_handler(UnicodeDecodeError)
    async def _utf8(_r: Request, _e: UnicodeDecodeError) -> JSONResponse:
        return JSONResponse({"error": "payload is not UTF-8"}, status_code=400)


def bearer(request: Request) -> str | None:
    """The token of ``Authorization: Bearer TOKEN``, or None."""
    h = request.headers.get("authorization", "")
    scheme, _, token = h.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def json_error(status: int, message: str) -> JSONResponse:
    """A one-line JSON error answer."""
    return JSONResponse({"error": message}, status_code=status)


