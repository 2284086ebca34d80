"""Checkpoints written by a real Lightning Trainer (ModelCheckpoint every 2 steps, epoch=E-step=N.ckpt
names): measured with --lightning (load_from_checkpoint) and with --model (its state_dict, the
module's 'net.' prefix stripped), to the same numbers."""
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

pl = pytest.importorskip("lightning.pytorch", reason="Lightning is not installed (pip install 'phasescope[lightning]')")

from phasescope.interfaces.cli import app  # noqa: E402
from phasescope.data import load_dataset  # noqa: E402

from .helpers import TINY_ARGS  # noqa: E402
from .lightning_module import Digits  # noqa: E402

runner = CliRunner()


def test_trainer_checkpoints_with_lightning_class_and_with_model(tmp_path):
    data = load_dataset("digits")
    ds = torch.utils.data.TensorDataset(data.x_train[:256], data.y_train[:256])
    pl.seed_everything(0, verbose=False)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=2, save_top_k=-1,
                                        filename="{epoch}-{step}")
    trainer = pl.Trainer(max_steps=6, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Digits(), torch.utils.data.DataLoader(ds, batch_size=32))
    names = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert names == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "epoch=0-step=6.ckpt"]
    res = runner.invoke(app, ["analyze", str(tmp_path / "ckpts"), *[a for a in TINY_ARGS if a not in ("--width", "0.5")],
                              "--lightning", "tests.analyze.lightning_module:Digits", "--layers", "net.features.3",
                              "--strict", "--out", str(tmp_path / "lit")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["analyze", str(tmp_path / "ckpts"), *TINY_ARGS, "--layers", "features.3", "--strict",
                              "--out", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output  # strict: the recorded global_step agrees with the names
    lit, plain = (pd.read_csv(tmp_path / d / "metrics.csv") for d in ("lit", "model"))
    assert sorted(set(lit.iteration)) == [2, 4, 6]
    lit["layer"] = lit.layer.str.replace("net.", "", regex=False)
    order = ["iteration", "layer", "split", "metric"]
    pd.testing.assert_frame_equal(lit.sort_values(order, ignore_index=True), plain.sort_values(order, ignore_index=True),
                                  rtol=1e-5)
