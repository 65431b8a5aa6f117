"""An HTTP proxy in front of an S3 server (moto) that fails a fraction of the requests.

``S3FaultProxy(upstream, rate=0.25)`` listens on 127.0.0.1 and forwards every
request to ``upstream``; a seeded random fraction ``rate`` of them is answered
with an S3 error instead, half ``500 InternalError`` and half ``503 SlowDown``
(the throttling answer of AWS). ``when`` says whether a failed request was
first forwarded (``"after"``: the server did the work, the client is told it
failed, so a retry repeats it) or not (``"before"``), or a random mix
(``"both"``, the default). Counters tell a test how much was injected.
``ignore_range = True`` makes it drop the ``Range`` header of requests, like a
server that ignores ranges and answers every GET with the whole object.

It runs in a thread of the test process (the CLI under test is a subprocess,
so it connects over real TCP like to any S3 endpoint); as a script it runs in
the foreground::

    python tests/servers/s3_fault_proxy.py --upstream http://127.0.0.1:PORT --rate 0.25
"""

from __future__ import annotations

import argparse
import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade", "expect"}
_ERRORS = [
    (500, "InternalError", "We encountered an internal error. Please try again."),
    (503, "SlowDown", "Please reduce your request rate."),
]


class S3FaultProxy:
    """A fault-injecting HTTP/1.1 proxy to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str, rate: float = 0.25, seed: int = 1,
                 when: str = "both") -> None:
        if when not in ("before", "after", "both"):
            raise ValueError(when)
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rate = rate
        self.when = when
        self._rnd = random.Random(seed)
        self._lock = threading.Lock()
        #: Requests seen, and errors injected, by kind.
        self.stats = {"requests": 0, "forwarded": 0, "faults_before": 0, "faults_after": 0,
                      "500": 0, "503": 0}
        self.enabled = True
        self.ignore_range = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy",
                                        daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def _decide(self) -> tuple[str | None, tuple[int, str, str]]:
        with self._lock:
            self.stats["requests"] += 1
            err = self._rnd.choice(_ERRORS)
            if not self.enabled or self._rnd.random() >= self.rate:
                return None, err
            when = self.when if self.when != "both" else self._rnd.choice(["before", "after"])
            self.stats[f"faults_{when}"] += 1
            self.stats[str(err[0])] += 1
            return when, err

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _error(self, status: int, code: str, message: str) -> None:
                body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>tvfault</RequestId>"
                        "</Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _proxy(self) -> None:
                body = self._body()
                when, err = proxy._decide()
                if when == "before":
                    self._error(*err)
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                  timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_BY_HOP
                               and not (proxy.ignore_range and k.lower() == "range")}
                    if body or self.command in ("PUT", "POST"):
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    proxy._count("forwarded")
                    if when == "after":
                        self._error(*err)  # the work was done; the client hears it failed
                        return
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() in _HOP_BY_HOP or k.lower() in ("content-length", "date",
                                                                     "server"):
                            continue
                        self.send_header(k, v)
                    if self.command == "HEAD":
                        # HEAD answers carry the object's length but no body.
                        length = resp.getheader("Content-Length")
                        if length is not None:
                            self.send_header("Content-Length", length)
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy

        return Handler

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    """Run the proxy until interrupted."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rate", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--when", choices=("before", "after", "both"), default="both")
    args = ap.parse_args(argv)
    proxy = S3FaultProxy(args.upstream, args.rate, args.seed, args.when)
    print(proxy.endpoint, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.close()


if __name__ == "__main__":
    main()
