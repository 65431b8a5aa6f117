"""Who does an action: a user, an API token (acting as its user), a device, the system."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """``label`` is what the audit log records: a user name, "api:<token id>",
    "device:<id>" or "system"."""

    kind: str                      # "user", "api", "device", "system"
    id: str                        # user id, token id, device id, or "system"
    user: str | None = None        # the user's name (for "user" and "api")

    @property
    def label(self) -> str:
        """The audit log's name for this actor."""
        if self.kind == "user":
            return self.user or self.id
        if self.kind == "system":
            return "system"
        return f"{self.kind}:{self.id}"


SYSTEM = Actor("system", "system")


def user_actor(user_id: str, name: str) -> Actor:
    """A logged-in user."""
    return Actor("user", user_id, name)


def api_actor(token_id: str, user_name: str) -> Actor:
    """A script with an API token of ``user_name``."""
    return Actor("api", token_id, user_name)


def device_actor(device_id: str) -> Actor:
    """A device on its agent routes."""
    return Actor("device", device_id)
