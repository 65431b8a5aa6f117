"""Commands that remove or keep snapshots: forget, prune, retention, archive."""

from __future__ import annotations

from typing import Any

import click

from tiervault.cli.app import cli
from tiervault.cli.context import Ctx, json_option, with_session
from tiervault.cli.filters import filter_options, snapshot_filter
from tiervault.cli.output import emit_json, human_bytes, inert, local_time
from tiervault.engine.policy import Duration, GfsPolicy, Policy, parse_group_by
from tiervault.errors import UsageError
from tiervault.service import ops
from tiervault.service.session import VaultSession


@cli.command()
@json_option
@click.argument("snapshot_ids", nargs=-1, metavar="[ID]...")
@click.option("--keep-last", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-hourly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-daily", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-weekly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-monthly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-yearly", type=click.IntRange(0), default=0, metavar="N")
@click.option("--keep-tag", multiple=True, metavar="TAG[,TAG...]")
@click.option("--keep-within", metavar="DURATION",
              help="Keep every snapshot newer than DURATION (e.g. 2y5m7d3h) before the "
                   "newest of its group.")
@click.option("--group-by", default="host,paths", show_default=True,
              help="Apply the policy per group of these keys (host, paths, tags; '' for one "
                   "group).")
@filter_options()
@click.option("--prune", "do_prune", is_flag=True, help="Prune unreferenced data afterwards.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@with_session(write=True)
def forget(ctx: Ctx, sess: VaultSession, snapshot_ids: tuple[str, ...], keep_last: int,
           keep_hourly: int, keep_daily: int, keep_weekly: int, keep_monthly: int,
           keep_yearly: int, keep_tag: tuple[str, ...], keep_within: str | None,
           group_by: str, filter_hosts: tuple[str, ...], filter_paths: tuple[str, ...],
           filter_tags: tuple[str, ...], do_prune: bool, dry_run: bool) -> None:
    """Remove the snapshots ID... or those not kept by the --keep-* policy.

    Archived snapshots are never removed: release them first.
    """
    within = Duration.parse(keep_within) if keep_within is not None else None
    pol = Policy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,
                 tuple(keep_tag), within)
    which = snapshot_filter(filter_hosts, filter_paths, filter_tags)
    if snapshot_ids:
        if not pol.empty() or not which.empty():
            raise UsageError("give snapshot IDs or --keep-*/--host/--path/--tag options, "
                             "not both")
        res = ops.forget_ids(sess, list(snapshot_ids), dry_run)
    else:
        res = ops.forget(sess, pol, dry_run, which, parse_group_by(group_by))
    _finish(ctx, sess, res, do_prune, dry_run)


def _finish(ctx: Ctx, sess: VaultSession, res: dict[str, Any], do_prune: bool,
            dry_run: bool) -> None:
    """Prune if asked, then print what was kept and removed (forget and retention alike)."""
    if do_prune:
        res["prune"] = ops.prune(sess, dry_run)
    if ctx.json:
        emit_json(res)
        return
    verb = "would remove" if dry_run else "removed"
    rows = [("keep", s) for s in res["keep"]] + [(verb, s) for s in res["remove"]]
    if rows:
        click.echo(f"{'':12}  {'ID':8}  {'Time':25}  {'Host':15}  {'Tags':15}  Paths")
    for action, s in rows:
        why = f"  ({', '.join(s['reasons'])})" if s.get("reasons") else ""
        click.echo(f"{action:12}  {s['short_id']:8}  {local_time(s['time']):25}  "
                   f"{inert(s['hostname'])[:15]:15}  {inert(','.join(s['tags']))[:15]:15}  "
                   f"{inert(', '.join(s['paths']))}{why}")
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
@click.option("--group-by", default="host,paths", show_default=True,
              help="Apply the spans per group of these keys (host, paths, tags; '' for one "
                   "group).")
@filter_options()
@click.option("--prune", "do_prune", is_flag=True, help="Prune unreferenced data afterwards.")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@with_session(write=True)
def retention(ctx: Ctx, sess: VaultSession, keep_all_days: int, daily: int, weekly: int,
              monthly: int, yearly: int, group_by: str, filter_hosts: tuple[str, ...],
              filter_paths: tuple[str, ...], filter_tags: tuple[str, ...], do_prune: bool,
              dry_run: bool) -> None:
    """Apply grandfather-father-son retention per group; archives are always kept,
    and so is each group's newest snapshot."""
    res = ops.apply_retention(sess, GfsPolicy(keep_all_days, daily, weekly, monthly, yearly),
                              dry_run, which=snapshot_filter(filter_hosts, filter_paths,
                                                             filter_tags),
                              group_by=parse_group_by(group_by))
    _finish(ctx, sess, res, do_prune, dry_run)


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
    if ctx.json:
        emit_json(res)
    else:
        click.echo(f"snapshot {res['short_id']} is archived"
                   + ("" if res["changed"] else " (it already was)"))


@archive.command(name="release")
@json_option
@click.argument("snapshot")
@with_session(write=True, load_index=False)
def archive_release(ctx: Ctx, sess: VaultSession, snapshot: str) -> None:
    """Release an archived SNAPSHOT: normal retention applies to it again."""
    res = ops.set_archive(sess, snapshot, False)
    if ctx.json:
        emit_json(res)
    elif "previous_id" in res:
        click.echo(f"snapshot {res['previous_id'][:8]} is no longer archived; it was archived "
                   f"by a tiervault before 0.2 (with the tag 'archive'), so it was written "
                   f"again without that tag: its id is now {res['short_id']}")
    else:
        click.echo(f"snapshot {res['short_id']} is no longer archived"
                   + ("" if res["changed"] else " (it was not archived)"))
