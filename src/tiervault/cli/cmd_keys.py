"""Passphrase management: key list/add/passwd/remove."""

from __future__ import annotations

import click

from tiervault.cli.app import cli
from tiervault.cli.context import Ctx, json_option, with_session
from tiervault.cli.output import emit_json, inert, say_warnings
from tiervault.service import keyops
from tiervault.service.session import VaultSession


@cli.group()
def key() -> None:
    """Manage the vault's passphrases (no data is re-encrypted)."""


@key.command(name="list")
@json_option
@with_session(load_index=False)
def key_list(ctx: Ctx, sess: VaultSession) -> None:
    """List key files."""
    rows = keyops.list_keys(sess)
    if ctx.json:
        emit_json(rows)
        return
    for r in rows:
        mark = "*" if r.get("current") else " "
        click.echo(f"{mark} {inert(r['id'])}  {inert(r.get('created') or '')}  "
                   f"{inert(r.get('username') or '')}@{inert(r.get('hostname') or '')}"
                   f"{'  ' + _kdf(r['kdf']) if 'kdf' in r else ''}"
                   f"{'  ' + inert(r['error']) if 'error' in r else ''}")


@key.command(name="add")
@json_option
@click.option("--new-password-file", metavar="FILE", help="Read the new passphrase from FILE.")
@with_session(load_index=False, write=True)
def key_add(ctx: Ctx, sess: VaultSession, new_password_file: str | None) -> None:
    """Add another passphrase that opens the vault."""
    res = keyops.add_key(sess, ctx.new_passphrase(new_password_file))
    say_warnings(ctx.json, res["warnings"])
    emit_json(res) if ctx.json else click.echo(f"added key {res['added']} ({_kdf(res['kdf'])})")


@key.command(name="passwd")
@json_option
@click.option("--new-password-file", metavar="FILE", help="Read the new passphrase from FILE.")
@with_session(load_index=False, write=True)
def key_passwd(ctx: Ctx, sess: VaultSession, new_password_file: str | None) -> None:
    """Change the passphrase in use.

    The new key file gets the current scrypt parameters: giving the same
    passphrase again upgrades an old key file's parameters.
    """
    res = keyops.change_passphrase(sess, ctx.new_passphrase(new_password_file))
    say_warnings(ctx.json, res["warnings"])
    if ctx.json:
        emit_json(res)
        return
    was = "" if res["kdf"] == res["previous_kdf"] else f", was {_kdf(res['previous_kdf'])}"
    click.echo(f"passphrase changed (key {res['removed']} replaced by {res['added']}; "
               f"{_kdf(res['kdf'])}{was})")


def _kdf(kdf: dict[str, int]) -> str:
    n = kdf["n"]
    exp = n.bit_length() - 1
    return f"scrypt N=2^{exp}, r={kdf['r']}, p={kdf['p']}, {128 * n * kdf['r'] >> 20} MiB"


@key.command(name="remove")
@json_option
@click.argument("key_id")
@click.option("--dry-run", "-n", is_flag=True, help="Only say what would be removed.")
@with_session(load_index=False, write=True)
def key_remove(ctx: Ctx, sess: VaultSession, key_id: str, dry_run: bool) -> None:
    """Remove a key file (not the one in use)."""
    res = keyops.remove_key(sess, key_id, dry_run)
    verb = "would remove" if dry_run else "removed"
    emit_json(res) if ctx.json else click.echo(f"{verb} key {res['removed']}")


@key.command(name="export")
@json_option
@click.argument("file", type=click.Path(dir_okay=False))
@with_session(load_index=False)
def key_export(ctx: Ctx, sess: VaultSession, file: str) -> None:
    """Save the key in use to FILE (mode 0600) as an offline copy.

    FILE holds the master key sealed under your passphrase: keep it off the
    tiers (a USB stick, a password manager). If every key file of the vault
    is lost, 'tiervault key import FILE' puts it back.
    """
    res = keyops.export_key(sess, file)
    emit_json(res) if ctx.json else click.echo(
        f"exported key {res['exported']} to {res['file']} (it opens with your passphrase)")


@key.command(name="import")
@json_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_obj
def key_import(ctx: Ctx, file: str) -> None:
    """Put a key file saved by 'key export' back into the vault."""
    inst = ctx.installation()
    progress = ctx.progress()
    try:
        res = keyops.import_key(inst, progress, ctx.passphrase(), file)
    finally:
        progress.close()
        inst.close()
    emit_json(res) if ctx.json else click.echo(f"imported {res['file']} as key {res['imported']}")
