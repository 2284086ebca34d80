"""Hugging Face ``Trainer``: measure the learning phases of an image classifier or a causal LM it trains.

    from phasescope.interfaces.integrations.transformers import PhaseScopeCallback

    cb = PhaseScopeCallback(layers=["vit.layers.1"], fit_data=(x_fit, y_fit), test_data=(x_test, y_test),
                            out="runs/hf")
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb]).train()

* **When**: at the scheduled ``state.global_step`` (default ``log_schedule(state.max_steps)``):
  step 0 in ``on_train_begin``, step t in ``on_step_end`` (after the t-th optimiser step).
  Measuring works on a frozen copy and restores every random generator.
* **Logging**: through the Trainer's own ``log`` (so ``report_to`` integrations -- TensorBoard,
  W&B, MLflow, ... -- and ``trainer.state.log_history`` receive ``phasescope/<layer>/<split>/<metric>``;
  the Trainer's TensorBoard and W&B callbacks file them under ``train/`` as they do every training log).
  The callback finds the Trainer that calls it; pass ``trainer=`` (or call :meth:`bind`) to be explicit.
* **The model**: called as ``model(pixel_values=x)``; the tracker takes ``.logits`` of the output
  (:func:`pixel_values_forward`). Pass ``forward=lambda model, x: ...`` for other models.
  ``fit_data``/``test_data``: (x, y) tensors, DataLoaders of (x, y), or datasets whose items are
  dicts with ``pixel_values`` and ``labels`` (or ``label``), as the Trainer's are.
* **Causal language models** (``AutoModelForCausalLM``): give windows of token ids, ``x`` an
  integer tensor (N, T), and as ``y`` the token that follows each window (or a dataset of
  ``{"input_ids": ...}`` items: the last token of each is the label of the ones before it). The
  callback then calls ``model(input_ids=x).logits[:, -1]`` (:func:`causal_lm_forward`), tracks
  every transformer block (the residual stream at the last position), and the decoder
  reconstructs the one-hot of the last token (``target="tokens"``, see
  :mod:`phasescope.engine.measure.targets`; ``vocab_size`` [the model's number of logits] and
  ``token_window`` go to the tracker like its other options).
* **Files** (with ``out``): the run folder of ``phasescope run``, written by its writer
  (:class:`phasescope.run.runfolder.RunWriter`) and locked from ``on_train_begin`` to ``on_train_end``. A
  folder that holds another run is refused before the first step, unless ``overwrite=True``
  (deletes only phasescope's files). The Trainer has no event for an error: after an exception
  the folder stays locked until the callback's next ``train()``, :meth:`PhaseScopeCallback.close`,
  or the end of the process.
* **Resume**: the measurements so far are saved beside each Trainer checkpoint
  (``checkpoint-N/phasescope_tracker.pt``) and read back when ``trainer.train(resume_from_checkpoint=...)``
  starts at step N; the run continues in its folder.
* **Processes**: under ``torchrun`` (DDP) every process measures its share of the samples and
  the results are combined exactly (:mod:`phasescope.engine.measure.distributed`): the numbers of one
  process, in about 1/world of the time; only the world process zero logs and writes files
  (``state.is_world_process_zero``), and every process reads the measurements back on resume.
  ``distributed=False``: the world process zero measures alone. FSDP models are refused.
* Other keyword arguments go to :class:`~phasescope.engine.tracker.PhaseTracker`; ``extensions`` takes
  instances or names of registered extensions (``extensions=["samples"]``, see ``phasescope extensions``).
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError("phasescope.interfaces.integrations.transformers needs transformers: "
                      "pip install 'phasescope[transformers]'") from e

from ...engine.measure.distributed import sharded
from ...engine.measure.inputs import batches
from ...engine.layers import causal_lm_forward, is_token_data, transformer_blocks
from ...run.models import default_layers, token_layers
from ...engine.schedule import log_schedule
from ...engine.tracker import PhaseTracker, _as_tensors
from ...run.runfolder import RunWriter
from .common import checkpoint_scalars, open_run, portable, restore, start_run

STATE_FILE = "phasescope_tracker.pt"


def pixel_values_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of a Hugging Face image classifier: ``model(pixel_values=x).logits``."""
    return model(pixel_values=x).logits


def _token_layers(model: torch.nn.Module, x: torch.Tensor, forward: Any) -> list[str]:
    """Every transformer block, with the selector [0] where a block returns a tuple (older transformers)."""
    return token_layers(model, tuple(x.shape[1:]), forward, dtype=x.dtype)


