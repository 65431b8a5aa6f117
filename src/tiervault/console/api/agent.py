"""The agent protocol's routes (tiervault.protocol.messages), under AGENT_PREFIX.

Devices only dial out: enrol once, check in every interval, report sessions, long-poll
for commands and say what became of them. Database work runs in the thread pool; only
the long-poll's waiting happens on the event loop, so thousands of polls cost no threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tiervault.console.api.errors import bearer
from tiervault.console.clock import iso
from tiervault.console.context import AppContext
from tiervault.console.errors import BadValue
from tiervault.console.services import commands, devices, enrol, sessions
from tiervault.console.services.access import require
from tiervault.console.services.actor import device_actor
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


def _reply(msg: Any) -> Response:
    return Response(content=to_json(msg), media_type="application/json")


def router(ctx: AppContext) -> APIRouter:
    """The agent routes for one console."""
    r = APIRouter(prefix=AGENT_PREFIX, tags=["agent"])

    async def in_db(fn: Callable[[Session], T]) -> T:
        def work() -> T:
            with ctx.db.session() as s:
                return fn(s)
        return await run_in_threadpool(work)

    async def as_device(request: Request, fn: Callable[[Session, Device], T]) -> T:
        credential = bearer(request)

        def work(s: Session) -> T:
            return fn(s, devices.authenticate(s, credential))
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
            dev, waiting = devices.authenticate_checkin(s, ctx.clock, credential)
            msg = parse(CheckIn, body)
            require(device_actor(dev.id), "agent.checkin", dev.id)
            devices.apply_checkin(dev, ctx.clock, msg)
            return CheckInResponse(interval=dev.interval, commands_waiting=waiting,
                                   server_time=iso(ctx.clock.now()) or "",
                                   rotate=dev.rotate_pending)
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
        dev_id = await as_device(request, lambda _s, dev: dev.id)
        ev = ctx.waker.subscribe(dev_id)
        try:
            batch = await as_device(request, lambda s, dev: commands.deliver(
                s, ctx.clock, device_actor(dev.id), dev))
            if not batch and wait > 0:
                await wait_event(ev, min(wait, ctx.settings.long_poll_max))
                if await request.is_disconnected():
                    return Response(status_code=204)
                batch = await as_device(request, lambda s, dev: commands.deliver(
                    s, ctx.clock, device_actor(dev.id), dev))
        finally:
            ctx.waker.unsubscribe(dev_id, ev)
        return _reply(CommandBatch(commands=batch))

    @r.post("/commands/{command_id}")
    async def command_update_route(command_id: str, request: Request) -> Response:
        body = await request.body()

        def work(s: Session, dev: Device) -> CommandUpdateAck:
            row = commands.device_update(s, ctx.clock, device_actor(dev.id), dev,
                                         command_id[:64], parse(CommandUpdate, body))
            return CommandUpdateAck(id=row.id, state=row.state)
        return _reply(await as_device(request, work))

    @r.post("/rotate")
    async def rotate_route(request: Request) -> Response:
        credential = await as_device(request, lambda s, dev: devices.rotate(
            s, ctx.clock, device_actor(dev.id), dev))
        return _reply(RotateResponse(credential=credential))

    return r


def install(app: FastAPI, ctx: AppContext) -> None:
    """Mount the agent routes."""
    app.include_router(router(ctx))
