"""--atypical random-labels:F: a seeded fraction of the training labels redrawn from all K classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phasescope import RunConfig
from phasescope.interfaces.cli import app
from phasescope.config import ConfigError
from phasescope.data import load_dataset
from phasescope.data.atypical import apply_atypical, mask_arrays, parse_atypical, random_labels


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_f1_redraws_every_label_and_about_one_in_k_stays_right(digits):
    d = apply_atypical(digits, "random-labels:1", seed=0)
    n, k = len(digits.y_train), digits.num_classes
    mask = d.train_meta["atypical"]
    assert mask.all() and d.info["atypical"]["n"] == n
    same = (d.y_train == digits.y_train).numpy()
    # Binomial(n, 1/K): sd = sqrt(0.09 / n) < 0.008 for the ~1,400 digits; 0.03 is ~4 sd.
    assert abs(same.mean() - 1 / k) < 0.03
    assert d.info["atypical"]["n_changed"] == int((~same).sum())
    assert sorted(np.unique(d.y_train.numpy()).tolist()) == list(range(k))  # every class drawn
    assert torch.equal(d.x_train, digits.x_train) and torch.equal(d.y_test, digits.y_test)  # only train labels
    arrays = mask_arrays(d)
    np.testing.assert_array_equal(arrays["changed"], ~same)
    np.testing.assert_array_equal(arrays["changed"], arrays["label"] != arrays["original_label"])


def test_the_new_labels_are_uniform_over_all_classes():
    y = random_labels(100_000, 10, seed=5)
    counts = np.bincount(y, minlength=10) / len(y)
    np.testing.assert_allclose(counts, 0.1, atol=0.005)  # sd 0.00095 per class


def test_a_fraction_relabels_exactly_that_many_samples(digits):
    d = apply_atypical(digits, "random-labels:0.3", seed=2)
    mask = d.train_meta["atypical"]
    assert mask.sum() == round(0.3 * len(mask))
    changed = (d.y_train != digits.y_train).numpy()
    assert not changed[~mask].any()  # unmasked labels untouched
    assert 0 < changed[mask].sum() < mask.sum()  # some redrawn labels came back by chance


def test_the_same_seed_gives_the_same_labels(digits):
    a, b = (apply_atypical(digits, "random-labels:0.5", seed=1) for _ in range(2))
    c = apply_atypical(digits, "random-labels:0.5", seed=2)
    assert torch.equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.train_meta["atypical"], b.train_meta["atypical"])
    assert not torch.equal(a.y_train, c.y_train)


def test_f0_changes_nothing(digits):
    d = apply_atypical(digits, "random-labels:0", seed=0)
    assert torch.equal(d.y_train, digits.y_train) and not d.train_meta["atypical"].any()
    assert d.info["atypical"]["n"] == 0 and d.info["atypical"]["n_changed"] == 0


@pytest.mark.parametrize("bad", ["random-labels:1.5", "random-labels:-0.1", "random-labels:x", "random-labels",
                                 "random-labels:0.1@a.npz"])
def test_invalid_fractions_are_refused_with_the_accepted_forms(bad):
    with pytest.raises(ConfigError, match=r"random-labels:F with 0 <= F <= 1"):
        RunConfig(atypical=bad).validate()


def test_only_random_labels_accepts_f1():
    assert str(parse_atypical("random-labels:1")) == "random-labels:1"
    for kind in ("label-noise", "foreign"):
        with pytest.raises(ValueError, match=rf"the fraction of {kind} must be in \[0, 1\)"):
            parse_atypical(f"{kind}:1")


def test_a_cli_run_writes_atypical_npz(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "--atypical", "random-labels:1", "--dataset", "digits", "--iterations", "8",
                                   "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "50", "--quiet",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["atypical"] == "random-labels:1" and doc["data"]["atypical"]["kind"] == "random-labels"
    with np.load(out / "atypical.npz") as z:
        assert z["mask"].all() and len(z["index"]) == len(z["mask"]) == doc["data"]["atypical"]["n"]
        assert z["changed"].sum() == doc["data"]["atypical"]["n_changed"]
        np.testing.assert_array_equal(z["changed"], z["label"] != z["original_label"])


def test_sweep_files_accept_random_labels_and_name_the_runs_like_label_noise(tmp_path):
    from phasescope.interfaces.sweep.spec import load_spec

    path = tmp_path / "s.toml"
    path.write_text('dataset = "digits"\niterations = 8\n\n[grid]\n'
                    'atypical = ["random-labels:1", "random-labels:0.5", "label-noise:0.1"]\n')
    spec = load_spec(path)
    assert [r.name for r in spec.runs] == ["random-labels1", "random-labels0.5", "label-noise0.1"]
    assert spec.runs[0].config.atypical == "random-labels:1"
