"""Where an installation lives, and the lock that keeps one writer at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from tiervault.errors import LockedError


def resolve_home(cli_home: str | None, env: dict[str, str]) -> Path:
    """``--home``, else ``TIERVAULT_HOME``, else the user's config directory."""
    if cli_home:
        return Path(cli_home).expanduser().absolute()
    if env.get("TIERVAULT_HOME"):
        return Path(env["TIERVAULT_HOME"]).expanduser().absolute()
    import platformdirs  # only here: most runs name their home

    return Path(platformdirs.user_config_dir("tiervault")).absolute()


class InstallationLock:
    """An exclusive flock on ``home/lock``.

    The kernel drops a flock when its process dies, so a lock left by a killed
    process is simply taken over; a live holder is reported with its pid.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise LockedError naming the holder (idempotent)."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(
                f"another tiervault process (pid {holder}) is using {self.path.parent}; "
                "wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def held_elsewhere(self) -> bool:
        """True if another process holds the lock right now."""
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstallationLock:
        self.acquire()
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
