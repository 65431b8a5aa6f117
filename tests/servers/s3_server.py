"""moto's standalone S3 server as a real subprocess, for backend and end-to-end tests.

The backend talks real HTTP to a separate process, so killing that process
is a genuine outage (connection refused), not a simulated one.

moto keeps everything in memory: after ``kill()``/``stop()`` and ``start()``
the server comes back on the same port but EMPTY -- every bucket and object
is gone, so a backend sees "bucket missing" (``TransientError``) until its
``create()`` runs again.
"""

from __future__ import annotations

import atexit
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import TracebackType
from typing import IO
from urllib.parse import quote

from tests.servers.ports import free_port

#: Fake credentials: moto accepts any, boto3 insists on having some.
ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret"
REGION = "us-east-1"

_START_TIMEOUT = 20.0


class MotoServerProcess:
    """A running ``moto.server`` subprocess on 127.0.0.1; started by the constructor.

    ``env`` adds environment variables for the server (for instance
    ``INITIAL_NO_AUTH_ACTION_COUNT=0`` makes moto check credentials);
    ``tls=True`` serves https with a self-signed, auto-generated certificate.
    """

    def __init__(self, port: int | None = None, env: Mapping[str, str] | None = None,
                 tls: bool = False) -> None:
        self.port = port if port is not None else free_port()
        self._env = dict(env or {})
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        atexit.register(self.kill)  # never leave a server behind a crashed test run
        self.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with ``tls``)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, bucket: str, prefix: str = "") -> str:
        """An ``s3://bucket/prefix?endpoint=...&region=us-east-1`` tier URL."""
        path = f"{bucket}/{prefix.strip('/')}" if prefix else bucket
        return f"s3://{path}?endpoint={quote(self.endpoint, safe=':/')}&region={REGION}"

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers HTTP.

        A restarted server is empty: moto keeps its state in memory only.
        """
        if self.running:
            return
        env = dict(os.environ)
        env.update({
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        })
        env.update(self._env)
        self._close_log()
        # Kept open across the process lifetime; closed by _close_log().
        self._log = tempfile.TemporaryFile(prefix="moto-")  # noqa: SIM115
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            argv.append("--ssl")
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        # The readiness check only needs an answer, not a trusted certificate.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited ({self._proc.returncode}):\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1,
                                            context=ctx):
                    return
            except urllib.error.HTTPError:
                return  # it answered, which is all we need
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"moto server did not answer on port {self.port}:\n{self.log_tail()}")

    def log_tail(self, size: int = 4000) -> str:
        """The end of the server's output, for failure messages."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        end = self._log.tell()
        self._log.seek(max(0, end - size))
        text = self._log.read().decode(errors="replace")
        self._log.seek(0, os.SEEK_END)
        return text

    def stop(self) -> None:
        """Terminate gracefully (SIGTERM, then SIGKILL after 5 s)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: the abrupt outage end-to-end tests simulate."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self._proc = None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MotoServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self._close_log()
