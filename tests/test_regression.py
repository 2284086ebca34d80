"""The default run's results survive refactoring: a short default run against stored files.

tests/fixtures/default-128 holds metrics.csv and phases.json of
``phasescope run --iterations 128 --threads 1`` made before the measurement engine was
redesigned (about.json says by what). Measurement changes since (BatchNorm recalibrated on
a 1,024-sample subset) must leave every test reconstruction and probe value inside the
stored 95% interval, and the same phases with the same minimum. Its config.json holds the
configuration, data, measurement and model sections of that run before extensions became
plug-ins: today's must be the same (versions aside), keys in the same order.
"""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from phasescope import RunConfig, run_experiment

FIXTURE = Path(__file__).parent / "fixtures" / "default-128"


@pytest.mark.slow
def test_short_default_run_matches_the_stored_results(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_experiment(RunConfig(iterations=128), tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    old = pd.read_csv(FIXTURE / "metrics.csv")
    key = ["iteration", "layer", "split", "metric"]
    both = old.merge(result.metrics, on=key, suffixes=("_old", "_new"))
    core = both[both.metric.isin(["reconstruction_mse", "probe_accuracy"]) & (both.split == "test")]
    assert len(core) == 2 * 9  # 9 checkpoints: 0, 1, 2, ..., 128
    outside = core[(core.value_new < core.ci_low_old) | (core.value_new > core.ci_high_old)]
    assert outside.empty, outside[key + ["value_old", "value_new", "ci_low_old", "ci_high_old"]]
    stored = json.loads((FIXTURE / "phases.json").read_text())["layers"]["features.3"]
    now = result.payload["layers"]["features.3"]
    assert [p["name"] for p in now["phases"]] == [p["name"] for p in stored["phases"]]
    assert now["min_iteration"] == stored["min_iteration"]
    # the default --test-samples (2000) is clamped to the 1,000 test digits: recorded, not told
    assert not any("--test-samples" in n for n in result.notes), result.notes
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    before = json.loads((FIXTURE / "config.json").read_text())
    assert {k: v for k, v in saved.items() if k != "versions"} == before
    assert [k for k in saved if k != "versions"] == list(before) and list(saved["config"]) == list(before["config"])
