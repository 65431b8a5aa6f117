"""``tiervault enrol`` against a real console: refusals and their exit codes, and a
daemon refusing a console whose certificate changed after enrolment until it is enrolled
again (the same device, taken by the running daemon)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_console import ConsoleProc
from tests.daemonkit import DaemonProc
from tests.helpers import init_vault, ok, one_line_error, run_tv
from tests.servers.ports import free_port

pytest.importorskip("uvicorn")


@pytest.fixture(name="console")
def console_fixture(tmp_path: Path) -> Iterator[ConsoleProc]:
    c = ConsoleProc(tmp_path / "console", 1, {})
    c.start()
    yield c
    c.kill()


def test_refusals_have_their_exit_codes(console: ConsoleProc, tmp_path: Path) -> None:
    home, _vault = init_vault(tmp_path)
    token = console.boot()["enrol"]
    wrong = "SHA256:" + "ab" * 32
    p = run_tv(home, "enrol", console.url, "--token", token, "--fingerprint", wrong)
    assert p.returncode == 4 and "not SHA256:abab" in one_line_error(p)
    p = run_tv(home, "enrol", console.url, "--token", "tve_unknown")
    assert p.returncode == 4 and "refused" in one_line_error(p)
    p = run_tv(home, "enrol", f"https://127.0.0.1:{free_port()}", "--token", token)
    assert p.returncode == 5 and "cannot reach" in one_line_error(p)
    p = run_tv(home, "enrol", "ftp://127.0.0.1", "--token", token)
    assert p.returncode == 2 and "not a console URL" in one_line_error(p)
    p = run_tv(home, "enrol", console.url, "--token", token, "--fingerprint", "12ab")
    assert p.returncode == 2 and "not a SHA-256 fingerprint" in one_line_error(p)
    assert console.api("GET", "/devices") == []          # nothing was enrolled
    assert not (home / "console.credential").exists()


def test_a_replaced_certificate_is_refused_with_one_line(console: ConsoleProc,
                                                         tmp_path: Path) -> None:
    home, _vault = init_vault(tmp_path)
    out = json.loads(ok(run_tv(home, "--json", "enrol", console.url, "--token",
                               console.boot()["enrol"])).stdout)
    assert out["fingerprint"] == console.fingerprint    # pinned on first use
    d = DaemonProc(tmp_path, home).start()
    try:
        d.wait_for(lambda: console.api("GET", "/devices")[0]["online"], 30, "a check-in")
        console.kill()
        for f in console.cert_dir.iterdir():               # serve makes a new key and
            f.unlink()                                     # certificate on its next start
        console.start()
        d.wait_for(lambda: "presents certificate" in d.log(), 30, "the refusal")
        seen = console.api("GET", "/devices")[0]["last_seen"]
        time.sleep(3)   # three more check-in intervals, each refused
        lines = [ln for ln in d.log().splitlines() if "presents certificate" in ln]
        assert len(lines) == 1, lines
        assert console.api("GET", "/devices")[0]["last_seen"] == seen   # nothing got through
        # The recovery the refusal recommends: enrol again, with the daemon left running.
        again = json.loads(ok(run_tv(home, "--json", "enrol", console.url, "--token",
                                     console.server.token("Acme"))).stdout)
        assert again["device_id"] == out["device_id"]       # the same device, not a second
        assert again["fingerprint"] == console.fingerprint != out["fingerprint"]
        d.wait_for(lambda: "enrolled again" in d.log(), 30, "the daemon taking it")
        d.wait_for(lambda: console.api("GET", "/devices")[0]["last_seen"] != seen, 30,
                   "a check-in with the new enrolment")
        assert [x["id"] for x in console.api("GET", "/devices")] == [out["device_id"]]
    finally:
        d.stop()


def test_a_profile_that_does_not_apply_writes_nothing_on_the_device(tmp_path: Path) -> None:
    # The console checks a profile's shape; a bad schedule is found by the device, which
    # then writes neither its credential nor a line of config.toml.
    c = ConsoleProc(tmp_path / "console", 1, {"sets": {"x": {
        "paths": [str(tmp_path)], "schedules": [{"cron": "not a cron"}]}}})
    c.start()
    try:
        home, _vault = init_vault(tmp_path)
        before = (home / "config.toml").read_text()
        p = run_tv(home, "enrol", c.url, "--token", c.boot()["enrol"])
        assert p.returncode == 2, p.stderr
        line = one_line_error(p)
        assert "the token's profile" in line or "schedule" in line, line
        assert "nothing was written here" in line and "revoke it there" in line
        assert not (home / "console.credential").exists()
        assert (home / "config.toml").read_text() == before
    finally:
        c.kill()
