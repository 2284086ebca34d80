"""--atypical: controlled atypical training samples, checked against the recorded mask."""
import json

import numpy as np
import pytest
import torch

from phasescope import RunConfig
from phasescope.config import ConfigError
from phasescope.data import load_dataset
from phasescope.data.atypical import apply_atypical, convert, parse_atypical


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.1, 0.4])
def test_label_noise_changes_exactly_the_masked_labels_to_another_class(digits, fraction):
    d = apply_atypical(digits, f"label-noise:{fraction}", seed=3)
    mask = d.train_meta["atypical"]
    assert mask.shape == (len(digits.y_train),) and mask.sum() == round(fraction * len(mask))
    changed = (d.y_train != digits.y_train).numpy()
    np.testing.assert_array_equal(changed, mask)  # every masked label differs, no other label does
    assert torch.equal(d.x_train, digits.x_train)  # images untouched
    assert torch.equal(d.x_test, digits.x_test) and torch.equal(d.y_test, digits.y_test)  # test split untouched
    assert d.info["atypical"] == {"kind": "label-noise", "fraction": fraction, "n": int(mask.sum()),
                                  "n_train": len(mask), "seed": 3, "mask_file": "atypical.npz"}
    assert digits.train_meta.get("atypical") is None  # the input is not changed
    if fraction:  # the new labels are spread over the other classes
        assert len(np.unique(d.y_train.numpy()[mask])) > 5


def test_injection_is_reproducible_from_the_seed(digits):
    a, b = (apply_atypical(digits, "foreign:0.2", seed=1) for _ in range(2))
    c = apply_atypical(digits, "foreign:0.2", seed=2)
    np.testing.assert_array_equal(a.train_meta["atypical"], b.train_meta["atypical"])
    assert torch.equal(a.x_train, b.x_train)
    assert not np.array_equal(a.train_meta["atypical"], c.train_meta["atypical"])
    l1, l2 = (apply_atypical(digits, "label-noise:0.2", seed=1) for _ in range(2))
    assert torch.equal(l1.y_train, l2.y_train)


def test_foreign_replaces_exactly_the_masked_images_and_keeps_labels(digits):
    d = apply_atypical(digits, "foreign:0.1", seed=0)
    mask = d.train_meta["atypical"]
    changed = (d.x_train != digits.x_train).flatten(1).any(1).numpy()
    np.testing.assert_array_equal(changed, mask)
    assert torch.equal(d.y_train, digits.y_train) and torch.equal(d.x_test, digits.x_test)
    assert d.x_train.shape == digits.x_train.shape and torch.isfinite(d.x_train).all()
    assert d.info["atypical"]["source"].startswith("noise")


def test_foreign_for_colour_images_uses_the_embedded_digits_and_a_path_any_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=rng.integers(0, 255, (60, 32, 32, 3), dtype=np.uint8), y_train=np.arange(60) % 3,
             x_test=rng.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8), y_test=np.arange(30) % 3)
    rgb = load_dataset("npz", data_dir=str(path))
    d = apply_atypical(rgb, "foreign:0.5", seed=0)
    assert d.info["atypical"]["source"].startswith("mnist-digits") and d.train_meta["atypical"].sum() == 30
    x = d.x_train[torch.as_tensor(d.train_meta["atypical"])]
    assert torch.allclose(x[:, 0] * rgb.std[0] + rgb.mean[0], x[:, 1] * rgb.std[1] + rgb.mean[1], atol=1e-5)  # grey
    digits = load_dataset("digits")
    e = apply_atypical(digits, f"foreign:0.1@{path}", seed=0)  # RGB 32x32 -> grey 8x8
    assert e.info["atypical"]["source"] == f"npz {path}" and e.x_train.shape == digits.x_train.shape
    assert convert(torch.rand(2, 1, 28, 28), (3, 32, 32)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("bad", ["noise:0.1", "label-noise", "label-noise:1.0", "label-noise:x", "label-noise:0.1@a",
                                 "foreign:0.1@"])
def test_bad_specifications_are_refused_by_the_config(bad):
    with pytest.raises(ConfigError, match="label-noise:F"):
        RunConfig(atypical=bad).validate()
    assert parse_atypical("none") is None and str(parse_atypical("foreign:0.2@x.npz")) == "foreign:0.2@x.npz"


def test_a_run_saves_the_mask_and_marks_the_followed_samples(tiny_cfg, tmp_path):
    import pandas as pd

    from phasescope.run.experiment import run_experiment

    out = tmp_path / "run"
    run_experiment(tiny_cfg.replace(iterations=8, atypical="label-noise:0.25", reconstructions={"enabled": False}),
                   out, progress=False)
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["atypical"] == "label-noise:0.25" and doc["data"]["atypical"]["kind"] == "label-noise"
    with np.load(out / "atypical.npz") as z:
        mask, idx = z["mask"], z["index"]
        assert mask.sum() == round(0.25 * len(mask)) == doc["data"]["atypical"]["n"]
        np.testing.assert_array_equal(np.flatnonzero(mask), idx)
        assert (z["label"] != z["original_label"]).all()
    table = pd.read_parquet(out / "samples.parquet")
    np.testing.assert_array_equal(table["atypical"].to_numpy(), mask[table["index"].to_numpy()])
    assert 0 < table["atypical"].sum() < len(table)
    again = apply_atypical(load_dataset("digits", seed=tiny_cfg.seed), "label-noise:0.25", seed=tiny_cfg.seed)
    np.testing.assert_array_equal(again.train_meta["atypical"], mask)  # reproducible from the recorded seed
