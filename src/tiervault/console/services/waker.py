"""Long-poll wake-ups: a command queued for a device answers that device's waiting poll.

In one process this is asyncio events. Across processes: on PostgreSQL a NOTIFY on
channel ``tiervault_commands`` (payload: device ids) that every serving process LISTENs
to; on SQLite a spool directory (``DIR/wake``) where a non-serving process (the CLI on
the host) drops the device ids and the serving process picks them up every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import text

from tiervault.console.store.db import Database

CHANNEL = "tiervault_commands"
SPOOL_POLL = 1.0


class Waker:
    """Wake the long-polls of some devices, in this process and in the others."""

    def __init__(self, db: Database, spool: Path | None) -> None:
        self.db = db
        self.spool = spool
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closing = False   # the process is stopping: long-polls answer at once

    # -- waiting (in the serving process's event loop) --------------------------------

    def subscribe(self, device_id: str) -> asyncio.Event:
        """An event set when ``device_id`` is woken (subscribe before looking at the queue,
        so a command queued in between is not missed); call ``unsubscribe`` after."""
        self._loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        if self._closing:
            ev.set()
        with self._lock:
            self._waiters.setdefault(device_id, set()).add(ev)
        return ev

    def unsubscribe(self, device_id: str, ev: asyncio.Event) -> None:
        """Forget an event of ``subscribe``."""
        with self._lock:
            evs = self._waiters.get(device_id)
            if evs is not None:
                evs.discard(ev)
                if not evs:
                    del self._waiters[device_id]

    async def wait(self, device_id: str, timeout: float) -> bool:
        """Wait until ``device_id`` is woken or ``timeout`` passes; True when woken."""
        ev = self.subscribe(device_id)
        try:
            return await wait_event(ev, timeout)
        finally:
            self.unsubscribe(device_id, ev)

    def waiting(self) -> int:
        """How many long-polls this process holds."""
        with self._lock:
            return sum(len(v) for v in self._waiters.values())

    # -- waking (from any thread, any process) ------------------------------------------

    def notify(self, device_ids: Iterable[str]) -> None:
        """Wake these devices here and in every other process sharing the store."""
        ids = sorted(set(device_ids))
        if not ids:
            return
        self.wake_local(ids)
        if self.db.is_postgres:
            with self.db.engine.connect() as conn:
                for chunk in _chunks(ids, 300):
                    conn.execute(text("SELECT pg_notify(:c, :p)"),
                                 {"c": CHANNEL, "p": ",".join(chunk)})
                conn.commit()
        elif self.spool is not None and not self._threads:
            # Not serving (the CLI): leave the ids for the serving process.
            self.spool.mkdir(parents=True, exist_ok=True)
            tmp = self.spool / f".{secrets.token_hex(8)}.tmp"
            tmp.write_text("\n".join(ids))
            os.replace(tmp, self.spool / f"{secrets.token_hex(8)}.ids")

    def wake_local(self, device_ids: Iterable[str]) -> None:
        """Wake this process's long-polls of these devices (thread-safe)."""
        loop = self._loop
        if loop is None:
            return
        with self._lock:
            events = [ev for d in device_ids for ev in self._waiters.get(d, ())]
        for ev in events:
            with contextlib.suppress(RuntimeError):   # the loop closed meanwhile
                loop.call_soon_threadsafe(ev.set)

    def release_all(self) -> None:
        """The process is stopping: every held long-poll answers now (the devices poll
        again elsewhere or later), so a stop does not wait for them (thread-safe)."""
        self._closing = True
        loop = self._loop
        if loop is None:
            return
        with self._lock:
            events = [ev for evs in self._waiters.values() for ev in evs]
        for ev in events:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    # -- the listener of a serving process ---------------------------------------------

    def start(self) -> None:
        """Listen for other processes' wake-ups (PostgreSQL NOTIFY or the spool)."""
        target = self._listen_pg if self.db.is_postgres else self._watch_spool
        t = threading.Thread(target=target, name="console-waker", daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self) -> None:
        """Stop listening."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _watch_spool(self) -> None:
        if self.spool is None:
            return
        while not self._stop.wait(SPOOL_POLL):
            with contextlib.suppress(OSError):
                for f in self.spool.glob("*.ids"):
                    with contextlib.suppress(OSError):
                        ids = f.read_text().split()
                        f.unlink()
                        self.wake_local(ids)

    def _listen_pg(self) -> None:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            self.wake_local(n.payload.split(","))
            except psycopg.Error:
                self._stop.wait(1.0)   # the database went away: listen again shortly


async def wait_event(ev: asyncio.Event, timeout: float) -> bool:
    """True when ``ev`` is set within ``timeout`` seconds."""
    try:
        await asyncio.wait_for(ev.wait(), timeout)
        return True
    except TimeoutError:
        return False


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
