"""The ``--host/--path/--tag`` options that choose snapshots (restic's meanings).

One decorator and one constructor, so that every command that takes them
(forget, retention, restore, ls, find, diff, snapshots) reads them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tiervault.vault.snapshot import SnapshotFilter

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(what: str = "consider") -> Callable[[F], F]:
    """Add ``--host``, ``--path`` and ``--tag`` (each repeatable) to a command."""
    def deco(f: F) -> F:
        f = click.option("--tag", "filter_tags", multiple=True, metavar="TAG[,TAG...]",
                         help=f"Only {what} snapshots with all these tags (repeat: any "
                              "of the lists).")(f)
        f = click.option("--path", "filter_paths", multiple=True, metavar="PATH",
                         help=f"Only {what} snapshots whose paths are exactly these "
                              "(repeat for each path).")(f)
        f = click.option("--host", "filter_hosts", multiple=True, metavar="HOST",
                         help=f"Only {what} snapshots from this host (repeatable).")(f)
        return f
    return deco


def snapshot_filter(filter_hosts: tuple[str, ...], filter_paths: tuple[str, ...],
                    filter_tags: tuple[str, ...]) -> SnapshotFilter:
    """The filter the options of ``filter_options`` describe."""
    return SnapshotFilter.of(filter_hosts, filter_paths, filter_tags)
