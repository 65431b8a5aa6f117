"""The CLI's JSON contract, remote --url mode giving the same objects, and exit codes."""

from __future__ import annotations

import json
import sys

from tests.console.consolekit import ConsoleServer, free_port, ok, session, tv_console

DEVICE_KEYS = {"id", "name", "customer", "site", "colour", "online", "last_seen",
               "last_success", "last_status", "tiers", "os", "version", "host",
               "selected_bytes", "used_bytes", "last_errors", "running"}


def test_devices_json_has_the_promised_fields(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Contract Ltd", site="Main"), "contract-1")
    agent.checkin(tiers=[{"url": "sftp://u:pw@h/v", "state": "offline", "revision": 2}])
    agent.report(session("contract-1-1"))
    [dev] = console.cli_json("devices", "--customer", "Contract Ltd")
    assert set(dev) >= DEVICE_KEYS
    assert dev["customer"] == "Contract Ltd" and dev["site"] == "Main"
    assert dev["colour"] in ("green", "orange", "red", "blue", "none")
    assert isinstance(dev["online"], bool)
    assert dev["last_success"].endswith("+00:00") and dev["last_seen"].endswith("+00:00")
    assert dev["tiers"][0]["url"] == "sftp://u@h/v"
    assert {"url", "state", "revision"} <= set(dev["tiers"][0])
    with console.api() as c:
        api_rows = c.get("/api/v1/devices", params={"customer": "Contract Ltd"}).json()
    assert api_rows == [dev]


def test_remote_mode_prints_what_local_mode_prints(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Remote Ltd"), "remote-1")
    agent.checkin()
    local = console.cli_json("devices", "--customer", "Remote Ltd")
    remote = console.cli_json("devices", "--customer", "Remote Ltd", remote=True)
    assert local == remote
    sent = console.cli_json("command", "send", agent.device_id, "backup", "set=x",
                            remote=True)
    assert {"id", "state"} <= set(sent) and sent["state"] == "queued"
    shown_local = console.cli_json("command", "show", sent["id"])
    shown_remote = console.cli_json("command", "show", sent["id"], remote=True)
    assert shown_local == shown_remote
    assert {"result", "session_id"} <= set(shown_remote)
    env = {"TIERVAULT_CONSOLE_URL": console.url, "TIERVAULT_CONSOLE_TOKEN": console.api_token}
    by_env = json.loads(ok(tv_console("command", "list", "--device", agent.device_id,
                                      "--json", env=env)).stdout)
    assert [c["id"] for c in by_env] == [sent["id"]]


def test_tokens_and_users_work_remotely(console: ConsoleServer, tmp_path: object) -> None:
    from pathlib import Path

    made = console.cli_json("token", "create", "--customer", "Remote Tok", "--ttl", "2h",
                            remote=True)
    assert made["token"].startswith("tve_") and made["state"] == "valid"
    assert made["id"] in {t["id"] for t in console.cli_json("token", "list", remote=True)}
    pw = Path(str(tmp_path)) / "pw"
    pw.write_text("another password\n")
    assert console.cli_json("user", "add", "second", "--password-file", str(pw),
                            remote=True)["name"] == "second"
    api = console.cli_json("api-token", "create", "second", remote=True)
    assert api["token"].startswith("tva_") and api["user"] == "second"
    text = console.cli("api-token", "create", "second")
    assert text.returncode == 0 and text.stdout.strip().startswith("tva_")
    assert len(text.stdout.split()) == 1             # TOKEN=$(...) gets the token alone
    assert "api-token revoke" in text.stderr         # and the id it is revoked by


def test_an_explicit_data_dir_wins_over_the_console_url_of_the_environment(
        console: ConsoleServer) -> None:
    env = {"TIERVAULT_CONSOLE_URL": f"http://127.0.0.1:{free_port()}"}
    local = console.cli("devices", env=env)
    assert local.returncode == 0, local.stderr
    both = console.cli("devices", "--url", console.url, env=env)
    assert both.returncode == 2 and "not both" in both.stderr


def test_exit_codes(console: ConsoleServer) -> None:
    assert console.cli("device", "show", "nothing-here").returncode == 3
    bad = tv_console("devices", "--url", console.url, "--token", "tva_" + "x" * 43)
    assert bad.returncode == 4 and "Traceback" not in bad.stderr
    closed = tv_console("devices", "--url", f"http://127.0.0.1:{free_port()}", "--token",
                        "tva_x")
    assert closed.returncode == 5 and len(closed.stderr.strip().splitlines()) == 1
    assert tv_console("devices").returncode == 2
    assert console.cli("token", "create", "--customer", "X", "--ttl", "soon").returncode == 2
    json_err = console.cli("device", "show", "nothing-here", "--json")
    err = json.loads(json_err.stderr)
    assert err["exit_code"] == 3 and "nothing-here" in err["message"]


def test_devices_text_output_escapes_control_characters(console: ConsoleServer) -> None:
    console.agent(console.token("Text Ltd"), "evil\x1b[31mname")
    out = ok(console.cli("devices", "--customer", "Text Ltd")).stdout
    assert "\x1b" not in out and "evil" in out


def test_paging_filters_and_sorting(console: ConsoleServer) -> None:
    token = console.token("Paging Ltd", uses=5)
    for i in range(5):
        console.agent(token, f"page-{i}")
    with console.api() as c:
        r = c.get("/api/v1/devices", params={"customer": "Paging Ltd", "per_page": 2,
                                             "page": 2, "sort": "-name"})
        assert r.headers["X-Total-Count"] == "5"
        assert [d["name"] for d in r.json()] == ["page-2", "page-1"]
        assert c.get("/api/v1/devices", params={"q": "PAGE-3"}).json()[0]["name"] == "page-3"
        assert c.get("/api/v1/devices", params={"sort": "nope"}).status_code == 400
        counts = c.get("/api/v1/devices/counts").json()
    assert set(counts) == {"green", "orange", "red", "blue", "none", "offline"}


def test_the_console_group_names_the_extra_when_it_is_missing() -> None:
    import subprocess

    code = ("import sys; sys.modules['fastapi'] = None; "
            "from tiervault.cli.main import main; main(['console', 'devices'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == \
        "tiervault: error: the console needs: pip install 'tiervault[console]'"
