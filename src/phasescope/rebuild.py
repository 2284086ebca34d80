"""Rebuild a run's summary and figures from its files, whatever the run folder holds.

``phasescope report RUN_DIR`` calls :func:`rebuild_run`: it recomputes phases.json from
metrics.csv and errors.npz, redraws curves.png, samples.png and reconstructions.png, and
never fails on a folder that is a run: a file that an interrupted run or an older phasescope
did not write only means that what needs it is kept as stored, with a note saying so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import defaults
from .runs import read_json

RUN_FILES = ("config.json", "phases.json", "metrics.csv")  # a folder with none of them is no run


class NotARunFolder(FileNotFoundError):
    """The folder does not exist or holds none of a run's files."""


@dataclass
class Rebuilt:
    payload: dict
    rebuilt: list[str] = field(default_factory=list)  # files written
    notes: list[str] = field(default_factory=list)  # what could not be rebuilt, and why


def check_run_folder(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunFolder(f"{run_dir} does not exist or is not a folder; give a run folder written by "
                            "`phasescope run` (by default under runs/).")
    if not any((run_dir / f).exists() for f in RUN_FILES):
        raise NotARunFolder(f"{run_dir} is not a phasescope run folder: it has none of {', '.join(RUN_FILES)}. "
                            "Give the folder `phasescope run` wrote (by default under runs/).")
    return run_dir


def _read(path: Path, notes: list[str]) -> dict | None:
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (ValueError, OSError) as e:
        notes.append(f"{path.name} could not be read ({e}).")
        return None


def rebuild_run(run_dir: Path) -> Rebuilt:
    """Recompute phases.json and redraw the figures of ``run_dir`` from its files (see module doc)."""
    from .phases import detect_phases
    from .report import phases_payload, plot_curves
    from .runs import read_errors, read_metrics, write_json

    run_dir = check_run_folder(run_dir)
    out = Rebuilt({})
    notes = out.notes
    config = _read(run_dir / "config.json", notes) or {}
    cfg = config.get("config") or {}
    if not config:
        notes.append("config.json is missing: the phases are recomputed with the default settings.")
    stored = _read(run_dir / "phases.json", notes) or {}
    payload = dict(stored)
    df = None
    try:
        df = read_metrics(run_dir)
    except (FileNotFoundError, ValueError, OSError) as e:
        notes.append(f"metrics.csv could not be read ({e}); phases.json and the figures are kept as they were.")
    errors = {}
    try:
        errors = read_errors(run_dir)
    except (ValueError, OSError, KeyError) as e:
        notes.append(f"errors.npz could not be read ({e}).")
    if df is not None:
        k = (config.get("data") or {}).get("num_classes")
        results = {}
        for layer, (its, E) in errors.items():
            if len(its) >= 2:
                results[layer] = detect_phases(its, E, confidence=cfg.get("confidence", defaults.CONFIDENCE),
                                               n_boot=cfg.get("bootstrap", defaults.BOOTSTRAP),
                                               min_effect=cfg.get("min_effect", defaults.MIN_EFFECT),
                                               seed=cfg.get("seed", 0))
        fresh = phases_payload(results, df, k)
        if not results:  # keep the stored phases rather than replace them with nothing
            fresh["layers"] = stored.get("layers", {})
            notes.append("errors.npz is missing or holds fewer than two checkpoints: the phases are kept as "
                         "stored in phases.json." if stored.get("layers") else
                         "no phases: errors.npz is missing or holds fewer than two checkpoints.")
        payload.update(fresh)
        try:
            from .samples_report import rebuild_samples

            if rebuild_samples(run_dir, df, payload):  # the samples key and samples.png, when the run has them
                out.rebuilt.append("samples.png")
        except Exception as e:  # noqa: BLE001  an older or partial samples table: keep what was stored
            notes.append(f"samples.png was not redrawn ({type(e).__name__}: {e}).")
    try:
        from .reconstructions import rebuild_reconstructions

        part = rebuild_reconstructions(run_dir, payload)  # reconstructions.png, when the run has it
        if part:
            payload.update(part)
            out.rebuilt.append("reconstructions.png")
    except Exception as e:  # noqa: BLE001
        notes.append(f"reconstructions.png was not redrawn ({type(e).__name__}: {e}).")
    if df is not None:
        write_json(run_dir / "phases.json", payload)
        out.rebuilt.append("phases.json")
        if len(df):
            title = f"{cfg['model']} on {cfg['dataset']}" if {"model", "dataset"} <= set(cfg) else None
            plot_curves(df, payload.get("layers", {}), run_dir / "curves.png", title=title)
            out.rebuilt.append("curves.png")
    out.payload = payload
    return out
