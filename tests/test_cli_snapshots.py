"""The ``snapshots`` listing (filters, table), ``ls`` sizes, the restore summary's
numbers, and ``check --repair``'s account of what it fixed, through the CLI."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import backup, describe, init_vault, ok, run_tv, tv_json

TAGS = ["a-rather-long-tag-number-one", "another-long-tag-two", "x"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("snaps")
    a, b = tmp / "a", tmp / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("a\n")
    (b / "g").write_text("b\n")
    home, vault = init_vault(tmp)
    ids = {}
    ids["a1"] = backup(home, a)["snapshot_id"]
    (a / "f").write_text("a2\n")
    proc = run_tv(home, "--json", "backup", a, *[x for t in TAGS for x in ("--tag", t)])
    ids["a2"] = json.loads(ok(proc).stdout)["snapshot_id"]
    ids["b1"] = backup(home, b)["snapshot_id"]
    ids["ab"] = backup(home, a, b)["snapshot_id"]
    return {"home": home, "vault": vault, "a": a, "b": b, "ids": ids, "tmp": tmp}


def _ids(world: dict[str, Any], *args: str) -> set[str]:
    return {s["id"] for s in tv_json(world["home"], "snapshots", *args)}


def test_path_filter_is_restics(world: dict[str, Any]) -> None:
    ids = world["ids"]
    assert _ids(world, "--path", str(world["a"])) == {ids["a1"], ids["a2"], ids["ab"]}
    assert _ids(world, "--path", str(world["a"]) + "/", "--path", str(world["b"])) == {ids["ab"]}
    assert _ids(world, "--path", str(world["tmp"] / "nothing")) == set()


def test_latest_n_is_per_host_and_path_set(world: dict[str, Any]) -> None:
    ids = world["ids"]
    assert _ids(world, "--latest", "1") == {ids["a2"], ids["b1"], ids["ab"]}
    assert _ids(world, "--latest", "2") == set(ids.values())
    assert _ids(world, "--latest", "1", "--path", str(world["a"])) == {ids["a2"], ids["ab"]}


def test_tag_filter_all_of_a_comma_list_either_of_repeats(world: dict[str, Any]) -> None:
    ids = world["ids"]
    assert _ids(world, "--tag", f"{TAGS[0]},x") == {ids["a2"]}
    assert _ids(world, "--tag", f"{TAGS[0]},nope") == set()
    assert _ids(world, "--tag", "nope", "--tag", "x") == {ids["a2"]}


def test_table_shows_local_time_with_zone_and_nothing_cut(world: dict[str, Any]) -> None:
    out = ok(run_tv(world["home"], "snapshots", env={"TZ": "Asia/Kolkata"})).stdout
    snaps = tv_json(world["home"], "snapshots")
    for s in snaps:
        local = datetime.fromisoformat(s["time"]).astimezone()  # the test's zone is UTC
        kolkata = local.timestamp() + 5.5 * 3600
        want = datetime.utcfromtimestamp(kolkata).strftime("%Y-%m-%d %H:%M:%S") + " +05:30"
        row = next(ln for ln in out.splitlines() if ln.startswith(s["id"][:8]))
        assert want in row, (want, out)
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", out), out  # no fraction of a second
    words = set(re.split(r"[\s,]+", out))
    for t in TAGS:
        assert t in words, out  # every tag whole, none cut
    # The long tags wrap onto a second line of the same snapshot rather than widen forever.
    lines = out.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith(world["ids"]["a2"][:8]))
    assert TAGS[0] in lines[first] and "another-long-tag-two" in lines[first + 1], out
    assert "4 snapshots" in out


def test_ls_lists_paths_long_and_human(world: dict[str, Any], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 * 1024 * 1024 + 512 * 1024))
    home, _ = init_vault(tmp_path)
    backup(home, src)
    names = ok(run_tv(home, "ls", "latest", str(src))).stdout.splitlines()
    assert names == [str(src), str(src / "big")], names
    long_ = ok(run_tv(home, "ls", "-l", "latest", str(src / "big"))).stdout
    assert " 3670016 " in long_ and long_.startswith("-rw"), long_
    human = ok(run_tv(home, "ls", "--long", "--human-readable", "latest", str(src / "big")))
    assert "3.5 MiB" in human.stdout, human.stdout
    assert "3.5 MiB" in ok(run_tv(home, "ls", "-H", "latest", str(src / "big"))).stdout
    entries = tv_json(home, "ls", "-H", "latest", str(src / "big"))
    assert entries[-1]["size"] == 3670016  # JSON keeps numbers of bytes


def test_restore_summary_counts_as_the_backup_does(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:  # 8 MiB apparent, mostly a hole
        f.write(os.urandom(64 * 1024))
        f.truncate(8 * 1024 * 1024)
    (src / "plain").write_bytes(os.urandom(10_000))
    os.link(src / "plain", src / "twin")
    home, _ = init_vault(tmp_path)
    summary = backup(home, src)
    res = json.loads(ok(run_tv(home, "--json", "restore", "latest", tmp_path / "r")).stdout)
    assert res["bytes_restored"] == summary["total_bytes_processed"], (res, summary)
    assert res["files_restored"] == summary["total_files_processed"] == 3
    text = ok(run_tv(home, "restore", "latest", tmp_path / "r2")).stdout
    assert "restored 3 files," in text and "8.0 MiB" in text, text
    one = ok(run_tv(home, "restore", "latest", tmp_path / "r3", "--include",
                    str(src / "sparse"))).stdout
    assert "restored 1 file," in one, one


def test_check_repair_counts_what_is_left_and_leaves_no_false_warning(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_bytes(os.urandom(3 * 1024 * 1024))
    home, v1 = init_vault(tmp_path)
    ok(run_tv(home, "tier", "add", tmp_path / "v2"))
    backup(home, src)
    pack = max((p for p in (v1 / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[200] ^= 0x10
    pack.write_bytes(bytes(data))

    proc = run_tv(home, "check", "--repair", "--read-data")
    assert proc.returncode == 0, describe(proc)
    assert "interrupted" not in proc.stderr, describe(proc)
    verdicts = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(v1) + ":")]
    assert verdicts and verdicts[-1].endswith("no errors (1 repaired)"), describe(proc)
    assert "error(s)" not in proc.stdout and not any(
        ln.startswith("error:") for ln in proc.stdout.splitlines()), describe(proc)

    after = run_tv(home, "check", "--read-data")
    assert after.returncode == 0, describe(after)
    assert "interrupted" not in after.stderr, describe(after)
    assert after.stdout.count("no errors") == 2, describe(after)


def test_check_repair_json_separates_repaired_from_remaining(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_bytes(os.urandom(2 * 1024 * 1024))
    home, v1 = init_vault(tmp_path)
    ok(run_tv(home, "tier", "add", tmp_path / "v2"))
    backup(home, src)
    pack = max((p for p in (v1 / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    pack.unlink()
    res = tv_json(home, "check", "--repair")
    t1 = next(t for t in res["tiers"] if t["url"] == str(v1))
    assert res["ok"] and t1["errors"] == [], res
    fixed = t1["repaired_errors"]
    assert fixed and {e["file"] for e in fixed} == {pack.relative_to(v1).as_posix()}, fixed
