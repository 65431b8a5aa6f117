"""Installing tiervault prints no deprecation warning of the build backend: the
license is an SPDX expression (PEP 639), not the deprecated TOML table."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string() -> None:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "MIT"
    # setuptools reads the string form as an SPDX expression from version 77 on.
    assert any(r.replace(" ", "").startswith("setuptools>=") and
               int(r.split(">=")[1].split(".")[0]) >= 77
               for r in doc["build-system"]["requires"]), doc["build-system"]


@pytest.mark.slow
def test_building_the_wheel_gives_no_deprecation_warning(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w",
                           str(tmp_path), str(ROOT)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "project.license` as a TOML table is deprecated" not in text
    assert "License-Expression" in subprocess.run(
        ["unzip", "-p", next(str(p) for p in tmp_path.glob("*.whl")), "*/METADATA"],
        capture_output=True, text=True).stdout
