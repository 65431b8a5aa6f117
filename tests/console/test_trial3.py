"""What the third newcomer trial found in the console, each fixed and kept fixed."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

from tests.console.consolekit import Agent, ConsoleServer, free_port, tv_console


def _name() -> str:
    return f"t3-{uuid.uuid4().hex[:8]}"


def test_serve_on_a_port_in_use_says_so_before_announcing_anything(
        console: ConsoleServer, tmp_path: Path) -> None:
    data = tmp_path / "other"
    proc = tv_console("serve", "--data", data, "--listen", f"127.0.0.1:{console.port}",
                      "--insecure-http", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{console.port}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "listening on" not in proc.stdout and "setup code" not in proc.stdout
    assert not data.exists(), "a store was made for a console that never ran"


def test_revoked_devices_are_left_out_of_a_send_to_several(console: ConsoleServer) -> None:
    tok = console.token("Trial3 Ltd")
    live, gone = Agent.enrol(console, tok, _name()), Agent.enrol(console, tok, _name())
    console.cli("device", "revoke", gone.device_id)
    proc = console.cli("command", "send", live.device_id, gone.device_id, "sync", "--json")
    assert proc.returncode == 0, proc.stderr
    sent = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(sent) == 1 and live.device_id in sent[0]
    assert "1 revoked device was left out" in proc.stderr
    alone = console.cli("command", "send", gone.device_id, "sync")
    assert alone.returncode != 0 and "is revoked" in alone.stderr


def test_a_live_device_is_found_by_the_name_a_revoked_one_had(console: ConsoleServer) -> None:
    tok, name = console.token("Trial3 Ltd"), _name()
    old = Agent.enrol(console, tok, name)
    console.cli("device", "revoke", old.device_id)
    new = Agent.enrol(console, tok, name)
    out = console.cli_json("command", "send", name, "sync")
    obj = out[0] if isinstance(out, list) else out
    assert obj["device"] == new.device_id


def test_a_parameter_given_twice_is_refused(console: ConsoleServer) -> None:
    dev = Agent.enrol(console, console.token("Trial3 Ltd"), _name())
    proc = console.cli("command", "send", dev.device_id, "backup", "set=home", "set=other")
    assert proc.returncode == 2 and "given twice" in proc.stderr, proc.stderr


def test_a_device_that_never_checked_in_counts_as_offline(console: ConsoleServer) -> None:
    dev = Agent.enrol(console, console.token("Trial3 Ltd"), _name())
    rows = console.cli_json("devices", "--status", "offline")
    assert dev.device_id in [r["id"] for r in rows]


def test_re_enrolling_without_a_name_keeps_the_device_name(console: ConsoleServer) -> None:
    tok, name = console.token("Trial3 Ltd"), _name()
    first = Agent.enrol(console, tok, name)
    body = {"token": tok, "name": "the-host", "host": "the-host", "os": "linux",
            "version": "0.2.0", "previous_device_id": first.device_id,
            "previous_credential": first.credential}
    again = Agent._send(console, "POST", "/enrol", None, body)
    assert again["device_id"] == first.device_id and again["name"] == name
    body.update(name="chosen", previous_credential=again["credential"])
    third = Agent._send(console, "POST", "/enrol", None, body)
    assert third["name"] == "chosen"   # a name asked for is taken


def test_stopping_serve_with_held_long_polls_is_quick_and_quiet(tmp_path: Path) -> None:
    server = ConsoleServer(tmp_path / "data", port=free_port()).start().bootstrap()
    try:
        agents = [Agent.enrol(server, server.token("Trial3 Ltd"), _name()) for _ in range(2)]
        threads = [threading.Thread(target=lambda a=a: _poll_quietly(a), daemon=True)
                   for a in agents]
        for t in threads:
            t.start()
        time.sleep(1.5)   # both long-polls held
        t0 = time.monotonic()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(20)
        took = time.monotonic() - t0
    finally:
        server.stop()
    assert took < 3.0, f"stopping took {took:.1f} s"
    out = server.output()
    assert "Traceback" not in out and "graceful shutdown exceeded" not in out, out


def _poll_quietly(agent: Agent) -> None:
    try:
        agent.poll(wait=50, timeout=60)
    except Exception:  # the console goes away: that is the test
        pass
