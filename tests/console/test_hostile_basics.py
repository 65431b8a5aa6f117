"""Hostile input to the agent and management APIs: refused with a 4xx, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.console.consolekit import Agent, ConsoleServer, session

AGENT = "/api/agent/v1"


@pytest.fixture(scope="module")
def agent(console: ConsoleServer) -> Agent:
    return console.agent(console.token("Hostile Ltd"), "hostile-1")


BAD_CHECKINS = [
    b"", b"null", b"[]", b"{", b"\xff\xfe", b"[" * 50_000 + b"]" * 50_000,
    json.dumps({"version": 1, "os": "l", "host": "h"}).encode(),
    json.dumps({"version": "1", "os": "l", "host": "h", "running": []}).encode(),
    json.dumps({"version": "1", "os": "l", "host": "h", "running": "x"}).encode(),
    json.dumps({"version": "1", "os": "l", "host": "h", "tiers": {"url": "x"}}).encode(),
    json.dumps({"version": "1", "os": "l", "host": "h",
                "tiers": [{"url": "x", "state": "exploded"}]}).encode(),
    json.dumps({"version": "1", "os": "l", "host": "h",
                "tiers": [{"url": "x", "state": "online", "revision": 2**80}]}).encode(),
    b'{"version": "1", "os": "l", "host": "h", "tiers": [{"url": "x", "state": "online",'
    b' "sync_percent": NaN}]}',
    json.dumps({"version": "1\x00", "os": "l", "host": "h"}).encode(),
    json.dumps({"version": "1", "os": "l", "host": "h" * 10_000}).encode(),
    json.dumps({"version": "1", "os": "l", "host": "h", "sets": [[[[[[[[[1]]]]]]]]]}).encode(),
]


@pytest.mark.parametrize("body", BAD_CHECKINS, ids=range(len(BAD_CHECKINS)))
def test_bad_check_ins_are_refused(console: ConsoleServer, agent: Agent, body: bytes) -> None:
    with console.http(agent.credential) as c:
        r = c.post(f"{AGENT}/checkin", content=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


BAD_REPORTS = [
    {"reports": {"session_id": "x"}},
    {"reports": ["x"]},
    {"reports": [dict(session("b1"), kind="nope")]},
    {"reports": [dict(session("b2"), started="yesterday")]},
    {"reports": [dict(session("b3"), flags="XYZ")]},
    {"reports": [dict(session("b4"), errors=["text"])]},
    {"reports": [dict(session("b5"), errors=[{"message": "m"}] * 51)]},
    {"reports": [session(f"many-{i}") for i in range(101)]},
    {"reports": [session("dup"), session("dup")]},
    {"reports": [dict(session("b6"), files_selected=-1)]},
]


@pytest.mark.parametrize("body", BAD_REPORTS, ids=range(len(BAD_REPORTS)))
def test_bad_reports_are_refused_and_store_nothing(console: ConsoleServer, agent: Agent,
                                                   body: dict[str, object]) -> None:
    with console.http(agent.credential) as c:
        r = c.post(f"{AGENT}/sessions", content=json.dumps(body).encode())
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    with console.api() as c:
        assert c.get(f"/api/v1/devices/{agent.device_id}/sessions").json() == []


def test_an_oversized_body_is_refused_413(console: ConsoleServer, agent: Agent) -> None:
    with console.http(agent.credential) as c:
        r = c.post(f"{AGENT}/sessions", content=b" " * (2 << 20))
    assert r.status_code == 413


def test_bad_management_input_is_a_4xx(console: ConsoleServer, agent: Agent) -> None:
    with console.api() as c:
        for params in ({"page": 0}, {"per_page": 10_000}, {"colour": "purple"},
                       {"page": "x"}, {"sort": "'; DROP TABLE devices"}):
            r = c.get("/api/v1/devices", params=params)
            assert 400 <= r.status_code < 500, (params, r.status_code)
        r = c.post("/api/v1/commands", content=b"[" * 100_000,
                   headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500
        r = c.post("/api/v1/commands", json={"devices": [agent.device_id], "type": "backup",
                                             "params": {"set": [[[[[[[[1]]]]]]]]}})
        assert r.status_code == 400
    with console.http("tva_forged") as c:
        assert c.get("/api/v1/devices").status_code == 401
    with console.http() as c:
        assert c.get("/api/v1/devices").status_code == 401
