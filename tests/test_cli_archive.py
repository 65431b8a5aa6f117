"""Archive marks through the CLI (issue 8 #13): marking keeps the id the user sees,
the flag is not a user tag, old vaults' ``archive`` tag still counts, and the mark
reaches the server tier by synchronization like any other file."""

from __future__ import annotations

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
    run_tv,
    tv_json,
)
from tests.test_e2e_tiers import Setup, make_setup  # noqa: F401 - a fixture

NOW = datetime.now(UTC).replace(microsecond=0)


def _snaps(home: Path) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in tv_json(home, "snapshots")}


def _vault(tmp_path: Path) -> tuple[Path, Path, Path]:
    home, vault = init_vault(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    return home, vault, src


def test_mark_and_release_keep_the_id(tmp_path: Path) -> None:
    home, vault, src = _vault(tmp_path)
    sid = backup(home, src)["snapshot_id"]
    out = ok(run_tv(home, "archive", "mark", sid[:8])).stdout
    assert out.strip() == f"snapshot {sid[:8]} is archived"
    s = _snaps(home)
    assert list(s) == [sid] and s[sid]["archived"] and "A" in s[sid]["flags"]
    assert s[sid]["tags"] == []  # the flag is not a tag
    assert (vault / "archives" / sid).is_file()
    res = tv_json(home, "archive", "release", sid[:8])  # the same id still works
    assert res["snapshot_id"] == sid and res["changed"]
    s = _snaps(home)
    assert list(s) == [sid] and not s[sid]["archived"]
    assert not (vault / "archives" / sid).exists()
    proc = run_tv(home, "archive", "release", "0000")
    assert proc.returncode == 2 and "no snapshot matches" in one_line_error(proc)


def test_a_user_tag_named_archive_is_only_a_tag(tmp_path: Path) -> None:
    home, _vault_dir, src = _vault(tmp_path)
    tagged = tv_json(home, "backup", "--tag", "archive", str(src))["snapshot_id"]
    assert not _snaps(home)[tagged]["archived"]
    ok(run_tv(home, "archive", "mark", tagged))
    ok(run_tv(home, "archive", "release", tagged))
    s = _snaps(home)
    assert s[tagged]["tags"] == ["archive"], "releasing must not remove the user's tag"
    (src / "b.txt").write_text("b")
    flagged = tv_json(home, "backup", "--archive", str(src))["snapshot_id"]
    assert _snaps(home)[flagged]["archived"] and _snaps(home)[flagged]["tags"] == []
    res = tv_json(home, "forget", "--keep-last", "1", "--keep-tag", "nothing")
    # The newest (flagged) is kept; the user-tagged one is ordinary, so it goes.
    assert {s["id"] for s in res["remove"]} == {tagged}


def test_legacy_archive_tag_counts_until_released(tmp_path: Path) -> None:
    home, vault, src = _vault(tmp_path)
    backup(home, src)
    (old,) = add_snapshots(vault, [{"time": NOW - timedelta(days=400), "tags": ["archive"],
                                    "program": "tiervault 0.1.0"}])
    assert _snaps(home)[old]["archived"]
    res = tv_json(home, "forget", "--keep-last", "1")
    assert old in {s["id"] for s in res["keep"]}
    out = ok(run_tv(home, "archive", "release", old[:8])).stdout
    assert "is no longer archived" in out and "its id is now" in out
    new = out.strip().rsplit(" ", 1)[1]
    s = {k[:8]: v for k, v in _snaps(home).items()}
    assert old[:8] not in s and not s[new]["archived"] and s[new]["tags"] == []
    assert s[new]["time"] == (NOW - timedelta(days=400)).isoformat()


def test_check_authenticates_archive_marks(tmp_path: Path) -> None:
    home, vault, src = _vault(tmp_path)
    sid = backup(home, src)["snapshot_id"]
    ok(run_tv(home, "archive", "mark", sid))
    assert tv_json(home, "check")["tiers"][0]["counts"]["archive_marks"] == 1
    mark = vault / "archives" / sid
    mark.write_bytes(b"x" + mark.read_bytes()[1:])
    proc = run_tv(home, "--json", "check")
    assert proc.returncode == 1 and f"archives/{sid}" in proc.stdout
    # Damaged, it still protects its snapshot.
    res = tv_json(home, "forget", "--keep-tag", "nothing")
    assert res["remove"] == []


@pytest.fixture
def ftp(make_setup: Any) -> Setup:  # noqa: F811 - the fixture imported above
    """A speed vault and a real FTP server tier, as test_e2e_tiers builds them."""
    s: Setup = make_setup("ftp")
    s.init()
    return s


def test_archive_mark_reaches_the_ftp_server_by_sync(ftp: Setup) -> None:
    s = ftp
    sid = s.backup()["snapshot_id"]
    s.server.kill()
    s.ok("archive", "mark", sid[:8])
    assert (s.speed / "archives" / sid).is_file()
    assert not (s.server.dir / "archives" / sid).exists()
    s.server.start()
    flags = {x["id"]: x["flags"] for x in s.json("snapshots")}
    assert flags[sid] == "AL", flags  # the mark is only on the speed vault so far
    s.ok("sync")
    assert (s.server.dir / "archives" / sid).read_bytes() == \
        (s.speed / "archives" / sid).read_bytes()
    assert {x["id"]: x["flags"] for x in s.json("snapshots")}[sid] == "A"
    s.ok("check")
    # Released while both tiers are online: gone from both.
    s.ok("archive", "release", sid[:8])
    assert not (s.server.dir / "archives" / sid).exists()
    assert not (s.speed / "archives" / sid).exists()


def test_a_mark_made_again_after_a_release_survives_sync(ftp: Setup) -> None:
    """Newcomer trial 3 (blocker): mark, release, mark again; a later offline backup
    and sync removed the mark from the server (the release's deletion was replayed),
    so with the speed vault away the snapshot was no longer archived."""
    s = ftp
    sid = s.backup()["snapshot_id"]
    s.ok("archive", "mark", sid[:8])
    s.ok("archive", "release", sid[:8])
    s.ok("archive", "mark", sid[:8])
    assert (s.server.dir / "archives" / sid).is_file()
    s.server.kill()
    s.backup()
    s.server.start()
    s.ok("sync")
    assert (s.server.dir / "archives" / sid).read_bytes() == \
        (s.speed / "archives" / sid).read_bytes()
    assert {x["id"]: x["flags"] for x in s.json("snapshots")}[sid] == "A"
    s.ok("check")
