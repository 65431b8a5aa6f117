"""Checks of values that come from outside (agent payloads, API bodies, CLI arguments).

protocol.parse checks the shape; these check types and bounds, so nothing odd is stored.
"""

from __future__ import annotations

from typing import Any

from tiervault.console.errors import BadValue
from tiervault.protocol.messages import MAX_NAME, MAX_TEXT

MAX_INT = 2**62


def text_value(value: Any, what: str, limit: int = MAX_TEXT, optional: bool = False
               ) -> str | None:
    """A string of at most ``limit`` characters (None allowed when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadValue(f"{what}: expected text")
    if len(value) > limit:
        raise BadValue(f"{what}: longer than {limit} characters")
    if "\x00" in value:
        raise BadValue(f"{what}: contains a NUL character")
    return value


def name_value(value: Any, what: str) -> str:
    """A non-empty name of at most MAX_NAME characters, stripped."""
    text = text_value(value, what, MAX_NAME)
    assert text is not None
    text = text.strip()
    if not text:
        raise BadValue(f"{what}: empty")
    return text


def int_value(value: Any, what: str, optional: bool = False, low: int = 0,
              high: int = MAX_INT) -> int | None:
    """An integer in [low, high] (not a bool)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"{what}: expected an integer")
    if not low <= value <= high:
        raise BadValue(f"{what}: out of range")
    return value


def number_value(value: Any, what: str, optional: bool = False) -> float | None:
    """A finite number (int or float, not a bool)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(f"{what}: expected a number")
    f = float(value)
    if f != f or f in (float("inf"), float("-inf")) or abs(f) > MAX_INT:
        raise BadValue(f"{what}: out of range")
    return f


def json_value(value: Any, what: str, depth: int = 6, budget: list[int] | None = None
               ) -> Any:
    """A JSON value of bounded depth and size (a command's params, a result, a set)."""
    if budget is None:
        budget = [20_000]
    budget[0] -= 1
    if budget[0] < 0:
        raise BadValue(f"{what}: too large")
    if depth < 0:
        raise BadValue(f"{what}: nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int_value(value, what, low=-MAX_INT)
    if isinstance(value, float):
        return number_value(value, what)
    if isinstance(value, str):
        return text_value(value, what, MAX_TEXT * 16)
    if isinstance(value, list):
        return [json_value(v, what, depth - 1, budget) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[text_value(k, what, MAX_NAME)] = json_value(v, what, depth - 1, budget)
        return out
    raise BadValue(f"{what}: not a JSON value")


def object_value(value: Any, what: str, optional: bool = True) -> dict[str, Any] | None:
    """A bounded JSON object."""
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise BadValue(f"{what}: expected an object")
    out: dict[str, Any] = json_value(value, what)
    return out
