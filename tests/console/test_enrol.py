"""Enrolment: a token's uses, lifetime and revocation; the device's own credential."""

from __future__ import annotations

import json

import pytest

from tests.console.consolekit import Agent, AgentRefused, ConsoleServer, ok


def test_a_token_enrols_as_many_devices_as_its_uses_then_refuses(
        console: ConsoleServer) -> None:
    token = console.token(customer="Uses Ltd", uses=2)
    a = console.agent(token, "one")
    b = console.agent(token, "two")
    assert a.device_id != b.device_id and a.credential != b.credential
    assert a.credential.startswith("tvd_")
    with pytest.raises(AgentRefused) as e:
        console.agent(token, "three")
    assert e.value.status == 401
    assert "used up" in e.value.body
    listed = {t["customer"]: t for t in console.cli_json("token", "list")}
    assert listed["Uses Ltd"]["uses"] == 2 and listed["Uses Ltd"]["state"] == "used"
    names = {d["name"] for d in console.cli_json("devices", "--customer", "Uses Ltd")}
    assert names == {"one", "two"}


def test_an_expired_token_is_refused(console: ConsoleServer) -> None:
    token = console.token(customer="Ttl Ltd", ttl="1h")
    console.move_clock(3601)
    with pytest.raises(AgentRefused) as e:
        console.agent(token, "late")
    assert e.value.status == 401 and "expired" in e.value.body
    console.move_clock(0)
    assert console.agent(token, "on-time").device_id


def test_a_revoked_token_is_refused(console: ConsoleServer) -> None:
    out = console.cli_json("token", "create", "--customer", "Revoke Ltd", "--uses", "5")
    assert out["token"].startswith("tve_")
    assert out["token"] in out["command"] and " enrol " in out["command"]
    revoked = console.cli_json("token", "revoke", out["id"])
    assert revoked["state"] == "revoked"
    with pytest.raises(AgentRefused) as e:
        console.agent(out["token"], "nope")
    assert e.value.status == 401


def test_tokens_are_stored_hashed_and_never_listed(console: ConsoleServer) -> None:
    out = console.cli_json("token", "create", "--customer", "Hash Ltd")
    listing = ok(console.cli("token", "list", "--json")).stdout
    assert out["token"] not in listing
    db = (console.data / "console.db")
    if db.exists():
        assert out["token"].encode() not in db.read_bytes()


def test_an_unknown_or_forged_token_is_refused(console: ConsoleServer) -> None:
    for token in ("tve_" + "A" * 43, "garbage", "tvd_" + "B" * 43):
        with pytest.raises(AgentRefused) as e:
            Agent.enrol(console, token, "x")
        assert e.value.status == 401, token


def test_the_site_and_profile_come_back_at_enrolment(console: ConsoleServer,
                                                     tmp_path: object) -> None:
    from pathlib import Path

    profile = Path(str(tmp_path)) / "profile.json"
    doc = {"sets": {"home": {"paths": ["~"]}}, "tiers": ["ftp://u:s3cret@nas/{host}"]}
    profile.write_text(json.dumps(doc))
    out = console.cli_json("token", "create", "--customer", "Profile Ltd", "--site", "HQ",
                           "--profile", str(profile))
    # People and scripts never see the password the profile carries for the devices.
    listed = [t for t in console.cli_json("token", "list") if t["id"] == out["id"]]
    assert listed[0]["profile"]["tiers"] == ["ftp://u:***@nas/{host}"]
    assert "s3cret" not in json.dumps(console.cli_json("token", "list"))
    data = Agent._send(console, "POST", "/enrol", None, {
        "token": out["token"], "name": "p", "host": "p", "os": "linux", "version": "0.2.0"})
    assert data["customer"] == "Profile Ltd" and data["site"] == "HQ"
    assert data["profile"] == doc
    assert data["interval"] == console.interval


@pytest.mark.parametrize("doc", [
    {"tiers": "notalist"}, {"sets": {"x": {"paths": "/etc"}}}, {"sets": [{"name": "h"}]},
    {"tiers": ["/v/{hots}"]}, {"tiers": ["/v/{host"]}, {"colour": "red"},
    {"retention": [7]}, {"throttle": "2MB"}, {"sets": {"x": {"paths": []}}},
])
def test_a_profile_the_device_would_refuse_is_refused_at_token_create(
        console: ConsoleServer, tmp_path: object, doc: dict[str, object]) -> None:
    from pathlib import Path

    profile = Path(str(tmp_path)) / "profile.json"
    profile.write_text(json.dumps(doc))
    before = len(console.cli_json("token", "list"))
    p = console.cli("token", "create", "--customer", "Bad Profile", "--profile", str(profile))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("tiervault: error: profile: ") and "Traceback" not in p.stderr
    assert len(console.cli_json("token", "list")) == before   # no token was made
