"""SIGINT (Ctrl-C) for commands that work in several threads.

Python delivers SIGINT to the main thread only, as a KeyboardInterrupt that may
take seconds to reach the code that would stop the workers (a pool's shutdown
waits for them). The handler here first sets the command's stop event, which
every worker and every bandwidth-limit wait checks, then raises as before, so
the command stops at a safe point within about a second and exits 130.
SIGTERM (``kill PID``, ``timeout``, a service manager) does the same and exits
143: without it a backup killed so left no message (trial 5).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM: stops the command as Ctrl-C does (a BaseException: nothing that
    handles errors swallows it), reported as terminated, exit 143."""


@contextmanager
def stop_on_sigint(stop: threading.Event) -> Iterator[None]:
    """While the block runs, SIGINT (SIGTERM) sets ``stop`` and then raises
    KeyboardInterrupt (Terminated)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def on_sigint(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt

    def on_sigterm(_sig: int, _frame: FrameType | None) -> None:
        stop.set()
        raise Terminated

    previous = signal.signal(signal.SIGINT, on_sigint)
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term == signal.SIG_DFL:  # not if something else handles it (the daemon)
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if previous_term == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous_term)
