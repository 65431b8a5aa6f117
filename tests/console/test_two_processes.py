"""Two ``serve`` processes on one PostgreSQL share the devices and wake each other's
long-polls (LISTEN/NOTIFY): the PostgreSQL run of the console tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.consolekit import Agent, ConsoleServer


@pytest.fixture(scope="module")
def second(request: pytest.FixtureRequest, console_database_url: str | None,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    if not console_database_url:
        pytest.skip("several serve processes share a store on PostgreSQL only")
    console: ConsoleServer = request.getfixturevalue("console")
    data: Path = tmp_path_factory.mktemp("console-b") / "data"
    other = ConsoleServer(data, database_url=console.database_url).start()
    other.api_token = console.api_token
    other.clock_file = console.clock_file
    try:
        yield other
    finally:
        other.stop()


def test_a_command_queued_through_one_process_wakes_a_poll_held_by_the_other(
        second: ConsoleServer, console: ConsoleServer) -> None:
    enrolled = console.agent(console.token("Two Ltd"), "two-1")
    on_b = Agent(second, enrolled.device_id, enrolled.credential, enrolled.interval)
    on_b.checkin()
    assert console.cli_json("device", "show", enrolled.device_id)["online"] is True
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(on_b.poll(wait=50, timeout=30)))
    t.start()
    with second.api() as c:
        while c.get("/api/v1/status").json()["long_polls"] < 1:
            assert t.is_alive()
            time.sleep(0.05)
    with console.api() as c:
        sent = c.post("/api/v1/commands", json={"devices": [enrolled.device_id],
                                                "type": "backup"}).json()
    t.join()
    assert [c["id"] for c in out[0]] == [sent[0]["id"]]
