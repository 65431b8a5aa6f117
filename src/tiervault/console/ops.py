"""What the management CLI asks of a console, done either on the store (``--data DIR``)
or over the JSON API (``--url URL`` + API token). Both return the same JSON objects."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from tiervault.console.services.devices import DeviceQuery

T = TypeVar("T")


class Ops(Protocol):
    """The management operations of `tiervault console ...`."""

    def devices(self, q: DeviceQuery) -> tuple[list[dict[str, Any]], int]: ...
    def device(self, ref: str) -> dict[str, Any]: ...
    def device_sessions(self, ref: str, limit: int) -> list[dict[str, Any]]: ...
    def revoke_device(self, ref: str) -> dict[str, Any]: ...
    def rotate_device(self, ref: str) -> dict[str, Any]: ...
    def send(self, devices: list[str], type_: str, params: dict[str, Any],
             ttl: int | None) -> list[dict[str, Any]]: ...
    def commands(self, device: str | None, state: str | None) -> list[dict[str, Any]]: ...
    def command(self, command_id: str) -> dict[str, Any]: ...
    def cancel(self, command_id: str) -> dict[str, Any]: ...
    def create_token(self, customer: str, site: str | None, ttl: int, uses: int,
                     profile: dict[str, Any] | None) -> dict[str, Any]: ...
    def tokens(self) -> list[dict[str, Any]]: ...
    def revoke_token(self, token_id: str) -> dict[str, Any]: ...
    def add_user(self, name: str, password: str) -> dict[str, Any]: ...
    def create_api_token(self, user: str) -> dict[str, Any]: ...
    def revoke_api_token(self, token_id: str) -> dict[str, Any]: ...
    def customers(self) -> list[dict[str, Any]]: ...
    def set_thresholds(self, name: str, green_hours: int | None,
                       orange_hours: int | None) -> dict[str, Any]: ...


class LocalOps:
    """On the console's own store (the host running `serve`)."""

    def __init__(self, data_dir: Any, database_url: str | None) -> None:
        from pathlib import Path

        from tiervault.console.context import AppContext, Settings
        from tiervault.console.serve import read_serve_info
        from tiervault.console.services.actor import Actor
        from tiervault.console.store.migrate import ensure_current

        self.data_dir = Path(data_dir)
        settings = Settings(data_dir=self.data_dir, database_url=database_url)
        info = read_serve_info(self.data_dir)
        settings.public_url = info.get("url")
        settings.fingerprint = info.get("fingerprint")
        settings.package = str(info.get("package") or "tiervault")
        self.ctx = AppContext.create(settings)
        ensure_current(self.ctx.db)
        self.actor = Actor("user", "cli", f"cli:{getpass.getuser()}")

    def _db(self, fn: Callable[[Session], T]) -> T:
        with self.ctx.db.session() as s:
            return fn(s)

    def devices(self, q: DeviceQuery) -> tuple[list[dict[str, Any]], int]:
        from tiervault.console.services import devices
        return self._db(lambda s: devices.query(s, self.ctx.clock, self.actor, q))

    def device(self, ref: str) -> dict[str, Any]:
        from tiervault.console.services import devices
        return self._db(lambda s: devices.get(s, self.ctx.clock, self.actor,
                                              devices.find(s, ref).id))

    def device_sessions(self, ref: str, limit: int) -> list[dict[str, Any]]:
        from tiervault.console.services import devices, sessions
        return self._db(lambda s: sessions.of_device(s, self.actor, devices.find(s, ref).id,
                                                     limit))

    def revoke_device(self, ref: str) -> dict[str, Any]:
        from tiervault.console.services import devices
        dev_id = self._db(lambda s: devices.revoke(s, self.ctx.clock, self.actor, ref).id)
        return self.device(dev_id)

    def rotate_device(self, ref: str) -> dict[str, Any]:
        from tiervault.console.services import devices
        dev = self._db(lambda s: devices.request_rotation(s, self.ctx.clock, self.actor, ref))
        return {"id": dev.id, "rotate_pending": True}

    def send(self, devices: list[str], type_: str, params: dict[str, Any],
             ttl: int | None) -> list[dict[str, Any]]:
        from tiervault.console.services import commands
        from tiervault.console.store.models import Device

        def work(s: Session) -> list[dict[str, Any]]:
            rows = commands.queue(s, self.ctx.clock, self.actor, devices, type_, params, ttl)
            return [commands.to_json(r, s.get(Device, r.device_id)) for r in rows]
        out = self._db(work)
        self.ctx.waker.notify(c["device"] for c in out)
        return out

    def commands(self, device: str | None, state: str | None) -> list[dict[str, Any]]:
        from tiervault.console.services import commands, devices

        def work(s: Session) -> list[dict[str, Any]]:
            dev_id = devices.find(s, device).id if device else None
            return commands.listing(s, self.ctx.clock, self.actor, dev_id, state)
        return self._db(work)

    def command(self, command_id: str) -> dict[str, Any]:
        from tiervault.console.services import commands
        return self._db(lambda s: commands.show(s, self.ctx.clock, self.actor, command_id))

    def cancel(self, command_id: str) -> dict[str, Any]:
        from tiervault.console.services import commands
        self._db(lambda s: commands.cancel(s, self.ctx.clock, self.actor, command_id))
        return self.command(command_id)

    def create_token(self, customer: str, site: str | None, ttl: int, uses: int,
                     profile: dict[str, Any] | None) -> dict[str, Any]:
        from tiervault.console.services import tokens

        def work(s: Session) -> dict[str, Any]:
            tok, secret = tokens.create_enrol(s, self.ctx.clock, self.actor, customer, site,
                                              ttl, uses, profile)
            out = tokens.enrol_json(s, tok, self.ctx.clock)
            out["token"] = secret
            out["command"] = tokens.unattended_command(
                self.ctx.settings.public_url, secret, self.ctx.settings.fingerprint,
                self.ctx.settings.package)
            return out
        return self._db(work)

    def tokens(self) -> list[dict[str, Any]]:
        from tiervault.console.services import tokens
        return self._db(lambda s: [tokens.enrol_json(s, t, self.ctx.clock)
                                   for t in tokens.list_enrol(s, self.actor)])

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        from tiervault.console.services import tokens
        return self._db(lambda s: tokens.enrol_json(
            s, tokens.revoke_enrol(s, self.ctx.clock, self.actor, token_id), self.ctx.clock))

    def add_user(self, name: str, password: str) -> dict[str, Any]:
        from tiervault.console.services import users
        return self._db(lambda s: users.to_json(users.add(s, self.ctx.clock, self.actor, name,
                                                          password)))

    def create_api_token(self, user: str) -> dict[str, Any]:
        from tiervault.console.services import tokens

        def work(s: Session) -> dict[str, Any]:
            tok, secret = tokens.create_api(s, self.ctx.clock, self.actor, user)
            return {**tokens.api_json(tok, user), "token": secret}
        return self._db(work)

    def revoke_api_token(self, token_id: str) -> dict[str, Any]:
        from tiervault.console.services import tokens
        from tiervault.console.store.models import User

        def work(s: Session) -> dict[str, Any]:
            tok = tokens.revoke_api(s, self.ctx.clock, self.actor, token_id)
            u = s.get(User, tok.user_id)
            return tokens.api_json(tok, u.name if u else "")
        return self._db(work)

    def customers(self) -> list[dict[str, Any]]:
        from tiervault.console.services import customers
        return self._db(lambda s: customers.listing(s, self.actor))

    def set_thresholds(self, name: str, green_hours: int | None,
                       orange_hours: int | None) -> dict[str, Any]:
        from tiervault.console.services import customers

        def work(s: Session) -> dict[str, Any]:
            cust = customers.set_thresholds(s, self.ctx.clock, self.actor, name, green_hours,
                                            orange_hours)
            return customers.show(s, self.actor, cust.id)
        return self._db(work)


def query_params(q: DeviceQuery) -> dict[str, Any]:
    """A DeviceQuery as URL query parameters (None left out)."""
    return {k: v for k, v in asdict(q).items() if v is not None}
