"""Checks of the benchmark helpers (no timing asserts): ``pytest bench``."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_dataset
import run

SCALE = 0.002


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "data"
    gen_dataset.generate(root, seed=7, scale=SCALE, quiet=True)
    return root


def test_deterministic(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "data"
    gen_dataset.generate(other, seed=7, scale=SCALE, quiet=True)
    assert _digest(other) == _digest(dataset)
    third = tmp_path / "seed8"
    gen_dataset.generate(third, seed=8, scale=SCALE, quiet=True)
    assert _digest(third) != _digest(dataset)


def test_shape(dataset: Path) -> None:
    st = gen_dataset.read_stamp(dataset)
    assert st is not None and not st.mutated
    sizes = {p: p.stat().st_size for p in dataset.rglob("*") if p.is_file()}
    assert sum(sizes.values()) == st.bytes
    assert len(sizes) == st.files
    big = gen_dataset.big_files(dataset)
    assert all(sizes[b] == int(gen_dataset.BIG_FILE_BYTES * SCALE) for b in big)
    assert sizes[gen_dataset.log_file(dataset)] == int(gen_dataset.LOG_BYTES * SCALE)
    text = [p for p in sizes if "text" in p.parts]
    assert len(text) > 50


def test_mutate_is_an_involution(dataset: Path) -> None:
    before = _digest(dataset)
    st = gen_dataset.mutate(dataset)
    assert st.mutated
    after = _digest(dataset)
    changed = {k for k in before if before[k] != after[k]}
    text = [k for k in before if k.startswith("text/")]
    assert len({k for k in changed if k.startswith("text/")}) == max(
        1, round(len(text) * gen_dataset.MUTATE_SMALL_FRACTION))
    assert {"big/random-0.bin", "big/random-1.bin", "log/app.log"} <= changed
    # sizes unchanged
    assert sum((dataset / k).stat().st_size for k in before) == st.bytes
    st = gen_dataset.mutate(dataset)
    assert not st.mutated
    assert _digest(dataset) == before


def test_compare_trees(dataset: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    assert run.compare_trees(dataset, copy) == []
    victim = gen_dataset.log_file(copy)
    victim.write_bytes(victim.read_bytes()[:-1] + b"?")
    assert run.compare_trees(dataset, copy) == ["differs log/app.log"]


def test_render_tables() -> None:
    res = run.Results()
    for tool in ("tiervault", "restic", "borg"):
        for step, _ in run.MAIN_STEPS:
            for w in (1.0, 2.0, 3.0):
                res.add("main", tool, step, run.Measure(w, w / 2, 1024 * 100, 0,
                                                        {"others_cpu": 0.1}))
        res.add_size("main", tool, "after initial backup", 10**8)
    st = gen_dataset.Stamp(1, 1, 0.1, 10, 1000)
    ns = argparse.Namespace(runs=3)
    text = run.render(res, ns, st, ["machine"], 60.0)
    assert "| initial backup, warm cache (fresh repo) | 2.00 s (1.00-3.00)" in text
    assert "1.00x" in text
