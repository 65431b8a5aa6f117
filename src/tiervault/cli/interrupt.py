"""SIGINT (Ctrl-C) for commands that work in several threads.

Python delivers SIGINT to the main thread only, as a KeyboardInterrupt that may
take seconds to reach the code that would stop the workers (a pool's shutdown
waits for them). The handler here first sets the command's stop event, which
every worker and every bandwidth-limit wait checks, then raises as before, so
the command stops at a safe point within about a second and exits 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """While the block runs, SIGINT sets ``stop`` and then raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def on_sigint(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
