"""phasescope inside other training stacks. Each module needs its framework (an optional extra):

- :mod:`phasescope.interfaces.integrations.lightning`: ``PhaseScopeCallback`` for a Lightning ``Trainer``
  (``pip install "phasescope[lightning]"``)
- :mod:`phasescope.interfaces.integrations.transformers`: ``PhaseScopeCallback`` for a Hugging Face
  ``Trainer`` (``pip install "phasescope[transformers]"``)
- :mod:`phasescope.interfaces.integrations.tensorboard`: ``TensorBoardLogger``, an extension that writes every
  metric and the curves figure to TensorBoard from any loop (``pip install "phasescope[tensorboard]"``)

All of them write the same run-folder files as ``phasescope run``, with its writer
(:class:`phasescope.run.runfolder.RunWriter`).
"""
from typing import Any

from . import common
from .common import checkpoint_scalars, open_run, portable, restore

__all__ = ["checkpoint_scalars", "open_run", "portable", "restore"]


def __getattr__(name: str) -> Any:
    if name == "RunFolder":  # deprecated: the one writer is phasescope.run.runfolder.RunWriter

        return common.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
