"""Scale benchmark (issue 11): N small files, tiervault beside restic in one run.

    python bench/scale.py --files 1000000 [--files 100000 ...] [--root /dev/shm/tvscale]
                          [--tools tiervault,restic] [--json-out FILE]

The dataset: N files of 10-300 words each (deterministic), 1,000 per directory,
in a tmpfs (``--root``, default /dev/shm/tvscale) so that the disk does not
decide. Each tool gets a fresh repository in the same tmpfs, then: initial
backup, unchanged re-backup, full restore into the tmpfs (checked: same file
count and bytes). Wall time by the harness, CPU and peak RSS by GNU time (see
README: measuring). With several ``--files`` values, the table also gives how
tiervault's peak RSS grows per file between the smallest and the largest N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # the harness's measuring and tools

PER_DIR = 1000
_WORDS = [w for line in (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ",
    "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco ",
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate ",
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident ",
    "sunt culpa qui officia deserunt mollit anim id est backup vault tier server speed ",
    "restore snapshot revision index pack chunk ",
) for w in line.split()]


def generate(root: Path, n: int, seed: int = 1) -> tuple[int, int]:
    """N files of 10-300 words, PER_DIR per directory; returns (files, bytes).
    Reuses a complete earlier dataset (a stamp file records it)."""
    stamp = root / ".stamp.json"
    if stamp.exists():
        doc = json.loads(stamp.read_text())
        if doc.get("files") == n and doc.get("seed") == seed:
            return int(doc["files"]), int(doc["bytes"])
    bench.rmtree(root)
    rng = random.Random(seed)
    words = _WORDS
    total = 0
    for i in range(n):
        d = root / f"d{i // PER_DIR:05d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True)
        k = rng.randint(10, 300)
        text = (" ".join(rng.choices(words, k=k)) + f"\n{i}\n").encode()
        (d / f"f{i % PER_DIR:04d}.txt").write_bytes(text)
        total += len(text)
    stamp.write_text(json.dumps({"files": n, "seed": seed, "bytes": total}))
    return n, total


def count_tree(path: Path) -> tuple[int, int]:
    files = nbytes = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            if name != ".stamp.json":
                files += 1
                nbytes += os.lstat(os.path.join(dirpath, name)).st_size
    return files, nbytes


STEPS = ("backup_initial", "backup_unchanged", "restore")


def one_tool(tool: bench.Tool, restore_root: Path, expect: tuple[int, int]
             ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tool.fresh()
    for step, label in (("backup_initial", "backup-initial"),
                        ("backup_unchanged", "backup-unchanged")):
        m = tool.backup(label)
        out[step] = {"wall": m.wall, "cpu": m.cpu, "rss_mib": m.maxrss_kib / 1024,
                     "pss_mib": m.info.get("tree_pss_kib", 0) / 1024}
    target = restore_root / tool.name
    bench.rmtree(target)
    target.mkdir(parents=True)
    m = tool.restore(target)
    got = count_tree(target / tool.data.relative_to("/"))
    out["restore"] = {"wall": m.wall, "cpu": m.cpu, "rss_mib": m.maxrss_kib / 1024,
                      "pss_mib": m.info.get("tree_pss_kib", 0) / 1024,
                      "verify": "ok" if got == expect else f"restored {got}, expected {expect}"}
    bench.rmtree(target)
    tool.cleanup()
    return out


def table(results: dict[int, dict[str, dict[str, Any]]]) -> str:
    lines = ["| files | step | tiervault wall | restic wall | ratio | tiervault RSS | "
             "restic RSS | ratio | tiervault CPU |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, by_tool in sorted(results.items()):
        tv, rs = by_tool.get("tiervault", {}), by_tool.get("restic", {})
        for step in STEPS:
            a, b = tv.get(step), rs.get(step)
            if a is None:
                continue
            wr = f"{a['wall'] / b['wall']:.2f}x" if b else "-"
            mr = f"{a['rss_mib'] / b['rss_mib']:.2f}x" if b else "-"
            lines.append(
                f"| {n:,} | {step} | {a['wall']:.1f} s | {b['wall'] if b else 0:.1f} s | {wr} | "
                f"{a['rss_mib']:.0f} MiB | {b['rss_mib'] if b else 0:.0f} MiB | {mr} | "
                f"{a['cpu']:.1f} s |")
    ns = sorted(n for n in results if "tiervault" in results[n])
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        lines.append("")
        for step in STEPS:
            a, b = results[lo]["tiervault"][step], results[hi]["tiervault"][step]
            per = (b["rss_mib"] - a["rss_mib"]) * 1024 * 1024 / (hi - lo)
            lines.append(f"- tiervault {step}: peak RSS grows {per:.0f} bytes per file "
                         f"from {lo:,} to {hi:,} files")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, action="append",
                    help="number of files (repeatable; default 1000000)")
    ap.add_argument("--root", type=Path, default=Path("/dev/shm/tvscale"))
    ap.add_argument("--tools", default="tiervault,restic")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--keep-data", action="store_true", help="leave the dataset for next time")
    args = ap.parse_args(argv)
    sizes = args.files or [1_000_000]
    tools = args.tools.split(",")
    root: Path = args.root
    runner = bench.Runner(root / "logs" / time.strftime("%Y%m%d-%H%M%S"), args.timeout,
                          verbose=True)
    bench.Tiervault.pycache = root / "pycache"
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for n in sizes:
        data = root / f"data-{n}"
        t0 = time.perf_counter()
        expect = generate(data, n)
        print(f"dataset {n:,} files, {expect[1] / 1e6:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        results[n] = {}
        for name in tools:
            cls = {"tiervault": bench.Tiervault, "restic": bench.Restic}[name]
            tool = cls(runner, root / f"work-{name}", data)
            results[n][name] = one_tool(tool, root / "restore", expect)
        if not args.keep_data:
            bench.rmtree(data)
    report = table(results)
    print(report)
    if args.json_out:
        args.json_out.write_text(json.dumps({"results": results,
                                             "machine": bench.machine_info(root)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
