"""A lightweight simulated device for the console fleet bench (asyncio, raw HTTP/1.1).

Speaks the agent protocol with ``tiervault.protocol`` messages, like the daemon's agent,
but without a vault: it enrols, checks in every ``interval`` seconds (at its own offset, so
a fleet's check-ins are spread evenly), holds a long-poll for commands, acknowledges any
command it receives (running, then succeeded), and reports a backup session every
``session_every`` check-ins. Latencies of check-ins and reports go to a ``Recorder``.
Requests go over bench/fleet_http.py (keep-alive pools; one connection per long-poll):
httpx cost about a core for 2,000 devices.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Any

from fleet_http import Conn, HTTPError, Pool

from tiervault.protocol import messages as m


def iso_now() -> str:
    """Now, ISO 8601 with offset."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Recorder:
    """Latencies (seconds) per request kind, and failures, while ``active``."""

    active: bool = False
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)   # command id -> queued
    got_at: dict[str, float] = field(default_factory=dict)    # command id -> long-poll answer

    def ok(self, kind: str, seconds: float) -> None:
        if self.active:
            self.latencies.setdefault(kind, []).append(seconds)

    def fail(self, kind: str, why: str = "") -> None:
        """Count a failure under "KIND (WHY)": the reason is in the results."""
        if self.active:
            key = f"{kind} ({why})" if why else kind
            self.errors[key] = self.errors.get(key, 0) + 1

    def delivered(self, command_id: str) -> None:
        self.got_at.setdefault(command_id, time.monotonic())

    def deliveries(self) -> list[float]:
        """Seconds from queueing a command to its device's long-poll answering it."""
        return [self.got_at[c] - t for c, t in self.sent_at.items() if c in self.got_at]


@dataclass
class Fleet:
    """What every simulated device shares."""

    base_urls: list[str]              # one per serve process; device i uses i % len
    interval: float
    wait: int                         # long-poll seconds
    session_every: int
    recorder: Recorder
    pools: list[Pool]                 # one per base URL: check-ins, reports, acks
    stop: asyncio.Event = field(default_factory=asyncio.Event)


JSON = b"Content-Type: application/json\r\n"


async def enrol(pool: Pool, token: str, name: str) -> tuple[str, str]:
    """Enrol one device; (device id, credential)."""
    req = m.EnrolRequest(token=token, name=name, host=f"{name}.bench", os="linux",
                         version="bench")
    for attempt in range(5):
        try:
            status, body = await pool.request("POST", f"{m.AGENT_PREFIX}/enrol", JSON,
                                              m.to_json(req))
        except HTTPError:
            await asyncio.sleep(0.5 * (attempt + 1))
            continue
        if status == 200:
            resp = m.parse(m.EnrolResponse, body)
            return resp.device_id, resp.credential
        if status < 500 and status != 429:
            raise RuntimeError(f"enrolment refused: {status} {body[:200]!r}")
        await asyncio.sleep(0.5 * (attempt + 1))
    raise RuntimeError("enrolment failed 5 times")


