"""``tiervault daemon``, ``status``, ``run``, ``cancel``, ``set ...`` and ``schedule ...``.

Registered on the main command group by ``register(cli)``. The daemon itself
is ``tiervault.daemon``; ``status``/``run``/``cancel`` talk to the running
daemon through its control API; ``set`` and ``schedule`` edit ``config.toml``
(a running daemon picks the change up by itself).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tiervault.cli.output import emit_json, human_bytes, inert, plural
from tiervault.daemon.schedule import local_zone
from tiervault.daemon.server import ControlClient
from tiervault.daemon.sets import (
    add_schedule,
    add_set,
    load_daemon_settings,
    load_sets,
    remove_schedule,
    remove_set,
    set_scripts,
)
from tiervault.errors import EXIT_INCOMPLETE, TierVaultError, UsageError

if TYPE_CHECKING:
    from tiervault.cli.context import Ctx

F = TypeVar("F", bound=Callable[..., Any])


def _set_json(c: click.Context, _p: click.Parameter, value: bool) -> None:
    if value and c.obj is not None and hasattr(c.obj, "json"):
        c.obj.json = True


def json_option(fn: F) -> F:
    """``--json`` after the command name too."""
    return click.option("--json", "json_", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_json, help="Machine-readable output.")(fn)  # type: ignore[return-value]


def _when(ts: float | str | None) -> str:
    if ts is None:
        return "-"
    if isinstance(ts, str):
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            return ts
    else:
        dt = datetime.fromtimestamp(ts, UTC)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _session_line(s: dict[str, Any]) -> str:
    d = s.get("details") or {}
    if s.get("kind") == "sync":
        copied = sum(r.get("bytes_copied", 0) for r in d.get("results", []))
        tiers = ", ".join(r["tier"] for r in d.get("results", []))
        return (f"#{s['id']:<5} {_when(s.get('started'))}  sync    {s.get('status') or '?':9} "
                f"{tiers}: {human_bytes(copied)} copied")
    if s.get("kind") == "command":
        code = d.get("exit_code")
        return (f"#{s['id']:<5} {_when(s.get('started'))}  command {s.get('status') or '?':9} "
                f"tiervault {d.get('command', '?')}"
                + ("" if code is None else f" (exit {code})")
                + (f"; {d['error']}" if d.get("error") else ""))
    extra = ""
    if d.get("snapshot_id"):
        extra = (f"snapshot {d.get('short_id')}, {plural(d.get('files_selected', 0), 'file')}, "
                 f"{human_bytes(d.get('bytes_selected', 0))}, "
                 f"{human_bytes(d.get('bytes_sent', 0))} sent")
        if d.get("tiers_missed"):
            extra += f" (not yet on {', '.join(d['tiers_missed'])})"
    if d.get("error"):
        extra += ("; " if extra else "") + str(d["error"])
    return (f"#{s['id']:<5} {_when(s.get('started'))}  {d.get('set', '?'):7} "
            f"{s.get('status') or '?':9} {extra}")


def register(cli: click.Group) -> None:
    """Add the daemon's commands to the ``tiervault`` group."""
    for cmd in (daemon_cmd, status_cmd, run_cmd, cancel_cmd, set_group, schedule_group):
        cli.add_command(cmd)


# -- the daemon ----------------------------------------------------------------------------------


@click.command(name="daemon")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Loopback port of the control API (0: a free one).")
@click.option("--probe-interval", type=click.FloatRange(0.1), metavar="SECONDS",
              help="Seconds between idle rounds (probe tiers, sync) [config: 60].")
@click.option("--tick", type=click.FloatRange(0.01), default=1.0, show_default=True,
              metavar="SECONDS", help="How often the loop looks at the clock.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                               case_sensitive=False), default="INFO",
              show_default=True)
@click.pass_obj
def daemon_cmd(ctx: Ctx, port: int, probe_interval: float | None, tick: float,
               log_level: str) -> None:
    """Run backup sets on their schedules and keep the tiers in sync (foreground).

    One daemon per installation. SIGTERM stops it cleanly (a running backup
    stops at a safe point). The passphrase comes from --password-file or
    TIERVAULT_PASSWORD.
    """
    from tiervault.daemon.main import DaemonOptions, run_daemon

    inst = ctx.installation()
    passphrase = ctx.passphrase()
    code = run_daemon(inst, passphrase, DaemonOptions(port, tick, probe_interval, log_level))
    if code:
        sys.exit(code)


