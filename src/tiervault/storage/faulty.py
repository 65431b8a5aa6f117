"""A fault-injecting wrapper backend, driven by rules (for tests and soak runs).

Each rule names an operation (``save``, ``load``, ``stat``, ``list``,
``remove``, ``probe`` or ``*``), optionally a file type, which matching call
it starts at (``nth``, 1-based) and how many times it fires (``times``, -1 =
forever). Kinds: ``fail`` (raise ``error``), ``hang`` (sleep ``delay`` on the
injectable clock, then raise a timeout), ``truncate`` (drop the second half),
``flip`` (flip one bit), ``partial`` (save half the bytes, then raise).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tiervault.errors import BackendError, TransientError
from tiervault.storage.base import Backend, FileInfo, FileType, Handle


@dataclass
class Rule:
    """One fault to inject."""

    op: str
    kind: str = "fail"
    nth: int = 1
    times: int = 1
    type: FileType | None = None
    error: Callable[[str], BackendError] = TransientError
    delay: float = 30.0
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def matches(self, op: str, h: Handle | FileType | None) -> bool:
        """Count a call and say whether this rule fires on it."""
        if self.op not in (op, "*"):
            return False
        t = h.type if isinstance(h, Handle) else h
        if self.type is not None and t is not self.type:
            return False
        self.seen += 1
        if self.seen < self.nth or (self.times >= 0 and self.fired >= self.times):
            return False
        self.fired += 1
        return True


class FaultyBackend(Backend):
    """Wraps ``inner`` and applies ``rules``; ``calls`` logs every operation."""

    def __init__(self, inner: Backend, rules: list[Rule] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.location = inner.location
        self.rules = list(rules or [])
        self.sleep = sleep
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, rule: Rule) -> Rule:
        """Add a rule; returns it (to inspect ``fired`` later)."""
        with self._lock:
            self.rules.append(rule)
        return rule

    def _fire(self, op: str, h: Handle | FileType | None) -> Rule | None:
        with self._lock:
            self.calls.append((op, str(h)))
            for r in self.rules:
                if r.matches(op, h):
                    return r
        return None

    def _raise(self, r: Rule, op: str) -> None:
        if r.kind == "hang":
            self.sleep(r.delay)
            raise TransientError(f"{self.location}: {op} timed out (injected)")
        raise r.error(f"{self.location}: {op} failed (injected)")

    def create(self) -> None:
        r = self._fire("create", None)
        if r:
            self._raise(r, "create")
        self.inner.create()

    def save(self, h: Handle, data: bytes) -> None:
        r = self._fire("save", h)
        if r is None:
            self.inner.save(h, data)
        elif r.kind == "truncate":
            self.inner.save(h, data[: len(data) // 2])
        elif r.kind == "flip":
            self.inner.save(h, _flip(data))
        elif r.kind == "partial":
            self.inner.save(h, data[: len(data) // 2])
            raise TransientError(f"{self.location}: connection lost during upload (injected)")
        else:
            self._raise(r, "save")

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        r = self._fire("load", h)
        if r is None:
            return self.inner.load(h, offset, length, max_size)
        if r.kind == "truncate":
            return self.inner.load(h, offset, length, max_size)[: max(0, (length or 2) // 2)]
        if r.kind == "flip":
            return _flip(self.inner.load(h, offset, length, max_size))
        self._raise(r, "load")
        raise AssertionError("unreachable")

    def stat(self, h: Handle) -> FileInfo:
        r = self._fire("stat", h)
        if r:
            self._raise(r, "stat")
        return self.inner.stat(h)

    def list(self, t: FileType) -> Iterator[FileInfo]:
        r = self._fire("list", t)
        if r:
            self._raise(r, "list")
        return self.inner.list(t)

    def remove(self, h: Handle) -> None:
        r = self._fire("remove", h)
        if r:
            self._raise(r, "remove")
        self.inner.remove(h)

    def remove_temporaries(self) -> builtins.list[str]:
        # Only rules naming this operation fire: the clean-up must not shift the
        # counts of "*" rules written for the reads and writes around it.
        with self._lock:
            r = next((x for x in self.rules
                      if x.op == "remove_temporaries" and x.matches(x.op, None)), None)
        if r:
            self._raise(r, "remove_temporaries")
        return self.inner.remove_temporaries()

    def probe(self) -> None:
        r = self._fire("probe", None)
        if r:
            self._raise(r, "probe")
        self.inner.probe()

    def close(self) -> None:
        self.inner.close()


def _flip(data: bytes) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    b[len(b) // 2] ^= 0x01
    return bytes(b)
