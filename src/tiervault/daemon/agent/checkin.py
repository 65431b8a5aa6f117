"""The periodic check-in: version, OS, host, tiers, the running job, sets."""

from __future__ import annotations

import os
import platform
import socket
from datetime import datetime
from typing import Any, Protocol

from tiervault import __version__
from tiervault.protocol.messages import MAX_NAME, MAX_TIERS, CheckIn, RunningJob, TierState
from tiervault.service.session import tier_key
from tiervault.state.config import bare_url
from tiervault.state.db import TierRecord


class TierSource(Protocol):
    """The state database's tier records."""

    def tier(self, url: str) -> TierRecord:
        """The record of one tier."""


def os_name() -> str:
    """``Linux 6.1`` / ``Darwin 23.1`` (what the dashboard shows)."""
    return f"{platform.system()} {platform.release()}"[:MAX_NAME]


def host_name() -> str:
    """This machine's name."""
    return socket.gethostname()[:MAX_NAME]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(
        timespec="seconds")


def _role(url: str) -> str:
    return "speed-vault" if "://" not in url or url.startswith("file://") else "server"


def _local_used(url: str) -> int | None:
    """Bytes under a local tier (apparent size); None for a server or a missing path."""
    path = url[7:] if url.startswith("file://") else url
    if "://" in path or not os.path.isdir(path):
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def tier_states(urls: list[str], db: TierSource, live: list[dict[str, Any]],
                used: dict[str, int]) -> list[TierState]:
    """Each tier as the console shows it; ``live`` is the last idle round's view and
    ``used`` the bytes each tier held after the last backup that reached it."""
    now_state = {t.get("url"): t.get("state") for t in live}
    seen = {t.get("url"): t.get("seen") or 0.0 for t in live}
    top = max([db.tier(tier_key(u)).revision for u in urls] or [0])
    out = []
    for url in urls[:MAX_TIERS]:
        rec = db.tier(tier_key(url))
        # A sync in progress is written to the record as it goes; the idle round's view
        # is from the end of the last round.
        state = "syncing" if rec.state == "syncing" else \
            now_state.get(tier_key(url)) or rec.state or "offline"
        if rec.first_offline is not None and rec.first_offline > seen.get(tier_key(url), 0.0) \
                and state != "syncing":
            state = "offline"   # a session found it offline after the idle round saw it
        if state == "online" and rec.revision < top:
            state = "unsynchronized"
        pct = None
        if state == "syncing" and rec.sync_total:
            pct = round(100.0 * (rec.sync_done or 0) / rec.sync_total, 1)
        elif state == "online":
            pct = 100.0
        size = _local_used(url)
        out.append(TierState(url=bare_url(url), state=state, revision=rec.revision,
                             last_online=_iso(rec.last_online),
                             used_bytes=size if size is not None else used.get(url),
                             sync_percent=pct, role=_role(url)))
    return out


def running_job(status: dict[str, Any], command_of: dict[str, str]) -> RunningJob | None:
    """The daemon's running job (or handed-over command), with its progress."""
    r = status.get("running")
    if not r:
        return None
    prog = r.get("progress") or {}
    kind = "backup" if r.get("set") else "other"
    return RunningJob(kind=kind, set=r.get("set") or None, started=r.get("started"),
                      files=int(prog.get("files_done") or 0),
                      bytes=int(prog.get("bytes_done") or 0), phase=prog.get("phase"),
                      command_id=command_of.get(str(r.get("request_id"))))


def build_checkin(status: dict[str, Any], urls: list[str], db: TierSource,
                  sets: list[dict[str, Any]], selected: int | None,
                  used: dict[str, int], command_of: dict[str, str]) -> CheckIn:
    """The check-in message."""
    return CheckIn(version=__version__, os=os_name(), host=host_name(),
                   tiers=tier_states(urls, db, list(status.get("tiers") or []), used),
                   running=running_job(status, command_of), selected_bytes=selected,
                   sets=sets)
