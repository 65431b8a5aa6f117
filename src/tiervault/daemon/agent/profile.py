"""An enrolment token's profile, applied to the installation when it enrols.

A profile is JSON (the console stores it with the token)::

    {"sets": {"home": {"paths": ["/home"], "excludes": ["*.tmp"],
                       "schedules": [{"days": ["mon-fri"], "time": "12:30"}],
                       "retention": {"keep_daily": 7}}},
     "retention": {"keep_daily": 7, "keep_weekly": 4},
     "throttle": [{"tier": 2, "upload": "2MB"}],
     "tiers": ["/var/backups/tiervault", "ftp://backup@nas.example/{host}"]}

- ``sets``: tables as ``[sets.NAME]`` of config.toml; a set the installation
  already has is kept as it is (the machine's own settings win).
- ``retention``: given to every profile set without a retention table of its own.
- ``throttle``: ``[[throttle]]`` rules, set when the installation has none.
- ``tiers``: URL templates (``{host}``, ``{name}``, ``{device_id}``, ``{customer}``,
  ``{site}``; each value made one safe path component), used only when the
  installation has no vault yet: enrolment then
  creates one there (it needs the passphrase: TIERVAULT_PASSWORD or
  --password-file). An installation with tiers keeps its own.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tiervault.daemon.sets import parse_set
from tiervault.errors import UsageError
from tiervault.protocol.profile import profile_problem
from tiervault.state.config import InstallationConfig


def _check(profile: Any) -> dict[str, Any]:
    if (problem := profile_problem(profile)) is not None:
        raise UsageError(f"the token's profile: {problem}")
    return profile or {}


def check_all(cfg: InstallationConfig, profile: Any, values: dict[str, str]) -> None:
    """Refuse a profile that would not apply, before anything is written: its shape, its
    tier templates, its sets and its throttle rules, tried on a copy of ``cfg``."""
    tier_urls(profile, values)
    trial = InstallationConfig.from_toml(cfg.to_toml(), "config.toml")
    apply_sets(trial, profile)
    if _check(profile).get("throttle"):
        trial.extra.pop("throttle", None)
        apply_throttle(trial, profile)


def _path_safe(value: str) -> str:
    """A name as one path component: a device named ``a/../b`` or ``<x>`` must not pick
    another directory of the tier (anything but letters, digits, ``.``, ``_``, ``-``
    becomes ``-``; ``.`` and ``..`` are refused as such)."""
    out = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:100]
    return "-" if out.strip(".") == "" else out


def tier_urls(profile: Any, values: dict[str, str]) -> list[str]:
    """The profile's tier templates filled in (``{host}`` etc.)."""
    tiers = _check(profile).get("tiers") or []
    if not isinstance(tiers, list) or not all(isinstance(t, str) for t in tiers):
        raise UsageError("the token's profile: tiers must be a list of URL templates")
    safe = {k: _path_safe(v) for k, v in values.items()}
    try:
        return [t.format(**safe) for t in tiers]
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"the token's profile: a tier template names {e}; use {{host}}, "
                         "{name}, {device_id}, {customer} or {site}") from None


def apply_sets(cfg: InstallationConfig, profile: Any) -> list[str]:
    """Add the profile's sets (with schedules and retention); the names added."""
    p = _check(profile)
    sets = p.get("sets") or {}
    if not isinstance(sets, dict):
        raise UsageError("the token's profile: sets must be an object of set tables")
    default_ret = p.get("retention")
    have = cfg.extra.setdefault("sets", {})
    added = []
    for name, table in sets.items():
        if name in have:
            continue
        doc = copy.deepcopy(table)
        if isinstance(doc, dict) and default_ret and "retention" not in doc:
            doc["retention"] = copy.deepcopy(default_ret)
        parse_set(name, doc)   # a bad set is refused before anything is written
        have[name] = doc
        added.append(name)
    if not have:
        cfg.extra.pop("sets", None)
    return added


def apply_throttle(cfg: InstallationConfig, profile: Any) -> bool:
    """Set the profile's throttle rules if the installation has none; True if set."""
    rules = _check(profile).get("throttle")
    if not rules or cfg.extra.get("throttle"):
        return False
    cfg.extra["throttle"] = copy.deepcopy(rules)
    InstallationConfig.from_toml(cfg.to_toml(), "the token's profile")   # checks the rules
    return True
