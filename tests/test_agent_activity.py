"""The agent checks in at once when a job or an idle synchronization starts or ends."""

from __future__ import annotations

from tiervault.daemon.agent.wiring import activity


class _Handle:
    def __init__(self) -> None:
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


class _Daemon:
    def __init__(self) -> None:
        self.running: object | None = None
        self._idle_handle: _Handle | None = None


def test_the_end_of_an_idle_round_is_seen_though_its_handle_stays_set() -> None:
    d = _Daemon()
    idle = activity(d)
    d._idle_handle = _Handle()
    syncing = activity(d)
    assert syncing != idle
    d._idle_handle.alive = False          # the round ended; the daemon keeps the handle
    ended = activity(d)
    assert ended != syncing
    assert activity(d) == ended           # nothing changed since: no new check-in
    d.running = object()
    assert activity(d) != ended
