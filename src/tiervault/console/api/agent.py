"""The agent protocol's routes (tiervault.protocol.messages), under AGENT_PREFIX.

Devices only dial out: enrol once, check in every interval, report sessions, long-poll
for commands and say what became of them. Database work runs on the store's executor
(``Database.run``: one thread on SQLite, so the agent's writes never wait on each other).
Check-in and long-poll are api/agent_core.py (api/fastpath.py answers them without the
framework's routing; these routes stay for the OpenAPI document and as the fallback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy.orm import Session

from tiervault.console.api.agent_core import AgentCore
from tiervault.console.api.errors import bearer
from tiervault.console.context import AppContext
from tiervault.console.services import commands, devices, enrol, sessions
from tiervault.console.services.actor import device_actor
from tiervault.console.store.models import Device
from tiervault.protocol.messages import (
    AGENT_PREFIX,
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


def router(ctx: AppContext, core: AgentCore) -> APIRouter:
    """The agent routes for one console."""
    r = APIRouter(prefix=AGENT_PREFIX, tags=["agent"])

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
        return _reply(await core.checkin(bearer(request), body))

    @r.post("/sessions")
    async def sessions_route(request: Request) -> Response:
        body = await request.body()
        accepted = await as_device(request, lambda s, dev: sessions.ingest(
            s, ctx.clock, device_actor(dev.id), dev, parse(SessionBatch, body)))
        return _reply(SessionAck(accepted=accepted))

    @r.get("/commands")
    async def commands_route(request: Request, wait: float = 0) -> Response:
        batch = await core.poll(bearer(request), wait, request.is_disconnected)
        return Response(status_code=204) if batch is None else _reply(batch)

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


def install(app: FastAPI, ctx: AppContext, core: AgentCore) -> None:
    """Mount the agent routes."""
    app.include_router(router(ctx, core))
