"""TensorBoardLogger: scalars and the curves image at every checkpoint, read back from the event files."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'phasescope[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from phasescope import PhaseTracker  # noqa: E402
from phasescope.interfaces.cli import app  # noqa: E402
from phasescope.data import load_dataset  # noqa: E402
from phasescope.interfaces.integrations.tensorboard import TensorBoardLogger  # noqa: E402
from phasescope.run.models import build_model  # noqa: E402

KEY = "phasescope/features.3/test/reconstruction_mse"


def events(log_dir):
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_every_metric_and_the_figure_per_checkpoint(tmp_path):
    d = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", d.input_shape, 10, width=0.5)
    tb = TensorBoardLogger(tmp_path / "tb")
    t = PhaseTracker(model, ["features.3"], (d.x_train[:200], d.y_train[:200]), (d.x_test[:100], d.y_test[:100]),
                     schedule=[0, 2], bootstrap=50, extensions=[tb])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for it in range(3):
        t.maybe_measure(model, it)
        loss = torch.nn.functional.cross_entropy(model(d.x_train[:64]), d.y_train[:64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tb.close()
    acc = events(tmp_path / "tb")
    tags = acc.Tags()
    df = t.results()
    expected = {f"phasescope/{r.layer}/{r.split}/{r.metric}" for r in df.itertuples()}
    assert set(tags["scalars"]) == expected
    got = [(e.step, e.value) for e in acc.Scalars(KEY)]
    ours = df.query("layer == 'features.3' and split == 'test' and metric == 'reconstruction_mse'")
    assert [s for s, _ in got] == [0, 2]
    assert [v for _, v in got] == pytest.approx(ours.value.tolist(), rel=1e-6)
    assert tags["images"] == ["phasescope/curves"]
    images = acc.Images("phasescope/curves")
    assert [i.step for i in images] == [0, 2] and images[-1].width > 300
    assert t.describe()["extensions"]["tensorboard"]["images"] is True


def test_cli_tensorboard_option(tmp_path):
    res = CliRunner().invoke(app, ["run", "--dataset", "digits", "--width", "0.5", "--iterations", "2",
                                   "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "50",
                                   "--no-samples", "--quiet", "--out", str(tmp_path / "run"),
                                   "--tensorboard", str(tmp_path / "tb")])
    assert res.exit_code == 0, res.output
    acc = events(tmp_path / "tb")
    assert [e.step for e in acc.Scalars(KEY)] == [0, 1, 2]
    assert len(acc.Images("phasescope/curves")) == 3
