"""Leveraging the phases: transfer probes over training, and when to stop pre-training.

- tasks (:mod:`.tasks`): ``colour``, ``class-split``, ``switch:DATASET``, ``npz:PATH``
  as :class:`TransferTask` objects (:func:`build_tasks` from their names);
- :class:`TransferProbes`: the tracker extension that measures them at every checkpoint;
- :mod:`.recommend`: transfer accuracy at the reconstruction minimum / peak / end, per run
  (:func:`transfer_section`) and over seeds (:func:`aggregate_runs`);
- :class:`BestFeaturesKeeper`: keeps the weights at the reconstruction minimum during
  pre-training and optionally stops once the increase is significant.

``run_experiment`` uses :func:`from_config` with these ``RunConfig.extra`` keys:
``transfer`` (list of task names), ``keep_best`` (bool), ``stop_on_increase`` (bool),
``keep_layer`` (layer name; default the last tracked layer).
"""
from __future__ import annotations

from ..config import ConfigError, RunConfig
from ..data import Splits
from .keeper import BestFeaturesKeeper, Decision, decide
from .probes import TransferProbes
from .recommend import aggregate_runs, recommendation_table, transfer_section, transfer_summary_rows
from .tasks import (TransferError, TransferTask, build_tasks, colour_dominance, colour_task, parse_specs,
                    split_classes, switch_task, npz_task)

EXTRA_KEYS = ("transfer", "keep_best", "stop_on_increase", "keep_layer")


def validate_extra(extra: dict) -> None:
    """Check the transfer options in ``RunConfig.extra`` (raises ConfigError naming the fix)."""
    try:
        parse_specs(extra.get("transfer"))
    except TransferError as e:
        raise ConfigError(str(e)) from e
    if extra.get("stop_on_increase") and not extra.get("keep_best"):
        raise ConfigError("stop_on_increase needs keep_best (--keep-best/--stop-on-increase): "
                          "stopping keeps the weights at the reconstruction minimum.")


def from_config(cfg: RunConfig, data: Splits) -> tuple[Splits, list[TransferProbes]]:
    """The pre-training data (class-split when asked) and the transfer extension for ``cfg``."""
    validate_extra(cfg.extra)
    specs = parse_specs(cfg.extra.get("transfer"))
    if not specs:
        return data, []
    data, tasks = build_tasks(specs, data, fit_samples=cfg.fit_samples, test_samples=cfg.test_samples,
                              seed=cfg.seed, download=cfg.download)
    return data, [TransferProbes(tasks, probe=cfg.probe, ridge=cfg.ridge, bootstrap=cfg.bootstrap,
                                 confidence=cfg.confidence, seed=cfg.seed)]


def keeper_from_config(cfg: RunConfig, tracker) -> BestFeaturesKeeper | None:
    if not cfg.extra.get("keep_best"):
        return None
    return BestFeaturesKeeper(tracker, cfg.extra.get("keep_layer"),
                              stop_on_increase=bool(cfg.extra.get("stop_on_increase")))


__all__ = [
    "BestFeaturesKeeper", "Decision", "TransferError", "TransferProbes", "TransferTask", "aggregate_runs",
    "build_tasks", "colour_dominance", "colour_task", "decide", "from_config", "keeper_from_config",
    "npz_task", "parse_specs", "recommendation_table", "split_classes", "switch_task",
    "transfer_section", "transfer_summary_rows", "validate_extra",
]
