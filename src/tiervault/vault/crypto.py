"""Keys and authenticated encryption.

A random master key (encryption key + id key) is wrapped in key files by a
key derived from the passphrase with scrypt; the passphrase never reaches the
vault. Every stored object is sealed with AES-256-GCM under a fresh random
nonce, with associated data that binds it to its role (so a snapshot cannot
be passed off as an index, or one blob as another).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tiervault.errors import IntegrityError, WrongKeyError

NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = NONCE_LEN + TAG_LEN
_KEYFILE_AAD = b"tiervault key file v1"
# scrypt cost of new key files: n=2^15, r=8, p=4, the work of n=2^17 p=1
# (~0.52 s here) in 2^15 * 8 * 128 B = 32 MiB of memory (docs/format.md).
# Key files written with other parameters (2^17 p=1, 2^15 p=1 before) keep
# theirs and still open; 'key passwd' writes the current defaults.
DEFAULT_SCRYPT_N = 2**15
DEFAULT_SCRYPT_P = 4
#: Environment variable that makes new key files cheap (N=2^10): for the test
#: suite only, which creates hundreds of vaults. Never set it for real vaults.
TEST_KDF_ENV = "TIERVAULT_INSECURE_TEST_KDF"
_TEST_SCRYPT_N = 2**10
# Bounds on what an untrusted key file (a hostile tier) may make us do: each
# parameter, the memory (128*n*r bytes) and the total work (n*r*p).
_MAX_SCRYPT_N = 2**20
_MAX_SCRYPT_R = 32
_MAX_SCRYPT_P = 16
_MAX_SCRYPT_NR = 2**22  # 512 MiB of memory (the default takes 32 MiB)
_MAX_SCRYPT_NRP = 2**25  # 32x the default work (~20 s here)


@dataclass(frozen=True)
class KdfParams:
    """scrypt parameters stored in a key file."""

    n: int = DEFAULT_SCRYPT_N
    r: int = 8
    p: int = DEFAULT_SCRYPT_P

    def as_dict(self) -> dict[str, int]:
        """For reports: ``{"n": ..., "r": ..., "p": ...}``."""
        return {"n": self.n, "r": self.r, "p": self.p}


#: Passphrases shorter than this get a warning (not an error) when a key file is written.
MIN_PASSPHRASE_LEN = 12


def passphrase_warnings(passphrase: str) -> list[str]:
    """Warnings about a new passphrase: one if it is short, else none."""
    if len(passphrase) >= MIN_PASSPHRASE_LEN:
        return []
    return [f"the passphrase has only {len(passphrase)} characters: anyone who gets a copy of "
            f"a key file can try passphrases offline; use {MIN_PASSPHRASE_LEN} or more "
            "(e.g. four or five random words)"]


def new_key_params(env: Mapping[str, str]) -> KdfParams:
    """The parameters for a new key file: the defaults (or the test suite's cheap ones)."""
    if env.get(TEST_KDF_ENV) == "1":
        return KdfParams(n=_TEST_SCRYPT_N, p=1)
    return KdfParams()


class MasterKey:
    """The vault's secret: an AES key for sealing and a BLAKE3 key for ids."""

    def __init__(self, material: bytes) -> None:
        if len(material) != 64:
            raise IntegrityError("master key has the wrong length")
        self.material = material
        self.enc_key = material[:32]
        self.id_key = material[32:]
        self._aead = AESGCM(self.enc_key)
        # A keyed seed for the chunker, so chunk boundaries leak nothing either.
        seed = blake3.blake3(b"chunker seed", key=self.id_key).digest(8)
        self.chunker_seed = int.from_bytes(seed, "little") & ((1 << 63) - 1)

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls(os.urandom(64))

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """The keyed hash naming a blob: reveals nothing about its content."""
        return blake3.blake3(data, key=self.id_key, max_threads=1).digest()

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt and authenticate: nonce || ciphertext || tag."""
        nonce = os.urandom(NONCE_LEN)
        return nonce + self._aead.encrypt(nonce, bytes(plaintext), aad)

    def mac(self, purpose: bytes, data: bytes) -> str:
        """A keyed MAC (hex) of ``data`` for one purpose (the vault config)."""
        sub = blake3.blake3(b"tiervault mac " + purpose, key=self.id_key).digest()
        return blake3.blake3(data, key=sub, max_threads=1).hexdigest()

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        """Decrypt ``sealed``; raise IntegrityError naming ``what`` if it fails."""
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what} is damaged (too short)")
        mv = memoryview(sealed)
        try:
            return self._aead.decrypt(bytes(mv[:NONCE_LEN]), bytes(mv[NONCE_LEN:]), aad)
        except InvalidTag:
            raise IntegrityError(f"{what} is damaged (authentication failed)") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise IntegrityError(f"{what} is damaged")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise IntegrityError(f"{what} is damaged") from None


def _kek(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return hashlib.scrypt(
        passphrase.encode("utf-8"), salt=salt, n=params.n, r=params.r, p=params.p,
        maxmem=256 * params.n * params.r + 16 * 1024 * 1024, dklen=32)


def wrap_key(master: MasterKey, passphrase: str, params: KdfParams | None = None) -> bytes:
    """Serialise a key file holding ``master`` wrapped by ``passphrase``."""
    params = params or KdfParams()
    salt = os.urandom(32)
    nonce = os.urandom(NONCE_LEN)
    data = AESGCM(_kek(passphrase, salt, params)).encrypt(nonce, master.material, _KEYFILE_AAD)
    doc = {
        "version": 1, "kdf": "scrypt", "n": params.n, "r": params.r, "p": params.p,
        "salt": _b64(salt), "nonce": _b64(nonce), "data": _b64(data),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(), "username": getpass.getuser(),
    }
    return json.dumps(doc, indent=1).encode()


def parse_key_file(raw: bytes, what: str) -> dict[str, Any]:
    """Parse and validate a key file's public fields (no passphrase needed)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        raise IntegrityError(f"{what} is damaged (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or doc.get("kdf") != "scrypt":
        raise IntegrityError(f"{what} is not a supported key file")
    for f in ("n", "r", "p"):
        if not isinstance(doc.get(f), int) or isinstance(doc.get(f), bool):
            raise IntegrityError(f"{what} is damaged ({f})")
    n, r, p = doc["n"], doc["r"], doc["p"]
    # Bound the work an untrusted file can make us do.
    if not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= _MAX_SCRYPT_R
            and 1 <= p <= _MAX_SCRYPT_P and n * r <= _MAX_SCRYPT_NR
            and n * r * p <= _MAX_SCRYPT_NRP):
        raise IntegrityError(
            f"{what} has unreasonable KDF parameters (scrypt n={n}, r={r}, p={p}; accepted: "
            f"n a power of 2 up to 2^20, r <= {_MAX_SCRYPT_R}, p <= {_MAX_SCRYPT_P}, at most "
            f"{128 * _MAX_SCRYPT_NR >> 20} MiB); remove that key file or replace it with "
            "one from 'key export'")
    return doc


def key_file_params(doc: dict[str, Any]) -> KdfParams:
    """The scrypt parameters of a key file parsed by ``parse_key_file``."""
    return KdfParams(doc["n"], doc["r"], doc["p"])


def unwrap_key(raw: bytes, passphrase: str, what: str) -> MasterKey:
    """Open a key file; raise WrongKeyError if the passphrase does not fit."""
    doc = parse_key_file(raw, what)
    salt = _unb64(doc.get("salt"), what)
    nonce = _unb64(doc.get("nonce"), what)
    data = _unb64(doc.get("data"), what)
    if len(nonce) != NONCE_LEN or len(salt) < 16:
        raise IntegrityError(f"{what} is damaged")
    kek = _kek(passphrase, salt, key_file_params(doc))
    try:
        material = AESGCM(kek).decrypt(nonce, data, _KEYFILE_AAD)
    except InvalidTag:
        raise WrongKeyError("wrong passphrase") from None
    return MasterKey(material)
