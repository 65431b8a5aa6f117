"""The pages' Jinja2 environment: autoescape always on, and the filters the templates use."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, Undefined
from markupsafe import Markup, escape

from tiervault.console.clock import Clock, parse_iso
from tiervault.protocol.messages import SESSION_STATUSES

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: Any) -> str:
    """1536 -> '1.5 KiB'; None -> ''."""
    if n is None or isinstance(n, Undefined):
        return ""
    value = float(n)
    for unit in UNITS:
        if abs(value) < 1024 or unit == UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # pragma: no cover


def _as_time(t: Any) -> datetime | None:
    if t is None or isinstance(t, Undefined) or t == "":
        return None
    if isinstance(t, datetime):
        return t
    if isinstance(t, int | float):
        return datetime.fromtimestamp(t, UTC)
    try:
        return parse_iso(str(t))
    except ValueError:
        return None


def ago(seconds: float) -> str:
    """A short age: '40 s', '5 min', '3 h', '2 d'."""
    s = abs(seconds)
    if s < 90:
        text = f"{int(s)} s"
    elif s < 90 * 60:
        text = f"{int(s // 60)} min"
    elif s < 48 * 3600:
        text = f"{int(s // 3600)} h"
    else:
        text = f"{int(s // 86400)} d"
    return text + (" ago" if seconds >= 0 else " from now")


def when_filter(clock: Clock) -> Callable[[Any], str]:
    """'2026-12-02 04:10 UTC (3 h ago)', by the console's clock; '' for none."""
    def when(t: Any) -> str:
        at = _as_time(t)
        if at is None:
            return ""
        return f"{at:%Y-%m-%d %H:%M} UTC ({ago((clock.now() - at).total_seconds())})"
    return when


def duration(s: Any) -> str:
    """A session's duration from its started/ended fields."""
    start, end = _as_time(_get(s, "started")), _as_time(_get(s, "ended"))
    if start is None or end is None:
        return ""
    secs = max(0, int((end - start).total_seconds()))
    return f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def compact(value: Any) -> str:
    """Parameters or a result as short JSON text (escaped by the template)."""
    if value is None or value == {} or isinstance(value, Undefined):
        return ""
    text = json.dumps(value, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def bar_cells(days: list[tuple[str, str | None]]) -> Markup:
    """The 28-day bar's cells as HTML: one <i> per day, its class the day's worst status.

    Built here rather than in a template loop (10,000 devices, 50 rows a page, 28 cells
    a row); statuses outside SESSION_STATUSES show as no session, so nothing a device
    sends reaches the markup unescaped.
    """
    out = []
    for day, status in days:
        known = status if status in SESSION_STATUSES else None
        label = known or "no session"
        out.append(f'<i class="d-{known or "none"}" title="{escape(day)}: {label}"></i>')
    return Markup("".join(out))


def make_env(clock: Clock, static_version: str) -> Environment:
    """The environment of one console app (no module-level state)."""
    # auto_reload off: templates ship with the package, and the dashboard includes
    # several per row (each reload check is a stat).
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True,
                      auto_reload=False)
    env.filters.update(size=size, when=when_filter(clock), duration=duration,
                       params=compact, result=compact)
    env.globals["bar_cells"] = bar_cells
    env.globals["static"] = lambda path: f"/static/{path}?v={static_version}"
    return env
