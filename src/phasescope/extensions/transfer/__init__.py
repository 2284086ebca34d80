"""Leveraging the phases: transfer probes over training, and when to stop pre-training.

- tasks (:mod:`.tasks`): ``colour``, ``class-split``, ``switch:DATASET``, ``npz:PATH``
  as :class:`TransferTask` objects (:func:`build_tasks` from their names);
- :class:`TransferProbes`: the tracker extension that measures them at every checkpoint;
- :mod:`.recommend`: transfer accuracy at the reconstruction minimum / peak / end, per run
  (:func:`transfer_section`) and over seeds (:func:`aggregate_runs`);
- :class:`BestFeaturesKeeper`: keeps the weights at the reconstruction minimum during
  pre-training and optionally stops once the increase is significant.

A run builds both from its ``transfer`` section (:class:`~.options.TransferOptions`) with
``TransferProbes.from_config`` and ``BestFeaturesKeeper.from_config``.
"""
from __future__ import annotations

import warnings
from typing import Any

from ...config import RunConfig
from ...data import Splits
from ...extension import RunSetup
from .options import TransferOptions, validate_options
from .probes import TransferProbes
from .recommend import aggregate_runs, recommendation_table, transfer_section, transfer_summary_rows
from .tasks import (TransferError, TransferTask, build_tasks, colour_dominance, colour_task, parse_specs,
                    split_classes, switch_task, npz_task)

_FROM_STOPPING = ("BestFeaturesKeeper", "Decision", "decide")  # the keeper's module imports this package's options


def __getattr__(name: str) -> Any:
    if name in _FROM_STOPPING:
        from .. import stopping  # lazy: stopping imports transfer.options: circular at module level

        return getattr(stopping, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def from_config(cfg: RunConfig, data: Splits) -> tuple[Splits, list[TransferProbes]]:
    """Deprecated: the pre-training data and the transfer extension for ``cfg``; use
    ``TransferProbes.from_config(RunSetup(cfg, data))`` (it replaces ``setup.data``)."""
    warnings.warn("phasescope.transfer.from_config is deprecated; use TransferProbes.from_config(RunSetup(cfg, data))",
                  DeprecationWarning, stacklevel=2)
    setup = RunSetup(cfg, data)
    probes = TransferProbes.from_config(setup)
    return setup.data, probes


def keeper_from_config(cfg: RunConfig) -> Any:
    """Deprecated: the keeper extension of ``cfg.transfer`` (keep_best / stop_on_increase), or None;
    use ``BestFeaturesKeeper.from_config(RunSetup(cfg, data))``."""
    from ..stopping import BestFeaturesKeeper  # lazy: stopping imports transfer.options: circular at module level

    warnings.warn("phasescope.transfer.keeper_from_config is deprecated; use "
                  "BestFeaturesKeeper.from_config(RunSetup(cfg, data))", DeprecationWarning, stacklevel=2)
    keepers = BestFeaturesKeeper.from_config(RunSetup(cfg, None))
    return keepers[0] if keepers else None


__all__ = [
    "BestFeaturesKeeper", "Decision", "TransferError", "TransferOptions", "TransferProbes", "TransferTask",
    "aggregate_runs", "build_tasks", "colour_dominance", "colour_task", "decide", "from_config", "keeper_from_config",
    "npz_task", "parse_specs", "recommendation_table", "split_classes", "switch_task", "transfer_summary_rows",
    "transfer_section", "validate_options",
]