# -- talking to the daemon -----------------------------------------------------------------------


@click.command(name="status")
@json_option
@click.option("--sessions", "n_sessions", type=click.IntRange(0, 1000), default=5,
              show_default=True, metavar="N", help="Show the last N sessions.")
@click.pass_obj
def status_cmd(ctx: Ctx, n_sessions: int) -> None:
    """What the daemon is doing (running job, queue, next runs, tiers) and the last sessions.

    The session history is the installation's own (its state database): it is
    shown whether the daemon runs or not.
    """
    from tiervault.daemon.main import HISTORY_KINDS
    from tiervault.daemon.server import running_daemon

    st: dict[str, Any] = {"daemon_running": False, "pid": None, "state": "not running"}
    if running_daemon(ctx.home) is not None:
        try:
            st = dict(ControlClient(ctx.home).status(), daemon_running=True)
        except TierVaultError:
            st["state"] = "not answering"
    inst = ctx.installation()
    try:
        st["sessions"] = inst.db.sessions(n_sessions, kinds=HISTORY_KINDS) if n_sessions \
            else []
    finally:
        inst.close()
    if ctx.json:
        emit_json(st)
        return
    if not st["daemon_running"]:
        click.echo(f"daemon: {st['state']} for {inert(ctx.home)} "
                   "(start it with 'tiervault daemon')")
    else:
        _print_status(st)
    for s in st["sessions"]:
        click.echo(inert(_session_line(s)))  # one line; its names and errors escaped
        for ln in _script_lines(s):
            click.echo(f"    {inert(ln)}")  # what a script printed


def _print_status(st: dict[str, Any]) -> None:
    r = st.get("running")
    click.echo(f"daemon pid {st['pid']}: {st['state']} (since {_when(st['started'])}, "
               f"{st['timezone']})")
    if r and r.get("command"):
        click.echo(f"running: {inert(r['what'])}, handed over from the command line, since "
                   f"{_when(r['started'])}")
    elif r:
        p = r.get("progress") or {}
        click.echo(f"running: backup of set {r['set']} ({r['trigger']}) since "
                   f"{_when(r['started'])}: {plural(p.get('files_done', 0), 'file')}, "
                   f"{human_bytes(p.get('bytes_done', 0))}"
                   + (f"; stops at {_when(r['deadline'])}" if r.get("deadline") else "")
                   + (f"; stopping: {r['cancelling']}" if r.get("cancelling") else ""))
    for q in st.get("queue", []):
        click.echo(f"queued: {inert(q.get('what') or 'set ' + q['set'])} ({q['trigger']})")
    for s in st.get("schedules", []):
        pend = "  (pending: waits for its window)" if s.get("pending") else ""
        win = f", window {s['window']}" if s.get("window") else ""
        click.echo(f"schedule {s['set']} #{s['index']}: {s['spec']}{win}; next "
                   f"{_when(s.get('next_run'))}{pend}")
    for t in st.get("tiers", []):
        click.echo(f"tier {inert(t['url'])}: {t['state']}")


def _script_lines(s: dict[str, Any]) -> list[str]:
    """The scripts' lines of a session's log (what they printed, how they ended)."""
    log = (s.get("details") or {}).get("log") or []
    return [ln for ln in log if isinstance(ln, str) and ln.startswith(("pre-script",
                                                                        "post-script"))]


@click.command(name="run")
@json_option
@click.argument("set_name", metavar="SET")
@click.option("--wait", is_flag=True, help="Wait for the backup to end; exit like 'backup'.")
@click.option("--timeout", type=click.FloatRange(0), metavar="SECONDS",
              help="With --wait: give up waiting after this long.")
@click.option("--no-scripts", is_flag=True, help="Skip the set's pre- and post-scripts.")
@click.pass_obj
def run_cmd(ctx: Ctx, set_name: str, wait: bool, timeout: float | None,
            no_scripts: bool) -> None:
    """Ask the daemon to back up SET now (with the set's scripts, as on schedule)."""
    client = ControlClient(ctx.home)
    res = client.run(set_name, no_scripts)
    if wait:
        res["session"] = _wait_for(client, res["request_id"], timeout)
    if ctx.json:
        emit_json(res)
    elif not res.get("queued") and "message" in res:
        click.echo(inert(res["message"]))
    else:
        click.echo(f"backup of set {set_name} queued ({res['request_id']})")
    sess = res.get("session")
    if sess is not None:
        if not ctx.json:
            click.echo(inert(_session_line(sess)))
        status = sess.get("status")
        if status == "warnings":
            sys.exit(EXIT_INCOMPLETE)
        if status != "success":
            sys.exit(1)


