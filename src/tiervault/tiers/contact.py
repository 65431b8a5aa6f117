"""Reading tiers' revisions beside the command (SPEC §3).

The reconnect procedure never holds up a command that another tier can
serve: each probe runs in its own daemon thread and only *posts* what the tier
answered. The tier set applies the answers (state changes, the second
installation check) in the threads that call it, at its operation boundaries,
so every state change still happens under the tier set's lock. Daemon
threads, because a probe hung on a server that accepts and never answers must
not keep the process alive after the command is done.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    TransientError,
    UnpluggedError,
)
from tiervault.storage.base import Backend, FileType, Handle
from tiervault.tiers.tier import (
    MAX_REVISION_FILE,
    SYNCING,
    UNSYNCHRONIZED,
    Tier,
    parse_revision,
)

if TYPE_CHECKING:
    from tiervault.tiers.tierset import TierSet

_REV = Handle(FileType.REVISION)


@dataclass
class Answer:
    """What one probe of a tier found: a revision (0 = none yet) or an error."""

    tier: Tier
    revision: int | None
    error: BaseException | None
    final: bool  # False: a first attempt failed; the reconnect procedure goes on


def fetch_revision(t: Tier, backend: Backend) -> tuple[int | None, BaseException | None]:
    """The tier's revision through ``backend``; (None, error) if it did not answer."""
    try:
        return parse_revision(backend.load(_REV, max_size=MAX_REVISION_FILE), t.name), None
    except NotFoundError:
        return 0, None
    except (BackendError, IntegrityError) as e:
        return None, e


def worth_retrying(e: BaseException | None) -> bool:
    """A transport failure; a definite answer (unplugged, refused) is never retried."""
    return isinstance(e, TransientError) and not isinstance(e, UnpluggedError)


class Prober:
    """Background probes, at most one per tier at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running: set[str] = set()
        self._answers: list[Answer] = []
        self._closed = False

    def start(self, t: Tier, first: Backend, procedure: Backend | None = None) -> bool:
        """Probe ``t`` once through ``first``; if that fails with a transport
        error and ``procedure`` is given, go on with it (the full reconnect
        procedure). False if a probe of ``t`` is already running."""
        with self._cond:
            if self._closed or t.url in self._running:
                return False
            self._running.add(t.url)
        threading.Thread(target=self._run, args=(t, first, procedure), daemon=True,
                         name=f"probe-{t.name[:20]}").start()
        return True

    def _run(self, t: Tier, first: Backend, procedure: Backend | None) -> None:
        rev: int | None = None
        err: BaseException | None = None
        try:
            rev, err = fetch_revision(t, first)
            if err is not None and procedure is not None and worth_retrying(err):
                self._post(Answer(t, None, err, final=False), done=False)
                rev, err = fetch_revision(t, procedure)
        except BaseException as e:  # a bug: handed to the tier set, never a silent thread
            rev, err = None, e
        finally:
            # Always posted, so nobody waits for a probe that died.
            self._post(Answer(t, rev, err, final=True), done=True)

    def _post(self, a: Answer, done: bool) -> None:
        with self._cond:
            if done:
                self._running.discard(a.tier.url)
            if not self._closed:
                self._answers.append(a)
            self._cond.notify_all()

    def take(self) -> list[Answer]:
        """The answers posted since the last call, oldest first."""
        with self._cond:
            out, self._answers = self._answers, []
            return out

    def running(self, url: str | None = None) -> bool:
        """Whether a probe of ``url`` (of any tier if None) is still under way."""
        with self._cond:
            return bool(self._running) if url is None else url in self._running

    def wait(self, timeout: float) -> None:
        """Until an answer is posted (or ``timeout`` real seconds pass)."""
        with self._cond:
            if not self._answers and timeout > 0:
                self._cond.wait(timeout)

    def close(self) -> None:
        """Forget every later answer (the command is over)."""
        with self._cond:
            self._closed = True
            self._answers.clear()
            self._cond.notify_all()


def confirm_stale(ts: TierSet) -> None:
    """Tiers to be synchronized answer one quick probe first (at most the connect
    grace): one that died during the command is offline now, not waited for
    through a whole reconnect procedure (the closing sync of a backup whose
    server died under it)."""
    stale = [t for t in ts.tiers if t.state in (UNSYNCHRONIZED, SYNCING)]
    futures = [(t, ts._pool.submit(fetch_revision, t, ts.probe_backend(t))) for t in stale]
    end = time.monotonic() + ts.connect_grace
    for t, fut in futures:
        try:
            rev, err = fut.result(timeout=max(0.0, end - time.monotonic()))
        except TimeoutError:
            rev, err = None, TransientError("no answer (still trying in the background)")
        if rev is None:
            assert err is not None
            if not isinstance(err, (BackendError, IntegrityError)):
                raise err
            with ts._lock:
                ts._go_offline(t, err)
                ts._save_records([t])
