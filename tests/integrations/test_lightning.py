"""PhaseScopeCallback with a real Lightning Trainer on the CPU (embedded 8x8 digits, 32 steps)."""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

pl = pytest.importorskip("lightning.pytorch", reason="Lightning is not installed (pip install 'phasescope[lightning]')")

from phasescope import log_schedule  # noqa: E402
from phasescope.config import ConfigError  # noqa: E402
from phasescope.data import load_dataset  # noqa: E402
from phasescope.interfaces.integrations.lightning import PhaseScopeCallback  # noqa: E402
from phasescope.run.models import build_model  # noqa: E402
from phasescope.outputs.runs import read_json  # noqa: E402

STEPS = 32


class Digits(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = build_model("cnn", (1, 8, 8), 10, width=0.5)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def loader(digits, shuffle=True):
    # 512 samples, batch 32: 16 steps per epoch, so checkpoints at epoch ends resume exactly
    ds = torch.utils.data.TensorDataset(digits.x_train[:512], digits.y_train[:512])
    return torch.utils.data.DataLoader(ds, batch_size=32, shuffle=shuffle)


def callback(digits, out=None, **kw):
    return PhaseScopeCallback(layers=["net.features.3"], fit_data=(digits.x_train[:300], digits.y_train[:300]),
                              test_data=(digits.x_test[:150], digits.y_test[:150]), out=out, bootstrap=50, **kw)


def fit(digits, callbacks=(), *, tmp_path=None, shuffle=True, ckpt_path=None, logger=False, **trainer_kw):
    pl.seed_everything(0, verbose=False)
    module = Digits()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=logger, callbacks=list(callbacks),
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                         default_root_dir=tmp_path, **{"enable_checkpointing": False, "max_steps": STEPS, **trainer_kw})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # num_workers advice and the like
        trainer.fit(module, loader(digits, shuffle), ckpt_path=ckpt_path)
    return module, trainer


def test_callback_never_changes_training_and_writes_a_run_folder(digits, tmp_path):
    plain, _ = fit(digits)
    rng_plain = torch.get_rng_state()
    logger = pl.loggers.CSVLogger(tmp_path / "logs", name="csv")
    cb = callback(digits, out=tmp_path / "run")
    tracked, trainer = fit(digits, [cb], logger=logger)
    rng_tracked = torch.get_rng_state()
    for (k, a), b in zip(plain.state_dict().items(), tracked.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(rng_plain, rng_tracked)
    assert cb.tracker.measured == log_schedule(STEPS)  # default schedule from max_steps, last step in on_train_end
    # the run folder of `phasescope run`
    for f in ("config.json", "metrics.csv", "errors.npz", "phases.json", "curves.png"):
        assert (tmp_path / "run" / f).exists(), f
    payload = read_json(tmp_path / "run" / "phases.json")
    assert payload["status"] == "complete" and payload["checkpoints"] == log_schedule(STEPS)
    assert read_json(tmp_path / "run" / "config.json")["integration"]["source"] == "lightning"
    # every metric reached the Trainer's logger, at its global step
    logged = pd.read_csv(logger.log_dir + "/metrics.csv")
    key = "phasescope/net.features.3/test/reconstruction_mse"
    got = logged.dropna(subset=[key]).set_index("step")[key]
    assert sorted(got.index) == log_schedule(STEPS)
    ours = cb.tracker.results().query("layer == 'net.features.3' and split == 'test' and metric == 'reconstruction_mse'")
    pd.testing.assert_series_equal(got.sort_index(), ours.set_index("iteration").value.rename(key).rename_axis("step"),
                                   rtol=1e-5, check_dtype=False)
    assert "phasescope/model/test/accuracy" in logged.columns and "train_loss" in logged.columns


def test_resumes_from_the_trainers_checkpoint(digits, tmp_path):
    """A fit resumed from a Trainer checkpoint at step 16 measures what an uninterrupted fit does."""
    ckpts = tmp_path / "ckpt"
    save = pl.callbacks.ModelCheckpoint(dirpath=ckpts, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True)
    whole = callback(digits)
    fit(digits, [whole, save], tmp_path=tmp_path, shuffle=False, enable_checkpointing=True)
    first = sorted(ckpts.glob("*step=16*.ckpt"))
    assert first, sorted(ckpts.iterdir())
    resumed = callback(digits, out=tmp_path / "run")
    fit(digits, [resumed], tmp_path=tmp_path, shuffle=False, ckpt_path=str(first[0]))
    assert resumed.tracker.measured == whole.tracker.measured == log_schedule(STEPS)
    # the checkpoints before 16 come from the saved state (same timings: not measured again); step 16 is
    # measured after the epoch-end checkpoint was written (before the 17th step), so again on resume
    assert all(resumed.tracker.timings[t] == whole.tracker.timings[t] for t in (0, 1, 2, 4, 8))
    assert resumed.tracker.timings[16] != whole.tracker.timings[16]
    a, b = (c.tracker.results().query("iteration <= 16").reset_index(drop=True) for c in (resumed, whole))
    pd.testing.assert_frame_equal(a, b)
    assert read_json(tmp_path / "run" / "phases.json")["checkpoints"] == log_schedule(STEPS)


def test_max_steps_minus_one_needs_a_schedule(digits, tmp_path):
    with pytest.raises(ConfigError, match=r"max_steps=-1.*schedule=log_schedule\(N\)"):
        fit(digits, [callback(digits)], max_steps=-1, max_epochs=1)


def test_only_rank_zero_measures(digits):
    cb = callback(digits)
    trainer = SimpleNamespace(is_global_zero=False, max_steps=STEPS, global_step=0, loggers=[])
    module = Digits()
    cb.setup(trainer, module, "fit")
    cb.on_fit_start(trainer, module)
    cb.on_train_batch_start(trainer, module, None, 0)
    cb.on_train_end(trainer, module)
    assert cb.tracker is None and cb.state_dict() == {}


def test_extensions_by_name(digits, tmp_path):
    """extensions= takes registered names (built-in or installed), as PhaseTracker does."""
    cb = callback(digits, out=tmp_path / "run", extensions=["samples"], schedule=[0, 4])
    fit(digits, [cb], max_steps=4)
    assert [type(e).__name__ for e in cb.tracker.extensions] == ["SampleDynamics"]
    assert "grad_share_top10" in set(pd.read_csv(tmp_path / "run" / "metrics.csv").metric)
