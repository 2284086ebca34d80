"""The sweep's tables, from files only (run folders and ``status/``), so they can be rebuilt at
any time and a resumed sweep ends with the same tables as an uninterrupted one.

``sweep.csv``: one row per run and tracked layer (one row with an empty layer for a run that
measured nothing): configuration columns, status, message, phases, the minimum, the relative
decrease and increase with their bootstrap intervals, final accuracies, seconds.
``summary.csv``: per configuration (the runs that differ only in their seed) and layer, over
the runs that finished (complete or stopped): mean and standard deviation, how many seeds
show all three phases, and Student-t intervals across seeds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...outputs.runs import atomic_write
from .backends import read_status, status_path
from .spec import SweepSpec, run_path
from ...outputs.compare import load_runs, phase_table
from ...run.experiment import _status_of

PHASE_COLUMNS = ["layer", "phases", "three_phases", "min_iteration", "min_value", "relative_decrease",
                 "relative_decrease_ci_low", "relative_decrease_ci_high", "relative_increase",
                 "relative_increase_ci_low", "relative_increase_ci_high", "final_train_accuracy",
                 "final_test_accuracy"]
SUMMARY_METRICS = ("min_iteration", "min_value", "relative_decrease", "relative_increase", "final_test_accuracy",
                   "final_train_accuracy")
INTERVAL_METRICS = ("relative_decrease", "relative_increase", "final_test_accuracy")
OK = ("complete", "stopped")


def run_dir(out: Path, name: str) -> Path:
    """``out/runs/NAME``; SweepError for a name that would lead anywhere else."""
    return run_path(Path(out) / "runs", name)


def run_status(out: Path, name: str) -> tuple[str, str, float | None]:
    """(status, message, seconds) of a run from its status file and folder; 'pending' when it has not started."""
    doc = read_status(status_path(out, name)) or {}
    folder_status = _status_of(run_dir(out, name))
    status = doc.get("status") or folder_status or "pending"
    if folder_status in OK + ("diverged",) and status != folder_status:
        status = folder_status  # the folder's final status is the truth (e.g. a status file from a killed attempt)
    if status == "running" and folder_status is None:
        status = "pending"
    return status, doc.get("message") or "", doc.get("seconds")


def _phase_rows(folder: Path) -> list[dict]:
    if not (folder / "phases.json").exists() or not (folder / "metrics.csv").exists():
        return []
    try:
        runs = load_runs([folder])
    except Exception:  # noqa: BLE001 - a torn folder of a killed run: the status says what happened
        return []
    table = phase_table(runs, labels=[folder.name])
    train = (runs[0].phases.get("final_accuracy") or {}).get("train")
    rows = table.to_dict("records")
    for r in rows:
        r["final_train_accuracy"] = train
    return rows


def sweep_table(spec: SweepSpec, out: Path) -> pd.DataFrame:
    rows = []
    for run in spec.runs:
        status, message, seconds = run_status(out, run.name)
        base = {"run": run.name, "configuration": run.configuration,
                **{c: _cell(spec.value(run, c)) for c in spec.columns},
                "status": status, "message": message}
        phase_rows = _phase_rows(run_dir(out, run.name)) if status != "pending" else []
        for pr in phase_rows or [{}]:
            rows.append({**base, **{c: pr.get(c) for c in PHASE_COLUMNS}, "seconds": seconds,
                         "path": str(Path("runs") / run.name)})
    cols = ["run", "configuration", *spec.columns, "status", "message", *PHASE_COLUMNS, "seconds", "path"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols)))


def _cell(v):
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    from scipy import stats  # lazy: scipy is heavy and only this statistic needs it

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    m, se = values.mean(), values.std(ddof=1) / math.sqrt(n)
    h = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return (m - h, m + h)


def summary_table(spec: SweepSpec, table: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    keys = [c for c in spec.columns if c != "seed"]
    rows = []
    for configuration in dict.fromkeys(r.configuration for r in spec.runs):
        sub = table[table.configuration == configuration]
        per_run = sub.drop_duplicates("run")
        done = sub[sub.status.isin(OK) & sub.layer.notna()]
        first = per_run.iloc[0]
        base = {"configuration": configuration, **{k: first[k] for k in keys},
                "runs": len(per_run), "finished": int(per_run.status.isin(OK).sum()),
                "failed": int((~per_run.status.isin(OK + ("pending", "running", "interrupted"))).sum()),
                "pending": int(per_run.status.isin(("pending", "running", "interrupted")).sum())}
        layers = list(dict.fromkeys(done.layer)) or [None]
        for layer in layers:
            d = done[done.layer == layer] if layer is not None else done.iloc[0:0]
            row = {**base, "layer": layer, "seeds": ",".join(str(int(s)) for s in d.seed) if "seed" in d else "",
                   "three_phases": int(d.three_phases.astype(bool).sum()) if len(d) else 0}
            for m in SUMMARY_METRICS:
                v = pd.to_numeric(d[m], errors="coerce").to_numpy(dtype=float) if len(d) else np.array([])
                row[f"{m}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
                row[f"{m}_sd"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else math.nan
                if m in INTERVAL_METRICS:
                    row[f"{m}_ci_low"], row[f"{m}_ci_high"] = t_interval(v, confidence)
            rows.append(row)
    return pd.DataFrame(rows)


def write_tables(spec: SweepSpec, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """sweep.csv and summary.csv in ``out`` (each atomically: a reader sees the old or the new file)."""
    table = sweep_table(spec, out)
    summary = summary_table(spec, table)
    atomic_write(Path(out) / "sweep.csv", lambda p: table.to_csv(p, index=False, float_format="%.6g"))
    atomic_write(Path(out) / "summary.csv", lambda p: summary.to_csv(p, index=False, float_format="%.6g"))
    return table, summary
