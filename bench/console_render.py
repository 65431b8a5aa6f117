"""Server-side render time of the console's dashboard at N devices (default 10,000).

Seeds a fresh SQLite store (or --database-url) through the migrations with N devices of
several customers, colours, OSes and versions, and 28 days of sessions for each, then asks
the app in-process (no network, no browser: the time is the server's) for the dashboard
pages a person uses: the first page, the htmx table fragment, filtered, searched, sorted
by colour and the last page. Prints median, p95 and max per page, and JSON with --json.

    PYTHONPATH=src python bench/console_render.py [--devices 10000] [--runs 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from tiervault.console.app import create_app
from tiervault.console.context import AppContext, Settings
from tiervault.console.services import users
from tiervault.console.services.actor import SYSTEM
from tiervault.console.store import migrate
from tiervault.console.store.models import Customer, Device, SessionRow, new_id

PASSWORD = "bench-password"
PAGES = {
    "dashboard (first page)": ("/", {}),
    "table fragment (htmx refresh)": ("/", {"hx-request": "true", "hx-target": "devices"}),
    "filter colour=red": ("/?colour=red", {}),
    "filter offline": ("/?colour=offline", {}),
    "search q=host-12": ("/?q=host-12", {}),
    "sort by colour, descending": ("/?sort=-colour", {}),
    "filter customer + os": ("/?customer=customer-3&os=linux", {}),
    "last page": (None, {}),
}


def seed(ctx: AppContext, n: int, sessions_per_device: int, rng: random.Random) -> None:
    """N devices over 20 customers, with sessions over the last 28 days (bulk inserts)."""
    now = ctx.clock.now()
    with ctx.db.session() as s:
        users.add(s, ctx.clock, SYSTEM, "bench", PASSWORD)
        custs = [Customer(id=new_id(), name=f"customer-{i}") for i in range(20)]
        s.add_all(custs)
    devs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for i in range(n):
        age_h = rng.choice([1, 5, 20, 30, 40, 60, 200, None])
        status = rng.choice(["success"] * 8 + ["warnings", "failed"])
        seen = now - timedelta(seconds=rng.choice([10, 30, 50, 1000, 90000]))
        did = new_id()
        devs.append(dict(
            id=did, name=f"device-{i:05d}", customer_id=custs[i % 20].id,
            credential_hash=f"{i:064x}", revoked=False, enrolled=now - timedelta(days=60),
            last_seen=seen, interval=60, os=rng.choice(["linux", "macos", "windows"]),
            host=f"host-{i}", version=rng.choice(["0.2.0", "0.2.1", "0.3.0"]),
            tiers=[{"url": "file:///vault", "state": "online", "role": "speed-vault",
                    "revision": 10, "used_bytes": 10**9},
                   {"url": f"sftp://backup@server/{i}", "state": rng.choice(
                       ["online", "offline", "syncing"]), "sync_percent": 40.0,
                    "role": "server", "revision": 9, "used_bytes": 10**9}],
            running=None, selected_bytes=rng.randrange(10**9, 10**11), used_bytes=10**9,
            last_session_at=(now - timedelta(hours=age_h)) if age_h else None,
            last_status=status if age_h else None,
            last_success=(now - timedelta(hours=age_h)) if age_h and status != "failed"
            else None,
            last_errors=[{"message": "permission denied", "path": "/x"}]
            if status == "failed" else [], sets=[]))
        for k in range(sessions_per_device):
            start = now - timedelta(days=k * 28 / max(1, sessions_per_device), hours=1)
            rows.append(dict(
                device_id=did, session_id=f"{k}@{did}", kind="backup",
                status=rng.choice(["success"] * 6 + ["warnings", "failed"]), started=start,
                ended=start + timedelta(minutes=10), files_selected=1000,
                bytes_selected=10**9, files_processed=1000, bytes_processed=10**8,
                bytes_sent=10**7, flags="", tiers_received=[], errors=[], received=start))
    with ctx.db.session() as s:
        s.execute(Device.__table__.insert(), devs)
        for j in range(0, len(rows), 20_000):
            s.execute(SessionRow.__table__.insert(), rows[j:j + 20_000])


def login(client: TestClient) -> None:
    """Log in through the form, as a person does."""
    import re
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    r = client.post("/login", data={"csrf_token": token.group(1), "name": "bench",
                                    "password": PASSWORD}, follow_redirects=False)
    if r.status_code != 303:
        raise SystemExit(f"login failed: {r.status_code}")


def measure(client: TestClient, url: str, headers: dict[str, str], runs: int
            ) -> dict[str, float]:
    """Median, p95 and max (ms) of ``runs`` GETs after one warm-up, and the median CPU
    time of this process per GET (less sensitive to other load on the machine)."""
    client.get(url, headers=headers)
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        r = client.get(url, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{url}: {r.status_code}")
    times.sort()
    return {"median_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
            "max_ms": round(times[-1], 1), "cpu_median_ms": round(statistics.median(cpu), 1),
            "bytes": len(r.content)}


def main(argv: list[str] | None = None) -> int:
    """Seed, then time each page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--sessions", type=int, default=28, help="sessions per device (28 days)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url, https=False)
        ctx = AppContext.create(settings)
        migrate.upgrade(ctx.db)
        t0 = time.perf_counter()
        seed(ctx, args.devices, args.sessions, random.Random(1))
        seeded = time.perf_counter() - t0
        app = create_app(ctx, listen=False)
        results: dict[str, Any] = {"devices": args.devices,
                                   "load_average_at_start": os.getloadavg()[0],
                                   "sessions": args.devices * args.sessions,
                                   "seed_s": round(seeded, 1), "pages": {}}
        with TestClient(app, base_url="http://127.0.0.1") as client:
            login(client)
            last = max(1, (args.devices + 49) // 50)
            for label, (url, headers) in PAGES.items():
                results["pages"][label] = measure(client, url or f"/?page={last}", headers,
                                                  args.runs)
        ctx.db.dispose()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{results['devices']} devices, {results['sessions']} sessions "
              f"(seeded in {results['seed_s']} s); {args.runs} runs per page; "
              f"load average {results['load_average_at_start']:.1f} at the start")
        for label, r in results["pages"].items():
            print(f"  {label:30} median {r['median_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms"
                  f"  max {r['max_ms']:6.1f} ms  cpu {r['cpu_median_ms']:6.1f} ms"
                  f"  ({r['bytes'] // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
