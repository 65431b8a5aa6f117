"""Remote commands: queued, long-polled, delivered, run, finished, expired, cancelled."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.console.consolekit import Agent, AgentRefused, ConsoleServer, session

HOUR = 3600


def _poll_in_thread(agent: Agent, wait: float) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            # The client gives up well before the long-poll would end on its own: only a
            # wake-up answers in time.
            out.append(agent.poll(wait=wait, timeout=wait - 20))
        except Exception as e:  # reported by the test's assertion
            out.append(e)
    t = threading.Thread(target=run)
    t.start()
    return t, out


def _wait_until_polling(console: ConsoleServer, agent: Agent, t: threading.Thread) -> None:
    """Until the console holds the poll (so the command below must wake it)."""
    with console.api() as c:
        while c.get("/api/v1/status").json()["long_polls"] < 1:
            assert t.is_alive()
            time.sleep(0.05)


def test_a_long_poll_is_answered_at_once_when_a_command_is_queued(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("Poll Ltd"), "p1")
    agent.checkin()
    t, out = _poll_in_thread(agent, wait=50)
    _wait_until_polling(console, agent, t)
    sent = console.cli_json("command", "send", agent.device_id, "backup", "set=home",
                            remote=True)
    t.join()
    assert not isinstance(out[0], Exception), out[0]
    assert [c["id"] for c in out[0]] == [sent["id"]]
    assert out[0][0]["type"] == "backup" and out[0][0]["params"] == {"set": "home"}


def test_a_command_queued_from_the_host_cli_wakes_the_poll_too(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("Spool Ltd"), "s1")
    t, out = _poll_in_thread(agent, wait=50)
    _wait_until_polling(console, agent, t)
    sent = console.cli_json("command", "send", agent.device_id, "sync")
    t.join()
    assert not isinstance(out[0], Exception), out[0]
    assert [c["id"] for c in out[0]] == [sent["id"]]


def test_a_command_runs_through_its_states_with_result_and_session(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("States Ltd"), "st1")
    sent = console.cli_json("command", "send", "st1", "backup", "set=docs")
    assert sent["state"] == "queued" and sent["id"]
    assert agent.checkin()["commands_waiting"] is True
    [cmd] = agent.poll()
    assert console.cli_json("command", "show", cmd["id"])["state"] == "delivered"
    assert agent.update(cmd["id"], "running")["state"] == "running"
    agent.report(session("st1-1", command_id=cmd["id"]))
    ack = agent.update(cmd["id"], "succeeded", result={"snapshot": "abc"},
                       session_id="st1-1")
    assert ack == {"id": cmd["id"], "state": "succeeded"}
    shown = console.cli_json("command", "show", cmd["id"])
    assert shown["state"] == "succeeded" and shown["result"] == {"snapshot": "abc"}
    assert shown["session_id"] == "st1-1"
    assert shown["delivered"] and shown["finished"]
    # A repeated acknowledgement (the first answer was lost) changes nothing.
    assert agent.update(cmd["id"], "succeeded")["state"] == "succeeded"
    assert agent.poll() == []


def test_a_failed_command_keeps_its_result(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Failed Ltd"), "fc1")
    sent = console.cli_json("command", "send", agent.device_id, "check", "read_data=5")
    [cmd] = agent.poll()
    assert cmd["params"] == {"read_data": 5}
    agent.update(cmd["id"], "failed", result={"error": "tier offline"})
    shown = console.cli_json("command", "show", sent["id"])
    assert shown["state"] == "failed" and shown["result"] == {"error": "tier offline"}


def test_a_command_for_an_offline_device_waits_then_expires(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Expire Ltd"), "e1")
    kept = console.cli_json("command", "send", agent.device_id, "backup")
    short = console.cli_json("command", "send", agent.device_id, "upload-log")
    console.move_clock(2 * HOUR)   # upload-log lives 1 h, backup 24 h
    assert console.cli_json("command", "show", short["id"])["state"] == "expired"
    assert console.cli_json("command", "show", kept["id"])["state"] == "queued"
    console.move_clock(25 * HOUR)
    assert [c["state"] for c in console.cli_json("command", "list", "--device", "e1")] == \
        ["expired", "expired"]
    assert agent.poll() == []


def test_a_queued_command_can_be_cancelled_a_delivered_one_not(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("Cancel Ltd"), "x1")
    first = console.cli_json("command", "send", agent.device_id, "retention")
    assert console.cli_json("command", "cancel", first["id"])["state"] == "cancelled"
    assert agent.poll() == []
    second = console.cli_json("command", "send", agent.device_id, "retention")
    agent.poll()
    refused = console.cli("command", "cancel", second["id"])
    assert refused.returncode == 1 and "delivered" in refused.stderr
    with pytest.raises(AgentRefused) as e:
        agent.update(first["id"], "running")
    assert e.value.status == 409


def test_a_delivered_command_not_yet_running_is_delivered_again(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("Again Ltd"), "a1")
    sent = console.cli_json("command", "send", agent.device_id, "sync")
    assert [c["id"] for c in agent.poll()] == [sent["id"]]
    assert agent.poll() == []            # not at once: the device may be starting it
    console.move_clock(31)
    assert [c["id"] for c in agent.poll()] == [sent["id"]]
    agent.update(sent["id"], "running")
    console.move_clock(120)
    assert agent.poll() == []


def test_a_device_cannot_touch_another_devices_command(console: ConsoleServer) -> None:
    token = console.token("Foreign Ltd")
    a, b = console.agent(token, "fa"), console.agent(token, "fb")
    sent = console.cli_json("command", "send", a.device_id, "backup")
    assert b.poll() == []
    with pytest.raises(AgentRefused) as e:
        b.update(sent["id"], "succeeded")
    assert e.value.status == 404
    with pytest.raises(AgentRefused) as e:
        b.report(session("fb-1", command_id=sent["id"]))
    assert e.value.status == 403
    assert console.cli_json("command", "show", sent["id"])["state"] == "queued"


def test_one_command_to_many_devices_prints_one_object_per_device(
        console: ConsoleServer) -> None:
    token = console.token("Many Ltd")
    agents = [console.agent(token, f"m{i}") for i in range(3)]
    proc = console.cli("command", "send", *[a.device_id for a in agents], "backup",
                       "set=all", "--json")
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["device"] for o in objs] == [a.device_id for a in agents]
    assert {o["state"] for o in objs} == {"queued"}
    for a, o in zip(agents, objs, strict=True):
        assert [c["id"] for c in a.poll()] == [o["id"]]


def test_bad_command_requests_are_refused_with_their_exit_code(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("Bad Ltd"), "b1")
    assert console.cli("command", "send", agent.device_id, "explode").returncode == 2
    assert console.cli("command", "send", "no-such-device", "backup").returncode == 3
    assert console.cli("command", "show", "nope").returncode == 3
    with console.api() as c:
        r = c.post("/api/v1/commands", json={"devices": [agent.device_id], "type": "nope"})
        assert r.status_code == 400
        r = c.post("/api/v1/commands", json={"devices": [], "type": "backup"})
        assert r.status_code == 422


def test_browse_asks_the_device_and_returns_its_listing(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Browse Ltd"), "br1")
    listing = {"entries": [{"name": "<script>a.txt", "type": "file", "size": 3}]}
    answered: list[Any] = []

    def device() -> None:
        [cmd] = agent.poll(wait=40, timeout=35)
        answered.append(cmd)
        agent.update(cmd["id"], "running")
        agent.update(cmd["id"], "succeeded", result=listing)
    t = threading.Thread(target=device)
    t.start()
    with console.api() as c:
        r = c.get(f"/api/v1/devices/{agent.device_id}/browse",
                  params={"snapshot": "latest", "path": "/home"})
    t.join()
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["state"] == "succeeded" and out["result"] == listing
    assert answered[0]["type"] == "browse"
    assert answered[0]["params"] == {"snapshot": "latest", "path": "/home"}


def test_a_parameter_the_type_does_not_take_is_refused_and_nothing_is_queued(
        console: ConsoleServer) -> None:
    agent = console.agent(console.token("Typo Ltd"), "typo-1")
    for args in (("backup", "sets=home"), ("backup", "Set=home"), ("sync", "set=home")):
        p = console.cli("command", "send", agent.device_id, *args)
        assert p.returncode == 2, p.stderr
        assert "does not take" in p.stderr and "Traceback" not in p.stderr
    p = console.cli("command", "send", agent.device_id, "backup", "set")
    assert p.returncode == 2 and "needs a value: set=VALUE" in p.stderr, p.stderr
    assert console.cli_json("command", "list", "--device", agent.device_id) == []
    sent = console.cli_json("command", "send", agent.device_id, "backup", "set=home")
    assert sent["device_name"] == "typo-1"
