"""forget and retention through the CLI: archives are never removed (issue 8 #1),
retention groups by host and paths as forget does (#11), one snapshot can be
forgotten by id, --keep-within and the --host/--path/--tag filters (#12)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    add_snapshots,
    backup,
    init_vault,
    ok,
    one_line_error,
    restore,
    run_tv,
    tv_json,
    under,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def _vault(tmp_path: Path) -> tuple[Path, Path, Path]:
    home, vault = init_vault(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "precious.txt").write_text("the only copy of the year-end accounts\n")
    backup(home, src)
    return home, vault, src


def _ids(home: Path) -> set[str]:
    return {s["id"] for s in tv_json(home, "snapshots")}


def _history(home: Path, vault: Path, src: Path) -> tuple[str, set[str]]:
    """Snapshots of one path set over three years; the oldest one is archived."""
    times = [NOW - timedelta(days=d) for d in (1100, 800, 400, 40, 10, 2)]
    ids = add_snapshots(vault, [{"time": t} for t in times])
    ok(run_tv(home, "archive", "mark", ids[0][:8]))
    # Looked up by its flag, not by the id it had, so that this fixture does not
    # depend on the id staying the same (test_cli_archive checks that).
    (archived,) = [s["id"] for s in tv_json(home, "snapshots") if s["archived"]]
    return archived, _ids(home)


FORGET_OPTIONS = [
    ["--keep-last", "1"], ["--keep-hourly", "1"], ["--keep-daily", "1"],
    ["--keep-weekly", "1"], ["--keep-monthly", "1"], ["--keep-yearly", "1"],
    ["--keep-tag", "nightly"], ["--keep-within", "1d"],
    ["--keep-last", "1", "--path", "SRC"], ["--keep-last", "1", "--group-by", ""],
]


@pytest.mark.parametrize("option", FORGET_OPTIONS, ids=lambda o: " ".join(o))
def test_forget_never_removes_an_archived_snapshot(tmp_path: Path, option: list[str]) -> None:
    home, vault, src = _vault(tmp_path)
    archived, before = _history(home, vault, src)
    args = [str(src) if a == "SRC" else a for a in option]
    res = tv_json(home, "forget", *args, "--prune")
    assert archived not in {s["id"] for s in res["remove"]}
    kept = {s["id"]: s["reasons"] for s in res["keep"]}
    assert "archived" in kept[archived]
    after = _ids(home)
    assert archived in after and len(after) < len(before)


def test_an_archive_survives_forget_and_prune_and_restores(tmp_path: Path) -> None:
    home, vault, src = _vault(tmp_path)
    archived, _ = _history(home, vault, src)
    (src / "precious.txt").unlink()
    (src / "new.txt").write_text("new")
    backup(home, src)
    ok(run_tv(home, "forget", "--keep-last", "1", "--prune"))
    assert len(_ids(home)) == 2
    ok(run_tv(home, "check", "--read-data"))
    restore(home, archived, tmp_path / "r")
    assert Path(under(tmp_path / "r", src / "precious.txt").decode()).read_text().startswith(
        "the only copy")


RETENTION_OPTIONS = ["--keep-all-days", "--daily", "--weekly", "--monthly", "--yearly"]


@pytest.mark.parametrize("option", RETENTION_OPTIONS)
def test_retention_never_removes_an_archived_snapshot(tmp_path: Path, option: str) -> None:
    home, vault, src = _vault(tmp_path)
    archived, before = _history(home, vault, src)
    zeros = [x for o in RETENTION_OPTIONS if o != option for x in (o, "0")]
    res = tv_json(home, "retention", option, "1", *zeros, "--prune")
    assert archived not in {s["id"] for s in res["remove"]}
    after = _ids(home)
    assert archived in after and len(after) < len(before)


def test_daemon_set_retention_keeps_archives(tmp_path: Path) -> None:
    """The daemon's per-set retention (daemon/retention.py), run by the job runner."""
    from tests.test_daemon_runner import PW, Env
    from tiervault.engine.progress import Progress
    from tiervault.service import ops
    from tiervault.service.session import VaultSession

    env = Env(tmp_path)
    first = env.run()
    assert first["status"] == "success", first
    sess = VaultSession(env.inst, PW, Progress())
    try:
        arch = ops.set_archive(sess, first["snapshot_id"], True)["snapshot_id"]
    finally:
        sess.end_writes()
        sess.close()
    for doc in ({"retention": {"keep_last": 1}},
                {"retention": {"all_days": 1, "daily_days": 0, "weekly_weeks": 0,
                               "monthly_months": 0, "yearly_years": 0}}):
        old = add_snapshots(env.a, [{"time": NOW - timedelta(days=d)} for d in (300, 200)],
                            passphrase=PW, template=arch)
        res = env.run(doc)
        assert res["status"] == "success", res
        assert set(old) <= set(res["retention"]["removed"]), res
        assert arch in {s.id for s in env.snapshots()}


# -- #11: retention groups like forget ---------------------------------------------------

def _eight_sets(home: Path, vault: Path) -> None:
    specs: list[dict[str, Any]] = []
    for i in range(17):
        specs.append({"time": NOW - timedelta(days=3, hours=i), "paths": [f"/set{i % 8}"]})
    add_snapshots(vault, specs)


