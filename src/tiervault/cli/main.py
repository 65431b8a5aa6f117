"""``tiervault`` command line: parses, asks the service layer, prints.

Exit codes: 0 ok; 1 error; 2 usage; 3 second installation detected;
4 wrong passphrase or key; 5 no tier came online within --wait-timeout;
6 backup completed but some source files could not be read.

Errors are one line on stderr, ``tiervault: error: ...``. With ``--json`` they
are one JSON object on stderr instead (as restic does: stdout holds only the
result document, so a script that parses stdout never mistakes an error for a
result), ``{"message_type": "error", "exit_code": N, "message": "..."}``, with
the same exit code. That includes click's usage errors (bad option, missing
argument), which are also one line in text mode.
"""

from __future__ import annotations

import json
import sqlite3
import sys

import click

from tiervault.cli.app import cli
from tiervault.cli.interrupt import Terminated
from tiervault.cli.memory import tune_allocator
from tiervault.cli.output import inert
from tiervault.errors import EXIT_USAGE, TierVaultError

#: SIGTERM: 128 + 15, as a shell reports a process it terminated.
EXIT_TERMINATED = 143

__all__ = ["cli", "main", "wants_json"]


def wants_json(args: list[str]) -> bool:
    """True if ``--json`` was given anywhere on the command line (before a ``--``).

    Read from the raw arguments so that even an error met while parsing them (an
    unknown option before ``--json``) is reported in the mode the user asked for.
    """
    for a in args:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False


def fail(message: str, code: int, json_mode: bool) -> None:
    """Report one error (a line or a JSON object on stderr) and exit with ``code``."""
    if json_mode:
        sys.stderr.write(json.dumps({"message_type": "error", "exit_code": code,
                                     "message": message}) + "\n")
        sys.stderr.flush()
    else:
        text = inert(message)  # a name or a server's text in it prints as escapes
        click.echo(f"tiervault: {text}" if code in (130, EXIT_TERMINATED)
                   else f"tiervault: error: {text}", err=True)
    sys.exit(code)


def _usage_message(e: click.ClickException) -> str:
    msg = e.format_message().rstrip(".")
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and ctx is not None:
        return f"{msg} (see '{ctx.command_path} --help')"
    return msg


def main(argv: list[str] | None = None) -> None:
    """Entry point: map errors to one line and an exit code, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = wants_json(args)
    tune_allocator()
    try:
        cli.main(args=args, prog_name="tiervault", standalone_mode=False)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, Terminated):
            fail("terminated", EXIT_TERMINATED, json_mode)
        fail("aborted", 130, json_mode)
    except click.exceptions.Exit as e:  # --help / --version asked for an exit
        sys.exit(e.exit_code)
    except click.ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # plain ``tiervault``: the help text
            e.show()
            sys.exit(EXIT_USAGE)
        code = EXIT_USAGE if isinstance(e, click.UsageError) else e.exit_code
        fail(_usage_message(e), code, json_mode)
    except TierVaultError as e:
        fail(str(e), e.exit_code, json_mode)
    except Terminated:
        fail("terminated", EXIT_TERMINATED, json_mode)
    except KeyboardInterrupt:
        fail("interrupted", 130, json_mode)
    except BrokenPipeError:
        sys.exit(1)
    except sqlite3.OperationalError as e:
        # The installation's state database (HOME/state.db, files-cache.db) could
        # not be used: busy beyond its 30 s timeout, or the disk refuses it.
        fail(f"the installation's state database could not be used ({e}); if another "
             "tiervault process of this installation is running, try again when it ends",
             1, json_mode)
