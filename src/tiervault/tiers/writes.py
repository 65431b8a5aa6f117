"""The writes of a session over per-tier lanes (SPEC §3 writes, §4 revisions).

A write is put on the lane (tiers/lanes.py) of every online tier and returns
once one tier stored it (every tier with ``wait_all_tiers``). A tier whose
write failed goes offline; a tier too far behind the fastest one (or still
behind when the session ends) becomes unsynchronized; either way it leaves the
session at once, recorded durably as having missed writes, and once a write it
will not get is stored elsewhere the remaining tiers are raised, so it ends
below the max revision. All state changes happen under the tier set's lock.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tiervault.errors import BackendError, NotFoundError, TierVaultError
from tiervault.tiers.lanes import CANCELLED, FAILED, OK, Item, Lane
from tiervault.tiers.tier import ONLINE, UNSYNCHRONIZED, Tier

if TYPE_CHECKING:
    from tiervault.tiers.tierset import TierSet

_LANE_WORKERS = 3
#: At the end of a session, a tier still behind is waited for at most this share of
#: the session's duration (at least END_GRACE_MIN s, at most the lag bound), then dropped.
END_GRACE_SHARE = 0.3
END_GRACE_MIN = 0.5


def _effective(t: Tier) -> int:
    """The highest revision the tier may hold on disk (a raise may have landed)."""
    return max(t.record.revision, t.record.intended or 0)


class SessionWrites:
    """The lanes and missed-write bookkeeping of one tier set's sessions."""

    def __init__(self, ts: TierSet) -> None:
        self.ts = ts
        self.lanes: dict[str, Lane] = {}
        self.unconfirmed: set[str] = set()  # marked missed by a write nobody may have taken
        self.confirmed: set[str] = set()  # missed a write another tier stored
        self.every_lane: list[Lane] = []  # dropped ones too, for join()
        self.closed = False  # the tier set was closed: no new lane

    def _lane(self, t: Tier) -> Lane:
        lane = self.lanes.get(t.url)
        if lane is None:
            if self.closed:
                raise TierVaultError("the vault was closed while a write was starting")
            lane = Lane(t.url, _LANE_WORKERS, self._on_result, self.ts.clock)
            self.lanes[t.url] = lane
            self.every_lane.append(lane)
        return lane

    def write(self, fn: Callable[[Tier], None], nbytes: int, missing_ok: bool) -> None:
        """One write of the session (the session has begun)."""
        ts = self.ts
        by_url = {t.url: t for t in ts.tiers}

        def run(url: str) -> None:
            try:
                fn(by_url[url])
            except NotFoundError:
                if not missing_ok:
                    raise

        start = ts.clock()
        while True:
            with ts._lock:
                ts._apply_answers()
                self._drop_slow(nbytes)
                targets = ts.online()
                if not targets:
                    ts.wait_for_online()
                    continue
                item = Item(run, nbytes, [t.url for t in targets], wait_all=ts.wait_all_tiers)
                for t in targets:
                    self._lane(t).put(item)
            item.done.wait()
            with ts._lock:
                if item.ok():
                    return
                errors = builtins.list(item.errors.values())
                if errors and all(isinstance(e, NotFoundError) for e in errors):
                    raise errors[0]
                bugs = [e for e in errors if not isinstance(e, BackendError)]
                if bugs:
                    raise bugs[0]
                # Nobody took this write, so nobody missed it: undo the marks.
                undone = []
                for url in item.targets:
                    t = by_url[url]
                    if url in self.unconfirmed and url not in self.confirmed:
                        t.record.missed = False
                        self.unconfirmed.discard(url)
                        undone.append(t)
                ts._save_records(undone)
            ts._refused(start, "took a write")

    def _on_result(self, lane: Lane, item: Item, result: str,
                   err: BaseException | None) -> None:
        """A lane finished (or dropped) a write; runs in the lane's thread."""
        ts = self.ts
        with ts._lock:
            item.results[lane.url] = result
            t = next(x for x in ts.tiers if x.url == lane.url)
            current = self.lanes.get(lane.url) is lane
            if result == OK and item.stored_at is None:
                item.stored_at = ts.clock()
                self._note_stored(item)
            elif result == FAILED and current and not isinstance(err, BackendError):
                # Not the tier's fault (an interrupt, a bug): the writer raises it.
                assert err is not None
                item.errors[lane.url] = err
            elif result == FAILED and current:
                assert err is not None
                self._drop(t, err, offline=True)
                if item.stored_at is not None:
                    self._confirm(t)
            elif result != OK and item.stored_at is not None:
                self._confirm(t)
            if item.settled() or (item.ok() and not item.wait_all):
                item.done.set()
            if item.settled():
                item.fn = None  # free the data: every tier is done with it

    def _note_stored(self, item: Item) -> None:
        """A write was stored: every tier that will not get it has missed it."""
        for t in self.ts.tiers:
            if t.url in item.targets and item.results.get(t.url) not in (FAILED, CANCELLED):
                continue  # it has it or is writing it
            self._confirm(t)

    def _confirm(self, t: Tier) -> None:
        """``t`` missed a write that another tier stored: recorded, others raised."""
        ts = self.ts
        if not t.record.missed:
            t.record.missed = True
        if t.url in self.confirmed:
            return
        self.confirmed.add(t.url)
        self.unconfirmed.discard(t.url)
        if t.state == ONLINE:
            t.state = UNSYNCHRONIZED  # it came back mid-write; it is synchronized later
        ts._save_records([t])
        if _effective(t) >= ts.max_revision:
            # A tier dropped out: raise the others so it ends below the max.
            ts._raise(ts.online())

    def _drop(self, t: Tier, why: BaseException | str, offline: bool) -> None:
        """``t`` leaves the session (a failed write, or too slow): missed writes recorded."""
        ts = self.ts
        lane = self.lanes.pop(t.url, None)
        if offline:
            assert isinstance(why, BaseException)
            ts._go_offline(t, why)
        else:
            t.state = UNSYNCHRONIZED
            ts._say(f"tier {t.name} {why}; it leaves this session and is synchronized "
                    "afterwards")
        if not t.record.missed:
            t.record.missed = True
            self.unconfirmed.add(t.url)
        ts._save_records([t])  # durable the moment it drops out
        dropped = lane.cancel() if lane is not None else []
        for it in dropped:
            it.results[t.url] = CANCELLED
            if it.settled() or (it.ok() and not it.wait_all):
                it.done.set()
        if any(it.stored_at is not None for it in dropped) or not offline:
            self._confirm(t)

    def _drop_slow(self, nbytes: int) -> None:
        """Tiers too far behind the fastest one leave the session (not with wait_all_tiers)."""
        ts = self.ts
        if ts.wait_all_tiers:
            return
        by_url = {t.url: t for t in ts.tiers}
        lanes = [(url, lane) for url, lane in self.lanes.items()
                 if by_url[url].state == ONLINE]
        if len(lanes) < 2:
            return
        fastest = min(lane.backlog for _, lane in lanes)
        now = ts.clock()
        for url, lane in lanes:
            behind = lane.backlog + nbytes - fastest
            if behind > ts.lag_bytes:
                self._drop(by_url[url], f"is {behind / 2**20:.0f} MiB behind the fastest "
                           "tier", offline=False)
            elif lane.lag(now) > ts.lag_seconds:
                self._drop(by_url[url], f"is more than {ts.lag_seconds:g} s behind the "
                           "fastest tier", offline=False)

    def finish(self, session_start: float) -> None:
        """End of session: a short grace for tiers still writing, then drop them.

        With ``wait_all_tiers`` every lane is waited for until it is done. Call
        without the tier set's lock (lanes report under it).
        """
        ts = self.ts
        with ts._lock:
            lanes = builtins.list(self.lanes.values())
        if ts.wait_all_tiers:
            for lane in lanes:
                lane.wait_idle(None)
        elif lanes:
            spent = time.monotonic() - session_start
            grace = min(ts.lag_seconds, max(END_GRACE_MIN, END_GRACE_SHARE * spent))
            end = time.monotonic() + grace
            for lane in lanes:
                lane.wait_idle(max(0.0, end - time.monotonic()))
        with ts._lock:
            by_url = {t.url: t for t in ts.tiers}
            for url, lane in builtins.list(self.lanes.items()):
                if lane.pending():
                    self._drop(by_url[url], "is still writing at the end of the session",
                               offline=False)
            self.cancel()
            self.unconfirmed.clear()
            self.confirmed.clear()

    def cancel(self) -> None:
        """Stop every lane (queued writes are dropped; running ones finish)."""
        # Every lane this tier set made (a lane made while another thread closed the
        # set is not in ``lanes``): none of their threads may go on waiting.
        for lane in [*self.lanes.values(), *self.every_lane]:
            lane.cancel()
        self.lanes.clear()

    def join(self) -> None:
        """Wait until no write of this tier set is in flight (tests of crashes: a dead
        process's writes must not land later). Lanes must be cancelled first."""
        for lane in self.every_lane:
            lane.cancel()  # idempotent: a lane nobody cancelled would be waited for in vain
            lane.join(60)

    def wait_idle(self, timeout: float) -> None:
        """Let the lanes drain (at most ``timeout`` s): a read falling through to
        another tier must find there what this session already wrote."""
        with self.ts._lock:
            lanes = builtins.list(self.lanes.values())
        end = time.monotonic() + timeout
        for lane in lanes:
            lane.wait_idle(max(0.0, end - time.monotonic()))
