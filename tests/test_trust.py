"""Key export/import and vaults written by the previous release (issue 9)."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path

from tests.helpers import describe, init_vault, ok, run_tv

DATA = Path(__file__).parent / "data"
#: The passphrase of tests/data/vault-v1.tar.gz (made with tiervault at 9a04c26).
V1_PASSPHRASE = "vault v1 test passphrase"


def test_key_export_then_import_recovers_a_vault_with_no_key_file(tmp_path: Path) -> None:
    home, vault = init_vault(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"precious" * 1000)
    ok(run_tv(home, "backup", str(src)))
    exported = tmp_path / "offline.key"
    ok(run_tv(home, "key", "export", str(exported)))
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert "data" in json.loads(exported.read_text())  # sealed under the passphrase
    again = run_tv(home, "key", "export", str(exported))
    assert again.returncode != 0 and "already exists" in again.stderr, describe(again)
    for k in (vault / "keys").iterdir():
        k.unlink()  # every key file lost
    assert run_tv(home, "snapshots").returncode != 0
    wrong = run_tv(home, "key", "import", str(exported), env={"TIERVAULT_PASSWORD": "nope"})
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr, describe(wrong)
    ok(run_tv(home, "key", "import", str(exported)))
    ok(run_tv(home, "restore", "latest", str(tmp_path / "out")))
    assert (tmp_path / "out" / str(src).lstrip("/") / "a").read_bytes() == b"precious" * 1000


def test_last_key_file_is_never_removed(tmp_path: Path) -> None:
    home, vault = init_vault(tmp_path)
    (key,) = [p.name for p in (vault / "keys").iterdir()]
    proc = run_tv(home, "key", "remove", key)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
    assert [p.name for p in (vault / "keys").iterdir()] == [key]


def test_vault_written_by_the_previous_release_opens_restores_and_is_upgraded(
        tmp_path: Path) -> None:
    with tarfile.open(DATA / "vault-v1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    vault = tmp_path / "vault-v1"
    assert json.loads((vault / "config").read_text())["version"] == 1
    assert not (vault / "manifest").exists()
    home = tmp_path / "home"
    env = {"TIERVAULT_PASSWORD": V1_PASSPHRASE}
    ok(run_tv(home, "attach", str(vault), "--take-over", env=env))
    snaps = json.loads(ok(run_tv(home, "--json", "snapshots", env=env)).stdout)
    assert len(snaps) == 2
    out = tmp_path / "out"
    ok(run_tv(home, "restore", snaps[-1]["id"], str(out), env=env))
    restored = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert restored == {"hello.txt": b"hello from v1\n" * 100, "second.txt": b"second\n" * 50}
    # The first write session upgrades it in place: config MAC (version 2), manifest.
    src = tmp_path / "src"
    src.mkdir()
    (src / "new").write_bytes(b"new data")
    ok(run_tv(home, "backup", str(src), env=env))
    doc = json.loads((vault / "config").read_text())
    assert doc["version"] == 2 and isinstance(doc.get("mac"), str)
    assert (vault / "manifest").exists()
    ok(run_tv(home, "check", env=env))
    # Still readable afterwards, by a fresh installation too.
    ok(run_tv(tmp_path / "home2", "attach", str(vault), "--read-only", env=env))
    ok(run_tv(tmp_path / "home2", "restore", snaps[0]["id"], str(tmp_path / "out2"), env=env))
