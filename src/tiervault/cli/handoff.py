"""Handing a write command over to the running daemon instead of refusing it.

The daemon holds the installation lock for its whole life, so a write command
typed while it runs (``backup PATH``, ``forget``, ``prune``, ``retention``,
``archive mark/release``, ``check --repair``, ``key add/passwd/remove``,
``sync``, ``tier add/remove/lost``)
would otherwise be refused forever. Instead the command asks the daemon, over
its control API, for a turn: it joins the daemon's queue (behind a running or
queued backup; an idle synchronization is aborted for it, as for any write),
and when its turn comes the daemon lends it the lock. The command then runs
here, in its own terminal, exactly as it would without a daemon (same output,
progress, ``--json`` and exit codes; Ctrl-C stops it as usual), and gives the
lock back when it ends. The daemon records it as a ``command`` session.
Ctrl-C while it waits takes it out of the queue. Reads and dry runs never
need the lock and run beside the daemon.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tiervault.errors import TierVaultError

if TYPE_CHECKING:
    from tiervault.cli.context import Ctx
    from tiervault.daemon.server import ControlClient

F = TypeVar("F", bound=Callable[..., Any])

#: How long an interrupted command tells the daemon it leaves the queue (seconds).
GIVE_BACK_TIMEOUT = 5.0
#: A command that waits longer than this says why on stderr.
TELL_AFTER = 1.0
_SECRET = re.compile(r"(://[^:/@\s]+):[^@/\s]*@")


def command_text(argv: list[str] | None = None) -> str:
    """The command as typed, passwords in URLs replaced by ``***``."""
    args = sys.argv[1:] if argv is None else argv
    return _SECRET.sub(r"\1:***@", shlex.join(args))


def _exit_code(e: BaseException) -> int:
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    if isinstance(e, TierVaultError):
        return e.exit_code
    if isinstance(e, KeyboardInterrupt | click.exceptions.Abort):
        return 130
    if isinstance(e, click.ClickException):
        return e.exit_code
    return 1


@contextmanager
def daemon_turn(home: Path, needed: bool = True) -> Iterator[None]:
    """Run the body when the installation's daemon (if one runs) lends it the lock.

    Without a running daemon, or when ``needed`` is false, the body runs at once.
    """
    # Imported here: quick commands never load the daemon's modules (test_cli_lazy).
    from tiervault.daemon.server import ControlClient, running_daemon

    doc = running_daemon(home) if needed else None
    if doc is None:
        yield
        return
    client = ControlClient(home)
    try:
        granted = _wait_turn(client, home, doc)
    except TierVaultError:
        if running_daemon(home) is not None:
            raise
        granted = None  # the daemon stopped meanwhile: the lock is free, run directly
    if granted is None:
        yield
        return
    rid = granted
    code = 0
    try:
        yield
    except BaseException as e:
        code = _exit_code(e)
        raise
    finally:
        _give_back(client, rid, code, cancelled=code == 130)


def _wait_turn(client: ControlClient, home: Path, doc: dict[str, object]) -> str:
    """Queue this command in the daemon and wait for its turn; returns its request id."""
    res = client.handoff(command_text(), os.getpid())
    rid = str(res["request_id"])
    start, told = time.monotonic(), False
    try:
        st = res
        while st.get("state") == "queued":
            if not told and time.monotonic() - start >= TELL_AFTER:
                told = True
                busy = st.get("running") or "a synchronization"
                click.echo(f"tiervault: the daemon (pid {doc.get('pid')}) is running {busy}; "
                           "this command waits its turn (Ctrl-C cancels it)", err=True)
            time.sleep(0.1)
            st = client.handoff_state(rid)
        if st.get("state") != "granted":
            raise TierVaultError("the daemon dropped this command before its turn; see its "
                                 "log, or run the command again")
    except BaseException:
        _give_back(client, rid, None, cancelled=True)
        raise
    return rid


def _give_back(client: ControlClient, rid: str, code: int | None, cancelled: bool) -> None:
    # Interrupted: tell the daemon, but do not keep a Ctrl-C waiting on a busy daemon (it
    # sees this process end by itself); a finished command waits as long as any request.
    if cancelled:
        client = type(client)(client.home, timeout=GIVE_BACK_TIMEOUT)
    try:
        client.handoff_done(rid, code, cancelled)
    except TierVaultError:
        # The daemon is gone or restarting: it sees this process end by itself.
        pass


def handed_over(fn: F) -> F:
    """Run a command that takes the lock itself (``sync``, ``tier ...``) in the daemon's turn.

    Goes right under ``@click.pass_obj``.
    """

    @functools.wraps(fn)
    def wrapper(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
        with daemon_turn(ctx.home):
            return fn(ctx, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
