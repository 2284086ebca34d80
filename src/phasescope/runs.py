"""The run folder: what a run writes, how it is written, and how it is read back.

    config.json   resolved configuration + data, measurement settings, versions
    metrics.csv   tidy: iteration, layer, split, metric, value, ci_low, ci_high
                  (+ metrics.parquet when pyarrow is installed)
    errors.npz    per-sample test reconstruction errors, (K, n_test) per layer
    phases.json   per layer: phases, minimum, relative decrease/increase with intervals
    curves.png    the figure
    state.pt      training + tracker state at the last checkpoint (for --resume)

Every file is written atomically (temporary file, then rename), after every checkpoint,
so an interrupted run leaves complete files for the checkpoints measured so far.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch


class RunFolderError(FileExistsError):
    pass


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    _atomic(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n"))


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"Not JSON serialisable: {type(o)}")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_metrics(out: Path, df: pd.DataFrame) -> None:
    _atomic(out / "metrics.csv", lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return
    _atomic(out / "metrics.parquet", lambda p: df.to_parquet(p, index=False))


def read_metrics(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a phasescope run folder?")
    return pd.read_csv(path)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed .npz, written atomically."""
    _atomic(Path(path), lambda p: np.savez_compressed(open(p, "wb"), **arrays))


def write_errors(out: Path, errors: dict[str, dict[int, np.ndarray]]) -> None:
    arrays = {}
    for layer, per_it in errors.items():
        its = sorted(per_it)
        if its:
            arrays[f"{layer}::iterations"] = np.asarray(its)
            arrays[f"{layer}::errors"] = np.stack([per_it[i] for i in its]).astype(np.float64)
    _atomic(out / "errors.npz", lambda p: np.savez_compressed(open(p, "wb"), **arrays))


def read_errors(run_dir: Path) -> dict[str, tuple[list[int], np.ndarray]]:
    path = Path(run_dir) / "errors.npz"
    if not path.exists():
        return {}
    with np.load(path) as z:
        layers = sorted({k.split("::")[0] for k in z.files})
        return {n: (z[f"{n}::iterations"].tolist(), z[f"{n}::errors"].astype(np.float64)) for n in layers}


def save_state(out: Path, state: dict) -> None:
    _atomic(out / "state.pt", lambda p: torch.save(state, p))


def load_state(run_dir: Path) -> dict:
    path = Path(run_dir) / "state.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the run has no saved state to resume from.")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise RunFolderError(f"{path} could not be read ({e}); start a new run with a fresh --out.") from e


def prepare_out(out: Path | None, name: str, *, resume: bool, overwrite: bool = False) -> Path:
    """The run folder: a new one under runs/ by default; an existing one only with resume/overwrite."""
    if out is None:
        from datetime import datetime

        out = Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{name}"
        i = 1
        while out.exists():
            out = out.with_name(f"{out.name}-{i}")
            i += 1
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume and not overwrite:
        raise RunFolderError(
            f"{out} already exists and is not empty. Pass --resume to continue that run, "
            "--overwrite to replace it, or choose another --out."
        )
    if resume and not (out / "state.pt").exists():
        raise RunFolderError(f"Cannot resume: {out / 'state.pt'} does not exist. Start a new run instead.")
    out.mkdir(parents=True, exist_ok=True)
    return out
