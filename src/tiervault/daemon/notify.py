"""Notifications: a command and/or a webhook told about events that need a person.

Events: ``session_failed`` (a backup job failed), ``tier_offline`` (a tier has
been unreachable longer than ``tier_offline_hours``), ``tier_refused`` (a tier
refuses access: a changed password, host key or certificate; sent at once) and
``second_installation`` (another installation wrote to the vault).

The command runs with ``sh -c`` and gets ``TIERVAULT_EVENT``,
``TIERVAULT_MESSAGE`` (and ``TIERVAULT_SET``/``TIERVAULT_SESSION_ID``/
``TIERVAULT_TIER`` when they apply) in its environment and the event as JSON
on standard input, and none of the daemon's secrets (daemon/childenv.py).
The webhook receives the same JSON by HTTP POST.
Notifying never fails the daemon: errors are logged.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tiervault.daemon.childenv import child_env
from tiervault.daemon.sets import NotifySettings
from tiervault.state.db import iso_time

log = logging.getLogger("tiervault.daemon")

SESSION_FAILED = "session_failed"
TIER_OFFLINE = "tier_offline"
SECOND_INSTALLATION = "second_installation"
#: A tier refuses access (login, host key, certificate): sent at once, not after hours.
TIER_REFUSED = "tier_refused"


class Notifier:
    """Sends events to the configured command and webhook (in the background)."""

    def __init__(self, settings: NotifySettings,
                 sent: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.settings = settings
        self._sent = sent
        self._threads: list[threading.Thread] = []

    def notify(self, event: str, message: str, **fields: Any) -> dict[str, Any]:
        """Send one event; returns the document sent."""
        doc = {"event": event, "message": message, "time": iso_time(time.time()),
               "host": socket.gethostname(), **fields}
        log.warning("notify %s: %s", event, message)
        if self._sent is not None:
            self._sent(doc)
        if self.settings.command or self.settings.webhook:
            t = threading.Thread(target=self._deliver, args=(doc,), daemon=True,
                                 name="notify")
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()
        return doc

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for deliveries in flight (at shutdown, and in tests)."""
        end = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, end - time.monotonic()))

    def _deliver(self, doc: dict[str, Any]) -> None:
        s = self.settings
        if s.command:
            env = {"TIERVAULT_EVENT": str(doc["event"]), "TIERVAULT_MESSAGE": str(doc["message"])}
            for k in ("set", "session_id", "tier"):
                if doc.get(k) is not None:
                    env[f"TIERVAULT_{k.upper()}"] = str(doc[k])
            res = _run_with_stdin(s.command, s.timeout, env, json.dumps(doc))
            if res:
                log.error("notification command failed: %s", res)
        if s.webhook:
            try:
                req = urllib.request.Request(
                    s.webhook, data=json.dumps(doc).encode(), method="POST",
                    headers={"Content-Type": "application/json",
                             "User-Agent": "tiervault-daemon"})
                with urllib.request.urlopen(req, timeout=s.timeout) as r:
                    r.read(1024)
            except (OSError, ValueError) as e:
                log.error("notification webhook failed: %s", e)


def _run_with_stdin(command: str, timeout: float, env: dict[str, str], data: str) -> str:
    """Run the command with ``data`` on stdin; '' on success, else what went wrong."""
    import os
    import subprocess

    full = child_env(os.environ, env)
    try:
        p = subprocess.run(["/bin/sh", "-c", command], input=data.encode(), timeout=timeout,
                           capture_output=True, env=full, start_new_session=True)
    except subprocess.TimeoutExpired:
        return f"{command!r} timed out after {timeout:g} s"
    except OSError as e:
        return f"{command!r}: {e.strerror or e}"
    if p.returncode != 0:
        return f"{command!r} exited with {p.returncode}: " \
               f"{p.stderr.decode(errors='replace').strip()[-500:]}"
    return ""

