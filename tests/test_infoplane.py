"""InfoPlane: the information-plane extension inside a real PhaseTracker."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from phasescope import PhaseTracker, RunConfig, log_schedule, run_experiment
from phasescope.config import ConfigError
from phasescope.data import load_dataset
from phasescope.infoplane import (ESTIMATORS, InfoPlane, compression_summary, from_options, infoplane_extensions,
                                  mi_curves, parse_estimators, plot_infoplane, reconstruction_minima)
from phasescope.run.models import build_model
from phasescope.outputs.figures import phases_payload
from phasescope.run.training import BatchStream, make_optimizer, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def fresh(digits):
    torch.manual_seed(0)
    return build_model("cnn", digits.input_shape, 10, width=0.5)


def tracked_run(digits, ext, iterations=16, layers=("features.1", "features.3"), **kw):
    model = fresh(digits)
    tracker = PhaseTracker(model, list(layers), (digits.x_train[:400], digits.y_train[:400]),
                           (digits.x_test[:200], digits.y_test[:200]), schedule=log_schedule(iterations),
                           bootstrap=100, extensions=[ext], **kw)
    opt = make_optimizer(RunConfig(lr=0.05, batch_size=32), model.parameters())
    train(model, opt, BatchStream(digits.x_train, digits.y_train, 32, seed=0), iterations, torch.device("cpu"),
          on_iteration=lambda m, t: tracker.maybe_measure(m, t))
    return tracker


# ---------------------------------------------------------------------- options
def test_from_options_parses_and_rejects_unknown_estimators():
    assert from_options("binning,kde").estimators == ["binning", "kde"]
    assert from_options(" KDE , quantile ").estimators == ["kde", "quantile"]
    with pytest.raises(ConfigError) as e:
        from_options("binning,mine")
    assert "mine" in str(e.value) and all(name in str(e.value) for name in ESTIMATORS)
    with pytest.raises(ConfigError, match="No information-plane estimator"):
        parse_estimators(" , ")
    with pytest.raises(ConfigError, match="twice"):
        parse_estimators("kde,kde")
    with pytest.raises(ConfigError, match="bins"):
        InfoPlane(bins=1)
    with pytest.raises(ConfigError, match="split"):
        InfoPlane(split="val")


def test_config_section_resolves_and_reaches_the_extension():
    with pytest.raises(ConfigError, match="Unknown infoplane option"):
        RunConfig.from_dict({"infoplane": {"estimators": ["kde"], "bandwidth": 1}})
    with pytest.raises(ConfigError, match="choose from"):
        RunConfig.from_dict({"infoplane": {"estimators": ["kdee"]}})
    cfg = RunConfig.from_dict({"seed": 3, "infoplane": {"estimators": ["binning", "kde"], "bins": 20}})
    (ext,) = infoplane_extensions(cfg)
    assert ext.estimators == ["binning", "kde"] and ext.bins == 20 and ext.seed == 3 and ext.max_units == 256
    assert infoplane_extensions(cfg, given=[ext]) == []
    assert infoplane_extensions(RunConfig()) == []


def test_cli_info_plane_option(tmp_path):
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["run", "--dataset", "digits", "--width", "0.5", "--iterations", "4", "--fit-samples",
                                   "300", "--test-samples", "150", "--bootstrap", "50", "--no-samples", "--quiet",
                                   "--info-plane", "binning,kde", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "infoplane.png").exists()
    assert json.loads((out / "config.json").read_text())["config"]["infoplane"]["estimators"] == ["binning", "kde"]
    bad = CliRunner().invoke(app, ["run", "--info-plane", "entropy", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "binning" in bad.output


# ---------------------------------------------------------------------- inside a tracker
def test_rows_from_a_real_tracker_and_the_figure(digits, tmp_path):
    ext = InfoPlane(("binning", "quantile", "kde", "kde-lower"), max_samples=300)
    tracker = tracked_run(digits, ext)
    df = tracker.results()
    assert "estimator" in df.columns
    mi = df[df.metric.isin(["mi_input", "mi_label"])]
    assert set(mi.estimator) == {"binning", "quantile", "kde", "kde-lower"}
    assert set(mi.layer) == {"features.1", "features.3"} and set(mi.split) == {"train"}
    assert sorted(mi.iteration.unique()) == log_schedule(16)
    assert len(mi) == len(log_schedule(16)) * 2 * 4 * 2  # checkpoints x layers x estimators x metrics
    assert mi.value.notna().all() and mi.ci_low.isna().all()
    assert df[~df.metric.isin(["mi_input", "mi_label"])].estimator.isna().all()  # other rows untouched
    n, hy = ext.samples_["n"], ext.samples_["label_entropy"]
    assert n == 300
    assert (mi[mi.metric == "mi_input"].value <= math.log2(n) + 1e-9).all()
    assert (mi[mi.metric == "mi_label"].value <= hy + 1e-6).all()
    kde = mi[mi.estimator == "kde"].set_index(["iteration", "layer", "metric"]).value
    low = mi[mi.estimator == "kde-lower"].set_index(["iteration", "layer", "metric"]).value
    assert (low.xs("mi_input", level="metric") <= kde.xs("mi_input", level="metric") + 1e-9).all()
    # the budgets: features.1 (16 x 2 x 2 = 64 units at width 0.5) fits in 256
    assert ext.reduction["features.1"]["method"] == "none" and ext.reduction["features.1"]["units"] == 64

    payload = phases_payload(tracker.phases(), df)
    payload.update(ext.summarise(df, payload))
    section = payload["infoplane"]
    assert section["settings"]["bins"] == 30 and section["settings"]["kde_sigma_mode"] == "relative"
    for layer in ("features.1", "features.3"):
        s = section["layers"][layer]["estimators"]["kde"]
        assert s["reconstruction_min_iteration"] == payload["layers"][layer]["min_iteration"]
        assert set(s["sigma"]) == set(log_schedule(16))
    json.dumps(payload)  # phases.json-ready
    written = ext.write(tmp_path, df, payload, figure=True)
    assert written == [tmp_path / "infoplane.png"]
    with Image.open(written[0]) as im:
        assert im.size[0] > 1000 and im.size[1] > 300
    assert ext.write(tmp_path / "none", df, payload, figure=False) == []


def test_budgets_subset_units_and_samples(digits):
    ext = InfoPlane(("binning", "kde"), max_units=8, max_samples=100, split="test", seed=1)
    tracker = tracked_run(digits, ext, iterations=2, layers=("features.0", "features.1"))
    # features.0: 8 x 4 x 4 average-pooled to 8 x 1 x 1; features.1: 16 x 2 x 2 pooled to 1 x 1, then 8 of 16 channels
    assert ext.reduction["features.0"] == {"units": 128, "kept": 8, "method": "average-pooled 4x4 -> 1x1",
                                           "max_units": 8, "grid": 1}
    assert ext.reduction["features.1"]["kept"] == 8
    assert ext.reduction["features.1"]["method"] == "average-pooled 2x2 -> 1x1, random 8 of 16 channels"
    df = tracker.results()
    assert set(df[df.metric == "mi_input"].split) == {"test"}
    assert ext.samples_["n"] == 100 and ext.samples_["of"] == 200


def test_budget_on_features_the_tracker_already_pooled(digits):
    """max_features=32 makes the tracker pool features.0 (8 x 4 x 4) to 8 x 2 x 2; the unit
    budget then pools that layout further (not a random subset of its flattened units)."""
    ext = InfoPlane(("kde",), max_units=8, max_samples=100)
    tracked_run(digits, ext, iterations=1, layers=("features.0",), max_features=32)
    assert ext.reduction["features.0"]["units"] == 32
    assert ext.reduction["features.0"]["method"] == "average-pooled 2x2 -> 1x1"
    assert InfoPlane._grid_shape((8, 4, 4), 32) == (8, 2, 2) and InfoPlane._grid_shape((8, 4, 4), 128) == (8, 4, 4)
    assert InfoPlane._grid_shape((10,), 10) is None and InfoPlane._grid_shape((8, 4, 4), 30) is None


def test_measurement_leaves_training_untouched_and_is_deterministic(digits):
    model = fresh(digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    rows = []
    for _ in range(2):
        ext = InfoPlane(("binning", "kde"), max_samples=200)
        tracker = PhaseTracker(model, ["features.3"], (digits.x_train[:300], digits.y_train[:300]),
                               (digits.x_test[:100], digits.y_test[:100]), schedule=[0], bootstrap=50, extensions=[ext])
        rows.append(pd.DataFrame(tracker.measure(model, 0)))
    pd.testing.assert_frame_equal(rows[0], rows[1])
    assert torch.equal(rng, torch.get_rng_state())
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v), k


def test_state_dict_round_trip(digits):
    ext = InfoPlane(("kde",), max_samples=100)
    tracked_run(digits, ext, iterations=2, layers=("features.3",))
    other = InfoPlane(("kde",), max_samples=100)
    other.load_state_dict(ext.state_dict())
    assert other.details == ext.details and other.reduction == ext.reduction and other.timings == ext.timings


def test_run_experiment_writes_infoplane(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(iterations=8, samples={"enabled": False})
    result = run_experiment(cfg, tmp_path / "run", progress=False, extensions=[InfoPlane(max_samples=300)])
    out = result.out
    assert (out / "infoplane.png").stat().st_size > 0
    doc = json.loads((out / "phases.json").read_text())
    assert set(doc["infoplane"]["layers"]["features.3"]["estimators"]) == {"binning", "kde"}
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics.dropna(subset=["estimator"]).metric) == {"mi_input", "mi_label"}
    # the figure can be rebuilt from the run folder's files alone
    plot_infoplane(metrics, doc, tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 0


# ---------------------------------------------------------------------- summaries
def test_compression_summary():
    its = [0, 1, 2, 4, 8, 16, 32]
    rec = [1.0, 1.0, 0.9, 0.8, 0.85, 0.9, 0.95]  # minimum at 4
    rising_then_falling = [5.0, 5.5, 6.0, 6.5, 6.0, 5.5, 5.0]
    s = compression_summary(its, rising_then_falling, 4, rec)
    assert s["peak_iteration"] == 4 and s["coincides"] and s["change_during_increase"] == pytest.approx(-1.5)
    assert s["fall_before_minimum"] == 0 and s["fall_during_increase"] == pytest.approx(1.5)
    assert s["share_of_fall_during_increase"] == 1.0
    assert s["spearman_during_increase"] == pytest.approx(-1.0) and s["peak_octaves_from_minimum"] == 0
    flat = compression_summary(its, [8.0] * 7, 4, rec)
    assert flat["compression"] == 0 and not flat["coincides"] and flat["spearman_during_increase"] is None
    assert flat["share_of_fall_during_increase"] is None
    steady = compression_summary(its, [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0], 4, rec)  # falls all along
    assert steady["peak_iteration"] == 0 and steady["change_during_increase"] == -3.0
    assert steady["share_of_fall_during_increase"] == 0.5 and steady["coincides"]
    before = compression_summary(its, [9.0, 7.0, 5.0, 4.0, 4.2, 4.1, 4.3], 4, rec)  # falls, then stays
    assert not before["coincides"] and before["change_during_increase"] == pytest.approx(0.3)
    assert before["share_of_fall_during_increase"] == pytest.approx(0.1 / 5.1)
    assert compression_summary(its, rising_then_falling, None)["compression"] == pytest.approx(1.5)


def test_reconstruction_minima_from_payload_or_rows():
    df = pd.DataFrame({"iteration": [0, 1, 2], "layer": "a", "split": "test", "metric": "reconstruction_mse",
                       "value": [3.0, 1.0, 2.0], "ci_low": np.nan, "ci_high": np.nan})
    assert reconstruction_minima(df) == {"a": 1}
    assert reconstruction_minima(df, {"layers": {"a": {"min_iteration": 2}}}) == {"a": 2}
    assert reconstruction_minima(df, {"layers": {"a": {"minimum": 0}}}) == {"a": 0}
    assert mi_curves(df).empty
