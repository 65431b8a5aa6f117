"""What the connection-based backends (FTP, SFTP) share: a pool of logged-in
connections, their clean-up, and spreading directory scans over them.

- At most ``size`` connections exist at a time (a semaphore slot per
  connection in use); idle ones are kept for reuse, most recent first.
- A connection idle longer than ``max_idle``, or found dead by ``alive``, is
  closed instead of reused: servers and middleboxes drop idle connections
  silently, and a fresh connect is cheaper than a timeout on a dead one.
- A connection marked ``broken`` (the protocol state is uncertain: a timeout,
  a half-read transfer) is closed on release, never reused.
- ``reset`` starts a new generation: idle connections are closed at once and
  those in use are closed when released (after a connection broke, the others
  to the same server are likely dead too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Pooled:
    """The bookkeeping the pool keeps on each connection (subclassed by backends)."""

    def __init__(self) -> None:
        self.last_used = time.monotonic()
        self.gen = 0
        self.reused = False
        # Set by an operation that leaves the protocol state uncertain.
        self.broken = False

    def alive(self) -> bool:
        """Whether the connection still looks usable (cheap, local check)."""
        return not self.broken

    def close(self, polite: bool = False) -> None:
        """Close without raising; ``polite`` says goodbye to the server first."""


C = TypeVar("C", bound=Pooled)


class Pool(Generic[C]):
    """A thread-safe pool of at most ``size`` connections made by ``connect``."""

    def __init__(self, size: int, connect: Callable[[], C], max_idle: float) -> None:
        self.size = size
        self._connect = connect
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[C] = []
        self._gen = 0

    @property
    def idle(self) -> int:
        """How many connections wait in the pool now."""
        with self._lock:
            return len(self._idle)

    def acquire(self) -> C:
        """A connection (``reused`` tells whether it was pooled); release it after use."""
        self._slots.acquire()
        try:
            stale: list[C] = []
            found: C | None = None
            now = time.monotonic()
            with self._lock:
                gen = self._gen
                while self._idle:
                    c = self._idle.pop()  # most recently used first: likeliest alive
                    if now - c.last_used <= self._max_idle and c.alive():
                        found = c
                        break
                    stale.append(c)
            for c in stale:
                c.close()
            if found is not None:
                found.reused = True
                return found
            c = self._connect()
            c.gen, c.reused = gen, False
            return c
        except BaseException:
            self._slots.release()
            raise

    def release(self, c: C, keep: bool) -> None:
        """Give ``c`` back: pooled if ``keep`` and still sound, else closed."""
        try:
            if keep and c.alive():
                with self._lock:
                    if c.gen == self._gen:
                        c.last_used = time.monotonic()
                        self._idle.append(c)
                        return
            c.close()
        finally:
            self._slots.release()

    def reset(self, polite: bool = False) -> None:
        """Close the idle connections; those in use are closed when released."""
        with self._lock:
            self._gen += 1
            idle, self._idle = self._idle, []
        for c in idle:
            c.close(polite)


def fan_out(items: Sequence[T], fn: Callable[[T], R], connections: int,
            per_connection: int, name: str) -> list[R]:
    """``[fn(x) for x in items]``, spread over up to ``connections`` threads.

    Directory scans pay one round trip per directory (data/ has up to 256):
    below ``per_connection`` items per connection they run in this thread.
    """
    n = min(connections, -(-len(items) // per_connection))
    if n <= 1:
        return [fn(x) for x in items]
    batches = [range(i, len(items), n) for i in range(n)]
    out: list[R | None] = [None] * len(items)

    def scan(batch: range) -> None:
        for i in batch:
            out[i] = fn(items[i])

    with ThreadPoolExecutor(n, thread_name_prefix=name) as pool:
        list(pool.map(scan, batches))  # re-raises the first failure
    return out  # type: ignore[return-value]  # every slot was filled
