import pandas as pd
import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.outputs.compare import LoadedRun, aggregate, differing_keys
from phasescope.config import ConfigError
from phasescope.run.presets import PRESETS, preset_config

from .test_cli import TINY

runner = CliRunner()


def test_aggregate_mean_and_spread():
    def run(values, seed):
        m = pd.DataFrame({"iteration": [0, 1], "layer": "l", "split": "test", "metric": "reconstruction_mse",
                          "value": values, "ci_low": float("nan"), "ci_high": float("nan")})
        return LoadedRun(path=None, config={"seed": seed, "lr": 0.1}, metrics=m, phases={})

    agg = aggregate([run([1.0, 2.0], 0), run([3.0, 6.0], 1)])
    assert agg["mean"].tolist() == [2.0, 4.0]
    assert agg["std"].tolist() == pytest.approx([2 ** 0.5, 8 ** 0.5])
    assert agg["n"].tolist() == [2, 2]
    assert differing_keys([run([1, 1], 0), run([1, 1], 1)]) == ["seed"]


def test_seeds_run_and_compare(tmp_path):
    out = tmp_path / "seeds"
    res = runner.invoke(app, ["run", *TINY, "--seeds", "0,1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "seeds.csv")
    assert sorted(table.seed) == [0, 1]
    assert {"three_phases", "min_iteration", "relative_increase"} <= set(table.columns)
    agreement = pd.read_csv(out / "agreement.csv")
    assert agreement.seeds.tolist() == [2]
    assert (out / "seeds.png").exists() and (out / "aggregate.csv").exists()
    res = runner.invoke(app, ["compare", str(out / "seed-0"), str(out / "seed-1"), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert "seed=0" in res.output and (tmp_path / "cmp" / "compare.png").exists()
    assert len(pd.read_csv(tmp_path / "cmp" / "compare.csv")) == 2


def test_presets_resolve_and_options_override():
    for name in PRESETS:
        preset_config(name, {})
    cfg = preset_config("cifar10-vgg8", {"lr": 0.01, "seed": None})
    assert cfg.model == "vgg8" and cfg.lr == 0.01 and cfg.width == 0.5
    with pytest.raises(ConfigError, match="cifar10-vgg8"):
        preset_config("nope", {})


def test_compare_rejects_a_folder_that_is_not_a_run(tmp_path):
    res = runner.invoke(app, ["compare", str(tmp_path)])
    assert res.exit_code == 2 and "not a phasescope run folder" in res.output
