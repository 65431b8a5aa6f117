"""The console's pages (server-rendered Jinja2 + htmx)."""

from __future__ import annotations

from fastapi import FastAPI

from tiervault.console.context import AppContext


def install(app: FastAPI, ctx: AppContext) -> None:
    """Mount the pages (cweb fills this)."""
