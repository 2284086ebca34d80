"""Lightning's DDP (``Trainer(accelerator="cpu", devices=2, strategy="ddp")``: Lightning starts the
second process by running this script again) with two PhaseScopeCallbacks on the same module:
sharded (the default) and ``distributed=False`` (rank 0 alone): their run folders must agree. Then
a second Trainer resumes from the first one's checkpoint, on every rank.

    lightning_ddp.py OUT

OUT/sharded, OUT/single: the run folders of the first fit (16 steps); OUT/rank<r>.json: what each
rank's callbacks hold, the resumed one's too (to step 32); OUT/log_rank<r>.jsonl: the phasescope metrics
each rank's logger received.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger

from phasescope.data import load_dataset
from phasescope.interfaces.integrations.lightning import PhaseScopeCallback
from phasescope.run.models import build_model

SCHEDULE = [0, 1, 2, 4, 8, 16, 24, 32]


class Digits(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = build_model("cnn", (1, 8, 8), 10, width=0.5)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class Recorder(Logger):
    """Records, per rank, the phasescope metrics it is asked to log (no rank-zero filter of its own)."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        keys = sorted(k for k in metrics if k.startswith("phasescope/"))
        if keys:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            with open(self.out / f"log_rank{rank}.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "keys": len(keys)}) + "\n")


def callbacks(data, out: Path, **kw):
    common = dict(layers=["net.features.3"], fit_data=(data.x_train[:300], data.y_train[:300]),
                  test_data=(data.x_test[:150], data.y_test[:150]), schedule=SCHEDULE, bootstrap=100, batch_size=64,
                  bn_samples=200)
    return [PhaseScopeCallback(out=out / "sharded", **common, **kw),
            PhaseScopeCallback(out=out / "single", prefix="single", distributed=False, **common, **kw)]


def fit(data, out: Path, cbs, max_steps: int, ckpt_path=None):
    pl.seed_everything(0, verbose=False)
    module = Digits()
    ds = torch.utils.data.TensorDataset(data.x_train[:512], data.y_train[:512])
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=max_steps, logger=Recorder(out),
                         callbacks=cbs, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=out / "lightning")
    trainer.fit(module, torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False), ckpt_path=ckpt_path)
    return trainer


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    data = load_dataset("digits")
    first = callbacks(data, out)
    trainer = fit(data, out, first, 16)
    trainer.save_checkpoint(out / "step16.ckpt")
    resumed = [PhaseScopeCallback(layers=["net.features.3"],
                                  fit_data=(data.x_train[:300], data.y_train[:300]),
                                  test_data=(data.x_test[:150], data.y_test[:150]), schedule=SCHEDULE, bootstrap=100,
                                  batch_size=64, bn_samples=200)]
    trainer = fit(data, out, resumed, 32, ckpt_path=out / "step16.ckpt")
    rank = trainer.global_rank
    sharded, single = first
    (out / f"rank{rank}.json").write_text(json.dumps({
        "sharded": sharded.tracker.results().to_dict("records"),
        "single": None if single.tracker is None else single.tracker.results().to_dict("records"),
        "resumed": resumed[0].tracker.results().to_dict("records"),
        "resumed_timings": {str(k): v for k, v in resumed[0].tracker.timings.items()},
        "first_timings": {str(k): v for k, v in sharded.tracker.timings.items()},
    }, default=float))


if __name__ == "__main__":
    main()
