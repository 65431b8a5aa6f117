"""create_app(ctx) -> FastAPI: wires the store, the services and the routers."""

from __future__ import annotations

from fastapi import FastAPI

from tiervault.console import web
from tiervault.console.context import AppContext


def create_app(ctx: AppContext) -> FastAPI:
    """The console's ASGI application for one context."""
    app = FastAPI(title="tiervault console", openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    web.install(app, ctx)
    return app
