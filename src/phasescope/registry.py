"""The one module that knows the concrete extensions.

``run_extensions`` builds the extensions a run's configuration asks for; ``EXTENSIONS``
lists their classes, whose ``summary_lines`` and ``rebuild`` the CLI and
:func:`phasescope.rebuild.rebuild` call without knowing what each one is.
"""
from __future__ import annotations

from typing import Sequence

from .config import RunConfig
from .data import Splits
from .extension import Extension
from .infoplane import InfoPlane, infoplane_extensions
from .reconstructions import Reconstructions, reconstruction_extensions
from .ridge_sweep import RidgeSweep
from .samples import SampleDynamics, sample_extensions
from .stopping import BestFeaturesKeeper
from .transfer import TransferProbes, from_config as transfer_from_config, keeper_from_config

EXTENSIONS: tuple[type[Extension], ...] = (TransferProbes, SampleDynamics, Reconstructions, InfoPlane,
                                            BestFeaturesKeeper, RidgeSweep)  # RidgeSweep: the tracker adds it


def run_extensions(cfg: RunConfig, data: Splits, given: Sequence = ()) -> tuple[Splits, list]:
    """The data to pre-train on (a transfer task may split it) and every extension of ``cfg``
    after the ``given`` ones (an extension of a kind already given is not added again)."""
    data, transfer = transfer_from_config(cfg, data)
    keeper = keeper_from_config(cfg)
    extensions = [*given, *transfer, *sample_extensions(cfg, data, given), *reconstruction_extensions(cfg, data, given),
                  *infoplane_extensions(cfg, given), *([keeper] if keeper else [])]
    return data, extensions


def summary_lines(payload: dict) -> list:
    """Every extension's lines for the printed summary (from phases.json)."""
    return [line for cls in EXTENSIONS for line in cls.summary_lines(payload)]


def rebuild_extensions(run_dir, df, payload: dict) -> dict:
    """Every extension's phases.json entries, recomputed from the run folder's files."""
    out: dict = {}
    for cls in EXTENSIONS:
        out.update(cls.rebuild(run_dir, df, {**payload, **out}))
    return out