def test_retention_groups_by_host_and_paths_like_forget(tmp_path: Path) -> None:
    home, vault, _src = _vault(tmp_path)
    _eight_sets(home, vault)
    r = tv_json(home, "retention", "--keep-all-days", "0", "--daily", "1", "--weekly", "0",
                "--monthly", "0", "--yearly", "0", "--dry-run")
    f = tv_json(home, "forget", "--keep-daily", "1", "--dry-run")
    # 8 sets of the clones plus the set of the real backup: one each.
    assert len(f["keep"]) == 9
    assert {s["id"] for s in r["keep"]} == {s["id"] for s in f["keep"]}
    assert r["group_by"] == f["group_by"] == ["host", "paths"]
    one = tv_json(home, "retention", "--keep-all-days", "0", "--daily", "1", "--weekly", "0",
                  "--monthly", "0", "--yearly", "0", "--dry-run", "--group-by", "")
    assert len(one["keep"]) == 1


def test_retention_and_forget_print_the_same_columns(tmp_path: Path) -> None:
    home, vault, _src = _vault(tmp_path)
    _eight_sets(home, vault)
    r = ok(run_tv(home, "retention", "--keep-all-days", "0", "--daily", "1", "--weekly", "0",
                  "--monthly", "0", "--yearly", "0", "--dry-run")).stdout.splitlines()
    f = ok(run_tv(home, "forget", "--keep-daily", "1", "--dry-run")).stdout.splitlines()
    assert r[0] == f[0] and "Host" in r[0] and "Paths" in r[0]
    assert any("/set3" in ln and ln.startswith("would remove") for ln in r)
    assert r[-1] == f[-1] == "9 kept, 9 would remove"


@pytest.mark.parametrize("cmd", [
    ["forget", "--keep-last", "0"],
    ["retention", "--keep-all-days", "0", "--daily", "0", "--weekly", "0", "--monthly", "0",
     "--yearly", "0"],
])
def test_a_policy_that_keeps_nothing_is_refused(tmp_path: Path, cmd: list[str]) -> None:
    home, vault, _src = _vault(tmp_path)
    _eight_sets(home, vault)
    before = _ids(home)
    proc = run_tv(home, *cmd)
    assert proc.returncode == 2
    assert "refusing to forget every snapshot" in one_line_error(proc)
    assert _ids(home) == before


# -- #12: forget ID..., --keep-within, filters --------------------------------------------

def test_forget_ids_removes_exactly_those(tmp_path: Path) -> None:
    home, vault, _src = _vault(tmp_path)
    ids = add_snapshots(vault, [{"time": NOW - timedelta(days=d)} for d in (3, 2, 1)])
    before = _ids(home)
    res = tv_json(home, "forget", ids[0][:8], ids[2])
    assert {s["id"] for s in res["remove"]} == {ids[0], ids[2]}
    assert _ids(home) == before - {ids[0], ids[2]}
    proc = run_tv(home, "forget", "deadbeef")
    assert proc.returncode == 2 and "no snapshot matches" in one_line_error(proc)
    proc = run_tv(home, "forget", ids[1], "--keep-last", "1")
    assert proc.returncode == 2 and "not both" in one_line_error(proc)


def test_forget_id_of_an_archive_only_after_release(tmp_path: Path) -> None:
    home, vault, _src = _vault(tmp_path)
    (sid,) = add_snapshots(vault, [{"time": NOW - timedelta(days=5)}])
    ok(run_tv(home, "archive", "mark", sid[:8]))
    proc = run_tv(home, "forget", sid[:8])
    assert proc.returncode == 2
    assert f"archive release {sid[:8]}" in one_line_error(proc)
    assert sid in _ids(home)
    ok(run_tv(home, "archive", "release", sid[:8]))
    ok(run_tv(home, "forget", sid[:8]))
    assert sid not in _ids(home)


def test_keep_within_uses_restic_durations(tmp_path: Path) -> None:
    home, vault, _src = _vault(tmp_path)
    ids = add_snapshots(vault, [{"time": NOW - timedelta(days=d), "paths": ["/w"]}
                                for d in (800, 500, 100, 20, 1)])
    res = tv_json(home, "forget", "--keep-within", "1y2m", "--path", "/w", "--dry-run")
    assert {s["id"] for s in res["keep"]} == set(ids[2:])
    res = tv_json(home, "forget", "--keep-within", "2y5m7d3h", "--path", "/w", "--dry-run")
    assert {s["id"] for s in res["keep"]} == set(ids)
    proc = run_tv(home, "forget", "--keep-within", "3 weeks")
    assert proc.returncode == 2 and "invalid duration" in one_line_error(proc)


def test_filters_limit_what_forget_considers(tmp_path: Path) -> None:
    home, vault, _src = _vault(tmp_path)
    a = add_snapshots(vault, [{"time": NOW - timedelta(days=d), "paths": ["/a"]}
                              for d in (3, 2, 1)])
    b = add_snapshots(vault, [{"time": NOW - timedelta(days=d), "paths": ["/b"],
                               "hostname": "other-host", "tags": ["t1", "t2"]}
                              for d in (3, 2, 1)])
    res = tv_json(home, "forget", "--keep-last", "1", "--path", "/a")
    assert {s["id"] for s in res["remove"]} == set(a[:2])
    res = tv_json(home, "forget", "--keep-last", "1", "--host", "other-host", "--tag",
                  "t1,t2", "--dry-run")
    assert {s["id"] for s in res["remove"]} == set(b[:2])
    res = tv_json(home, "forget", "--keep-last", "1", "--tag", "t1,nope", "--dry-run")
    assert res["remove"] == [] and res["keep"] == []
    assert len(json.loads(ok(run_tv(home, "--json", "snapshots")).stdout)) == 1 + 1 + 3
