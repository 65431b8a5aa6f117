"""HTTPS by default: a self-signed certificate whose fingerprint serve prints and a
client pins."""

from __future__ import annotations

import pytest

from tests.console.consolekit import ConsoleServer, free_port, tls_fingerprint, tv_console


def test_serve_prints_the_fingerprint_of_the_certificate_it_presents(
        console_tls: ConsoleServer) -> None:
    assert console_tls.fingerprint is not None
    assert console_tls.fingerprint == tls_fingerprint("127.0.0.1", console_tls.port)
    assert (console_tls.data / "tls" / "key.pem").stat().st_mode & 0o077 == 0


def test_remote_mode_pins_the_fingerprint(console_tls: ConsoleServer) -> None:
    agent = console_tls.agent(console_tls.token("Tls Ltd"), "tls-1")
    agent.checkin()
    rows = console_tls.cli_json("devices", "--customer", "Tls Ltd", remote=True)
    assert [d["id"] for d in rows] == [agent.device_id]
    wrong = "SHA256:" + "0" * 64
    proc = tv_console("devices", "--url", console_tls.url, "--token", console_tls.api_token,
                      "--fingerprint", wrong)
    assert proc.returncode == 4 and "pinned" in proc.stderr
    unpinned = tv_console("devices", "--url", console_tls.url, "--token",
                          console_tls.api_token)
    assert unpinned.returncode == 4 and "fingerprint" in unpinned.stderr


def test_the_setup_code_is_printed_until_a_user_exists(console_tls: ConsoleServer) -> None:
    assert console_tls.setup_code   # printed at start: no user existed then
    assert "setup code" in console_tls.output()


def test_a_second_serve_on_the_same_sqlite_data_dir_is_refused(
        console_tls: ConsoleServer) -> None:
    if console_tls.database_url:
        pytest.skip("PostgreSQL: several serve processes are the point")
    before = (console_tls.data / "serve.json").read_text()
    proc = tv_console("serve", "--data", console_tls.data, "--listen",
                      f"127.0.0.1:{free_port()}", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "another console serve is running" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (console_tls.data / "serve.json").read_text() == before   # its URL is kept
