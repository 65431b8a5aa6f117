"""Commands that fill and read the vault: init, backup, snapshots, ls, diff, find, restore."""

from __future__ import annotations

import sys

import click

from tiervault.cli.app import cli
from tiervault.cli.context import Ctx, json_option, with_session
from tiervault.cli.output import emit_json, human_bytes
from tiervault.engine import browse
from tiervault.engine.backup import BackupOptions
from tiervault.errors import EXIT_INCOMPLETE, UsageError
from tiervault.service import ops, tierops
from tiervault.service.session import VaultSession


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
@click.argument("paths", nargs=-1)
@click.option("--exclude", "-e", multiple=True, metavar="PATTERN", help="Skip matching paths.")
@click.option("--exclude-file", multiple=True, type=click.Path(dir_okay=False),
              help="Read exclude patterns from a file (one per line).")
@click.option("--iexclude", multiple=True, metavar="PATTERN",
              help="Like --exclude, ignoring the case of names.")
@click.option("--iexclude-file", multiple=True, type=click.Path(dir_okay=False),
              help="Like --exclude-file, ignoring the case of names.")
@click.option("--exclude-if-present", multiple=True, metavar="NAME[:HEADER]",
              help="Skip directories holding a file NAME (that starts with HEADER).")
@click.option("--exclude-caches", is_flag=True,
              help="Skip directories holding a valid CACHEDIR.TAG.")
@click.option("--exclude-larger-than", metavar="SIZE",
              help="Skip files larger than SIZE (k, m, g, t: powers of 1024).")
@click.option("--files-from", multiple=True, metavar="FILE",
              help="Back up the paths (glob patterns, one a line) listed in FILE ('-': stdin).")
@click.option("--files-from-verbatim", multiple=True, metavar="FILE",
              help="Back up the paths listed in FILE, one a line, taken literally.")
@click.option("--files-from-raw", multiple=True, metavar="FILE",
              help="Back up the NUL-separated paths listed in FILE.")
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Back up standard input as one file (named by --stdin-filename).")
@click.option("--stdin-filename", metavar="NAME",
              help="The file name given to standard input (default 'stdin').")
@click.option("--host", metavar="NAME", help="Record NAME as the snapshot's hostname.")
@click.option("--dry-run", "-n", is_flag=True,
              help="Walk, read and count what would be stored; write nothing.")
@click.option("--tag", multiple=True, help="Tag the snapshot.")
@click.option("--no-cache", is_flag=True, help="Read every file even if unchanged.")
@click.option("--one-file-system", "-x", is_flag=True, help="Stay on the file systems given.")
@click.option("--archive", is_flag=True, help="Mark the snapshot as an archive (kept beyond "
              "retention until released).")
@with_session(write=True)
def backup(ctx: Ctx, sess: VaultSession, paths: tuple[str, ...], exclude: tuple[str, ...],
           exclude_file: tuple[str, ...], iexclude: tuple[str, ...],
           iexclude_file: tuple[str, ...], exclude_if_present: tuple[str, ...],
           exclude_caches: bool, exclude_larger_than: str | None, files_from: tuple[str, ...],
           files_from_verbatim: tuple[str, ...], files_from_raw: tuple[str, ...],
           from_stdin: bool, stdin_filename: str | None, host: str | None, dry_run: bool,
           tag: tuple[str, ...], no_cache: bool, one_file_system: bool, archive: bool) -> int:
    """Back up PATHS (or the paths --files-from lists, or standard input) into a new
    snapshot."""
    from tiervault.cli.backup_input import parse_size, read_files_from, read_patterns

    notes: list[str] = []
    listed = read_files_from(files_from, files_from_verbatim, files_from_raw, notes)
    for n in notes:  # not a warning of the snapshot: nothing unreadable was left out
        sess.progress.info(f"warning: {n}")
    if stdin_filename is not None and not from_stdin:
        raise UsageError("--stdin-filename needs --stdin")
    if from_stdin:
        if paths or listed:
            raise UsageError("--stdin backs up standard input only: give no PATHS or "
                             "--files-from")
        stdin_filename = "stdin" if stdin_filename is None else stdin_filename
        if stdin_filename in ("", ".", "..") or "/" in stdin_filename or \
                "\0" in stdin_filename:
            raise UsageError(f"--stdin-filename {stdin_filename!r}: give a plain file name")
    elif not paths and not listed:
        raise UsageError("nothing to back up: give PATHS, --files-from FILE or --stdin")
    if host is not None and not host.strip():
        raise UsageError("--host needs a name")
    tags = [*tag, "archive"] if archive else list(tag)
    opts = BackupOptions(
        [*paths, *listed], [*exclude, *read_patterns(exclude_file, "--exclude-file")], tags,
        workers=sess.inst.workers(), use_cache=not no_cache, one_file_system=one_file_system,
        host=host, iexcludes=[*iexclude, *read_patterns(iexclude_file, "--iexclude-file")],
        exclude_if_present=list(exclude_if_present), exclude_caches=exclude_caches,
        exclude_larger_than=parse_size(exclude_larger_than) if exclude_larger_than else None,
        dry_run=dry_run, stdin_filename=stdin_filename)
    snap, summary = ops.backup(sess, opts, stdin=sys.stdin.buffer if from_stdin else None)
    if ctx.json:
        emit_json(summary)
    else:
        counts = (f"{summary['total_files_processed']} files "
                  f"({summary['files_new']} new, {summary['files_changed']} changed, "
                  f"{summary['files_unmodified']} unchanged), "
                  f"{human_bytes(summary['total_bytes_processed'])} processed")
        if dry_run:
            click.echo(f"dry run: would save {counts}, "
                       f"{human_bytes(summary['data_added'])} of new data; nothing was written")
        else:
            click.echo(f"snapshot {snap.id[:8]} saved: {counts}, "
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
