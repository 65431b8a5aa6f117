"""The agent's client against a real HTTPS server: the pinned certificate is checked
before anything (the credential included) is sent; another certificate is refused."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tiervault.daemon.agent.client import (
    AgentClient,
    ConsoleRefused,
    ConsoleUnreachable,
    fingerprint_of,
    peer_fingerprint,
)


def _cert(tmp: Path, name: str) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cpath, kpath = tmp / f"{name}.crt", tmp / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath, cert.public_bytes(serialization.Encoding.DER)


class _Handler(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"commands": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_a: object) -> None:
        return None


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[tuple[str, bytes, list[str]]]:
    cpath, kpath, der = _cert(tmp_path, "console")
    seen: list[str] = []
    handler = type("H", (_Handler,), {"seen": seen})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cpath, kpath)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{srv.server_address[1]}", der, seen
    srv.shutdown()
    srv.server_close()


def test_the_pinned_certificate_is_accepted(server: tuple[str, bytes, list[str]]) -> None:
    url, der, seen = server
    assert peer_fingerprint(url) == fingerprint_of(der)
    client = AgentClient(url, fingerprint_of(der), "tvd_secret")
    assert client.request("GET", "/commands?wait=0") == {"commands": []}
    assert seen == ["Bearer tvd_secret"]


def test_another_certificate_is_refused_before_sending(
        server: tuple[str, bytes, list[str]], tmp_path: Path) -> None:
    url, _der, seen = server
    _c, _k, other = _cert(tmp_path, "impostor")
    client = AgentClient(url, fingerprint_of(other), "tvd_secret")
    with pytest.raises(ConsoleRefused, match="not the pinned"):
        client.request("GET", "/commands?wait=0")
    assert seen == []          # the credential never left the device


def test_a_console_that_is_away_is_unreachable(tmp_path: Path) -> None:
    client = AgentClient("https://127.0.0.1:9", None, "tvd_secret", timeout=2)
    with pytest.raises(ConsoleUnreachable):
        client.request("GET", "/commands?wait=0")