def _wait_for(client: ControlClient, request_id: str, timeout: float | None) -> dict[str, Any]:
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        for s in client.sessions(50):
            if (s.get("details") or {}).get("request_id") == request_id and s.get("ended"):
                return s
        st = client.status()
        active = [j.get("request_id") for j in st.get("queue", [])]
        if st.get("running"):
            active.append(st["running"].get("request_id"))
        if request_id not in active:
            for s in client.sessions(50):
                if (s.get("details") or {}).get("request_id") == request_id:
                    return s
            raise TierVaultError(f"the daemon did not run the backup ({request_id}); "
                                 "see its log")
        if end is not None and time.monotonic() > end:
            raise TierVaultError(f"the backup ({request_id}) did not end within {timeout:g} s; "
                                 "it goes on in the daemon")
        time.sleep(0.25)


@click.command(name="cancel")
@json_option
@click.option("--all", "drop_queue", is_flag=True, help="Also drop queued backups.")
@click.pass_obj
def cancel_cmd(ctx: Ctx, drop_queue: bool) -> None:
    """Stop the daemon's running backup at a safe point."""
    res = ControlClient(ctx.home).cancel(drop_queue)
    if ctx.json:
        emit_json(res)
        return
    c = res.get("cancelled")
    click.echo(f"stopping the backup of set {c['set']} at a safe point" if c
               else "no backup is running")
    if res.get("dropped"):
        click.echo(f"dropped {len(res['dropped'])} queued backup(s)")


# -- sets --------------------------------------------------------------------------------------


@click.group(name="set")
def set_group() -> None:
    """Named backup sets (paths, excludes, tags) for the daemon."""


@set_group.command(name="add")
@json_option
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@click.option("--exclude", "-e", multiple=True, metavar="PATTERN", help="Skip matching paths.")
@click.option("--exclude-file", multiple=True, type=click.Path(dir_okay=False),
              help="Add the patterns of a file (one per line; copied into the set).")
@click.option("--iexclude", multiple=True, metavar="PATTERN",
              help="Like --exclude, ignoring the case of names.")
@click.option("--exclude-if-present", multiple=True, metavar="NAME[:HEADER]",
              help="Skip directories holding a file NAME (that starts with HEADER).")
@click.option("--exclude-caches", is_flag=True,
              help="Skip directories holding a valid CACHEDIR.TAG.")
@click.option("--exclude-larger-than", metavar="SIZE",
              help="Skip files larger than SIZE (k, m, g, t: powers of 1024).")
@click.option("--tag", multiple=True, help="Tag the set's snapshots.")
@click.option("--one-file-system", "-x", is_flag=True, help="Stay on the file systems given.")
@click.option("--pre-script", metavar="CMD",
              help="Run before every backup of the set (schedule, 'run', console).")
@click.option("--post-script", metavar="CMD", help="Run after every backup of the set.")
@click.option("--script-timeout", type=click.FloatRange(0.001), metavar="SECONDS",
              help="Kill a script running longer (default 600).")
@click.option("--on-pre-failure", type=click.Choice(["abort", "continue"]),
              help="When the pre-script fails (default abort).")
