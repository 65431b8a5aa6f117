"""The management JSON API under /api/v1 (for scripts: ``Authorization: Bearer tva_...``).

The objects are the ones `tiervault console ... --json` prints (same service functions).
A page may set ``request.state.actor`` (a logged-in user) instead of the Bearer token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tiervault.console.api.errors import bearer
from tiervault.console.clock import iso
from tiervault.console.context import AppContext
from tiervault.console.errors import Refused
from tiervault.console.services import commands, customers, devices, sessions, tokens, users
from tiervault.console.services.access import require
from tiervault.console.services.actor import Actor
from tiervault.console.store.models import CommandRow, Device, User

T = TypeVar("T")
BROWSE_WAIT = 20.0
PREFIX = "/api/v1"


class CommandSend(BaseModel):
    """POST /api/v1/commands."""

    devices: list[str] = Field(min_length=1, max_length=10_000)
    type: str = Field(max_length=32)
    params: dict[str, Any] = Field(default_factory=dict)
    ttl: int | None = Field(default=None, ge=1)


class TokenCreate(BaseModel):
    """POST /api/v1/tokens."""

    customer: str = Field(max_length=200)
    site: str | None = Field(default=None, max_length=200)
    ttl: int = Field(default=24 * 3600, ge=1)
    uses: int = Field(default=1, ge=1)
    profile: dict[str, Any] | None = None


class UserCreate(BaseModel):
    """POST /api/v1/users."""

    name: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class Thresholds(BaseModel):
    """POST /api/v1/customers/{name or id}/thresholds (hours; null keeps that one)."""

    green_hours: int | None = Field(default=None, ge=1, le=24 * 365)
    orange_hours: int | None = Field(default=None, ge=1, le=24 * 365)


class ApiTokenCreate(BaseModel):
    """POST /api/v1/api-tokens."""

    user: str = Field(max_length=200)


def router(ctx: AppContext) -> APIRouter:
    """The management routes for one console."""
    r = APIRouter(prefix=PREFIX, tags=["manage"])
    clock = ctx.clock

    def actor_of(request: Request) -> Actor:
        token = bearer(request)
        if token is not None:
            with ctx.db.session() as s:
                return tokens.authenticate_api(s, clock, token)
        page_actor = getattr(request.state, "actor", None)
        if isinstance(page_actor, Actor):
            return page_actor
        raise Refused("no API token (Authorization: Bearer tva_...)")

    def db(fn: Callable[[Session], T]) -> T:
        with ctx.db.session() as s:
            return fn(s)

    @r.get("/devices")
    def list_devices(response: Response, actor: Actor = Depends(actor_of),
                     q: str | None = None, colour: str | None = None,
                     customer: str | None = None, status: str | None = None,
                     os: str | None = None, version: str | None = None, sort: str = "name",
                     page: int = 1, per_page: int = 50) -> list[dict[str, Any]]:
        query = devices.DeviceQuery(q=q, colour=colour, customer=customer, status=status,
                                    os=os, version=version, sort=sort, page=page,
                                    per_page=per_page)
        rows, total = db(lambda s: devices.query(s, clock, actor, query))
        response.headers["X-Total-Count"] = str(total)
        return rows

    @r.get("/devices/counts")
    def device_counts(actor: Actor = Depends(actor_of)) -> dict[str, int]:
        return db(lambda s: devices.colour_counts(s, clock, actor))

    @r.get("/devices/{device_id}")
    def get_device(device_id: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        return db(lambda s: devices.get(s, clock, actor, devices.find(s, device_id).id))

    @r.post("/devices/{device_id}/revoke")
    def revoke_device(device_id: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        dev_id = db(lambda s: devices.revoke(s, clock, actor, device_id).id)
        return db(lambda s: devices.get(s, clock, actor, dev_id))

    @r.post("/devices/{device_id}/rotate")
    def rotate_device(device_id: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        dev = db(lambda s: devices.request_rotation(s, clock, actor, device_id))
        return {"id": dev.id, "rotate_pending": True}

    @r.get("/devices/{device_id}/sessions")
    def device_sessions(device_id: str, actor: Actor = Depends(actor_of), limit: int = 100
                        ) -> list[dict[str, Any]]:
        return db(lambda s: sessions.of_device(s, actor, devices.find(s, device_id).id,
                                               max(1, min(limit, 1000))))

    @r.get("/devices/{device_id}/browse")
    async def browse(device_id: str, request: Request, snapshot: str = "latest",
                     path: str = "/") -> dict[str, Any]:
        actor = await run_in_threadpool(actor_of, request)

        def send(s: Session) -> str:
            require(actor, "devices.browse", device_id)
            return commands.queue(s, clock, actor, [device_id], "browse",
                                  {"snapshot": snapshot, "path": path})[0].id
        cmd_id = await run_in_threadpool(db, send)
        dev_id = await run_in_threadpool(
            db, lambda s: s.scalar(select(CommandRow.device_id)
                                   .where(CommandRow.id == cmd_id)))
        await run_in_threadpool(ctx.waker.notify, [dev_id])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BROWSE_WAIT
        while True:
            cmd = await run_in_threadpool(db, lambda s: commands.show(s, clock, actor, cmd_id))
            if commands.is_final(cmd["state"]) or loop.time() > deadline:
                return cmd
            await asyncio.sleep(0.25)

    @r.post("/commands")
    def send_commands(body: CommandSend, actor: Actor = Depends(actor_of)
                      ) -> list[dict[str, Any]]:
        def work(s: Session) -> list[dict[str, Any]]:
            rows = commands.queue(s, clock, actor, body.devices, body.type, body.params,
                                  body.ttl)
            return [commands.to_json(row, s.get(Device, row.device_id)) for row in rows]
        out = db(work)
        ctx.waker.notify(c["device"] for c in out)
        return out

    @r.get("/commands")
    def list_commands(actor: Actor = Depends(actor_of), device: str | None = None,
                      state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        def work(s: Session) -> list[dict[str, Any]]:
            dev_id = devices.find(s, device).id if device else None
            return commands.listing(s, clock, actor, dev_id, state, max(1, min(limit, 5000)))
        return db(work)

    @r.get("/commands/{command_id}")
    def show_command(command_id: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        return db(lambda s: commands.show(s, clock, actor, command_id))

    @r.post("/commands/{command_id}/cancel")
    def cancel_command(command_id: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        db(lambda s: commands.cancel(s, clock, actor, command_id))
        return db(lambda s: commands.show(s, clock, actor, command_id))

    @r.post("/tokens")
    def create_token(body: TokenCreate, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            tok, secret = tokens.create_enrol(s, clock, actor, body.customer, body.site,
                                              body.ttl, body.uses, body.profile)
            out = tokens.enrol_json(s, tok, clock)
            out["token"] = secret
            out["command"] = tokens.unattended_command(
                ctx.settings.public_url, secret, ctx.settings.fingerprint,
                ctx.settings.package)
            return out
        return db(work)

    @r.get("/tokens")
    def list_tokens(actor: Actor = Depends(actor_of)) -> list[dict[str, Any]]:
        return db(lambda s: [tokens.enrol_json(s, t, clock)
                             for t in tokens.list_enrol(s, actor)])

    @r.post("/tokens/{token_id}/revoke")
    def revoke_token(token_id: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        return db(lambda s: tokens.enrol_json(
            s, tokens.revoke_enrol(s, clock, actor, token_id), clock))

    @r.post("/users")
    def create_user(body: UserCreate, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        return db(lambda s: users.to_json(users.add(s, clock, actor, body.name,
                                                    body.password)))

    @r.get("/users")
    def list_users(actor: Actor = Depends(actor_of)) -> list[dict[str, Any]]:
        require(actor, "users.read")
        return db(lambda s: [users.to_json(u) for u in s.scalars(select(User)
                                                                  .order_by(User.name))])

    @r.post("/api-tokens")
    def create_api_token(body: ApiTokenCreate, actor: Actor = Depends(actor_of)
                         ) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            tok, secret = tokens.create_api(s, clock, actor, body.user)
            return {**tokens.api_json(tok, body.user), "token": secret}
        return db(work)

    @r.post("/api-tokens/{token_id}/revoke")
    def revoke_api_token(token_id: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            tok = tokens.revoke_api(s, clock, actor, token_id)
            user = s.get(User, tok.user_id)
            return tokens.api_json(tok, user.name if user else "")
        return db(work)

    @r.get("/customers")
    def list_customers(actor: Actor = Depends(actor_of)) -> list[dict[str, Any]]:
        return db(lambda s: customers.listing(s, actor))

    @r.get("/customers/{name:path}")
    def show_customer(name: str, actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        return db(lambda s: customers.show(s, actor, name))

    @r.post("/customers/{name:path}/thresholds")
    def set_thresholds(name: str, body: Thresholds, actor: Actor = Depends(actor_of)
                       ) -> dict[str, Any]:
        def work(s: Session) -> dict[str, Any]:
            cust = customers.set_thresholds(s, clock, actor, name, body.green_hours,
                                            body.orange_hours)
            return customers.show(s, actor, cust.id)
        return db(work)

    @r.get("/status")
    def status(actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        require(actor, "devices.read")
        return {"long_polls": ctx.waker.waiting(), "database": ctx.db.engine.dialect.name,
                "server_time": iso(clock.now())}

    @r.get("/whoami")
    def whoami(actor: Actor = Depends(actor_of)) -> dict[str, Any]:
        return {"actor": actor.label, "user": actor.user}

    return r


def install(app: FastAPI, ctx: AppContext) -> None:
    """Mount the management routes."""
    app.include_router(router(ctx))
