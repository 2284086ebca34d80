"""A tiny LightningModule for the analyze tests (importable as tests.analyze.lightning_module:Digits)."""
import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from phasescope.run.models import build_model


class Digits(pl.LightningModule):
    def __init__(self, width: float = 0.5):
        super().__init__()
        self.save_hyperparameters()  # so that load_from_checkpoint can build it
        self.net = build_model("cnn", (1, 8, 8), 10, width=width)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
