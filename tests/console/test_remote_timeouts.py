"""A console that accepts TCP but never answers (hung, stopped) fails a management
command with one clear line after the short connect timeout, not a raw SSL message."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tiervault.console import remote
from tiervault.console.errors import Unreachable


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel backlog completes the TCP handshake; nobody ever reads."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_hung_console_is_reported_in_one_line(
        monkeypatch: pytest.MonkeyPatch, silent_port: int, scheme: str) -> None:
    monkeypatch.setattr(remote, "CONNECT_TIMEOUT", 0.5)
    monkeypatch.setattr(remote, "TIMEOUT", 1.0)
    ops = remote.RemoteOps(f"{scheme}://127.0.0.1:{silent_port}", "tva_x",
                           "SHA256:" + "0" * 64 if scheme == "https" else None)
    started = time.monotonic()
    with pytest.raises(Unreachable) as err:
        ops.call("GET", "/api/v1/devices")
    assert time.monotonic() - started < 5
    msg = str(err.value)
    assert "\n" not in msg and "_ssl" not in msg and "did not" in msg
    # https stalls in the handshake (connect stage); http connects, then waits for the answer
    assert (scheme == "https") == ("accept the connection" in msg)
