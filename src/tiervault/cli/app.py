"""The ``tiervault`` command group and its global options."""

from __future__ import annotations

import importlib
import os

import click

from tiervault import __version__
from tiervault.cli.context import Ctx
from tiervault.errors import TierVaultError
from tiervault.service.installation import RunOptions
from tiervault.state.home import resolve_home

#: Which module defines each command. They are imported only when used, so that a
#: quick command (``sync``, ``tiers``) does not pay for loading all the others.
COMMAND_MODULES = {
    "check": "cmd_check",
    "console": "cmd_console",
    "key": "cmd_keys",
    **dict.fromkeys(("archive", "forget", "prune", "retention"), "cmd_retention"),
    **dict.fromkeys(("attach", "sync", "tier", "tiers"), "cmd_tiers"),
    **dict.fromkeys(("backup", "diff", "find", "init", "ls", "restore", "snapshots"),
                    "cmd_vault"),
    **dict.fromkeys(("cancel", "daemon", "run", "schedule", "set", "status"), "daemon_cmds"),
}


class LazyGroup(click.Group):
    """A command group that imports a command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            self.load(COMMAND_MODULES[cmd_name])
        return super().get_command(ctx, cmd_name)

    def load(self, module: str) -> None:
        """Import one command module (it registers its commands on this group)."""
        mod = importlib.import_module(f"tiervault.cli.{module}")
        register = getattr(mod, "register", None)
        if register is not None:  # modules that do not decorate this group themselves
            register(self)

    def load_all(self) -> None:
        """Import every command module (for help texts and tests)."""
        for module in sorted(set(COMMAND_MODULES.values())):
            self.load(module)


def _rate(_c: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """--limit-upload/--limit-download: restic's meaning for a bare number (KiB/s),
    else a rate with its unit as in config.toml (512KB, 2MB, 1.5MiB)."""
    if value is None:
        return None
    from tiervault.state.units import parse_rate

    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            rate = parse_rate(float(text) * 1024)
        else:
            rate = parse_rate(text)
    except TierVaultError:
        raise click.BadParameter(f"{value!r} is not a rate; use KiB/s as a number (restic's "
                                 "unit) or a unit: 512KB, 2MB, 1.5MiB") from None
    return rate


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", metavar="DIR", help="Installation directory (env TIERVAULT_HOME).")
@click.option("--json", "json_", is_flag=True, help="Machine-readable output.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress and no informational lines (warnings and errors stay).")
@click.option("--verbose", "-v", count=True,
              help="More output: list each file as new/changed/unchanged (backup) or "
                   "restored (restore).")
@click.option("--retry-attempts", type=click.IntRange(1, 1000), metavar="N",
              help="Reconnect attempts per operation (default 10).")
@click.option("--retry-delay", type=click.FloatRange(0), metavar="SECONDS",
              help="First backoff delay between attempts (default 0.5, doubling up to 2 s).")
@click.option("--limit-upload", metavar="RATE", callback=_rate,
              help="Limit uploads to every tier (KiB/s, or e.g. 2MB); with [[throttle]] "
                   "rules the stricter wins.")
@click.option("--limit-download", metavar="RATE", callback=_rate,
              help="Limit downloads from every tier (KiB/s, or e.g. 2MB).")
@click.option("--password-file", metavar="FILE", help="Read the passphrase from FILE.")
@click.version_option(__version__, prog_name="tiervault")
@click.pass_context
def cli(ctx: click.Context, home: str | None, json_: bool, quiet: bool, verbose: int,
        retry_attempts: int | None, retry_delay: float | None, limit_upload: float | None,
        limit_download: float | None, password_file: str | None) -> None:
    """tiervault: two-tier backup, a local speed vault and a server."""
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose cannot be combined")
    env = dict(os.environ)
    opts = RunOptions(retry_attempts, retry_delay, None, env, limit_upload=limit_upload,
                      limit_download=limit_download)
    ctx.obj = Ctx(resolve_home(home, env), json_, opts, password_file, quiet=quiet,
                  verbose=verbose)