class Device:
    """One simulated device."""

    def __init__(self, fleet: Fleet, index: int, device_id: str, credential: str) -> None:
        self.fleet = fleet
        self.index = index
        self.device_id = device_id
        self.pool = fleet.pools[index % len(fleet.pools)]
        self.headers = f"Authorization: Bearer {credential}\r\n".encode() + JSON
        self.checkins = 0
        self.sessions = 0

    def _checkin_body(self) -> bytes:
        tiers = [m.TierState(url="/srv/speed-vault", state="online", revision=self.checkins,
                             role="speed-vault", used_bytes=10 << 30),
                 m.TierState(url="ftp://backup.example/vault", state="online",
                             revision=self.checkins, role="server", used_bytes=10 << 30)]
        return m.to_json(m.CheckIn(version="bench", os="linux", host=f"dev{self.index}",
                                   tiers=tiers, selected_bytes=8 << 30,
                                   sets=[{"name": "home", "paths": ["/home"]}]))

    def _report_body(self) -> bytes:
        self.sessions += 1
        now = iso_now()
        rep = m.SessionReport(
            session_id=f"{self.sessions}@{self.device_id}", kind="backup", status="success",
            started=now, ended=now, set="home", snapshot=f"{self.sessions:08x}",
            files_selected=40000, bytes_selected=8 << 30, files_processed=120,
            bytes_processed=50 << 20, bytes_sent=20 << 20,
            tiers_received=["/srv/speed-vault", "ftp://backup.example/vault"])
        return m.to_json(m.SessionBatch(reports=[rep]))

    async def _timed_post(self, kind: str, path: str, body: bytes) -> int | None:
        t0 = time.monotonic()
        try:
            status, _ = await self.pool.request("POST", f"{m.AGENT_PREFIX}{path}",
                                                self.headers, body)
        except HTTPError as e:
            self.fleet.recorder.fail(kind, str(e)[:80])
            return None
        if status != 200:
            self.fleet.recorder.fail(kind, f"HTTP {status}")
            return status
        self.fleet.recorder.ok(kind, time.monotonic() - t0)
        return status

    async def run_checkins(self, start_delay: float) -> None:
        """Check in every interval from ``start_delay`` on; report a session now and then."""
        if await _sleep_or_stop(self.fleet.stop, start_delay):
            return
        next_at = time.monotonic()
        while not self.fleet.stop.is_set():
            await self._timed_post("checkin", "/checkin", self._checkin_body())
            self.checkins += 1
            every = self.fleet.session_every
            # Phased by index, so reports come at the steady rate from the first interval on.
            if every and (self.checkins + self.index) % every == 0:
                await self._timed_post("sessions", "/sessions", self._report_body())
            next_at += self.fleet.interval
            if await _sleep_or_stop(self.fleet.stop, max(0.0, next_at - time.monotonic())):
                return

    async def run_longpoll(self, start_delay: float) -> None:
        """Hold a long-poll; acknowledge what it brings."""
        if await _sleep_or_stop(self.fleet.stop, start_delay):
            return
        path = f"{m.AGENT_PREFIX}/commands?wait={self.fleet.wait}"
        conn: Conn = self.pool.connection()
        try:
            await self._poll_loop(conn, path)
        finally:
            conn.close()

    async def _poll_loop(self, conn: Conn, path: str) -> None:
        while not self.fleet.stop.is_set():
            try:
                status, body = await conn.request("GET", path, self.headers)
            except HTTPError as e:
                self.fleet.recorder.fail("longpoll", str(e)[:80])
                await _sleep_or_stop(self.fleet.stop, 1.0)
                continue
            if status != 200:
                self.fleet.recorder.fail("longpoll", f"HTTP {status}")
                await _sleep_or_stop(self.fleet.stop, 1.0)
                continue
            batch = m.parse(m.CommandBatch, body)
            for cmd in batch.commands:
                self.fleet.recorder.delivered(cmd.id)
                await self._ack(cmd)

    async def _ack(self, cmd: m.Command) -> None:
        for state in ("running", "succeeded"):
            body = m.to_json(m.CommandUpdate(state=state, result={"bench": True}))
            await self._timed_post("command-update", f"/commands/{cmd.id}", body)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``; True when ``stop`` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return False


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def summary(rec: Recorder) -> dict[str, Any]:
    """Counts and p50/p99/max (ms) per request kind."""
    out: dict[str, Any] = {}
    for kind, vals in sorted(rec.latencies.items()):
        out[kind] = {"n": len(vals), "p50_ms": round(percentile(vals, 50) * 1000, 1),
                     "p99_ms": round(percentile(vals, 99) * 1000, 1),
                     "max_ms": round(max(vals) * 1000, 1)}
    out["errors"] = dict(rec.errors)
    d = rec.deliveries()
    out["commands_queued"] = len(rec.sent_at)
    if d:
        out["command_delivery"] = {"n": len(d), "p50_ms": round(percentile(d, 50) * 1000, 1),
                                   "p99_ms": round(percentile(d, 99) * 1000, 1)}
    return out
