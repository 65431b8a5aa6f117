"""Property-based fuzz of the agent API on a real ``console serve`` process: never a 5xx.

Every route under ``AGENT_PREFIX`` gets ``EXAMPLES`` generated requests (6 routes x 200 =
1,200 per store, on SQLite and on PostgreSQL): raw bytes, arbitrary JSON, and valid
messages with one field replaced by an arbitrary JSON value, removed, or joined by an
unknown one; credentials valid, forged or missing; odd command ids and query strings.
The property is only that the console answers below 500 (and keeps no traceback in its
log); what a valid request does is tested elsewhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.console.hostilekit import Console, start_console
from tiervault.protocol import messages as m

A = m.AGENT_PREFIX
EXAMPLES = int(os.environ.get("TV_AGENT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats() | st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=20)


class State:
    """The fuzzed console, a device's live credential, and the requests sent per route."""

    def __init__(self, console: Console) -> None:
        self.console = console
        dev = console.enrol("fuzzed")
        self.device_id = dev.device_id
        self.credential = dev.credential
        self.sent: dict[str, int] = {}

    def send(self, route: str, method: str, path: str, headers: dict[str, str],
             content: bytes | None = None, params: dict[str, str] | None = None
             ) -> httpx.Response:
        self.sent[route] = self.sent.get(route, 0) + 1
        r = self.console.http.request(method, A + path, content=content, headers=headers,
                                      params=params)
        assert r.status_code < 500, (method, path, content and content[:200], r.status_code,
                                     r.text[:300])
        return r


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory,
         console_database_url: str | None) -> Iterator[State]:
    with start_console(tmp_path_factory.mktemp("fuzz"), console_database_url) as c:
        state = State(c)
        yield state
        assert "Traceback" not in c.log(), c.log()[-3000:]


def _valid(route: str, state: State) -> dict[str, Any]:
    if route == "enrol":
        return json.loads(m.to_json(m.EnrolRequest(token=state.console.enrol_token, name="f",
                                                   host="h", os="linux", version="1")))
    if route == "checkin":
        return json.loads(m.to_json(m.CheckIn(
            version="1", os="linux", host="h",
            tiers=[m.TierState(url="/v", state="online", revision=1, used_bytes=5)],
            running=m.RunningJob(kind="backup", set="home"), selected_bytes=10,
            sets=[{"name": "home", "paths": ["/home"]}])))
    if route == "sessions":
        rep = m.SessionReport(session_id="s@f", kind="backup", status="success",
                              started="2026-12-01T10:00:00+00:00", set="home",
                              errors=[m.SessionError(message="m", path="/p")])
        return json.loads(m.to_json(m.SessionBatch(reports=[rep])))
    return json.loads(m.to_json(m.CommandUpdate(state="running", result={"a": 1})))


@st.composite
def bodies(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """Garbage, arbitrary JSON, or ``valid`` with a field (maybe nested) changed."""
    kind = draw(st.sampled_from(["bytes", "json", "mutate", "mutate", "mutate", "extra"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    doc = json.loads(json.dumps(valid))
    target: Any = doc
    # Walk into a nested object/list now and then (a tier, a report, an error).
    while True:
        inner = [k for k, v in target.items() if isinstance(v, (dict, list)) and v]
        if not inner or not draw(st.booleans()):
            break
        sub = target[draw(st.sampled_from(sorted(inner)))]
        target = sub[0] if isinstance(sub, list) else sub
        if not isinstance(target, dict):
            break
    if not isinstance(target, dict) or not target:
        return json.dumps(doc).encode()
    key = draw(st.sampled_from(sorted(target)))
    if kind == "extra":
        target[draw(st.text(max_size=10))] = draw(json_values)
    elif draw(st.integers(0, 4)) == 0:
        del target[key]
    else:
        target[key] = draw(json_values)
    return json.dumps(doc).encode()


def _auth(draw: st.DrawFn, state: State) -> dict[str, str]:
    choice = draw(st.sampled_from(["good"] * 6 + ["none", "random", "mangled"]))
    h = {"content-type": draw(st.sampled_from(["application/json"] * 4 + ["text/plain", ""]))}
    if choice == "good":
        h["authorization"] = f"Bearer {state.credential}"
    elif choice == "random":
        h["authorization"] = draw(st.text(alphabet=st.characters(min_codepoint=32,
                                                                 max_codepoint=126),
                                          max_size=80).map(str.strip))   # h11 refuses the rest
    elif choice == "mangled":
        cred = state.credential
        i = draw(st.integers(0, len(cred) - 1))
        h["authorization"] = f"Bearer {cred[:i]}{draw(st.sampled_from('A_-z0'))}{cred[i + 1:]}"
    return h


@pytest.mark.parametrize("route", ["enrol", "checkin", "sessions", "command-update"])
def test_agent_posts_never_5xx(fuzz: State, route: str) -> None:
    valid = _valid(route, fuzz)

    @FUZZ
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        body = data.draw(bodies(valid))
        headers = _auth(data.draw, fuzz)
        if route == "enrol":
            headers.pop("authorization", None)
            path = "/enrol"
        elif route == "command-update":
            path = "/commands/" + data.draw(st.sampled_from(["x", "0", "%00", "..%2f..", "a" * 300])
                                            | st.text(min_size=1, max_size=30).map(_quote))
        else:
            path = f"/{route}"
        fuzz.send(route, "POST", path, headers, body)

    one()
    assert fuzz.sent[route] >= EXAMPLES


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def test_agent_long_poll_and_rotate_never_5xx(fuzz: State) -> None:
    """Query strings of the long-poll (never one that would wait) and rotation."""
    waits = (st.integers(max_value=0).map(str) | st.text(max_size=20)
             | st.sampled_from(["nan", "inf", "-inf", "1e400", "9" * 300, "0.0", "", "0x10"]))

    @FUZZ
    @given(data=st.data())
    def poll(data: st.DataObject) -> None:
        params = {"wait": data.draw(waits)}
        if data.draw(st.booleans()):
            params[data.draw(st.text(min_size=1, max_size=8))] = data.draw(st.text(max_size=8))
        fuzz.send("commands", "GET", "/commands", _auth(data.draw, fuzz), params=params)

    @FUZZ
    @given(data=st.data())
    def rotate(data: st.DataObject) -> None:
        r = fuzz.send("rotate", "POST", "/rotate", _auth(data.draw, fuzz),
                      data.draw(st.binary(max_size=100) | json_values.map(
                          lambda v: json.dumps(v).encode())))
        if r.status_code == 200:   # the old credential is gone: go on with the new one
            fuzz.credential = m.parse(m.RotateResponse, r.content).credential

    poll()
    rotate()
    assert fuzz.sent["commands"] >= EXAMPLES and fuzz.sent["rotate"] >= EXAMPLES
    total = sum(fuzz.sent.values())
    print(f"agent API fuzz: {total} requests, per route {fuzz.sent}")
