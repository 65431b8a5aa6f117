"""The tier set (SPEC §2-§6): ordered tiers that look like one backend.

- Reads come from the first online tier and fall through to the next on a
  transport failure, a missing file, or data that fails authentication.
- Writes go to every online tier concurrently and complete once at least one
  tier took them; tiers that failed become offline and are recorded (durably,
  at once) as having missed writes. With no tier online, a write waits,
  probing, until one comes online (``wait_timeout`` bounds the wait).
- Revisions: at the first write of a session every online tier is raised to
  max+1; when a tier drops out, the remaining ones are raised again, so a tier
  at the max revision has received every write. Raises are recorded in the
  state database before they are written (crash-safe).
- Every connect compares each tier's revision with the one recorded: a
  difference means another installation wrote to the vault.
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
from tiervault.tiers.temporaries import clean_tiers
from tiervault.tiers.tier import (
    OFFLINE,
    ONLINE,
    REFUSED_HINT,
    SYNCING,
    UNSYNCHRONIZED,
    Tier,
    is_refusal,
)

T = TypeVar("T")
_DIRTY = "session_in_progress"
#: The state key set while a writing session runs (public name for reports).
SESSION_IN_PROGRESS = _DIRTY
Notify = Callable[[str], None]


#: State key of the files that failed authentication on a tier, to be healed when idle.
DAMAGED_KEY = "damaged_files"

class TierSet(Backend):
    """Ordered tiers behaving as one backend; see the module docstring."""

    def __init__(self, tiers: list[Tier], db: StateDB, vault_name: str = "",
                 wait_timeout: float | None = None, probe_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 notify: Notify | None = None, read_only: bool = False,
                 probe_backend: Callable[[Tier], Backend] | None = None,
                 adopt_revisions: bool = False) -> None:
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
        # A single-attempt view of a tier for probing while waiting.
        self.probe_backend = probe_backend or (lambda t: t.backend)
        self.abort_sync = threading.Event()
        self._lock = threading.RLock()
        self._raise_lock = threading.Lock()
        self._session = False
        self._unconfirmed: set[str] = set()
        self._confirmed: set[str] = set()
        self._pool = ThreadPoolExecutor(max(2, 3 * len(tiers)), thread_name_prefix="tier")
        self.damaged: list[tuple[str, str]] = []  # (tier, file) that failed authentication
        #: Tiers found stale or damaged by the manifest check (name -> why): never a sync source.
        self.untrusted: dict[str, str] = {}

    # -- state -----------------------------------------------------------------------

    @property
    def max_revision(self) -> int:
        """The highest revision the installation knows for any tier."""
        return max(t.record.revision for t in self.tiers)

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

    def _go_offline(self, t: Tier, e: BaseException) -> None:
        reason = t.reason(e)
        refused = is_refusal(e)
        if (t.state != OFFLINE or t.error is None) and not t.lost:
            if refused:
                # Not a quiet "offline": nothing comes back by itself, a person must act.
                self.notify(f"warning: tier {t.name} refuses access: {reason}; {REFUSED_HINT}")
            else:
                self.notify(f"tier {t.name} is offline: {reason}")
        t.state = OFFLINE
        t.error = reason
        t.refused = refused
        if t.record.first_offline is None:
            t.record.first_offline = time.time()

    # -- connecting ----------------------------------------------------------------------

    def connect(self) -> None:
        """Read every tier's revision, detect other installations, classify tiers.

        Nothing is written before every reachable tier passed the second
        installation check; then pending raises of a crashed run are finished.
        """
        revs = list(self._pool.map(self._read_rev, self.tiers))
        for t, rev in zip(self.tiers, revs, strict=True):
            if rev is not None and self.adopt_revisions:
                # A restore-only installation never writes, so it cannot clash
                # with the writer: it simply follows the tiers' revisions.
                t.record.revision, t.record.intended, t.record.missed = rev, None, False
            elif rev is not None:
                try:
                    self._check_revision(t, rev)
                except SecondInstallationError:
                    # Another process of this installation may have raised the
                    # tier since we read our records (it records the intended
                    # value before writing it): look again before accusing.
                    t.record = self.db.tier(t.record.url)
                    self._check_revision(t, rev)
        for t, rev in zip(self.tiers, revs, strict=True):
            if rev is not None:
                t.revision = rev
        self._classify()
        self._save_records()
        self._recover_interrupted_session()
        self._finish_pending_raise()

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

    def _read_rev(self, t: Tier, backend: Backend | None = None) -> int | None:
        """The tier's revision (0 if it has none yet); None if unreachable."""
        try:
            b = backend or t.backend
            from tiervault.tiers.tier import MAX_REVISION_FILE, parse_revision

            raw = b.load(Handle(FileType.REVISION), max_size=MAX_REVISION_FILE)

            return parse_revision(raw, t.name)
        except NotFoundError:
            return 0
        except (BackendError, IntegrityError) as e:
            self._go_offline(t, e)
            return None

    def _check_revision(self, t: Tier, rev: int) -> None:
        rec = t.record
        if rec.intended is not None:
            # A raise was in flight when we stopped: either value is consistent.
            if rev == rec.intended:
                rec.revision = rev
            if rev in (rec.intended, rec.revision):
                rec.intended = None
        if rev == rec.revision:
            return
        if t.lost:
            # A given-up tier came back: whatever it holds is stale; sync refills it.
            rec.missed = True
            return
        never_seen = rec.last_online is None and rec.revision == 0
        if never_seen and rev <= self.max_revision:
            rec.revision = rev  # a tier added with older content: sync brings it level
            return
        if rev == 0 and rec.revision > 0 and self._is_empty(t):
            rec.revision = 0  # an empty replacement (new disk): refilled by sync
            rec.missed = True
            return
        raise SecondInstallationError(
            f"another installation has written to vault {self.vault_name} on {t.name} "
            f"(tier revision {rev}, this installation expected {rec.revision}); nothing was "
            f"written. If this computer replaces the other one, run 'tiervault attach "
            f"--take-over' here; if this one should only restore, attach it again with "
            f"--read-only in a new --home")

    def _is_empty(self, t: Tier) -> bool:
        try:
            t.backend.stat(Handle(FileType.CONFIG))
            return False
        except NotFoundError:
            return True
        except BackendError:
            return False

    def _classify(self) -> None:
        top = self.max_revision
        for t in self.tiers:
            if t.revision is None or (t.state == OFFLINE and t.error is not None \
                    and t.revision is None):
                continue
            if t.record.missed or t.record.revision < top:
                t.state = UNSYNCHRONIZED
            else:
                t.mark_online()

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

    def reconnect(self, t: Tier, backend: Backend | None = None) -> bool:
        """Probe an offline tier; True if it is now online."""
        rev = self._read_rev(t, backend)
        if rev is None:
            return False
        with self._lock:
            if self.adopt_revisions:
                t.record.revision = rev
            else:
                self._check_revision(t, rev)
            t.revision = rev
            t.error = None
            if t.record.missed or t.record.revision < self.max_revision:
                t.state = UNSYNCHRONIZED
                self.notify(f"tier {t.name} is back but behind (revision {rev} < "
                            f"{self.max_revision}): it will be synchronized")
            else:
                t.mark_online()
                if self._session:
                    # Rejoining during a session: raised with the others first.
                    self._raise(self.online())
            self._save_records([t])
        return t.state == ONLINE

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
            if self._session:
                return
            if not self.online():
                self.wait_for_online()
            # Durable before the first raise: a crash from here on is detected.
            self.db.put(_DIRTY, "1")
            start = self.clock()
            self._raise(self.online())
            while not self.online():
                self._refused(start, "took the revision raise")
                self.wait_for_online()
                self._raise(self.online())
            self._session = True

    def _refused(self, start: float, what: str) -> None:
        """Tiers answer probes but refuse writes (a full disk): they come back online
        at once, so bound the write's own wait and pace its rounds."""
        if self.wait_timeout is not None and self.clock() - start >= self.wait_timeout:
            raise WaitTimeoutError(f"no tier of vault {self.vault_name} {what} within "
                                   f"{self.wait_timeout:g} s ({self._why_waiting()})")
        self.sleep(self.probe_interval)

    def wait_for_online(self) -> None:
        """Probe offline tiers until one is online; WaitTimeoutError past the bound."""
        start = self.clock()
        last_msg = -1e9
        while True:
            for t in self.tiers:
                if t.state == OFFLINE and self.reconnect(t, self.probe_backend(t)):
                    return
            now = self.clock()
            if self.wait_timeout is not None and now - start >= self.wait_timeout:
                within = f"came online within {self.wait_timeout:g} s" if self.wait_timeout \
                    else "is reachable"
                raise WaitTimeoutError(
                    f"no tier of vault {self.vault_name} {within} ({self._why_waiting()})")
            if now - last_msg >= 30 or last_msg < 0:
                self.notify(f"waiting for a tier to come online: {self._why_waiting()}")
                last_msg = now
            self.sleep(self.probe_interval)

    def _why_waiting(self) -> str:
        parts = []
        for t in self.tiers:
            why = t.error or t.state
            if t.state == UNSYNCHRONIZED:
                why = "behind, needs a tier at the max revision to sync from"
            parts.append(f"{t.name}: {why}")
        return "; ".join(parts)

    # -- writing ---------------------------------------------------------------------------

    def _write(self, fn: Callable[[Tier], None], missing_ok: bool = False) -> None:
        self._begin_write()
        start = self.clock()
        while True:
            targets = self.online()
            if not targets:
                with self._lock:
                    self.wait_for_online()
                continue
            results = list(self._pool.map(lambda t: _attempt(fn, t, missing_ok), targets))
            ok = [t for t, e in zip(targets, results, strict=True) if e is None]
            failed = [(t, e) for t, e in zip(targets, results, strict=True) if e is not None]
            with self._lock:
                for t, e in failed:
                    if t.state == ONLINE:
                        self._go_offline(t, e)
                    if not t.record.missed:
                        t.record.missed = True
                        self._unconfirmed.add(t.url)
                if failed:
                    self._save_records([t for t, _ in failed])
                if ok:
                    self._after_success(ok)
                    return
                if all(isinstance(e, NotFoundError) for _, e in failed):
                    raise failed[0][1]
                # Nobody took this write, so nobody missed it: undo the marks.
                for t, _ in failed:
                    if t.url in self._unconfirmed and t.url not in self._confirmed:
                        t.record.missed = False
                        self._unconfirmed.discard(t.url)
                self._save_records([t for t, _ in failed])
            self._refused(start, "took a write")

    def _after_success(self, ok: list[Tier]) -> None:
        got = {t.url for t in ok}
        newly_behind = []
        for t in self.tiers:
            if t.url in got:
                continue
            if not t.record.missed:
                t.record.missed = True
            if t.url not in self._confirmed:
                self._confirmed.add(t.url)
                self._unconfirmed.discard(t.url)
                newly_behind.append(t)
        if newly_behind:
            self._save_records(newly_behind)
            top = self.max_revision
            if any(_effective(t) >= top for t in newly_behind):
                # A tier dropped out: raise the others so it ends below the max.
                self._raise(self.online())

    def create(self) -> None:
        """Create the vault root on every reachable tier."""
        for t in self.tiers:
            try:
                t.backend.create()
            except BackendError as e:
                self._go_offline(t, e)

    def save(self, h: Handle, data: bytes) -> None:
        self._write(lambda t: t.backend.save(h, data))

    def remove(self, h: Handle) -> None:
        # Recorded durably before it is done: sync carries to other tiers only
        # the deletions this installation made (SPEC §5), never a tier's omissions.
        self.db.record_deletions(h.type.value, [h.name or h.type.value])
        self._write(lambda t: t.backend.remove(h), missing_ok=True)

    # -- reading ----------------------------------------------------------------------------

    def _read(self, fn: Callable[[Tier], T], what: str) -> T:
        last: BaseException | None = None
        for _round in range(2):
            for t in self.online():
                try:
                    return fn(t)
                except TransientError as e:
                    self._go_offline(t, e)
                    self._save_records([t])
                    last = e
                except IntegrityError as e:
                    self.damaged.append((t.name, what))
                    if len(self.online()) > 1:
                        self.notify(f"{what} on {t.name} is damaged; trying the next tier")
                    last = e
                except (NotFoundError, PermanentError) as e:
                    last = e
            if last is not None:
                raise last
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
        seen: dict[Handle, FileInfo] = {}
        for tier in self.online():
            try:
                for fi in tier.backend.list(t):
                    seen.setdefault(fi.handle, fi)
            except TransientError as e:
                self._go_offline(tier, e)
                self._save_records([tier])
        if not self.online():
            return list(self.list(t))  # waits or raises as every read does
        return sorted(seen.values(), key=lambda fi: fi.handle)

    def distrust(self, t: Tier, why: str) -> None:
        """Stop using a tier that is stale or damaged although its revision is
        current (rolled back, hiding files): it is never a sync source, and
        while another tier is online it is neither read nor written but healed
        like a tier that missed writes."""
        if t.state != ONLINE or t.name in self.untrusted:
            return
        self.untrusted[t.name] = why
        others = [x for x in self.online() if x is not t and x.name not in self.untrusted]
        if not others:
            self.notify(f"WARNING: tier {t.name} is stale or damaged ({why}) and no other tier "
                        "is online: reading it anyway; it is not used to synchronize others")
            return
        self.notify(f"WARNING: tier {t.name} is stale or damaged ({why}); using "
                    f"{others[0].name} instead (run 'tiervault check --repair' to heal it)")
        t.state = UNSYNCHRONIZED
        t.record.missed = True
        self._save_records([t])

    def probe(self) -> None:
        if not self.online():
            self.wait_for_online()

    # -- lifecycle ---------------------------------------------------------------------------

    def end_session(self) -> None:
        """The writing session is over (the next write starts a new one)."""
        with self._lock:
            if self._session:
                self.db.put(_DIRTY, None)
            self._session = False
            self._unconfirmed.clear()
            self._confirmed.clear()
            self._save_records()

    def close(self) -> None:
        for t in self.tiers:
            try:
                t.backend.close()
            except Exception:  # closing must never mask the real outcome
                pass
        self._pool.shutdown(wait=False)

    def stale(self) -> builtins.list[Tier]:
        """Reachable tiers below the max revision (to be synchronized)."""
        return [t for t in self.tiers if t.state in (UNSYNCHRONIZED, SYNCING)]


def _effective(t: Tier) -> int:
    """The highest revision the tier may hold on disk (a raise may have landed)."""
    return max(t.record.revision, t.record.intended or 0)


def _attempt(fn: Callable[[Tier], None], t: Tier, missing_ok: bool) -> BaseException | None:
    try:
        fn(t)
        return None
    except NotFoundError as e:
        return None if missing_ok else e
    except BackendError as e:
        return e
