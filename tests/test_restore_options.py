"""``restore --no-devices`` and ``restore --no-setuid`` (restores that are not to /)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.helpers import backup, describe, init_vault, run_tv, under
from tests.test_restore_safety import T2000, Forge
from tiervault.vault.tree import Node


def _devices_snapshot(forge: Forge) -> str:
    return forge.snapshot([
        Node(name=b"null", type="chardev", mode=0o666, uid=0, gid=0, rdev=os.makedev(1, 3),
             mtime=T2000),
        Node(name=b"sda", type="blockdev", mode=0o660, uid=0, gid=0, rdev=os.makedev(8, 0),
             mtime=T2000),
        forge.dir(b"dev", [Node(name=b"zero", type="chardev", mode=0o666, uid=0, gid=0,
                                rdev=os.makedev(1, 5), mtime=T2000)]),
        Node(name=b"pipe", type="fifo", mode=0o640, mtime=T2000),
        forge.file(b"plain", b"kept"),
    ])


def test_no_devices_skips_device_nodes_with_one_warning(tmp_path: Path) -> None:
    home, vault = init_vault(tmp_path)
    snap = _devices_snapshot(Forge(vault))
    target = tmp_path / "target"
    proc = run_tv(home, "restore", "--no-devices", snap, target)
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    warnings = [ln for ln in proc.stderr.splitlines() if "device" in ln]
    assert len(warnings) == 1, describe(proc)
    assert "skipped 3 device nodes (--no-devices)" in warnings[0], describe(proc)
    assert sorted(os.listdir(target)) == ["dev", "pipe", "plain"]
    assert os.listdir(target / "dev") == []
    assert stat.S_ISFIFO(os.lstat(target / "pipe").st_mode)
    assert stat.S_IMODE(os.lstat(target / "pipe").st_mode) == 0o640
    assert (target / "plain").read_bytes() == b"kept"


def test_no_devices_json_counts_no_error(tmp_path: Path) -> None:
    home, vault = init_vault(tmp_path)
    snap = _devices_snapshot(Forge(vault))
    proc = run_tv(home, "--json", "restore", "--no-devices", snap, tmp_path / "target")
    assert proc.returncode == 0, describe(proc)
    res = json.loads(proc.stdout)
    assert res["errors"] == 0
    assert [w["message"] for w in res["warnings"]] == ["skipped 3 device nodes (--no-devices)"]


def test_without_no_devices_device_nodes_are_restored_or_warned(tmp_path: Path) -> None:
    home, vault = init_vault(tmp_path)
    snap = _devices_snapshot(Forge(vault))
    target = tmp_path / "target"
    proc = run_tv(home, "restore", snap, target)
    assert "Traceback" not in proc.stderr, describe(proc)
    if os.geteuid() == 0 and proc.returncode == 0:
        assert stat.S_ISCHR(os.lstat(target / "null").st_mode)
        assert stat.S_ISBLK(os.lstat(target / "sda").st_mode)
        assert stat.S_IMODE(os.lstat(target / "null").st_mode) == 0o666
    else:  # not root, or no CAP_MKNOD here: one warning per node, exit 1
        assert proc.returncode == 1, describe(proc)
        assert "null" in proc.stderr and "sda" in proc.stderr, describe(proc)


def _setuid_source(src: Path) -> None:
    (src / "shared").mkdir(parents=True)
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("both", 0o6750),
                       ("sticky", 0o1755), ("plain", 0o644)):
        (src / name).write_bytes(name.encode())
        os.chmod(src / name, mode)
    os.chmod(src / "shared", 0o2775)


def test_no_setuid_strips_setuid_and_setgid_bits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _setuid_source(src)
    home, _vault = init_vault(tmp_path)
    snap = backup(home, src)["snapshot_id"]
    plain, stripped = tmp_path / "plain", tmp_path / "stripped"
    for target, extra in ((plain, ()), (stripped, ("--no-setuid",))):
        proc = run_tv(home, "restore", *extra, snap, target)
        assert proc.returncode == 0, describe(proc)

    def modes(target: Path) -> dict[str, int]:
        base = Path(os.fsdecode(under(target, src)))
        return {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in base.iterdir()}

    assert modes(plain) == {"suid": 0o4755, "sgid": 0o2755, "both": 0o6750, "sticky": 0o1755,
                            "plain": 0o644, "shared": 0o2775}
    # Files lose both bits; the sticky bit stays; a directory keeps its setgid
    # (group inheritance, not a privilege).
    assert modes(stripped) == {"suid": 0o755, "sgid": 0o755, "both": 0o750, "sticky": 0o1755,
                               "plain": 0o644, "shared": 0o2775}
