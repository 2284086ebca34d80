"""Checks applied to every loaded dataset: num_classes, embedded datasets and --data-dir, custom loaders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import phasescope.data as data_mod
from phasescope.config import ConfigError, RunConfig
from phasescope.data import DataError, DataWarning, Splits, check_splits, load_dataset, make_splits


def _npz(tmp_path, y_train, y_test, classes=None):
    rng = np.random.RandomState(0)
    extra = {} if classes is None else {"classes": np.array(classes)}
    path = tmp_path / "labels.npz"
    np.savez(path, x_train=rng.rand(len(y_train), 4, 4), y_train=np.asarray(y_train),
             x_test=rng.rand(len(y_test), 4, 4), y_test=np.asarray(y_test), **extra)
    return path


def test_num_classes_allows_absent_classes_with_a_warning(tmp_path):
    path = _npz(tmp_path, [0, 2, 0, 2, 0, 2], [0, 1, 2])
    with pytest.raises(DataError, match=r"1 of the 3 classes 0\.\.2 have no training samples \(1\).*--num-classes"):
        load_dataset("npz", data_dir=path)
    with pytest.warns(DataWarning, match=r"classes 1, 3-4 have no training samples; the model still has 5 out") as w:
        s = load_dataset("npz", data_dir=path, num_classes=5)
    assert len(w) == 1  # once, although make_splits and load_dataset both check
    assert s.num_classes == 5 and s.classes == ["0", "1", "2", "3", "4"]
    assert s.info["absent_train_classes"] == "1, 3-4"
    assert s.describe()["num_classes"] == 5


def test_num_classes_bounds_the_labels(tmp_path):
    path = _npz(tmp_path, [0, 1, 2, 7] * 2, [0, 1])
    with pytest.raises(DataError, match=r"labels\.npz y_train: label\(s\) 7 \(2 sample\(s\)\) lie outside 0\.\.4 "
                                        r"\(--num-classes 5\)\. Fix those labels, or raise --num-classes"):
        load_dataset("npz", data_dir=path, num_classes=5)
    with pytest.raises(DataError, match="num_classes must be an integer >= 2"):
        load_dataset("npz", data_dir=path, num_classes=1)


def test_class_names_are_cut_or_padded_to_num_classes(tmp_path):
    path = _npz(tmp_path, [0, 1, 2] * 2, [0, 1, 2], classes=["cat", "dog", "emu"])
    assert load_dataset("npz", data_dir=path).classes == ["cat", "dog", "emu"]
    with pytest.warns(DataWarning):
        assert load_dataset("npz", data_dir=path, num_classes=4).classes == ["cat", "dog", "emu", "3"]
    path = _npz(tmp_path, [0, 1, 0, 1], [0, 1], classes=["cat", "dog", "emu"])
    with pytest.raises(DataError, match=r"1 of the 3 classes 0\.\.2 have no training samples \(2\)"):
        load_dataset("npz", data_dir=path)
    assert load_dataset("npz", data_dir=path, num_classes=2).classes == ["cat", "dog"]


def test_labels_above_the_class_names(tmp_path):
    path = _npz(tmp_path, [0, 1, 2, 3] * 2, [0, 1], classes=["cat", "dog", "emu"])
    with pytest.raises(DataError, match=r"label\(s\) 3 \(2 sample\(s\)\) lie outside 0\.\.2 \(3 class names\)"):
        load_dataset("npz", data_dir=path)


def test_num_classes_on_an_embedded_dataset():
    with pytest.warns(DataWarning, match="classes 10-11 have no training samples"):
        s = load_dataset("digits", num_classes=12)
    assert s.num_classes == 12 and s.classes[-2:] == ["10", "11"]
    with pytest.raises(DataError, match=r"label\(s\) 9 \(\d+ sample\(s\)\) lie outside 0\.\.8 \(--num-classes 9\)"):
        load_dataset("digits", num_classes=9)


@pytest.mark.parametrize("name", ["mnist-digits", "digits", "synthetic"])
def test_data_dir_for_an_embedded_dataset_is_an_error(tmp_path, name):
    with pytest.raises(DataError, match=rf"--data-dir is only for file datasets \(.*npz, folder\); {name} is embedded"):
        load_dataset(name, data_dir=tmp_path)


def test_every_loader_output_is_checked(monkeypatch):
    def broken(**kw):
        x = torch.zeros(6, 1, 2, 2)
        x[2, 0, 0, 0] = float("nan")
        return Splits("broken", x, torch.tensor([0, 1] * 3), torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]),
                      ["a", "b"], [0.0], [1.0])

    monkeypatch.setitem(data_mod._LOADERS, "broken", broken)
    with pytest.raises(DataError, match=r"broken: 1 train input value\(s\) are NaN or infinite"):
        load_dataset("broken")


def test_check_splits_catches_empty_and_mismatched_splits():
    s = make_splits("ok", np.random.rand(6, 2, 2), [0, 1] * 3, np.random.rand(2, 2, 2), [0, 1])
    s.x_test, s.y_test = s.x_test[:0], s.y_test[:0]
    with pytest.raises(DataError, match="ok: the test split is empty"):
        check_splits(s)
    s = make_splits("ok", np.random.rand(6, 2, 2), [0, 1] * 3, np.random.rand(2, 2, 2), [0, 1])
    s.y_train = s.y_train[:5]
    with pytest.raises(DataError, match="6 train inputs but 5 labels"):
        check_splits(s)


def test_run_config_num_classes():
    assert RunConfig().num_classes is None
    assert RunConfig(num_classes=12).validate().num_classes == 12
    for bad in (1, 0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="num_classes must be an integer >= 2"):
            RunConfig(num_classes=bad).validate()


def test_cli_num_classes_reaches_the_model(tmp_path):
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    args = ["run", "--dataset", "digits", "--width", "0.25", "--iterations", "2", "--batch-size", "32",
            "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "20", "--no-samples", "--quiet"]
    with pytest.warns(DataWarning, match="classes 10-11 have no training samples"):
        res = CliRunner().invoke(app, [*args, "--num-classes", "12", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    conf = json.loads((tmp_path / "a" / "config.json").read_text())
    assert conf["config"]["num_classes"] == 12 and conf["data"]["num_classes"] == 12
    assert conf["data"]["absent_train_classes"] == "10-11"
    res = CliRunner().invoke(app, [*args, "--num-classes", "1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "num_classes must be an integer >= 2" in res.output
    res = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--data-dir is only for file datasets" in " ".join(res.output.split())
