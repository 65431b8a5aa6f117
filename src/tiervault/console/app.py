"""create_app(ctx) -> FastAPI: wires the store, the services and the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tiervault.console import web
from tiervault.console.api import agent, errors, manage
from tiervault.console.api.agent_core import AgentCore
from tiervault.console.api.fastpath import AgentFastPath
from tiervault.console.context import AppContext


def create_app(ctx: AppContext, listen: bool = True) -> FastAPI:
    """The console's ASGI application for one context.

    ``listen`` starts the waker's listener (PostgreSQL NOTIFY or the SQLite spool) while
    the application runs, so commands queued by other processes wake this one's polls.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if listen:
            ctx.waker.start()
        try:
            yield
        finally:
            ctx.waker.stop()
            ctx.db.dispose()

    app = FastAPI(title="tiervault console", openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.ctx = ctx
    errors.install(app)
    core = AgentCore(ctx)
    agent.install(app, ctx, core)
    manage.install(app, ctx)
    web.install(app, ctx)
    app.add_middleware(AgentFastPath, core=core)   # check-ins and polls: no routing
    app.add_middleware(errors.BodyLimit)
    # Outermost, so that every answer (a 413 of BodyLimit too) carries the CSP.
    app.add_middleware(web.SecurityHeaders)
    return app
