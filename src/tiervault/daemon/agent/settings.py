"""The daemon's ``[console]`` table and the device credential file.

::

    [console]
    url = "https://console.example.com:8443"
    interval = 60                       # seconds between check-ins
    fingerprint = "SHA256:ab12..."      # the console certificate pinned at enrolment
    device_id = "d8f3k2"                # given by the console at enrolment

The credential (the device's secret) is not in config.toml but in
``HOME/console.credential``, mode 0600, written by ``tiervault enrol``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tiervault.errors import UsageError
from tiervault.state.config import InstallationConfig

CREDENTIAL_FILE = "console.credential"
DEFAULT_INTERVAL = 60
_KEYS = ("url", "interval", "fingerprint", "device_id")


@dataclass(frozen=True)
class ConsoleSettings:
    """Where the console is and how often to check in."""

    url: str
    interval: float = DEFAULT_INTERVAL
    fingerprint: str | None = None
    device_id: str = ""

    def to_toml(self) -> dict[str, Any]:
        """The ``[console]`` table."""
        out: dict[str, Any] = {"url": self.url, "interval": self.interval,
                               "device_id": self.device_id}
        if self.fingerprint:
            out["fingerprint"] = self.fingerprint
        return out


def normalize_fingerprint(text: str) -> str:
    """``SHA256:<64 hex>`` from any of ``SHA256:AB:CD...``, ``abcd...``; UsageError if not."""
    t = text.strip()
    if t.upper().startswith("SHA256:"):
        t = t[7:]
    t = t.replace(":", "").lower()
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise UsageError(f"{text!r} is not a SHA-256 fingerprint; give the 64 hex digits the "
                         "console printed (SHA256:...)")
    return "SHA256:" + t


def check_url(url: str) -> str:
    """A console URL (https://, or http:// for a console run with --insecure-http)."""
    p = urlsplit(url)
    if p.scheme not in ("https", "http") or not p.hostname:
        raise UsageError(f"{url!r} is not a console URL; use https://HOST[:PORT]")
    return url.rstrip("/")


def load_console(cfg: InstallationConfig, where: str = "config.toml"
                 ) -> ConsoleSettings | None:
    """The ``[console]`` table, checked; None when the installation is not enrolled."""
    raw = cfg.extra.get("console")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: console: must be a table ([console])")
    unknown = set(raw) - set(_KEYS)
    if unknown:
        raise UsageError(f"{where}: console: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(_KEYS)})")
    url = raw.get("url")
    if not isinstance(url, str):
        raise UsageError(f"{where}: console.url: is missing; run 'tiervault enrol URL --token T'")
    interval = raw.get("interval", DEFAULT_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0.1:
        raise UsageError(f"{where}: console.interval: {interval!r} is not allowed; use a "
                         "number of seconds of at least 0.1 (default 60)")
    fp = raw.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise UsageError(f"{where}: console.fingerprint: must be a string (SHA256:...)")
    dev = raw.get("device_id", "")
    if not isinstance(dev, str):
        raise UsageError(f"{where}: console.device_id: must be a string")
    return ConsoleSettings(check_url(url), float(interval),
                           normalize_fingerprint(fp) if fp else None, dev)


def save_console(cfg: InstallationConfig, cs: ConsoleSettings) -> None:
    """Put ``[console]`` into the config (the caller saves it)."""
    cfg.extra["console"] = cs.to_toml()


def write_credential(home: Path, credential: str) -> Path:
    """Write the device credential, mode 0600, atomically."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / CREDENTIAL_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(credential + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def read_credential(home: Path) -> str | None:
    """The device credential, or None if the file is missing or empty."""
    try:
        text = (home / CREDENTIAL_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None
