"""Backup sets and their schedules, as written in ``config.toml``.

::

    [daemon]
    timezone = "Europe/Berlin"      # default: the system's
    probe_interval = 60             # seconds between idle rounds (probe, sync)
    wait_timeout = 600              # a job gives up if no tier is online this long

    [daemon.notify]
    command = "/usr/local/bin/tv-alert"   # and/or
    webhook = "https://hooks.example.com/tiervault"
    tier_offline_hours = 24

    [sets.home]
    paths = ["/home/me"]
    excludes = ["*.tmp", "/home/me/.cache"]
    tags = ["home"]
    type = "files"                  # the only data source type for now
    pre_script = "/usr/local/bin/dump-db"   # the set's scripts: run around every backup
    post_script = "/usr/local/bin/report"   # of the set (schedule, ``run``, console)
    script_timeout = 300
    on_pre_failure = "abort"        # or "continue"

    [sets.home.retention]           # applied (forget + prune) after each backup
    keep_daily = 7                  # or the grandfather-father-son spans
    keep_weekly = 4

    [[sets.home.schedules]]
    days = ["mon", "tue", "wed", "thu", "fri"]
    time = "12:30"                  # or: cron = "30 12 * * 1-5"
    window = "08:00-20:00"          # not started outside; stopped when it closes
    missed = "run-once"             # runs missed while off: once at start (or "skip")

Older configs put ``pre_script``/``post_script``/``script_timeout``/
``on_pre_failure`` in a schedule's table. They are still read: such a schedule's
runs use them, and a set without scripts of its own takes those of its first
schedule that has any for every other run (``run SET``), so a script is never
skipped because a backup was started by hand.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tiervault.daemon.schedule import CronExpr, ScheduleError, Window, parse_days, parse_hhmm
from tiervault.errors import UsageError
from tiervault.state.config import InstallationConfig

if TYPE_CHECKING:
    from tiervault.engine.backupopts import BackupOptions

SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SCRIPT_KEYS = {"pre_script", "post_script", "script_timeout", "on_pre_failure"}
#: restic's backup filters a set may carry (``set add --iexclude`` etc.), besides excludes.
FILTER_KEYS = ("iexcludes", "exclude_if_present", "exclude_caches", "exclude_larger_than")
_SET_KEYS = {"paths", "excludes", "tags", "type", "one_file_system", "schedules", "retention",
             "archive", *FILTER_KEYS} | _SCRIPT_KEYS
_SCHEDULE_KEYS = {"cron", "days", "time", "window", "missed"} | _SCRIPT_KEYS
DEFAULT_SCRIPT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Scripts:
    """The pre- and post-backup scripts of a set (or, in old configs, of a schedule)."""

    pre_script: str | None = None
    post_script: str | None = None
    script_timeout: float = DEFAULT_SCRIPT_TIMEOUT
    on_pre_failure: str = "abort"

    def __bool__(self) -> bool:
        return bool(self.pre_script or self.post_script)

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {"pre_script": self.pre_script, "post_script": self.post_script,
                "script_timeout": self.script_timeout, "on_pre_failure": self.on_pre_failure}


def parse_scripts(doc: dict[str, Any], where: str) -> Scripts:
    """The script keys of a set or schedule table; UsageError naming ``where``."""
    for k in ("pre_script", "post_script"):
        if doc.get(k) is not None and (not isinstance(doc[k], str) or not doc[k].strip()):
            raise _err(f"{where}.{k}", "must be a non-empty command")
    on_fail = doc.get("on_pre_failure", "abort")
    if on_fail not in ("abort", "continue"):
        raise _err(f"{where}.on_pre_failure", "must be \"abort\" or \"continue\"")
    timeout = _number(doc.get("script_timeout", DEFAULT_SCRIPT_TIMEOUT),
                      f"{where}.script_timeout", 0.001)
    return Scripts(doc.get("pre_script"), doc.get("post_script"), timeout, on_fail)


@dataclass(frozen=True)
class Schedule:
    """One schedule of a set: when, where it may run, scripts around it."""

    cron: CronExpr
    window: Window | None = None
    scripts: Scripts = field(default_factory=lambda: Scripts())
    missed: str = "run-once"
    spec: str = ""  # how the user wrote the timing ("mon,tue 03:00" or the cron text)

    # The script keys of old configs, read where they were written.
    @property
    def pre_script(self) -> str | None:
        """The schedule's own pre-script (old configs)."""
        return self.scripts.pre_script

    @property
    def post_script(self) -> str | None:
        """The schedule's own post-script (old configs)."""
        return self.scripts.post_script

    @property
    def script_timeout(self) -> float:
        """The schedule's own script timeout (old configs)."""
        return self.scripts.script_timeout

    @property
    def on_pre_failure(self) -> str:
        """The schedule's own pre-script failure handling (old configs)."""
        return self.scripts.on_pre_failure

    @property
    def key(self) -> str:
        """Identifies the timing (a changed schedule does not inherit a missed run)."""
        return hashlib.sha256(f"{self.cron.text}|{self.window}".encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``schedule list --json`` and the control API."""
        return {"spec": self.spec, "cron": self.cron.text,
                "window": None if self.window is None else str(self.window),
                **self.scripts.to_json(), "missed": self.missed}


@dataclass
class BackupSet:
    """A named selection to back up."""

    name: str
    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    type: str = "files"
    one_file_system: bool = False
    schedules: list[Schedule] = field(default_factory=list)
    retention: dict[str, Any] = field(default_factory=dict)
    archive: list[dict[str, Any]] = field(default_factory=list)
    scripts: Scripts = field(default_factory=Scripts)
    filters: dict[str, Any] = field(default_factory=dict)  # FILTER_KEYS given

    def scripts_for(self, sched: Schedule | None) -> tuple[Scripts, str]:
        """The scripts of a backup of this set started by ``sched`` (None: by hand).

        Returns them and where they come from (for the session log): the
        schedule's own (old configs), the set's, or, for a set that has none,
        those of its first schedule that has any.
        """
        if sched is not None and sched.scripts:
            return sched.scripts, "schedule"
        if self.scripts:
            return self.scripts, "set"
        for s in self.schedules:
            if s.scripts:
                return s.scripts, "schedule"
        return self.scripts, "set"

    def backup_options(self, workers: int, tags: list[str], archive: bool = False
                       ) -> BackupOptions:
        """The engine's options for a backup of this set."""
        from tiervault.engine.backupopts import BackupOptions

        return BackupOptions(list(self.paths), list(self.excludes), tags, workers=workers,
                             one_file_system=self.one_file_system, archive=archive,
                             **self.filters)

    def snapshot_paths(self) -> list[str]:
        """The paths as a snapshot of this set records them (absolute, nested dropped)."""
        out: list[str] = []
        for p in sorted({os.path.abspath(p) for p in self.paths}):
            if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
                out.append(p)
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``set list --json`` and the control API."""
        return {"name": self.name, "paths": self.paths, "excludes": self.excludes,
                "tags": self.tags, "type": self.type, "one_file_system": self.one_file_system,
                "retention": self.retention, "archive": self.archive,
                **self.scripts.to_json(), **self.filters,
                "schedules": [s.to_json() for s in self.schedules]}


@dataclass
class NotifySettings:
    """Where notifications go."""

    command: str | None = None
    webhook: str | None = None
    tier_offline_hours: float = 24.0
    timeout: float = 30.0


@dataclass
class DaemonSettings:
    """The ``[daemon]`` table."""

    timezone: str | None = None
    probe_interval: float = 60.0
    wait_timeout: float | None = 600.0
    notify: NotifySettings = field(default_factory=NotifySettings)


def _err(where: str, msg: str) -> UsageError:
    return UsageError(f"config.toml: {where}: {msg}")


def _str_list(v: Any, where: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _err(where, "must be a list of strings")
    return list(v)


def _number(v: Any, where: str, minimum: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < minimum:
        raise _err(where, f"must be a number >= {minimum:g}")
    return float(v)


def parse_schedule(doc: Any, where: str) -> Schedule:
    """One schedule table; UsageError naming ``where`` if it is wrong."""
    if not isinstance(doc, dict):
        raise _err(where, "must be a table")
    unknown = set(doc) - _SCHEDULE_KEYS
    if unknown:
        raise _err(where, f"unknown key(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_SCHEDULE_KEYS))})")
    try:
        if "cron" in doc:
            if "days" in doc or "time" in doc:
                raise ScheduleError("give either cron or days + time, not both")
            if not isinstance(doc["cron"], str):
                raise ScheduleError("cron must be a string")
            cron = CronExpr.parse(doc["cron"])
            spec = f"cron {doc['cron']}"
        elif "time" in doc:
            if not isinstance(doc["time"], str):
                raise ScheduleError("time must be a string HH:MM")
            days_raw = doc.get("days", "daily")
            if not isinstance(days_raw, str | list):
                raise ScheduleError("days must be a list of day names")
            days = parse_days(days_raw)
            at = parse_hhmm(doc["time"])
            cron = CronExpr.from_days(days, at)
            names = "daily" if len(days) == 7 else ",".join(
                ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][d] for d in days)
            spec = f"{names} {at:%H:%M}"
        else:
            raise ScheduleError("needs cron = \"...\" or days = [...] and time = \"HH:MM\"")
        window = None
        if doc.get("window") is not None:
            if not isinstance(doc["window"], str):
                raise ScheduleError("window must be a string HH:MM-HH:MM")
            window = Window.parse(doc["window"])
    except ScheduleError as e:
        raise _err(where, str(e)) from None
    scripts = parse_scripts(doc, where)
    missed = doc.get("missed", "run-once")
    if missed not in ("run-once", "skip"):
        raise _err(f"{where}.missed", "must be \"run-once\" or \"skip\"")
    return Schedule(cron, window, scripts, missed, spec)


def parse_set(name: str, doc: Any) -> BackupSet:
    """One ``[sets.NAME]`` table."""
    where = f"sets.{name}"
    if not SET_NAME.fullmatch(name):
        raise _err(where, "a set name is letters, digits, '_', '.' and '-' (at most 64)")
    if not isinstance(doc, dict):
        raise _err(where, "must be a table")
    unknown = set(doc) - _SET_KEYS
    if unknown:
        raise _err(where, f"unknown key(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_SET_KEYS))})")
    paths = _str_list(doc.get("paths", []), f"{where}.paths")
    if not paths:
        raise _err(where, "needs paths = [\"/some/dir\", ...]")
    for p in paths:
        if not os.path.isabs(p):
            raise _err(f"{where}.paths", f"{p!r} is not an absolute path")
    kind = doc.get("type", "files")
    if kind != "files":
        raise _err(f"{where}.type", f"unknown data source type {kind!r} (only \"files\")")
    ofs = doc.get("one_file_system", False)
    if not isinstance(ofs, bool):
        raise _err(f"{where}.one_file_system", "must be true or false")
    raw_scheds = doc.get("schedules", [])
    if not isinstance(raw_scheds, list):
        raise _err(f"{where}.schedules", "must be a list of tables ([[sets.NAME.schedules]])")
    scheds = [parse_schedule(s, f"{where}.schedules[{i}]") for i, s in enumerate(raw_scheds, 1)]
    retention = doc.get("retention", {})
    if not isinstance(retention, dict):
        raise _err(f"{where}.retention", "must be a table")
    from tiervault.daemon.retention import validate_retention

    try:
        validate_retention(retention)
    except UsageError as e:
        raise _err(f"{where}.retention", str(e)) from None
    archive = doc.get("archive", [])
    if not isinstance(archive, list) or not all(isinstance(a, dict) for a in archive):
        raise _err(f"{where}.archive", "must be a list of tables")
    return BackupSet(name, paths, _str_list(doc.get("excludes", []), f"{where}.excludes"),
                     _str_list(doc.get("tags", []), f"{where}.tags"), kind, ofs, scheds,
                     dict(retention), list(archive), parse_scripts(doc, where),
                     _filters(doc, where))


def _filters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("iexcludes", "exclude_if_present"):
        if key in doc:
            out[key] = _str_list(doc[key], f"{where}.{key}")
    if "exclude_caches" in doc:
        if not isinstance(doc["exclude_caches"], bool):
            raise _err(f"{where}.exclude_caches", "must be true or false")
        out["exclude_caches"] = doc["exclude_caches"]
    if "exclude_larger_than" in doc:
        v = doc["exclude_larger_than"]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise _err(f"{where}.exclude_larger_than", "must be a number of bytes")
        out["exclude_larger_than"] = v
    return out


def load_sets(cfg: InstallationConfig) -> dict[str, BackupSet]:
    """Every set of the config, validated."""
    raw = cfg.extra.get("sets", {})
    if not isinstance(raw, dict):
        raise _err("sets", "must be a table of [sets.NAME] tables")
    return {name: parse_set(name, doc) for name, doc in sorted(raw.items())}


def load_daemon_settings(cfg: InstallationConfig) -> DaemonSettings:
    """The ``[daemon]`` table, validated."""
    raw = cfg.extra.get("daemon", {})
    if not isinstance(raw, dict):
        raise _err("daemon", "must be a table")
    known = {"timezone", "probe_interval", "wait_timeout", "notify"}
    unknown = set(raw) - known
    if unknown:
        raise _err("daemon", f"unknown key(s) {', '.join(sorted(unknown))}")
    s = DaemonSettings()
    if raw.get("timezone") is not None:
        from tiervault.daemon.schedule import local_zone

        try:
            local_zone(str(raw["timezone"]))
        except ScheduleError as e:
            raise _err("daemon.timezone", str(e)) from None
        s.timezone = str(raw["timezone"])
    if "probe_interval" in raw:
        s.probe_interval = _number(raw["probe_interval"], "daemon.probe_interval", 0.1)
    if "wait_timeout" in raw:
        s.wait_timeout = _number(raw["wait_timeout"], "daemon.wait_timeout")
    n = raw.get("notify", {})
    if not isinstance(n, dict):
        raise _err("daemon.notify", "must be a table")
    unknown = set(n) - {"command", "webhook", "tier_offline_hours", "timeout"}
    if unknown:
        raise _err("daemon.notify", f"unknown key(s) {', '.join(sorted(unknown))}")
    for k in ("command", "webhook"):
        if n.get(k) is not None and not isinstance(n[k], str):
            raise _err(f"daemon.notify.{k}", "must be a string")
    hook = n.get("webhook")
    if hook and not str(hook).startswith(("http://", "https://")):
        raise _err("daemon.notify.webhook", "must be an http:// or https:// URL")
    s.notify = NotifySettings(
        n.get("command"), hook,
        _number(n.get("tier_offline_hours", 24.0), "daemon.notify.tier_offline_hours"),
        _number(n.get("timeout", 30.0), "daemon.notify.timeout", 0.1))
    return s


# -- editing (``tiervault set ...`` / ``tiervault schedule ...``) ---------------------------


def _raw_sets(cfg: InstallationConfig) -> dict[str, Any]:
    raw = cfg.extra.setdefault("sets", {})
    if not isinstance(raw, dict):
        raise _err("sets", "must be a table of [sets.NAME] tables")
    return raw


def add_set(cfg: InstallationConfig, name: str, paths: list[str], excludes: list[str],
            tags: list[str], one_file_system: bool = False,
            scripts: dict[str, Any] | None = None,
            filters: dict[str, Any] | None = None) -> BackupSet:
    """Add a set (an existing one of the same name is an error)."""
    raw = _raw_sets(cfg)
    if name in raw:
        raise UsageError(f"a set named {name!r} exists already "
                         f"(remove it first: tiervault set remove {name})")
    doc: dict[str, Any] = {"paths": [os.path.abspath(os.path.expanduser(p)) for p in paths],
                           "type": "files"}
    if excludes:
        doc["excludes"] = list(excludes)
    if tags:
        doc["tags"] = list(tags)
    if one_file_system:
        doc["one_file_system"] = True
    doc.update({k: v for k, v in (scripts or {}).items() if v is not None})
    doc.update({k: v for k, v in (filters or {}).items()
                if k in FILTER_KEYS and v is not None and v is not False and v != []})
    bs = parse_set(name, doc)
    raw[name] = doc
    return bs


def set_scripts(cfg: InstallationConfig, name: str, scripts: dict[str, Any],
                clear: bool = False) -> BackupSet:
    """Give a set scripts (``clear``: drop its own and its schedules' scripts first)."""
    raw = _raw_sets(cfg)
    if name not in raw:
        raise UsageError(f"no set named {name!r} (sets: {', '.join(sorted(raw)) or 'none'})")
    doc = dict(raw[name])
    if clear:
        for k in _SCRIPT_KEYS:
            doc.pop(k, None)
        doc["schedules"] = [{k: v for k, v in sd.items() if k not in _SCRIPT_KEYS}
                            for sd in doc.get("schedules", []) if isinstance(sd, dict)]
        if not doc["schedules"]:
            doc.pop("schedules")
    doc.update({k: v for k, v in scripts.items() if v is not None})
    bs = parse_set(name, doc)
    raw[name] = doc
    return bs


def remove_set(cfg: InstallationConfig, name: str) -> None:
    """Remove a set and its schedules."""
    raw = _raw_sets(cfg)
    if name not in raw:
        raise UsageError(f"no set named {name!r} (sets: {', '.join(sorted(raw)) or 'none'})")
    del raw[name]


def add_schedule(cfg: InstallationConfig, set_name: str, doc: dict[str, Any]) -> int:
    """Append a schedule to a set; returns its 1-based index."""
    raw = _raw_sets(cfg)
    if set_name not in raw:
        raise UsageError(f"no set named {set_name!r} (add it first: tiervault set add "
                         f"{set_name} PATH...)")
    doc = {k: v for k, v in doc.items() if v is not None}
    scheds = raw[set_name].setdefault("schedules", [])
    parse_schedule(doc, f"sets.{set_name}.schedules[{len(scheds) + 1}]")
    scheds.append(doc)
    return len(scheds)


def remove_schedule(cfg: InstallationConfig, set_name: str, index: int) -> dict[str, Any]:
    """Remove the schedule at 1-based ``index``; returns what it was."""
    raw = _raw_sets(cfg)
    if set_name not in raw:
        raise UsageError(f"no set named {set_name!r}")
    scheds = raw[set_name].get("schedules", [])
    if not 1 <= index <= len(scheds):
        raise UsageError(f"set {set_name!r} has {len(scheds)} schedule(s); "
                         f"index {index} does not exist (see: tiervault schedule list)")
    doc: dict[str, Any] = scheds.pop(index - 1)
    if not scheds:
        raw[set_name].pop("schedules", None)
    return doc
