"""Running the console's commands with the daemon's and the CLI's own operations.

backup, cancel and sync go to the daemon (its queue, its cancel, its idle
round); check, restore, retention and browse run the ``tiervault`` command in a
child process, which hands itself over to the daemon when it writes (as a
command typed on the machine would: same locking, same session record);
bandwidth and schedule edit ``config.toml`` (the daemon reloads it on change);
upload-log sends the tail of the daemon's log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tiervault.daemon.agent.journal import Journal
from tiervault.daemon.sets import parse_schedule
from tiervault.errors import TierVaultError
from tiervault.protocol.messages import MAX_LISTING, MAX_LOG, MAX_TEXT, Command
from tiervault.state.config import InstallationConfig, load_config, save_config

_BOOT = "import sys; from tiervault.cli.main import main; main(sys.argv[1:])"
CHILD_TIMEOUT = 6 * 3600.0
_KEEP = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
         "keep_yearly", "keep_within")


class CommandFailed(TierVaultError):
    """A command could not be carried out; the message goes to the console."""


class DaemonPort(Protocol):
    """What the executor asks of the daemon."""

    sets: dict[str, Any]

    def request_run(self, set_name: str, no_scripts: bool = False) -> dict[str, Any]:
        """Queue a backup of a set."""

    def cancel(self, drop_queue: bool = False) -> dict[str, Any]:
        """Stop the running job."""

    def request_sync(self) -> None:
        """Start an idle round (probe, synchronize) as soon as nothing else runs."""


class JobHistory(Protocol):
    """The state database's sessions."""

    def start_session(self, kind: str, details: dict[str, Any] | None = None) -> int:
        """Record a session's start."""

    def end_session(self, sid: int, status: str, details: dict[str, Any]) -> None:
        """Record its end."""

    def sessions(self, limit: int = 100,
                 kinds: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Recent sessions."""


Outcome = tuple[str, dict[str, Any], str | None]   # state, result, session id


class Executor:
    """Carries out one command (blocking until it ended); never raises."""

    def __init__(self, daemon: DaemonPort, history: JobHistory, journal: Journal, home: Path,
                 install_id: str, passphrase: str, log_tail: Callable[[], str],
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.daemon = daemon
        self.history = history
        self.journal = journal
        self.home = home
        self.install_id = install_id
        self.passphrase = passphrase
        self.log_tail = log_tail
        self.stopping = stopping

    def run(self, cmd: Command) -> Outcome:
        """The command's outcome (failed with one line on any error)."""
        fn = getattr(self, "_" + cmd.type.replace("-", "_"), None)
        if fn is None:
            return "failed", {"error": f"this device does not know command {cmd.type!r}"}, None
        try:
            out: Outcome = fn(cmd, dict(cmd.params or {}))
            return out
        except TierVaultError as e:
            return "failed", {"error": str(e)[:MAX_TEXT]}, None
        except Exception as e:  # a bug must not kill the agent; the console sees it
            return "failed", {"error": f"internal error: {e!r}"[:MAX_TEXT]}, None

    # -- daemon operations -----------------------------------------------------------------

    def _backup(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        which = str(p.get("set") or "all")
        names = sorted(self.daemon.sets) if which == "all" else [which]
        if not names:
            raise CommandFailed("this device has no backup sets")
        queued: list[tuple[str, str]] = []
        for name in names:
            if name not in self.daemon.sets:
                raise CommandFailed(f"no set named {name!r} (sets: "
                                    f"{', '.join(sorted(self.daemon.sets)) or 'none'})")
        for name in names:
            ans = self.daemon.request_run(name)
            rid = str(ans.get("request_id"))
            # Already queued or running (a schedule's): that backup is the command's.
            self.journal.link_request(rid, cmd.id)
            queued.append((name, rid))
        results: list[dict[str, Any]] = []
        last_sid: str | None = None
        failed = False
        for name, rid in queued:
            s = self._wait_job(rid)
            if s is None:
                return "failed", {"error": "the daemon stopped before the backup ended",
                                  "sets": results}, last_sid
            last_sid = f"{s['id']}@{self.install_id}"
            results.append({"set": name, "status": s["status"], "session_id": last_sid,
                            "snapshot": s["details"].get("snapshot_id"),
                            "error": s["details"].get("error")})
            failed = failed or s["status"] in ("failed", "cancelled")
        return ("failed" if failed else "succeeded"), {"sets": results}, last_sid

    def _wait_job(self, request_id: str) -> dict[str, Any] | None:
        while not self.stopping():
            for s in self.history.sessions(50, kinds=("job",)):
                if s["details"].get("request_id") == request_id and s["ended"]:
                    return s
            time.sleep(0.2)
        return None

    def _cancel(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        ans = self.daemon.cancel(bool(p.get("all")))
        return "succeeded", {"cancelled": (ans.get("cancelled") or {}).get("what"),
                             "dropped": len(ans.get("dropped") or [])}, None

    def _sync(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        self.daemon.request_sync()
        return "succeeded", {"message": "synchronization requested"}, None

    # -- the CLI in a child process ----------------------------------------------------------

    def _child(self, command_id: str, *args: str, timeout: float = CHILD_TIMEOUT
               ) -> tuple[Any, str | None]:
        """The child's JSON output and the session it handed over to the daemon (if any)."""
        env = dict(os.environ, TIERVAULT_PASSWORD=self.passphrase)
        env.pop("TIERVAULT_HOME", None)
        child = subprocess.Popen([sys.executable, "-c", _BOOT, "--home", str(self.home),
                                  "--json", *args], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env,
                                 stdin=subprocess.DEVNULL)
        # Before the child can hand itself over: its session is the command's.
        self.journal.link_pid(child.pid, command_id)
        try:
            out, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise CommandFailed(f"{args[0]} did not end within {timeout:.0f} s") from None
        finally:
            session = self._settle(child.pid, command_id)
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
        if proc.returncode != 0:
            msg = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            try:
                msg = [json.loads(msg[0])["message"]]
            except (ValueError, KeyError, TypeError):
                pass
            raise CommandFailed(f"{args[0]} failed (exit {proc.returncode}): {msg[0]}")
        try:
            return (json.loads(proc.stdout) if proc.stdout.strip() else {}), session
        except ValueError:
            return {"output": proc.stdout[-MAX_TEXT:]}, session

    def _settle(self, pid: int, command_id: str) -> str | None:
        """The child ended: its handed-over session (found by pid) keeps the command id
        by its request id (linked before the pid link goes, so a report never misses it)."""
        found = None
        for s in self.history.sessions(20, kinds=("command",)):
            if s["details"].get("pid") == pid:
                self.journal.link_request(str(s["details"].get("request_id")), command_id)
                found = f"{s['id']}@{self.install_id}"
                break
        self.journal.link_pid(pid, None)
        return found

    def _recorded(self, kind: str, cmd: Command, run: Callable[[], dict[str, Any]]
                  ) -> Outcome:
        """Run a read (restore, check: they never hand over, so nothing else records
        them) as a session of its own that carries the command id."""
        sid = self.history.start_session(kind, {"command_id": cmd.id, "params": cmd.params})
        details: dict[str, Any] = {"command_id": cmd.id, "params": cmd.params}
        try:
            res = run()
        except TierVaultError as e:
            self.history.end_session(sid, "failed", dict(details, error=str(e)[:MAX_TEXT]))
            raise
        except BaseException as e:
            self.history.end_session(sid, "failed", dict(details, error=repr(e)[:MAX_TEXT]))
            raise
        warnings = res.get("warnings") or []
        details.update(
            files_processed=res.get("files_restored", 0),
            bytes_processed=res.get("bytes_restored", 0), snapshot_id=res.get("snapshot_id"),
            warnings=warnings[:100] if isinstance(warnings, list) else [])
        status = "warnings" if details["warnings"] or res.get("errors") else "success"
        self.history.end_session(sid, status, details)
        return "succeeded", res, f"{sid}@{self.install_id}"

    def _check(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        args = ["check"]
        subset = p.get("read_data_subset") or p.get("subset")
        if subset:
            args += ["--read-data-subset", str(subset)]
        elif str(p.get("read_data", "")).lower() in ("1", "true", "yes"):
            args.append("--read-data")
        return self._recorded("check", cmd, lambda: _small(self._child(cmd.id, *args)[0]))

    def _restore(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        snap, target = p.get("snapshot") or "latest", p.get("target")
        if not target:
            raise CommandFailed("restore needs target=DIR (a directory on the device)")
        policy = str(p.get("overwrite") or "always")
        if policy not in ("always", "never"):
            raise CommandFailed(f"overwrite={policy} is not a policy; use always or never")
        if policy == "never" and os.path.isdir(target) and os.listdir(target):
            raise CommandFailed(f"{target} is not empty and overwrite=never")
        paths = p.get("paths") or []
        if isinstance(paths, str):
            paths = [x for x in paths.split(",") if x]
        args = ["restore", str(snap), str(target)]
        for x in paths:
            args += ["--include", str(x)]
        return self._recorded("restore", cmd, lambda: _small(self._child(cmd.id, *args)[0]))

    def _retention(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        keep = {k: p[k] for k in _KEEP if p.get(k) not in (None, "")}
        if not keep and p.get("set"):
            bs = self.daemon.sets.get(str(p["set"]))
            if bs is None:
                raise CommandFailed(f"no set named {p['set']!r}")
            keep = {k: v for k, v in (getattr(bs, "retention", None) or {}).items()
                    if k in _KEEP}
        if not keep:
            raise CommandFailed("retention needs keep_* values (keep_daily=7 ...) or set=NAME "
                                "of a set with a retention table")
        args = ["forget", "--prune"]
        for k, v in keep.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        doc, session = self._child(cmd.id, *args)
        return "succeeded", _small(doc), session

    def _browse(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        snap = str(p.get("snapshot") or "latest")
        path = str(p.get("path") or "/")
        rows, _session = self._child(cmd.id, "ls", "--no-recursive", snap, path, timeout=100)
        # The listing of a directory is its children (ls also names the directory itself).
        entries = [e for e in rows if isinstance(e, dict)
                   and str(e.get("path", "")).rstrip("/") != path.rstrip("/")] \
            if isinstance(rows, list) else []
        truncated = len(entries) > MAX_LISTING
        return "succeeded", {"snapshot": snap, "path": path,
                             "entries": entries[:MAX_LISTING], "truncated": truncated}, None

    # -- configuration -----------------------------------------------------------------------

    def _edit(self, change: Callable[[InstallationConfig], dict[str, Any]]) -> Outcome:
        cfg = load_config(self.home)
        if cfg is None:
            raise CommandFailed("this device has no configuration")
        result = change(cfg)
        InstallationConfig.from_toml(cfg.to_toml(), "config.toml")   # refuse a bad result
        save_config(self.home, cfg)
        return "succeeded", result, None

    def _bandwidth(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        def change(cfg: InstallationConfig) -> dict[str, Any]:
            rules = p.get("rules")
            if rules is None:
                tier = p.get("tier", 1)
                rule = {k: p[k] for k in ("upload", "download") if p.get(k) not in (None, "")}
                rule["tier"] = tier
                old = [r for r in _rules(cfg) if str(r.get("tier")) != str(tier)]
                rules = [*old, rule] if len(rule) > 1 else old
            if rules:
                cfg.extra["throttle"] = rules
            else:
                cfg.extra.pop("throttle", None)
            return {"throttle": rules}
        return self._edit(change)

    def _schedule(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        name = str(p.get("set") or "")

        def change(cfg: InstallationConfig) -> dict[str, Any]:
            sets = cfg.extra.get("sets") or {}
            if name not in sets:
                raise CommandFailed(f"no set named {name!r}")
            scheds = p.get("schedules")
            if scheds is None:
                one = {k: p[k] for k in ("cron", "time", "window", "missed") if p.get(k)}
                if p.get("days"):
                    d = p["days"]
                    one["days"] = d if isinstance(d, list) else [x for x in d.split(",") if x]
                scheds = [one] if one else []
            for i, s in enumerate(scheds, 1):
                parse_schedule(s, f"schedule {i}")   # UsageError names what is wrong
            sets[name]["schedules"] = scheds
            return {"set": name, "schedules": scheds}
        return self._edit(change)

    def _upload_log(self, cmd: Command, p: dict[str, Any]) -> Outcome:
        tail = self.log_tail().encode()[-MAX_LOG:].decode(errors="replace")
        return "succeeded", {"log": tail}, None


def _rules(cfg: InstallationConfig) -> list[dict[str, Any]]:
    r = cfg.extra.get("throttle") or []
    return [r] if isinstance(r, dict) else list(r)


def _small(doc: Any) -> dict[str, Any]:
    """A result that stays well within the protocol's body limit."""
    text = json.dumps(doc)
    if len(text) <= 64 * 1024:
        return doc if isinstance(doc, dict) else {"output": doc}
    return {"output": text[:MAX_TEXT], "truncated": True}
