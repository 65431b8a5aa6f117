"""The console's pages against a real ``serve`` process: setup, login, the dashboard, a
device page, commands, browsing, tokens; escaping of hostile names, the CSP header, CSRF,
and no URL outside the console in any page or static file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.consolekit import Agent, ConsoleServer, session
from tests.console.pagekit import HOSTILE, csrf_of, login, post_form

STATIC = Path(__file__).resolve().parents[2] / "src/tiervault/console/web/static"
URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.\-\[\]:]+")
HTTP_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")
LICENCE_COMMENT = re.compile(r"/\*!.*?\*/", re.S)


@pytest.fixture(scope="module")
def fleet(console: ConsoleServer) -> dict[str, Agent]:
    """Devices with hostile names: one green, one whose last backup failed, one offline."""
    token = console.token(customer=f"Cust {HOSTILE}", uses=10)
    good = console.agent(token, name=f"good {HOSTILE}")
    bad = console.agent(token, name="bad-device")
    quiet = console.agent(token, name="quiet-device")
    tiers = [{"url": "/vault", "state": "online", "revision": 3, "role": "speed-vault"},
             {"url": f"ftp://srv/{HOSTILE}", "state": "syncing", "revision": 2,
              "role": "server", "sync_percent": 40.0}]
    for a in (good, bad, quiet):
        a.checkin(tiers=tiers, sets=[{"name": f"home {HOSTILE}", "paths": [f"/h/{HOSTILE}"],
                                      "schedules": ["daily 02:00"]}])
    good.report(session("g1@x", snapshot=f"snap-{HOSTILE}", bytes_sent=5 << 20,
                        errors=[{"message": f"skipped {HOSTILE}", "path": f"/x/{HOSTILE}"}]))
    bad.report(session("b1@x", status="failed",
                       errors=[{"message": f"disk {HOSTILE}", "path": None}]))
    quiet.report(session("q1@x"))
    return {"good": good, "bad": bad, "quiet": quiet}


@pytest.fixture(scope="module")
def client(console: ConsoleServer, fleet: dict[str, Agent]) -> Iterator[httpx.Client]:
    """A logged-in page client."""
    c = login(console)
    yield c
    c.close()


def _external_urls(text: str, own: str, pattern: re.Pattern[str] = URL) -> list[str]:
    """Every URL in ``text`` that does not point at the console itself."""
    own_host = own.split("//", 1)[1]
    return [u for u in pattern.findall(text) if u.split("//", 1)[1] != own_host]


# -- setup, login, sessions --------------------------------------------------------------

def test_first_run_setup_needs_the_one_time_code(tmp_path: Path) -> None:
    server = ConsoleServer(tmp_path / "data").start()
    try:
        assert server.setup_code, server.output()
        with server.http() as c:
            r = c.get("/", follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/setup"
            page = c.get("/setup")
            assert "setup code" in page.text.lower()
            form = {"name": "first", "password": "a long password", "password2":
                    "a long password"}
            wrong = c.post("/setup", data={"csrf_token": csrf_of(page.text), "code": "nope",
                                           **form})
            assert wrong.status_code == 400 and "wrong setup code" in wrong.text
            no_csrf = c.post("/setup", data={"code": server.setup_code, **form})
            assert no_csrf.status_code == 403
            right = c.post("/setup", data={"csrf_token": csrf_of(wrong.text),
                                           "code": server.setup_code, **form},
                           follow_redirects=True)
            assert right.status_code == 200 and "created" in right.text
            assert c.get("/setup", follow_redirects=False).headers["location"] == "/login"
            again = c.post("/setup", data={"csrf_token": csrf_of(c.get("/login").text),
                                           "code": server.setup_code, **form})
            assert again.status_code == 400 and "set up already" in again.text
        logged = login(server, "first", "a long password")
        assert logged.get("/").status_code == 200
    finally:
        server.stop()


def test_login_cookie_is_httponly_strict_and_wrong_password_refused(
        console: ConsoleServer) -> None:
    with console.http() as c:
        assert c.get("/", follow_redirects=False).headers["location"].startswith("/login")
        page = c.get("/login")
        bad = c.post("/login", data={"csrf_token": csrf_of(page.text), "name": "admin",
                                     "password": "wrong"})
        assert bad.status_code == 401 and "wrong user name or password" in bad.text
        assert "tv_session" not in c.cookies
        r = c.post("/login", data={"csrf_token": csrf_of(bad.text), "name": "admin",
                                   "password": "console password 1"}, follow_redirects=False)
        assert r.status_code == 303
        cookie = next(v for k, v in r.headers.multi_items()
                      if k == "set-cookie" and v.startswith("tv_session="))
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        # the page after login is one of the console's, never another site
        for evil in ("//evil.example/", "/\\evil.example", "https://evil.example/"):
            c.cookies.clear()
            page = c.get("/login")
            r2 = c.post("/login", data={"csrf_token": csrf_of(page.text), "name": "admin",
                                        "password": "console password 1", "next": evil})
            assert r2.headers["location"] == "/", evil
        # a forged cookie is not a session
        c.cookies.set("tv_session", "x.9999999999.forged")
        assert c.get("/", follow_redirects=False).status_code == 303


def test_logout_needs_csrf_and_ends_the_session(console: ConsoleServer) -> None:
    c = login(console)
    assert c.post("/logout", data={}, follow_redirects=False).status_code == 403
    r = post_form(c, "/", "/logout", {})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.get("/", follow_redirects=False).status_code == 303


# -- headers and escaping ----------------------------------------------------------------

def test_csp_header_on_every_response(console: ConsoleServer, client: httpx.Client,
                                      fleet: dict[str, Agent]) -> None:
    urls = ["/", "/login", "/tokens", "/commands", f"/devices/{fleet['good'].device_id}",
            "/static/app.css", "/static/vendor/htmx/htmx.min.js", "/no-such-page",
            "/api/openapi.json", "/api/v1/devices", "/api/agent/v1/checkin"]
    for url in urls:
        for r in (client.get(url), httpx.get(console.url + url)):
            csp = r.headers.get("content-security-policy", "")
            assert "default-src 'self'" in csp, (url, r.status_code)
            assert r.headers.get("x-content-type-options") == "nosniff"


def test_hostile_names_are_escaped(client: httpx.Client, fleet: dict[str, Agent]) -> None:
    pages = {"/": client.get("/").text, "/commands": client.get("/commands").text}
    for a in fleet.values():
        pages[a.device_id] = client.get(f"/devices/{a.device_id}").text
    for where, html in pages.items():
        assert "<script>alert" not in html and "<img src=x" not in html, where
        assert "onerror=alert(1)>" not in html.replace("&gt;", ""), where
    dash = pages["/"]
    assert "good &lt;script&gt;alert(" in dash and "Cust &lt;script&gt;" in dash
    dev = pages[fleet["good"].device_id]
    for shown in ("skipped &lt;script&gt;", "home &lt;script&gt;", "ftp://srv/&lt;script&gt;",
                  "snap-&lt;script&gt;"):
        assert shown in dev, shown


def test_no_external_urls_in_pages_or_static_files(console: ConsoleServer,
                                                   client: httpx.Client,
                                                   fleet: dict[str, Agent]) -> None:
    pages = ["/", "/login", "/tokens", "/commands", f"/devices/{fleet['bad'].device_id}"]
    for url in pages:
        html = client.get(url).text
        # device data (an ftp:// tier) is text; nothing may point a browser elsewhere
        assert _external_urls(html, console.url, HTTP_URL) == [], url
        for attr in re.findall(r'(?:src|href|action)="([^"]*)"', html):
            assert attr.startswith(("/", "#", "?")), (url, attr)
    files = [p for p in STATIC.rglob("*") if p.is_file() and p.suffix in (".js", ".css",
                                                                           ".svg", ".html")]
    assert any(p.name == "htmx.min.js" for p in files) and any(
        p.name.startswith("uPlot") for p in files)
    for p in files:
        text = LICENCE_COMMENT.sub("", p.read_text(errors="replace"))
        if p.suffix == ".svg":   # the XML namespace is a name, never fetched
            text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert _external_urls(text, console.url) == [], p
        served = client.get("/static/" + p.relative_to(STATIC).as_posix())
        assert served.status_code == 200, p


# -- dashboard ---------------------------------------------------------------------------

def test_dashboard_shows_colours_counts_offline_and_bars(console: ConsoleServer,
                                                         fleet: dict[str, Agent]) -> None:
    console.move_clock(600)          # 10 min: more than 5 intervals of 60 s
    fleet["good"].checkin(tiers=[{"url": "/vault", "state": "online", "role": "speed-vault"},
                                 {"url": "ftp://srv/x", "state": "syncing", "role": "server",
                                  "sync_percent": 40.0}])
    fleet["bad"].checkin()
    c = login(console)
    html = c.get("/").text
    c.close()
    rows = {m.group(2): m.group(1) for m in re.finditer(
        r'<tr class="colour-(\w+)" data-device="([^"]+)">', html)}
    assert rows[fleet["good"].device_id] == "green"
    assert rows[fleet["bad"].device_id] == "red"
    assert rows[fleet["quiet"].device_id] == "green"
    quiet_row = html.split(f'data-device="{fleet["quiet"].device_id}"')[1].split("</tr>")[0]
    good_row = html.split(f'data-device="{fleet["good"].device_id}"')[1].split("</tr>")[0]
    assert 'class="badge offline"' in quiet_row and 'class="badge offline"' not in good_row
    assert '<i class="d-success"' in good_row and '<i class="d-failed"' in html
    counts = dict(re.findall(r'data-colour="(\w+)"><span>[^<]*</span><b>(\d+)</b>', html))
    assert counts["green"] == "2" and counts["red"] == "1"
    assert "syncing 40%" in good_row


def test_filter_search_sort_and_htmx_fragment(client: httpx.Client,
                                              fleet: dict[str, Agent]) -> None:
    red = client.get("/?colour=red").text
    assert fleet["bad"].device_id in red and fleet["good"].device_id not in red
    found = client.get("/?q=quiet").text
    assert fleet["quiet"].device_id in found and fleet["bad"].device_id not in found
    status = client.get("/?status=failed").text
    assert fleet["bad"].device_id in status and fleet["quiet"].device_id not in status
    by_name = client.get("/?sort=-name").text
    order = [m for m in re.findall(r'data-device="([^"]+)"', by_name)]
    assert order.index(fleet["quiet"].device_id) < order.index(fleet["bad"].device_id)
    frag = client.get("/?colour=red", headers={"hx-request": "true", "hx-target": "devices"})
    assert frag.text.lstrip().startswith('<div id="devices"') and "<html" not in frag.text
    paged = client.get("/?page=99").text  # past the last page: the last page, not an empty one
    assert "page 1 of 1" in paged and fleet["bad"].device_id in paged
    assert "page 1 of 1" in client.get("/?page=abc").text
    bad = client.get("/?sort=nonsense", follow_redirects=False)
    assert bad.status_code == 303 and "flash=" in bad.headers["location"]


# -- commands ----------------------------------------------------------------------------

def _commands(console: ConsoleServer, device_id: str) -> list[dict[str, object]]:
    with console.api() as api:
        r = api.get("/api/v1/commands")
        assert r.status_code == 200, r.text
        return [c for c in r.json() if c["device"] == device_id]


def test_command_form_to_many_devices_and_csrf(console: ConsoleServer, client: httpx.Client,
                                               fleet: dict[str, Agent]) -> None:
    ids = [fleet["good"].device_id, fleet["quiet"].device_id]
    before = len(_commands(console, ids[0]))
    forged = client.post("/commands/send", data={"device": ids, "type": "backup"},
                         follow_redirects=False)
    assert forged.status_code == 403
    token = csrf_of(client.get("/").text)
    other_site = client.post("/commands/send", data={"csrf_token": token, "device": ids,
                                                     "type": "backup"},
                             headers={"origin": "http://evil.example"},
                             follow_redirects=False)
    assert other_site.status_code == 403
    assert len(_commands(console, ids[0])) == before
    r = post_form(client, "/", "/commands/send", {"device": ids, "type": "backup",
                                                  "set": "home"})
    assert r.status_code == 303 and "queued" in r.headers["location"]
    for i in ids:
        cmd = _commands(console, i)[0]
        assert cmd["type"] == "backup" and cmd["params"] == {"set": "home"}
        assert cmd["state"] == "queued" and cmd["created_by"] == "admin"
    page = client.get(f"/devices/{ids[1]}").text
    assert 'class="badge state-queued">queued' in page
    # the form's fields become the parameters the device's agent reads
    for kind, fields, params in (
            ("check", {"read_data_subset": "5%", "set": "ignored"}, {"read_data_subset": "5%"}),
            ("bandwidth", {"tier": "2", "upload": "2M", "download": ""},
             {"tier": "2", "upload": "2M"}),
            ("cancel", {"all": "1"}, {"all": True}),
            ("retention", {"keep_daily": "7", "keep_weekly": ""}, {"keep_daily": "7"})):
        r = post_form(client, f"/devices/{ids[0]}", "/commands/send",
                      {"device": ids[0], "type": kind, **fields})
        assert r.status_code == 303 and "queued" in r.headers["location"], kind
        sent = _commands(console, ids[0])[0]
        assert (sent["type"], sent["params"]) == (kind, params)
    refused = post_form(client, "/", "/commands/send", {"device": ids[0], "type": "restore",
                                                        "paths": "/a", "target": ""})
    assert "Not+sent" in refused.headers["location"]
    cmd_id = str(_commands(console, ids[1])[0]["id"])
    r = post_form(client, f"/devices/{ids[1]}", f"/commands/{cmd_id}/cancel",
                  {"back": f"/devices/{ids[1]}"})
    assert r.status_code == 303
    assert _commands(console, ids[1])[0]["state"] == "cancelled"


def test_browse_a_snapshot_then_restore_picked_files(console: ConsoleServer,
                                                     client: httpx.Client,
                                                     fleet: dict[str, Agent]) -> None:
    agent = fleet["good"]
    dev = f"/devices/{agent.device_id}"
    asked = post_form(client, dev, f"{dev}/browse", {"snapshot": "snap1", "path": "/home"})
    assert asked.status_code == 200 and "Asked the device" in asked.text
    cmd = next(c for c in agent.poll() if c["type"] == "browse")
    assert cmd["params"] == {"snapshot": "snap1", "path": "/home"}
    agent.update(cmd["id"], "running")
    agent.update(cmd["id"], "succeeded", result={"entries": [
        {"path": f"/home/doc {HOSTILE}.txt", "type": "file", "size": 2048,
         "mtime": "2026-11-30T10:00:00+00:00"},
        {"name": "photos", "type": "dir"}]})
    listing = client.get(f"{dev}/browse/{cmd['id']}").text
    assert "doc &lt;script&gt;" in listing and "<script>alert" not in listing
    assert "photos/" in listing and "2.0 KiB" in listing
    r = post_form(client, dev, f"{dev}/restore", {
        "snapshot": "snap1", "path": [f"/home/doc {HOSTILE}.txt", "/home/photos"],
        "target": "/tmp/restored", "overwrite": "never"})
    assert r.status_code == 303 and "restore+queued" in r.headers["location"], r.headers
    restore = next(c for c in agent.poll() if c["type"] == "restore")
    # a directory of the listing opens the next listing (htmx: the fragment alone)
    token = csrf_of(client.get(dev).text)
    deeper = client.post(f"{dev}/browse", data={"csrf_token": token, "snapshot": "snap1",
                                                "open": "/home/photos", "path": "/x"},
                         headers={"hx-request": "true", "hx-target": "listing"})
    assert deeper.status_code == 200 and "<html" not in deeper.text
    opened = next(c for c in agent.poll() if c["type"] == "browse")
    assert opened["params"] == {"snapshot": "snap1", "path": "/home/photos"}
    assert restore["params"] == {"snapshot": "snap1", "target": "/tmp/restored",
                                 "overwrite": "never",
                                 "paths": [f"/home/doc {HOSTILE}.txt", "/home/photos"]}


def test_chart_data_of_a_device(client: httpx.Client, fleet: dict[str, Agent]) -> None:
    data = client.get(f"/devices/{fleet['good'].device_id}/chart.json").json()
    assert len(data["t"]) == 1 and data["sent"] == [5.0]
    assert client.get("/devices/nope").status_code == 404


# -- tokens ------------------------------------------------------------------------------

def test_tokens_page_shows_the_install_commands_once(console: ConsoleServer,
                                                     client: httpx.Client) -> None:
    r = post_form(client, "/tokens", "/tokens", {"customer": "Newco", "site": "HQ",
                                                 "ttl_hours": "2", "uses": "2"})
    assert r.status_code == 200, r.text
    secret = re.search(r'<code class="secret">(tve_[\w-]+)</code>', r.text)
    assert secret is not None
    for os_id in ("cmd-linux", "cmd-macos"):
        cmd = re.search(rf'<pre class="cmd" id="{os_id}">(.*?)</pre>', r.text, re.S)
        assert cmd is not None
        assert "enrol" in cmd.group(1) and secret.group(1) in cmd.group(1)
        assert console.url in cmd.group(1)
    assert "systemctl --user enable --now tiervault" in r.text
    assert "launchctl bootstrap" in r.text
    listed = client.get("/tokens").text
    assert "Newco / HQ" in listed and secret.group(1) not in listed
    device = console.agent(secret.group(1), name="from-the-page")
    assert device.device_id
    bad = post_form(client, "/tokens", "/tokens", {"customer": "X", "ttl_hours": "soon"})
    assert bad.status_code == 400 and "whole numbers" in bad.text
