"""``tiervault console ...``: serve, and the management commands (docs/cli.md).

The management commands work on the console's host with ``--data DIR`` (on its store),
or from anywhere with ``--url URL`` and an API token (TIERVAULT_CONSOLE_URL,
TIERVAULT_CONSOLE_TOKEN), with the same output. Exit codes: 0 ok, 1 failed, 2 usage /
bad value, 3 not found, 4 refused, 5 console unreachable.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tiervault.console.errors import BadValue
from tiervault.console.ops import LocalOps, Ops
from tiervault.console.services.devices import DeviceQuery
from tiervault.protocol.messages import COMMAND_TYPES

F = TypeVar("F", bound=Callable[..., Any])
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> int:
    """Seconds from ``90``, ``30m``, ``24h``, ``7d``, ``2w``."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if not m:
        raise BadValue(f"duration {text!r}: use e.g. 30m, 24h, 7d")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def _target(f: F) -> F:
    """The options that say which console a management command talks to."""
    opts = [
        click.option("--data", "data_dir", metavar="DIR", type=click.Path(file_okay=False),
                     help="The console's data directory (on its host)."),
        click.option("--database-url", metavar="URL",
                     help="With --data: the console's database (PostgreSQL)."),
        click.option("--url", metavar="URL", envvar="TIERVAULT_CONSOLE_URL",
                     help="A console's URL (env TIERVAULT_CONSOLE_URL)."),
        click.option("--token", metavar="TOKEN", envvar="TIERVAULT_CONSOLE_TOKEN",
                     help="An API token (env TIERVAULT_CONSOLE_TOKEN)."),
        click.option("--fingerprint", metavar="SHA256", envvar="TIERVAULT_CONSOLE_FINGERPRINT",
                     help="Pin the console's self-signed certificate (with --url)."),
        click.option("--json", "json_", is_flag=True, help="Machine-readable output."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _json(kw: dict[str, Any]) -> bool:
    """--json given to this command or to tiervault itself (tiervault --json console ...)."""
    local = bool(kw.pop("json_"))
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    return local or bool(getattr(root, "json", False))


def _ops(kw: dict[str, Any]) -> Ops:
    data_dir, url = kw.pop("data_dir"), kw.pop("url")
    database_url, token, fp = kw.pop("database_url"), kw.pop("token"), kw.pop("fingerprint")
    if data_dir and url:
        ctx = click.get_current_context(silent=True)
        from_env = ctx is not None and \
            ctx.get_parameter_source("url") == click.core.ParameterSource.ENVIRONMENT
        if not from_env:
            raise BadValue("give --data DIR (on the console's host) or --url URL, not both")
        url = None   # an explicit --data wins over TIERVAULT_CONSOLE_URL
    if data_dir:
        if not Path(data_dir).is_dir():
            raise BadValue(f"--data {data_dir}: no such directory")
        return LocalOps(data_dir, database_url)
    if url:
        from tiervault.console.remote import RemoteOps
        return RemoteOps(url, token, fp)
    raise BadValue("which console? give --data DIR or --url URL (env TIERVAULT_CONSOLE_URL)")


def _safe(value: Any) -> str:
    """Text for a terminal: control characters of names shown as escapes."""
    text = "" if value is None else str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _emit(json_mode: bool, obj: Any, text: Callable[[Any], None]) -> None:
    if json_mode:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    else:
        text(obj)


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> None:
    cells = [[h for h, _ in cols]] + [[_safe(r.get(k)) for _, k in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _pairs(obj: dict[str, Any]) -> None:
    for k, v in obj.items():
        shown = json.dumps(v) if isinstance(v, dict | list) else _safe(v)
        click.echo(f"{k}: {shown}")


@click.group("console")
def console() -> None:
    """The web console: a fleet of installations enrolled, reporting and commanded."""


@console.command("serve")
@click.option("--data", "data_dir", metavar="DIR", required=True,
              type=click.Path(file_okay=False), help="Data directory (store, certificate).")
@click.option("--listen", default="0.0.0.0:8443", show_default=True, metavar="HOST:PORT")
@click.option("--database-url", metavar="URL",
              help="postgresql+psycopg://... (default: SQLite in DIR).")
@click.option("--cert", type=click.Path(dir_okay=False, exists=True), metavar="FILE")
@click.option("--key", type=click.Path(dir_okay=False, exists=True), metavar="FILE")
@click.option("--insecure-http", is_flag=True, help="Plain HTTP (loopback or a TLS proxy).")
@click.option("--interval", type=click.IntRange(1, 86400), default=60, show_default=True,
              help="Seconds between device check-ins (told to devices at enrolment).")
@click.option("--public-url", metavar="URL", help="The URL devices dial, if not the listener.")
@click.option("--package", metavar="SPEC", default="tiervault", show_default=True,
              help="What the device install line gives pip (a wheel URL, a path, NAME==VER).")
def serve_cmd(data_dir: str, listen: str, database_url: str | None, cert: str | None,
              key: str | None, insecure_http: bool, interval: int,
              public_url: str | None, package: str) -> None:
    """Run the console (migrations first; HTTPS with a self-signed certificate)."""
    from tiervault.console.serve import ServeOptions, run

    run(ServeOptions(data_dir=Path(data_dir), listen=listen, database_url=database_url,
                     cert=Path(cert) if cert else None, key=Path(key) if key else None,
                     insecure_http=insecure_http, interval=interval, public_url=public_url,
                     package=package))


# -- users and tokens ---------------------------------------------------------------------

@console.group("user")
def user_group() -> None:
    """Console users (roles come in a later version)."""


def _read_password(password_file: str | None) -> str:
    if password_file:
        try:
            return Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise BadValue(f"--password-file {password_file}: {e.strerror}") from None
    if sys.stdin.isatty():
        pw: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return pw
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise BadValue("no password: give --password-file FILE or type it on a terminal")
    return line


@user_group.command("add")
@click.argument("name")
@click.option("--password-file", metavar="FILE", help="Read the password from FILE.")
@_target
def user_add(name: str, password_file: str | None, **kw: Any) -> None:
    """Add a user (the first one ends the setup mode)."""
    json_mode = _json(kw)
    ops = _ops(kw)
    out = ops.add_user(name, _read_password(password_file))
    _emit(json_mode, out, lambda o: click.echo(f"user {_safe(o['name'])} added"))


@console.group("token")
def token_group() -> None:
    """Enrolment tokens (a device exchanges one for its own credential)."""


@token_group.command("create")
@click.option("--customer", required=True, metavar="NAME")
@click.option("--site", metavar="NAME")
@click.option("--ttl", default="24h", show_default=True, help="Lifetime: 30m, 24h, 7d.")
@click.option("--uses", type=click.IntRange(1), default=1, show_default=True)
@click.option("--profile", "profile_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="JSON file: sets, schedules, retention, throttling, tier URL templates.")
@_target
def token_create(customer: str, site: str | None, ttl: str, uses: int,
                 profile_file: str | None, **kw: Any) -> None:
    """Create an enrolment token (printed once) and the unattended install command."""
    json_mode = _json(kw)
    profile = None
    if profile_file:
        try:
            profile = json.loads(Path(profile_file).read_text(encoding="utf-8"))
        except OSError as e:
            raise BadValue(f"--profile {profile_file}: cannot read it ({e.strerror})") from None
        except ValueError as e:
            raise BadValue(f"--profile {profile_file}: not a JSON file ({e})") from None
        if not isinstance(profile, dict):
            raise BadValue(f"--profile {profile_file}: expected a JSON object")
    out = _ops(kw).create_token(customer, site, duration(ttl), uses, profile)

    def text(o: dict[str, Any]) -> None:
        click.echo(f"token {o['token']}")
        click.echo(f"id {o['id']}, customer {_safe(o['customer'])}, expires {o['expires']}, "
                   f"{o['uses_allowed']} use(s)")
        click.echo(f"unattended install: {o['command']}")
    _emit(json_mode, out, text)


@token_group.command("list")
@_target
def token_list(**kw: Any) -> None:
    """List enrolment tokens (never their secrets)."""
    json_mode = _json(kw)
    out = _ops(kw).tokens()
    _emit(json_mode, out, lambda rows: _table(rows, [
        ("ID", "id"), ("CUSTOMER", "customer"), ("SITE", "site"), ("STATE", "state"),
        ("USES", "uses"), ("OF", "uses_allowed"), ("EXPIRES", "expires")]))


@token_group.command("revoke")
@click.argument("token_id")
@_target
def token_revoke(token_id: str, **kw: Any) -> None:
    """Revoke an enrolment token."""
    json_mode = _json(kw)
    out = _ops(kw).revoke_token(token_id)
    _emit(json_mode, out, lambda o: click.echo(f"token {o['id']} revoked"))


@console.group("api-token")
def api_token_group() -> None:
    """API tokens for scripts (Authorization: Bearer TOKEN)."""


@api_token_group.command("create")
@click.argument("user")
@_target
def api_token_create(user: str, **kw: Any) -> None:
    """Create an API token acting as USER (printed once)."""
    json_mode = _json(kw)
    out = _ops(kw).create_api_token(user)

    def text(o: dict[str, Any]) -> None:
        click.echo(o["token"])   # alone on stdout: TOKEN=$(tiervault console api-token ...)
        click.echo(f"API token {o.get('id')} for {_safe(o.get('user'))}: shown only now; "
                   f"revoke it with: tiervault console api-token revoke {o.get('id')}",
                   err=True)

    _emit(json_mode, out, text)


@api_token_group.command("revoke")
@click.argument("token_id")
@_target
def api_token_revoke(token_id: str, **kw: Any) -> None:
    """Revoke an API token."""
    json_mode = _json(kw)
    out = _ops(kw).revoke_api_token(token_id)
    _emit(json_mode, out, lambda o: click.echo(f"API token {o['id']} revoked"))


# -- customers ----------------------------------------------------------------------------

@console.group("customer")
def customer_group() -> None:
    """Customers and their colour thresholds."""


CUSTOMER_COLUMNS = [("NAME", "name"), ("GREEN UNDER (H)", "green_hours"),
                    ("ORANGE UNDER (H)", "orange_hours"), ("DEVICES", "devices")]


@customer_group.command("list")
@_target
def customer_list(**kw: Any) -> None:
    """Customers with their thresholds and number of devices."""
    json_mode = _json(kw)
    _emit(json_mode, _ops(kw).customers(), lambda r: _table(r, CUSTOMER_COLUMNS))


@customer_group.command("set")
@click.argument("name")
@click.option("--green-hours", type=click.IntRange(1, 8760), metavar="H",
              help="Green while the last success is younger than H hours (default 24).")
@click.option("--orange-hours", type=click.IntRange(1, 8760), metavar="H",
              help="Orange until H hours, red after (default 48).")
@_target
def customer_set(name: str, green_hours: int | None, orange_hours: int | None,
                 **kw: Any) -> None:
    """Change a customer's colour thresholds."""
    json_mode = _json(kw)
    if green_hours is None and orange_hours is None:
        raise BadValue("give --green-hours H and/or --orange-hours H")
    out = _ops(kw).set_thresholds(name, green_hours, orange_hours)
    _emit(json_mode, out, lambda o: click.echo(
        f"customer {_safe(o['name'])}: green under {o['green_hours']} h, "
        f"orange under {o['orange_hours']} h, red after"))


# -- devices ------------------------------------------------------------------------------

DEVICE_COLUMNS = [("ID", "id"), ("NAME", "name"), ("CUSTOMER", "customer"),
                  ("COLOUR", "colour"), ("ONLINE", "online"), ("STATUS", "last_status"),
                  ("LAST SUCCESS", "last_success"), ("VERSION", "version")]


@console.command("devices")
@click.option("--q", "q", metavar="TEXT", help="Search name, host, customer.")
@click.option("--colour", type=click.Choice(["green", "orange", "red", "blue", "none"]))
@click.option("--customer", metavar="NAME")
@click.option("--status", metavar="STATUS", help="Last status, or online / offline.")
@click.option("--os", "os_", metavar="TEXT")
@click.option("--version", metavar="VERSION")
@click.option("--sort", default="name", show_default=True)
@click.option("--page", type=click.IntRange(1), default=1)
@click.option("--per-page", type=click.IntRange(1, 500), default=500)
@_target
def devices_cmd(q: str | None, colour: str | None, customer: str | None, status: str | None,
                os_: str | None, version: str | None, sort: str, page: int, per_page: int,
                **kw: Any) -> None:
    """The dashboard's rows."""
    json_mode = _json(kw)
    query = DeviceQuery(q=q, colour=colour, customer=customer, status=status, os=os_,
                        version=version, sort=sort, page=page, per_page=per_page)
    rows, _total = _ops(kw).devices(query)
    _emit(json_mode, rows, lambda r: _table(r, DEVICE_COLUMNS))


@console.group("device")
def device_group() -> None:
    """One device: show, sessions, revoke, rotate."""


@device_group.command("show")
@click.argument("device")
@_target
def device_show(device: str, **kw: Any) -> None:
    """A device's details."""
    json_mode = _json(kw)
    _emit(json_mode, _ops(kw).device(device), _pairs)


@device_group.command("sessions")
@click.argument("device")
@click.option("--limit", type=click.IntRange(1, 1000), default=50)
@_target
def device_sessions(device: str, limit: int, **kw: Any) -> None:
    """A device's sessions, newest first."""
    json_mode = _json(kw)
    rows = _ops(kw).device_sessions(device, limit)
    _emit(json_mode, rows, lambda r: _table(r, [
        ("SESSION", "session_id"), ("KIND", "kind"), ("STATUS", "status"),
        ("STARTED", "started"), ("FLAGS", "flags"), ("COMMAND", "command_id")]))


@device_group.command("revoke")
@click.argument("device")
@_target
def device_revoke(device: str, **kw: Any) -> None:
    """Revoke a device: its credential stops working at once."""
    json_mode = _json(kw)
    ops = _ops(kw)
    already = bool(ops.device(device).get("revoked"))
    out = ops.revoke_device(device)
    done = "was already revoked" if already else "revoked"
    _emit(json_mode, out, lambda o: click.echo(f"device {_safe(o['name'])} {done}"))


@device_group.command("rotate")
@click.argument("device")
@_target
def device_rotate(device: str, **kw: Any) -> None:
    """Ask a device for a new credential at its next check-in."""
    json_mode = _json(kw)
    out = _ops(kw).rotate_device(device)
    _emit(json_mode, out, lambda o: click.echo(
        f"device {o['id']} rotates its credential at its next check-in"))


# -- commands -----------------------------------------------------------------------------

def _param_value(text: str) -> Any:
    """KEY=VALUE's value: a JSON number, true/false/null, list or object, else the text."""
    if text and (text[0] in "[{" or text in ("true", "false", "null")
                 or re.fullmatch(r"-?\d+(\.\d+)?", text)):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def split_send_args(args: tuple[str, ...]) -> tuple[list[str], str, dict[str, Any]]:
    """DEVICE... TYPE [KEY=VALUE...] into its parts."""
    rest = list(args)
    params: dict[str, Any] = {}
    while rest and "=" in rest[-1]:
        k, _, v = rest.pop().partition("=")
        if not k:
            raise BadValue(f"parameter {k}={v!r}: KEY=VALUE needs a key")
        if k in params:
            raise BadValue(f"parameter {k!r} is given twice: give it once")
        params[k] = _param_value(v)
    if len(rest) < 2:
        raise BadValue("give DEVICE... TYPE [KEY=VALUE...]: at least one device and a type")
    type_ = rest.pop()
    if type_ not in COMMAND_TYPES and rest[-1] in COMMAND_TYPES:
        raise BadValue(f"parameter {type_!r} of {rest[-1]} needs a value: {type_}=VALUE")
    if type_ not in COMMAND_TYPES:
        raise BadValue(f"command type {type_!r}: one of {', '.join(COMMAND_TYPES)}")
    return rest, type_, dict(reversed(list(params.items())))


COMMAND_COLUMNS = [("ID", "id"), ("DEVICE", "device"), ("TYPE", "type"), ("STATE", "state"),
                   ("CREATED", "created"), ("EXPIRES", "expires")]


@console.group("command")
def command_group() -> None:
    """Remote commands (queued for offline devices until they expire)."""


@command_group.command("send")
@click.argument("args", nargs=-1, required=True)
@click.option("--ttl", metavar="DURATION", help="Lifetime instead of the type's default.")
@_target
def command_send(args: tuple[str, ...], ttl: str | None, **kw: Any) -> None:
    """Send TYPE to each DEVICE (id or name): backup (set=NAME), cancel, sync, check,
    restore, retention, bandwidth, schedule, upload-log."""
    json_mode = _json(kw)
    devices, type_, params = split_send_args(args)
    out = _ops(kw).send(devices, type_, params, duration(ttl) if ttl else None)
    left = len(set(devices)) - len(out)
    if left > 0:
        click.echo(f"tiervault: {left} revoked device{'s were' if left != 1 else ' was'} "
                   "left out (not sent)", err=True)
    if json_mode:   # one object per device, one per line (a single device: one object)
        for obj in out:
            sys.stdout.write(json.dumps(obj) + "\n")
    else:
        _table(out, COMMAND_COLUMNS)


@command_group.command("list")
@click.option("--device", metavar="DEVICE")
@click.option("--state", type=click.Choice(["queued", "delivered", "running", "succeeded",
                                            "failed", "expired", "cancelled"]))
@_target
def command_list(device: str | None, state: str | None, **kw: Any) -> None:
    """Commands, newest first."""
    json_mode = _json(kw)
    rows = _ops(kw).commands(device, state)
    _emit(json_mode, rows, lambda r: _table(r, COMMAND_COLUMNS))


@command_group.command("show")
@click.argument("command_id")
@_target
def command_show(command_id: str, **kw: Any) -> None:
    """A command with its result and session."""
    json_mode = _json(kw)
    _emit(json_mode, _ops(kw).command(command_id), _pairs)


@command_group.command("cancel")
@click.argument("command_id")
@_target
def command_cancel(command_id: str, **kw: Any) -> None:
    """Cancel a command that is still queued."""
    json_mode = _json(kw)
    out = _ops(kw).cancel(command_id)
    _emit(json_mode, out, lambda o: click.echo(f"command {o['id']} cancelled"))
