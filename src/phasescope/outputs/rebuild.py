"""``phasescope report``: a run's summaries rebuilt from its files, no retraining."""
from __future__ import annotations

from pathlib import Path

from .figures import phases_payload, plot_curves
from .runs import RunFileError, read_errors, read_json, read_metrics, write_json
from .. import defaults
from ..engine.phases import PhaseSettings, detect_phases
from ..registry import rebuild_extensions

RUN_FILES = ("config.json", "phases.json", "metrics.csv")  # what a run writes first; config.json before all


class NotARunFolder(FileNotFoundError):
    """The folder does not exist or holds no run: no phasescope config.json."""


def check_run_folder(run_dir: Path) -> Path:
    """``run_dir`` when it holds a run, else :class:`NotARunFolder` saying what is missing.

    A run writes config.json (with its ``config`` section) before anything else, so a folder
    without one is no run, whatever else it holds (a stray metrics.csv or phases.json included):
    nothing may be written into it. A corrupt config.json raises
    :class:`~phasescope.outputs.runs.RunFileError` naming it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunFolder(f"{run_dir} does not exist or is not a folder; give a run folder written by "
                            "`phasescope run` (by default under runs/).")
    give = "Give the folder `phasescope run` wrote (by default under runs/)."
    if not (run_dir / "config.json").exists():
        found = [f for f in RUN_FILES if (run_dir / f).exists()]
        raise NotARunFolder(f"{run_dir} is not a phasescope run folder: it has no config.json"
                            + (f" (only {' and '.join(found)})" if found else "") + f". {give}")
    doc = read_json(run_dir / "config.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise NotARunFolder(f"{run_dir} is not a phasescope run folder: its config.json has no 'config' section. "
                            + give)
    return run_dir


def with_defaults(cfg: dict) -> dict:
    """A saved configuration with the settings an older phasescope may not have recorded (the
    defaults of its time)."""
    return {"confidence": defaults.CONFIDENCE, "bootstrap": defaults.BOOTSTRAP, "min_effect": defaults.MIN_EFFECT,
            "seed": 0, "model": "model", "dataset": "data", **cfg}


def measured_phases(errors: dict, cfg: dict) -> dict:
    """The phases of every layer with at least two checkpoints in ``errors`` (:func:`~phasescope.outputs.runs.read_errors`),
    detected with the run's own settings (``cfg``, see :func:`with_defaults`)."""
    settings = PhaseSettings.from_config(cfg)
    return {layer: detect_phases(its, E, settings=settings) for layer, (its, E) in errors.items() if len(its) >= 2}


def rebuild(run_dir: Path) -> dict:
    """Recompute a run's phases.json, curves.png and every extension's part (and figures) from its
    files (metrics.csv, errors.npz, config.json, the extensions' own files), after checking that
    the files are complete and agree; no retraining. Keys of the old phases.json that nothing
    recomputes (status, seconds, ...) are kept.

    Raises FileNotFoundError (not a run folder) or :class:`~phasescope.outputs.runs.RunFileError`
    naming the corrupt, truncated or inconsistent file. Hold the folder's lock while calling
    it (the CLI does), so that a running process is not written over."""
    run_dir = check_run_folder(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a phasescope run folder (no config.json).")
    doc = read_json(cfg_path)
    cfg = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(cfg, dict):
        raise RunFileError(cfg_path, "has no 'config' section; it is not a phasescope config.json, or it is corrupt.")
    cfg = with_defaults(cfg)
    df = read_metrics(run_dir)
    errors = read_errors(run_dir)
    measured = set(int(i) for i in df.iteration.unique())
    old = read_json(run_dir / "phases.json") if (run_dir / "phases.json").exists() else None
    for layer, (its, _) in errors.items():
        extra = sorted(set(its) - measured)
        if extra:
            raise RunFileError(run_dir / "metrics.csv",
                               f"ends at iteration {max(measured)}, but errors.npz holds layer {layer!r} at "
                               f"iterations {extra}: metrics.csv is truncated or from another run.")
    if old is not None:
        listed = set(int(i) for i in (old.get("checkpoints") or []))
        if listed - measured:
            raise RunFileError(run_dir / "metrics.csv",
                               f"ends at iteration {max(measured)}, but phases.json lists checkpoints up to "
                               f"{max(listed)}: metrics.csv is truncated or from another run.")
    payload = {**(old or {}), **phases_payload(measured_phases(errors, cfg), df,
                                               (doc.get("data") or {}).get("num_classes"))}
    if not errors and old and old.get("layers"):  # no errors.npz (an older phasescope): keep the stored phases
        payload["layers"] = old["layers"]
    payload.update(rebuild_extensions(run_dir, df, payload))  # transfer, samples, ...: from their own files
    plot_curves(df, payload["layers"], run_dir / "curves.png", title=f"{cfg['model']} on {cfg['dataset']}")
    write_json(run_dir / "phases.json", payload)
    return payload
