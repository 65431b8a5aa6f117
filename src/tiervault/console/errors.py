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
