"""The agent's two threads: check-in + reports every interval, commands by long-poll.

Devices only dial out. Every ``interval`` seconds the agent checks in, sends
the outcomes of commands not yet acknowledged, then the session reports the
console does not hold yet (oldest first). A second thread holds a long-poll
for commands; each command is journalled as started before it runs (see
``journal``) and runs in its own thread, so a ``cancel`` arrives while a
backup runs. A console that is away, or that presents another certificate
than the pinned one, is one log line when it happens, not one per attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tiervault.daemon.agent.client import (
    AgentClient,
    ConsoleFailed,
    ConsoleRefused,
    ConsoleUnreachable,
)
from tiervault.daemon.agent.commands import Executor
from tiervault.daemon.agent.journal import Journal
from tiervault.daemon.agent.reports import Outbox
from tiervault.errors import TierVaultError
from tiervault.protocol.messages import (
    CheckInResponse,
    Command,
    CommandBatch,
    CommandUpdate,
    RotateResponse,
    SessionAck,
    SessionBatch,
    parse,
    to_json,
)

log = logging.getLogger("tiervault.daemon")
POLL_WAIT = 50          # seconds the console may hold a long-poll
POLL_RETRY_MAX = 10.0   # seconds between retries of a long-poll the console missed
LOG_TAIL_LINES = 4000
ACTIVITY_POLL = 1.0     # seconds between looks at whether a job started or ended
RETRY_FIRST = 5.0       # seconds before the first retry of a check-in the console missed


class LogTail(logging.Handler):
    """The daemon's last log lines, for ``upload-log``."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # logging must never raise into the daemon
            pass

    def text(self) -> str:
        """The lines, joined."""
        return "\n".join(self.lines) + "\n"