@click.pass_obj
def set_add(ctx: Ctx, name: str, paths: tuple[str, ...], exclude: tuple[str, ...],
            exclude_file: tuple[str, ...], iexclude: tuple[str, ...],
            exclude_if_present: tuple[str, ...], exclude_caches: bool,
            exclude_larger_than: str | None, tag: tuple[str, ...],
            one_file_system: bool, pre_script: str | None,
            post_script: str | None, script_timeout: float | None,
            on_pre_failure: str | None) -> None:
    """Add the backup set NAME of PATHS (and the scripts around its backups)."""
    from tiervault.cli.backup_input import parse_size, read_patterns
    from tiervault.engine.excludes import parse_tag_specs

    parse_tag_specs(list(exclude_if_present), False)  # refuse a bad NAME now, not at 3 am
    filters = {"iexcludes": list(iexclude), "exclude_if_present": list(exclude_if_present),
               "exclude_caches": exclude_caches,
               "exclude_larger_than": parse_size(exclude_larger_than)
               if exclude_larger_than else None}
    inst = ctx.installation()
    bs = add_set(inst.config, name, list(paths),
                 [*exclude, *read_patterns(exclude_file, "--exclude-file")], list(tag),
                 one_file_system,
                 {"pre_script": pre_script, "post_script": post_script,
                  "script_timeout": script_timeout, "on_pre_failure": on_pre_failure},
                 filters)
    inst.save()
    missing = [p for p in bs.paths if not _exists(p)]
    for p in missing:
        click.echo(f"warning: {inert(p)} does not exist (yet)", err=True)
    if ctx.json:
        emit_json(bs.to_json())
    else:
        click.echo(f"added set {name}: {inert(', '.join(bs.paths))}; give it a schedule with "
                   f"'tiervault schedule add {name} --days mon-fri --time 12:00'")


def _exists(p: str) -> bool:
    import os

    return os.path.lexists(p)


@set_group.command(name="list")
@json_option
@click.pass_obj
def set_list(ctx: Ctx) -> None:
    """List backup sets."""
    inst = ctx.installation()
    sets = load_sets(inst.config)
    if ctx.json:
        emit_json([bs.to_json() for bs in sets.values()])
        return
    for bs in sets.values():
        extra = f"; excludes {', '.join(bs.excludes)}" if bs.excludes else ""
        extra += f"; tags {', '.join(bs.tags)}" if bs.tags else ""
        extra += f"; pre-script {bs.scripts.pre_script!r}" if bs.scripts.pre_script else ""
        extra += f"; post-script {bs.scripts.post_script!r}" if bs.scripts.post_script else ""
        click.echo(inert(f"{bs.name}: {', '.join(bs.paths)}{extra}; "
                         f"{len(bs.schedules)} schedule(s)"))
    if not sets:
        click.echo("no backup sets (add one: tiervault set add NAME PATH...)")


@set_group.command(name="scripts")
@json_option
@click.argument("name")
@click.option("--pre-script", metavar="CMD", help="Run before every backup of the set.")
@click.option("--post-script", metavar="CMD", help="Run after every backup of the set.")
@click.option("--script-timeout", type=click.FloatRange(0.001), metavar="SECONDS",
              help="Kill a script running longer (default 600).")
@click.option("--on-pre-failure", type=click.Choice(["abort", "continue"]),
              help="When the pre-script fails (default abort).")
@click.option("--clear", is_flag=True,
              help="First drop the set's scripts (and those its schedules had).")
@click.pass_obj
def set_scripts_cmd(ctx: Ctx, name: str, pre_script: str | None, post_script: str | None,
                    script_timeout: float | None, on_pre_failure: str | None,
                    clear: bool) -> None:
    """Set the scripts run around every backup of the set NAME."""
    inst = ctx.installation()
    bs = set_scripts(inst.config, name, {"pre_script": pre_script, "post_script": post_script,
                                         "script_timeout": script_timeout,
                                         "on_pre_failure": on_pre_failure}, clear)
    inst.save()
    if ctx.json:
        emit_json(bs.to_json())
    else:
        sc = bs.scripts
        click.echo(f"set {name}: pre-script {sc.pre_script or '-'}, post-script "
                   f"{sc.post_script or '-'}, timeout {sc.script_timeout:g} s, "
                   f"on pre-script failure {sc.on_pre_failure}")


@set_group.command(name="remove")
@json_option
@click.argument("name")
@click.pass_obj
def set_remove(ctx: Ctx, name: str) -> None:
    """Remove the backup set NAME and its schedules (its snapshots stay)."""
    inst = ctx.installation()
    remove_set(inst.config, name)
    inst.save()
    if ctx.json:
        emit_json({"removed": name})
    else:
        click.echo(f"removed set {name}")


# -- schedules -----------------------------------------------------------------------------------


@click.group(name="schedule")
def schedule_group() -> None:
    """When the daemon backs up each set."""


@schedule_group.command(name="add")
@json_option
@click.argument("set_name", metavar="SET")
@click.option("--cron", metavar="EXPR", help="Cron syntax: 'minute hour day month weekday'.")
@click.option("--days", metavar="DAYS", help="Days of the week: mon,tue,... or mon-fri, daily.")
@click.option("--time", "at", metavar="HH:MM", help="Time of day (with --days).")
@click.option("--window", metavar="HH:MM-HH:MM",
              help="Only run inside this window; stop a backup when it closes.")
