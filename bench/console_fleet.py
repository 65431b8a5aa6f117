"""Console fleet bench: how many simulated devices one console holds at p99 < 200 ms.

Starts ``tiervault console serve`` (one or more processes; SQLite in a fresh data
directory, or one PostgreSQL database shared by all processes), creates a user, an API
token and one enrolment token through the CLI, enrols N simulated devices
(bench/fleet_agent.py), then lets them run: a check-in every ``--interval`` seconds at
offsets spread evenly over the interval, a long-poll held by every device, a session
report every ``--session-every`` check-ins, and a "backup" command queued through the JSON
API every ``--command-every`` seconds to a random device (answered by that device's
long-poll; with two processes the command goes through the other process than the
device's). Latencies are recorded during ``--measure`` seconds after one warm-up interval.

    python bench/console_fleet.py --devices 2000 [--processes 2 --postgres] [--json out]
    python bench/console_fleet.py --search 1000,2000,5000,10000 [--postgres --processes 2]

With ``--postgres`` the bench starts its own PostgreSQL (tests/servers/postgres.py), or
uses ``--database-url``. The simulated devices run in ``--fleet-processes`` processes
(default 1) on the same machine, over a minimal HTTP/1.1 client (bench/fleet_http.py):
their CPU is not the server's, and on a 2-core machine they compete with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import fleet_agent as fa  # noqa: E402
import fleet_http as fh  # noqa: E402

_BOOT = "import sys; from tiervault.cli.main import main; main(sys.argv[1:])"
P99_TARGET_MS = 200.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def tv(*args: str, input: str | None = None) -> str:
    """Run ``tiervault ARGS`` and return stdout; raise with stderr on failure."""
    p = subprocess.run([sys.executable, "-c", _BOOT, *args], capture_output=True, text=True,
                       env=_env(), input=input, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"tiervault {' '.join(args)} -> {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _secret(obj: Any, prefix: str) -> str:
    """The first string starting with ``prefix`` anywhere in a JSON value."""
    if isinstance(obj, str) and obj.startswith(prefix):
        return obj
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else []
    for v in items:
        with contextlib.suppress(LookupError):
            return _secret(v, prefix)
    raise LookupError(prefix)


@contextlib.contextmanager
def console(processes: int, db_url: str | None) -> Iterator[tuple[list[str], Path, list[int]]]:
    """Serve processes on one store; yields (base URLs, data dir, pids)."""
    work = Path(tempfile.mkdtemp(prefix="tv-fleet-"))
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for i in range(processes):
            data = work / f"data{i}"
            data.mkdir()
            port = _free_port()
            argv = [sys.executable, "-c", _BOOT, "console", "serve", "--data", str(data),
                    "--listen", f"127.0.0.1:{port}", "--insecure-http"]
            if db_url:
                argv += ["--database-url", db_url]
            with open(work / f"serve{i}.log", "wb") as log:   # the child keeps its own fd
                procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              env=_env()))
            urls.append(f"http://127.0.0.1:{port}")
            _wait_up(urls[-1], procs[-1], work / f"serve{i}.log")
        yield urls, work / "data0", [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{url}/api/openapi.json", timeout=2)
            return
        time.sleep(0.2)
    raise RuntimeError(f"serve did not answer: {log.read_text(errors='replace')[-2000:]}")


def prepare(base: str, data: Path, db_url: str | None, devices: int) -> tuple[str, str]:
    """A user, an API token and an enrolment token for ``devices`` uses; (api, enrol)."""
    store = ["--data", str(data)] + (["--database-url", db_url] if db_url else [])
    pw = data / "pw"
    pw.write_text("bench password 12345\n")
    tv("console", "user", "add", "bench", "--password-file", str(pw), *store)
    api = _secret(json.loads(tv("console", "api-token", "create", "bench", "--json", *store)),
                  "tva_")
    out = tv("console", "token", "create", "--customer", "bench", "--uses", str(devices),
             "--ttl", "24h", "--json", "--url", base, "--token", api)
    return api, _secret(json.loads(out), "tve_")


async def _enrol_all(fleet: fa.Fleet, token: str, indices: list[int]) -> list[fa.Device]:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> fa.Device:
        async with sem:
            dev_id, cred = await fa.enrol(fleet.pools[i % len(fleet.pools)], token,
                                          f"bench-{i:05d}")
        return fa.Device(fleet, i, dev_id, cred)

    return list(await asyncio.gather(*(one(i) for i in indices)))


async def _queue_commands(fleet: fa.Fleet, devices: list[fa.Device], api: str,
                          every: float) -> None:
    """Queue a backup for a random device every ``every`` s, through another process."""
    rnd = random.Random(devices[0].index if devices else 1)
    headers = f"Authorization: Bearer {api}\r\n".encode() + fa.JSON
    while not await fa._sleep_or_stop(fleet.stop, every):
        dev = rnd.choice(devices)
        other = fleet.pools[(dev.index + 1) % len(fleet.pools)]
        body = json.dumps({"devices": [dev.device_id], "type": "backup", "params": {}})
        t0 = time.monotonic()
        try:
            status, data = await other.request("POST", "/api/v1/commands", headers,
                                               body.encode())
        except fh.HTTPError:
            fleet.recorder.fail("command-queue")
            continue
        if status != 200:
            fleet.recorder.fail("command-queue")
            continue
        fleet.recorder.ok("command-queue", time.monotonic() - t0)
        out = json.loads(data)
        for cmd in out if isinstance(out, list) else [out]:
            if fleet.recorder.active:
                fleet.recorder.sent_at[cmd["id"]] = t0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def _share(share: int, shares: int, urls: list[str], api: str, token: str,
                 args: argparse.Namespace, n: int, pipe: Connection) -> dict[str, Any]:
    """One fleet process's devices (index % shares == share): enrol, wait for the common
    start, run, measure; its raw figures."""
    rec = fa.Recorder()
    fleet = fa.Fleet(base_urls=urls, interval=args.interval, wait=args.wait,
                     session_every=args.session_every, recorder=rec,
                     pools=[fh.Pool(u, 32) for u in urls])
    t0 = time.monotonic()
    devices = await _enrol_all(fleet, token, list(range(share, n, shares)))
    enrol_s = time.monotonic() - t0
    pipe.send(("enrolled", enrol_s))
    start_at = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    tasks = []
    for d in devices:
        offset = d.index * args.interval / n
        tasks.append(asyncio.create_task(d.run_checkins(offset)))
        tasks.append(asyncio.create_task(d.run_longpoll(offset)))
    tasks.append(asyncio.create_task(
        _queue_commands(fleet, devices, api, args.command_every * shares)))
    await asyncio.sleep(max(0.0, start_at + args.interval - time.monotonic()))   # warm-up
    rec.active = True
    own0 = time.process_time()
    await asyncio.sleep(max(0.0, start_at + args.interval + args.measure - time.monotonic()))
    rec.active = False
    own = time.process_time() - own0
    fleet.stop.set()
    await asyncio.wait(tasks, timeout=5)
    for t in tasks:   # long-polls still held: let go of them
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for p in fleet.pools:
        p.close()
    return {"latencies": rec.latencies, "errors": rec.errors, "sent_at": rec.sent_at,
            "got_at": rec.got_at, "cpu": own, "enrol_seconds": enrol_s}


def _share_main(share: int, shares: int, urls: list[str], api: str, token: str,
                args: argparse.Namespace, n: int, pipe: Connection) -> None:
    """Entry of one fleet process: runs ``_share`` (on uvloop when it is installed)."""
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    try:
        pipe.send(("done", asyncio.run(_share(share, shares, urls, api, token, args, n,
                                              pipe))))
    except BaseException as e:
        pipe.send(("error", f"{type(e).__name__}: {e}"))
        raise


def run_fleet(urls: list[str], api: str, token: str, args: argparse.Namespace,
              n: int, pids: list[int]) -> dict[str, Any]:
    """Enrol ``n`` devices over ``--fleet-processes`` processes, warm up one interval,
    measure; the summary."""
    shares = max(1, min(args.fleet_processes, n))
    mp = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for i in range(shares):
        mine, theirs = mp.Pipe()
        p = mp.Process(target=_share_main, args=(i, shares, urls, api, token, args, n, theirs),
                       daemon=True)
        p.start()
        pipes.append(mine)
        procs.append(p)
    try:
        enrol_s = 0.0
        for c in pipes:
            what, value = c.recv()
            if what != "enrolled":
                raise RuntimeError(f"fleet process failed: {value}")
            enrol_s = max(enrol_s, value)
        start_at = time.monotonic() + 1.0
        for c in pipes:
            c.send(start_at)
        time.sleep(max(0.0, start_at + args.interval - time.monotonic()))
        cpu0 = cpu_seconds(pids)
        time.sleep(max(0.0, start_at + args.interval + args.measure - time.monotonic()))
        server_cpu = (cpu_seconds(pids) - cpu0) / args.measure
        rec = fa.Recorder()
        fleet_cpu = 0.0
        for c in pipes:
            what, value = c.recv()
            if what != "done":
                raise RuntimeError(f"fleet process failed: {value}")
            for k, v in value["latencies"].items():
                rec.latencies.setdefault(k, []).extend(v)
            for k, v in value["errors"].items():
                rec.errors[k] = rec.errors.get(k, 0) + v
            rec.sent_at.update(value["sent_at"])
            rec.got_at.update(value["got_at"])
            fleet_cpu += value["cpu"]
    finally:
        for p in procs:
            p.join(timeout=20)
            if p.is_alive():
                p.kill()
    out = fa.summary(rec)
    out["devices"] = n
    out["enrol_seconds"] = round(enrol_s, 1)
    out["checkins_per_second"] = round(n / args.interval, 1)
    out["load_average_1m"] = round(os.getloadavg()[0], 2)   # the whole machine, at the end
    out["server_cpu_percent"] = round(100 * server_cpu)     # of one core, all processes
    out["fleet_processes"] = shares
    out["agents_cpu_percent"] = round(100 * fleet_cpu / args.measure)   # the whole fleet
    return out


def passes(result: dict[str, Any]) -> bool:
    """p99 of check-ins and reports under target and no failed request."""
    kinds = [k for k in ("checkin", "sessions") if k in result]
    return (bool(kinds) and not result["errors"]
            and all(result[k]["p99_ms"] < P99_TARGET_MS for k in kinds))


def one_size(n: int, args: argparse.Namespace, db_url: str | None) -> dict[str, Any]:
    """Fresh console (and database), one fleet of ``n`` devices."""
    with console(args.processes, db_url) as (urls, data, pids):
        api, token = prepare(urls[0], data, db_url, n)
        result = run_fleet(urls, api, token, args, n, pids)
    result["processes"] = args.processes
    result["store"] = "postgresql" if db_url else "sqlite"
    result["pass"] = passes(result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--search", help="comma-separated fleet sizes, smallest first")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--postgres", action="store_true", help="start a PostgreSQL for it")
    ap.add_argument("--database-url", help="an existing empty database instead")
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--wait", type=int, default=50, help="long-poll seconds")
    ap.add_argument("--session-every", type=int, default=10)
    ap.add_argument("--command-every", type=float, default=1.0)
    ap.add_argument("--measure", type=float, default=120.0)
    ap.add_argument("--fleet-processes", type=int, default=1,
                    help="simulate the fleet in this many processes (devices split evenly)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.search.split(",")] if args.search else [args.devices]
    results: list[dict[str, Any]] = []
    pg = None
    if args.postgres and not args.database_url:
        from tests.servers.postgres import PostgresServer
        pg = PostgresServer().start()
    try:
        for n in sizes:
            db_url = args.database_url or (pg.create_database(f"fleet{n}") if pg else None)
            res = one_size(n, args, db_url)
            res["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            results.append(res)
            print(json.dumps(res), flush=True)
            if pg is not None and db_url is not None:
                pg.drop_database(db_url)
            if args.search and not res["pass"]:
                break
    finally:
        if pg is not None:
            pg.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    best = max((r["devices"] for r in results if r["pass"]), default=0)
    print(f"largest fleet with p99 < {P99_TARGET_MS:.0f} ms: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
