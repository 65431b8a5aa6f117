"""The files of one directory, stat'ed, read and sealed in a worker process.

The main process walks the directories and hands each one's other entries
(files, symlinks, devices...) to a worker process as a job: the worker
``lstat``s them, compares files with what the files cache remembers, and
reads, hashes, compresses and seals the small ones that changed. What comes
back is one entry per name, in name order (``Entry``), and the sealed blobs,
which the main process deduplicates against the index and packs
(docs/format.md, "Small files in worker processes").

Everything here runs in the worker; nothing is shared with the main process
but what the job and its reply carry.
"""

from __future__ import annotations

import os
import stat
from array import array
from dataclasses import dataclass
from typing import Any

import msgpack

from tiervault.engine.metadata import kind_of, node_from_stat
from tiervault.engine.pending import file_part, stat_part
from tiervault.engine.readfile import read_small
from tiervault.vault.chunker import Chunker, ChunkerParams
from tiervault.vault.codec import Codec
from tiervault.vault.crypto import MasterKey
from tiervault.vault.pack import BlobType, blob_aad
from tiervault.vault.tree import Node

#: Files up to this size are read by the worker (larger ones by the main
#: process's threads, which ask the index before they compress a chunk).
LIMIT = 64 * 1024

# Entry kinds (the first field of each entry).
WARN = 0  # (WARN, name, message, counts as an error)
NODE = 1  # (NODE, node): not a file (a symlink, a device, ...)
#: (READ, name, size, mtime, ctime, inode, content ids, changed while read, tree entry
#: encoded, directory key part): a file read; its chunks are in the reply
READ = 2
UNCHANGED = 3  # (UNCHANGED, name, stat, directory key part): as the files cache remembers it
MAIN = 4  # (MAIN, name, stat): a file for the main process (large, hard-linked, or a read error)
OTHER = 5  # (OTHER, name): became a directory: the main process looks at it again

Entry = tuple[Any, ...]
#: A directory's job: its path, the names to look at, and what the files cache
#: remembers of them (size, mtime, ctime, inode), if anything.
Job = tuple[bytes, list[bytes], dict[bytes, tuple[int, int, int, int]] | None]
#: The reply to a batch of jobs: per job its entries and the bytes of the files
#: included; then the sealed chunks of the READ entries, in the order of their
#: content ids, one after the other, with arrays ('I') of sealed and plain lengths.
Reply = tuple[list[tuple[list[Entry], int]], bytes, bytes, bytes]


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to do a job as the main process would."""

    material: bytes
    level: int
    chunker: ChunkerParams
    max_size: int | None  # --exclude-larger-than
    euid: int


class _Sealer:
    """Names and seals chunks into one reply (one per batch)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.key = MasterKey(spec.material)
        self.codec = Codec(self.key, spec.level)
        self._chunker: Chunker | None = None
        self.sealed = bytearray()
        self.lens, self.raws = array("I"), array("I")

    def store(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if len(data) > self.spec.chunker.min_size:  # it grew past one chunk
            if self._chunker is None:
                self._chunker = Chunker(self.spec.chunker, self.key.chunker_seed)
            pieces: list[bytes | memoryview] = list(self._chunker.chunks_of(data))
        else:
            pieces = [data]
        ids = []
        for p in pieces:
            bid = self.key.blob_id(p)
            s = self.codec.encode(p, blob_aad(BlobType.DATA, bid))
            self.sealed += s
            self.lens.append(len(s))
            self.raws.append(len(p))
            ids.append(bid)
        return ids


def run_jobs(spec: JobSpec, jobs: list[Job]) -> Reply:
    """Do a batch of directory jobs (in a worker process)."""
    sealer = _Sealer(spec)
    out = [_one_job(spec, sealer, job) for job in jobs]
    return out, bytes(sealer.sealed), sealer.lens.tobytes(), sealer.raws.tobytes()


def _one_job(spec: JobSpec, sealer: _Sealer, job: Job) -> tuple[list[Entry], int]:
    path, names, cached = job
    entries: list[Entry] = []
    total = 0
    for name in names:
        child = path + b"/" + name if path != b"/" else b"/" + name
        try:
            st = os.lstat(child)
        except OSError as e:
            entries.append((WARN, name, e.strerror or str(e), True))
            continue
        kind = kind_of(st.st_mode)
        if kind is None:
            entries.append((WARN, name, "unsupported file type, skipped", False))
            continue
        if kind == "dir":
            entries.append((OTHER, name))
            continue
        if kind != "file":
            try:
                entries.append((NODE, node_from_stat(name, child, st, kind)))
            except OSError as e:
                entries.append((WARN, name, e.strerror or str(e), True))
            continue
        if spec.max_size is not None and st.st_size > spec.max_size:
            continue
        total += st.st_size
        c = cached.get(name) if cached else None
        if c is not None and c == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            entries.append((UNCHANGED, name, st, stat_part(name, st)))
        elif st.st_size > LIMIT or st.st_nlink > 1:
            entries.append((MAIN, name, st))
        else:
            entry = _read(spec, sealer, name, child, st)
            if entry[0] == WARN:
                total -= st.st_size
            entries.append(entry)
    return entries, total


def _read(spec: JobSpec, sealer: _Sealer, name: bytes, path: bytes, st: os.stat_result
          ) -> Entry:
    noatime = os.O_NOATIME if spec.euid in (0, st.st_uid) and hasattr(os, "O_NOATIME") else 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | noatime)
    except OSError as e:
        return (WARN, name, e.strerror or str(e), True)
    try:
        data = read_small(fd, st.st_size)
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino:
            return (WARN, name, "file was replaced during the backup, skipped", True)
        node: Node = node_from_stat(name, path, st, "file")
    except OSError as e:
        return (WARN, name, e.strerror or str(e), True)
    finally:
        os.close(fd)
    content = node["content"] = sealer.store(data)
    size = node["size"] = len(data)
    changed = (fst.st_mtime_ns, fst.st_size) != (st.st_mtime_ns, st.st_size) or \
        size != st.st_size
    part = file_part(name, node["mode"], st.st_uid, st.st_gid, size, st.st_mtime_ns,
                     st.st_ctime_ns, st.st_ino, 1, 0)
    return (READ, name, size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, content, changed,
            msgpack.packb(node, use_bin_type=True), part)
