"""The grammar of sizes, rates and day names, shared by config.toml and the command line.

It lives at the bottom layer so that a config file can be validated when it is
loaded (every rule of ``[[throttle]]``, before any transfer) with the very
functions the throttle and the CLI use later.
"""

from __future__ import annotations

import re

from tiervault.errors import UsageError

#: Day names in weekday() order.
DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}
RATE_HELP = "a rate such as 512KB, 2MB or 1.5MiB (per second; 0 = unlimited)"


def parse_rate(text: str | int | float | None) -> float | None:
    """'2MB' / '512KiB' / 1000 -> bytes per second; None or 0 -> unlimited."""
    if text is None:
        return None
    if isinstance(text, bool):  # a TOML boolean is not a rate
        raise UsageError(f"invalid rate {text!r}: use e.g. 512KB, 2MB, 1.5MiB")
    if isinstance(text, int | float):
        if text < 0:
            raise UsageError(f"invalid rate {text!r}: a rate cannot be negative")
        return float(text) or None
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*?)(/s)?\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"invalid rate {text!r}: use e.g. 512KB, 2MB, 1.5MiB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return value or None


def parse_days(days: list[str]) -> frozenset[int]:
    """['mon', 'fri'] -> {0, 4}."""
    try:
        return frozenset(DAYS[d.lower()[:3]] for d in days)
    except (KeyError, AttributeError):
        raise UsageError(f"invalid day in {days}: use mon..sun") from None
