"""Worker processes for the files of many small directories (both cores busy).

Threads cannot use the second core for small files: each is a handful of
system calls and library calls with Python between them, and the GIL
serialises the Python. So once a backup has met many entries, the walk hands
each directory's non-directory entries to worker processes as jobs
(``tiervault.engine.dirjob``), batched to amortise the hand-over. As a batch
comes back, its sealed chunks are deduplicated against the index and packed
here (in the pool's result thread); the walk then turns the entries into the
directory's items (``Archiver._expand``).

A worker does not know the index, so a duplicate small file is compressed for
nothing; the main process drops it. That costs CPU only, and only for files
of at most ``dirjob.LIMIT`` bytes.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import threading
from array import array
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from tiervault.engine.dirjob import READ, Entry, Job, JobSpec, Reply, run_jobs
from tiervault.vault.pack import BlobType

#: Entries per batch: amortises the hand-over (a pickled job and its reply).
BATCH = 256
#: Entries the walk meets before the processes start: a small backup does not
#: pay for starting them.
START_AFTER = 2000
_PER_WORKER = 3  # batches in flight per worker process
_PR_SET_PDEATHSIG = 1  # prctl(2)

#: A sealed blob for the writer: id, sealed bytes, plain length.
Sealed = tuple[bytes, bytes | memoryview, int]


class Sink(Protocol):
    """Where sealed blobs go (the blob writer)."""

    def save_sealed(self, t: BlobType, blobs: list[Sealed]) -> int:
        ...


class ReadHook(Protocol):
    """Called as a batch comes back: the files read and their bytes (progress)."""

    def __call__(self, files: int, nbytes: int) -> None:
        ...


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _init_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group: the main process decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Be killed when the backup process ends, however it ends (kill -9, out of
    memory): a worker left behind would hold the command's output open, and a
    pipeline (``tiervault backup | tee log``) would never finish (trial 5)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pool's pipes end it
        return
    if os.getppid() != parent:  # it ended before the prctl
        os._exit(1)


class JobHandle:
    """One directory's job: ``entries`` once its batch is back and packed."""

    __slots__ = ("batch", "entries", "job", "total")

    def __init__(self, batch: Batch, job: Job) -> None:
        self.batch = batch
        self.job = job
        self.entries: list[Entry] | None = None
        self.total = 0

    def done(self) -> bool:
        return self.batch.arrived.is_set()

    def wait(self) -> bool:
        """Wait for the batch; False if the workers are gone (the caller does the job)."""
        self.batch.wait()
        return self.entries is not None


class Batch:
    """Jobs handed to a worker together."""

    def __init__(self, pool: JobPool) -> None:
        self.pool = pool
        self.handles: list[JobHandle] = []
        self.size = 0  # entries
        self.submitted = False
        self.error: BaseException | None = None
        self.arrived = threading.Event()

    def wait(self) -> None:
        if not self.submitted:
            self.pool.submit()
        self.arrived.wait()
        if self.error is not None:
            raise self.error

    def back(self, fut: Future[Reply]) -> None:
        """The future's callback: pack the sealed chunks, then hand out the entries."""
        try:
            per_job, sealed, lens_b, raws_b = fut.result()
            lens, raws = array("I"), array("I")
            lens.frombytes(lens_b)
            raws.frombytes(raws_b)
            view = memoryview(sealed)
            blobs: list[Sealed] = []
            j = off = files = nbytes = 0
            for h, (entries, total) in zip(self.handles, per_job, strict=True):
                for e in entries:
                    if e[0] == READ:
                        files += 1
                        nbytes += e[2]
                        for bid in e[6]:
                            blobs.append((bid, view[off:off + lens[j]], raws[j]))
                            off += lens[j]
                            j += 1
                h.entries, h.total = entries, total
            self.pool.sink.save_sealed(BlobType.DATA, blobs)
            self.pool.on_read(files, nbytes)
        except BrokenProcessPool:
            for h in self.handles:  # a worker died (killed, out of memory)
                h.entries = None
        except BaseException as e:
            self.error = e
        finally:
            self.arrived.set()


class JobPool:
    """Hands directory jobs to worker processes in batches; started on first use."""

    def __init__(self, spec: JobSpec, sink: Sink, workers: int, on_read: ReadHook) -> None:
        self.spec = spec
        self.sink = sink
        self.workers = workers
        self.on_read = on_read
        self._pool: ProcessPoolExecutor | None = None
        self._batch: Batch | None = None
        self._flight: deque[Batch] = deque()

    def add(self, job: Job) -> JobHandle:
        """Queue one directory's job; its handle is done when its batch is back."""
        b = self._batch
        if b is None:
            b = self._batch = Batch(self)
        h = JobHandle(b, job)
        b.handles.append(h)
        b.size += len(job[1])
        if b.size >= BATCH:
            self.submit()
        return h

    def submit(self) -> None:
        """Hand out the batch being filled (waiting while too many are out)."""
        b, self._batch = self._batch, None
        if b is None:
            return
        while len(self._flight) >= self.workers * _PER_WORKER:
            self._flight.popleft().arrived.wait()
        while self._flight and self._flight[0].arrived.is_set():
            self._flight.popleft()
        b.submitted = True
        fut: Future[Reply]
        try:
            self.start()
            assert self._pool is not None
            fut = self._pool.submit(run_jobs, self.spec, [h.job for h in b.handles])
        except (BrokenProcessPool, RuntimeError, OSError):
            fut = Future()
            fut.set_exception(BrokenProcessPool("the worker processes are gone"))
        fut.add_done_callback(b.back)
        self._flight.append(b)

    def start(self) -> None:
        """Fork the worker processes now, if not yet done.

        Forked from the backup process: nothing to import again, and no helper
        process to outlive it. Best done before the walk: a worker keeps the
        pages the backup process had at the fork and rewrites later (copy on
        write), so forking late, with packs and reads in flight, cost each worker
        that much memory (bench dataset: 239 MiB in all, 136 MiB without
        workers). The objects frozen meanwhile stay out of the workers' garbage
        collections, which would otherwise write to (and so copy) all of them.
        """
        if self._pool is not None:
            return
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker, initargs=(os.getpid(),))
        gc.freeze()
        try:
            self._pool.submit(int).result()  # the fork happens at the first submit
        except (BrokenProcessPool, OSError) as e:  # no processes (a limit, no memory)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise BrokenProcessPool(f"no worker processes: {e}") from None
        finally:
            gc.unfreeze()

    def close(self) -> None:
        """Stop the worker processes (batches not started are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
