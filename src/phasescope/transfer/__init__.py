"""Leveraging the phases: transfer probes over training, and when to stop pre-training.

- tasks (:mod:`.tasks`): ``colour``, ``class-split``, ``switch:DATASET``, ``npz:PATH``
  as :class:`TransferTask` objects (:func:`build_tasks` from their names);
- :class:`TransferProbes`: the tracker extension that measures them at every checkpoint;
- :mod:`.recommend`: transfer accuracy at the reconstruction minimum / peak / end, per run
  (:func:`transfer_section`) and over seeds (:func:`aggregate_runs`);
- :class:`BestFeaturesKeeper`: keeps the weights at the reconstruction minimum during
  pre-training and optionally stops once the increase is significant.

``run_experiment`` uses :func:`from_config` with the ``RunConfig.transfer`` section
(:class:`~phasescope.config.TransferOptions`).
"""
from __future__ import annotations

from ..config import ConfigError, RunConfig, TransferOptions
from ..data import Splits
from ..stopping import BestFeaturesKeeper, Decision, decide
from .probes import TransferProbes
from .recommend import aggregate_runs, recommendation_table, transfer_section, transfer_summary_rows
from .tasks import (TransferError, TransferTask, build_tasks, colour_dominance, colour_task, parse_specs,
                    split_classes, switch_task, npz_task)

def validate_options(options: TransferOptions) -> None:
    """Check the task names of a TransferOptions section (raises ConfigError naming the fix)."""
    try:
        parse_specs(options.tasks)
    except TransferError as e:
        raise ConfigError(str(e)) from e


def from_config(cfg: RunConfig, data: Splits) -> tuple[Splits, list[TransferProbes]]:
    """The pre-training data (class-split when asked) and the transfer extension for ``cfg``."""
    validate_options(cfg.transfer)
    specs = parse_specs(cfg.transfer.tasks)
    if not specs:
        return data, []
    data, tasks = build_tasks(specs, data, fit_samples=cfg.fit_samples, test_samples=cfg.test_samples,
                              seed=cfg.seed, download=cfg.download)
    return data, [TransferProbes(tasks, probe=cfg.probe, ridge=cfg.relative_ridge, bootstrap=cfg.bootstrap,
                                 confidence=cfg.confidence, seed=cfg.seed)]


def keeper_from_config(cfg: RunConfig) -> BestFeaturesKeeper | None:
    """The keeper extension of ``cfg.transfer`` (keep_best / stop_on_increase), or None."""
    if not cfg.transfer.keep_best:
        return None
    return BestFeaturesKeeper(layer=cfg.transfer.keep_layer, stop_on_increase=cfg.transfer.stop_on_increase,
                              meta={"model": cfg.model, "config": cfg.to_dict()})


__all__ = [
    "BestFeaturesKeeper", "Decision", "TransferError", "TransferProbes", "TransferTask", "aggregate_runs",
    "build_tasks", "colour_dominance", "colour_task", "decide", "from_config", "keeper_from_config",
    "npz_task", "parse_specs", "recommendation_table", "split_classes", "switch_task", "transfer_summary_rows",
    "transfer_section", "validate_options",
]
