"""HTTPS to the console with the certificate pinned by SHA-256 fingerprint.

The console's certificate is self-signed, so the usual CA check cannot apply:
instead the connection is opened, the peer's certificate hashed, and nothing is
sent (not even the credential) unless the hash is the one pinned at enrolment.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tiervault.errors import TierVaultError
from tiervault.protocol.messages import AGENT_PREFIX, MAX_BODY

EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5


class ConsoleUnreachable(TierVaultError):
    """The console did not answer (network, DNS, TLS handshake, timeout)."""

    exit_code = EXIT_UNREACHABLE


class ConsoleRefused(TierVaultError):
    """The console refused the request (credential, token) or its certificate is not the
    pinned one."""

    exit_code = EXIT_REFUSED


class ConsoleFailed(TierVaultError):
    """The console answered with an error other than a refusal."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def fingerprint_of(der: bytes) -> str:
    """``SHA256:<hex>`` of a DER certificate."""
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def peer_fingerprint(url: str, timeout: float = 10.0) -> str:
    """The fingerprint of the certificate the console at ``url`` presents now."""
    conn = _open(url, timeout)
    try:
        return _peer(conn)
    finally:
        conn.close()


def _open(url: str, timeout: float) -> http.client.HTTPConnection:
    p = urlsplit(url)
    host = p.hostname or ""
    try:
        if p.scheme == "https":
            ctx = ssl.create_default_context()
            # Self-signed: trust comes from the pinned fingerprint, checked before sending.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, p.port or 443, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, p.port or 80, timeout=timeout)
        conn.connect()
    except TimeoutError:
        raise ConsoleUnreachable(f"the console at {url} did not accept the connection within "
                                 f"{timeout:g} s: check that it is running and not hung"
                                 ) from None
    except (OSError, ssl.SSLError) as e:
        raise ConsoleUnreachable(f"cannot reach the console at {url}: {e}") from None
    return conn


def _peer(conn: http.client.HTTPConnection) -> str:
    sock = conn.sock
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    der = sock.getpeercert(binary_form=True)
    if not der:
        raise ConsoleRefused("the console presented no certificate")
    return fingerprint_of(der)


@dataclass
class AgentClient:
    """Requests to the agent routes; JSON in and out."""

    url: str
    fingerprint: str | None
    credential: str | None = None
    timeout: float = 30.0

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float | None = None, bearer: str | None = None) -> Any:
        """One request to ``AGENT_PREFIX + path``; the parsed JSON answer."""
        if body is not None and len(body) > MAX_BODY:
            raise ConsoleFailed(413, "request larger than the protocol allows")
        conn = _open(self.url, timeout or self.timeout)
        try:
            if urlsplit(self.url).scheme == "https":
                seen = _peer(conn)
                if self.fingerprint and seen != self.fingerprint:
                    raise ConsoleRefused(
                        f"the console at {self.url} presents certificate {seen}, not the "
                        f"pinned {self.fingerprint}; refusing to talk to it (enrol again if "
                        "the console's certificate was really replaced)")
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            token = bearer or self.credential
            if token:
                headers["Authorization"] = f"Bearer {token}"
            base = urlsplit(self.url).path.rstrip("/")
            try:
                conn.request(method, base + AGENT_PREFIX + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read(MAX_BODY * 8 + 1)
            except (TimeoutError, OSError, http.client.HTTPException) as e:
                hint = ""
                if isinstance(e, http.client.RemoteDisconnected) and \
                        urlsplit(self.url).scheme == "http":
                    hint = " (if the console serves HTTPS, use an https:// URL)"
                raise ConsoleUnreachable(f"the console at {self.url} did not answer: "
                                         f"{e or type(e).__name__}{hint}") from None
        finally:
            conn.close()
        if resp.status in (401, 403):
            hint = ("; backups go on locally and the daemon keeps trying; if this device "
                    f"was revoked, enrol it again: tiervault enrol {self.url} --token TOKEN"
                    ) if resp.status == 401 and bearer is None and self.credential else ""
            raise ConsoleRefused(f"the console refused the request ({resp.status}: "
                                 f"{_detail(data)}){hint}")
        if resp.status >= 400:
            raise ConsoleFailed(resp.status, f"the console answered {resp.status}: "
                                             f"{_detail(data)}")
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise ConsoleFailed(resp.status, "the console's answer is not JSON") from None


def _detail(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return data[:200].decode(errors="replace") or "no detail"
    for key in ("error", "detail"):   # the console's {"error": ...}; a framework's detail
        if isinstance(doc, dict) and key in doc:
            return str(doc[key])[:300]
    return str(doc)[:300]
