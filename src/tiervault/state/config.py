"""The installation's TOML config: which tiers hold the vault, and settings.

Every value is checked when the file is loaded (types, ranges, booleans as TOML
booleans only, ``[[throttle]]`` rules and their tiers), so that a wrong value is
one line naming the file, the key and what is allowed, never a traceback in the
middle of a backup nor a silently different behaviour (``read_only = "no"`` is
an error, not a restore-only installation). The daemon's tables (``[daemon]``,
``[sets.*]``) are checked by the daemon's own parser; see ``config_check`` in
the CLI, which runs both.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import time as dtime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import tomli_w

from tiervault.errors import UsageError
from tiervault.state.units import DAYS, RATE_HELP, parse_rate

CONFIG_NAME = "config.toml"

#: Top-level keys of config.toml and who reads them. An unknown one is a typo
#: (``[throtle]``) that would otherwise be ignored without a word.
TOP_LEVEL_KEYS = ("installation_id", "vault", "settings", "credentials", "throttle", "daemon",
                  "sets", "console")
_CREDENTIAL_KEYS = ("password", "access_key", "secret_key")
_THROTTLE_KEYS = ("tier", "upload", "download", "free_days", "window")
_WINDOW_KEYS = ("days", "start", "end", "upload", "download")


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


@dataclass(frozen=True)
class _Rule:
    """What one setting accepts: an integer or a number within bounds, or a boolean."""

    kind: str  # "int", "number" or "bool"
    low: float | None = None
    high: float | None = None

    def allowed(self) -> str:
        if self.kind == "bool":
            return "true or false (a TOML boolean, without quotes)"
        what = "a whole number" if self.kind == "int" else "a number"
        if self.low is not None and self.high is not None:
            return f"{what} from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{what} of at least {self.low:g}"
        return what

    def ok(self, v: Any) -> bool:
        if self.kind == "bool":
            return isinstance(v, bool)
        if isinstance(v, bool):
            return False
        if not isinstance(v, int | float) or (self.kind == "int" and not isinstance(v, int)):
            return False
        return (self.low is None or v >= self.low) and (self.high is None or v <= self.high)


#: The accepted values of each [settings] key (restic's limits where it has one:
#: packs of 1 to 128 MiB; zstd's levels 1 to 22).
SETTING_RULES: dict[str, _Rule] = {
    "retry_attempts": _Rule("int", 1, 1000),
    "retry_delay": _Rule("number", 0, 3600),
    "wait_timeout": _Rule("number", 0),
    "tier_unavailable_days": _Rule("int", 1, 36500),
    "workers": _Rule("int", 0, 256),
    "pack_size_mib": _Rule("int", 1, 128),
    "compression_level": _Rule("int", 1, 22),
    "read_only": _Rule("bool"),
}


class ConfigError(UsageError):
    """A value in config.toml is wrong (exit 2): names the file, the key and what is allowed."""

    def __init__(self, where: str, key: str, message: str) -> None:
        super().__init__(f"{where}: {key}: {message}")
        self.key = key


def bare_url(url: str) -> str:
    """A tier URL without password or query (how a [[throttle]] rule may name it)."""
    if "://" not in url:
        return os.path.abspath(os.path.expanduser(url))
    try:
        p = urlsplit(url)
    except ValueError:
        return url
    netloc = p.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    return urlunsplit((p.scheme.lower(), netloc, p.path, "", ""))


def tier_index(selector: str | int, tiers: list[str]) -> int | None:
    """The 0-based tier a selector names: a 1-based number or a URL (password optional)."""
    sel = str(selector).strip()
    if sel.isdigit():
        n = int(sel)
        return n - 1 if 1 <= n <= len(tiers) else None
    for i, url in enumerate(tiers):
        if sel == url or bare_url(sel) == bare_url(url):
            return i
    return None


def _show(v: Any) -> str:
    """A value as it would be written in TOML (strings quoted)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def _check_settings(raw: Any, where: str) -> Settings:
    if not isinstance(raw, dict):
        raise ConfigError(where, "settings", "must be a table ([settings])")
    unknown = set(raw) - set(SETTING_RULES)
    if unknown:
        raise UsageError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(SETTING_RULES)})")
    for key, value in raw.items():
        rule = SETTING_RULES[key]
        if not rule.ok(value):
            raise ConfigError(where, f"settings.{key}", f"{_show(value)} is not allowed; use "
                              f"{rule.allowed()}")
    return Settings(**raw)


def _check_rate(v: Any, where: str, key: str) -> None:
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise ConfigError(where, key, f"{_show(v)} is not allowed; use {RATE_HELP}")
    try:
        parse_rate(v)
    except UsageError:
        raise ConfigError(where, key, f"{_show(v)} is not allowed; use {RATE_HELP}") from None


def _check_days(v: Any, where: str, key: str) -> None:
    if not isinstance(v, list) or not all(isinstance(d, str) and d.lower()[:3] in DAYS
                                          and len(d) >= 3 for d in v):
        raise ConfigError(where, key, f"{_show(v)} is not allowed; use a list of day names "
                          '("mon" .. "sun")')


def _check_time(v: Any, where: str, key: str) -> None:
    try:
        if not isinstance(v, str):
            raise ValueError
        dtime.fromisoformat(v)
    except ValueError:
        raise ConfigError(where, key, f"{_show(v)} is not allowed; use a time \"HH:MM\"") \
            from None


