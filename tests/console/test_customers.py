"""Customers' colour thresholds (CLI local and remote, API, page), and what the newcomer
trial found: the global --json, results on the command pages, bad ?page= values, revoking
a device with commands queued."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta

from tests.console.consolekit import ConsoleServer, session, tv_console
from tests.console.pagekit import login, post_form

BOOT = "import sys; from tiervault.cli.main import main; main(sys.argv[1:])"


def _ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


def test_thresholds_per_customer_change_the_colour(console: ConsoleServer) -> None:
    strict = console.agent(console.token("Strict Ltd"), "strict-1")
    relaxed = console.agent(console.token("Relaxed Ltd"), "relaxed-1")
    for a, sid in ((strict, "s-1@x"), (relaxed, "r-1@x")):
        a.checkin()
        a.report(session(sid, started=_ago(30), ended=_ago(30)))
    colours = {d["name"]: d["colour"] for d in console.cli_json("devices")}
    assert colours["strict-1"] == colours["relaxed-1"] == "orange"      # 30 h: 24-48 h
    out = console.cli_json("customer", "set", "Strict Ltd", "--green-hours", "4",
                           "--orange-hours", "12")
    assert (out["name"], out["green_hours"], out["orange_hours"], out["devices"]) == \
        ("Strict Ltd", 4, 12, 1)
    remote = console.cli_json("customer", "set", "Relaxed Ltd", "--green-hours", "36",
                              remote=True)
    assert (remote["green_hours"], remote["orange_hours"]) == (36, 48)
    colours = {d["name"]: d["colour"] for d in console.cli_json("devices")}
    assert colours["strict-1"] == "red" and colours["relaxed-1"] == "green"
    listed = {c["name"]: c for c in console.cli_json("customer", "list", remote=True)}
    assert listed["Strict Ltd"]["green_hours"] == 4
    assert listed == {c["name"]: c for c in console.cli_json("customer", "list")}


def test_bad_thresholds_are_refused_and_change_nothing(console: ConsoleServer) -> None:
    console.agent(console.token("Firm Ltd"), "firm-1")
    p = console.cli("customer", "set", "Firm Ltd", "--green-hours", "50", "--orange-hours", "10")
    assert p.returncode == 2 and "must not exceed" in p.stderr and "Traceback" not in p.stderr
    assert console.cli("customer", "set", "Firm Ltd").returncode == 2
    assert console.cli("customer", "set", "Nobody Ltd", "--green-hours", "5").returncode == 3
    with console.api() as c:
        r = c.post("/api/v1/customers/Firm%20Ltd/thresholds", json={"green_hours": 0})
        assert r.status_code == 422
        firm = c.get("/api/v1/customers/Firm%20Ltd").json()
    assert (firm["green_hours"], firm["orange_hours"]) == (24, 48)


def test_customers_page_sets_thresholds(console: ConsoleServer) -> None:
    console.agent(console.token("Page <b>Ltd</b>"), "page-cust-1")
    with closing(login(console)) as web:
        html = web.get("/customers").text
        assert "Page &lt;b&gt;Ltd&lt;/b&gt;" in html and "<b>Ltd</b>" not in html
        [cust] = [c for c in console.cli_json("customer", "list") if c["name"] == "Page <b>Ltd</b>"]
        action = f"/customers/{cust['id']}/thresholds"
        r = post_form(web, "/customers", action, {"green_hours": "6", "orange_hours": "20"})
        assert r.status_code in (302, 303)
        assert "green under 6 h" in web.get(r.headers["location"]).text
        r = post_form(web, "/customers", action, {"green_hours": "lots", "orange_hours": "2"})
        assert "nothing changed" in web.get(r.headers["location"]).text
    with console.api() as c:
        shown = c.get("/api/v1/customers/Page%20%3Cb%3ELtd%3C%2Fb%3E").json()
    assert (shown["green_hours"], shown["orange_hours"]) == (6, 20)


def test_global_json_flag_works_for_console_commands(console: ConsoleServer) -> None:
    p = subprocess.run([sys.executable, "-c", BOOT, "--json", "console", "customer", "list",
                        *console.local_args()], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert isinstance(json.loads(p.stdout), list)


def test_command_pages_show_result_and_session(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Result Ltd"), "result-1")
    agent.checkin()
    sent = console.cli_json("command", "send", agent.device_id, "backup", "set=home")
    [cmd] = agent.poll()
    agent.report(session("res-1@x", command_id=cmd["id"]))
    agent.update(cmd["id"], "succeeded", {"snapshot": "snap-77"}, "res-1@x")
    [listed] = console.cli_json("command", "list", "--device", agent.device_id)
    assert listed["session_id"] == "res-1@x" and listed["result"] == {"snapshot": "snap-77"}
    with closing(login(console)) as web:
        for page in ("/commands", f"/devices/{agent.device_id}"):
            html = web.get(page).text
            assert "res-1@x" in html and "snap-77" in html, page
    assert sent["id"] == cmd["id"]


def test_bad_page_numbers_show_a_page_not_an_error(console: ConsoleServer) -> None:
    console.agent(console.token("Pager Ltd"), "pager-1").checkin()
    with closing(login(console)) as web:
        for q in ("page=abc", "page=-3", "page=99", "page=1e9", "page="):
            r = web.get("/?" + q)
            assert r.status_code == 200, (q, r.status_code)
            assert "pager-1" in r.text and "page 1 of 1" in r.text, q
        r = web.get("/?colour=purple", follow_redirects=True)
        assert "offline is a badge" in r.text
        r = web.get("/devices/nothing-here")
        assert r.status_code == 404 and "<html" in r.text.lower()


def test_revoking_a_device_ends_its_queued_commands(console: ConsoleServer) -> None:
    agent = console.agent(console.token("Revoke Ltd"), "revoke-1")
    agent.checkin()
    first = console.cli_json("command", "send", agent.device_id, "check")
    agent.poll()                                           # delivered
    second = console.cli_json("command", "send", agent.device_id, "sync")
    console.cli_json("device", "revoke", agent.device_id)
    assert console.cli_json("command", "show", second["id"])["state"] == "cancelled"
    shown = console.cli_json("command", "show", first["id"])
    assert shown["state"] == "failed" and "revoked" in shown["result"]["error"]
    p = tv_console("command", "send", agent.device_id, "sync", *console.local_args())
    assert p.returncode != 0 and "revoked" in p.stderr
