"""Exceptions a user's code may want to catch, in one place (no imports: any module may use them)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it
    (also importable as ``phasescope.config.ConfigError``)."""


class TrainingDiverged(RuntimeError):
    """Training produced NaN or infinite numbers: the loss, or the activations a checkpoint measured.

    Everything measured before ``iteration`` is kept (and, in ``run_experiment``, written).
    """

    def __init__(self, iteration: int, loss: float, detail: str | None = None):
        self.iteration, self.loss = iteration, loss
        what = detail or f"loss is {loss}"
        super().__init__(
            f"Training diverged at iteration {iteration}: {what}. "
            "Lower --lr (or use --optimizer adam), or check the input data for NaN/inf. "
            "Everything measured before this iteration has been written."
        )


class NonFiniteActivations(TrainingDiverged):
    """A checkpoint found NaN/inf in a layer's activations, the logits, or the decoder's statistics.

    Raised by :meth:`PhaseTracker.measure` before anything of that checkpoint is recorded, so
    the tracker's results still hold every earlier checkpoint. ``where`` names what was not finite.
    """

    def __init__(self, iteration: int, where: str):
        self.where = where
        super().__init__(iteration, float("nan"), detail=f"NaN or inf in {where} at this checkpoint")


class NonFiniteInput(ValueError):
    """An estimator was given NaN/inf data (features, targets or accumulated statistics)."""


class NotFittedError(RuntimeError):
    """A decoder or probe was used (predict, scores, errors) before it was fitted."""


class DataError(ValueError):
    """A data file is missing, corrupt, or does not match what was asked for."""


class ModelError(ValueError):
    """An unknown model or layer name, or a model that does not fit the data."""


class StopTraining(Exception):
    """Raised from a training hook to end pre-training early; carries the decision
    (a :class:`phasescope.extension.Decision`, e.g. the keeper's after a significant rise)."""

    def __init__(self, decision):
        self.decision = decision
        super().__init__(decision.reason)


class TransferError(DataError):
    """A transfer task cannot be set up; the message says which and how to fix it."""


class RankFailed(RuntimeError):
    """Another rank of a sharded measurement failed (or never answered): every rank stops measuring.

    Raised by :meth:`PhaseTracker.measure` under ``torch.distributed`` on the ranks that did not fail
    themselves; the message names the rank and its error (the rank that failed raises its own)."""
