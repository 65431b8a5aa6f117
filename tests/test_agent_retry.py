"""A check-in the console does not answer is retried soon, then less often (up to the
interval): a console that restarts hears from its devices within seconds."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tiervault.daemon.agent import agent as agent_mod
from tiervault.daemon.agent.agent import Agent
from tiervault.daemon.agent.client import ConsoleRefused, ConsoleUnreachable
from tiervault.protocol.messages import CheckIn


class _FaultyConsole:
    """Fails the first ``down`` check-ins with ``error``, then answers; records when."""

    def __init__(self, down: int, error: Exception) -> None:
        self.down = down
        self.error = error
        self.calls: list[float] = []
        self.answered = threading.Event()

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float | None = None, bearer: str | None = None) -> Any:
        assert (method, path) == ("POST", "/checkin")
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.down:
            raise self.error
        self.answered.set()
        return {"interval": 60, "commands_waiting": False,
                "server_time": "2026-12-03T00:00:00+00:00"}


class _Nothing:
    def pending(self) -> tuple[list[Any], None]:
        return [], None

    def advance(self, cursor: object) -> None:
        pass

    def unsent(self) -> list[Any]:
        return []


def _run(client: _FaultyConsole, interval: float, until: float) -> None:
    a = Agent(client, interval, executor=None, outbox=_Nothing(),  # type: ignore[arg-type]
              journal=_Nothing(), checkin=lambda: CheckIn("t", "linux", "h"))  # type: ignore[arg-type]
    t = threading.Thread(target=a._checkin_loop, daemon=True)
    t.start()
    client.answered.wait(until)
    a.stop()
    t.join(5)


def test_an_unreachable_console_is_retried_soon_then_backing_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_mod, "RETRY_FIRST", 0.2)
    client = _FaultyConsole(4, ConsoleUnreachable("the console at x did not answer"))
    _run(client, interval=1.0, until=10)
    assert len(client.calls) == 5 and client.answered.is_set()
    gaps = [b - a for a, b in zip(client.calls, client.calls[1:], strict=False)]
    # 0.2, 0.4, 0.8, then capped at the interval (1.0)
    for gap, want in zip(gaps, (0.2, 0.4, 0.8, 1.0), strict=True):
        assert want - 0.05 <= gap <= want + 0.5, gaps


def test_a_refused_check_in_waits_the_whole_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_mod, "RETRY_FIRST", 0.1)
    client = _FaultyConsole(1, ConsoleRefused("the console refused the request (401: x)"))
    _run(client, interval=1.5, until=5)
    assert len(client.calls) == 2
    assert client.calls[1] - client.calls[0] >= 1.4   # no hammering with a bad credential


class _FaultyPoll:
    """Fails the first ``down`` long-polls, then answers with no commands; records the
    ``wait`` each poll asked for."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.waits: list[float] = []
        self.calls: list[float] = []
        self.answered = threading.Event()

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float | None = None, bearer: str | None = None) -> Any:
        assert method == "GET" and path.startswith("/commands?wait=")
        self.waits.append(float(path.split("=", 1)[1]))
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.down:
            raise ConsoleUnreachable("the console at x did not answer")
        self.answered.set()
        return {"commands": []}


def test_a_console_back_after_failed_polls_is_known_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Newcomer trial 3: after a console restart the commands channel said it worked
    again only a whole long-poll (50 s) later, and the retry came after 10 s."""
    monkeypatch.setattr(agent_mod, "POLL_RETRY_MAX", 0.3)
    client = _FaultyPoll(3)
    a = Agent(client, 60, executor=None, outbox=_Nothing(),  # type: ignore[arg-type]
              journal=_Nothing(), checkin=lambda: CheckIn("t", "linux", "h"))  # type: ignore[arg-type]
    t = threading.Thread(target=a._command_loop, daemon=True)
    t.start()
    assert client.answered.wait(10)
    a.stop()
    t.join(5)
    assert client.waits[0] == agent_mod.POLL_WAIT   # a long-poll while all is well
    assert client.waits[1:4] == [0, 0, 0]           # after a failure: answered at once
    gaps = [b - a for a, b in zip(client.calls, client.calls[1:], strict=False)][:3]
    assert all(g <= 0.3 + 0.5 for g in gaps), gaps
    assert a._wake.is_set()   # the check-in thread is woken to report (and replay) now
