"""The console on a real PostgreSQL: migrations from an empty database, no drift between
models and migrations, and two ``serve`` processes sharing one database (devices, and
long-polls woken across processes by LISTEN/NOTIFY)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.console.hostilekit import admin, enrol_token, serve
from tests.servers.postgres import PostgresServer
from tiervault.protocol import messages as m

A = m.AGENT_PREFIX


def _tables(url: str) -> set[str]:
    eng = sa.create_engine(url)
    try:
        return set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_serve_migrates_an_empty_database_and_models_do_not_drift(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from tiervault.console.store import migrate
    from tiervault.console.store.models import Base

    url = postgres_server.create_database("empty")
    try:
        assert _tables(url) == set()
        with serve(tmp_path, url):
            pass
        assert {"devices", "sessions", "commands", "audit", "users"} <= _tables(url)
        eng = sa.create_engine(url)
        try:
            with eng.connect() as conn:
                ctx = MigrationContext.configure(conn, opts={"compare_type": True})
                head = ScriptDirectory.from_config(migrate.config(conn)).get_current_head()
                assert ctx.get_current_revision() == head
                diff = compare_metadata(ctx, Base.metadata)
        finally:
            eng.dispose()
        assert diff == [], diff
        # A second start on the migrated database changes nothing and comes up.
        with serve(tmp_path, url):
            pass
    finally:
        postgres_server.drop_database(url)


@contextlib.contextmanager
def two_consoles(root: Path, url: str) -> Iterator[tuple[str, str]]:
    """Two serve processes on one database, started at the same moment (both migrate)."""
    (root / "a").mkdir()
    (root / "b").mkdir()
    with contextlib.ExitStack() as stack:
        started: dict[str, str] = {}
        errors: list[BaseException] = []

        def start(name: str) -> None:
            try:
                started[name] = stack.enter_context(serve(root / name, url))[0]
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=start, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        yield started["a"], started["b"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory,
           postgres_url: str) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("two")
    with two_consoles(root, postgres_url) as (a, b):
        api = admin(root / "a", postgres_url)
        yield {"a": a, "b": b, "api": api, "enrol": enrol_token(b, api)}


def _enrol(base: str, token: str, name: str) -> tuple[str, str]:
    req = m.EnrolRequest(token=token, name=name, host="h", os="linux", version="1")
    r = httpx.post(f"{base}{A}/enrol", content=m.to_json(req),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text
    resp = m.parse(m.EnrolResponse, r.content)
    return resp.device_id, resp.credential


def test_two_processes_share_the_devices(shared: dict[str, Any]) -> None:
    dev_id, cred = _enrol(shared["a"], shared["enrol"], "shared-dev")
    h = {"authorization": f"Bearer {cred}"}
    api = {"authorization": f"Bearer {shared['api']}"}
    body = m.to_json(m.CheckIn(version="9.9", os="linux", host="h-through-b"))
    assert httpx.post(f"{shared['b']}{A}/checkin", content=body,
                      headers={**h, "content-type": "application/json"}).status_code == 200
    for base in (shared["a"], shared["b"]):
        dev = httpx.get(f"{base}/api/v1/devices/{dev_id}", headers=api).json()
        assert dev["version"] == "9.9" and dev["host"] == "h-through-b"
        assert dev_id in json.dumps(httpx.get(f"{base}/api/v1/devices", headers=api).json())


def test_command_queued_through_b_wakes_long_poll_held_by_a(shared: dict[str, Any]) -> None:
    dev_id, cred = _enrol(shared["a"], shared["enrol"], "woken-dev")
    h = {"authorization": f"Bearer {cred}"}
    wait = 60
    got: dict[str, Any] = {}

    def poll() -> None:
        t0 = time.monotonic()
        r = httpx.get(f"{shared['a']}{A}/commands", params={"wait": wait}, headers=h,
                      timeout=wait + 30)
        got["elapsed"] = time.monotonic() - t0
        got["response"] = r

    # The long-poll is held by A before the command exists: B's NOTIFY has to reach A.
    waiter = threading.Thread(target=poll)
    waiter.start()
    # No API tells whether a poll is held; the request is tiny and on loopback, so after
    # this pause it is. (Had it come after the command, it would be answered at once and
    # prove nothing; the bound on "elapsed" below only tells a wake-up from a time-out.)
    time.sleep(2.0)
    r = httpx.post(f"{shared['b']}/api/v1/commands",
                   json={"devices": [dev_id], "type": "backup", "params": {"set": "home"}},
                   headers={"authorization": f"Bearer {shared['api']}"}, timeout=30)
    assert r.status_code == 200, r.text
    cmd_id = r.json()[0]["id"]
    waiter.join()
    resp = got["response"]
    assert resp.status_code == 200, resp.text
    assert [c.id for c in m.parse(m.CommandBatch, resp.content).commands] == [cmd_id]
    # Woken, not answered by its own time-out: it came back before the wait ran out.
    assert got["elapsed"] < wait - 5
    shown = httpx.get(f"{shared['b']}/api/v1/commands/{cmd_id}",
                      headers={"authorization": f"Bearer {shared['api']}"}).json()
    assert shown["state"] == "delivered"

