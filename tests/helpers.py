"""Running the ``tiervault`` CLI in a subprocess, as a user would.

Every call starts a fresh interpreter that runs ``tiervault.cli.main.main(argv)``
(the console script's entry point), so exit codes, stdout and stderr are the
real ones, and nothing of the test process (cwd, environment, open vaults)
leaks into the command. Arguments may be ``str``, ``bytes`` (for file names
that are not UTF-8) or ``os.PathLike``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PASSWORD = "correct horse battery staple"
#: Set by tv_env: new key files use scrypt N=2^10 (see tiervault.vault.crypto).
TEST_KDF_ENV = "TIERVAULT_INSECURE_TEST_KDF"
_BOOT = "import sys; from tiervault.cli.main import main; main(sys.argv[1:])"
#: Small retry settings so that a missing or damaged tier fails fast.
FAST_RETRY = ("--retry-attempts", "2", "--retry-delay", "0.05")

Arg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def tv_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a CLI run: ours, a known passphrase, then ``env``.

    New key files get a cheap scrypt cost (``TIERVAULT_INSECURE_TEST_KDF``, for
    tests only: the suite creates hundreds of vaults); a test of the real
    defaults passes ``env={TEST_KDF_ENV: None}``. A value of ``None`` in ``env``
    removes that variable.
    """
    out = dict(os.environ)
    out.pop("TIERVAULT_HOME", None)
    out["TIERVAULT_PASSWORD"] = PASSWORD
    out[TEST_KDF_ENV] = "1"
    for k, v in (env or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def run_tv(home: Arg, *args: Arg, env: Mapping[str, str | None] | None = None,
           input: bytes | str | None = None, timeout: float = 300,
           preexec_fn: Any = None, cwd: Arg | None = None,
           wrapper: Sequence[Arg] = (),
           fast_retry: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``tiervault --home HOME <fast retries> ARGS...``; never raises on a non-zero exit.

    Standard input is empty (not a terminal) unless ``input`` is given; stdout and
    stderr are decoded as UTF-8 with ``surrogateescape`` so odd file names survive.
    ``wrapper`` is a command prefix (e.g. ``["strace", "-f", ...]``).
    ``fast_retry=False`` runs with the default reconnect settings (10 attempts).
    """
    argv: list[Arg] = [*wrapper, sys.executable, "-c", _BOOT, "--home", home,
                       *(FAST_RETRY if fast_retry else ()), *args]
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(argv, input=data if data is not None else b"",
                          capture_output=True, env=tv_env(env), timeout=timeout,
                          preexec_fn=preexec_fn, cwd=cwd)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode,
        proc.stdout.decode("utf-8", "surrogateescape"),
        proc.stderr.decode("utf-8", "surrogateescape"))


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """A readable account of a run for assertion messages."""
    return (f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-4000:]}")


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Assert the run exited 0 and printed no traceback; returns it."""
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    return proc


def tv_json(home: Arg, *args: Arg, env: Mapping[str, str | None] | None = None) -> Any:
    """Run ``tiervault --json ARGS`` expecting success; the parsed stdout."""
    proc = ok(run_tv(home, "--json", *args, env=env))
    return json.loads(proc.stdout)


#: How the warning about a plain ftp:// or http:// tier ends (init, attach, tier add).
CLEARTEXT = "credentials and data travel in clear"


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """Non-empty lines printed on stderr, without the cleartext warning that every
    init/attach/tier add of a (loopback) ftp:// test server prints."""
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and CLEARTEXT not in ln]


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert a clean failure: non-zero exit, no traceback, one line on stderr."""
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 1, describe(proc)
    return lines[0]


def init_vault(tmp: Path, name: str = "vault", fast_kdf: bool = True) -> tuple[Path, Path]:
    """A new vault in ``tmp/name`` with its installation home in ``tmp/name-home``.

    ``fast_kdf`` swaps the key file for one with a cheap scrypt cost (same format,
    same passphrase) so that each later command starts in milliseconds, not 0.2 s.
    """
    home, vault = tmp / f"{name}-home", tmp / name
    ok(run_tv(home, "init", str(vault)))
    if fast_kdf:
        cheapen_key(vault)
    return home, vault


def cheapen_key(vault: Path, passphrase: str = PASSWORD) -> None:
    """Replace a local vault's key file by one wrapped with scrypt N=2^10."""
    from tiervault.storage.base import FileType, Handle
    from tiervault.storage.local import LocalBackend
    from tiervault.vault.crypto import KdfParams
    from tiervault.vault.repository import Repository

    backend = LocalBackend(vault)
    repo = Repository.open(backend, passphrase, load_index=False)
    repo.add_key(passphrase, KdfParams(n=2**10))
    backend.remove(Handle(FileType.KEY, repo.key_name))


def backup(home: Arg, *paths: Arg, expect: int = 0) -> dict[str, Any]:
    """``backup --json PATHS``; asserts the exit code; returns the summary."""
    proc = run_tv(home, "--json", "backup", *paths)
    assert proc.returncode == expect, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def restore(home: Arg, snapshot: str, target: Arg, *extra: Arg,
            expect: int | None = 0) -> subprocess.CompletedProcess[str]:
    """``restore SNAPSHOT TARGET [EXTRA]``; asserts the exit code unless ``expect`` is None."""
    proc = run_tv(home, "--json", "restore", snapshot, target, *extra)
    assert "Traceback" not in proc.stderr, describe(proc)
    if expect is not None:
        assert proc.returncode == expect, describe(proc)
    return proc


def dir_size(path: Path) -> int:
    """Bytes of all regular files below ``path`` (apparent size)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def under(target: Path, abs_path: str | bytes | Path) -> bytes:
    """Where an absolute source path lands inside a restore target."""
    p = os.fsencode(abs_path)
    return os.fsencode(target) + (p if p.startswith(b"/") else b"/" + p)


def rmtree_deep(top: Path | bytes) -> None:
    """Remove a tree of any depth, even past PATH_MAX (shutil.rmtree recurses and
    fails past ~1000 levels). Goes down and up by directory fds: one open at a time."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    top_b = os.path.abspath(os.fsencode(top))
    try:
        fd = os.open(top_b, flags)
    except FileNotFoundError:
        return
    names: list[bytes] = []
    while True:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            if not is_dir:
                os.unlink(name, dir_fd=fd)
        dirs = [name for name, is_dir in entries if is_dir]
        if dirs:
            sub = os.open(dirs[0], flags, dir_fd=fd)
            os.close(fd)
            fd = sub
            names.append(dirs[0])
        elif names:
            up = os.open(b"..", flags, dir_fd=fd)
            os.close(fd)
            os.rmdir(names.pop(), dir_fd=up)
            fd = up
        else:
            os.close(fd)
            os.rmdir(top_b)
            return


def make_deep(top: Path, depth: int, name: bytes = b"d") -> bytes:
    """``top/d/d/.../d`` (``depth`` levels) with a file ``leaf``; returns the leaf's path."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open(b"leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep down")
        os.close(leaf)
    finally:
        os.close(fd)
    return os.path.join(os.fsencode(top), *[name] * depth, b"leaf")


def add_snapshots(vault: Path, specs: list[dict[str, Any]], passphrase: str = PASSWORD,
                  template: str | None = None) -> list[str]:
    """Copies of a snapshot of the local tier ``vault`` with other fields; their ids.

    Each spec overrides fields of the template snapshot (``template`` id, default
    the newest): ``time`` (a datetime or ISO string), ``paths``, ``hostname``,
    ``tags``, ``program``. The copies share the template's tree, so they restore
    like it; this is how tests get a history spread over years in a second.
    """
    import dataclasses
    from datetime import datetime

    from tiervault.storage.base import FileType, Handle
    from tiervault.storage.local import LocalBackend
    from tiervault.vault.repository import Repository, content_name

    repo = Repository.open(LocalBackend(vault), passphrase, load_index=False)
    base = repo.load_snapshot(template) if template else repo.snapshots()[-1]
    ids = []
    for spec in specs:
        fields = dict(spec)
        if isinstance(fields.get("time"), datetime):
            fields["time"] = fields["time"].isoformat()
        snap = dataclasses.replace(base, **fields)
        # Written by hand so that a given ``program`` (an older tiervault) is kept.
        data = repo.codec.encode(snap.encode(), b"tiervault snapshot")
        name = content_name(data)
        repo.backend.save(Handle(FileType.SNAPSHOT, name), data)
        ids.append(name)
    return ids
