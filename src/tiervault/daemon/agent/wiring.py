"""Starting the agent for a running daemon (called by ``run_daemon`` when enrolled)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from tiervault.daemon.agent.agent import Agent, LogTail, started_at
from tiervault.daemon.agent.checkin import build_checkin
from tiervault.daemon.agent.client import AgentClient
from tiervault.daemon.agent.commands import DaemonPort, Executor
from tiervault.daemon.agent.journal import Journal
from tiervault.daemon.agent.reports import Outbox
from tiervault.daemon.agent.settings import load_console, read_credential, write_credential
from tiervault.errors import TierVaultError
from tiervault.protocol.messages import CheckIn
from tiervault.service.installation import Installation
from tiervault.state.config import load_config

log = logging.getLogger("tiervault.daemon")


class StatusDaemon(DaemonPort, Protocol):
    """The daemon as the agent sees it."""

    def status(self) -> dict[str, Any]:
        """The daemon's state (``tiervault status``)."""


def _sets_json(daemon: StatusDaemon) -> list[dict[str, Any]]:
    out = []
    for name, bs in sorted(daemon.sets.items()):
        out.append({"name": name, "paths": list(getattr(bs, "paths", [])),
                    "schedules": [s.spec for s in getattr(bs, "schedules", [])],
                    "retention": getattr(bs, "retention", None) or {}})
    return out


def _selected(inst: Installation) -> int | None:
    """Bytes selected by the last backup of each set, added up."""
    seen: dict[str, int] = {}
    for s in inst.db.sessions(200, kinds=("job",)):
        d = s["details"]
        if d.get("set") and d.get("set") not in seen and "bytes_selected" in d:
            seen[d["set"]] = int(d["bytes_selected"] or 0)
    return sum(seen.values()) if seen else None


def reenrolment(inst: Installation, current: AgentClient
                ) -> tuple[AgentClient, float] | None:
    """A client for a newer enrolment than ``current`` (``tiervault enrol`` again while the
    daemon runs: another credential, URL or pinned certificate), with its interval; None
    when unchanged."""
    credential = read_credential(inst.home)
    try:
        cs = load_console(load_config(inst.home) or inst.config)
    except TierVaultError:
        return None   # a half-written or broken [console]: keep the current one
    if credential is None or cs is None:
        return None
    if (cs.url, cs.fingerprint, credential) == (current.url, current.fingerprint,
                                                current.credential):
        return None
    return AgentClient(cs.url, cs.fingerprint, credential), cs.interval


def activity(daemon: object) -> tuple[int, int, bool]:
    """What changes when a job or an idle synchronization starts or ends (cheap to read).

    The idle round's handle stays set after the round ends: whether it is alive is what
    tells that a synchronization ended."""
    handle = getattr(daemon, "_idle_handle", None)
    alive = handle is not None and bool(getattr(handle, "is_alive", lambda: False)())
    return (id(getattr(daemon, "running", None)), id(handle), alive)


def start_agent(inst: Installation, daemon: StatusDaemon, passphrase: str) -> Agent | None:
    """The running agent, or None when the installation is not enrolled."""
    cs = load_console(inst.config)
    if cs is None:
        return None
    credential = read_credential(inst.home)
    if credential is None:
        log.warning("console: %s is configured but %s/console.credential is missing; run "
                    "'tiervault enrol' again", cs.url, inst.home)
        return None
    tail = LogTail()
    logging.getLogger("tiervault.daemon").addHandler(tail)
    journal = Journal(inst.db)
    install_id = inst.config.installation_id or "device"
    outbox = Outbox(inst.db, install_id, started_at(), journal)
    client = AgentClient(cs.url, cs.fingerprint, credential)
    agent_ref: list[Agent] = []
    executor = Executor(daemon, inst.db, journal, inst.home, install_id, passphrase, tail.text,
                        stopping=lambda: bool(agent_ref) and agent_ref[0].stopping())

    def checkin() -> CheckIn:
        st = daemon.status()
        running = st.get("running") or {}
        rid = str(running.get("request_id"))
        cmd = journal.command_of(rid)
        return build_checkin(st, list(inst.config.tiers), inst.db, _sets_json(daemon),
                             _selected(inst), {}, {rid: cmd} if cmd else {})

    def keep(credential: str) -> None:
        write_credential(inst.home, credential)

    agent = Agent(client, cs.interval, executor, outbox, journal, checkin, on_rotate=keep,
                  refresh=lambda current: reenrolment(inst, current),
                  activity=lambda: activity(daemon))
    agent_ref.append(agent)
    agent.start()
    log.info("console agent started (%s, every %g s)", cs.url, cs.interval)
    return agent
