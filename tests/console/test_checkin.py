"""Check-ins, sessions and colours, with the console's clock moved."""

from __future__ import annotations

import pytest

from tests.console.consolekit import AgentRefused, ConsoleServer, session

HOUR = 3600


def _device(console: ConsoleServer, device_id: str) -> dict[str, object]:
    with console.api() as c:
        r = c.get(f"/api/v1/devices/{device_id}")
    assert r.status_code == 200, r.text
    data: dict[str, object] = r.json()
    return data


def test_a_check_in_is_shown_with_its_tiers_and_no_password(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Checkin Ltd"), "desk")
    ans = agent.checkin(tiers=[
        {"url": "/home/u/vault", "state": "online", "revision": 4, "role": "speed-vault",
         "used_bytes": 1000},
        {"url": "ftp://bob:s3cret@ftp.example/v", "state": "syncing", "revision": 3,
         "sync_percent": 40.0, "role": "server", "used_bytes": 900}],
        selected_bytes=5000)
    assert ans["interval"] == console.interval and ans["commands_waiting"] is False
    dev = _device(console, agent.device_id)
    assert dev["online"] is True and dev["colour"] == "none"
    tiers = dev["tiers"]
    assert isinstance(tiers, list)
    assert [t["url"] for t in tiers] == ["/home/u/vault", "ftp://bob@ftp.example/v"]
    assert [t["state"] for t in tiers] == ["online", "syncing"]
    assert tiers[1]["sync_percent"] == 40.0 and tiers[0]["revision"] == 4
    assert dev["selected_bytes"] == 5000 and dev["used_bytes"] == 1000


def test_colours_follow_the_last_success_as_the_clock_moves(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Colour Ltd"), "c1")
    agent.checkin()
    agent.report(session("c1-1"))
    assert _device(console, agent.device_id)["colour"] == "green"
    console.move_clock(25 * HOUR)
    agent.checkin()   # still online: only the backup's age changes the colour
    assert _device(console, agent.device_id)["colour"] == "orange"
    console.move_clock(49 * HOUR)
    agent.checkin()
    dev = _device(console, agent.device_id)
    assert dev["colour"] == "red" and dev["online"] is True
    by_colour = {d["id"]: d["colour"] for d in console.cli_json("devices", "--colour", "red")}
    assert by_colour.get(agent.device_id) == "red"


def test_a_failed_last_session_is_red_and_a_running_job_blue(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Fail Ltd"), "f1")
    agent.checkin()
    agent.report(session("f1-1"), session("f1-2", status="failed",
                                          errors=[{"message": "disk <b>full</b>"}]))
    dev = _device(console, agent.device_id)
    assert dev["colour"] == "red" and dev["last_status"] == "failed"
    assert dev["last_errors"] == [{"message": "disk <b>full</b>", "path": None}]
    agent.checkin(running={"kind": "backup", "set": "home", "files": 3, "bytes": 10})
    assert _device(console, agent.device_id)["colour"] == "blue"


def test_a_device_is_offline_after_five_intervals_without_a_check_in(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("Offline Ltd"), "o1")
    agent.checkin()
    agent.report(session("o1-1"))
    console.move_clock(4 * console.interval)
    assert _device(console, agent.device_id)["online"] is True
    console.move_clock(5 * console.interval + 1)
    dev = _device(console, agent.device_id)
    assert dev["online"] is False and dev["colour"] == "green"   # a badge, not a colour
    ids = {d["id"] for d in console.cli_json("devices", "--status", "offline")}
    assert agent.device_id in ids


def test_a_session_report_is_idempotent(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Idem Ltd"), "i1")
    first = session("i1-1", bytes_sent=10)
    assert agent.report(first) == ["i1-1"]
    assert agent.report(first, session("i1-2")) == ["i1-1", "i1-2"]
    with console.api() as c:
        sessions = c.get(f"/api/v1/devices/{agent.device_id}/sessions").json()
    assert sorted(s["session_id"] for s in sessions) == ["i1-1", "i1-2"]


def test_a_device_cannot_report_another_devices_session(console: ConsoleServer) -> None:
    token = console.token("Other Ltd")
    a, b = console.agent(token, "a"), console.agent(token, "b")
    a.report(session("shared-1"))
    with pytest.raises(AgentRefused) as e:
        b.report(session("shared-1", status="failed"))
    assert e.value.status == 409
    with console.api() as c:
        assert c.get(f"/api/v1/devices/{b.device_id}/sessions").json() == []
        only = c.get(f"/api/v1/devices/{a.device_id}/sessions").json()
    assert [s["status"] for s in only] == ["success"]


def test_revoke_stops_the_credential_at_once(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Revoked Ltd"), "r1")
    agent.checkin()
    out = console.cli_json("device", "revoke", agent.device_id)
    assert out["id"] == agent.device_id
    for call in (agent.checkin, lambda: agent.poll(0), lambda: agent.report(session("r"))):
        with pytest.raises(AgentRefused) as e:
            call()
        assert e.value.status == 401
    again = console.cli("device", "revoke", agent.device_id)
    assert again.returncode == 0 and "was already revoked" in again.stdout
    with console.api() as c:
        assert c.get(f"/api/v1/devices/{agent.device_id}").json()["revoked"] is True


def test_rotate_gives_a_new_credential_and_ends_the_old_one(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Rotate Ltd"), "k1")
    assert agent.checkin()["rotate"] is False
    console.cli_json("device", "rotate", agent.device_id)
    assert agent.checkin()["rotate"] is True
    old = agent.credential
    agent.credential = agent.call("POST", "/rotate")["credential"]
    assert agent.credential != old and agent.credential.startswith("tvd_")
    assert agent.checkin()["rotate"] is False
    agent.credential = old
    with pytest.raises(AgentRefused) as e:
        agent.checkin()
    assert e.value.status == 401


def test_an_unknown_or_missing_credential_is_refused(console: ConsoleServer) -> None:
    with console.http("tvd_" + "x" * 43) as c:
        r = c.post("/api/agent/v1/checkin", content=b'{"version":"1","os":"l","host":"h"}')
    assert r.status_code == 401
    with console.http() as c:
        r = c.get("/api/agent/v1/commands")
    assert r.status_code == 401