class Agent:
    """Talks to the console for one daemon."""

    def __init__(self, client: AgentClient, interval: float, executor: Executor,
                 outbox: Outbox, journal: Journal,
                 checkin: Callable[[], Any],
                 on_rotate: Callable[[str], None] | None = None,
                 refresh: Callable[[AgentClient], tuple[AgentClient, float] | None]
                 | None = None, activity: Callable[[], object] | None = None) -> None:
        self.client = client
        self.interval = interval
        self.executor = executor
        self.outbox = outbox
        self.journal = journal
        self.checkin = checkin
        self.on_rotate = on_rotate
        self.refresh = refresh
        self.activity = activity
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._said: dict[str, str] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Report commands a crash left unfinished, then start both threads."""
        for cid in self.journal.recover():
            log.warning("console command %s was running when the daemon stopped; it is "
                        "reported failed and not run again", cid)
        for name, fn in (("console-checkin", self._checkin_loop),
                         ("console-commands", self._command_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop both threads (a long-poll in flight is abandoned)."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Check in now (not at the end of the interval)."""
        self._wake.set()

    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def _say(self, channel: str, message: str | None, level: int = logging.WARNING) -> None:
        """One log line per change of what a channel has to say."""
        if message is None:
            if self._said.pop(channel, None) is not None:
                log.info("console: %s works again", channel)
            return
        key = message.split(":", 1)[0] if "presents certificate" not in message else "pin"
        if self._said.get(channel) != key:
            told = key in self._said.values()   # the other thread said it already
            self._said[channel] = key
            if not told:
                log.log(level, "console: %s: %s", channel, message)

    # -- check-in and reports ----------------------------------------------------------------

    def reenrolled(self) -> bool:
        """Take a new enrolment (``tiervault enrol`` while the daemon runs): True if one."""
        if self.refresh is None:
            return False
        try:
            fresh = self.refresh(self.client)
        except (OSError, TierVaultError) as e:
            self._say("enrolment", f"cannot read the new enrolment: {e}")
            return False
        if fresh is None:
            return False
        self.client, self.interval = fresh
        self._said.clear()
        log.info("console: enrolled again: now reporting to %s every %g s", self.client.url,
                 self.interval)
        return True

    def _checkin_loop(self) -> None:
        missed = 0   # check-ins in a row the console did not answer
        while not self._stop.is_set():
            # Read before the check-in is built: a job that ends while it is sent is a
            # change the pause sees (else the console shows it running for an interval).
            seen = self.activity() if self.activity else None
            wait = self.interval
            try:
                self.reenrolled()
                self.round()
                self._say("check-in", None)
                missed = 0
            except TierVaultError as e:
                self._say("check-in", str(e))
                if isinstance(e, ConsoleUnreachable) or (
                        isinstance(e, ConsoleFailed) and e.status >= 500):
                    # A console restarting is back in seconds: retry soon, then back off
                    # to the interval (a laptop away for hours: one try per interval).
                    wait = min(self.interval, RETRY_FIRST * 2 ** missed)
                    missed = min(missed + 1, 16)   # no ever-growing power of two
            except Exception as e:  # never let the thread die
                self._say("check-in", f"internal error: {e!r}", logging.ERROR)
            self._pause(seen, wait)

    def _pause(self, seen: object, seconds: float) -> None:
        """Wait ``seconds``, less when a job starts or ends (the console then sees the
        running job, the session and the tiers' new states at once, not an interval late)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, ACTIVITY_POLL)):
                break
            if self.activity is not None and self.activity() != seen:
                break
        self._wake.clear()

    def round(self) -> None:
        """One check-in, then every pending command outcome and session report."""
        ans = parse(CheckInResponse, _bytes(self.client.request(
            "POST", "/checkin", to_json(self.checkin()))))
        if ans.rotate and self.on_rotate is not None:
            self.rotate()
        self.send_outcomes()
        self.send_reports()

    def rotate(self) -> None:
        """Take a new credential (the console asked): the old one stops working once the
        console answers, so the new one is written before anything else is sent."""
        ans = parse(RotateResponse, _bytes(self.client.request("POST", "/rotate", b"{}")))
        assert self.on_rotate is not None
        self.on_rotate(ans.credential)
        self.client.credential = ans.credential
        log.info("console: the device credential was rotated")

    def send_reports(self) -> int:
        """Send pending reports in batches, in order; how many the console took."""
        sent = 0
        while not self._stop.is_set():
            reports, cursor = self.outbox.pending()
            if not reports:
                self.outbox.advance(cursor)   # only skipped kinds: move past them
                return sent
            try:
                ack = parse(SessionAck, _bytes(self.client.request(
                    "POST", "/sessions", to_json(SessionBatch(reports)))))
            except ConsoleFailed as e:
                if e.status >= 500 or e.status in (408, 429):
                    raise
                # A report the console will never take must not hold back the others.
                log.warning("console refused session report(s) %s: %s",
                            ", ".join(r.session_id for r in reports), e)
                self.outbox.advance(cursor)
                continue
            missing = {r.session_id for r in reports} - set(ack.accepted)
            if missing:
                log.warning("console did not take session report(s) %s",
                            ", ".join(sorted(missing)))
            self.outbox.advance(cursor)
            sent += len(reports) - len(missing)
        return sent

    def send_outcomes(self) -> None:
        """Command results the console has not acknowledged yet."""
        for cid, e in self.journal.unsent():
            self._update(cid, CommandUpdate(e["state"], e.get("result"), e.get("session_id")))

    def _update(self, cid: str, upd: CommandUpdate) -> None:
        try:
            self.client.request("POST", f"/commands/{cid}", to_json(upd))
        except ConsoleFailed as e:
            if e.status >= 500:
                raise
            log.warning("console refused the update of command %s: %s", cid, e)
        if upd.state != "running":
            self.journal.acked(cid)

    # -- commands ----------------------------------------------------------------------------

    def _command_loop(self) -> None:
        failed = 0   # polls in a row that failed
        while not self._stop.is_set():
            # After a failure the first poll is answered at once: a console that is back
            # is known (and checked in with) within seconds, not a long-poll later.
            wait = 0 if failed else POLL_WAIT
            try:
                batch = parse(CommandBatch, _bytes(self.client.request(
                    "GET", f"/commands?wait={wait}", timeout=wait + 20)))
                if failed or "commands" in self._said or "check-in" in self._said:
                    self._wake.set()   # the console is back: check in (and replay) now
                failed = 0
                self._say("commands", None)
                for cmd in batch.commands:
                    self.accept(cmd)
            except ConsoleRefused as e:
                if self.reenrolled():
                    continue
                self._say("commands", str(e))
                self._stop.wait(self.interval)
            except TierVaultError as e:
                self._say("commands", str(e))
                failed += 1
                # 2, 4, 8 s, then every 10 s (or the interval, if shorter).
                self._stop.wait(min(self.interval, POLL_RETRY_MAX, 2.0 ** failed))
            except Exception as e:
                self._say("commands", f"internal error: {e!r}", logging.ERROR)
                self._stop.wait(self.interval)

    def accept(self, cmd: Command) -> threading.Thread | None:
        """Run a delivered command unless it was ever seen (at most once)."""
        with self._lock:
            if cmd.id in self._running:
                return None
            if not self.journal.begin(cmd.id, cmd.type):
                seen = self.journal.entry(cmd.id) or {}
                if seen.get("state") not in (None, "started"):
                    self._wake.set()   # its outcome goes out with the next round
                return None
            self._running.add(cmd.id)
        log.info("console command %s: %s %s", cmd.id, cmd.type, cmd.params)
        t = threading.Thread(target=self._execute, args=(cmd,), name=f"command-{cmd.id}",
                             daemon=True)
        t.start()
        return t

    def _execute(self, cmd: Command) -> None:
        try:
            try:
                self._update(cmd.id, CommandUpdate("running"))
            except TierVaultError:
                pass   # the outcome is what counts; it is retried until acknowledged
            state, result, session_id = self.executor.run(cmd)
            self.journal.finish(cmd.id, state, result, session_id)
            log.info("console command %s (%s): %s%s", cmd.id, cmd.type, state,
                     f" ({result.get('error')})" if result.get("error") else "")
            try:
                self.send_reports()   # the session it produced goes first
                self._update(cmd.id, CommandUpdate(state, result, session_id))
            except TierVaultError:
                self._wake.set()
        finally:
            with self._lock:
                self._running.discard(cmd.id)


def _bytes(doc: Any) -> bytes:
    import json

    return json.dumps(doc).encode()


def started_at() -> float:
    """Now, as the outbox's boundary between this daemon's sessions and older ones."""
    return time.time()
