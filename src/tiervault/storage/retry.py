"""The reconnect procedure (SPEC §3) as a wrapper that is itself a backend.

Transport failures (TransientError) are retried with a fresh connection and
exponential backoff up to ``attempts`` tries in all; definite answers (not
found, permission denied, authentication failed, integrity, a local vault
directory that is not there) are not retried, as retrying cannot change them.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from tiervault.errors import TransientError, UnpluggedError
from tiervault.storage.base import Backend, FileInfo, FileType, Handle

T = TypeVar("T")


class RetryBackend(Backend):
    """Retries transient failures of ``inner``; the clock is injectable for tests."""

    def __init__(self, inner: Backend, attempts: int = 10, delay: float = 0.5,
                 max_delay: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 on_retry: Callable[[int, TransientError], None] | None = None) -> None:
        self.inner = inner
        self.location = inner.location
        self.attempts = max(1, attempts)
        self.delay = delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.on_retry = on_retry

    def _call(self, fn: Callable[[], T]) -> T:
        last: TransientError | None = None
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(min(self.delay * 2 ** (attempt - 1), self.max_delay))
            try:
                return fn()
            except UnpluggedError:
                raise  # a definite answer: the disk is not there
            except TransientError as e:
                last = e
                if self.on_retry is not None:
                    self.on_retry(attempt + 1, e)
                self.inner.close()  # the next attempt starts on a fresh connection
        assert last is not None
        raise last

    def create(self) -> None:
        self._call(self.inner.create)

    def save(self, h: Handle, data: bytes) -> None:
        self._call(lambda: self.inner.save(h, data))

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        return self._call(lambda: self.inner.load(h, offset, length, max_size))

    def stat(self, h: Handle) -> FileInfo:
        return self._call(lambda: self.inner.stat(h))

    def list(self, t: FileType) -> Iterator[FileInfo]:
        # Listings are materialised so that a retry restarts them cleanly.
        return iter(self._call(lambda: list(self.inner.list(t))))

    def remove(self, h: Handle) -> None:
        self._call(lambda: self.inner.remove(h))

    def remove_temporaries(self) -> builtins.list[str]:
        return self._call(self.inner.remove_temporaries)

    def probe(self) -> None:
        self._call(self.inner.probe)

    def close(self) -> None:
        self.inner.close()
