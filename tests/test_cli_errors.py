"""Failures through the CLI: the right exit code, a clear line naming the culprit,
and never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import blake3
import pytest

from tests.helpers import (
    backup,
    describe,
    init_vault,
    ok,
    one_line_error,
    run_tv,
    stderr_lines,
    tv_json,
    under,
)

MiB = 1024 * 1024


def _make_vault(tmp: Path) -> dict[str, Path]:
    src = tmp / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(3 * MiB))
    (src / "sub" / "small").write_bytes(b"hello, small file\n")
    home, vdir = init_vault(tmp)
    backup(home, str(src))
    return {"tmp": tmp, "src": src, "home": home, "vault": vdir}


@pytest.fixture
def vault(tmp_path: Path) -> dict[str, Path]:
    """A vault of its own (to damage) with one snapshot of a 3 MiB file and a small one."""
    return _make_vault(tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same, shared by the tests that leave the vault as it is."""
    return _make_vault(tmp_path_factory.mktemp("shared"))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _files(vdir: Path, kind: str) -> list[Path]:
    return sorted(p for p in (vdir / kind).rglob("*") if p.is_file())


def _biggest_pack(vdir: Path) -> Path:
    return max(_files(vdir, "data"), key=lambda p: p.stat().st_size)


def _rel(vdir: Path, p: Path) -> str:
    return p.relative_to(vdir).as_posix()


def _error_naming(proc: subprocess.CompletedProcess[str], name: str) -> str:
    """The one ``tiervault: error:`` line, which must name ``name``.

    Besides it, stderr may only hold the tier set's notice about the same file,
    or the warning that the tier is stale or damaged (a renamed file is missing).
    """
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    errors = [ln for ln in stderr_lines(proc) if ln.startswith("tiervault: error:")]
    assert len(errors) == 1, describe(proc)
    assert name in errors[0], describe(proc)
    for ln in stderr_lines(proc):
        assert ln == errors[0] or name in ln or "is stale or damaged" in ln, describe(proc)
    return errors[0]


# -- passphrase ----------------------------------------------------------------------


def test_wrong_passphrase_exits_4_with_one_line(shared: dict[str, Path],
                                                tmp_path: Path) -> None:
    for args in (["snapshots"], ["restore", "latest", str(tmp_path / "out")],
                 ["backup", str(shared["src"])]):
        proc = run_tv(shared["home"], *args, env={"TIERVAULT_PASSWORD": "not the passphrase"})
        assert proc.returncode == 4, describe(proc)
        assert "wrong passphrase" in one_line_error(proc)
    assert not (tmp_path / "out").exists()


def test_missing_passphrase_without_terminal_exits_2(shared: dict[str, Path]) -> None:
    proc = run_tv(shared["home"], "snapshots", env={"TIERVAULT_PASSWORD": None})
    assert proc.returncode == 2, describe(proc)
    assert "TIERVAULT_PASSWORD" in one_line_error(proc)


def test_password_file(shared: dict[str, Path], tmp_path: Path) -> None:
    from tests.helpers import PASSWORD

    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    ok(run_tv(shared["home"], "--password-file", str(pw), "snapshots",
              env={"TIERVAULT_PASSWORD": None}))
    proc = run_tv(shared["home"], "--password-file", str(tmp_path / "nope"), "snapshots")
    assert proc.returncode == 2, describe(proc)
    one_line_error(proc)


def test_damaged_key_file_is_named(vault: dict[str, Path]) -> None:
    (key,) = _files(vault["vault"], "keys")
    key.write_text("garbage")
    proc = run_tv(vault["home"], "snapshots")
    assert proc.returncode == 4, describe(proc)
    assert _rel(vault["vault"], key) in one_line_error(proc)


def test_damaged_config(vault: dict[str, Path]) -> None:
    (vault["vault"] / "config").write_text('{"format": ')
    proc = run_tv(vault["home"], "snapshots")
    assert "config" in one_line_error(proc)


# -- references and paths --------------------------------------------------------


def test_unknown_snapshot_is_a_usage_error(shared: dict[str, Path], tmp_path: Path) -> None:
    for args in (["restore", "0123abcd", str(tmp_path / "out")], ["ls", "zzz"],
                 ["diff", "latest", ""]):
        proc = run_tv(shared["home"], *args)
        assert proc.returncode in (1, 2), describe(proc)
        assert "snapshot" in one_line_error(proc)
    assert not (tmp_path / "out").exists()


