"""``tiervault`` command line: parses, asks the service layer, prints.

Exit codes: 0 ok; 1 error; 2 usage; 3 second installation detected;
4 wrong passphrase or key; 5 no tier came online within --wait-timeout;
6 backup completed but some source files could not be read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from tiervault import __version__
from tiervault.cli import daemon_cmds
from tiervault.cli.output import TextProgress, emit_json, human_bytes
from tiervault.engine import browse
from tiervault.engine.backup import BackupOptions
from tiervault.engine.policy import Policy
from tiervault.errors import EXIT_INCOMPLETE, TierVaultError, UsageError
from tiervault.service import keyops, lost, ops, repair, tierops
from tiervault.service.installation import Installation, RunOptions
from tiervault.service.session import VaultSession
from tiervault.service.tierops import run_sync
from tiervault.state.home import resolve_home

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Ctx:
    """Global options, read once."""

    home: Path
    json: bool
    opts: RunOptions
    password_file: str | None

    def progress(self) -> TextProgress:
        """A progress printer fitting the output mode."""
        return TextProgress(self.json)

    def passphrase(self, confirm: bool = False) -> str:
        """From --password-file, TIERVAULT_PASSWORD, or a prompt on a terminal."""
        if self.password_file:
            try:
                with open(self.password_file, encoding="utf-8") as f:
                    pw = f.readline().rstrip("\r\n")
            except OSError as e:
                raise UsageError(f"cannot read --password-file: {e.strerror}") from None
            if not pw:
                raise UsageError("the --password-file is empty")
            return pw
        env = self.opts.env.get("TIERVAULT_PASSWORD")
        if env:
            return env
        if not sys.stdin.isatty():
            raise UsageError("no passphrase: set TIERVAULT_PASSWORD, use --password-file, "
                             "or run on a terminal")
        pw = click.prompt("passphrase", hide_input=True, confirmation_prompt=confirm,
                          err=True)
        if not pw:
            raise UsageError("an empty passphrase is not allowed")
        return str(pw)

    def new_passphrase(self, new_password_file: str | None) -> str:
        """The new passphrase for key add/passwd: file, TIERVAULT_NEW_PASSWORD or prompt."""
        if new_password_file:
            return Ctx(self.home, self.json, self.opts, new_password_file).passphrase()
        env = self.opts.env.get("TIERVAULT_NEW_PASSWORD")
        if env:
            return env
        if not sys.stdin.isatty():
            raise UsageError("no new passphrase: set TIERVAULT_NEW_PASSWORD or use "
                             "--new-password-file")
        pw = click.prompt("new passphrase", hide_input=True, confirmation_prompt=True,
                          err=True)
        if not pw:
            raise UsageError("an empty passphrase is not allowed")
        return str(pw)

    def installation(self) -> Installation:
        """The configured installation."""
        return Installation.load(self.home, self.opts)


def _set_json(c: click.Context, _p: click.Parameter, value: bool) -> None:
    if value and isinstance(c.obj, Ctx):
        c.obj.json = True


def json_option(fn: F) -> F:
    """``--json`` after the command name too (``tiervault snapshots --json``)."""
    return click.option("--json", "json_", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_json, help="Machine-readable output.")(fn)  # type: ignore[return-value]


def with_session(lock: bool = False, load_index: bool = True,
                 write: bool = False) -> Callable[[F], F]:
    """Give a command an opened vault session (and the write lock if asked).

    Write commands get ``--wait-timeout`` and ``--no-sync``: when they finish,
    the application is idle and synchronizes stale tiers before exiting.
    """

    def deco(fn: F) -> F:
        @click.pass_obj
        def wrapper(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
            no_sync = kwargs.pop("no_sync", True)
            wait_timeout = kwargs.pop("wait_timeout", None)
            if wait_timeout is not None:
                ctx.opts.wait_timeout = wait_timeout
            elif not write:
                # Reads don't wait for tiers: probe once, then say what is offline.
                ctx.opts.wait_timeout = 0
            inst = ctx.installation()
            if write and inst.config.settings.read_only:
                inst.close()
                raise UsageError("this is a restore-only installation (attach --read-only); "
                                 "it never writes to the vault")
            try:
                if lock or write:
                    inst.lock()
                progress = ctx.progress()
                try:
                    sess = VaultSession(inst, ctx.passphrase(), progress, load_index=load_index)
                    try:
                        code = fn(ctx, sess, *args, **kwargs)
                        repair.record_damage(sess.tiers)
                        if write:
                            sess.end_writes()
                            if not no_sync:
                                run_sync(sess.tiers, progress, inst.workers())
                    finally:
                        sess.close()
                finally:
                    progress.close()
            finally:
                inst.close()
            if isinstance(code, int) and code:
                sys.exit(code)

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        if write:
            wrapper = click.option("--no-sync", is_flag=True,
                                   help="Do not synchronize stale tiers afterwards.")(wrapper)
            wrapper = click.option("--wait-timeout", type=click.FloatRange(0),
                                   metavar="SECONDS",
                                   help="Give up (exit 5) if no tier is online this long.")(
                wrapper)
        return wrapper  # type: ignore[return-value]

    return deco


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", metavar="DIR", help="Installation directory (env TIERVAULT_HOME).")
@click.option("--json", "json_", is_flag=True, help="Machine-readable output.")
@click.option("--retry-attempts", type=click.IntRange(1, 1000), metavar="N",
              help="Reconnect attempts per operation (default 10).")
@click.option("--retry-delay", type=click.FloatRange(0), metavar="SECONDS",
              help="First backoff delay between attempts (default 0.5, doubling up to 2 s).")
@click.option("--password-file", metavar="FILE", help="Read the passphrase from FILE.")
@click.version_option(__version__, prog_name="tiervault")
@click.pass_context
def cli(ctx: click.Context, home: str | None, json_: bool, retry_attempts: int | None,
        retry_delay: float | None, password_file: str | None) -> None:
    """tiervault: two-tier backup, a local speed vault and a server."""
    env = dict(os.environ)
    ctx.obj = Ctx(resolve_home(home, env), json_,
                  RunOptions(retry_attempts, retry_delay, None, env), password_file)


@cli.command()
@json_option
@click.argument("tier_urls", nargs=-1, required=True)
@click.pass_obj
def init(ctx: Ctx, tier_urls: tuple[str, ...]) -> None:
    """Create a new vault on TIER_URL(s); the first is read first (the speed vault)."""
    pw = ctx.passphrase(confirm=True)
    progress = ctx.progress()
    res = tierops.init_vault(ctx.home, list(tier_urls), pw, ctx.opts, progress)
    if ctx.json:
        emit_json(res)
    else:
        click.echo(f"created vault {res['vault_id'][:8]} on "
                   f"{', '.join(t['url'] + ' (' + t['state'] + ')' for t in res['tiers'])}")
        click.echo(f"installation home: {res['home']}")
        click.echo("keep the passphrase safe: without it the backups cannot be read")


@cli.command()
@json_option
@click.argument("paths", nargs=-1, required=True)
@click.option("--exclude", "-e", multiple=True, metavar="PATTERN", help="Skip matching paths.")
@click.option("--exclude-file", multiple=True, type=click.Path(dir_okay=False),
              help="Read exclude patterns from a file (one per line).")
@click.option("--tag", multiple=True, help="Tag the snapshot.")
@click.option("--no-cache", is_flag=True, help="Read every file even if unchanged.")
@click.option("--one-file-system", "-x", is_flag=True, help="Stay on the file systems given.")
@click.option("--archive", is_flag=True, help="Mark the snapshot as an archive (kept beyond "
              "retention until released).")
@with_session(write=True)
def backup(ctx: Ctx, sess: VaultSession, paths: tuple[str, ...], exclude: tuple[str, ...],
           exclude_file: tuple[str, ...], tag: tuple[str, ...], no_cache: bool,
           one_file_system: bool, archive: bool) -> int:
    """Back up PATHS into a new snapshot."""
    patterns = list(exclude)
    for ef in exclude_file:
        try:
            with open(ef, encoding="utf-8") as f:
                patterns += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except OSError as e:
            raise UsageError(f"cannot read {ef}: {e.strerror}") from None
    tags = [*tag, "archive"] if archive else list(tag)
    opts = BackupOptions(list(paths), patterns, tags, workers=sess.inst.workers(),
                         use_cache=not no_cache, one_file_system=one_file_system)
    snap, summary = ops.backup(sess, opts)
    if ctx.json:
        emit_json(summary)
    else:
        click.echo(f"snapshot {snap.id[:8]} saved: {summary['total_files_processed']} files "
                   f"({summary['files_new']} new, {summary['files_changed']} changed, "
                   f"{summary['files_unmodified']} unchanged), "
                   f"{human_bytes(summary['total_bytes_processed'])} processed, "
                   f"{human_bytes(summary['data_stored'])} stored, "
                   f"{summary['duration_ms'] / 1000:.1f} s")
    if not snap.complete:
        click.echo(f"warning: {len(summary['warnings'])} item(s) could not be read; "
                   "the snapshot is incomplete", err=True)
        return EXIT_INCOMPLETE
    return 0


@cli.command()
@json_option
@click.option("--tag", multiple=True, help="Only snapshots with this tag.")
@click.option("--host", help="Only snapshots from this host.")
@with_session()
def snapshots(ctx: Ctx, sess: VaultSession, tag: tuple[str, ...], host: str | None) -> None:
    """List snapshots."""
    snaps = [s for s in ops.list_snapshots(sess)
             if (not tag or set(tag) & set(s.tags)) and (not host or s.hostname == host)]
    flags = ops.snapshot_flags(sess, snaps)
    if ctx.json:
        emit_json([dict(ops.snapshot_json(s), flags=flags[s.id],
                        archived="A" in flags[s.id], local_only="L" in flags[s.id],
                        partial="P" in flags[s.id]) for s in snaps])
        return
    click.echo(f"{'ID':8}  {'Flags':5}  {'Time':25}  {'Host':15}  {'Tags':12}  Paths")
    for s in snaps:
        click.echo(f"{s.id[:8]}  {flags[s.id]:5}  {s.time[:25]:25}  {s.hostname[:15]:15}  "
                   f"{','.join(s.tags)[:12]:12}  {', '.join(s.paths)}")
    click.echo(f"{len(snaps)} snapshot(s)   flags: A archived, L only on the speed vault so "
               "far, P partial")


@cli.command(name="ls")
@json_option
@click.argument("snapshot")
@click.argument("path", required=False)
@click.option("--recursive/--no-recursive", "-r", default=True, show_default=True)
@with_session()
def ls_cmd(ctx: Ctx, sess: VaultSession, snapshot: str, path: str | None,
           recursive: bool) -> None:
    """List the entries of SNAPSHOT (below PATH)."""
    snap = sess.repo.find_snapshot(snapshot)
    entries = browse.ls(sess.repo, snap, path, recursive)
    if ctx.json:
        emit_json(list(entries))
        return
    for e in entries:
        size = e.get("size", "")
        suffix = f" -> {e['target']}" if "target" in e else ""
        click.echo(f"{_mode_str(e['type'], e['mode'])} {e.get('user') or e['uid']!s:8} "
                   f"{size!s:>12} {(e['mtime'] or '')[:19]} {e['path']}{suffix}")


def _mode_str(kind: str, mode: int) -> str:
    import stat as st

    ch = {"dir": "d", "symlink": "l", "fifo": "p", "chardev": "c", "blockdev": "b",
          "socket": "s"}.get(kind, "-")
    return ch + st.filemode(mode)[1:]


@cli.command()
@json_option
@click.argument("snapshot_a")
@click.argument("snapshot_b")
@with_session()
def diff(ctx: Ctx, sess: VaultSession, snapshot_a: str, snapshot_b: str) -> None:
    """Show what changed between two snapshots."""
    a, b = sess.repo.find_snapshot(snapshot_a), sess.repo.find_snapshot(snapshot_b)
    d = browse.diff(sess.repo, a, b)
    if ctx.json:
        emit_json({"snapshot_a": a.id, "snapshot_b": b.id, **d})
        return
    for key, sign in (("added", "+"), ("removed", "-"), ("modified", "M")):
        for p in d[key]:
            click.echo(f"{sign} {p}")
    click.echo(f"{len(d['added'])} added, {len(d['removed'])} removed, "
               f"{len(d['modified'])} modified")


@cli.command()
@json_option
@click.argument("pattern")
@click.option("--snapshot", "-s", "refs", multiple=True, help="Search only these snapshots.")
@with_session()
def find(ctx: Ctx, sess: VaultSession, pattern: str, refs: tuple[str, ...]) -> None:
    """Find files whose name (or path, if PATTERN has a '/') matches PATTERN."""
    hits = list(browse.find(sess.repo, ops.find_snapshots(sess, list(refs)), pattern))
    if ctx.json:
        emit_json(hits)
        return
    for h in hits:
        click.echo(f"{h['snapshot'][:8]}  {h['type']:7} {h.get('size', ''):>12}  {h['path']}")
    click.echo(f"{len(hits)} match(es)")


@cli.command()
@json_option
@click.argument("snapshot")
@click.argument("target_dir")
@click.option("--include", "-i", multiple=True, metavar="PATH",
              help="Restore only this path (as shown by ls); repeatable.")
@with_session()
def restore(ctx: Ctx, sess: VaultSession, snapshot: str, target_dir: str,
            include: tuple[str, ...]) -> None:
    """Restore SNAPSHOT into TARGET_DIR, recreating full original paths."""
    res = ops.restore(sess, snapshot, target_dir, list(include))
    if ctx.json:
        emit_json(res)
    else:
        click.echo(f"restored {res['files_restored']} files, {res['dirs_restored']} dirs, "
                   f"{human_bytes(res['bytes_restored'])} from {res['snapshot_id'][:8]} "
                   f"to {target_dir}")
    if res["errors"]:
        click.echo(f"error: {res['errors']} item(s) could not be restored", err=True)
        sys.exit(1)


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
@click.option("--read-data", is_flag=True, help="Read, decrypt and verify every byte.")
@click.option("--read-data-subset", metavar="N/M|P%", help="Read only a part of the data.")
@click.option("--tier", "tier_sel", metavar="N|URL", help="Check only this tier.")
@click.option("--repair", "do_repair", is_flag=True,
              help="Heal damaged or missing files from a good copy on another tier.")
@click.option("--dry-run", "-n", is_flag=True, help="With --repair: only say what it would do.")
@with_session(load_index=True)
def check(ctx: Ctx, sess: VaultSession, read_data: bool, read_data_subset: str | None,
          tier_sel: str | None, do_repair: bool, dry_run: bool) -> None:
    """Check the vault on every reachable tier (with --read-data, every byte)."""
    subset = _parse_subset(read_data_subset) if read_data_subset else None
    if do_repair and not dry_run:
        sess.inst.lock()
    res = repair.check_tiers(sess, sess.progress, tier_sel, read_data or subset is not None,
                             subset, do_repair, dry_run, sess.inst.workers())
    if do_repair and not dry_run:
        sess.end_writes()
    if ctx.json:
        emit_json(res)
    else:
        for t in res["tiers"]:
            for w in t["warnings"]:
                click.echo(f"warning: {t['url']}: {w}", err=True)
            for e in t["errors"]:
                snaps = f" (affects snapshots {', '.join(s[:8] for s in e['snapshots'])})" \
                    if e["snapshots"] else ""
                where = f"{e['file']}: " if e["file"] and \
                    not e["message"].startswith(e["file"]) else ""
                click.echo(f"error: {t['url']}: {where}{e['message']}{snaps}")
            for a in t["repairs"]:
                src = f" from {a['source']}" if a["source"] else ""
                click.echo(f"repair: {t['url']}: {a['file']}: {a['message']}{src}")
            c = t["counts"]
            click.echo(f"{t['url']}: {c.get('snapshots', 0)} snapshots, {c.get('packs', 0)} "
                       f"packs, {c.get('blobs', 0)} blobs: "
                       + ("no errors" if not t["errors"] else f"{len(t['errors'])} error(s)"))
        for name in res["rebuilt_indexes"]:
            click.echo(f"repair: rebuilt index {name}")
    if not res["ok"]:
        sys.exit(1)


def _parse_subset(text: str) -> float:
    try:
        if text.endswith("%"):
            v = float(text[:-1]) / 100
        elif "/" in text:
            n, m = text.split("/", 1)
            v = int(n) / int(m)
        else:
            v = float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--read-data-subset {text!r}: use N/M or P%") from None
    if not 0 < v <= 1:
        raise UsageError(f"--read-data-subset {text!r} must be between 0 and 100%")
    return v


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
        if r["error"]:
            extra += f"  ({r['error']})"
        click.echo(f"{i}. {r['url']}: {r['state']}, revision {rev} "
                   f"(expected {r['expected_revision']}, max {r['max_revision']}), "
                   f"last online {r['last_online'] or 'never'}{extra}")


@cli.command()
@json_option
@click.option("--wait-timeout", type=click.FloatRange(0), metavar="SECONDS",
              help="Bound any wait for a tier.")
@click.pass_obj
def sync(ctx: Ctx, wait_timeout: float | None) -> None:
    """Synchronize every reachable stale tier now, in the foreground."""
    if wait_timeout is not None:
        ctx.opts.wait_timeout = wait_timeout
    inst = ctx.installation()
    progress = ctx.progress()
    try:
        rows = tierops.sync_now(inst, progress)
    finally:
        progress.close()
        inst.close()
    if ctx.json:
        emit_json(rows)
    else:
        for r in rows:
            rev = "-" if r["revision"] is None else str(r["revision"])
            click.echo(f"{r['url']}: {r['state']}, revision {rev} (max {r['max_revision']})")
    if any(r.get("completed") is False for r in rows):
        sys.exit(1)


@cli.group()
def tier() -> None:
    """Add or remove tiers."""


@tier.command(name="add")
@json_option
@click.argument("url")
@click.option("--no-sync", is_flag=True, help="Only add; synchronize later.")
@click.pass_obj
def tier_add(ctx: Ctx, url: str, no_sync: bool) -> None:
    """Add a tier: it starts at revision 0 and is filled by synchronization."""
    inst = ctx.installation()
    progress = ctx.progress()
    try:
        res = tierops.tier_add(inst, url, progress)
        inst.close()
        if not no_sync:
            inst = ctx.installation()
            res["sync"] = tierops.sync_now(inst, progress)
    finally:
        progress.close()
        inst.close()
    if ctx.json:
        emit_json(res)
    else:
        click.echo(f"added tier {res['url']}")


@tier.command(name="remove")
@json_option
@click.argument("url")
@click.pass_obj
def tier_remove(ctx: Ctx, url: str) -> None:
    """Stop using a tier (its files stay where they are)."""
    inst = ctx.installation()
    try:
        res = tierops.tier_remove(inst, url)
    finally:
        inst.close()
    if ctx.json:
        emit_json(res)
    else:
        click.echo(f"removed tier {res['url']}")


@tier.command(name="lost")
@json_option
@click.argument("url")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would happen.")
@click.pass_obj
def tier_lost(ctx: Ctx, url: str, dry_run: bool) -> None:
    """Give up an unreachable tier: the most recent reachable tier takes over."""
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
    click.echo(f"{verb} tier {res['tier']}; {res['authoritative_tier']} (revision "
               f"{res['authoritative_revision']}) is authoritative")
    for s in res["lost_snapshots"]:
        click.echo(f"  lost snapshot {s['id'][:8]}  {s['time']}  {', '.join(s['paths'])}")
    click.echo(f"{len(res['lost_snapshots'])} snapshot(s) existed only on the lost tier"
               + ("" if dry_run else "; the next backup uploads their data again"))


@cli.command()
@json_option
@click.argument("tier_urls", nargs=-1, required=True)
@click.option("--take-over", is_flag=True,
              help="Make this installation the vault's writer; the old one will stop (exit 3).")
@click.option("--read-only", is_flag=True,
              help="Restore-only: list, browse and restore, never write (no clash with the "
                   "writer).")
@click.pass_obj
def attach(ctx: Ctx, tier_urls: tuple[str, ...], take_over: bool, read_only: bool) -> None:
    """Connect this installation to an existing vault on TIER_URL(s)."""
    progress = ctx.progress()
    try:
        res = tierops.attach(ctx.home, list(tier_urls), ctx.passphrase(), ctx.opts, progress,
                             take_over, read_only)
    finally:
        progress.close()
    if ctx.json:
        emit_json(res)
    else:
        verb = "took over" if take_over else (
            "attached (restore-only) to" if read_only else "attached to")
        click.echo(f"{verb} vault {res['vault_id'][:8]}: "
                   + ", ".join(f"{t['url']} ({t['state']})" for t in res["tiers"]))


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


@cli.group()
def key() -> None:
    """Manage the vault's passphrases (no data is re-encrypted)."""


