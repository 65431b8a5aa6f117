"""Pre- and post-backup scripts: a shell command with a timeout and a known environment.

The script gets ``TIERVAULT_SESSION_ID``, ``TIERVAULT_SET``, ``TIERVAULT_PHASE``
(``pre``/``post``) and, after the backup, ``TIERVAULT_RESULT`` (success,
warnings, failed, cancelled) and ``TIERVAULT_SNAPSHOT_ID``. Its standard
output and error are captured for the session log. The daemon's secrets
(passphrase, tier passwords) are not in its environment (daemon/childenv.py).
A script that outlives its timeout is killed with its whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from tiervault.daemon.childenv import child_env

MAX_OUTPUT = 64 * 1024  # bytes of output kept per script run


@dataclass
class ScriptResult:
    """How a script run ended."""

    command: str
    exit_code: int | None  # None: killed after the timeout, or could not start
    output: str
    duration: float
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Exited 0 within its time."""
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for logs and errors."""
        if self.error:
            return f"{self.command!r}: {self.error}"
        if self.timed_out:
            return f"{self.command!r} was killed after its timeout of {self.duration:.0f} s"
        return f"{self.command!r} exited with {self.exit_code}"


def run_script(command: str, timeout: float, env: dict[str, str], cwd: str | None = None,
               should_stop: Callable[[], bool] | None = None) -> ScriptResult:
    """Run ``command`` with ``sh -c``; never raises.

    ``should_stop`` is polled while it runs: when it turns true (the job was
    cancelled), the script is killed like one that timed out.
    """
    full_env = child_env(os.environ, env)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, start_new_session=True)
    except OSError as e:
        return ScriptResult(command, None, "", 0.0,
                            error=f"could not be started: {e.strerror or e}")
    timed_out = stopped = False
    deadline = start + timeout
    while True:
        try:
            out, _ = proc.communicate(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            stopped = should_stop is not None and should_stop()
            if time.monotonic() < deadline and not stopped:
                continue
            timed_out = not stopped
            _kill_group(proc)
            try:
                out, _ = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out = b""
            break
    text = out[-MAX_OUTPUT:].decode("utf-8", "replace") if out else ""
    if out and len(out) > MAX_OUTPUT:
        text = f"[... {len(out) - MAX_OUTPUT} bytes cut ...]\n" + text
    return ScriptResult(command, None if timed_out or stopped else proc.returncode, text,
                        time.monotonic() - start, timed_out,
                        "stopped: the job was cancelled" if stopped else None)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=2)
            return
        except subprocess.TimeoutExpired:
            continue
