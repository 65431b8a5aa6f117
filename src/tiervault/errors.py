"""Typed errors shared by every layer, each carrying its documented exit code.

The CLI turns any ``TierVaultError`` into one line on stderr and its exit code;
anything else is a bug and gets a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SECOND_INSTALLATION = 3
EXIT_WRONG_KEY = 4
EXIT_WAIT_TIMEOUT = 5
EXIT_INCOMPLETE = 6
EXIT_INTERRUPTED = 130


class TierVaultError(Exception):
    """Base of every error the user may see; the message is one line."""

    exit_code = EXIT_ERROR


class UsageError(TierVaultError):
    """The command line or configuration asks for something impossible."""

    exit_code = EXIT_USAGE


class BackendError(TierVaultError):
    """A storage operation failed."""


class NotFoundError(BackendError):
    """The file does not exist on the backend (a definite answer: not retried)."""


class TransientError(BackendError):
    """A transport failure (connection refused, timeout, unplugged disk): retried."""


class UnpluggedError(TransientError):
    """The location answered that it is not there (an unplugged disk): the tier is
    offline, but this is a definite answer, so it is not retried."""


class PermanentError(BackendError):
    """A definite refusal (permission denied, disk full, auth failed): not retried."""


class IntegrityError(TierVaultError):
    """Stored data failed authentication or does not parse: try another tier."""


class WrongKeyError(TierVaultError):
    """The passphrase opens none of the vault's key files."""

    exit_code = EXIT_WRONG_KEY


class SecondInstallationError(TierVaultError):
    """Another installation has written to this vault since we last did."""

    exit_code = EXIT_SECOND_INSTALLATION


class WaitTimeoutError(TierVaultError):
    """No tier came online within --wait-timeout."""

    exit_code = EXIT_WAIT_TIMEOUT


class LockedError(TierVaultError):
    """Another process of this installation is running."""


class Interrupted(TierVaultError):
    """The command was interrupted (SIGINT) and is stopping at a safe point."""

    exit_code = EXIT_INTERRUPTED
