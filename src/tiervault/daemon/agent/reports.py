"""Session reports: the state database's sessions table, replayed in order.

The cursor (the highest session id the console acknowledged) is kept in the
state database, so reports wait there while the console is away and go out
oldest first when it answers again; the console keeps them idempotent by
session id (``<local id>@<installation id>``), so a batch sent twice (an answer
lost on the way back) is not counted twice.

Replay stops at the first session still running, so none is ever skipped; a
session left ``running`` by an earlier daemon process (it died) is reported
failed. Kinds the console does not show are passed over: ``backup`` rows are
the inner record of a daemon job (the ``job`` row is reported) or of a command
run directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from tiervault.daemon.agent.journal import Journal
from tiervault.protocol.messages import (
    MAX_BATCH,
    MAX_ERRORS,
    MAX_TEXT,
    SESSION_STATUSES,
    SessionError,
    SessionReport,
)
from tiervault.state.config import bare_url

CURSOR_KEY = "console.report_cursor"
ABANDONED = "the daemon stopped while this session ran"
#: state database kind -> reported kind (None: not reported).
KINDS: dict[str, str | None] = {"job": "backup", "sync": "sync", "command": "other",
                                "backup": None, "check": "check", "restore": "restore",
                                "retention": "retention"}
_COMMAND_KINDS = {"backup": "backup", "restore": "restore", "check": "check",
                  "retention": "retention", "forget": "retention", "prune": "retention",
                  "sync": "sync"}


class SessionSource(Protocol):
    """The state database as the outbox reads it."""

    def sessions_after(self, after: int, limit: int = 100) -> list[dict[str, Any]]:
        """Rows above ``after``, oldest first."""

    def get(self, key: str) -> str | None:
        """A small value."""

    def put(self, key: str, value: str | None) -> None:
        """Store a small value."""


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(
        timespec="seconds")


def _text(v: Any) -> str:
    return str(v)[:MAX_TEXT]


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _kind(row: dict[str, Any]) -> str | None:
    kind = KINDS.get(row["kind"], "other")
    if kind == "other":
        words = str(row["details"].get("command") or "").split()
        for w in words:
            if w in _COMMAND_KINDS:
                return _COMMAND_KINDS[w]
    return kind


def _errors(d: dict[str, Any], status: str) -> list[SessionError]:
    out: list[SessionError] = []
    if d.get("error"):
        out.append(SessionError(_text(d["error"])))
    for w in d.get("warnings") or []:
        if isinstance(w, dict):
            out.append(SessionError(_text(w.get("message", "")),
                                    _text(w["path"]) if w.get("path") else None))
    for r in d.get("results") or []:
        if isinstance(r, dict) and r.get("error"):
            out.append(SessionError(_text(f"{r.get('tier')}: {r['error']}")))
    if status == "failed" and not out:
        out.append(SessionError("failed (no message)"))
    return out[:MAX_ERRORS]


def _flags(d: dict[str, Any]) -> str:
    flags = ""
    if d.get("summary", {}).get("archived") if isinstance(d.get("summary"), dict) else False:
        flags += "A"
    if d.get("tiers_missed"):
        flags += "L"   # held on the speed vault only until the server is synchronized
    if d.get("complete") is False:
        flags += "P"   # some source files could not be read
    return flags


def build_report(row: dict[str, Any], install_id: str, journal: Journal | None,
                 abandoned: bool = False) -> SessionReport:
    """One session row as the protocol's report."""
    d = row["details"]
    status = "failed" if abandoned else str(row["status"] or "failed")
    if status not in SESSION_STATUSES:
        status = "failed"
    if abandoned:
        d = dict(d, error=ABANDONED)
    command_id = d.get("command_id") or (None if journal is None else (
        journal.command_of(d.get("request_id")) or journal.command_of_pid(d.get("pid"))))
    tiers = d.get("tiers_received") or []
    return SessionReport(
        session_id=f"{row['id']}@{install_id}", kind=_kind(row) or "other", status=status,
        started=_iso(row["started"]) or "", ended=_iso(row["ended"]),
        set=d.get("set"), snapshot=d.get("snapshot_id"),
        files_selected=_int(d.get("files_selected")),
        bytes_selected=_int(d.get("bytes_selected")),
        files_processed=_int(d.get("files_processed")),
        bytes_processed=_int(d.get("bytes_processed")), bytes_sent=_int(d.get("bytes_sent")),
        flags=_flags(d), tiers_received=[bare_url(str(t)) for t in tiers][:16],
        errors=_errors(d, status), command_id=command_id)


class Outbox:
    """Which sessions the console still has to receive."""

    def __init__(self, db: SessionSource, install_id: str, started: float,
                 journal: Journal | None = None) -> None:
        self.db = db
        self.install_id = install_id
        self.started = started   # rows running since before this are abandoned
        self.journal = journal

    def cursor(self) -> int:
        """The highest session id the console acknowledged."""
        try:
            return int(self.db.get(CURSOR_KEY) or 0)
        except ValueError:
            return 0

    def pending(self, limit: int = MAX_BATCH) -> tuple[list[SessionReport], int]:
        """The next reports in order, and the cursor once the console holds them."""
        cursor = self.cursor()
        out: list[SessionReport] = []
        for row in self.db.sessions_after(cursor, limit * 4):
            if _kind(row) is None:
                cursor = row["id"]   # never reported, so it holds nothing back
                continue
            running = row["status"] == "running" or row["ended"] is None
            abandoned = running and (row["started"] or 0) < self.started
            if running and not abandoned:
                break   # in order: nothing after a session that is still running
            out.append(build_report(row, self.install_id, self.journal, abandoned))
            cursor = row["id"]
            if len(out) >= limit:
                break
        return out, cursor

    def advance(self, cursor: int) -> None:
        """The console holds every report up to ``cursor``."""
        if cursor > self.cursor():
            self.db.put(CURSOR_KEY, str(cursor))
