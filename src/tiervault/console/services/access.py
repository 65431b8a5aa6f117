"""Permission checks: every route and service goes through ``require`` (one place).

Today every user (and API token) may do everything of the management side, and a device
only its own agent routes. The next issue (roles and scopes) changes the table, not the
callers.
"""

from __future__ import annotations

from tiervault.console.errors import Forbidden
from tiervault.console.services.actor import Actor

#: Actions a device may do, on its own device id only.
AGENT_ACTIONS = frozenset({"agent.checkin", "agent.sessions", "agent.commands",
                           "agent.command_update", "agent.rotate"})
#: Actions of people and scripts (management side).
MANAGE_ACTIONS = frozenset({
    "devices.read", "devices.revoke", "devices.rotate", "devices.browse",
    "commands.read", "commands.send", "commands.cancel",
    "tokens.read", "tokens.create", "tokens.revoke",
    "users.create", "users.read", "api_tokens.create", "api_tokens.revoke",
    "customers.read", "customers.update",
})


def allowed(actor: Actor, action: str, target: str | None = None) -> bool:
    """True when ``actor`` may do ``action`` on ``target`` (a device id, ...)."""
    if actor.kind == "system":
        return True
    if actor.kind == "device":
        return action in AGENT_ACTIONS and target == actor.id
    if actor.kind in ("user", "api"):
        return action in MANAGE_ACTIONS
    return False


def require(actor: Actor, action: str, target: str | None = None) -> None:
    """Raise Forbidden unless ``actor`` may do ``action`` on ``target``."""
    if not allowed(actor, action, target):
        raise Forbidden(f"{actor.label} may not {action}"
                        + (f" on {target}" if target else ""))
