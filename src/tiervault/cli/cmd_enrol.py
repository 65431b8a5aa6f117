"""``tiervault enrol``: exchange an enrolment token for this device's console credential.

Exit codes: 0 enrolled; 1 failed; 2 usage (bad URL, fingerprint or profile);
4 refused (token unknown, used up, expired or revoked; or the console's
certificate is not the one given with --fingerprint); 5 console unreachable.
"""

from __future__ import annotations

from typing import Any

import click

from tiervault import __version__
from tiervault.cli.context import Ctx, json_option
from tiervault.cli.output import cleartext_warnings, emit_json, inert
from tiervault.daemon.agent import profile as profiles
from tiervault.daemon.agent.checkin import host_name, os_name
from tiervault.daemon.agent.client import AgentClient, ConsoleRefused, peer_fingerprint
from tiervault.daemon.agent.settings import (
    CREDENTIAL_FILE,
    ConsoleSettings,
    check_url,
    load_console,
    normalize_fingerprint,
    read_credential,
    save_console,
    write_credential,
)
from tiervault.errors import UsageError
from tiervault.protocol.messages import MAX_NAME, EnrolRequest, EnrolResponse, parse, to_json
from tiervault.state.config import InstallationConfig, load_config, save_config


def register(cli: click.Group) -> None:
    """Add ``enrol`` to the command group."""
    cli.add_command(enrol_cmd)


def _pin(url: str, given: str | None) -> str | None:
    if not url.startswith("https://"):
        if given:
            raise UsageError("--fingerprint needs an https:// console URL")
        return None
    want = normalize_fingerprint(given) if given else None
    seen = peer_fingerprint(url)
    if want and seen != want:
        raise ConsoleRefused(f"the console at {url} presents certificate {seen}, not "
                             f"{want}; nothing was sent (check the URL and the fingerprint the "
                             "console printed)")
    return seen


@click.command(name="enrol")
@json_option
@click.argument("console_url", metavar="CONSOLE_URL")
@click.option("--token", required=True, metavar="TOKEN", help="The enrolment token (tve_...).")
@click.option("--fingerprint", metavar="SHA256",
              help="The console certificate's SHA-256 fingerprint as 'console serve' printed "
                   "it; without it the certificate seen now is pinned.")
@click.option("--name", metavar="NAME", help="The device's name on the console (default: the "
                                             "host name).")
