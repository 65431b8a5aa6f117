"""Tier management through the CLI: numbers everywhere, `sync` exit codes, lost tiers,
messages that name a tier once, and an S3 tier whose bucket vanished."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import (
    describe,
    init_vault,
    ok,
    one_line_error,
    run_tv,
    stderr_lines,
    tv_json,
)


def _two_tiers(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    home, a = init_vault(tmp_path, "a")
    b = tmp_path / "b"
    ok(run_tv(home, "tier", "add", b))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("one")
    ok(run_tv(home, "backup", src))
    return home, a, b, src


def test_sync_with_every_tier_offline_exits_5(tmp_path: Path) -> None:
    home, a, b, _src = _two_tiers(tmp_path)
    a.rename(tmp_path / "a.off")
    b.rename(tmp_path / "b.off")
    p = run_tv(home, "sync")
    assert p.returncode == 5, describe(p)
    assert "nothing was synchronized" in stderr_lines(p)[-1], describe(p)


def test_sync_of_a_stale_tier_without_a_source_exits_5(tmp_path: Path) -> None:
    home, a, b, src = _two_tiers(tmp_path)
    b.rename(tmp_path / "b.off")
    (src / "g.txt").write_text("two")
    ok(run_tv(home, "backup", src, "--no-sync"))  # b misses this write
    a.rename(tmp_path / "a.off")
    (tmp_path / "b.off").rename(b)  # b is back, behind; a (the source) is away
    p = run_tv(home, "sync")
    assert p.returncode == 5, describe(p)
    assert "no tier at the max revision is reachable" in stderr_lines(p)[-1], describe(p)
    (tmp_path / "a.off").rename(a)
    ok(run_tv(home, "sync"))
    rows = tv_json(home, "tiers")
    assert [r["state"] for r in rows] == ["online", "online"], rows


def test_tier_numbers_are_accepted_everywhere(tmp_path: Path) -> None:
    home, a, b, _src = _two_tiers(tmp_path)
    ok(run_tv(home, "check", "--tier", "2"))
    p = run_tv(home, "tier", "remove", "3")
    assert p.returncode == 2 and "not a tier" in one_line_error(p), describe(p)
    a.rename(tmp_path / "a.off")
    ok(run_tv(home, "tier", "lost", "1", "--dry-run"))
    res = tv_json(home, "tier", "lost", "1")
    assert res["tier"] == str(a) and res["authoritative_tier"] == str(b)
    rows = tv_json(home, "tiers")
    assert rows[0]["state"] == "lost" and rows[0]["lost"] is True, rows
    p = ok(run_tv(home, "tiers"))
    assert p.stdout.splitlines()[0].startswith(f"1. {a}: lost,"), p.stdout
    res = tv_json(home, "tier", "remove", "1")
    assert res["url"] == str(a) and res["removed"] is True
    assert [r["url"] for r in tv_json(home, "tiers")] == [str(b)]


def test_messages_name_an_unplugged_tier_once(tmp_path: Path) -> None:
    home, a, b, src = _two_tiers(tmp_path)
    a.rename(tmp_path / "a.off")
    outputs = [run_tv(home, "tiers"), run_tv(home, "snapshots"), run_tv(home, "sync"),
               run_tv(home, "backup", src)]
    b.rename(tmp_path / "b.off")
    outputs.append(run_tv(home, "--json", "snapshots"))
    outputs.append(run_tv(home, "sync"))
    said = "".join(p.stdout + p.stderr for p in outputs)
    assert "vault directory is not there" in said, said
    for path in (a, b):
        assert not re.search(re.escape(f"{path}: {path}:"), said), said
        assert not re.search(re.escape(f"{path} is offline: {path}:"), said), said


def test_s3_tier_whose_bucket_vanished_says_how_to_re_add_it(tmp_path: Path) -> None:
    import boto3

    from tests.servers.s3_server import ACCESS_KEY, REGION, SECRET_KEY, MotoServerProcess

    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with MotoServerProcess() as s3:
        home = tmp_path / "home"
        url = s3.url("tvbucket", "vault")
        ok(run_tv(home, "init", tmp_path / "speed", url, env=env))
        client = boto3.client("s3", endpoint_url=s3.endpoint, region_name=REGION,
                              aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        for obj in client.list_objects_v2(Bucket="tvbucket").get("Contents", []):
            client.delete_object(Bucket="tvbucket", Key=obj["Key"])
        client.delete_bucket(Bucket="tvbucket")
        rows = tv_json(home, "tiers", env=env)
        err = rows[1]["error"]
        assert rows[1]["state"] == "offline", rows
        assert "the vault is gone from this tier" in err and "tier remove" in err \
            and "tier add" in err, err
        # The advice works: remove and add again refills the tier.
        ok(run_tv(home, "tier", "remove", "2", env=env))
        ok(run_tv(home, "tier", "add", url, env=env))
        rows = tv_json(home, "tiers", env=env)
        assert [r["state"] for r in rows] == ["online", "online"], rows
