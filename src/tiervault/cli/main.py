"""``tiervault`` command line: parses, asks the service layer, prints.

Exit codes: 0 ok; 1 error; 2 usage; 3 second installation detected;
4 wrong passphrase or key; 5 no tier came online within --wait-timeout;
6 backup completed but some source files could not be read.
"""

from __future__ import annotations

import sys

import click

from tiervault.cli.app import cli
from tiervault.cli.memory import tune_allocator
from tiervault.errors import TierVaultError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: map errors to one line and an exit code, never a traceback."""
    tune_allocator()
    try:
        cli.main(args=argv, prog_name="tiervault", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tiervault: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except TierVaultError as e:
        click.echo(f"tiervault: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("tiervault: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