@click.pass_obj
def enrol_cmd(ctx: Ctx, console_url: str, token: str, fingerprint: str | None,
              name: str | None) -> None:
    """Enrol this installation with a console; the daemon then reports to it."""
    url = check_url(console_url)
    dev_name = (name or host_name()).strip()
    if not dev_name or len(dev_name) > MAX_NAME:
        raise UsageError(f"--name must have 1 to {MAX_NAME} characters")
    pinned = _pin(url, fingerprint)
    client = AgentClient(url, pinned)
    old = _previous_enrolment(ctx, url)
    req = EnrolRequest(token=token.strip(), name=dev_name, host=host_name(), os=os_name(),
                       version=__version__,
                       previous_device_id=old[0] if old else None,
                       previous_credential=old[1] if old else None)
    import json

    try:
        ans: EnrolResponse = parse(EnrolResponse, json.dumps(
            client.request("POST", "/enrol", to_json(req))).encode())
    except ConsoleRefused as e:
        if "presents certificate" in str(e):
            raise
        raise ConsoleRefused(f"{e}; nothing was changed here: ask the console's admin for "
                             "a valid token (tiervault console token create --customer "
                             "NAME) and run enrol again with it") from None
    if (not name and isinstance(ans.name, str) and 0 < len(ans.name) <= MAX_NAME
            and "/" not in ans.name and "\0" not in ans.name):
        dev_name = ans.name   # re-enrolled without --name: the console kept its name
    home = ctx.home
    cfg = load_config(home) or InstallationConfig()
    try:   # nothing is written here unless the whole profile applies
        profiles.check_all(cfg, ans.profile, _template_values(ans, dev_name))
    except UsageError as e:
        raise UsageError(f"{e}; nothing was written here, but the console counted a use of "
                         f"the token and lists device {ans.device_id}: revoke it there, fix "
                         "the profile and enrol with a new token") from None
    write_credential(home, ans.credential)
    save_console(cfg, ConsoleSettings(url, float(ans.interval or 60), pinned, ans.device_id))
    added = profiles.apply_sets(cfg, ans.profile)
    save_config(home, cfg)   # last: a running daemon starts its agent on this change
    created = _maybe_init(ctx, cfg, ans, dev_name)
    cleartext_warnings(ctx.json, created)   # as init says for ftp:// and http:// tiers
    cfg = load_config(home) or cfg
    throttled = bool(cfg.tiers) and profiles.apply_throttle(cfg, ans.profile)
    if throttled:
        save_config(home, cfg)
    out: dict[str, Any] = {
        "device_id": ans.device_id, "name": dev_name, "customer": ans.customer,
        "site": ans.site, "console": url, "fingerprint": pinned, "interval": ans.interval,
        "credential_file": str(home / CREDENTIAL_FILE), "sets_added": added,
        "throttle_applied": throttled, "vault_created": created}
    if ctx.json:
        emit_json(out)
        return
    click.echo(f"enrolled as {inert(dev_name)} (device {ans.device_id}, customer "
               f"{inert(ans.customer)}{', site ' + inert(ans.site) if ans.site else ''})")
    if pinned and not fingerprint:
        click.echo(f"pinned the console's certificate {pinned}")
    if added:
        click.echo(f"sets from the token's profile: {', '.join(added)} (first backup at "
                   "its next scheduled time; 'tiervault run SET' with the daemon running "
                   "starts one now)")
    if created:
        click.echo(f"created the vault on {', '.join(created)}")
    if not cfg.tiers:
        click.echo("no vault yet: run 'tiervault init TIER_URL...', then 'tiervault daemon'")
    else:
        click.echo("a running daemon reports to the console once it re-reads its "
                   "configuration (seconds, or when its running job ends); otherwise start "
                   "it: tiervault daemon")


def _previous_enrolment(ctx: Ctx, url: str) -> tuple[str, str] | None:
    """This installation's device id and credential at the console of ``url``, if enrolled
    there before: sent so the console keeps the device (never to another console)."""
    try:
        old = load_console(load_config(ctx.home) or InstallationConfig())
    except UsageError:
        return None
    cred = read_credential(ctx.home)
    if old is None or not old.device_id or cred is None or old.url.rstrip("/") != url.rstrip("/"):
        return None
    return old.device_id, cred


def _template_values(ans: EnrolResponse, dev_name: str) -> dict[str, str]:
    return {"host": host_name(), "name": dev_name, "device_id": ans.device_id,
            "customer": ans.customer, "site": ans.site or ""}


def _maybe_init(ctx: Ctx, cfg: InstallationConfig, ans: EnrolResponse,
                dev_name: str) -> list[str]:
    """Create the vault from the profile's tier templates if there is none yet."""
    if cfg.tiers:
        return []
    urls = profiles.tier_urls(ans.profile, _template_values(ans, dev_name))
    if not urls:
        return []
    pw = ctx.passphrase_if_available()
    if pw is None:
        raise UsageError("the token's profile names tiers but no passphrase is given for the "
                         "new vault: set TIERVAULT_PASSWORD or use --password-file, then enrol "
                         "again, with a new token if this one allowed one use only (the device "
                         "is enrolled and keeps its id; the vault is not created)")
    from tiervault.service.setup import init_vault

    res = init_vault(ctx.home, urls, pw, ctx.opts, ctx.progress(), allow_offline=True)
    return [t["url"] for t in res["tiers"]]