def test_backup_of_a_nonexistent_path(shared: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    proc = run_tv(shared["home"], "backup", str(missing))
    assert proc.returncode == 2, describe(proc)
    assert str(missing) in one_line_error(proc)
    assert len(tv_json(shared["home"], "snapshots")) == 1  # nothing was saved


def test_restore_onto_a_file(shared: dict[str, Path], tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_bytes(b"x")
    proc = run_tv(shared["home"], "restore", "latest", str(f))
    assert proc.returncode == 2, describe(proc)
    assert str(f) in one_line_error(proc)
    assert f.read_bytes() == b"x"


def test_no_installation(tmp_path: Path) -> None:
    proc = run_tv(tmp_path / "nothing-here", "snapshots")
    assert proc.returncode == 2, describe(proc)
    assert "no vault is configured" in one_line_error(proc)


def test_unknown_command_and_option(shared: dict[str, Path]) -> None:
    for args in (["frobnicate"], ["backup", "--no-such-option", "x"], ["restore"],
                 ["check", "--read-data-subset", "abc"]):
        proc = run_tv(shared["home"], *args)
        assert proc.returncode == 2, describe(proc)
        assert "Traceback" not in proc.stderr


def test_vault_directory_gone(vault: dict[str, Path]) -> None:
    shutil.move(vault["vault"], vault["tmp"] / "unplugged")
    proc = run_tv(vault["home"], "snapshots", timeout=60)
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr
    assert str(vault["vault"]) in proc.stderr


# -- damaged vault files ----------------------------------------------------------


def test_damaged_pack(vault: dict[str, Path]) -> None:
    pack = _biggest_pack(vault["vault"])
    name = _rel(vault["vault"], pack)
    _flip(pack, 1000)  # inside the first blob of the big file
    target = vault["tmp"] / "out"
    proc = run_tv(vault["home"], "restore", "latest", str(target))
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc)
    assert lines[-1].startswith("error: 1 item could not be restored"), describe(proc)
    warnings = [ln for ln in lines if ln.startswith("warning:")]
    assert len(warnings) == 1, describe(proc)
    assert str(vault["src"] / "big") in warnings[0]
    assert pack.name in warnings[0]
    # The small file, stored in the same pack, is intact and restored.
    small = Path(os.fsdecode(under(target, vault["src"] / "sub" / "small")))
    assert small.read_bytes() == b"hello, small file\n"
    # Structure check does not read data; --read-data names the pack.
    proc = run_tv(vault["home"], "check", "--read-data")
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    errs = [ln for ln in proc.stdout.splitlines() if ln.startswith("error:")
            and "is stale or damaged" not in ln]  # a renamed file is also missing
    assert len(errs) == 1 and name in errs[0], describe(proc)
    proc = run_tv(vault["home"], "--json", "check", "--read-data")
    assert proc.returncode == 1, describe(proc)
    errors = _all_errors(json.loads(proc.stdout))
    assert len(errors) == 1 and name in errors[0]["file"], proc.stdout
    # JSON restore: the summary counts only what really came back.
    proc = run_tv(vault["home"], "--json", "restore", "latest", str(vault["tmp"] / "out2"))
    assert proc.returncode == 1, describe(proc)
    res = json.loads(proc.stdout)
    assert res["errors"] == 1
    assert res["files_restored"] == 1
    assert [w["path"] for w in res["warnings"]] == [
        os.fsdecode(under(vault["tmp"] / "out2", vault["src"] / "big"))]


def _all_errors(doc: object) -> list[dict[str, object]]:
    """Every entry of every ``errors`` list in a check report (one tier or many)."""
    out: list[dict[str, object]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "errors" and isinstance(v, list):
                out += [e for e in v if isinstance(e, dict)]
            else:
                out += _all_errors(v)
    elif isinstance(doc, list):
        for v in doc:
            out += _all_errors(v)
    return out


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_lost_pack(vault: dict[str, Path], how: str) -> None:
    pack = _biggest_pack(vault["vault"])
    if how == "truncate":
        os.truncate(pack, 1000)
    else:
        pack.unlink()
    proc = run_tv(vault["home"], "restore", "latest", str(vault["tmp"] / "out"))
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    assert pack.name in proc.stderr
    proc = run_tv(vault["home"], "check")
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    errs = [ln for ln in proc.stdout.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and _rel(vault["vault"], pack) in errs[0], describe(proc)


def test_damaged_index_file(vault: dict[str, Path]) -> None:
    """One damaged index must not make the vault unusable: every command names
    it (warning or error, never a traceback), and check --repair rebuilds it."""
    (index,) = _files(vault["vault"], "index")
    name = _rel(vault["vault"], index)
    _flip(index, 50)
    proc = run_tv(vault["home"], "snapshots")
    assert proc.returncode == 0 and name in proc.stderr, describe(proc)
    for args in (["restore", "latest", str(vault["tmp"] / "out")], ["ls", "latest"]):
        proc = run_tv(vault["home"], *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
        assert name in proc.stderr, describe(proc)
    proc = run_tv(vault["home"], "prune")
    assert proc.returncode == 1 and "prune refused" in proc.stderr, describe(proc)
    assert _files(vault["vault"], "snapshots") != []
    # check reports it (in its list of errors, or as its one error line).
    proc = run_tv(vault["home"], "check")
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    assert name in proc.stdout + proc.stderr
    proc = run_tv(vault["home"], "check", "--repair")
    assert proc.returncode == 0 and "rebuilt index" in proc.stdout, describe(proc)
    ok(run_tv(vault["home"], "check", "--read-data"))
    ok(run_tv(vault["home"], "restore", "latest", str(vault["tmp"] / "out2")))


def _replace_sealed(path: Path) -> Path:
    """Garbage under a name that matches it: gets past the name check to decryption."""
    junk = os.urandom(path.stat().st_size)
    new = path.with_name(blake3.blake3(junk).hexdigest())
    path.unlink()
    new.write_bytes(junk)
    return new


@pytest.mark.parametrize("damage", ["flip", "forged-name"])
def test_damaged_snapshot_file(vault: dict[str, Path], damage: str) -> None:
    (snap,) = _files(vault["vault"], "snapshots")
    if damage == "flip":
        _flip(snap, 50)
    else:
        snap = _replace_sealed(snap)
    name = _rel(vault["vault"], snap)
    # The listing goes on with a warning naming the damaged snapshot ...
    proc = run_tv(vault["home"], "snapshots")
    assert proc.returncode == 0 and snap.name[:8] in proc.stderr, describe(proc)
    # ... and with no readable snapshot left, 'latest' is an error naming it.
    for args in (["restore", "latest", str(vault["tmp"] / "out")], ["ls", "latest"]):
        _error_naming(run_tv(vault["home"], *args), snap.name[:8])
    proc = run_tv(vault["home"], "check")
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    errs = [ln for ln in proc.stdout.splitlines() if ln.startswith("error:")
            and "is stale or damaged" not in ln]  # a renamed file is also missing
    assert len(errs) == 1 and name in errs[0], describe(proc)


def test_damaged_tree_blob_is_reported_by_check(vault: dict[str, Path]) -> None:
    """Trees live in their own small pack: damage there fails ls/restore cleanly."""
    small = min(_files(vault["vault"], "data"), key=lambda p: p.stat().st_size)
    _flip(small, 40)
    proc = run_tv(vault["home"], "ls", "latest")
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr
    assert small.name in proc.stderr
    proc = run_tv(vault["home"], "restore", "latest", str(vault["tmp"] / "out"))
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr
    assert small.name in proc.stderr
    proc = run_tv(vault["home"], "check")
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    assert small.name in proc.stdout


# -- unreadable source files --------------------------------------------------------


def _without_dac_override() -> list[str] | None:
    """A command prefix that runs as root but without the power to ignore file modes."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_unreadable_file_gives_exit_6_and_a_partial_snapshot(vault: dict[str, Path]) -> None:
    wrapper = _without_dac_override() if os.geteuid() == 0 else []
    if wrapper is None:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here (setpriv missing)")
    locked = vault["src"] / "sub" / "locked"
    locked.write_bytes(b"nobody may read this")
    locked.chmod(0)
    try:
        with open(locked, "rb"):
            pass
        if wrapper:
            probe = subprocess.run([*wrapper, "cat", str(locked)], capture_output=True)
            if probe.returncode == 0:
                pytest.skip("the file stays readable even without CAP_DAC_OVERRIDE")
    except PermissionError:
        pass  # not root: plain permissions do it
    proc = run_tv(vault["home"], "--json", "backup", str(vault["src"]), wrapper=wrapper)
    assert proc.returncode == 6, describe(proc)
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["complete"] is False
    assert [w["path"] for w in summary["warnings"]] == [str(locked)]
    assert str(locked) in proc.stderr
    snaps = tv_json(vault["home"], "snapshots")
    assert [s["complete"] for s in snaps] == [True, False]
    assert snaps[-1]["stats"]["errors"] == 1
    listed = {e["path"] for e in tv_json(vault["home"], "ls", snaps[-1]["id"])}
    assert str(vault["src"] / "big") in listed
    assert str(vault["src"] / "sub" / "small") in listed
    assert str(locked) not in listed
    # The listing flags the partial snapshot (P).
    proc = ok(run_tv(vault["home"], "snapshots"))
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(snaps[-1]["id"][:8]))
    assert line.split()[1] == "P"
    assert snaps[-1]["partial"] is True and snaps[-1]["flags"] == "P"
