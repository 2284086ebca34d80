"""docs/results.md is generated from the committed result files; it must match them."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_listed_source_exists():
    sources = tomllib.loads((ROOT / "docs" / "results" / "sources.toml").read_text())
    missing = [e["path"] for kind in ("folder", "table") for e in sources.get(kind, []) if not (ROOT / e["path"]).exists()]
    assert not missing, f"docs/results/sources.toml lists files that are not there: {missing}"


def test_results_page_is_up_to_date():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "results_page.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
