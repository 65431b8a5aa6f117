"""The two agent requests every device makes all the time (check-in, long-poll), apart
from any web framework: the FastAPI routes (api/agent.py) and the fast path
(api/fastpath.py) both call these.

A long-poll costs one transaction (authenticate and hand out what is queued) and waits on
the event loop holding no thread and no connection; when its wait ends without a wake-up
it answers empty without another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from tiervault.console.clock import iso
from tiervault.console.context import AppContext
from tiervault.console.errors import BadValue
from tiervault.console.services import commands, devices
from tiervault.console.services.actor import device_actor
from tiervault.console.services.secrets import hash_secret
from tiervault.console.services.waker import wait_event
from tiervault.protocol.messages import CheckIn, CheckInResponse, CommandBatch, parse

KNOWN_MAX = 200_000    # credential hashes -> device ids remembered for long-polls


class AgentCore:
    """Check-in and long-poll of one console."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        # Which device a credential hash belonged to when last seen: lets a long-poll
        # subscribe to its wake-ups BEFORE its one transaction looks at the queue (nothing
        # queued in between is missed). Not trusted for access: each transaction
        # authenticates again.
        self._known: dict[str, str] = {}

    def remember(self, credential: str | None, device_id: str) -> None:
        """Note the device of a credential that just authenticated."""
        if credential:
            if len(self._known) >= KNOWN_MAX:
                self._known.clear()
            self._known[hash_secret(credential)] = device_id

    async def checkin(self, credential: str | None, body: bytes) -> CheckInResponse:
        """Authenticate and store a check-in."""
        ctx = self.ctx

        def work(conn: Connection) -> CheckInResponse:
            done = devices.checkin(conn, ctx.clock, device_actor, credential,
                                   lambda: parse(CheckIn, body))
            self.remember(credential, done.device_id)
            return CheckInResponse(interval=done.interval,
                                   commands_waiting=done.commands_waiting,
                                   server_time=iso(ctx.clock.now()) or "",
                                   rotate=done.rotate)
        return await ctx.db.run_core(work)

    async def poll(self, credential: str | None, wait: float,
                   disconnected: Callable[[], Awaitable[bool]]) -> CommandBatch | None:
        """The commands for the device, waiting up to ``wait`` s for one; None when the
        device went away while it waited (nothing handed out)."""
        ctx = self.ctx
        if not 0 <= wait <= 3600:
            raise BadValue("wait: seconds between 0 and 3600")

        def hand_out(s: Session) -> list[Any]:
            dev = devices.authenticate_id(s, credential)   # again, in this transaction
            return commands.deliver(s, ctx.clock, device_actor(dev), dev)

        async def deliver() -> tuple[str, list[Any]]:
            # One statement, no ORM session, when nothing is queued (the usual answer).
            dev, pending = await ctx.db.run_core(
                lambda conn: devices.authenticate_pending(conn, credential))
            return dev, (await ctx.db.run(hand_out) if pending else [])

        dev_id = self._known.get(hash_secret(credential)) if credential else None
        if dev_id is None:   # not seen yet: learn who it is first (one more transaction)
            dev_id = await ctx.db.run(lambda s: devices.authenticate_id(s, credential))
            self.remember(credential, dev_id)
        ev = ctx.waker.subscribe(dev_id)
        try:
            got_id, batch = await deliver()
            if got_id != dev_id:   # cannot happen (a hash names one device): be safe
                self._known.pop(hash_secret(credential or ""), None)
                ctx.waker.unsubscribe(dev_id, ev)
                dev_id, ev = got_id, ctx.waker.subscribe(got_id)
                got_id, batch = await deliver()
            if not batch and wait > 0:
                woken = await wait_event(ev, min(wait, ctx.settings.long_poll_max))
                if await disconnected():
                    return None
                if woken:
                    _, batch = await deliver()
        finally:
            ctx.waker.unsubscribe(dev_id, ev)
        return CommandBatch(commands=batch)
