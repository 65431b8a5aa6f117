"""Every command type, sent through a real console to one real daemon, carried out with
the daemon's and the CLI's own operations."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_console import ConsoleProc
from tests.daemonkit import DaemonProc
from tests.helpers import init_vault, ok, run_tv

pytest.importorskip("uvicorn")


class One:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.src = tmp / "src"
        self.src.mkdir()
        (self.src / "a.txt").write_text("alpha\n" * 100)
        (self.src / "<b onmouseover=x>bold.txt").write_text("beta\n")
        self.console = ConsoleProc(tmp / "console", 1, {"sets": {"docs": {
            "paths": [str(self.src)], "retention": {"keep_last": 2}}}})
        self.home, _vault = init_vault(tmp)
        self.daemon = DaemonProc(tmp, self.home)
        self.dev = ""

    def send(self, ctype: str, **params: Any) -> dict[str, Any]:
        (cmd,) = self.console.api("POST", "/commands", {"devices": [self.dev], "type": ctype,
                                                        "params": params})
        return self.daemon.wait_for(  # type: ignore[no-any-return]
            lambda: (c := self.console.api("GET", f"/commands/{cmd['id']}"))["state"]
            in ("succeeded", "failed") and c, 120, f"the {ctype} command's result")


@pytest.fixture(name="one")
def one_fixture(tmp_path: Path) -> Iterator[One]:
    o = One(tmp_path)
    o.console.start()
    out = json.loads(ok(run_tv(o.home, "--json", "enrol", o.console.url, "--token",
                               o.console.boot()["enrol"])).stdout)
    o.dev = out["device_id"]
    o.daemon.start()
    try:
        yield o
    finally:
        o.daemon.stop()
        o.console.kill()


def test_every_command_type(one: One) -> None:
    o = one
    for _ in range(3):
        done = o.send("backup", set="docs")
        assert done["state"] == "succeeded", done
    assert done["result"]["sets"][0]["snapshot"]
    assert o.send("backup", set="nope")["result"]["error"].startswith("no set named 'nope'")

    listing = o.console.api("GET", f"/devices/{o.dev}/browse?snapshot=latest"
                                   f"&path={o.src}")
    assert listing["state"] == "succeeded", listing
    names = {Path(e["path"]).name for e in listing["result"]["entries"]}
    assert names == {"a.txt", "<b onmouseover=x>bold.txt"}

    target = o.tmp / "restored"
    done = o.send("restore", snapshot="latest", target=str(target),
                  paths=str(o.src / "a.txt"))
    assert done["state"] == "succeeded", done
    assert (target / str(o.src).lstrip("/") / "a.txt").read_text() == "alpha\n" * 100
    assert done["session_id"]
    o.daemon.wait_for(lambda: [s for s in o.console.api("GET", f"/devices/{o.dev}/sessions")
                               if s.get("command_id") == done["id"]
                               and s.get("kind") == "restore"], 30,
                      "the restore's session with the command id")
    again = o.send("restore", snapshot="latest", target=str(target), overwrite="never")
    assert again["state"] == "failed" and "not empty" in again["result"]["error"]

    assert o.send("check", read_data_subset="50%")["state"] == "succeeded"
    ret = o.send("retention", set="docs")
    assert ret["state"] == "succeeded", ret
    snaps = json.loads(ok(run_tv(o.home, "--json", "snapshots")).stdout)
    assert len(snaps) == 2

    assert o.send("schedule", set="docs", days="mon,tue", time="03:30")["state"] == \
        "succeeded"
    assert o.send("bandwidth", tier=1, upload="2MB")["state"] == "succeeded"
    cfg = tomllib.loads((o.home / "config.toml").read_text())
    assert cfg["sets"]["docs"]["schedules"] == [{"time": "03:30", "days": ["mon", "tue"]}]
    assert cfg["throttle"] == [{"tier": 1, "upload": "2MB"}]
    bad = o.send("schedule", set="docs", time="25:99")
    assert bad["state"] == "failed"
    assert tomllib.loads((o.home / "config.toml").read_text()) == cfg   # left as it was

    assert o.send("sync")["state"] == "succeeded"
    assert o.send("cancel")["state"] == "succeeded"
    log = o.send("upload-log")
    assert "console agent started" in log["result"]["log"]
