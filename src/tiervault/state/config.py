"""The installation's TOML config: which tiers hold the vault, and settings."""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from tiervault.errors import UsageError

CONFIG_NAME = "config.toml"


@dataclass
class Settings:
    """Tunables with their defaults; the CLI may override some per run."""

    retry_attempts: int = 10
    retry_delay: float = 0.5
    wait_timeout: float | None = None
    tier_unavailable_days: int = 14
    workers: int = 0  # 0 = decide from the CPU count
    pack_size_mib: int = 8
    compression_level: int = 3
    read_only: bool = False  # a restore-only installation (attach --read-only)


@dataclass
class InstallationConfig:
    """What ``config.toml`` holds."""

    installation_id: str = ""
    vault_id: str = ""
    tiers: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> dict[str, Any]:
        """The TOML document (None values dropped: TOML has no null)."""
        settings = {k: v for k, v in asdict(self.settings).items() if v is not None}
        doc: dict[str, Any] = {
            "installation_id": self.installation_id,
            "vault": {"id": self.vault_id, "tiers": list(self.tiers)},
            "settings": settings,
        }
        doc.update(self.extra)
        return doc

    @classmethod
    def from_toml(cls, doc: dict[str, Any], where: str) -> InstallationConfig:
        """Parse and validate the TOML document."""
        doc = dict(doc)
        vault = doc.pop("vault", {})
        raw_settings = doc.pop("settings", {})
        inst = doc.pop("installation_id", "")
        if not isinstance(vault, dict) or not isinstance(raw_settings, dict):
            raise UsageError(f"{where}: [vault] and [settings] must be tables")
        tiers = vault.get("tiers", [])
        if not isinstance(tiers, list) or not all(isinstance(t, str) for t in tiers):
            raise UsageError(f"{where}: vault.tiers must be a list of URLs")
        known = Settings.__dataclass_fields__
        unknown = set(raw_settings) - set(known)
        if unknown:
            raise UsageError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
        try:
            settings = Settings(**raw_settings)
        except TypeError as e:
            raise UsageError(f"{where}: {e}") from None
        return cls(str(inst), str(vault.get("id", "")), tiers, settings, doc)


def load_config(home: Path) -> InstallationConfig | None:
    """Read ``home/config.toml``; None if the installation has none yet."""
    path = home / CONFIG_NAME
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        return None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    return InstallationConfig.from_toml(doc, str(path))


def save_config(home: Path, cfg: InstallationConfig) -> None:
    """Write the config atomically with mode 0600 (it may hold credentials)."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / CONFIG_NAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        tomli_w.dump(cfg.to_toml(), f)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