def _check_throttle(raw: Any, tiers: list[str], where: str) -> None:
    rules = [raw] if isinstance(raw, dict) else raw
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ConfigError(where, "throttle", "must be a list of tables ([[throttle]])")
    seen: dict[int, int] = {}
    for n, rule in enumerate(rules, 1):
        key = f"throttle[{n}]"
        unknown = set(rule) - set(_THROTTLE_KEYS)
        if unknown:
            raise ConfigError(where, key, f"unknown key(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(_THROTTLE_KEYS)})")
        sel = rule.get("tier")
        if not isinstance(sel, str | int) or isinstance(sel, bool) or str(sel).strip() == "":
            raise ConfigError(where, f"{key}.tier", "is missing or not a tier; use the tier's "
                              f"number (1 to {len(tiers)}) or its URL")
        idx = tier_index(sel, tiers)
        if idx is None:
            raise ConfigError(where, f"{key}.tier", f"{_show(sel)} is not a tier of this vault; "
                              f"use a number from 1 to {len(tiers)} or one of its URLs "
                              "(see: tiervault tiers)")
        if idx in seen:
            raise ConfigError(where, f"{key}.tier", f"tier {idx + 1} has a rule already "
                              f"(throttle[{seen[idx]}]); put both limits in one rule")
        seen[idx] = n
        for d in ("upload", "download"):
            if d in rule:
                _check_rate(rule[d], where, f"{key}.{d}")
        if "free_days" in rule:
            _check_days(rule["free_days"], where, f"{key}.free_days")
        windows = rule.get("window", [])
        if not isinstance(windows, list) or not all(isinstance(w, dict) for w in windows):
            raise ConfigError(where, f"{key}.window", "must be a list of tables "
                              "([[throttle.window]])")
        for m, w in enumerate(windows, 1):
            wkey = f"{key}.window[{m}]"
            unknown = set(w) - set(_WINDOW_KEYS)
            if unknown:
                raise ConfigError(where, wkey, f"unknown key(s) {', '.join(sorted(unknown))} "
                                  f"(known: {', '.join(_WINDOW_KEYS)})")
            for t in ("start", "end"):
                if t not in w:
                    raise ConfigError(where, f"{wkey}.{t}", 'is missing; use a time "HH:MM"')
                _check_time(w[t], where, f"{wkey}.{t}")
            if "days" in w:
                _check_days(w["days"], where, f"{wkey}.days")
            for d in ("upload", "download"):
                if d in w:
                    _check_rate(w[d], where, f"{wkey}.{d}")


def _check_credentials(raw: Any, where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(where, "credentials", 'must be a table of [credentials."URL"] tables')
    for url, entry in raw.items():
        key = f'credentials."{url}"'
        if not isinstance(entry, dict):
            raise ConfigError(where, key, "must be a table (password = \"...\", access_key, "
                              "secret_key)")
        for k, v in entry.items():
            if k not in _CREDENTIAL_KEYS:
                raise ConfigError(where, f"{key}.{k}", "unknown key; use "
                                  f"{', '.join(_CREDENTIAL_KEYS)}")
            if not isinstance(v, str):
                raise ConfigError(where, f"{key}.{k}", "must be a string (in quotes)")


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

    def remove_tier(self, idx: int) -> str:
        """Remove the tier at 0-based ``idx``; returns its URL.

        Its ``[[throttle]]`` rule goes with it, and rules naming later tiers by number
        are renumbered, so that every rule still names the tier it named (and the
        file stays valid: a rule for a tier that is gone would be refused at load).
        """
        url = self.tiers[idx]
        rules = self.extra.get("throttle")
        if isinstance(rules, dict):
            rules = [rules]
        if isinstance(rules, list):
            kept = []
            for rule in rules:
                sel = rule.get("tier", "") if isinstance(rule, dict) else ""
                at = tier_index(sel, self.tiers)
                if at == idx:
                    continue
                if at is not None and at > idx and str(sel).strip().isdigit():
                    rule["tier"] = str(at) if isinstance(sel, str) else at
                kept.append(rule)
            if kept:
                self.extra["throttle"] = kept
            else:
                self.extra.pop("throttle", None)
        del self.tiers[idx]
        return url

    @classmethod
    def from_toml(cls, doc: dict[str, Any], where: str) -> InstallationConfig:
        """Parse and validate the TOML document (ConfigError naming the key if wrong)."""
        doc = dict(doc)
        unknown = set(doc) - set(TOP_LEVEL_KEYS)
        if unknown:
            raise UsageError(f"{where}: unknown key(s) or table(s) "
                             f"{', '.join(sorted(unknown))} (known: {', '.join(TOP_LEVEL_KEYS)})")
        vault = doc.pop("vault", {})
        raw_settings = doc.pop("settings", {})
        inst = doc.pop("installation_id", "")
        if not isinstance(inst, str):
            raise ConfigError(where, "installation_id", "must be a string")
        if not isinstance(vault, dict):
            raise ConfigError(where, "vault", "must be a table ([vault])")
        unknown = set(vault) - {"id", "tiers"}
        if unknown:
            raise ConfigError(where, "vault", f"unknown key(s) {', '.join(sorted(unknown))} "
                              "(known: id, tiers)")
        if not isinstance(vault.get("id", ""), str):
            raise ConfigError(where, "vault.id", "must be a string")
        tiers = vault.get("tiers", [])
        if not isinstance(tiers, list) or not all(isinstance(t, str) and t for t in tiers):
            raise ConfigError(where, "vault.tiers", "must be a list of tier URLs (strings)")
        settings = _check_settings(raw_settings, where)
        if "credentials" in doc:
            _check_credentials(doc["credentials"], where)
        if "throttle" in doc:
            _check_throttle(doc["throttle"], tiers, where)
        for table in ("daemon", "sets", "console"):
            if table in doc and not isinstance(doc[table], dict):
                raise ConfigError(where, table, f"must be a table ([{table}])")
        return cls(inst, str(vault.get("id", "")), tiers, settings, doc)


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
