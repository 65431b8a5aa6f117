"""The check command: structure, data, and repair across tiers."""

from __future__ import annotations

import sys
from typing import Any

import click

from tiervault.cli.app import cli
from tiervault.cli.context import Ctx, json_option, with_session
from tiervault.cli.output import emit_json, inert, plural
from tiervault.errors import UsageError
from tiervault.service import repair
from tiervault.service.session import VaultSession


@cli.command()
@json_option
@click.option("--read-data", is_flag=True, help="Read, decrypt and verify every byte.")
@click.option("--read-data-subset", metavar="N/M|P%", help="Read only a part of the data.")
@click.option("--tier", "tier_sel", metavar="N|URL", help="Check only this tier.")
@click.option("--repair", "do_repair", is_flag=True,
              help="Heal damaged or missing files from a good copy on another tier.")
@click.option("--dry-run", "-n", is_flag=True, help="With --repair: only say what it would do.")
@with_session(load_index=True, write_flag="do_repair")
def check(ctx: Ctx, sess: VaultSession, read_data: bool, read_data_subset: str | None,
          tier_sel: str | None, do_repair: bool, dry_run: bool) -> None:
    """Check the vault on every reachable tier (with --read-data, every byte)."""
    subset = _parse_subset(read_data_subset) if read_data_subset else None
    res = repair.check_tiers(sess, sess.progress, tier_sel, read_data or subset is not None,
                             subset, do_repair, dry_run, sess.inst.workers())
    if do_repair and not dry_run:
        sess.end_writes()
    if ctx.json:
        emit_json(res)
    else:
        for t in res["tiers"]:
            url = inert(t["url"])
            for w in t["warnings"]:
                click.echo(f"warning: {url}: {inert(w)}", err=True)
            for e in t.get("repaired_errors", []):
                click.echo(f"found: {url}: {_error_text(e)}")
            for e in t["errors"]:
                click.echo(f"error: {url}: {_error_text(e)}")
            for a in t["repairs"]:
                src = f" from {inert(a['source'])}" if a["source"] else ""
                click.echo(f"repair: {url}: {inert(a['file'])}: {inert(a['message'])}{src}")
            c = t["counts"]
            fixed = len(t.get("repaired_errors", []))
            verdict = "no errors" if not t["errors"] else \
                plural(len(t["errors"]), "error") + (" left" if fixed else "")
            if fixed:
                verdict += f" ({fixed} repaired)"
            click.echo(f"{url}: {plural(c.get('snapshots', 0), 'snapshot')}, "
                       f"{plural(c.get('packs', 0), 'pack')}, "
                       f"{plural(c.get('blobs', 0), 'blob')}: {verdict}")
        for name in res["rebuilt_indexes"]:
            click.echo(f"repair: rebuilt index {inert(name)}")
    if not res["ok"]:
        sys.exit(1)


def _error_text(e: dict[str, Any]) -> str:
    snaps = f" (affects snapshots {', '.join(s[:8] for s in e['snapshots'])})" \
        if e["snapshots"] else ""
    where = f"{e['file']}: " if e["file"] and not e["message"].startswith(e["file"]) else ""
    return inert(f"{where}{e['message']}{snaps}")


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
