"""Transfer tasks: colour-dominance labels, switch shape handling, npz shape errors, class split."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.config import RunConfig, TransferOptions
from phasescope.data import make_splits
from phasescope.run.experiment import measurement_sets
from phasescope.transfer import (TransferError, build_tasks, colour_dominance, colour_task, from_config, npz_task,
                                 parse_specs, split_classes, switch_task)
from phasescope.transfer.tasks import dataset_task, unnormalise


def _splits(name, shape, n_train=60, n_test=30, classes=6, seed=0):
    rng = np.random.RandomState(seed)
    return make_splits(name, rng.rand(n_train, *shape).astype(np.float32), np.arange(n_train) % classes,
                       rng.rand(n_test, *shape).astype(np.float32), np.arange(n_test) % classes)


# --------------------------------------------------------------------------- colour


def test_colour_dominance_on_constructed_images():
    raw = torch.zeros(4, 3, 5, 5)
    raw[0, 0] = 0.9                     # red everywhere
    raw[1, 1, :, :3] = 1.0              # green in a stripe
    raw[1, 0, 0, 0] = 1.0               # one red pixel: green still wins
    raw[2, 2] = 0.2                     # faint blue ...
    raw[2, 0, 0, :] = 0.5               # ... beats a bright red row (5 * 0.5 < 25 * 0.2)
    raw[3] = 0.5
    raw[3, 1, 2, 2] = 0.51              # near-grey: the largest sum wins by a hair
    assert colour_dominance(raw).tolist() == [0, 1, 2, 1]


def test_colour_labels_use_raw_pixels_not_normalised_ones():
    # Blue dominates in raw units, but after per-channel normalisation blue is the lowest.
    x = np.zeros((30, 5, 5, 3), np.float32)
    x[..., 0], x[..., 1] = 0.1, 0.2
    x[..., 2] = np.linspace(0.6, 0.9, 30)[:, None, None]
    data = make_splits("rgb", x, np.arange(30) % 3, x[:9], np.arange(9) % 3)
    assert (data.x_train[:, 2].mean((1, 2)) < 0).any()  # normalised blue is sometimes below the others
    task = colour_task(data)
    assert task.uses_tracker_inputs and task.num_classes == 3
    assert task.label_fn(data.x_train).tolist() == [2] * 30
    np.testing.assert_allclose(unnormalise(data.x_train, data.mean, data.std).numpy(),
                               x.transpose(0, 3, 1, 2), atol=1e-4)


def test_colour_on_grey_data_is_a_clear_error():
    with pytest.raises(TransferError, match="colour.*RGB.*input shape \\(1, 8, 8\\)"):
        colour_task(_splits("grey", (1, 8, 8)))


# --------------------------------------------------------------------------- switch / npz


def test_switch_resizes_to_the_pretraining_shape_and_uses_its_statistics():
    small = _splits("small", (1, 8, 8), classes=4)
    big = _splits("big", (1, 28, 28), seed=1)
    task = dataset_task("switch:small", small, big, allow_resize=True, fit_samples=40, test_samples=20)
    (xf, yf), (xt, yt) = task.train, task.test
    assert xf.shape == (40, 1, 28, 28) and xt.shape == (20, 1, 28, 28)
    assert task.num_classes == 4 and set(yf.tolist()) == {0, 1, 2, 3}
    # Constant raw images stay constant through the resize, in the pre-training normalisation.
    const = make_splits("c", np.full((8, 8, 8), 0.9, np.float32), np.arange(8) % 4,
                        np.full((4, 8, 8), 0.9, np.float32), np.arange(4), normalise=False)
    t2 = dataset_task("switch:c", const, big, allow_resize=True, fit_samples=None, test_samples=None)
    expected = (0.9 - big.mean[0]) / big.std[0]
    np.testing.assert_allclose(t2.train[0].numpy(), expected, rtol=1e-5)


def test_switch_to_real_sklearn_digits_from_28x28():
    data = _splits("mnist-like", (1, 28, 28), n_train=100, classes=10)
    task = switch_task("switch:digits", data, fit_samples=200, test_samples=100)
    assert task.train[0].shape == (200, 1, 28, 28) and task.test[0].shape == (100, 1, 28, 28)
    assert task.info["resized"] == "bilinear [8, 8] -> [28, 28]"


def test_switch_with_other_channel_count_is_a_clear_error():
    grey, rgb = _splits("grey", (1, 8, 8)), _splits("rgb", (3, 8, 8))
    with pytest.raises(TransferError, match="1 channel\\(s\\) but the pre-training data 'rgb' has 3"):
        dataset_task("switch:grey", grey, rgb, allow_resize=True)


def test_switch_errors_name_the_task_and_the_fix(tmp_path):
    with pytest.raises(TransferError, match="switch:nope.*Unknown dataset"):
        switch_task("switch:nope", _splits("a", (1, 8, 8)))
    with pytest.raises(TransferError, match="switch:cifar100.*switch:cifar100@PATH"):
        switch_task("switch:cifar100", _splits("a", (3, 32, 32)))
    with pytest.raises(TransferError, match="switch:fashion-mnist@.*does not exist"):
        switch_task(f"switch:fashion-mnist@{tmp_path / 'none'}", _splits("a", (1, 28, 28)))


def _save_npz(path, shape, n=40, classes=4):
    rng = np.random.RandomState(0)
    np.savez(path, x_train=rng.randint(0, 255, (n, *shape), dtype=np.uint8), y_train=np.arange(n) % classes,
             x_test=rng.randint(0, 255, (n // 2, *shape), dtype=np.uint8), y_test=np.arange(n // 2) % classes)


def test_npz_task_with_the_same_shape(tmp_path):
    _save_npz(tmp_path / "ok.npz", (8, 8, 3))  # HWC, as CIFAR files are
    data = _splits("rgb", (3, 8, 8))
    task = npz_task(f"npz:{tmp_path / 'ok.npz'}", data, fit_samples=None, test_samples=None)
    assert task.train[0].shape == (40, 3, 8, 8) and task.num_classes == 4


def test_npz_task_with_a_wrong_shape_is_a_clear_error(tmp_path):
    _save_npz(tmp_path / "bad.npz", (10, 10, 3))
    with pytest.raises(TransferError, match="input shape \\(3, 10, 10\\) but the pre-training data 'rgb' has "
                                            "\\(3, 8, 8\\)"):
        npz_task(f"npz:{tmp_path / 'bad.npz'}", _splits("rgb", (3, 8, 8)))
    with pytest.raises(TransferError, match="npz:.*missing.npz.*No such file"):
        npz_task(f"npz:{tmp_path / 'missing.npz'}", _splits("rgb", (3, 8, 8)))


@pytest.mark.parametrize("spec, message", [
    ("bogus", "Unknown transfer task"), ("switch", "needs a dataset name"), ("npz:", "needs a path"),
    ("colour:x", "takes no argument"), ("colour,colour", "given twice"),
])
def test_parse_specs_errors(spec, message):
    with pytest.raises(TransferError, match=message):
        parse_specs(spec)


def test_parse_specs_accepts_lists_and_spelling():
    assert parse_specs("color, class-split,switch:digits@/x") == ["colour", "class-split", "switch:digits@/x"]
    assert parse_specs(None) == [] and parse_specs(["npz:a.npz"]) == ["npz:a.npz"]


# --------------------------------------------------------------------------- class split


def test_class_split_never_leaks_transfer_classes_into_pretraining():
    rng = np.random.RandomState(0)
    x_tr, x_te = 0.4 * rng.rand(200, 1, 6, 6).astype(np.float32), 0.4 * rng.rand(100, 1, 6, 6).astype(np.float32)
    y_tr, y_te = np.arange(200) % 10, np.arange(100) % 10
    x_tr[y_tr >= 5] += 0.6  # transfer classes are far brighter: a leak would show in the statistics
    data = make_splits("ten", x_tr, y_tr, x_te, y_te)
    cfg = RunConfig(dataset="ten", fit_samples=60, test_samples=40, seed=3, transfer=TransferOptions(tasks=["class-split"]))
    pre, [ext] = from_config(cfg, data)
    [task] = ext.tasks

    assert pre.num_classes == 5 and pre.classes == ["0", "1", "2", "3", "4"]
    assert pre.info["class_split"]["transfer_classes"] == ["5", "6", "7", "8", "9"]
    for split in ("train", "test"):  # everything the run trains and measures on
        orig = getattr(pre, f"{split}_meta")["original_label"]
        assert set(orig.tolist()) == {0, 1, 2, 3, 4}
        np.testing.assert_array_equal(getattr(pre, f"y_{split}").numpy(), orig)
    (_, y_fit), (_, y_test) = measurement_sets(pre, cfg)  # the tracker's fit and test sets
    assert len(y_fit) == 60 and len(y_test) == 40 and int(max(y_fit.max(), y_test.max())) < 5
    # The pre-training inputs are exactly the pre-training classes' images, re-normalised with
    # statistics of those images only (mean 0, std 1 over the pre-training training split).
    raw = unnormalise(pre.x_train, pre.mean, pre.std).numpy()
    np.testing.assert_allclose(raw, x_tr[pre.train_meta["original_index"]], atol=1e-4)
    assert abs(float(pre.x_train.mean())) < 1e-4 and abs(float(pre.x_train.std()) - 1) < 1e-3
    assert pre.mean[0] < 0.21  # the brighter transfer classes (raw mean 0.8) did not enter the statistics
    # The transfer task holds only the other classes, relabelled 0..4.
    assert task.num_classes == 5 and task.info["transfer_labels"] == [5, 6, 7, 8, 9]
    assert set(task.train[1].tolist()) == set(range(5)) and len(task.train[1]) == 60 and len(task.test[1]) == 40


def test_class_split_needs_two_classes_each_side():
    with pytest.raises(TransferError, match="at least 2 pre-training and 2 transfer classes"):
        split_classes(_splits("three", (1, 4, 4), classes=3))
    with pytest.raises(TransferError, match="at least 2"):
        split_classes(_splits("six", (1, 4, 4)), pretrain_classes=[0, 1, 2, 3, 4])


def test_build_tasks_keeps_the_order_given():
    data = _splits("rgb", (3, 8, 8), classes=6)
    pre, tasks = build_tasks("colour,class-split", data, fit_samples=None, test_samples=None)
    assert [t.name for t in tasks] == ["colour", "class-split"]
    assert pre.num_classes == 3


def test_switch_reads_a_standard_dataset_from_the_path_given_and_shrinks_it(tmp_path):
    _save_npz(tmp_path / "c100.npz", (16, 16, 3), n=40, classes=5)  # stands in for CIFAR-100 files
    task = switch_task(f"switch:cifar100@{tmp_path / 'c100.npz'}", _splits("rgb", (3, 8, 8)),
                       fit_samples=20, test_samples=10)
    assert task.train[0].shape == (20, 3, 8, 8) and task.test[0].shape == (10, 3, 8, 8)
    assert task.info["resized"] == "bilinear [16, 16] -> [8, 8]" and task.num_classes == 5
