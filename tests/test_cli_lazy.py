"""The command group imports each command's module on first use: the map from
command names to modules must name every command, and only real ones."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from tiervault.cli.app import COMMAND_MODULES, cli


def test_every_command_is_mapped_to_the_module_that_defines_it() -> None:
    cli.load_all()  # type: ignore[attr-defined]
    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, module in COMMAND_MODULES.items():
        # A fresh interpreter: importing only the mapped module must define the command.
        code = (f"from tiervault.cli.app import cli; cli.load({module!r}); "
                f"assert {name!r} in cli.commands, sorted(cli.commands)")
        subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lists_every_command() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0, res.output
    listed = {line.split()[0] for line in res.output.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed == set(COMMAND_MODULES)


def test_a_quick_command_does_not_load_the_vault_format() -> None:
    code = ("import sys; from tiervault.cli.app import cli; cli.load('cmd_tiers'); "
            "heavy = [m for m in ('tiervault.vault.repository', 'zstandard', 'pyfastcdc', "
            "'tiervault.daemon.server') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
