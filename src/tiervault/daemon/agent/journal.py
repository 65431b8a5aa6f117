"""At-most-once execution of console commands, kept in the state database.

A command id is written as ``started`` (committed, synced) BEFORE the command
runs. A command seen again (the console delivers at least once) is never run
again: its recorded outcome is reported instead. One found ``started`` and not
finished when the agent starts belonged to a daemon that died while it ran: it
is reported failed, never re-run. Outcomes stay marked ``unsent`` until the
console has acknowledged them, so a result is not lost while the console is away.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Protocol

KEY = "console.commands"
REQUEST_KEY = "console.request."   # + a daemon job's request id -> the command id
PID_KEY = "console.pid."           # + a child's pid -> the command it runs (while it runs)
KEEP = 500                         # outcomes remembered (far more than a delivery window)
RESTARTED = "the device restarted while it ran; it was not run again"


class KV(Protocol):
    """The state database's small values."""

    def get(self, key: str) -> str | None:
        """A value."""

    def put(self, key: str, value: str | None) -> None:
        """Store (None deletes)."""


class Journal:
    """What became of each command this device was handed."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        raw = self.kv.get(KEY)
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        return doc if isinstance(doc, dict) else {}

    def _save(self, doc: dict[str, dict[str, Any]]) -> None:
        if len(doc) > KEEP:
            done = sorted((e.get("time", 0), k) for k, e in doc.items()
                          if e.get("state") != "started" and not e.get("unsent"))
            for _t, k in done[:len(doc) - KEEP]:
                del doc[k]
        self.kv.put(KEY, json.dumps(doc, separators=(",", ":")))

    def begin(self, command_id: str, ctype: str) -> bool:
        """Record ``command_id`` as started; False if it was ever seen (do not run it)."""
        with self._lock:
            doc = self._load()
            if command_id in doc:
                return False
            doc[command_id] = {"type": ctype, "state": "started", "time": time.time(),
                               "unsent": True}
            self._save(doc)
            return True

    def finish(self, command_id: str, state: str, result: dict[str, Any] | None,
               session_id: str | None = None) -> None:
        """Record the outcome (to be sent until acknowledged)."""
        with self._lock:
            doc = self._load()
            entry = doc.get(command_id, {"type": "?"})
            entry.update(state=state, result=result, session_id=session_id, time=time.time(),
                         unsent=True)
            doc[command_id] = entry
            self._save(doc)

    def acked(self, command_id: str) -> None:
        """The console holds the outcome."""
        with self._lock:
            doc = self._load()
            if command_id in doc and doc[command_id].get("state") != "started":
                doc[command_id]["unsent"] = False
                self._save(doc)

    def entry(self, command_id: str) -> dict[str, Any] | None:
        """The record of one command."""
        with self._lock:
            return self._load().get(command_id)

    def unsent(self) -> list[tuple[str, dict[str, Any]]]:
        """Outcomes not yet acknowledged, oldest first."""
        with self._lock:
            doc = self._load()
        return sorted(((k, e) for k, e in doc.items()
                       if e.get("unsent") and e.get("state") != "started"),
                      key=lambda kv: kv[1].get("time", 0))

    def recover(self) -> list[str]:
        """At start: every command left ``started`` is failed (the daemon died meanwhile)."""
        with self._lock:
            doc = self._load()
            lost = [k for k, e in doc.items() if e.get("state") == "started"]
            for k in lost:
                doc[k].update(state="failed", result={"error": RESTARTED}, time=time.time(),
                              unsent=True)
            if lost:
                self._save(doc)
            return lost

    def link_request(self, request_id: str, command_id: str) -> None:
        """A daemon job queued for a command: its session carries the command id."""
        self.kv.put(REQUEST_KEY + request_id, command_id)

    def command_of(self, request_id: str | None) -> str | None:
        """The command a daemon job was queued for, if any."""
        return None if not request_id else self.kv.get(REQUEST_KEY + request_id)

    def link_pid(self, pid: int, command_id: str | None) -> None:
        """A child process runs a command (None: it ended): the session it hands over to
        the daemon carries the command id."""
        self.kv.put(PID_KEY + str(pid), command_id)

    def command_of_pid(self, pid: object) -> str | None:
        """The command a child process with ``pid`` runs now, if any."""
        return None if not isinstance(pid, int) else self.kv.get(PID_KEY + str(pid))
