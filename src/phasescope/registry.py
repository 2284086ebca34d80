"""The one module that knows the concrete extensions.

``run_extensions`` builds the extensions a run's configuration asks for; ``EXTENSIONS``
lists their classes, whose ``summary_lines`` and ``rebuild`` the CLI and
:func:`phasescope.rebuild.rebuild` call without knowing what each one is.
"""
from __future__ import annotations

from typing import Sequence

from .analyze.extension import CheckpointAnalysis
from .config import RunConfig
from .data import Splits
from .extension import Extension
from .infoplane import InfoPlane, infoplane_extensions
from .reconstructions import Reconstructions, reconstruction_extensions
from .ridge_sweep import RidgeSweep
from .samples import SampleDynamics, sample_extensions
from .stopping import BestFeaturesKeeper
from .transfer import TransferProbes, from_config as transfer_from_config, keeper_from_config
from .transfer import validate_options as validate_transfer_options

EXTENSIONS: tuple[type[Extension], ...] = (TransferProbes, SampleDynamics, Reconstructions, InfoPlane,
                                            BestFeaturesKeeper, RidgeSweep,  # RidgeSweep: the tracker adds it
                                            CheckpointAnalysis)  # phasescope analyze: its summary, its warnings


def run_extensions(cfg: RunConfig, data: Splits, given: Sequence = ()) -> tuple[Splits, list]:
    """The data to pre-train on (a transfer task may split it) and every extension of ``cfg``
    after the ``given`` ones (an extension of a kind already given is not added again)."""
    data, transfer = transfer_from_config(cfg, data)
    keeper = keeper_from_config(cfg)
    extensions = [*given, *transfer, *sample_extensions(cfg, data, given), *reconstruction_extensions(cfg, data, given),
                  *infoplane_extensions(cfg, given), *([keeper] if keeper else [])]
    return data, extensions


def check_config(cfg: RunConfig) -> None:
    """What the extensions can check in a configuration before any data is loaded (transfer task names)."""
    validate_transfer_options(cfg.transfer)


def summary_lines(payload: dict) -> list:
    """Every extension's lines for the printed summary (from phases.json)."""
    return [line for cls in EXTENSIONS for line in cls.summary_lines(payload)]


def report_context(payload: dict, notes: list[str] | None = None) -> dict:
    """Every extension's entries of report.html's template context (from phases.json). With
    ``notes``, an extension whose part of phases.json is malformed is left out with a note."""
    out: dict = {}
    for cls in EXTENSIONS:
        try:
            out.update(cls.report_context(payload))
        except Exception as e:  # noqa: BLE001  a report never fails on what one section holds
            if notes is None:
                raise
            notes.append(f"The {cls.name} section was left out: phases.json's part could not be read "
                         f"({type(e).__name__}: {e}).")
    return out


def extension_figures(payload: dict) -> dict[str, tuple[str, str, bool]]:
    """Every extension's figure: file -> (report section, caption, whether this run should have drawn it)."""
    return {name: (section, caption, cls.figures_expected(payload))
            for cls in EXTENSIONS for name, (section, caption) in cls.figures.items()}


def extension_files() -> list[str]:
    """Every file an extension may write in a run folder, in registry order."""
    return list(dict.fromkeys(f for cls in EXTENSIONS for f in cls.files))


def rebuild_extensions(run_dir, df, payload: dict) -> dict:
    """Every extension's phases.json entries, recomputed from the run folder's files."""
    out: dict = {}
    for cls in EXTENSIONS:
        out.update(cls.rebuild(run_dir, df, {**payload, **out}))
    return out
