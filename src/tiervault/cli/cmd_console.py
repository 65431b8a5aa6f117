"""``tiervault console ...``: the web console, an optional extra.

Its module (tiervault.console.cli) and dependencies are imported only when a console
command runs; without the extra, one line says what to install (exit 2).
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from tiervault.errors import TierVaultError, UsageError

EXTRA_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "argon2", "jinja2")
INSTALL_HINT = "the console needs: pip install 'tiervault[console]'"


def _real() -> click.Group:
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):   # ValueError: blocked in sys.modules
            found = False
        if not found:
            raise UsageError(INSTALL_HINT)
    mod = importlib.import_module("tiervault.console.cli")
    group: click.Group = mod.console
    return group


class ConsoleGroup(click.Group):
    """Stands in for the console's command group until one of its commands is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            return _real().list_commands(ctx)
        except UsageError:
            return []

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _real().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        _real()   # the hint, even for a bare `tiervault console`
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort,
                TierVaultError, KeyboardInterrupt, BrokenPipeError):
            raise   # a closed pipe (| head) ends quietly, as for every command
        except Exception as e:   # the store's failures become one line
            errors = importlib.import_module("tiervault.console.errors")
            one_line = errors.from_store_error(e)
            if one_line is None:
                raise
            raise one_line from None


@click.group("console", cls=ConsoleGroup)
def console() -> None:
    """The web console: enrol, watch and command a fleet (pip install 'tiervault[console]')."""


def register(group: click.Group) -> None:
    """Add ``console`` to the tiervault command group."""
    group.add_command(console)
