"""Deterministic benchmark dataset, shaped like the one in BENCH-NOTES.md.

At ``--scale 1`` (the default) it writes about 1 GB::

    text/   ~45,000 small text files (~300 MB) in a two-level directory tree
    lib/    ~270 pseudo "shared libraries" (~300 MB); families of versions that
            share most of their bytes, plus a few runtime blocks shared by many
    big/    two 100 MiB incompressible random files
    log/    one 200 MiB log: half unique lines, half one 4 MiB block repeated

Everything derives from ``--seed`` (same seed and scale, same bytes; mtimes are
fixed too). ``--mutate`` applies the "small mutation" of BENCH-NOTES in place:
2% of the small files get one line ROT13-ed and each big file (the two random
files and the log) gets 1 MiB changed (XOR with a keystream, ROT13 for the log).
Both transformations are involutions, so running ``--mutate`` a second time
restores the original bytes (only mtimes differ). A stamp file ``DIR.json``
records the parameters and whether the dataset is currently mutated.

Usage::

    python bench/gen_dataset.py DIR [--scale 0.3] [--seed 1] [--force]
    python bench/gen_dataset.py DIR --mutate     # apply (or undo) the mutation
"""

from __future__ import annotations

import argparse
import codecs
import hashlib
import itertools
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

MiB = 1 << 20
FIXED_MTIME = 1_700_000_000  # 2023-11-14, so that regenerated trees are identical

# Full-scale (scale=1.0) sizes.
TEXT_BYTES = 300_000_000
TEXT_AVG_FILE = 6_700
LIB_BYTES = 300_000_000
LIB_AVG_FILE = 1_100_000
BIG_FILE_BYTES = 100 * MiB
BIG_FILES = 2
LOG_BYTES = 200 * MiB
LOG_REPEAT_BLOCK = 4 * MiB
MUTATE_SMALL_FRACTION = 0.02
MUTATE_BIG_BYTES = 1 * MiB

STAMP_VERSION = 1


@dataclass
class Stamp:
    """What a generated dataset was made from, kept beside it as ``DIR.json``."""

    version: int
    seed: int
    scale: float
    files: int
    bytes: int
    mutated: bool = False


def stamp_path(root: Path) -> Path:
    return root.with_name(root.name + ".json")


def read_stamp(root: Path) -> Stamp | None:
    """The stamp of the dataset at ``root``, or None if there is none (or it is stale)."""
    p = stamp_path(root)
    if not p.is_file() or not root.is_dir():
        return None
    try:
        data = json.loads(p.read_text())
        st = Stamp(**data)
    except (ValueError, TypeError):
        return None
    return st if st.version == STAMP_VERSION else None


def write_stamp(root: Path, st: Stamp) -> None:
    stamp_path(root).write_text(json.dumps(asdict(st), indent=1) + "\n")


def _rng(seed: int, *parts: object) -> random.Random:
    """An independent generator per component/file: string seeds hash with SHA-512."""
    return random.Random("/".join([str(seed), *map(str, parts)]))


def _keystream(seed: int, label: str, n: int) -> bytes:
    """``n`` pseudo-random (incompressible) bytes, fast (SHAKE-256 XOF)."""
    out = bytearray()
    block = 0
    while len(out) < n:
        want = min(64 * MiB, n - len(out))
        h = hashlib.shake_256(f"{seed}/{label}/{block}".encode())
        out += h.digest(want)
        block += 1
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


