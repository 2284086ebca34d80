"""``phasescope report``: a run's summaries rebuilt from its files, no retraining."""
from __future__ import annotations

from pathlib import Path

from .report import phases_payload, plot_curves

RUN_FILES = ("config.json", "phases.json", "metrics.csv")  # a folder with none of them is no run


class NotARunFolder(FileNotFoundError):
    """The folder does not exist or holds none of a run's files."""


def check_run_folder(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunFolder(f"{run_dir} does not exist or is not a folder; give a run folder written by "
                            "`phasescope run` (by default under runs/).")
    if not any((run_dir / f).exists() for f in RUN_FILES):
        raise NotARunFolder(f"{run_dir} is not a phasescope run folder: it has none of {', '.join(RUN_FILES)}. "
                            "Give the folder `phasescope run` wrote (by default under runs/).")
    return run_dir


def rebuild(run_dir: Path) -> dict:
    """Recompute a run's phases.json, curves.png and every extension's part (and figures) from its
    files (metrics.csv, errors.npz, config.json, the extensions' own files), after checking that
    the files are complete and agree; no retraining. Keys of the old phases.json that nothing
    recomputes (status, seconds, ...) are kept.

    Raises FileNotFoundError (not a run folder) or :class:`~phasescope.runs.RunFileError`
    naming the corrupt, truncated or inconsistent file. Hold the folder's lock while calling
    it (the CLI does), so that a running process is not written over."""
    from .phases import detect_phases
    from .registry import rebuild_extensions
    from .runs import RunFileError, read_errors, read_json, read_metrics, write_json

    run_dir = check_run_folder(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a phasescope run folder (no config.json).")
    doc = read_json(cfg_path)
    cfg = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(cfg, dict):
        raise RunFileError(cfg_path, "has no 'config' section; it is not a phasescope config.json, or it is corrupt.")
    from . import defaults

    # an older phasescope may not have recorded every setting: the defaults of its time were these
    cfg = {"confidence": defaults.CONFIDENCE, "bootstrap": defaults.BOOTSTRAP, "min_effect": defaults.MIN_EFFECT,
           "seed": 0, "model": "model", "dataset": "data", **cfg}
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
    results = {layer: detect_phases(its, E, confidence=cfg["confidence"], n_boot=cfg["bootstrap"],
                                    min_effect=cfg["min_effect"], seed=cfg["seed"])
               for layer, (its, E) in errors.items() if len(its) >= 2}
    payload = {**(old or {}), **phases_payload(results, df, (doc.get("data") or {}).get("num_classes"))}
    if not errors and old and old.get("layers"):  # no errors.npz (an older phasescope): keep the stored phases
        payload["layers"] = old["layers"]
    payload.update(rebuild_extensions(run_dir, df, payload))  # transfer, samples, ...: from their own files
    plot_curves(df, payload["layers"], run_dir / "curves.png", title=f"{cfg['model']} on {cfg['dataset']}")
    write_json(run_dir / "phases.json", payload)
    return payload
