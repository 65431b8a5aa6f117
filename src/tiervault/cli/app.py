"""The ``tiervault`` command group and its global options."""

from __future__ import annotations

import os

import click

from tiervault import __version__
from tiervault.cli.context import Ctx
from tiervault.service.installation import RunOptions
from tiervault.state.home import resolve_home


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", metavar="DIR", help="Installation directory (env TIERVAULT_HOME).")
@click.option("--json", "json_", is_flag=True, help="Machine-readable output.")
@click.option("--retry-attempts", type=click.IntRange(1, 1000), metavar="N",
              help="Reconnect attempts per operation (default 10).")
@click.option("--retry-delay", type=click.FloatRange(0), metavar="SECONDS",
              help="First backoff delay between attempts (default 0.5, doubling up to 2 s).")
@click.option("--password-file", metavar="FILE", help="Read the passphrase from FILE.")
@click.version_option(__version__, prog_name="tiervault")
@click.pass_context
def cli(ctx: click.Context, home: str | None, json_: bool, retry_attempts: int | None,
        retry_delay: float | None, password_file: str | None) -> None:
    """tiervault: two-tier backup, a local speed vault and a server."""
    env = dict(os.environ)
    ctx.obj = Ctx(resolve_home(home, env), json_,
                  RunOptions(retry_attempts, retry_delay, None, env), password_file)
