"""The reconstruction strip: fixed images, exact decoder outputs in pixels, files and figure."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasescope import PhaseTracker, RunConfig, log_schedule
from phasescope.interfaces.cli import app
from phasescope.config import ConfigError
from phasescope.data import load_dataset
from phasescope.run.models import build_model
from phasescope.reconstructions import (NPZ, PNG, Reconstructions, plot_reconstructions, read_arrays,
                                        select_images, spread_kept, to_pixels)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tracker_with(digits, ext, model=None):
    torch.manual_seed(0)
    model = model or build_model("cnn", digits.input_shape, 10, width=0.5)
    return model, PhaseTracker(model, ["features.1", "features.3"], (digits.x_train[:400], digits.y_train[:400]),
                               (digits.x_test[:200], digits.y_test[:200]), schedule=log_schedule(4), bootstrap=50,
                               extensions=[ext])


def test_selection_is_fixed_per_class_and_independent_of_anything_else():
    y = np.repeat(np.arange(4), [5, 1, 7, 3])
    a, b = select_images(y, 2), select_images(y, 2)
    np.testing.assert_array_equal(a, b)
    assert np.bincount(y[a]).tolist() == [2, 1, 2, 2]  # a class with one sample gives one
    assert list(y[a]) == sorted(y[a])  # class order
    big = np.repeat(np.arange(3), 50)
    assert not np.array_equal(select_images(big, 2, seed=1), select_images(big, 2))  # the seed is what fixes them
    rng_state = np.random.get_state()
    select_images(y, 3)
    assert np.random.get_state()[1].tolist() == rng_state[1].tolist()  # the global RNG is not used


def test_pixels_round_trip_and_spread_kept():
    raw = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 5)).astype(np.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    x = (raw / 255.0 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    np.testing.assert_array_equal(to_pixels(torch.as_tensor(x, dtype=torch.float32), mean, std), raw)
    X = np.random.default_rng(1).normal(size=(30, 6))
    y = np.repeat([0, 1, 2], 10)
    assert spread_kept(X, X, y) == pytest.approx((1.0, 1.0))
    means = np.stack([X[y == c].mean(0) for c in y])
    assert spread_kept(X, means, y) == pytest.approx((0.0, 1.0))  # collapsed onto the class means
    assert spread_kept(X, np.zeros_like(X), y) == pytest.approx((0.0, 0.0))


def test_extension_keeps_the_decoders_outputs_and_decodes_class_mean_features(digits):
    ext = Reconstructions(per_class=2, mean=digits.mean, std=digits.std)
    decoded = {}

    class Peek:  # after Reconstructions: decode each class's mean feature with the fitted decoder itself
        name = "peek"

        def measure(self, ctx):
            solver = ctx.reconstruct.__self__.decoders["features.3"]
            H, y = ctx.test_features["features.3"], ctx.test_y
            means = torch.stack([H[y == c].mean(0) for c in torch.unique(y)])
            decoded[ctx.iteration] = (solver.predict(means, "x"), ctx.reconstruct("features.3", torch.as_tensor(ext.rows_)))
            return []

    model, tracker = tracker_with(digits, ext)
    tracker.extensions.append(Peek())
    tracker.measure(model, 0)
    tracker.measure(model, 2)
    a = ext.arrays()
    assert a["iterations"].tolist() == [0, 2] and str(a["layer"]) == "features.3"  # the last tracked layer
    assert a["reconstructions"].shape == (2, 20, 1, 8, 8) and a["reconstructions"].dtype == np.uint8
    assert np.bincount(a["labels"]).tolist() == [2] * 10
    np.testing.assert_array_equal(a["original"], to_pixels(digits.x_test[:200][a["rows"]], digits.mean, digits.std))
    for k, t in enumerate([0, 2]):
        protos, rec = decoded[t]
        np.testing.assert_array_equal(a["reconstructions"][k], to_pixels(rec.reshape(-1, 1, 8, 8), digits.mean, digits.std))
        # the class-mean row is the decoding of the class-mean feature (the decoder is affine)
        diff = a["prototypes"][k].astype(int) - to_pixels(protos.reshape(-1, 1, 8, 8), digits.mean, digits.std)
        assert np.abs(diff).max() <= 1  # equal up to float rounding at a pixel boundary
    assert a["within_class_kept"].shape == (2,) and np.all((a["within_class_kept"] > 0) & (a["within_class_kept"] < 1))


def test_selection_survives_resume_and_measuring_again_replaces(digits):
    ext = Reconstructions(per_class=1)
    model, tracker = tracker_with(digits, ext)
    tracker.measure(model, 0)
    state = tracker.state_dict()
    other = Reconstructions(per_class=1)
    _, tracker2 = tracker_with(digits, other)
    tracker2.load_state_dict(state)
    np.testing.assert_array_equal(other.rows_, ext.rows_)
    tracker2.measure(model, 0)  # same checkpoint again: replaced, not appended
    tracker2.measure(model, 1)
    assert other.arrays()["iterations"].tolist() == [0, 1]


def test_flat_inputs_are_skipped_with_a_note():
    torch.manual_seed(0)
    x, y = torch.randn(60, 12), torch.arange(60) % 3
    model = build_model("mlp", (12,), 3, 0.25)
    ext = Reconstructions()
    tracker = PhaseTracker(model, ["features.1"], (x, y), (x, y), schedule=[0], bootstrap=20, extensions=[ext])
    tracker.measure(model, 0)
    note = ext.summarise(tracker.results(), {})["reconstructions"]
    assert "not images" in note["skipped"]
    assert ext.write(__import__("pathlib").Path("/nonexistent"), tracker.results(), {}) == []


def test_an_untracked_layer_is_refused_naming_the_tracked_ones(digits):
    with pytest.raises(ValueError, match="features.3"):
        tracker_with(digits, Reconstructions(layer="features.0"))


def test_figure_marks_the_minimum_and_draws_the_phases(tmp_path):
    K, n = 5, 4
    a = {"iterations": np.array([0, 1, 2, 4, 8]), "layer": np.array("f"), "labels": np.array([0, 0, 1, 1]),
         "original": np.full((n, 3, 6, 6), 200, np.uint8), "reconstructions": np.zeros((K, n, 3, 6, 6), np.uint8),
         "classes": np.array(["cat", "dog"]), "prototype_labels": np.array([0, 1]),
         "prototype_original": np.zeros((2, 3, 6, 6), np.uint8), "prototypes": np.zeros((K, 2, 3, 6, 6), np.uint8)}
    payload = {"layers": {"f": {"min_iteration": 2, "phases": [{"name": "constant", "start": 0, "end": 1},
                                                                {"name": "decrease", "start": 1, "end": 2},
                                                                {"name": "increase", "start": 2, "end": 8}]}}}
    path = plot_reconstructions(a, payload, tmp_path / PNG)
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # the phase band's colours are in the picture, and so is the minimum's frame
    for colour in ("#74c476", "#fb6a4a", "#08519c"):
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(img - rgb).sum(-1) < 12).sum() > 20, colour
    plot_reconstructions(a, {}, tmp_path / "no-phases.png")  # before phases exist: still drawn


def test_run_writes_the_strip_and_the_cli_switch_turns_it_off(tmp_path):
    from phasescope.run.experiment import run_experiment

    cfg = RunConfig(dataset="digits", model="cnn", width=0.5, iterations=4, fit_samples=200, test_samples=100,
                    bootstrap=50, device="cpu")
    out = run_experiment(cfg, tmp_path / "run", progress=False).out
    a = read_arrays(out / NPZ)
    data = load_dataset("digits")
    assert a["iterations"].tolist() == [0, 1, 2, 4] and (out / PNG).stat().st_size > 5_000
    # test_index points into the dataset's test split: same labels, same pixels
    np.testing.assert_array_equal(data.y_test.numpy()[a["test_index"]], a["labels"])
    np.testing.assert_array_equal(to_pixels(data.x_test[a["test_index"]], data.mean, data.std), a["original"])
    rec = json.loads((out / "phases.json").read_text())["reconstructions"]
    assert rec["images"] == 20 and rec["checkpoints"] == [0, 1, 2, 4] and set(rec["kept"]) >= {"start", "end"}
    # another seed shows the same test images
    b = read_arrays(run_experiment(cfg.replace(seed=3), tmp_path / "seed3", progress=False).out / NPZ)
    np.testing.assert_array_equal(a["test_index"], b["test_index"])

    res = CliRunner().invoke(app, ["run", "--dataset", "digits", "--width", "0.5", "--iterations", "2", "--fit-samples",
                                   "100", "--test-samples", "50", "--bootstrap", "20", "--device", "cpu",
                                   "--no-reconstructions", "--no-samples", "--out", str(tmp_path / "off"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "off" / NPZ).exists() and not (tmp_path / "off" / PNG).exists()
    assert json.loads((tmp_path / "off" / "config.json").read_text())["config"]["reconstructions"]["enabled"] is False


def test_options_validate():
    with pytest.raises(ConfigError, match="per_class"):
        RunConfig.from_dict({"reconstructions": {"per_class": 0}})
    with pytest.raises(ConfigError, match="Unknown reconstructions option"):
        RunConfig.from_dict({"reconstructions": {"images": 3}})
    assert RunConfig.from_dict({}).reconstructions.enabled  # old config.json files (no such key) load
