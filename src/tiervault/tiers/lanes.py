"""Per-tier write queues ("lanes") of the tier set (SPEC §4: a slow tier does not
hold the session).

A write is put on the lane of every tier receiving writes; the caller goes on as
soon as one tier has it, and slower tiers drain their lanes in their own
threads. Each lane keeps its own order where it matters: a write that was put
on a lane after an earlier write had already been stored somewhere (so its
caller went on, e.g. to write the index naming a pack) waits on that lane until
the earlier one is done there. So every tier receives data before the indexes
that name it, as with synchronous writes. The lane's backlog (bytes not yet
written, and how long ago the oldest of them was already stored on a faster
tier) is what the tier set compares with its bounds; the byte bound is also
the bound on the memory the slow tiers can hold.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

OK = "ok"
FAILED = "failed"
CANCELLED = "cancelled"


@dataclass(eq=False)
class Item:
    """One write, put on the lanes of its target tiers."""

    fn: Callable[[str], None] | None  # called with the tier's url; None once settled everywhere
    nbytes: int
    targets: list[str]
    results: dict[str, str] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    stored_at: float | None = None  # clock time of the first success on any tier
    done: threading.Event = field(default_factory=threading.Event)
    wait_all: bool = False

    def ok(self) -> list[str]:
        """The tiers that stored it."""
        return [u for u, r in self.results.items() if r == OK]

    def settled(self) -> bool:
        """Every target has a result."""
        return len(self.results) == len(self.targets)


Report = Callable[["Lane", Item, str, BaseException | None], None]


class Lane:
    """The write queue of one tier, drained by ``workers`` daemon threads."""

    def __init__(self, url: str, workers: int, report: Report,
                 clock: Callable[[], float]) -> None:
        self.url = url
        self._report = report
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Item] = deque()
        self._unfinished: list[Item] = []  # queued or running, oldest first
        self._after: dict[int, list[Item]] = {}
        self.backlog = 0  # bytes queued or being written
        self._closed = False
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"lane{i}")
                         for i in range(workers)]
        for th in self._threads:
            th.start()

    def put(self, item: Item) -> None:
        """Queue ``item``; it waits for the writes its caller already saw stored."""
        with self._cond:
            self._after[id(item)] = [i for i in self._unfinished if i.stored_at is not None]
            self._queue.append(item)
            self._unfinished.append(item)
            self.backlog += item.nbytes
            self._cond.notify_all()

    def pending(self) -> int:
        """Writes queued or running."""
        with self._cond:
            return len(self._unfinished)

    def lag(self, now: float) -> float:
        """Seconds since the oldest write still unfinished here was stored on another tier."""
        with self._cond:
            times = [i.stored_at for i in self._unfinished if i.stored_at is not None]
        return now - min(times) if times else 0.0

    def wait_idle(self, timeout: float | None) -> bool:
        """Until every queued write is done here; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._unfinished or self._closed, timeout)

    def cancel(self) -> list[Item]:
        """Stop the lane: queued writes are dropped (returned); running ones finish."""
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            for it in dropped:
                self._finish(it)
            self._cond.notify_all()
        return dropped

    def join(self, timeout: float | None = None) -> None:
        """Wait for the workers to exit (after cancel(): the writes in hand finish)."""
        for th in self._threads:
            th.join(timeout)

    def _finish(self, it: Item) -> None:
        if it in self._unfinished:
            self._unfinished.remove(it)
            self.backlog -= it.nbytes
        self._after.pop(id(it), None)

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                it = self._queue.popleft()
                deps = self._after.get(id(it), [])
                # Earlier writes are already running in other workers (FIFO), so
                # waiting for them here cannot deadlock.
                self._cond.wait_for(lambda deps=deps: self._closed or all(  # type: ignore[misc]
                    d not in self._unfinished for d in deps))
                closed = self._closed
                if closed:
                    self._finish(it)
                    self._cond.notify_all()
            if closed:
                self._safe_report(it, CANCELLED, None)
                return
            err: BaseException | None = None
            fn = it.fn
            try:
                if fn is not None:
                    fn(self.url)
            except BaseException as e:  # reported to the writer, never lost in a thread
                err = e
            with self._cond:
                self._finish(it)
                self._cond.notify_all()
            self._safe_report(it, OK if err is None else FAILED, err)

    def _safe_report(self, it: Item, result: str, err: BaseException | None) -> None:
        try:
            self._report(self, it, result, err)
        except BaseException as e:  # the writer must learn of it, not wait forever
            it.errors[self.url] = e
            it.done.set()
