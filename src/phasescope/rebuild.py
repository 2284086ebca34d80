"""``phasescope report``: a run's summaries rebuilt from its files, no retraining."""
from __future__ import annotations

from pathlib import Path

from .report import phases_payload, plot_curves


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

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a phasescope run folder (no config.json).")
    doc = read_json(cfg_path)
    cfg = doc.get("config") if isinstance(doc, dict) else None
    needed = ("confidence", "bootstrap", "min_effect", "seed", "model", "dataset")
    if not isinstance(cfg, dict) or any(k not in cfg for k in needed):
        raise RunFileError(cfg_path, f"has no complete 'config' section (needs {', '.join(needed)}); "
                                     "it is not a phasescope config.json, or it is corrupt.")
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
    payload.update(rebuild_extensions(run_dir, df, payload))  # transfer, samples, ...: from their own files
    plot_curves(df, payload["layers"], run_dir / "curves.png", title=f"{cfg['model']} on {cfg['dataset']}")
    write_json(run_dir / "phases.json", payload)
    return payload
