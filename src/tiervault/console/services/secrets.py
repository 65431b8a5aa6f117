"""Secrets: 32 random bytes, urlsafe base64, prefixed; stored as SHA-256 hashes.

They are high-entropy, so a fast hash is right (argon2 per agent request would cost
~50 ms of CPU each).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

DEVICE_PREFIX = "tvd_"
API_PREFIX = "tva_"
ENROL_PREFIX = "tve_"


def new_secret(prefix: str) -> str:
    """A new secret with its prefix."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a.encode(), b.encode())
