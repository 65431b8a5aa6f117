"""The agent protocol's routes (tiervault.protocol.messages), under AGENT_PREFIX.

Devices only dial out: enrol once, check in every interval, report sessions, long-poll
for commands and say what became of them. Database work runs on the store's executor
(``Database.run``: one thread on SQLite, so the agent's writes never wait on each other);
the long-poll waits on the event loop holding no thread and no connection, so 10,000 held
polls cost neither. A poll costs one transaction (authenticate and hand out what is
queued); when its wait ends without a wake-up it answers empty without another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy.orm import Session

from tiervault.console.api.errors import bearer
from tiervault.console.clock import iso
from tiervault.console.context import AppContext
from tiervault.console.errors import BadValue
from tiervault.console.services import commands, devices, enrol, sessions
from tiervault.console.services.actor import device_actor
from tiervault.console.services.secrets import hash_secret
from tiervault.console.services.waker import wait_event
from tiervault.console.store.models import Device
from tiervault.protocol.messages import (
    AGENT_PREFIX,
    CheckIn,
    CheckInResponse,
    CommandBatch,
    CommandUpdate,
    CommandUpdateAck,
    EnrolRequest,
    RotateResponse,
    SessionAck,
    SessionBatch,
    parse,
    to_json,
)

T = TypeVar("T")
KNOWN_MAX = 200_000    # credential hashes -> device ids remembered for long-polls


def _reply(msg: Any) -> Response:
    return Response(content=to_json(msg), media_type="application/json")


def router(ctx: AppContext) -> APIRouter:
    """The agent routes for one console."""
    r = APIRouter(prefix=AGENT_PREFIX, tags=["agent"])

    # Which device a credential hash belonged to when last seen: lets a long-poll subscribe
    # to its wake-ups BEFORE its one transaction looks at the queue (nothing queued in
    # between is missed). Not trusted for access: the transaction authenticates again.
    known: dict[str, str] = {}

    def remember(credential: str | None, device_id: str) -> None:
        if credential:
            if len(known) >= KNOWN_MAX:
                known.clear()
            known[hash_secret(credential)] = device_id

    in_db = ctx.db.run

    async def as_device(request: Request, fn: Callable[[Session, Device], T]) -> T:
        credential = bearer(request)

        def work(s: Session) -> T:
            return fn(s, devices.authenticate(s, credential))
        return await in_db(work)

    async def as_device_id(request: Request, fn: Callable[[Session, str], T]) -> T:
        credential = bearer(request)

        def work(s: Session) -> T:
            return fn(s, devices.authenticate_id(s, credential))
        return await in_db(work)

    @r.post("/enrol")
    async def enrol_route(request: Request) -> Response:
        req = parse(EnrolRequest, await request.body())
        resp = await in_db(lambda s: enrol.enrol(s, ctx.clock, req, ctx.settings.interval))
        return _reply(resp)

    @r.post("/checkin")
    async def checkin_route(request: Request) -> Response:
        body = await request.body()
        credential = bearer(request)

        def work(s: Session) -> CheckInResponse:
            done = devices.checkin(s, ctx.clock, device_actor, credential,
                                   lambda: parse(CheckIn, body))
            remember(credential, done.device_id)
            return CheckInResponse(interval=done.interval,
                                   commands_waiting=done.commands_waiting,
                                   server_time=iso(ctx.clock.now()) or "",
                                   rotate=done.rotate)
        return _reply(await in_db(work))

    @r.post("/sessions")
    async def sessions_route(request: Request) -> Response:
        body = await request.body()
        accepted = await as_device(request, lambda s, dev: sessions.ingest(
            s, ctx.clock, device_actor(dev.id), dev, parse(SessionBatch, body)))
        return _reply(SessionAck(accepted=accepted))

    @r.get("/commands")
    async def commands_route(request: Request, wait: float = 0) -> Response:
        if not 0 <= wait <= 3600:
            raise BadValue("wait: seconds between 0 and 3600")
        credential = bearer(request)

        def deliver(s: Session) -> tuple[str, list[Any]]:
            dev_id, pending = devices.authenticate_pending(s, credential)
            if not pending:
                return dev_id, []
            return dev_id, commands.deliver(s, ctx.clock, device_actor(dev_id), dev_id)

        dev_id = known.get(hash_secret(credential)) if credential else None
        if dev_id is None:   # not seen yet: learn who it is first (one more transaction)
            dev_id = await as_device_id(request, lambda _s, d: d)
            remember(credential, dev_id)
        ev = ctx.waker.subscribe(dev_id)
        try:
            got_id, batch = await in_db(deliver)
            if got_id != dev_id:   # cannot happen (a hash names one device): be safe
                known.pop(hash_secret(credential or ""), None)
                ctx.waker.unsubscribe(dev_id, ev)
                dev_id, ev = got_id, ctx.waker.subscribe(got_id)
                got_id, batch = await in_db(deliver)
            if not batch and wait > 0:
                woken = await wait_event(ev, min(wait, ctx.settings.long_poll_max))
                if await request.is_disconnected():
                    return Response(status_code=204)
                if woken:
                    _, batch = await in_db(deliver)
        finally:
            ctx.waker.unsubscribe(dev_id, ev)
        return _reply(CommandBatch(commands=batch))

    @r.post("/commands/{command_id}")
    async def command_update_route(command_id: str, request: Request) -> Response:
        body = await request.body()

        def work(s: Session, dev_id: str) -> CommandUpdateAck:
            row = commands.device_update(s, ctx.clock, device_actor(dev_id), dev_id,
                                         command_id[:64], parse(CommandUpdate, body))
            return CommandUpdateAck(id=row.id, state=row.state)
        return _reply(await as_device_id(request, work))

    @r.post("/rotate")
    async def rotate_route(request: Request) -> Response:
        credential = await as_device(request, lambda s, dev: devices.rotate(
            s, ctx.clock, device_actor(dev.id), dev))
        return _reply(RotateResponse(credential=credential))

    return r


def install(app: FastAPI, ctx: AppContext) -> None:
    """Mount the agent routes."""
    app.include_router(router(ctx))
