"""Re-reading ``config.toml`` while the daemon runs (on a change, or on SIGHUP).

Everything the daemon reads from the configuration takes effect on a re-read:
the tiers and their credentials, ``[[throttle]]`` rules, ``[settings]``, the
sets with their paths, scripts, retention and schedules, and ``[daemon]``'s
``probe_interval``, ``wait_timeout`` and ``[daemon.notify]``. Jobs and idle
rounds build their tier set from the installation's config when they start,
so a running backup finishes with the settings it started with and the next
one uses the new ones. Only ``daemon.timezone`` and the vault's identity
(``installation_id``, ``vault.id``) need a restart; the log names them.
A configuration that does not load is not applied (the log says why) and the
daemon goes on with the previous one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from tiervault.daemon.sets import BackupSet, DaemonSettings, load_daemon_settings, load_sets
from tiervault.errors import TierVaultError
from tiervault.service.installation import Installation
from tiervault.state.config import CONFIG_NAME, InstallationConfig, load_config

log = logging.getLogger("tiervault.daemon")

#: Settings read once at start.
RESTART_NEEDED = ("daemon.timezone", "installation_id", "vault.id")


def _flatten(cfg: InstallationConfig) -> dict[str, Any]:
    """Top-level tables of the config, ``[daemon]`` split by key, as comparable values."""
    doc = cfg.to_toml()
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if k == "daemon" and isinstance(v, dict):
            for dk, dv in v.items():
                out[f"daemon.{dk}"] = dv
        elif k == "vault" and isinstance(v, dict):
            out["vault.id"] = v.get("id")
            out["vault.tiers"] = v.get("tiers")
        else:
            out[k] = v
    return out


def changed_keys(old: InstallationConfig, new: InstallationConfig) -> list[str]:
    """Names of the settings that differ (``throttle``, ``daemon.notify``, ...)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


class ConfigWatcher:
    """Re-reads the configuration when ``config.toml`` changed (or after SIGHUP).

    Called by the daemon loop; returns the new sets after a re-read (None when
    nothing was re-read). ``apply`` gets the new ``[daemon]`` settings.
    """

    def __init__(self, inst: Installation,
                 apply: Callable[[DaemonSettings], None] = lambda s: None) -> None:
        self.inst = inst
        self.home = inst.home
        self.path = inst.home / CONFIG_NAME
        self.apply = apply
        self.hup = threading.Event()
        self._last = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size, st.st_ino
        except OSError:
            return None

    def __call__(self) -> dict[str, BackupSet] | None:
        now = self._stamp()
        hup = self.hup.is_set()
        if now == self._last and not hup:
            return None
        self._last = now
        self.hup.clear()
        why = "SIGHUP" if hup else f"{CONFIG_NAME} changed"
        try:
            cfg = load_config(self.home)
            if cfg is None:
                raise TierVaultError(f"{self.path} is gone")
            sets = load_sets(cfg)
            settings = load_daemon_settings(cfg)
        except TierVaultError as e:
            log.error("configuration not re-read (%s): %s; the daemon goes on with the "
                      "previous one", why, e)
            return None
        old = self.inst.config
        changed = changed_keys(old, cfg)
        later = [k for k in changed if k in RESTART_NEEDED]
        if later:
            # Keep what was read at start for these, so that state stays consistent.
            cfg.installation_id, cfg.vault_id = old.installation_id, old.vault_id
            daemon_tab = cfg.extra.get("daemon")
            if isinstance(daemon_tab, dict) and "daemon.timezone" in later:
                old_tab = old.extra.get("daemon")
                tz = old_tab.get("timezone") if isinstance(old_tab, dict) else None
                if tz is None:
                    daemon_tab.pop("timezone", None)
                else:
                    daemon_tab["timezone"] = tz
        self.inst.config = cfg
        self.apply(settings)
        now_keys = [k for k in changed if k not in RESTART_NEEDED]
        log.info("configuration re-read (%s): %d set(s); %s", why, len(sets),
                 f"in effect now: {', '.join(now_keys)}" if now_keys else "nothing changed"
                 if not later else "nothing else changed")
        if later:
            log.warning("configuration: %s changed; this takes effect after a restart of "
                        "the daemon", ", ".join(later))
        return sets
