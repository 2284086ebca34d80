"""The tracker never trusts its inputs and never changes the user's model."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from phasescope import PhaseTracker, log_schedule
from phasescope.data import load_dataset
from phasescope.errors import NonFiniteActivations, TrainingDiverged
from phasescope.run.models import build_model


from tests.test_tracker import digits, fresh as model_for  # noqa: F401  (the same data fixture and model)


def tracker(model, digits, **kw):
    fit = kw.pop("fit", (digits.x_train[:300], digits.y_train[:300]))
    test = kw.pop("test", (digits.x_test[:150], digits.y_test[:150]))
    return PhaseTracker(model, ["features.3"], fit, test, schedule=log_schedule(8), bootstrap=50, **kw)


def test_non_finite_activations_raise_one_catchable_error_and_keep_earlier_checkpoints(digits):
    m = model_for(digits)
    t = tracker(m, digits)
    t.maybe_measure(m, 0)
    before = t.results()
    with torch.no_grad():
        m.features[0][0].weight.fill_(float("inf"))  # what a diverged step leaves behind
    with pytest.raises(NonFiniteActivations, match="features.3") as info:
        t.maybe_measure(m, 1)
    assert isinstance(info.value, TrainingDiverged) and info.value.iteration == 1
    assert t.measured == [0]  # the failed checkpoint left nothing behind
    assert t.results().equals(before)
    assert sorted(t.errors["features.3"]) == [0]


def test_overflowing_but_finite_activations_are_caught(digits):
    m = model_for(digits)
    t = tracker(m, digits)
    with torch.no_grad():
        m.features[3][1].weight.mul_(1e20)  # finite features of ~1e20: their squares overflow float32
    with pytest.raises(NonFiniteActivations, match="statistics"):
        t.maybe_measure(m, 0)


def test_each_submodules_mode_is_restored(digits):
    """A BatchNorm deliberately frozen in eval stays in eval after measuring."""
    m = model_for(digits)
    m.train()
    m.features[0].eval()
    modes = {n: mod.training for n, mod in m.named_modules()}
    assert not all(modes.values()) and any(modes.values())  # mixed modes
    tracker(m, digits).maybe_measure(m, 0)
    assert {n: mod.training for n, mod in m.named_modules()} == modes


def test_frozen_batchnorm_training_is_unchanged_by_tracking(digits):
    """Same weights and BatchNorm statistics after 8 steps with a frozen-BN submodule, with and without tracking."""
    def train(track: bool):
        m = model_for(digits)
        m.train()
        m.features[0].eval()  # frozen BatchNorm statistics in the first block
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        t = tracker(m, digits) if track else None
        g = torch.Generator().manual_seed(0)
        for it in range(9):
            if t is not None:
                t.maybe_measure(m, it)
            if it == 8:
                break
            idx = torch.randint(0, len(digits.x_train), (32,), generator=g)
            loss = nn.functional.cross_entropy(m(digits.x_train[idx]), digits.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m.state_dict()

    plain, tracked = train(False), train(True)
    for k in plain:
        assert torch.equal(plain[k], tracked[k]), k


@pytest.mark.parametrize("case, data, message", [
    ("lengths", lambda d: (d.x_train[:100], d.y_train[:90]), "100 inputs but 90 labels"),
    ("nan", lambda d: (torch.where(torch.arange(100)[:, None, None, None] == 3, float("nan"), d.x_train[:100]),
                       d.y_train[:100]), "NaN or infinite"),
    ("float labels", lambda d: (d.x_train[:100], d.y_train[:100].float() + 0.5), "integer class indices"),
    ("negative labels", lambda d: (d.x_train[:100], d.y_train[:100] - 1), "found -1"),
    ("one-hot", lambda d: (d.x_train[:100], nn.functional.one_hot(d.y_train[:100], 10)), "argmax"),
    ("empty", lambda d: (d.x_train[:0], d.y_train[:0]), "empty"),
    ("dict loader", lambda d: [{"pixel_values": d.x_train[:10], "labels": d.y_train[:10]}], "yields dicts"),
    ("string", lambda d: "x.npz", "(x, y)"),
])
def test_bad_fit_data_says_what_to_fix(digits, case, data, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        tracker(model_for(digits), digits, fit=data(digits))


def test_labels_beyond_the_declared_class_count_are_an_error(digits):
    with pytest.raises(ValueError, match="num_classes=5"):
        tracker(model_for(digits), digits, num_classes=5)


def test_a_single_class_is_an_error(digits):
    one = digits.y_train[:100] * 0
    with pytest.raises(ValueError, match="single class"):
        tracker(model_for(digits), digits, fit=(digits.x_train[:100], one), test=(digits.x_test[:50], one[:50]))


def test_a_dataloader_of_pairs_is_accepted(digits):
    ds = torch.utils.data.TensorDataset(digits.x_train[:300], digits.y_train[:300])
    t = tracker(model_for(digits), digits, fit=torch.utils.data.DataLoader(ds, batch_size=64))
    assert t.fit_x.shape[0] == 300 and t.fit_y.dtype == torch.int64


def test_a_device_that_does_not_exist_is_an_error(digits):
    bad = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match="CUDA|cuda"):
        tracker(model_for(digits), digits, device=bad)
    with pytest.raises(ValueError, match="not a device name"):
        tracker(model_for(digits), digits, device="gpu7")


def test_measurement_restores_a_reduced_matmul_precision(digits):
    m = model_for(digits)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # what enabling TF32 in a training loop does
    try:
        tracker(m, digits).maybe_measure(m, 0)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_layer_with_more_features_than_fit_samples_is_warned_about(digits):
    m = model_for(digits)
    with pytest.warns(UserWarning, match="fit samples"):
        t = PhaseTracker(m, ["features.0"], (digits.x_train[:100], digits.y_train[:100]),
                         (digits.x_test[:50], digits.y_test[:50]), schedule=[0], bootstrap=20)
    assert t.describe()["notes"] and "max_features" in t.describe()["notes"][0]


# ---------------------------------------------------------------------- memory: inputs used as given
def test_float32_input_tensors_are_used_as_given_not_copied(digits):
    x, y = digits.x_train[:300].contiguous(), digits.y_train[:300]
    xt = digits.x_test[:150].contiguous()
    t = tracker(model_for(digits), digits, fit=(x, y), test=(xt, digits.y_test[:150]))
    assert t.fit_x.data_ptr() == x.data_ptr() and t.test_x.data_ptr() == xt.data_ptr()
    assert t.fit_x.dtype == torch.float32 and t.fit_x.is_contiguous()
    x64 = x.double()  # other dtypes: converted (a float32 copy), as before
    t = tracker(model_for(digits), digits, fit=(x64, y))
    assert t.fit_x.dtype == torch.float32 and torch.equal(t.fit_x, x)


@pytest.mark.parametrize("batch_size,drop_last", [(64, False), (100, False), (64, True)])
def test_a_dataloader_is_assembled_in_one_buffer_with_the_same_inputs(digits, batch_size, drop_last):
    from phasescope.engine.measure.inputs import as_tensors

    x, y = digits.x_train[:300], digits.y_train[:300]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset((x * 255).round().to(torch.uint8), y),
                                         batch_size=batch_size, drop_last=drop_last)
    gx, gy = as_tensors(loader, "fit_data")
    n = 300 // batch_size * batch_size if drop_last else 300
    want = (x[:n] * 255).round().to(torch.uint8).float()
    assert gx.dtype == torch.float32 and torch.equal(gx, want) and torch.equal(gy, y[:n])
    listed = [(a, b) for a, b in loader]  # a list of batches: the same
    lx, ly = as_tensors(listed, "fit_data")
    assert torch.equal(lx, want) and torch.equal(ly, y[:n])
    growing = [(x[:10], y[:10]), (x[10:40], y[10:40]), (x[40:41], y[40:41])]  # later batches larger: concatenated
    cx, cy = as_tensors(growing, "fit_data")
    assert torch.equal(cx, x[:41]) and torch.equal(cy, y[:41])
    tokens = [(torch.randint(0, 9, (4, 6)), torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    tx, _ = as_tensors(tokens, "fit_data", tokens=True)
    assert tx.dtype == torch.int64 and torch.equal(tx, torch.cat([a for a, _ in tokens]))


def _mapped_input_files() -> list[str]:
    return [line for line in Path("/proc/self/maps").read_text().splitlines() if "phasescope-inputs-" in line]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's mappings (Linux)")
def test_a_large_dataloader_goes_to_a_memory_mapped_file_and_measures_the_same(digits, monkeypatch):
    """Inputs a loader makes on the fly are not held in memory past SPILL_BYTES: they go to a
    temporary file (already unlinked) that the tracker reads; the measurement is the same."""
    import gc

    import pandas as pd

    from phasescope.engine.measure import inputs

    ds = torch.utils.data.TensorDataset(digits.x_train[:300], digits.y_train[:300])
    m = model_for(digits)
    monkeypatch.setattr(inputs, "SPILL_BYTES", 10_000)  # 300 x 64 float32 inputs: 77 KB
    gc.collect()
    before = len(_mapped_input_files())
    a = tracker(m, digits, fit=torch.utils.data.DataLoader(ds, batch_size=64))
    files = _mapped_input_files()
    assert len(files) == before + 1 and all(line.endswith("(deleted)") for line in files)
    assert torch.equal(a.fit_x, digits.x_train[:300])
    b = tracker(m, digits)
    a.measure(m, 0)
    b.measure(m, 0)
    pd.testing.assert_frame_equal(a.results(), b.results())
    del a
    gc.collect()
    assert len(_mapped_input_files()) == before  # the file's space is returned with the tracker


@pytest.mark.skipif(not hasattr(__import__("os"), "posix_fallocate"),
                    reason="no posix_fallocate here: inputs stay in memory")
def test_no_room_for_the_mapped_file_keeps_the_inputs_in_memory_with_a_warning(digits, monkeypatch):
    import errno

    from phasescope.engine.measure import inputs

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(inputs, "SPILL_BYTES", 10_000)
    monkeypatch.setattr(inputs.os, "posix_fallocate", full)
    ds = torch.utils.data.TensorDataset(digits.x_train[:300], digits.y_train[:300])
    with pytest.warns(UserWarning, match="TMPDIR"):
        x, y = inputs.as_tensors(torch.utils.data.DataLoader(ds, batch_size=64), "fit_data")
    assert torch.equal(x, digits.x_train[:300]) and torch.equal(y, digits.y_train[:300])


def test_a_tracker_on_a_dataloader_measures_what_it_measures_on_tensors(digits):
    import pandas as pd

    ds = torch.utils.data.TensorDataset(digits.x_train[:300], digits.y_train[:300])
    m = model_for(digits)
    a = tracker(m, digits, fit=torch.utils.data.DataLoader(ds, batch_size=64))
    b = tracker(m, digits)
    a.measure(m, 0)
    b.measure(m, 0)
    pd.testing.assert_frame_equal(a.results(), b.results())
    np.testing.assert_array_equal(a.errors["features.3"][0], b.errors["features.3"][0])


def test_large_inputs_are_forwarded_in_fewer_rows(digits, monkeypatch):
    """Batches hold at most BATCH_INPUT_BYTES of input: fewer rows for large inputs, recorded as
    measure_batch_rows; small inputs (the default run) keep measure_batch_size. BatchNorm is
    recalibrated in batches of measure_batch_size as before, so values agree to float rounding."""
    import pandas as pd

    from phasescope.engine import tracker as tracker_mod

    m = model_for(digits)
    plain = tracker(m, digits, batch_size=100)
    assert plain.batch_size == 100 and "measure_batch_rows" not in plain.describe()
    row = digits.x_train[0].numel() * 4
    monkeypatch.setattr(tracker_mod, "BATCH_INPUT_BYTES", 30 * row)
    small = tracker(m, digits, batch_size=100)
    assert small.batch_size == 30
    assert small.describe()["measure_batch_size"] == 100 and small.describe()["measure_batch_rows"] == 30
    assert tracker(m, digits, batch_size=100, bn_mode="batch").batch_size == 100  # batch statistics: size kept
    plain.measure(m, 0)
    small.measure(m, 0)
    pd.testing.assert_frame_equal(plain.results(), small.results(), check_exact=False, rtol=1e-5, atol=1e-7)


def test_the_batchnorm_subset_is_rows_of_the_fit_inputs_not_a_copy(digits):
    """BatchNorm recalibration's subset names rows of the fit inputs (at 224 x 224 x 3 a copy of 1,024
    of them would be 0.6 GB) and recalibrates exactly as the rows copied out would."""
    from phasescope.engine.measure.capture import recalibrate_bn
    from phasescope.engine.measure.inputs import RowSubset

    m = model_for(digits)
    t = tracker(m, digits, bn_samples=100)
    assert isinstance(t.bn_x, RowSubset) and t.bn_x.x is t.fit_x and len(t.bn_x) == 100
    assert t.describe()["bn_samples"] == 100
    rows = t.fit_x[t.bn_x.rows]
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    recalibrate_bn(a, t.bn_x, 30, torch.device("cpu"))
    recalibrate_bn(b, rows, 30, torch.device("cpu"))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


class _ViewNet(nn.Module):
    """A conv net that flattens with .view, which channels-last memory order breaks."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_conv_nets_are_measured_in_channels_last_order_with_the_same_values(digits, monkeypatch):
    import pandas as pd

    from phasescope.engine.measure import capture

    m = model_for(digits)
    fast = tracker(m, digits)
    assert fast.channels_last  # a conv net, on the CPU, agreeing on two samples
    monkeypatch.setattr(capture, "CHANNELS_LAST", False)
    usual = tracker(m, digits)
    assert not usual.channels_last
    fast.measure(m, 0)
    usual.measure(m, 0)
    pd.testing.assert_frame_equal(fast.results(), usual.results(), check_exact=False, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fast.errors["features.3"][0], usual.errors["features.3"][0], rtol=1e-5)


def test_a_model_that_breaks_in_channels_last_order_is_measured_as_it_is(digits):
    from phasescope.engine.measure.capture import channels_last_helps

    torch.manual_seed(0)
    net = _ViewNet()
    x = digits.x_train[:2]
    with pytest.raises(RuntimeError, match="view"):  # what the check protects against
        _ViewNet().to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert not channels_last_helps(_ViewNet(), x, torch.device("cpu"))
    t = PhaseTracker(net, ["conv"], (digits.x_train[:300], digits.y_train[:300]),
                     (digits.x_test[:150], digits.y_test[:150]), schedule=[0], bootstrap=50)
    assert not t.channels_last
    t.measure(net, 0)  # measured, not crashed
    mlp = build_model("mlp", digits.input_shape, 10)
    assert not channels_last_helps(mlp, x, torch.device("cpu"))  # no convolution: nothing to gain
