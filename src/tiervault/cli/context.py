"""Command context: global options, passphrases, opened sessions, --json."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from tiervault.cli.interrupt import stop_on_sigint
from tiervault.cli.output import TextProgress
from tiervault.errors import Interrupted, UsageError
from tiervault.service.installation import Installation, RunOptions

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Ctx:
    """Global options, read once."""

    home: Path
    json: bool
    opts: RunOptions
    password_file: str | None
    quiet: bool = False  # -q: no progress, no informational lines
    verbose: int = 0  # -v: list each file (backup, restore)

    def progress(self) -> TextProgress:
        """A progress printer fitting the output mode."""
        return TextProgress(self.json, quiet=self.quiet, verbose=self.verbose)

    def passphrase(self, confirm: bool = False) -> str:
        """From --password-file, TIERVAULT_PASSWORD, or a prompt on a terminal."""
        if self.password_file:
            try:
                with open(self.password_file, encoding="utf-8") as f:
                    pw = f.readline().rstrip("\r\n")
            except OSError as e:
                raise UsageError(f"cannot read --password-file: {e.strerror}") from None
            if not pw:
                raise UsageError("the --password-file is empty")
            return pw
        env = self.opts.env.get("TIERVAULT_PASSWORD")
        if env:
            return env
        if not sys.stdin.isatty():
            raise UsageError("no passphrase: set TIERVAULT_PASSWORD, use --password-file, "
                             "or run on a terminal")
        pw = click.prompt("passphrase", hide_input=True, confirmation_prompt=confirm,
                          err=True)
        if not pw:
            raise UsageError("an empty passphrase is not allowed")
        return str(pw)

    def passphrase_if_available(self) -> str | None:
        """The passphrase if one is configured or can be asked for; else None."""
        if self.password_file or self.opts.env.get("TIERVAULT_PASSWORD") or \
                sys.stdin.isatty():
            return self.passphrase()
        return None

    def new_passphrase(self, new_password_file: str | None) -> str:
        """The new passphrase for key add/passwd: file, TIERVAULT_NEW_PASSWORD or prompt."""
        if new_password_file:
            return Ctx(self.home, self.json, self.opts, new_password_file).passphrase()
        env = self.opts.env.get("TIERVAULT_NEW_PASSWORD")
        if env:
            return env
        if not sys.stdin.isatty():
            raise UsageError("no new passphrase: set TIERVAULT_NEW_PASSWORD or use "
                             "--new-password-file")
        pw = click.prompt("new passphrase", hide_input=True, confirmation_prompt=True,
                          err=True)
        if not pw:
            raise UsageError("an empty passphrase is not allowed")
        return str(pw)

    def installation(self) -> Installation:
        """The configured installation (its whole config.toml validated)."""
        from tiervault.cli.config_check import check_daemon_tables

        inst = Installation.load(self.home, self.opts)
        check_daemon_tables(inst.config, self.home)
        return inst


def _set_json(c: click.Context, _p: click.Parameter, value: bool) -> None:
    if value and isinstance(c.obj, Ctx):
        c.obj.json = True


def json_option(fn: F) -> F:
    """``--json`` after the command name too (``tiervault snapshots --json``)."""
    return click.option("--json", "json_", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_json, help="Machine-readable output.")(fn)  # type: ignore[return-value]


def with_session(lock: bool = False, load_index: bool = True,
                 write: bool = False, write_flag: str | None = None) -> Callable[[F], F]:
    """Give a command an opened vault session (and the write lock if asked).

    Write commands get ``--wait-timeout`` and ``--no-sync``: when they finish,
    the application is idle and synchronizes stale tiers before exiting.
    """

    def writes_of(kwargs: dict[str, Any]) -> bool:
        # Dry runs only say what a write would do: like reads, they need no lock.
        return (write or lock or bool(write_flag and kwargs.get(write_flag))) and \
            not kwargs.get("dry_run")

    def deco(fn: F) -> F:
        def run(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
            from tiervault.service import repair
            from tiervault.service.session import VaultSession
            from tiervault.service.tierops import closing_sync, pack_references

            no_sync = kwargs.pop("no_sync", True)
            # A dry run (backup --dry-run) writes nothing: it runs as a read.
            dry = write and bool(kwargs.get("dry_run"))
            wait_timeout = kwargs.pop("wait_timeout", None)
            if wait_timeout is not None:
                ctx.opts.wait_timeout = wait_timeout
            elif not write:
                # Reads don't wait for tiers: probe once, then say what is offline.
                ctx.opts.wait_timeout = 0
            inst = ctx.installation()
            if write and not dry and inst.config.settings.read_only:
                inst.close()
                raise UsageError("this is a restore-only installation (attach --read-only); "
                                 "it never writes to the vault")
            # Commands that only read never write state or tiers, so they can run
            # beside a backup of the same installation without disturbing it.
            writes = writes_of(kwargs)
            try:
                if writes:
                    inst.lock()
                progress = ctx.progress()
                try:
                    sess = VaultSession(inst, ctx.passphrase(), progress, load_index=load_index,
                                        read_only=not writes)
                    try:
                        with stop_on_sigint(sess.stop):  # Ctrl-C stops the workers at once
                            code = fn(ctx, sess, *args, **kwargs)
                            repair.record_damage(sess.tiers)
                            if write and not dry:
                                sess.end_writes()
                                if not no_sync:
                                    try:
                                        closing_sync(sess.tiers, progress, inst.sync_workers(),
                                                     pack_references(sess.repo), sess.repo,
                                                     inst.config.vault_id)
                                    except KeyboardInterrupt:
                                        raise Interrupted(
                                            "interrupted during the synchronization after "
                                            "the command: what the command did is saved; "
                                            "the tier left behind is synchronized by the "
                                            "daemon or by 'tiervault sync'") from None
                    finally:
                        sess.close()
                finally:
                    progress.close()
            finally:
                inst.close()
            if isinstance(code, int) and code:
                sys.exit(code)

        @click.pass_obj
        def wrapper(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
            from tiervault.cli.handoff import daemon_turn

            # A running daemon holds the lock: wait for it to lend it (cli/handoff.py).
            with daemon_turn(ctx.home, writes_of(kwargs)):
                return run(ctx, *args, **kwargs)

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        if write:
            wrapper = click.option("--no-sync", is_flag=True,
                                   help="Do not synchronize stale tiers afterwards.")(wrapper)
            wrapper = click.option("--wait-timeout", type=click.FloatRange(0),
                                   metavar="SECONDS",
                                   help="Give up (exit 5) if no tier is online this long.")(
                wrapper)
        return wrapper  # type: ignore[return-value]

    return deco
