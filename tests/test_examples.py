"""The examples run (a few steps each), so they never rot."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed (see the example's install line)")


def test_large_images_from_dataloaders(tmp_path):
    out = run("large_images.py", "--size", "64", "--fit", "300", "--test", "150", "--iterations", "8", cwd=tmp_path)
    assert "decoded in the span of the fit inputs: True (rank 299 of 12,288 input values)" in out
    assert "stage3 [(" in out  # phases found per layer


def test_vit_tokens(tmp_path):
    out = run("vit_tokens.py", "--iterations", "4", "--tokens", "cls", cwd=tmp_path)
    assert "token 0 of 17" in out and "blocks.1 (tokens=cls)" in out


@needs("lightning")
def test_lightning_callback(tmp_path):
    out = run("lightning_callback.py", "--steps", "4", "--out", "lt", cwd=tmp_path)
    assert "net.features.3" in out
    assert (tmp_path / "lt" / "phases" / "curves.png").exists()


@needs("transformers")
@needs("accelerate")
def test_hf_trainer(tmp_path):
    out = run("hf_trainer.py", "--steps", "4", "--out", "hf", cwd=tmp_path)
    assert "vit.layers.1" in out
    assert (tmp_path / "hf" / "phases" / "phases.json").exists()


def test_posthoc_plain_loop(tmp_path):
    """The README's post-hoc study: a plain loop's checkpoints, analysed, agree with the live tracker."""
    out = run("posthoc_plain_loop.py", "--iterations", "16", "--every", "4", "--out", "ph", cwd=tmp_path)
    assert "final weights of the two loops identical: True" in out
    rel = float(out.split("largest relative difference at the 4 shared steps: ")[1].split()[0])  # 0, 4, 8, 16
    assert rel < 1e-4
    assert (tmp_path / "ph" / "posthoc.png").stat().st_size > 10_000
    assert (tmp_path / "ph" / "analyzed" / "phases.json").exists()
