"""Commands that fill and read the vault: init, backup, snapshots, ls, diff, find, restore."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from tiervault.cli.app import cli
from tiervault.cli.context import Ctx, json_option, with_session
from tiervault.cli.filters import filter_options, snapshot_filter
from tiervault.cli.output import (
    cleartext_warnings,
    emit_json,
    human_bytes,
    inert,
    local_time,
    plural,
    say_warnings,
)
from tiervault.engine import browse
from tiervault.engine.backupopts import BackupOptions
from tiervault.errors import EXIT_INCOMPLETE, UsageError
from tiervault.service import ops, tierops
from tiervault.service.session import VaultSession

#: How --host/--path/--tag read on commands that take one snapshot.
LATEST = "choose 'latest' among"

if TYPE_CHECKING:
    from tiervault.vault.snapshot import Snapshot


@cli.command()
@json_option
@click.argument("tier_urls", nargs=-1, required=True)
@click.option("--allow-offline", is_flag=True,
              help="Create the vault even if a tier does not answer now; it is created and "
                   "filled by synchronization when it appears. (A tier that refuses access "
                   "always fails init.)")
@click.pass_obj
def init(ctx: Ctx, tier_urls: tuple[str, ...], allow_offline: bool) -> None:
    """Create a new vault on TIER_URL(s); the first is read first (the speed vault)."""
    pw = ctx.passphrase(confirm=True)
    clear = cleartext_warnings(ctx.json, list(tier_urls))
    progress = ctx.progress()
    try:
        res = tierops.init_vault(ctx.home, list(tier_urls), pw, ctx.opts, progress,
                                 allow_offline=allow_offline)
    finally:
        progress.close()
    say_warnings(ctx.json, res["warnings"])
    res["warnings"] = clear + res["warnings"]
    if ctx.json:
        emit_json(res)
    else:
        if not ctx.quiet:  # -q: what only reports success goes; the advice stays
            tiers = ", ".join(f"{inert(t['url'])} ({t['state']})" for t in res["tiers"])
            click.echo(f"created vault {res['vault_id'][:8]} on {tiers}")
        for t in res["tiers"]:
            if t["pending"]:
                click.echo(f"tier {inert(t['url'])} does not answer yet: it is created and "
                           "filled by synchronization when it does ('tiervault sync')")
        if not ctx.quiet:
            click.echo(f"installation home: {inert(res['home'])}")
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
@click.option("--wait-all-tiers", is_flag=True, help="Wait until every online tier has the "
              "snapshot (by default a tier that falls behind is synchronized afterwards).")
@with_session(write=True)
def backup(ctx: Ctx, sess: VaultSession, paths: tuple[str, ...], exclude: tuple[str, ...],
           exclude_file: tuple[str, ...], iexclude: tuple[str, ...],
           iexclude_file: tuple[str, ...], exclude_if_present: tuple[str, ...],
           exclude_caches: bool, exclude_larger_than: str | None, files_from: tuple[str, ...],
           files_from_verbatim: tuple[str, ...], files_from_raw: tuple[str, ...],
           from_stdin: bool, stdin_filename: str | None, host: str | None, dry_run: bool,
           tag: tuple[str, ...], no_cache: bool, one_file_system: bool, archive: bool,
           wait_all_tiers: bool) -> int:
    """Back up PATHS (or the paths --files-from lists, or standard input) into a new
    snapshot."""
    sess.tiers.wait_all_tiers = wait_all_tiers
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
    # The archive flag is an archive mark, not a tag: `--tag archive` is just a tag.
    tags = list(tag)
    opts = BackupOptions(
        [*paths, *listed], [*exclude, *read_patterns(exclude_file, "--exclude-file")], tags,
        workers=sess.inst.workers(), use_cache=not no_cache, one_file_system=one_file_system,
        host=host, iexcludes=[*iexclude, *read_patterns(iexclude_file, "--iexclude-file")],
        exclude_if_present=list(exclude_if_present), exclude_caches=exclude_caches,
        exclude_larger_than=parse_size(exclude_larger_than) if exclude_larger_than else None,
        dry_run=dry_run, stdin_filename=stdin_filename, archive=archive)
    snap, summary = ops.backup(sess, opts, stdin=sys.stdin.buffer if from_stdin else None)
    if ctx.json:
        emit_json(summary)
    elif not ctx.quiet:
        counts = (f"{plural(summary['total_files_processed'], 'file')} "
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
        if not ctx.json:  # the JSON summary carries the warnings; no second, human copy
            click.echo(f"warning: {plural(len(summary['warnings']), 'item')} could not be read; "
                       "the snapshot is incomplete", err=True)
        return EXIT_INCOMPLETE
    return 0


@cli.command()
@json_option
@click.option("--tag", multiple=True, metavar="TAG[,TAG...]",
              help="Only snapshots with these tags (all of a comma list; repeat for either).")
@click.option("--host", multiple=True, help="Only snapshots from this host (repeatable).")
@click.option("--path", "paths", multiple=True, metavar="PATH",
              help="Only snapshots that include this path (repeatable: all of them).")
@click.option("--latest", type=click.IntRange(1), metavar="N",
              help="Only the N newest snapshots of each host and path set.")
@with_session()
def snapshots(ctx: Ctx, sess: VaultSession, tag: tuple[str, ...], host: tuple[str, ...],
              paths: tuple[str, ...], latest: int | None) -> None:
    """List snapshots."""
    from tiervault.engine.policy import filter_snapshots, latest_per_group

    snaps = filter_snapshots(ops.list_snapshots(sess), hosts=host, paths=paths, tags=tag)
    if latest is not None:
        snaps = latest_per_group(snaps, latest)
    flags = ops.snapshot_flags(sess, snaps)
    if ctx.json:
        emit_json([dict(ops.snapshot_json(s), flags=flags[s.id],
                        archived="A" in flags[s.id], local_only="L" in flags[s.id],
                        partial="P" in flags[s.id]) for s in snaps])
        return
    for line in snapshot_table(snaps, flags):
        click.echo(line)
    click.echo(f"{plural(len(snaps), 'snapshot')}   flags: A archived, L only on the speed "
               "vault so far, P partial")


#: Tags wrap (at commas) past this width rather than being cut.
_TAGS_WIDTH = 24


def _wrap_tags(tags: list[str]) -> list[str]:
    lines: list[str] = []
    for t in tags:
        if lines and len(lines[-1]) + 1 + len(t) <= _TAGS_WIDTH:
            lines[-1] += "," + t
        else:
            if lines:
                lines[-1] += ","
            lines.append(t)
    return lines or [""]


def snapshot_table(snaps: list[Snapshot], flags: dict[str, str]) -> list[str]:
    """The ``snapshots`` table: nothing cut; tags and paths wrap onto more lines."""
    head = ("ID", "Flags", "Time", "Host", "Tags", "Paths")
    rows = [(s.id[:8], flags.get(s.id, ""), local_time(s.time), inert(s.hostname),
             _wrap_tags([inert(t) for t in s.tags]), [inert(p) for p in s.paths] or [""])
            for s in snaps]
    w = [max([len(head[i])] + [len(r[i]) for r in rows]) for i in range(4)]
    w.append(max([len(head[4])] + [len(t) for r in rows for t in r[4]]))
    out = ["  ".join(h.ljust(w[i]) for i, h in enumerate(head[:5])) + "  " + head[5]]
    out.append("-" * (sum(w) + 2 * 5 + max([5] + [len(p) for r in rows for p in r[5]])))
    for sid, fl, when, host, tag_lines, path_lines in rows:
        for i in range(max(len(tag_lines), len(path_lines))):
            first = (sid, fl, when, host) if i == 0 else ("", "", "", "")
            tag = tag_lines[i] if i < len(tag_lines) else ""
            path = path_lines[i] if i < len(path_lines) else ""
            out.append(("  ".join(c.ljust(w[j]) for j, c in enumerate(first)) + "  "
                        + tag.ljust(w[4]) + "  " + path).rstrip())
    return out


@cli.command(name="ls")
@json_option
@click.argument("snapshot")
@click.argument("path", required=False)
@click.option("--recursive/--no-recursive", "-r", default=True, show_default=True)
@click.option("--long", "-l", "long_", is_flag=True,
              help="Long listing: mode, owner, size in bytes, time, path.")
@click.option("--human-readable", "-H", "human", is_flag=True,
              help="With sizes in KiB/MiB/GiB (implies --long).")
@filter_options(LATEST)
@with_session()
def ls_cmd(ctx: Ctx, sess: VaultSession, snapshot: str, path: str | None,
           recursive: bool, long_: bool, human: bool, filter_hosts: tuple[str, ...],
           filter_paths: tuple[str, ...], filter_tags: tuple[str, ...]) -> None:
    """List the entries of SNAPSHOT (below PATH): paths, or with -l/-H a long listing."""
    snap = sess.repo.find_snapshot(snapshot, snapshot_filter(filter_hosts, filter_paths,
                                                             filter_tags))
    entries = browse.ls(sess.repo, snap, path, recursive)
    if ctx.json:  # sizes stay numbers of bytes, whatever -H says
        emit_json(list(entries))
        return
    for e in entries:
        suffix = f" -> {inert(e['target'])}" if "target" in e else ""
        if not (long_ or human):
            click.echo(f"{inert(e['path'])}{suffix}")
            continue
        size = e.get("size", "")
        if human and isinstance(size, int):
            size = human_bytes(size)
        click.echo(f"{_mode_str(e['type'], e['mode'])} {inert(e.get('user') or e['uid']):8} "
                   f"{size!s:>12} {(e['mtime'] or '')[:19]} {inert(e['path'])}{suffix}")


def _mode_str(kind: str, mode: int) -> str:
    import stat as st

    ch = {"dir": "d", "symlink": "l", "fifo": "p", "chardev": "c", "blockdev": "b",
          "socket": "s"}.get(kind, "-")
    return ch + st.filemode(mode)[1:]


@cli.command()
@json_option
@click.argument("snapshot_a")
@click.argument("snapshot_b")
@filter_options(LATEST)
@with_session()
def diff(ctx: Ctx, sess: VaultSession, snapshot_a: str, snapshot_b: str,
         filter_hosts: tuple[str, ...], filter_paths: tuple[str, ...],
         filter_tags: tuple[str, ...]) -> None:
    """Show what changed between two snapshots."""
    which = snapshot_filter(filter_hosts, filter_paths, filter_tags)
    a, b = sess.repo.find_snapshot(snapshot_a, which), sess.repo.find_snapshot(snapshot_b, which)
    d = browse.diff(sess.repo, a, b)
    if ctx.json:
        emit_json({"snapshot_a": a.id, "snapshot_b": b.id, **d})
        return
    for key, sign in (("added", "+"), ("removed", "-"), ("modified", "M")):
        for p in d[key]:
            click.echo(f"{sign} {inert(p)}")
    click.echo(f"{len(d['added'])} added, {len(d['removed'])} removed, "
               f"{len(d['modified'])} modified")


@cli.command()
@json_option
@click.argument("pattern")
@click.option("--snapshot", "-s", "refs", multiple=True, help="Search only these snapshots.")
@filter_options("search (and choose 'latest' among)")
@with_session()
def find(ctx: Ctx, sess: VaultSession, pattern: str, refs: tuple[str, ...],
         filter_hosts: tuple[str, ...], filter_paths: tuple[str, ...],
         filter_tags: tuple[str, ...]) -> None:
    """Find entries whose name matches PATTERN; a PATTERN with a '/' matches the end of
    the path at directory boundaries ('doc/*.txt'), or the whole path if it starts with '/'."""
    which = snapshot_filter(filter_hosts, filter_paths, filter_tags)
    hits = list(browse.find(sess.repo, ops.find_snapshots(sess, list(refs), which), pattern))
    if ctx.json:
        emit_json(hits)
        return
    for h in hits:
        click.echo(f"{h['snapshot'][:8]}  {h['type']:7} {h.get('size', ''):>12}  "
                   f"{inert(h['path'])}")
    click.echo(plural(len(hits), "match", "matches"))


@cli.command()
@json_option
@click.argument("snapshot")
@click.argument("target_dir")
@click.option("--include", "-i", multiple=True, metavar="PATTERN",
              help="Restore only what matches (a path as shown by ls, or a glob: '*.odt', "
                   "'/home/*/doc', 'doc/**/*.pdf'); repeatable.")
@click.option("--no-devices", is_flag=True,
              help="Skip block and character device nodes (one warning with the count).")
@click.option("--no-setuid", is_flag=True,
              help="Strip setuid and setgid bits from restored files.")
@filter_options(LATEST)
@with_session()
def restore(ctx: Ctx, sess: VaultSession, snapshot: str, target_dir: str,
            include: tuple[str, ...], no_devices: bool, no_setuid: bool,
            filter_hosts: tuple[str, ...], filter_paths: tuple[str, ...],
            filter_tags: tuple[str, ...]) -> None:
    """Restore SNAPSHOT into TARGET_DIR, recreating full original paths."""
    res = ops.restore(sess, snapshot, target_dir, list(include),
                      snapshot_filter(filter_hosts, filter_paths, filter_tags),
                      no_devices=no_devices, no_setuid=no_setuid)
    if ctx.json:
        emit_json(res)
    elif not ctx.quiet:
        click.echo(f"restored {plural(res['files_restored'], 'file')}, "
                   f"{plural(res['dirs_restored'], 'directory', 'directories')}, "
                   f"{human_bytes(res['bytes_restored'])} from {res['snapshot_id'][:8]} "
                   f"to {inert(target_dir)}")
    if res["errors"]:
        if not ctx.json:
            click.echo(f"error: {plural(res['errors'], 'item')} could not be restored", err=True)
        sys.exit(1)
