"""Commands about the tiers: tiers, sync, tier add/remove/lost, attach."""

from __future__ import annotations

import sys

import click

from tiervault.cli.app import cli
from tiervault.cli.context import Ctx, json_option
from tiervault.cli.handoff import handed_over
from tiervault.cli.output import cleartext_warnings, emit_json, inert
from tiervault.errors import WaitTimeoutError
from tiervault.service import lost, tierops


@cli.command()
@json_option
@click.pass_obj
def tiers(ctx: Ctx) -> None:
    """Show every tier: state, revision, expected revision, last online, sync progress."""
    inst = ctx.installation()
    progress = ctx.progress()
    try:
        rows = tierops.tier_status(inst, progress)
    finally:
        progress.close()
        inst.close()
    if ctx.json:
        emit_json(rows)
        return
    for i, r in enumerate(rows, 1):
        rev = "-" if r["revision"] is None else str(r["revision"])
        extra = ""
        if r["sync"]:
            extra = f"  sync {r['sync']['percent']}%"
        if r.get("refused"):
            extra += f"  (REFUSED: {inert(r['error'])}; fix the credentials or server settings)"
        elif r["error"]:
            extra += f"  ({inert(r['error'])})"
        click.echo(f"{i}. {inert(r['url'])}: {r['state']}, revision {rev} "
                   f"(expected {r['expected_revision']}, max {r['max_revision']}), "
                   f"last online {r['last_online'] or 'never'}{extra}")


@cli.command()
@json_option
@click.option("--wait-timeout", type=click.FloatRange(0), metavar="SECONDS",
              help="Bound any wait for a tier.")
@click.pass_obj
@handed_over
def sync(ctx: Ctx, wait_timeout: float | None) -> None:
    """Synchronize every reachable stale tier now, in the foreground."""
    if wait_timeout is not None:
        ctx.opts.wait_timeout = wait_timeout
    inst = ctx.installation()
    progress = ctx.progress()
    try:
        rows = tierops.sync_now(inst, progress, ctx.passphrase_if_available())
    finally:
        progress.close()
        inst.close()
    if ctx.json:
        emit_json(rows)
    else:
        for r in rows:
            rev = "-" if r["revision"] is None else str(r["revision"])
            click.echo(f"{inert(r['url'])}: {r['state']}, revision {rev} "
                       f"(max {r['max_revision']})")
    stuck = [r for r in rows if r.get("completed") is False]
    if any(r["no_source"] for r in stuck):
        raise WaitTimeoutError(
            f"{', '.join(r['url'] for r in stuck)} could not be synchronized: no tier at the max "
            "revision is reachable to copy from; run 'tiervault sync' again when it answers")
    if stuck:
        sys.exit(1)
    away = [r for r in rows if r["state"] == "offline"
            and (r["missed_writes"] or r["expected_revision"] < r["max_revision"])]
    if away:
        raise WaitTimeoutError(
            f"{', '.join(r['url'] for r in away)} is behind and offline: it was not "
            "synchronized; run 'tiervault sync' again when it answers")


@cli.group()
def tier() -> None:
    """Add or remove tiers."""


@tier.command(name="add")
@json_option
@click.argument("url")
@click.option("--no-sync", is_flag=True, help="Only add; synchronize later.")
@click.pass_obj
@handed_over
def tier_add(ctx: Ctx, url: str, no_sync: bool) -> None:
    """Add a tier: it starts at revision 0 and is filled by synchronization."""
    inst = ctx.installation()
    clear = cleartext_warnings(ctx.json, [url])
    progress = ctx.progress()
    try:
        res = tierops.tier_add(inst, url, progress)
        res["warnings"] = clear
        inst.close()
        if not no_sync:
            inst = ctx.installation()
            res["sync"] = tierops.sync_now(inst, progress, ctx.passphrase_if_available())
    finally:
        progress.close()
        inst.close()
    if ctx.json:
        emit_json(res)
    else:
        click.echo(f"added tier {inert(res['url'])}")


@tier.command(name="remove")
@json_option
@click.argument("url", metavar="N|URL")
@click.pass_obj
@handed_over
def tier_remove(ctx: Ctx, url: str) -> None:
    """Stop using a tier, named by its number (as in 'tiers') or URL; its files stay."""
    inst = ctx.installation()
    try:
        res = tierops.tier_remove(inst, url)
    finally:
        inst.close()
    if ctx.json:
        emit_json(res)
    else:
        click.echo(f"removed tier {inert(res['url'])}")


@tier.command(name="lost")
@json_option
@click.argument("url", metavar="N|URL")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would happen.")
@click.pass_obj
@handed_over
def tier_lost(ctx: Ctx, url: str, dry_run: bool) -> None:
    """Give up an unreachable tier (number or URL): the most recent reachable one takes over."""
    inst = ctx.installation()
    progress = ctx.progress()
    try:
        res = lost.tier_lost(inst, url, dry_run, progress)
    finally:
        progress.close()
        inst.close()
    if ctx.json:
        emit_json(res)
        return
    verb = "would give up" if dry_run else "gave up"
    click.echo(f"{verb} tier {inert(res['tier'])}; {inert(res['authoritative_tier'])} (revision "
               f"{res['authoritative_revision']}) is authoritative")
    for s in res["lost_snapshots"]:
        click.echo(f"  lost snapshot {s['id'][:8]}  {s['time']}  "
                   f"{', '.join(inert(p) for p in s['paths'])}")
    click.echo(f"{len(res['lost_snapshots'])} snapshot(s) existed only on the lost tier"
               + ("" if dry_run else "; the next backup uploads their data again"))


@cli.command()
@json_option
@click.argument("tier_urls", nargs=-1)
@click.option("--take-over", is_flag=True,
              help="This computer replaces the vault's writer; the old one will stop (exit 3). "
                   "On a configured home, keeps its whole config (TIER_URLs may be left out).")
@click.option("--read-only", is_flag=True,
              help="Restore on another computer: list, browse and restore, never write (no "
                   "clash with the writer).")
@click.pass_obj
def attach(ctx: Ctx, tier_urls: tuple[str, ...], take_over: bool, read_only: bool) -> None:
    """Connect this installation to an existing vault on TIER_URL(s).

    Say which it is: --read-only (a second computer that restores) or
    --take-over (a replacement computer, or this one after exit 3).
    """
    pw = ctx.passphrase()
    clear = cleartext_warnings(ctx.json, list(tier_urls))
    progress = ctx.progress()
    try:
        res = tierops.attach(ctx.home, list(tier_urls), pw, ctx.opts, progress,
                             take_over, read_only)
    finally:
        progress.close()
    res["warnings"] = clear
    if ctx.json:
        emit_json(res)
    else:
        verb = "took over" if take_over else "attached (restore-only) to"
        click.echo(f"{verb} vault {res['vault_id'][:8]}: "
                   + ", ".join(f"{inert(t['url'])} ({t['state']})" for t in res["tiers"]))