class Vocabulary:
    """Pseudo-words with a Zipf distribution, and a newline token ~ every 10 words."""

    def __init__(self, seed: int, size: int = 6000) -> None:
        rng = _rng(seed, "vocab")
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        lw = [13, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < size:
            n = min(12, max(1, int(rng.expovariate(1 / 5.0)) + 1))
            w = "".join(rng.choices(letters, weights=lw, k=n))
            if w not in seen:
                seen.add(w)
                words.append(w)
        # Some code-ish tokens so that the tree has more than prose.
        words[10:10] = ["{", "}", "=", "return", "def", "(", ")", ";", "#", "->", "0", "1"]
        weights = [1.0 / (i + 1) ** 1.05 for i in range(len(words))]
        total = sum(weights)
        words.append("\n")
        weights.append(total / 9)
        self.words = words
        self.cum = list(itertools.accumulate(weights))

    def text(self, rng: random.Random, nbytes: int) -> bytes:
        """About ``nbytes`` of text (exactly ``nbytes``, cut at the end)."""
        k = max(4, nbytes // 6 + 8)
        out = " ".join(rng.choices(self.words, cum_weights=self.cum, k=k)).encode()
        while len(out) < nbytes:
            out += b" " + " ".join(rng.choices(self.words, cum_weights=self.cum, k=k)).encode()
        return out[:nbytes - 1] + b"\n"


def _small_sizes(rng: random.Random, total: int, avg: int) -> list[int]:
    """Log-normal sizes (median ~ avg/2.2, long tail up to 256 KiB) summing to ~total."""
    sizes: list[int] = []
    acc = 0
    while acc < total:
        s = int(rng.lognormvariate(0, 1.25) * avg / 2.2)
        s = max(40, min(s, 256 * 1024))
        sizes.append(s)
        acc += s
    return sizes


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def text_files(root: Path, seed: int, scale: float) -> list[Path]:
    """Paths of the small text files, in a stable order (list only, no I/O)."""
    rng = _rng(seed, "text-sizes")
    sizes = _small_sizes(rng, int(TEXT_BYTES * scale), TEXT_AVG_FILE)
    exts = [".txt", ".md", ".py", ".c", ".h", ".json", ".rst", ".cfg"]
    paths = []
    for i in range(len(sizes)):
        d1, d2 = i // 2500, (i // 50) % 50
        paths.append(root / "text" / f"d{d1:03d}" / f"s{d2:02d}" / f"f{i:06d}{exts[i % len(exts)]}")
    return paths


def gen_text(root: Path, seed: int, scale: float, vocab: Vocabulary) -> tuple[int, int]:
    rng = _rng(seed, "text-sizes")
    sizes = _small_sizes(rng, int(TEXT_BYTES * scale), TEXT_AVG_FILE)
    paths = text_files(root, seed, scale)
    total = 0
    for i, (p, size) in enumerate(zip(paths, sizes, strict=True)):
        frng = _rng(seed, "text", i)
        header = f"# file {i} {frng.getrandbits(64):016x}\n".encode()
        body = vocab.text(frng, max(1, size - len(header)))
        data = (header + body)[:size]
        _write(p, data)
        total += len(data)
    return len(paths), total


def _lib_body(rng: random.Random, seed: int, label: str, size: int, vocab: Vocabulary) -> bytes:
    """Code-like bytes: random 'machine code', zero padding, string/symbol tables."""
    parts: list[bytes] = []
    n = 0
    j = 0
    while n < size:
        kind = rng.random()
        ln = rng.randint(4 * 1024, 96 * 1024)
        if kind < 0.55:
            seg = _keystream(seed, f"{label}/code/{j}", ln)
        elif kind < 0.70:
            # relocation/padding-like tables: very compressible
            unit = rng.randbytes(rng.choice([4, 8, 16])) + bytes(rng.choice([0, 8, 24]))
            seg = unit * (ln // len(unit) + 1)
        else:
            seg = vocab.text(rng, ln).replace(b" ", b"\0")  # symbol/string table
        parts.append(seg[:ln])
        n += ln
        j += 1
    return b"".join(parts)[:size]


def gen_libs(root: Path, seed: int, scale: float, vocab: Vocabulary) -> tuple[int, int]:
    """Families of library versions (sharing most bytes) plus shared runtime blocks."""
    rng = _rng(seed, "libs")
    target = int(LIB_BYTES * scale)
    runtime = [_lib_body(_rng(seed, "rt", k), seed, f"rt{k}", 2 * MiB, vocab) for k in range(3)]
    count = 0
    total = 0
    fam = 0
    while total < target:
        base_size = max(16 * 1024, min(int(rng.lognormvariate(0, 1.0) * LIB_AVG_FILE / 1.65),
                                       12 * MiB))
        frng = _rng(seed, "lib", fam)
        base = _lib_body(frng, seed, f"lib{fam}", base_size, vocab)
        if base_size > 3 * MiB and frng.random() < 0.5:
            # statically linked runtime: the same 2 MiB block inside several libraries
            base = base[: base_size // 2] + runtime[fam % 3] + base[base_size // 2:]
        versions = frng.choice([1, 1, 1, 2, 2, 3])
        name = f"lib{vocab.words[fam % 4000 + 20].strip() or 'x'}{fam}"
        data = base
        for v in range(versions):
            if v:
                # a new version: a few patched regions, the rest identical
                buf = bytearray(data)
                for p in range(frng.randint(1, 4)):
                    ln = min(len(buf), frng.randint(1024, 32 * 1024))
                    off = frng.randrange(0, max(1, len(buf) - ln))
                    buf[off:off + ln] = _keystream(seed, f"lib{fam}/v{v}/{p}", ln)
                data = bytes(buf)
            _write(root / "lib" / f"{name}.so.{1 + fam % 7}.{v}.{fam % 13}", data)
            count += 1
            total += len(data)
            if total >= target:
                break
        fam += 1
    return count, total


def big_files(root: Path) -> list[Path]:
    return [root / "big" / f"random-{k}.bin" for k in range(BIG_FILES)]


def log_file(root: Path) -> Path:
    return root / "log" / "app.log"


def gen_big(root: Path, seed: int, scale: float) -> tuple[int, int]:
    size = int(BIG_FILE_BYTES * scale)
    for k, p in enumerate(big_files(root)):
        _write(p, _keystream(seed, f"big{k}", size))
    return BIG_FILES, size * BIG_FILES


def _log_lines(rng: random.Random, start: int, nbytes: int, tag: str) -> bytes:
    services = ["sshd", "nginx", "postgres", "cron", "kernel", "dockerd", "systemd", "app"]
    verbs = ["accepted", "closed", "timeout", "GET /api/v1/items", "POST /login", "vacuum",
             "started", "stopped", "retrying", "cache miss", "cache hit", "flushed"]
    out: list[str] = []
    n = 0
    i = start
    while n < nbytes:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(FIXED_MTIME + i // 20))
        line = (f"{ts}.{i % 1000:03d}Z host{rng.randrange(16):02d} "
                f"{rng.choice(services)}[{rng.randrange(100, 65000)}]: {rng.choice(verbs)} "
                f"{tag} id={rng.getrandbits(48):012x} dur={rng.randrange(1, 5000)}ms\n")
        out.append(line)
        n += len(line)
        i += 1
    return "".join(out).encode()[:nbytes]


def gen_log(root: Path, seed: int, scale: float) -> tuple[int, int]:
    """Alternating 4 MiB segments: fresh unique lines, then the same repeated block."""
    size = int(LOG_BYTES * scale)
    rng = _rng(seed, "log")
    block = _log_lines(_rng(seed, "log-block"), 0, LOG_REPEAT_BLOCK, "repeat")
    p = log_file(root)
    p.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    seg = 0
    with open(p, "wb") as f:
        while written < size:
            want = min(LOG_REPEAT_BLOCK, size - written)
            data = (_log_lines(rng, seg * 100_000, want, "unique") if seg % 2 == 0
                    else block[:want])
            f.write(data)
            written += len(data)
            seg += 1
    os.utime(p, (FIXED_MTIME, FIXED_MTIME))
    return 1, written


def generate(root: Path, seed: int = 1, scale: float = 1.0, quiet: bool = False) -> Stamp:
    """Write the dataset into ``root`` (which must not exist) and stamp it."""
    t0 = time.monotonic()
    root.mkdir(parents=True)
    vocab = Vocabulary(seed)
    files = 0
    nbytes = 0
    steps: list[tuple[str, Callable[[], tuple[int, int]]]] = [
        ("text", lambda: gen_text(root, seed, scale, vocab)),
        ("lib", lambda: gen_libs(root, seed, scale, vocab)),
        ("big", lambda: gen_big(root, seed, scale)),
        ("log", lambda: gen_log(root, seed, scale)),
    ]
    for label, fn in steps:
        t = time.monotonic()
        f, b = fn()
        files += f
        nbytes += b
        if not quiet:
            print(f"  {label:5s} {f:7d} files {b / 1e6:9.1f} MB  {time.monotonic() - t:6.1f} s",
                  file=sys.stderr)
    st = Stamp(STAMP_VERSION, seed, scale, files, nbytes)
    write_stamp(root, st)
    if not quiet:
        print(f"dataset {root}: {files} files, {nbytes / 1e6:.1f} MB "
              f"in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return st


def _rot13_bytes(b: bytes) -> bytes:
    return codecs.encode(b.decode("latin-1"), "rot13").encode("latin-1")


def mutate(root: Path) -> Stamp:
    """Apply (or, if applied, undo) the small mutation, in place and deterministically."""
    st = read_stamp(root)
    if st is None:
        raise SystemExit(f"{root}: no dataset stamp ({stamp_path(root)}); generate it first")
    seed, scale = st.seed, st.scale
    rng = _rng(seed, "mutate")
    paths = text_files(root, seed, scale)
    k = max(1, round(len(paths) * MUTATE_SMALL_FRACTION))
    for p in sorted(rng.sample(paths, k)):
        data = p.read_bytes()
        # ROT13 one line (or the first 200 bytes): an involution that keeps text text
        lines = data.split(b"\n")
        idx = min(1, len(lines) - 1) if len(lines) < 3 else rng.randrange(1, len(lines) - 1)
        lines[idx] = _rot13_bytes(lines[idx]) if lines[idx] else lines[idx]
        new = b"\n".join(lines)
        if new == data:
            new = _rot13_bytes(data[:200]) + data[200:]
        with open(p, "r+b") as f:
            f.write(new)
    for label, p in [(f"big{i}", b) for i, b in enumerate(big_files(root))] + [
        ("log", log_file(root))
    ]:
        size = p.stat().st_size
        ln = min(MUTATE_BIG_BYTES, size)
        off = rng.randrange(0, max(1, size - ln)) & ~4095
        with open(p, "r+b") as f:
            f.seek(off)
            old = f.read(ln)
            new = _rot13_bytes(old) if label == "log" else _xor(
                old, _keystream(seed, f"mutate/{label}", len(old)))
            f.seek(off)
            f.write(new)
    st.mutated = not st.mutated
    write_stamp(root, st)
    return st


def ensure(root: Path, seed: int, scale: float, quiet: bool = False) -> Stamp:
    """Reuse ``root`` if it holds this (unmutated) dataset, else (re)generate it."""
    st = read_stamp(root)
    if st is not None and st.seed == seed and st.scale == scale:
        if st.mutated:
            st = mutate(root)
        return st
    if root.exists():
        shutil.rmtree(root)
    return generate(root, seed, scale, quiet)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate (or mutate) the benchmark dataset.")
    ap.add_argument("dir", type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 ~ 1 GB (default)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="regenerate even if DIR is current")
    ap.add_argument("--mutate", action="store_true",
                    help="apply the small mutation in place (again: undo it)")
    args = ap.parse_args(argv)
    root: Path = args.dir
    if args.mutate:
        st = mutate(root)
        print(f"{root}: mutation {'applied' if st.mutated else 'undone'}", file=sys.stderr)
        return 0
    if args.force and root.exists():
        shutil.rmtree(root)
    elif root.exists():
        st0 = read_stamp(root)
        if st0 is None:
            raise SystemExit(f"{root} exists and is not a dataset; use --force to replace it")
    ensure(root, args.seed, args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
