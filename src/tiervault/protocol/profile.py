"""The shape of an enrolment token's profile, checked where the console takes it (token
create) and again where the device applies it (``tiervault enrol``).

The device checks the details (schedules, retention, throttle rules) against its own
configuration rules; here only the shape is checked, so that a profile the device would
refuse is refused before a token is handed out with it.
"""

from __future__ import annotations

import re
import string
from typing import Any

PROFILE_KEYS = ("sets", "retention", "throttle", "tiers")
TEMPLATE_FIELDS = ("host", "name", "device_id", "customer", "site")
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@")


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) and x for x in value)


def _template_problem(t: Any) -> str | None:
    if not isinstance(t, str) or not t.strip():
        return "tiers must be a list of URL templates (non-empty strings)"
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
    except ValueError as e:
        return f"tier template {redact_template(t)!r}: {e}"
    bad = [n for n in names if n not in TEMPLATE_FIELDS]
    if bad:
        return (f"a tier template names {{{bad[0]}}}; use "
                + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS))
    return None


def _set_problem(name: str, table: Any) -> str | None:
    if not isinstance(table, dict):
        return f"set {name!r} must be an object (a [sets.NAME] table)"
    if not _str_list(table.get("paths")) or not table["paths"]:
        return f"set {name!r}: paths must be a non-empty list of paths"
    for key in ("excludes",):
        if key in table and not _str_list(table[key]):
            return f"set {name!r}: {key} must be a list of patterns"
    if "schedules" in table and not (isinstance(table["schedules"], list)
                                     and all(isinstance(x, dict) for x in table["schedules"])):
        return f"set {name!r}: schedules must be a list of objects"
    if "retention" in table and not isinstance(table["retention"], dict):
        return f"set {name!r}: retention must be an object"
    return None


def profile_problem(profile: Any) -> str | None:
    """What is wrong with the profile's shape (None: nothing; ``None`` profile is fine)."""
    if profile is None:
        return None
    if not isinstance(profile, dict):
        return "the profile must be a JSON object"
    unknown = set(profile) - set(PROFILE_KEYS)
    if unknown:
        return (f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                f"(known: {', '.join(PROFILE_KEYS)})")
    tiers = profile.get("tiers")
    if tiers is not None:
        if not isinstance(tiers, list):
            return "tiers must be a list of URL templates"
        for t in tiers:
            if (problem := _template_problem(t)) is not None:
                return problem
    sets = profile.get("sets")
    if sets is not None:
        if not isinstance(sets, dict):
            return "sets must be an object of set tables"
        for name, table in sets.items():
            if (problem := _set_problem(str(name), table)) is not None:
                return problem
    if "retention" in profile and not isinstance(profile["retention"], dict):
        return "retention must be an object (keep_daily, keep_weekly, ...)"
    throttle = profile.get("throttle")
    if throttle is not None and not (isinstance(throttle, dict) or (
            isinstance(throttle, list) and all(isinstance(x, dict) for x in throttle))):
        return "throttle must be a list of rule objects"
    return None


def redact_template(url: str) -> str:
    """A tier template with its password (``user:PASSWORD@``) replaced by ``***``."""
    return _PASSWORD.sub(r"\1:***@", url)


def redacted(profile: Any) -> Any:
    """The profile as shown to people and scripts: passwords in tier templates hidden."""
    if not isinstance(profile, dict) or not isinstance(profile.get("tiers"), list):
        return profile
    return {**profile, "tiers": [redact_template(t) if isinstance(t, str) else t
                                 for t in profile["tiers"]]}
