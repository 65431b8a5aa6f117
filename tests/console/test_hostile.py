"""Hostile input to a real console: credentials, other devices' data, replays, payloads, HTML.

One ``tiervault console serve`` process per module (on SQLite and on PostgreSQL, see
tests/console/databases.py); every answer to bad input must be a 4xx (never a 5xx),
store nothing it should not, and the server's log must hold no traceback at the end.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.console.hostilekit import Console, start_console
from tiervault.protocol import messages as m

A = m.AGENT_PREFIX
HTML_NAME = '<script>alert("dev")</script><img src=x onerror=alert(1)>&amp;'
HTML_FILE = '<b>bold</b>"quoted" & <iframe src=//evil>.txt'


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory,
            console_database_url: str | None) -> Iterator[Console]:
    with start_console(tmp_path_factory.mktemp("hostile"), console_database_url) as c:
        yield c
        assert "Traceback" not in c.log(), c.log()[-3000:]


def checkin_body(**over: Any) -> bytes:
    msg = m.CheckIn(version="1.0", os="linux", host="h",
                    tiers=[m.TierState(url="/srv/vault", state="online", revision=1)])
    data = json.loads(m.to_json(msg))
    data.update(over)
    return json.dumps(data).encode()


def report(session_id: str, **over: Any) -> dict[str, Any]:
    rep = json.loads(m.to_json(m.SessionReport(
        session_id=session_id, kind="backup", status="success",
        started="2026-12-01T10:00:00+00:00", ended="2026-12-01T10:01:00+00:00",
        set="home", files_selected=3, bytes_selected=30)))
    rep.update(over)
    return rep


def sessions_of(console: Console, device_id: str) -> list[dict[str, Any]]:
    r = console.api.get(f"/api/v1/devices/{device_id}/sessions")
    assert r.status_code == 200, r.text
    body = r.json()
    return body if isinstance(body, list) else list(body.get("sessions", body.get("items", [])))


def assert_4xx(r: httpx.Response, *codes: int) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if codes:
        assert r.status_code in codes, (r.status_code, r.text[:300])


# -- credentials ------------------------------------------------------------------------

def test_unknown_missing_and_malformed_credentials_are_refused(hostile: Console) -> None:
    dev = hostile.enrol("cred-probe")
    good = {"authorization": f"Bearer {dev.credential}"}
    assert hostile.http.post(f"{A}/checkin", content=checkin_body(), headers=good
                             ).status_code == 200
    forged = dev.credential[:-4] + ("AAAA" if not dev.credential.endswith("AAAA") else "BBBB")
    bad_headers: list[dict[str, str]] = [
        {},
        {"authorization": f"Bearer tvd_{secrets.token_urlsafe(32)}"},
        {"authorization": f"Bearer {forged}"},
        {"authorization": f"Bearer {dev.credential}x"},
        {"authorization": f"Bearer {dev.credential.removeprefix('tvd_')}"},
        {"authorization": f"Basic {dev.credential}"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer " + "A" * 100_000},
        {"authorization": f"Bearer {hostile.api_token}"},       # an API token is no device
        {"authorization": f"Bearer {hostile.enrol_token}"},     # nor is an enrolment token
    ]
    for headers in bad_headers:
        for method, path, body in (("POST", "/checkin", checkin_body()),
                                   ("POST", "/sessions", b'{"reports":[]}'),
                                   ("GET", "/commands?wait=0", None),
                                   ("POST", "/commands/x", b'{"state":"running"}'),
                                   ("POST", "/rotate", b"")):
            try:
                r = hostile.http.request(method, A + path, content=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # h11 answers an oversized header with 431 and hangs up; the reset can
                # overtake the answer. A refusal either way; the next request must work.
                assert len(str(headers)) > 65536
                continue
            assert_4xx(r, 400, 401, 403, 431)
    # A device credential opens no management route.
    assert_4xx(hostile.http.get("/api/v1/devices", headers=good), 401, 403)


def test_revoked_credential_stops_at_once(hostile: Console) -> None:
    dev = hostile.enrol("to-revoke")
    h = {"authorization": f"Bearer {dev.credential}"}
    assert hostile.http.post(f"{A}/checkin", content=checkin_body(), headers=h
                             ).status_code == 200
    r = hostile.api.post(f"/api/v1/devices/{dev.device_id}/revoke")
    assert r.status_code == 200, r.text
    assert_4xx(hostile.http.post(f"{A}/checkin", content=checkin_body(), headers=h), 401, 403)
    rep = {"reports": [report("after-revoke@x")]}
    assert_4xx(hostile.http.post(f"{A}/sessions", json=rep, headers=h), 401, 403)
    assert sessions_of(hostile, dev.device_id) == []


def test_old_credential_refused_after_rotate(hostile: Console) -> None:
    dev = hostile.enrol("to-rotate")
    h = {"authorization": f"Bearer {dev.credential}"}
    r = hostile.http.post(f"{A}/rotate", headers=h)
    assert r.status_code == 200, r.text
    new = m.parse(m.RotateResponse, r.content).credential
    assert new != dev.credential
    assert_4xx(hostile.http.post(f"{A}/checkin", content=checkin_body(), headers=h), 401, 403)
    assert hostile.http.post(f"{A}/checkin", content=checkin_body(),
                             headers={"authorization": f"Bearer {new}"}).status_code == 200


def test_used_up_or_unknown_enrolment_token_enrols_nothing(hostile: Console) -> None:
    before = hostile.api.get("/api/v1/devices").json()
    for token in ("", "tve_" + secrets.token_urlsafe(32), hostile.api_token, "x" * 5000):
        body = m.to_json(m.EnrolRequest(token=token, name="intruder", host="h", os="linux",
                                        version="1"))
        assert_4xx(hostile.http.post(f"{A}/enrol", content=body), 400, 401, 403, 422)
    assert len(hostile.api.get("/api/v1/devices").json()) == len(before)


# -- other devices' data, replays ---------------------------------------------------------

def test_device_cannot_touch_another_devices_sessions_or_commands(hostile: Console) -> None:
    a, b = hostile.enrol("victim"), hostile.enrol("attacker")
    ha = {"authorization": f"Bearer {a.credential}"}
    hb = {"authorization": f"Bearer {b.credential}"}
    r = hostile.http.post(f"{A}/sessions", json={"reports": [report("s1@victim")]}, headers=ha)
    assert r.status_code == 200, r.text
    # b sends a report with a's session id and different figures, and one naming a's device.
    evil = report("s1@victim", status="failed", files_selected=999, device_id=a.device_id)
    r = hostile.http.post(f"{A}/sessions", json={"reports": [evil]}, headers=hb)
    assert r.status_code < 500, r.text
    mine = sessions_of(hostile, a.device_id)
    assert len(mine) == 1 and mine[0]["status"] == "success", mine
    assert mine[0].get("files_selected", 3) == 3
    # A command queued for a: b can neither take it nor change its state.
    r = hostile.api.post("/api/v1/commands", json={"devices": [a.device_id], "type": "backup",
                                                   "params": {}})
    assert r.status_code == 200, r.text
    cmd_id = r.json()[0]["id"]
    batch = hostile.http.get(f"{A}/commands", params={"wait": 0}, headers=hb)
    assert batch.status_code == 200
    assert cmd_id not in batch.text
    for state in ("running", "succeeded", "failed"):
        r = hostile.http.post(f"{A}/commands/{cmd_id}", json={"state": state}, headers=hb)
        assert_4xx(r, 403, 404, 409)
    assert hostile.api.get(f"/api/v1/commands/{cmd_id}").json()["state"] == "queued"


def test_replayed_report_is_stored_once(hostile: Console) -> None:
    dev = hostile.enrol("replayer")
    h = {"authorization": f"Bearer {dev.credential}"}
    batch = {"reports": [report("r1@replayer"), report("r2@replayer", status="failed")]}
    for _ in range(3):
        r = hostile.http.post(f"{A}/sessions", json=batch, headers=h)
        assert r.status_code == 200, r.text
        assert sorted(m.parse(m.SessionAck, r.content).accepted) == ["r1@replayer",
                                                                     "r2@replayer"]
    # The same id inside one batch, twice.
    r = hostile.http.post(f"{A}/sessions", json={"reports": [report("r3@replayer")] * 2},
                          headers=h)
    assert r.status_code in (200, 400, 422), r.text
    ids = sorted(s["session_id"] for s in sessions_of(hostile, dev.device_id))
    assert ids in (["r1@replayer", "r2@replayer", "r3@replayer"],
                   ["r1@replayer", "r2@replayer"])


# -- payloads ---------------------------------------------------------------------------

def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _deep_obj(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


def test_malformed_oversized_and_deep_payloads_are_4xx(hostile: Console) -> None:
    dev = hostile.enrol("payloads")
    h = {"authorization": f"Bearer {dev.credential}", "content-type": "application/json"}
    big_text = "x" * (m.MAX_TEXT * 4)
    bodies: list[bytes] = [
        b"", b"{", b"null", b"[]", b"42", b'"str"', b"\xff\xfe\x00garbage", b"{\"a\":1}x",
        b'{"version": 1}', b'{"tiers": "no"}', b'{"tiers": [1, 2]}',
        _deep(100_000), _deep_obj(100_000), _deep(1000),
        b'{"version":"1","os":"l","host":"h","tiers":' + _deep(50_000) + b"}",
        checkin_body(host=big_text), checkin_body(version=None),
        checkin_body(tiers=[{"url": "/x", "state": "exploded"}]),
        checkin_body(tiers=[{"url": "/x", "state": "online"}] * (m.MAX_TIERS + 1)),
        checkin_body(selected_bytes="lots"), checkin_body(selected_bytes=10**40),
        checkin_body(selected_bytes=-1), checkin_body(running={"kind": [1]}),
        checkin_body(sets=[{"name": big_text}] * 1000),
        b'{"version":"1","os":"l","host":"h","x":"' + b"y" * (m.MAX_BODY + 10) + b'"}',
        b"NaN", b'{"version": NaN}', b'{"version":"1","os":"l","host":"h","tiers":[],'
        b'"selected_bytes": Infinity}',
    ]
    for body in bodies:
        r = hostile.http.post(f"{A}/checkin", content=body, headers=h)
        assert r.status_code < 500, (body[:80], r.status_code, r.text[:300])
        if body not in (checkin_body(sets=[{"name": big_text}] * 1000),):
            assert r.status_code != 200 or body.startswith(b'{"version":"1"'), body[:80]
    reports: list[Any] = [
        {"reports": "x"}, {"reports": [1]}, {"reports": [report("")]},
        {"reports": [report("k@x", kind="nuke")]}, {"reports": [report("s@x", status="?")]},
        {"reports": [report("t@x", started="yesterday")]},
        {"reports": [report("e@x", errors=[{"message": "m"}] * (m.MAX_ERRORS + 1))]},
        {"reports": [report(f"b{i}@x") for i in range(m.MAX_BATCH + 1)]},
        {"reports": [report("big@x", errors=[{"message": big_text}])]},
        {"reports": [report("n@x", files_selected=-5)]},
        {"reports": [report("n2@x", bytes_sent=10**30)]},
        {"reports": [report("f@x", tiers_received=[[[]]])]},
        {"reports": [report("x" * 100_000)]},
    ]
    for body in reports:
        r = hostile.http.post(f"{A}/sessions", json=body, headers=h)
        assert_4xx(r)
    for body in (_deep(100_000), b"{" * 10, b'{"reports":' + _deep(90_000) + b"}"):
        assert_4xx(hostile.http.post(f"{A}/sessions", content=body, headers=h))
    assert sessions_of(hostile, dev.device_id) == []
    # Over MAX_BODY, announced or streamed without a length: 413 (or 400), never read whole.
    huge = b'{"reports":[' + b" " * (m.MAX_BODY * 2) + b"]}"
    assert_4xx(hostile.http.post(f"{A}/sessions", content=huge, headers=h), 400, 413)

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    assert_4xx(hostile.http.post(f"{A}/sessions", content=chunks(), headers=h), 400, 413)
    for q in ("wait=-1", "wait=abc", "wait=1e400", "wait=" + "9" * 400, "wait=nan"):
        assert_4xx(hostile.http.get(f"{A}/commands?{q}", headers=h))
    for body in (b"{", b'{"state":"exploded"}', _deep(100_000), b'{"state":"running",'
                 b'"result":' + _deep(10_000) + b"}"):
        assert_4xx(hostile.http.post(f"{A}/commands/nope", content=body, headers=h))


# -- HTML -------------------------------------------------------------------------------

def test_html_in_names_and_files_stored_verbatim_and_escaped(hostile: Console) -> None:
    dev = hostile.enrol(HTML_NAME)
    h = {"authorization": f"Bearer {dev.credential}"}
    body = checkin_body(host=HTML_NAME, tiers=[{"url": "/srv/<b>v</b>", "state": "online"}])
    assert hostile.http.post(f"{A}/checkin", content=body, headers=h).status_code == 200
    rep = report("html@x", status="failed", errors=[{"message": HTML_FILE, "path": HTML_FILE}])
    assert hostile.http.post(f"{A}/sessions", json={"reports": [rep]},
                             headers=h).status_code == 200
    shown = hostile.api.get(f"/api/v1/devices/{dev.device_id}").json()
    assert shown["name"] == HTML_NAME
    (stored,) = sessions_of(hostile, dev.device_id)
    assert [(e["message"], e["path"]) for e in stored["errors"]] == [(HTML_FILE, HTML_FILE)]
    pages = hostile.pages(f"/devices/{dev.device_id}", "/")
    if not pages:
        pytest.skip("the console has no pages to log in to yet")
    for text in pages:
        assert "<script>alert(" not in text
        assert "<iframe src=//evil>" not in text
        assert "onerror=alert(1)>" not in text.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert any("&lt;script&gt;" in t for t in pages), "the device's name is not on its pages"


def test_nul_characters_anywhere_are_4xx(hostile: Console) -> None:
    """PostgreSQL cannot store NUL in text: every way of sending one is refused up front."""
    dev = hostile.enrol("nul-probe")
    h = {"authorization": f"Bearer {dev.credential}"}
    nul = "a\x00b"
    enrol = json.loads(m.to_json(m.EnrolRequest(token=hostile.enrol_token, name="n", host="h",
                                                os="linux", version="1")))
    for key in ("name", "host", "os", "version", "token"):
        assert_4xx(hostile.http.post(f"{A}/enrol", json={**enrol, key: nul}))
    tier = {"url": "/v", "state": "online"}
    for over in ({"host": nul}, {"os": nul}, {"version": nul},
                 {"tiers": [{**tier, "url": nul}]}, {"tiers": [{**tier, "last_online": nul}]},
                 {"running": {"kind": "backup", "set": nul}}, {"sets": [{nul: 1}]},
                 {"sets": [{"name": nul}]}):
        assert_4xx(hostile.http.post(f"{A}/checkin", content=checkin_body(**over), headers=h))
    for over in ({"session_id": nul}, {"set": nul}, {"snapshot": nul}, {"flags": nul},
                 {"started": nul}, {"ended": nul}, {"tiers_received": [nul]},
                 {"errors": [{"message": nul}]}, {"errors": [{"message": "m", "path": nul}]},
                 {"command_id": nul}):
        body = {"reports": [{**report("nul@x"), **over}]}
        assert_4xx(hostile.http.post(f"{A}/sessions", json=body, headers=h))
    assert sessions_of(hostile, dev.device_id) == []
    for body in ({"state": "running", "result": {nul: 1}},
                 {"state": "running", "result": {"k": nul}},
                 {"state": "failed", "session_id": nul}):
        assert_4xx(hostile.http.post(f"{A}/commands/x", json=body, headers=h))
    for path in (f"{A}/commands/a%00b", "/api/v1/devices/a%00b", "/api/v1/commands/a%00b",
                 "/api/v1/devices/a%00b/sessions", "/api/v1/devices?q=a%00b",
                 "/api/v1/devices?customer=a%00b", "/api/v1/commands?device=a%00b"):
        client = hostile.http if path.startswith(A) else hostile.api
        method = "POST" if path.startswith(A) else "GET"
        r = client.request(method, path, headers=h if path.startswith(A) else None,
                           json={"state": "running"} if method == "POST" else None)
        assert_4xx(r)
    r = hostile.api.post("/api/v1/commands", json={"devices": [nul], "type": "backup",
                                                   "params": {}})
    assert_4xx(r)
    r = hostile.api.post("/api/v1/commands", json={"devices": [dev.device_id],
                                                   "type": "backup", "params": {nul: nul}})
    assert_4xx(r)
    r = hostile.api.post("/api/v1/tokens", json={"customer": nul})
    assert_4xx(r)
