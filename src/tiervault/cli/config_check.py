"""Validation of the daemon's tables of config.toml when any command loads it.

``state.config`` checks the installation's own tables; ``[daemon]`` and
``[sets.*]`` are parsed by the daemon's code, which sits above the state layer,
so the CLI runs that parser too. A wrong schedule is then reported by every
command (one line naming the file and the key), not only when the daemon starts.
"""

from __future__ import annotations

from pathlib import Path

from tiervault.errors import UsageError
from tiervault.state.config import CONFIG_NAME, InstallationConfig


def check_daemon_tables(cfg: InstallationConfig, home: Path) -> None:
    """Raise UsageError (naming the file and the key) if [daemon] or [sets] is wrong."""
    if "daemon" not in cfg.extra and "sets" not in cfg.extra:
        return  # nothing to check: do not pay for importing the daemon's parser
    from tiervault.daemon.sets import load_daemon_settings, load_sets

    try:
        load_daemon_settings(cfg)
        load_sets(cfg)
    except UsageError as e:
        msg = str(e)
        # The daemon's messages name the file by its base name; give the full path.
        prefix = f"{CONFIG_NAME}: "
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
        raise UsageError(f"{home / CONFIG_NAME}: {msg}") from None
