"""A minimal asyncio HTTP/1.1 client on raw streams, for the console fleet bench.

httpx costs too much CPU per request to simulate 10,000 devices beside the console on a
2-core machine. This speaks just what the bench needs: requests with a body of known
length, keep-alive connections, responses with Content-Length (or chunked), and a pool
of connections per server. Plain HTTP only (the bench serves with --insecure-http).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

# An idle keep-alive connection older than this is not reused: the console closes idle
# ones after 75 s (uvicorn's timeout_keep_alive), and a request sent on a connection the
# server is closing fails with nothing read: the bench's fault, not the console's.
MAX_IDLE = 30.0


class HTTPError(Exception):
    """The connection failed or the answer was not HTTP."""


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_header = f"{host}:{port}".encode()
        self.last_used = time.monotonic()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            try:
                self._reader, self._writer = await asyncio.open_connection(
                    self.host, self.port, limit=1 << 20)
            except OSError as e:
                raise HTTPError(f"connect: {e}") from e
        return self._reader, self._writer

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None

    async def request(self, method: str, path: str, headers: bytes = b"",
                      body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body); ``headers`` are extra ``Name: value\\r\\n`` lines."""
        try:
            return await self._request(method, path, headers, body)
        except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError) as e:
            self.close()
            raise HTTPError(str(e) or type(e).__name__) from e
        except BaseException:
            self.close()   # cancelled mid-request: the connection's state is unknown
            raise

    async def _request(self, method: str, path: str, headers: bytes,
                       body: bytes | None) -> tuple[int, bytes]:
        reader, writer = await self._open()
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s" % (
            method.encode(), path.encode(), self._host_header, headers)
        if body is not None:
            head += b"Content-Length: %d\r\n" % len(body)
        writer.write(head + b"\r\n" + (body or b""))
        await writer.drain()
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            data = await _read_chunked(reader)
        elif length >= 0:
            data = await reader.readexactly(length)
        elif status in (204, 304) or method == "HEAD":
            data = b""
        else:
            data = await reader.read()
            close = True
        if close:
            self.close()
        return status, data


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class Pool:
    """Up to ``size`` keep-alive connections to one server, reused last-in first-out."""

    def __init__(self, base_url: str, size: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"{base_url}: expected http://HOST:PORT")
        self.host, self.port = parts.hostname, parts.port
        self._idle: list[Conn] = []
        self._slots = asyncio.Semaphore(size)

    def connection(self) -> Conn:
        """A connection of its own (a long-poll holds one)."""
        return Conn(self.host, self.port)

    async def request(self, method: str, path: str, headers: bytes = b"",
                      body: bytes | None = None) -> tuple[int, bytes]:
        """One request on a pooled connection."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else Conn(self.host, self.port)
            if time.monotonic() - conn.last_used > MAX_IDLE:
                conn.close()   # reopened by its request
            try:
                out = await conn.request(method, path, headers, body)
            except BaseException:
                conn.close()
                raise
            conn.last_used = time.monotonic()
            self._idle.append(conn)
            return out

    def close(self) -> None:
        """Close the idle connections."""
        for c in self._idle:
            c.close()
        self._idle.clear()
