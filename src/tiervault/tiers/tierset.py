"""The tier set (SPEC §2-§6): ordered tiers that look like one backend.

- Reads come from the first online tier and fall through to the next on a
  transport failure, a missing file, or data that fails authentication.
- Writes are put on the write queue ("lane", tiers/lanes.py) of every online
  tier and complete once at least one tier stored them; slower tiers drain
  their lanes in their own threads. A tier whose write failed, or that falls
  behind the fastest one by more than a bound (``lag_bytes`` not yet written,
  or ``lag_seconds`` behind), drops out of the session and is recorded
  (durably, at once) as having missed writes; ``wait_all_tiers`` waits for
  every tier instead. With no tier online, a write waits, probing, until one
  comes online (``wait_timeout`` bounds the wait).
- Revisions: at the first write of a session every online tier is raised to
  max+1; when a tier drops out, the remaining ones are raised again, so a tier
  at the max revision has received every write. Raises are recorded in the
  state database before they are written (crash-safe).
- Connecting reads every tier's revision in background threads
  (tiers/contact.py) and goes on after ``connect_grace`` seconds with the tiers
  that answered; the others' reconnect procedure goes on beside the command
  and they rejoin (through the unsynchronized-tier detection) if they answer.
  Every revision read is compared with the one recorded: a difference means
  another installation wrote to the vault.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from tiervault.errors import (
    BackendError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    SecondInstallationError,
    TierVaultError,
    TransientError,
    WaitTimeoutError,
)
from tiervault.state.db import StateDB
from tiervault.storage.base import Backend, FileInfo, FileType, Handle
from tiervault.tiers.contact import Answer, Prober, confirm_stale, fetch_revision
from tiervault.tiers.distrust import set_aside, vet
from tiervault.tiers.revisions import check_revision, classify, max_revision, why_waiting
from tiervault.tiers.temporaries import clean_tiers
from tiervault.tiers.tier import (
    OFFLINE,
    ONLINE,
    SYNCING,
    UNSYNCHRONIZED,
    Tier,
    is_refusal,
    refusal_hint,
)
from tiervault.tiers.writes import SessionWrites

T = TypeVar("T")
_DIRTY = "session_in_progress"
#: The state key set while a writing session runs (public name for reports).
SESSION_IN_PROGRESS = _DIRTY
Notify = Callable[[str], None]

#: State key of the files that failed authentication on a tier, to be healed when idle.
DAMAGED_KEY = "damaged_files"
#: How long connecting waits for tiers' first answers before going on with those that gave one.
CONNECT_GRACE = 1.0
#: How long a read (wait timeout 0) waits for reconnects under way when no tier is online.
READ_WAIT = 4.0
#: A tier this many bytes behind the fastest one drops out of the session (also the
#: bound on the memory its queue holds).
LAG_BYTES = 64 << 20
#: A tier whose oldest unwritten write was stored elsewhere this long ago drops out.
LAG_SECONDS = 10.0


class TierSet(Backend):
    """Ordered tiers behaving as one backend; see the module docstring."""

    def __init__(self, tiers: list[Tier], db: StateDB, vault_name: str = "",
                 wait_timeout: float | None = None, probe_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 notify: Notify | None = None, read_only: bool = False,
                 probe_backend: Callable[[Tier], Backend] | None = None,
                 adopt_revisions: bool = False, connect_grace: float = CONNECT_GRACE,
                 lag_bytes: int = LAG_BYTES, lag_seconds: float = LAG_SECONDS,
                 wait_all_tiers: bool = False) -> None:
        if not tiers:
            raise TierVaultError("no tiers configured")
        self.tiers = tiers
        self.db = db
        self.vault_name = vault_name
        self.location = ", ".join(t.name for t in tiers)
        self.wait_timeout = wait_timeout
        self.probe_interval = probe_interval
        self.clock = clock
        self.sleep = sleep
        self.notify = notify or (lambda _m: None)
        self.read_only = read_only or adopt_revisions
        self.adopt_revisions = adopt_revisions
        self.connect_grace = connect_grace
        self.lag_bytes = lag_bytes
        self.lag_seconds = lag_seconds
        #: Writes wait for every online tier (``backup --wait-all-tiers``).
        self.wait_all_tiers = wait_all_tiers
        # A single-attempt view of a tier for probing while waiting.
        self.probe_backend = probe_backend or (lambda t: t.backend)
        self.abort_sync = threading.Event()
        self._lock = threading.RLock()
        self._raise_lock = threading.Lock()
        self._session = False
        self._began = False  # a writing session started in this process
        self._session_start = 0.0
        self._said: set[str] = set()
        self._told_waiting: float | None = None
        self._said_offline: set[tuple[str, str, object]] = set()
        self._by_url = {t.url: t for t in tiers}
        self._writes = SessionWrites(self)
        self._prober = Prober()
        self._pool = ThreadPoolExecutor(max(2, 3 * len(tiers)), thread_name_prefix="tier")
        self.damaged: list[tuple[str, str]] = []  # (tier, file) that failed authentication
        #: Tiers found stale or damaged by the manifest check (name -> why): never a sync source.
        self.untrusted: dict[str, str] = {}
        #: Set by the session once the key is open: why a tier is stale or damaged
        #: (None if it is fine); a tier that comes online later is checked with it.
        self.verify: Callable[[Tier], str | None] | None = None

    # -- state -----------------------------------------------------------------------

    @property
    def max_revision(self) -> int:
        """The highest revision the installation knows for any tier."""
        return max_revision(self.tiers)

    def online(self) -> builtins.list[Tier]:
        """Online tiers in read order."""
        return [t for t in self.tiers if t.state == ONLINE]

    def _save_records(self, tiers: list[Tier] | None = None) -> None:
        if self.read_only:
            # A reader (`tiers`, a restore-only installation) must never write
            # back older values over those of the process that writes.
            return
        for t in tiers or self.tiers:
            t.record.state = t.state
        self.db.save_tiers([t.record for t in tiers or self.tiers])

    def _say(self, msg: str) -> None:
        """Tell the user once: a tier failing round after round must not repeat itself."""
        if msg not in self._said:
            self._said.add(msg)
            self.notify(msg)

    def _go_offline(self, t: Tier, e: BaseException) -> None:
        reason = t.reason(e)
        refused = is_refusal(e)
        kind = (t.url, type(e).__name__, getattr(e.__cause__, "errno", None))
        if not t.lost and kind not in self._said_offline:
            # Once per tier and kind of failure: a full disk refusing pack after
            # pack (each message naming another pack) is said once.
            self._said_offline.add(kind)
            if refused:
                # Not a quiet "offline": nothing comes back by itself, a person must act.
                self._say(f"warning: tier {t.name} refuses access: {reason}; "
                          f"{refusal_hint(e)}")
            else:
                self._say(f"tier {t.name} is offline: {reason}")
        t.state = OFFLINE
        t.error = reason
        t.refused = refused
        if t.record.first_offline is None:
            t.record.first_offline = time.time()

    # -- connecting ----------------------------------------------------------------------

    def connect(self) -> None:
        """Read every tier's revision, detect other installations, classify tiers.

        Tiers are read in parallel; after ``connect_grace`` seconds the command
        goes on with the tiers that answered (the others are offline for now and
        rejoin if their reconnect procedure gets an answer). Nothing is written
        before every tier that answered passed the second installation check;
        then pending raises of a crashed run are finished.
        """
        for t in self.tiers:
            self._prober.start(t, self.probe_backend(t), t.backend)
        answers: dict[str, Answer] = {}
        end = time.monotonic() + self.connect_grace
        while True:
            for a in self._prober.take():
                answers[a.tier.url] = a
            # A failed first attempt is not an answer yet: its retries may still get
            # one within the grace (a single 500 must not make a tier offline).
            if all(a.final for a in answers.values()) and len(answers) == len(self.tiers):
                break
            left = end - time.monotonic()
            if left <= 0:
                break
            self._prober.wait(left)
        revs: list[int | None] = []
        for t in self.tiers:
            got = answers.get(t.url)
            if got is None:
                self._go_offline(t, TransientError(
                    "no answer yet (still trying in the background)"))
            elif got.error is not None:
                _raise_bug(got.error)
                self._go_offline(t, got.error)
            revs.append(None if got is None else got.revision)
        with self._lock:
            for t, rev in zip(self.tiers, revs, strict=True):
                if rev is not None and self.adopt_revisions:
                    # A restore-only installation never writes, so it cannot clash
                    # with the writer: it simply follows the tiers' revisions.
                    t.record.revision, t.record.intended, t.record.missed = rev, None, False
                elif rev is not None:
                    self._check_revision_again(t, rev)
            for t, rev in zip(self.tiers, revs, strict=True):
                if rev is not None:
                    t.revision = rev
            self._classify()
            self._save_records()
            self._recover_interrupted_session()
            self._finish_pending_raise()

    def _check_revision(self, t: Tier, rev: int) -> None:
        check_revision(t, rev, self.max_revision, self.vault_name)

    def _classify(self) -> None:
        classify(self.tiers)

    def _why_waiting(self) -> str:
        return why_waiting(self.tiers)

    def _check_revision_again(self, t: Tier, rev: int) -> None:
        try:
            self._check_revision(t, rev)
        except SecondInstallationError:
            # Another process of this installation may have raised the
            # tier since we read our records (it records the intended
            # value before writing it): look again before accusing.
            t.record = self.db.tier(t.record.url)
            self._check_revision(t, rev)

    def _apply_answers(self) -> None:
        """Apply what background probes found (in the caller's thread, under the lock)."""
        with self._lock:
            for a in self._prober.take():
                t = a.tier
                if t.state != OFFLINE:
                    continue  # it answered some other way meanwhile
                if a.revision is None:
                    assert a.error is not None
                    _raise_bug(a.error)
                    self._go_offline(t, a.error)
                    continue
                self._rejoin(t, a.revision)

    def _recover_interrupted_session(self) -> None:
        """After a crash mid-session the tiers may differ by half-done writes.

        The first online tier becomes authoritative: every other tier is marked
        as having missed writes and is synchronized from it (copy what is
        missing, remove what it lacks), so all tiers converge on one valid vault.
        """
        if self.read_only or self.db.get(_DIRTY) is None:
            return
        online = self.online()
        if not online:
            return
        keep = online[0]
        for t in self.tiers:
            if t is not keep:
                t.record.missed = True
                if t.state == ONLINE:
                    t.state = UNSYNCHRONIZED
        self._save_records()
        self._raise([keep])
        # The crashed writer's uploads are dead; the other tiers get theirs
        # removed when they are synchronized from this one.
        clean_tiers([keep], self.notify)
        self.db.put(_DIRTY, None)

    def declare_lost(self, lost: Tier, authority: Tier) -> None:
        """Give up ``lost``: ``authority`` (reachable) becomes the reference.

        The lost tier's recorded revision drops to 0 and it counts as having
        missed writes, so if it ever returns it is synchronized from the others
        instead of being taken for another installation.
        """
        with self._lock:
            lost.lost = True
            lost.record.revision = 0
            lost.record.intended = None
            lost.record.missed = True
            if lost.state != OFFLINE:
                lost.state = UNSYNCHRONIZED
            assert authority.revision is not None
            authority.record.revision = authority.revision
            authority.record.intended = None
            authority.record.missed = False
            for t in self.tiers:
                if t is not authority and t is not lost and t.revision is not None:
                    t.record.revision = min(t.revision, authority.revision)
                    t.record.missed = True
            self._classify()
            self._save_records()
            if not self.read_only:
                self._raise([authority])

    def _finish_pending_raise(self) -> None:
        """A tier recorded as having missed writes must end below the max."""
        top = self.max_revision
        behind = [t for t in self.tiers if t.record.missed and t.record.revision == top]
        if behind and self.online() and not self.read_only:
            self._raise(self.online())

    def probe_offline(self) -> None:
        """One probe of every offline tier, waited for at most ``connect_grace``
        seconds (a mute server is not waited for; it may still rejoin later)."""
        started = [self._prober.start(t, self.probe_backend(t))
                   for t in self.tiers if t.state == OFFLINE]
        end = time.monotonic() + self.connect_grace
        while any(started) and self._prober.running() and time.monotonic() < end:
            self._prober.wait(max(0.0, end - time.monotonic()))
            self._apply_answers()
        self._apply_answers()

    def confirm_stale(self) -> None:
        """One quick probe of each tier to be synchronized (tiers/contact.py)."""
        confirm_stale(self)

    def _read_rev(self, t: Tier, backend: Backend | None = None) -> int | None:
        """The tier's revision (0 if it has none yet), read now; None if unreachable."""
        rev, err = fetch_revision(t, backend or t.backend)
        if err is not None:
            self._go_offline(t, err)
        return rev

    def reconnect(self, t: Tier, backend: Backend | None = None) -> bool:
        """Probe a tier now (in this thread); True if it is now online."""
        rev, err = fetch_revision(t, backend or t.backend)
        with self._lock:
            if rev is None:
                assert err is not None
                self._go_offline(t, err)
                return False
            self._rejoin(t, rev)
            return t.state == ONLINE

    def _rejoin(self, t: Tier, rev: int) -> None:
        """An offline tier answered: the unsynchronized-tier detection (SPEC §5)."""
        if self.adopt_revisions:
            t.record.revision = rev
        else:
            self._check_revision_again(t, rev)
        t.revision = rev
        t.error = None
        if t.lost or t.record.missed or t.record.revision < self.max_revision:
            t.state = UNSYNCHRONIZED
            self._say(f"tier {t.name} is back but behind (revision {rev} < "
                      f"{self.max_revision}): it will be synchronized")
        else:
            # At the max and it missed nothing: it already holds this session's
            # revision (a tier that was away when the session began is below
            # it), so it rejoins without another raise.
            t.mark_online()
        self._save_records([t])
        vet(self, t)
        if t.state == ONLINE and not self._began:
            # The first tier to answer may come after connect(): the recovery of
            # a crashed run still happens before anything is written.
            self._recover_interrupted_session()
            self._finish_pending_raise()

    # -- revisions -------------------------------------------------------------------------

    def _raise(self, tiers: list[Tier]) -> None:
        """Raise ``tiers`` to max+1, recorded durably before it is written."""
        with self._raise_lock:
            new = self.max_revision + 1
            for t in tiers:
                t.record.intended = new
            self.db.save_tiers([t.record for t in tiers])

            def one(t: Tier) -> BaseException | None:
                try:
                    t.write_revision(new)
                    return None
                except BackendError as e:
                    return e

            for t, err in zip(tiers, self._pool.map(one, tiers), strict=True):
                if err is None:
                    t.record.revision = new
                    t.record.intended = None
                else:
                    # The write may have landed with its reply lost: keep the
                    # intended value, so either value is accepted on reconnect.
                    self._go_offline(t, err)
            self._save_records(tiers)

    def _begin_write(self) -> None:
        if self.read_only:
            raise TierVaultError("this installation is read-only; it never writes to the vault")
        self.abort_sync.set()
        with self._lock:
            self._apply_answers()
            if self._session:
                return
            if not self.online():
                self.wait_for_online()
            self._began = True
            # Durable before the first raise: a crash from here on is detected.
            self.db.put(_DIRTY, "1")
            start = self.clock()
            self._raise(self.online())
            while not self.online():
                self._refused(start, "took the revision raise")
                self.wait_for_online()
                self._raise(self.online())
            self._session = True
            self._session_start = time.monotonic()

    def _refused(self, start: float, what: str) -> None:
        """Tiers answer probes but refuse writes (a full disk): they come back online
        at once, so bound the write's own wait and pace its rounds."""
        if self.wait_timeout is not None and self.clock() - start >= self.wait_timeout:
            raise WaitTimeoutError(f"no tier of vault {self.vault_name} {what} within "
                                   f"{self.wait_timeout:g} s ({self._why_waiting()})")
        self.sleep(self.probe_interval)

    def wait_for_online(self) -> None:
        """Until a tier is online; WaitTimeoutError past ``wait_timeout``.

        Probes run in background threads, so a probe hung on a server that
        never answers cannot stretch the wait past its bound. With a wait
        timeout of 0 (reads) only the reconnect procedures already under way
        are waited for.
        """
        start = self.clock()
        begun = time.monotonic()
        while True:
            self._apply_answers()
            if self.online():
                return
            if self.wait_timeout == 0:
                # A read waits for the reconnect procedures under way, a few seconds at
                # most: someone on the road without the disk wants the answer now.
                if not self._prober.running() or time.monotonic() - begun >= READ_WAIT:
                    raise WaitTimeoutError(f"no tier of vault {self.vault_name} is reachable "
                                           f"({self._why_waiting()})")
                self._prober.wait(min(self.probe_interval,
                                      max(0.05, READ_WAIT - (time.monotonic() - begun))))
                continue
            for t in self.tiers:
                if t.state == OFFLINE:
                    self._prober.start(t, self.probe_backend(t))
            self._prober.wait(self.probe_interval)
            self._apply_answers()
            if self.online():
                return
            now = self.clock()
            if self.wait_timeout is not None and now - start >= self.wait_timeout:
                raise WaitTimeoutError(
                    f"no tier of vault {self.vault_name} came online within "
                    f"{self.wait_timeout:g} s ({self._why_waiting()})")
            if self._told_waiting is None or now - self._told_waiting >= 30:
                # Paced across calls: a write retried round after round says it once.
                self.notify(f"waiting for a tier to come online: {self._why_waiting()}")
                self._told_waiting = now
            if not self._prober.running():
                self.sleep(self.probe_interval)  # every probe answered: pace the rounds

    # -- writing ---------------------------------------------------------------------------

    def _write(self, fn: Callable[[Tier], None], nbytes: int, missing_ok: bool = False) -> None:
        self._begin_write()
        self._writes.write(fn, nbytes, missing_ok)

    def create(self) -> None:
        """Create the vault root on every reachable tier."""
        for t in self.tiers:
            try:
                t.backend.create()
            except BackendError as e:
                self._go_offline(t, e)

    def save(self, h: Handle, data: bytes) -> None:
        if h.type is FileType.ARCHIVE and h.name is not None:
            # The one kind of name that comes back (archive mark, release, mark
            # again): written now, it is no deletion to carry to the other tiers.
            self.db.forget_deletion(h.type.value, h.name)
        self._write(lambda t: t.backend.save(h, data), len(data))

    def remove(self, h: Handle) -> None:
        # Recorded durably before it is done: sync carries to other tiers only
        # the deletions this installation made (SPEC §5), never a tier's omissions.
        self.db.record_deletions(h.type.value, [h.name or h.type.value])
        self._write(lambda t: t.backend.remove(h), 0, missing_ok=True)

    # -- reading ----------------------------------------------------------------------------

    def _read(self, fn: Callable[[Tier], T], what: str) -> T:
        last: BaseException | None = None
        damage: BaseException | None = None
        for _round in range(2):
            self._apply_answers()
            for i, t in enumerate(self.online()):
                if i:
                    self._writes.wait_idle(self.lag_seconds)  # falling through: see there
                try:
                    return fn(t)
                except TransientError as e:
                    with self._lock:
                        self._go_offline(t, e)
                        self._save_records([t])
                    last = e
                except IntegrityError as e:
                    self.damaged.append((t.name, what))
                    if len(self.online()) > 1:
                        self.notify(f"{what} on {t.name} is damaged; trying the next tier")
                    last = damage = e
                except (NotFoundError, PermanentError) as e:
                    last = e
            if last is not None:
                # A damaged copy says more than a tier that lacks the file (one
                # still writing it, or a stale one).
                raise damage or last
            self.wait_for_online()
        raise last or TierVaultError("no tier could serve the read")

    def load(self, h: Handle, offset: int = 0, length: int | None = None,
             max_size: int | None = None) -> bytes:
        return self._read(lambda t: t.backend.load(h, offset, length, max_size), str(h))

    def load_verified(self, h: Handle, decode: Callable[[bytes], T], offset: int = 0,
                      length: int | None = None, max_size: int | None = None) -> T:
        return self._read(lambda t: decode(t.backend.load(h, offset, length, max_size)),
                          str(h))

    def stat(self, h: Handle) -> FileInfo:
        return self._read(lambda t: t.backend.stat(h), str(h))

    def list(self, t: FileType) -> Iterator[FileInfo]:
        return iter(self._read(lambda tier: list(tier.backend.list(t)), t.value))

    @property
    def in_session(self) -> bool:
        """True once the current writing session has written something."""
        return self._session

    def list_union(self, t: FileType) -> builtins.list[FileInfo]:
        """The files of one kind listed by ANY online tier (a tier that hides
        files cannot hide them from prune or from key lookup)."""
        # A removal still queued for a slower tier: that tier lists the file a while
        # longer; the deletion record says it is gone.
        gone = self.db.deleted(t.value) if t in (FileType.INDEX, FileType.SNAPSHOT) else set()
        seen: dict[Handle, FileInfo] = {}
        for tier in self.online():
            try:
                for fi in tier.backend.list(t):
                    if fi.handle.name not in gone:
                        seen.setdefault(fi.handle, fi)
            except TransientError as e:
                self._go_offline(tier, e)
                self._save_records([tier])
        if not self.online():
            return list(self.list(t))  # waits or raises as every read does
        return sorted(seen.values(), key=lambda fi: fi.handle)

    def distrust(self, t: Tier, why: str) -> None:
        """Set aside a stale or damaged tier (tiers/distrust.py)."""
        set_aside(self, t, why)

    def probe(self) -> None:
        self._apply_answers()
        if not self.online():
            self.wait_for_online()

    # -- lifecycle ---------------------------------------------------------------------------

    def end_session(self) -> None:
        """The writing session is over (the next write starts a new one).

        Tiers still writing are waited for a short grace (all of them with
        ``wait_all_tiers``); a tier still behind then drops out of the session
        (missed writes recorded, the others raised) and is synchronized later.
        """
        if self._session:
            self._writes.finish(self._session_start)
        with self._lock:
            self._writes.cancel()
            if self._session:
                self.db.put(_DIRTY, None)
            self._session = False
            self._save_records()

    def close(self) -> None:
        self._prober.close()
        with self._lock:
            self._writes.closed = True
            self._writes.cancel()
        for t in self.tiers:
            try:
                t.backend.close()
            except Exception:  # closing must never mask the real outcome
                pass
        self._pool.shutdown(wait=False)

    def stale(self) -> builtins.list[Tier]:
        """Reachable tiers below the max revision (to be synchronized)."""
        self._apply_answers()
        return [t for t in self.tiers if t.state in (UNSYNCHRONIZED, SYNCING)]


def _raise_bug(e: BaseException) -> None:
    """A probe thread met something other than a storage answer: raise it here."""
    if not isinstance(e, (BackendError, IntegrityError)):
        raise e
