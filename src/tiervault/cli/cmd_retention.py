"""Commands that remove or keep snapshots: forget, prune, retention, archive."""

from __future__ import annotations

from typing import Any

import click

from tiervault.cli.app import cli
from tiervault.cli.context import Ctx, json_option, with_session
from tiervault.cli.output import emit_json, human_bytes
from tiervault.engine.policy import Policy
from tiervault.service import ops
from tiervault.service.session import VaultSession


@cli.command()
@json_option
@click.option("--keep-last", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-hourly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-daily", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-weekly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-monthly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-yearly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-tag", multiple=True, metavar="TAG")
@click.option("--prune", "do_prune", is_flag=True, help="Prune unreferenced data afterwards.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@with_session(write=True)
def forget(ctx: Ctx, sess: VaultSession, keep_last: int, keep_hourly: int, keep_daily: int,
           keep_weekly: int, keep_monthly: int, keep_yearly: int, keep_tag: tuple[str, ...],
           do_prune: bool, dry_run: bool) -> None:
    """Remove snapshots not kept by the --keep-* policy."""
    pol = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,
                 tuple(keep_tag))
    res = ops.forget(sess, pol, dry_run)
    if do_prune:
        res["prune"] = ops.prune(sess, dry_run)
    if ctx.json:
        emit_json(res)
        return
    verb = "would remove" if dry_run else "removed"
    for s in res["remove"]:
        click.echo(f"{verb} snapshot {s['short_id']}  {s['time']}  {', '.join(s['paths'])}")
    click.echo(f"{len(res['keep'])} kept, {len(res['remove'])} {verb}")
    if "prune" in res:
        _print_prune(res["prune"])


def _print_prune(p: dict[str, Any]) -> None:
    verb = "would" if p.get("dry_run") else "did"
    click.echo(f"prune ({verb}): delete {p['packs_deleted']} packs, repack "
               f"{p['packs_repacked']}, remove {p['orphan_packs_deleted']} orphan packs, "
               f"free about {human_bytes(p['bytes_freed_estimate'])}")


@cli.command()
@json_option
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@with_session(write=True)
def prune(ctx: Ctx, sess: VaultSession, dry_run: bool) -> None:
    """Remove data no snapshot uses; repack mostly-empty packs."""
    res = ops.prune(sess, dry_run)
    if ctx.json:
        emit_json(res)
    else:
        _print_prune(res)



@cli.command()
@json_option
@click.option("--keep-all-days", type=click.IntRange(0), default=7, show_default=True,
              help="Keep every snapshot of the last N days.")
@click.option("--daily", type=click.IntRange(0), default=30, show_default=True,
              help="Then the last of each day for N days.")
@click.option("--weekly", type=click.IntRange(0), default=12, show_default=True,
              help="Then the last of each week for N weeks.")
@click.option("--monthly", type=click.IntRange(0), default=12, show_default=True,
              help="Then the last of each month for N months.")
@click.option("--yearly", type=click.IntRange(0), default=5, show_default=True,
              help="Then the last of each year for N years.")
@click.option("--prune", "do_prune", is_flag=True, help="Prune unreferenced data afterwards.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@with_session(write=True)
def retention(ctx: Ctx, sess: VaultSession, keep_all_days: int, daily: int, weekly: int,
              monthly: int, yearly: int, do_prune: bool, dry_run: bool) -> None:
    """Apply grandfather-father-son retention; archived snapshots are always kept."""
    from tiervault.engine.policy import GfsPolicy

    res = ops.apply_retention(sess, GfsPolicy(keep_all_days, daily, weekly, monthly, yearly),
                              dry_run)
    if do_prune:
        res["prune"] = ops.prune(sess, dry_run)
    if ctx.json:
        emit_json(res)
        return
    verb = "would remove" if dry_run else "removed"
    for s in res["remove"]:
        click.echo(f"{verb} snapshot {s['short_id']}  {s['time']}")
    click.echo(f"{len(res['keep'])} kept, {len(res['remove'])} {verb}")
    if "prune" in res:
        _print_prune(res["prune"])


@cli.group()
def archive() -> None:
    """Mark snapshots as archives (kept beyond retention) or release them."""


@archive.command(name="mark")
@json_option
@click.argument("snapshot")
@with_session(write=True, load_index=False)
def archive_mark(ctx: Ctx, sess: VaultSession, snapshot: str) -> None:
    """Mark SNAPSHOT as an archive."""
    res = ops.set_archive(sess, snapshot, True)
    emit_json(res) if ctx.json else click.echo(f"snapshot {res['snapshot_id'][:8]} is archived")


@archive.command(name="release")
@json_option
@click.argument("snapshot")
@with_session(write=True, load_index=False)
def archive_release(ctx: Ctx, sess: VaultSession, snapshot: str) -> None:
    """Release an archived SNAPSHOT: normal retention applies to it again."""
    res = ops.set_archive(sess, snapshot, False)
    emit_json(res) if ctx.json else click.echo(
        f"snapshot {res['snapshot_id'][:8]} is no longer archived")