@key.command(name="list")
@json_option
@with_session(load_index=False)
def key_list(ctx: Ctx, sess: VaultSession) -> None:
    """List key files."""
    rows = keyops.list_keys(sess)
    if ctx.json:
        emit_json(rows)
        return
    for r in rows:
        mark = "*" if r.get("current") else " "
        click.echo(f"{mark} {r['id']}  {r.get('created') or ''}  "
                   f"{r.get('username') or ''}@{r.get('hostname') or ''}"
                   f"{'  ' + r['error'] if 'error' in r else ''}")


@key.command(name="add")
@json_option
@click.option("--new-password-file", metavar="FILE", help="Read the new passphrase from FILE.")
@with_session(load_index=False, write=True)
def key_add(ctx: Ctx, sess: VaultSession, new_password_file: str | None) -> None:
    """Add another passphrase that opens the vault."""
    res = keyops.add_key(sess, ctx.new_passphrase(new_password_file))
    emit_json(res) if ctx.json else click.echo(f"added key {res['added']}")


@key.command(name="passwd")
@json_option
@click.option("--new-password-file", metavar="FILE", help="Read the new passphrase from FILE.")
@with_session(load_index=False, write=True)
def key_passwd(ctx: Ctx, sess: VaultSession, new_password_file: str | None) -> None:
    """Change the passphrase in use."""
    res = keyops.change_passphrase(sess, ctx.new_passphrase(new_password_file))
    emit_json(res) if ctx.json else click.echo(
        f"passphrase changed (key {res['removed']} replaced by {res['added']})")


@key.command(name="remove")
@json_option
@click.argument("key_id")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@with_session(load_index=False, write=True)
def key_remove(ctx: Ctx, sess: VaultSession, key_id: str, dry_run: bool) -> None:
    """Remove a key file (not the one in use)."""
    res = keyops.remove_key(sess, key_id, dry_run)
    verb = "would remove" if dry_run else "removed"
    emit_json(res) if ctx.json else click.echo(f"{verb} key {res['removed']}")


daemon_cmds.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point: map errors to one line and an exit code, never a traceback."""
    try:
        cli.main(args=argv, prog_name="tiervault", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tiervault: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if isinstance(e, click.UsageError) else e.exit_code)
    except TierVaultError as e:
        click.echo(f"tiervault: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("tiervault: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
