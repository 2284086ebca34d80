"""Lightning: measure the learning phases of a LightningModule while a ``Trainer`` fits it.

    from phasescope.interfaces.integrations.lightning import PhaseScopeCallback

    cb = PhaseScopeCallback(layers=["net.features.3"], fit_data=(x_fit, y_fit), test_data=(x_test, y_test),
                            out="runs/lightning")
    Trainer(max_steps=4096, callbacks=[cb]).fit(module, train_loader)

* **When**: at the scheduled global steps (default ``log_schedule(trainer.max_steps)``: 0, 1, 2,
  4, ..., max_steps). Step t is measured in ``on_train_batch_start`` before the t-th optimiser step
  (the model after t steps), the last step in ``on_train_end``. Measuring never changes training:
  a frozen copy is measured and every random generator is restored (tests check weights and RNG).
* **Logging**: every metric of a checkpoint goes to all the Trainer's loggers
  (``logger.log_metrics({...}, step=global_step)``: TensorBoard, CSV, W&B, MLflow, ...) as
  ``phasescope/<layer>/<split>/<metric>``.
* **Files** (with ``out``): the run folder of ``phasescope run``, written by its writer
  (:class:`phasescope.run.runfolder.RunWriter`): ``config.json`` at the start, ``metrics.csv`` and
  ``errors.npz`` after each checkpoint, ``phases.json`` (with the status), ``curves.png`` and
  ``report.html`` at the end. The folder is locked while the Trainer fits. When the fit starts, a
  folder that holds another run (of ``phasescope run``, of another callback, an earlier fit) is
  refused before training, unless ``overwrite=True`` (deletes only phasescope's files).
* **Resume**: the callback's state (the tracker's measurements) is saved in the Trainer's
  checkpoints; ``trainer.fit(module, ckpt_path=...)`` continues without re-measuring, into the
  folder of that run.
* **Devices**: measures where the module lives (``accelerator="cpu"`` or ``"gpu"``). Under DDP
  (``strategy="ddp"``) every rank measures its share of the samples and the results are combined
  exactly (:mod:`phasescope.engine.measure.distributed`): the same numbers as one process, in about
  1/world of the time; only global rank 0 logs and writes files, and every rank restores the
  measurements from the Trainer's checkpoint. ``distributed=False`` measures on rank 0 alone, the
  other ranks waiting. FSDP models are refused (their parameters are sharded).

``layers`` are module names of the LightningModule (``net.features.3``; selectors such as
``blocks.3[0]`` work, see :mod:`phasescope.engine.layers`); by default, what feeds its last
``nn.Linear``. The module is called as ``module(x)`` for logits; pass ``forward=lambda m, x: ...``
otherwise. Other keyword arguments go to :class:`~phasescope.engine.tracker.PhaseTracker`
(``bootstrap``, ``tokens``, ``extensions``, ...); ``extensions`` takes instances or names of registered
extensions (``extensions=["samples"]``, see ``phasescope extensions``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as e:
        raise ImportError("phasescope.interfaces.integrations.lightning needs Lightning: pip install 'phasescope[lightning]'") from e

from ...config import ConfigError
from ...engine.measure.distributed import sharded
from ...run.models import default_layers
from ...engine.schedule import log_schedule
from ...engine.tracker import PhaseTracker, _as_tensors
from ...run.runfolder import RunWriter
from .common import checkpoint_scalars, open_run, portable, restore, start_run


class PhaseScopeCallback(Callback):
    """Measures the learning phases of the LightningModule being fitted (see the module docstring)."""

    def __init__(self, layers: Sequence[str] | None = None, fit_data: Any = None, test_data: Any = None,
                 schedule: Sequence[int] | None = None, out: str | Path | None = None, *,
                 overwrite: bool = False, prefix: str = "phasescope", **tracker_options: Any):
        if fit_data is None or test_data is None:
            raise ValueError("PhaseScopeCallback needs fit_data and test_data: (x, y) tensors or DataLoaders of "
                             "(x, y) batches (training samples to fit the decoder on, held-out samples to score it).")
        self.layers = list(layers) if layers is not None else None
        self.fit_data = _as_tensors(fit_data, "fit_data")
        self.test_data = _as_tensors(test_data, "test_data")
        self.schedule = list(schedule) if schedule is not None else None
        self.out = Path(out) if out is not None else None
        self.overwrite = overwrite
        self.prefix = prefix
        self.options = tracker_options
        self.tracker: PhaseTracker | None = None
        self.run: RunWriter | None = None
        self._pending: dict | None = None  # state loaded from a checkpoint before the tracker exists

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=tuple(self.layers or ()), prefix=self.prefix)

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self.schedule is None and (trainer.max_steps is None or trainer.max_steps < 0):
            raise ConfigError(
                "PhaseScopeCallback: the Trainer has max_steps=-1, so there is no default schedule. Give one: "
                "PhaseScopeCallback(..., schedule=log_schedule(N)) with N the optimiser steps you train (e.g. "
                "trainer.estimated_stepping_batches), or Trainer(max_steps=N).")

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Claim the run folder (refused before training when it holds another run) and set up the
        tracker. Runs after the Trainer restored its checkpoint, so a resumed fit is known here."""
        if not trainer.is_global_zero and not sharded(self.options.get("distributed", "auto")):
            return  # distributed=False: rank 0 measures and writes, the others only train
        # the fit continues a run: the Trainer resumes from a checkpoint, or a second fit() goes on measuring
        resuming = self.tracker is not None or bool(self._pending) or getattr(trainer, "ckpt_path", None) is not None
        if self.out is not None and trainer.is_global_zero:  # sharded: every rank measures, rank 0 writes
            self._close()
            self.run = open_run(self.out, "lightning", resume=resuming, overwrite=self.overwrite)
        try:
            if self.tracker is None:
                schedule = self.schedule if self.schedule is not None else log_schedule(int(trainer.max_steps))
                layers = self.layers or default_layers(pl_module, tuple(self.fit_data[0].shape[1:]),
                                                       self.options.get("forward"))
                self.tracker = PhaseTracker(pl_module, layers, self.fit_data, self.test_data, schedule=schedule,
                                            **self.options)
            if self._pending:
                self.tracker.load_state_dict(restore(self._pending))
                self._pending = None
            if self.run is not None:  # a resumed tracker's measurements are written at once
                start_run(self.run, self.tracker, pl_module, "lightning", max_steps=int(trainer.max_steps))
        except BaseException as e:
            self._close(e)
            raise

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._measure(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._measure(trainer, pl_module)
        if self.run is not None and self.run.held and self.tracker is not None:
            self.run.finish(self.tracker, "complete")
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close(exception)  # records "interrupted" or "failed" when something was measured

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._close()

    def _close(self, exception: BaseException | None = None) -> None:
        """Release the run folder (after ``exception``: with the run's status when it measured)."""
        if self.run is not None and self.run.held:
            self.run.close(exception)

    def _measure(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is None:
            return
        step = int(trainer.global_step)
        rows = self.tracker.maybe_measure(pl_module, step)
        if rows is None:
            return
        if not trainer.is_global_zero:  # sharded: every rank holds the same rows; rank 0 logs them
            return
        scalars = checkpoint_scalars(rows, self.prefix)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        if self.run is not None:
            self.run.checkpoint(self.tracker)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        if self.tracker is not None:
            return portable(self.tracker.state_dict())
        return self._pending or {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.tracker is not None:
            self.tracker.load_state_dict(restore(state_dict))
        else:
            self._pending = state_dict
