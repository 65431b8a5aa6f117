"""A console whose store cannot be used says so in one line (no traceback), with the
documented exit code; the SQLite store is readable by its owner only; a profile's tier
templates cannot be steered to another directory by a device's name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiervault.daemon.agent.profile import tier_urls


def _console(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from tiervault.cli.main import "
                           "main; main(sys.argv[1:])", "console", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("url", "code", "words"), [
    ("nonsense", 2, "not a database URL"),
    ("mysql://u@h/db", 2, "not a database URL"),
    ("postgresql+psycopg://u:hunter2secret@127.0.0.1:1/db", 5, "cannot reach"),
])
def test_a_bad_database_url_is_one_line(tmp_path: Path, url: str, code: int,
                                        words: str) -> None:
    for args in (("devices",), ("token", "create", "--customer", "A")):
        res = _console(*args, "--data", str(tmp_path), "--database-url", url)
        assert res.returncode == code, res.stderr
        assert "Traceback" not in res.stderr and words in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "hunter2secret" not in res.stderr


def test_the_sqlite_store_is_private_in_a_shared_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    pw = tmp_path / "pw"
    pw.write_text("long enough password\n")
    res = _console("user", "add", "admin", "--data", str(data), "--password-file", str(pw))
    assert res.returncode == 0, res.stderr
    assert (data / "console.db").stat().st_mode & 0o777 == 0o600


def test_tier_templates_take_each_value_as_one_path_component() -> None:
    values = {"name": "../../etc", "host": "a/b<x>", "customer": "..", "site": "",
              "device_id": "D1"}
    urls = tier_urls({"tiers": ["/v/{name}/{host}", "ftp://h/{customer}/{site}/{device_id}"]},
                     values)
    assert urls == ["/v/..-..-etc/a-b-x-", "ftp://h/-/-/D1"]
    assert all("/../" not in u and not u.endswith("/..") for u in urls)
