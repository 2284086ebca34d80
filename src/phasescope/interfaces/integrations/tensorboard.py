"""TensorBoard: every metric as a scalar and the curves figure as an image, at every checkpoint.

    from phasescope.interfaces.integrations.tensorboard import TensorBoardLogger

    tracker = PhaseTracker(model, layers, fit, test, extensions=[TensorBoardLogger("runs/tb")])
    # or: phasescope run --tensorboard runs/tb

An :class:`~phasescope.extension.Extension`: after each checkpoint is recorded it writes the
checkpoint's metrics as ``phasescope/<layer>/<split>/<metric>`` scalars at ``global_step =
iteration``, and (``images=True``) the figure of ``curves.png`` drawn from the results so far
as the image ``phasescope/curves`` (drawing it costs 0.3-1 s per checkpoint on a CPU;
``images=False`` skips it). Written with
``torch.utils.tensorboard.SummaryWriter``, which needs the ``tensorboard`` package
(``pip install "phasescope[tensorboard]"``). View with ``tensorboard --logdir runs/tb``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...extension import CheckpointContext, Extension
from .common import checkpoint_scalars
from ...outputs.figures import phases_payload, plot_curves


class TensorBoardLogger(Extension):
    name = "tensorboard"
    distributed = "rank0"  # a sharded tracker's ranks see the same rows: one writer is enough

    def __init__(self, log_dir: str | Path, *, images: bool = True, prefix: str = "phasescope", title: str | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency (tensorboard)
        except ImportError as e:
            raise ImportError("TensorBoardLogger needs the tensorboard package: "
                              "pip install 'phasescope[tensorboard]'") from e
        self.log_dir, self.images, self.prefix, self.title = Path(log_dir), images, prefix, title
        self._writer_cls = SummaryWriter
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        if self._writer is None:
            self._writer = self._writer_cls(log_dir=str(self.log_dir))
        return self._writer

    def describe(self) -> dict:
        return {"log_dir": str(self.log_dir), "images": self.images}

    def after_checkpoint(self, ctx: CheckpointContext) -> None:
        tracker, it = ctx.tracker, ctx.iteration
        rows = [r for r in tracker.rows if r["iteration"] == it]
        for name, value in checkpoint_scalars(rows, self.prefix).items():
            self.writer.add_scalar(name, value, global_step=it)
        if self.images:
            self.writer.add_image(f"{self.prefix}/curves", self._curves(tracker), global_step=it, dataformats="HWC")
        self.writer.flush()
        return None

    def _curves(self, tracker: Any) -> np.ndarray:
        """The curves.png figure of the results so far, as an (H, W, 3) uint8 array."""
        from PIL import Image  # lazy: Pillow only when the curves figure is logged

        df = tracker.results()
        payload = phases_payload(tracker.phases(), df, tracker.num_classes)
        with tempfile.TemporaryDirectory() as tmp:
            path = plot_curves(df, payload["layers"], Path(tmp) / "curves.png", title=self.title)
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
