"""phasescope in a Lightning Trainer: a callback measures the learning phases while it fits.

    pip install "phasescope[lightning]"
    python examples/lightning_callback.py                # < 1 min on CPU: small CNN, embedded 8x8 digits
    python examples/lightning_callback.py --steps 8      # a smoke test

Every metric goes to the Trainer's loggers (here a CSVLogger: runs/lightning-example/logs/...);
the run folder (metrics.csv, errors.npz, phases.json, curves.png) to runs/lightning-example/phases.
"""
import argparse
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from phasescope.data import load_dataset
from phasescope.interfaces.integrations.lightning import PhaseScopeCallback
from phasescope.run.models import build_model


class DigitsClassifier(pl.LightningModule):
    def __init__(self, input_shape, num_classes, lr=0.05):
        super().__init__()
        self.net = build_model("cnn", input_shape, num_classes, width=0.5)
        self.lr = lr

    def forward(self, x):  # the callback calls module(x) for logits
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1024)
    p.add_argument("--out", default="runs/lightning-example")
    p.add_argument("--overwrite", action="store_true", help="replace the run of an earlier call in --out")
    a = p.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    data = load_dataset("digits")
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.x_train, data.y_train),
                                        batch_size=64, shuffle=True)
    callback = PhaseScopeCallback(
        layers=["net.features.2", "net.features.3"],          # module names of the LightningModule
        fit_data=(data.x_train, data.y_train),                # or DataLoaders of (x, y)
        test_data=(data.x_test, data.y_test),
        out=f"{a.out}/phases",                                # schedule: log_schedule(max_steps) by default
        overwrite=a.overwrite,                                # a folder holding a run is refused without it
    )
    trainer = pl.Trainer(max_steps=a.steps, accelerator="cpu", callbacks=[callback],
                         logger=pl.loggers.CSVLogger(a.out, name="logs"), log_every_n_steps=16,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the DataLoader num_workers hint
        trainer.fit(DigitsClassifier(data.input_shape, data.num_classes), train)
    for layer, r in callback.tracker.phases().items():
        print(layer, ", ".join(f"{q.name} {q.start}-{q.end}" for q in r.phases),
              f"| min at {r.min_iteration}, decrease {r.relative_decrease.value:.1%}, "
              f"increase {r.relative_increase.value:.1%}")
    print(f"logged to {trainer.logger.log_dir}/metrics.csv; run folder {a.out}/phases")


if __name__ == "__main__":
    main()