def _tensors(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from tensors/loaders of (x, y), or from a dataset of {pixel_values, labels} or {input_ids} dicts."""
    if hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (tuple, list)) \
            and len(data) and isinstance(data[0], Mapping):
        first = data[0]
        if "input_ids" in first:  # a causal LM's items: each window's last token is its label
            ids = torch.stack([torch.as_tensor(data[i]["input_ids"]) for i in range(len(data))])
            return _as_tensors((ids[:, :-1], ids[:, -1]), name, tokens=True)
        label = "labels" if "labels" in first else "label" if "label" in first else None
        if "pixel_values" not in first or label is None:
            raise TypeError(f"{name}: items are dicts with keys {sorted(first)}; the callback needs 'pixel_values' "
                            "and 'labels' (or 'label'), or give (x, y) tensors.")
        items = [data[i] for i in range(len(data))]
        xs = torch.stack([torch.as_tensor(it["pixel_values"]) for it in items])
        ys = torch.as_tensor([int(it[label]) for it in items])
        return _as_tensors((xs, ys), name)
    given = batches(data, name)  # read once (a generator could not be read twice)
    x = given[0][0] if given else None
    x = x if x is None or torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    return _as_tensors(given, name, tokens=x is not None and is_token_data(x))  # integer windows stay token ids


class PhaseScopeCallback(TrainerCallback):
    """Measures the learning phases of the model a Hugging Face ``Trainer`` trains (see the module docstring)."""

    def __init__(self, layers: Sequence[str] | None = None, fit_data: Any = None, test_data: Any = None,
                 schedule: Sequence[int] | None = None, out: str | Path | None = None, *, trainer: Any = None,
                 overwrite: bool = False, forward: Any = None, prefix: str = "phasescope",
                 **tracker_options: Any):
        if fit_data is None or test_data is None:
            raise ValueError("PhaseScopeCallback needs fit_data and test_data: (x, y) tensors, DataLoaders of (x, y), "
                             "or datasets of {'pixel_values', 'labels'} items.")
        self.layers = list(layers) if layers is not None else None
        self.fit_data = _tensors(fit_data, "fit_data")
        self.test_data = _tensors(test_data, "test_data")
        self.schedule = list(schedule) if schedule is not None else None
        self.out = Path(out) if out is not None else None
        self.overwrite = overwrite
        self.tokens = is_token_data(self.fit_data[0])  # a causal LM's windows of token ids
        if forward is None:
            forward = causal_lm_forward if self.tokens else pixel_values_forward
        if self.tokens:
            tracker_options = {"target": "tokens", **tracker_options}
        self.forward, self.prefix, self.options = forward, prefix, tracker_options
        self.trainer = trainer
        self.tracker: PhaseTracker | None = None
        self.run: RunWriter | None = None

    def bind(self, trainer: Any) -> "PhaseScopeCallback":
        """Log through ``trainer.log`` (found automatically when the Trainer calls the callback)."""
        self.trainer = trainer
        return self

    def _find_trainer(self) -> Any:
        """The Trainer whose callback handler holds this callback, from the calling frames."""
        frame = inspect.currentframe()
        while frame is not None:
            obj = frame.f_locals.get("self")
            handler = getattr(obj, "callback_handler", None)
            if handler is not None and any(cb is self for cb in getattr(handler, "callbacks", ())):
                return obj
            frame = frame.f_back
        return None

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Claim the run folder (refused before the first step when it holds another run) and set
        up the tracker; a later ``train()`` of the same callback goes on measuring into its run."""
        if not state.is_world_process_zero and not sharded(self.options.get("distributed", "auto")):
            return  # distributed=False: process zero measures alone
        self.trainer = self.trainer or self._find_trainer()
        continuing = self.tracker is not None
        if self.out is not None and state.is_world_process_zero:  # sharded: every process measures, zero writes
            self.close()  # a train() that raised: the Trainer has no event for that
            self.run = open_run(self.out, "transformers", resume=continuing or state.global_step > 0,
                                overwrite=self.overwrite)
        try:
            if self.tracker is None:
                schedule = self.schedule if self.schedule is not None else log_schedule(int(state.max_steps))
                x = self.fit_data[0]
                layers = self.layers or (_token_layers(model, x, self.forward) if self.tokens else
                                         default_layers(model, tuple(x.shape[1:]), self.forward))
                self.tracker = PhaseTracker(model, layers, self.fit_data, self.test_data, schedule=schedule,
                                            forward=self.forward, **self.options)
                if state.global_step > 0:
                    self._resume(args, state)
            if self.run is not None:  # a resumed tracker's measurements are written at once
                start_run(self.run, self.tracker, model, "transformers", max_steps=int(state.max_steps))
        except BaseException as e:
            self.close(e)
            raise
        if not continuing:
            self._measure(state, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._measure(state, model)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.tracker is None or not state.is_world_process_zero:  # sharded: every process holds the same state
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            torch.save(portable(self.tracker.state_dict()), folder / STATE_FILE)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.tracker is None:
            return
        self._measure(state, model)
        if self.run is not None and self.run.held:
            self.run.finish(self.tracker, "complete")
        self.close()

    def close(self, exception: BaseException | None = None) -> None:
        """Release the run folder (after ``exception``: with the run's status when it measured).
        Called at the end of training; call it yourself after ``train()`` raised."""
        if self.run is not None and self.run.held:
            self.run.close(exception)

    # ------------------------------------------------------------------ helpers
    def _measure(self, state: Any, model: Any) -> None:
        if self.tracker is None or model is None:
            return
        step = int(state.global_step)
        rows = self.tracker.maybe_measure(model, step)
        if rows is None:
            return
        if not state.is_world_process_zero:  # sharded: the same rows on every process; zero logs them
            return
        scalars = checkpoint_scalars(rows, self.prefix)
        if self.trainer is not None:
            # Trainer.log clears control.should_log (on_log): the Trainer's own log due at this step (the loss)
            # must still happen, on this process as on the others, whose collectives it takes part in.
            control = getattr(self.trainer, "control", None)
            due = getattr(control, "should_log", None)
            self.trainer.log(scalars)
            if due is not None and getattr(self.trainer, "control", None) is not None:
                self.trainer.control.should_log = due
        else:  # no Trainer to log through: at least the history holds them
            state.log_history.append({**scalars, "step": step})
        if self.run is not None:
            self.run.checkpoint(self.tracker)

    def _resume(self, args: Any, state: Any) -> None:
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
        if not path.exists():
            warnings.warn(f"Training resumes at step {state.global_step} but {path} does not exist: the checkpoints "
                          "measured before it are missing from the results.", stacklevel=3)
            return
        self.tracker.load_state_dict(restore(torch.load(path, map_location="cpu", weights_only=True)))


__all__ = ["PhaseScopeCallback", "causal_lm_forward", "pixel_values_forward", "transformer_blocks"]
