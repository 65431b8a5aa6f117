"""The console's errors: one line each, with an exit code (CLI) and an HTTP status (API).

Exit codes: 0 ok, 1 failed, 2 usage / bad value / extra missing, 3 not found,
4 refused (auth), 5 console unreachable.
"""

from __future__ import annotations

from tiervault.errors import TierVaultError

EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5


class ConsoleError(TierVaultError):
    """Base of the console's errors; ``status`` is the HTTP status the API answers."""

    exit_code = 1
    status = 409


class BadValue(ConsoleError):
    """A value is not acceptable (a bad type, a name too long, an unknown command type)."""

    exit_code = 2
    status = 400


class NotFound(ConsoleError):
    """No such device, command, token or user."""

    exit_code = EXIT_NOT_FOUND
    status = 404


class Refused(ConsoleError):
    """Authentication failed or the actor may not do this."""

    exit_code = EXIT_REFUSED
    status = 401


class Forbidden(Refused):
    """Authenticated, but not allowed."""

    status = 403


class Conflict(ConsoleError):
    """The request does not fit the current state (cancel a delivered command...)."""

    exit_code = 1
    status = 409


class Unreachable(ConsoleError):
    """The console did not answer (remote --url mode)."""

    exit_code = EXIT_UNREACHABLE
    status = 503


def from_store_error(e: BaseException) -> ConsoleError | None:
    """One line for a failure of the console's database or data directory (else None).

    A bad ``--database-url``, a PostgreSQL that does not answer, a data directory that is
    read-only or full: what failed and what to do, never a traceback.
    """
    from sqlalchemy import exc

    first = str(getattr(e, "orig", None) or e).strip().splitlines()
    detail = first[0] if first else type(e).__name__
    if isinstance(e, exc.NoSuchModuleError | exc.ArgumentError | ImportError):
        return BadValue("--database-url: not a database URL the console can use (sqlite:///PATH "
                        "or postgresql+psycopg://USER:PASS@HOST/DB)")
    if isinstance(e, exc.OperationalError):
        if "sqlite" in type(getattr(e, "orig", e)).__module__:
            return ConsoleError(f"the console's database: {detail}; check that the data "
                                "directory is writable and has free space")
        return Unreachable(f"cannot reach the console's database: {detail}; check "
                           "--database-url and that the database server runs")
    if isinstance(e, exc.SQLAlchemyError):
        return ConsoleError(f"the console's database: {detail}")
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return ConsoleError(f"{e.strerror or e}{where}; check the console's data directory "
                            "(permissions, free space)")
    return None