@click.option("--pre-script", metavar="CMD",
              help="Run before this schedule's backups (old style: prefer 'set add "
                   "--pre-script', which covers every backup of the set).")
@click.option("--post-script", metavar="CMD", help="Run after this schedule's backups.")
@click.option("--script-timeout", type=click.FloatRange(0.001), metavar="SECONDS",
              help="Kill a script running longer (default 600).")
@click.option("--on-pre-failure", type=click.Choice(["abort", "continue"]),
              help="When the pre-script fails (default abort).")
@click.option("--missed", type=click.Choice(["run-once", "skip"]),
              help="Runs missed while off: run once at start (default) or skip.")
@click.pass_obj
def schedule_add(ctx: Ctx, set_name: str, cron: str | None, days: str | None, at: str | None,
                 window: str | None, pre_script: str | None, post_script: str | None,
                 script_timeout: float | None, on_pre_failure: str | None,
                 missed: str | None) -> None:
    """Add a schedule to SET: --cron EXPR, or --days D --time HH:MM."""
    if bool(cron) == bool(at or days):
        raise UsageError("give either --cron EXPR or --days DAYS --time HH:MM")
    if days and not at:
        raise UsageError("--days needs --time HH:MM")
    doc: dict[str, Any] = {"cron": cron, "time": at,
                           "days": [d.strip() for d in days.split(",")] if days else None,
                           "window": window, "pre_script": pre_script,
                           "post_script": post_script, "script_timeout": script_timeout,
                           "on_pre_failure": on_pre_failure, "missed": missed}
    inst = ctx.installation()
    index = add_schedule(inst.config, set_name, doc)
    inst.save()
    rows = _schedule_rows(inst.config, set_name)
    row = rows[index - 1]
    if ctx.json:
        emit_json(row)
    else:
        click.echo(f"added schedule {set_name} #{index}: {row['spec']}"
                   + (f", window {row['window']}" if row["window"] else "")
                   + f"; next run {_when(row['next_run'])}")


def _schedule_rows(cfg: Any, only: str | None = None) -> list[dict[str, Any]]:
    settings = load_daemon_settings(cfg)
    tz = local_zone(settings.timezone)
    now = datetime.now(UTC)
    rows = []
    for bs in load_sets(cfg).values():
        if only is not None and bs.name != only:
            continue
        for i, s in enumerate(bs.schedules, 1):
            nxt = s.cron.next_after(now, tz)
            rows.append(dict(s.to_json(), set=bs.name, index=i,
                             next_run=None if nxt is None else nxt.astimezone(tz).isoformat()))
    return rows


@schedule_group.command(name="list")
@json_option
@click.argument("set_name", metavar="[SET]", required=False)
@click.pass_obj
def schedule_list(ctx: Ctx, set_name: str | None) -> None:
    """List schedules (of SET) with their next run."""
    inst = ctx.installation()
    if set_name is not None and set_name not in load_sets(inst.config):
        raise UsageError(f"no set named {set_name!r}")
    rows = _schedule_rows(inst.config, set_name)
    if ctx.json:
        emit_json(rows)
        return
    for r in rows:
        extra = f", window {r['window']}" if r["window"] else ""
        if r["pre_script"]:
            extra += f", pre-script {r['pre_script']!r}"
        if r["post_script"]:
            extra += f", post-script {r['post_script']!r}"
        click.echo(f"{r['set']} #{r['index']}: {r['spec']}{extra}; next {_when(r['next_run'])}")
    if not rows:
        click.echo("no schedules")


@schedule_group.command(name="remove")
@json_option
@click.argument("set_name", metavar="SET")
@click.argument("index", type=click.IntRange(1))
@click.pass_obj
def schedule_remove(ctx: Ctx, set_name: str, index: int) -> None:
    """Remove schedule INDEX (as 'schedule list' numbers them) of SET."""
    inst = ctx.installation()
    doc = remove_schedule(inst.config, set_name, index)
    inst.save()
    if ctx.json:
        emit_json({"removed": dict(doc, set=set_name, index=index)})
    else:
        click.echo(f"removed schedule {set_name} #{index}")
