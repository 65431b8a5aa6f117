"""The console's TLS certificate: self-signed on first start (kept in DIR/tls/), or given.

Devices pin the certificate's SHA-256 fingerprint (``SHA256:<hex>``, of the DER bytes)
at enrolment and refuse any other certificate afterwards.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tiervault.console.errors import BadValue

CERT_DAYS = 3650


def fingerprint_der(der: bytes) -> str:
    """``SHA256:<hex>`` of a certificate's DER bytes."""
    return "SHA256:" + hashlib.sha256(der).hexdigest()


def fingerprint_file(cert_file: Path) -> str:
    """The fingerprint of the (first) certificate of a PEM file."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as e:
        raise BadValue(f"cannot read the certificate {cert_file}: {e}") from None
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def normalise_fingerprint(text: str) -> str:
    """``SHA256:<hex>`` from what a user may paste (colons, upper case, no prefix)."""
    t = text.strip()
    if t.upper().startswith("SHA256:"):
        t = t[7:]
    t = t.replace(":", "").lower()
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise BadValue(f"fingerprint {text!r}: expected SHA256:<64 hex digits>")
    return "SHA256:" + t


def _names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for n in {socket.gethostname(), socket.getfqdn(), host}:
        if not n or n in ("0.0.0.0", "::", "localhost", "127.0.0.1"):
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            names.append(x509.DNSName(n))
    return names


def ensure_self_signed(data_dir: Path, host: str) -> tuple[Path, Path]:
    """DIR/tls/cert.pem and key.pem, created on first start."""
    tls = data_dir / "tls"
    cert_file, key_file = tls / "cert.pem", tls / "key.pem"
    if cert_file.exists() and key_file.exists():
        return cert_file, key_file
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tiervault console")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file
