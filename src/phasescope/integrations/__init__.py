"""phasescope inside other training stacks. Each module needs its framework (an optional extra):

- :mod:`phasescope.integrations.lightning`: ``PhaseScopeCallback`` for a Lightning ``Trainer``
  (``pip install "phasescope[lightning]"``)
- :mod:`phasescope.integrations.transformers`: ``PhaseScopeCallback`` for a Hugging Face
  ``Trainer`` (``pip install "phasescope[transformers]"``)
- :mod:`phasescope.integrations.tensorboard`: ``TensorBoardLogger``, an extension that writes every
  metric and the curves figure to TensorBoard from any loop (``pip install "phasescope[tensorboard]"``)

All of them write the same run-folder files as ``phasescope run`` (see :class:`RunFolder`).
"""
from .common import RunFolder, checkpoint_scalars, portable, restore

__all__ = ["RunFolder", "checkpoint_scalars", "portable", "restore"]
