"""Sweeps: one knob of the data model or of training over several values and seeds, with
the phase magnitudes of every run in one table.

    config.json   base data model and training, the swept parameter, values, seeds
    sweep.csv     one row per (value, seed): phases, relative decrease / increase with
                  intervals, iteration of the minimum, the turn summary
    metrics.csv   the tidy metrics of every run, with two more columns: the swept
                  parameter (named after it) and ``seed``
    sweep.png     phase magnitudes against the swept parameter
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..outputs.runs import atomic_write, write_metrics
from .analysis import turn_summary
from ..data.datamodel import DataModel
from .experiment import PRIMARY_LAYER, claim, describe, measurement_settings, versions
from .figures import plot_sweep
from .single_layer import TheoryResult, Training, simulate


def sweepable() -> dict[str, str]:
    """Parameter name -> "data" or "training"."""
    out = {f.name: "data" for f in dataclasses.fields(DataModel)}
    out.update({f.name: "training" for f in dataclasses.fields(Training)})
    return out


def _field_type(name: str) -> Any:
    owner = DataModel if sweepable()[name] == "data" else Training
    return typing.get_type_hints(owner)[name]


def sweep_values(param: str, raw: Sequence[str | float | int | None]) -> list:
    """Convert the values of ``param`` to the type of its field ("full" or "none" means
    None for batch_size); raises ValueError naming the parameter and the valid names."""
    targets = sweepable()
    if param not in targets:
        raise ValueError(f"Cannot sweep {param!r}; choose one of: {', '.join(sorted(targets))}.")
    kind = _field_type(param)
    optional = type(None) in typing.get_args(kind)
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    out = []
    for v in raw:
        if optional and (v is None or str(v).strip().lower() in ("none", "full")):
            out.append(None)
            continue
        try:
            if base is int:
                f = float(v)
                if f != int(f):
                    raise ValueError
                out.append(int(f))
            elif base is float:
                out.append(float(v))
            else:
                out.append(str(v).strip())
        except (TypeError, ValueError):
            raise ValueError(f"{param}={v!r} is not a valid {base.__name__}.") from None
    if not out:
        raise ValueError(f"No values given for {param}.")
    return out


def configure(data: DataModel, training: Training, param: str, value: Any) -> tuple[DataModel, Training]:
    """The base configuration with ``param`` set to ``value``, validated."""
    if sweepable()[param] == "data":
        return data.replace(**{param: value}), training
    return data, dataclasses.replace(training, **{param: value}).validate()


def table_row(result: TheoryResult, layer: str = PRIMARY_LAYER) -> dict:
    """One run's phase magnitudes and turn summary (one row of sweep.csv)."""
    p = result.phases[layer]
    row: dict[str, Any] = {"phases": ", ".join(f"{q.name} {q.start}-{q.end}" for q in p.phases)}
    for key in ("relative_decrease", "relative_increase"):
        e = getattr(p, key)
        row.update({key: e.value, f"{key}_ci_low": e.ci_low, f"{key}_ci_high": e.ci_high})
    row.update({
        "decrease_significant": p.decrease_significant, "increase_significant": p.increase_significant,
        "max_after_min_iteration": p.max_after_min_iteration, "min_value": p.min_value.value,
        "test_loss_initial": float(result.errors[layer][0].mean()), "test_loss_final": float(result.errors[layer][-1].mean()),
    })
    train = result.curve("reconstruction_mse", layer, "train")
    k = int(np.argmin(train.values))
    row["train_relative_increase"] = float((train.values[k:].max() - train.values[k]) / train.values[k])
    for other, q in result.phases.items():
        if other != layer:
            row[f"{other}_relative_increase"] = q.relative_increase.value
            row[f"{other}_increase_significant"] = q.increase_significant
    row.update(turn_summary(result.metrics, p))
    row["seconds"] = result.seconds.get("total")
    return row


@dataclass
class SweepResult:
    out: Path | None
    param: str
    table: pd.DataFrame
    metrics: pd.DataFrame


def run_sweep(data: DataModel, training: Training, param: str, values: Sequence, seeds: Sequence[int],
              out: str | Path | None = None, *, overwrite: bool = False, bootstrap: int = 1000,
              confidence: float = 0.95, min_effect: float = 0.02, figure: bool = True, write: bool = True,
              on_run: Callable[[Any, int, dict], None] | None = None) -> SweepResult:
    """Run every (value, seed) of the sweep; write the sweep folder unless ``write=False``."""
    values = sweep_values(param, values)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("Give at least one seed.")
    configs = [configure(data, training, param, v) for v in values]  # fail before any run
    if not write:
        return _sweep(None, param, values, configs, seeds, bootstrap, confidence, min_effect, on_run)
    with claim(out, f"theory-sweep-{param}", overwrite=overwrite) as run_folder:
        run_folder.start({
            "kind": "theory-sweep", "parameter": param, "values": values, "seeds": seeds,
            "data_model": data.to_dict(), "training": training.to_dict(),
            "measurement": measurement_settings(bootstrap, confidence, min_effect), "versions": versions(),
        })
        folder = run_folder.path
        res = _sweep(folder, param, values, configs, seeds, bootstrap, confidence, min_effect, on_run)
        atomic_write(folder / "sweep.csv", lambda p: res.table.to_csv(p, index=False, float_format="%.6g"))
        write_metrics(folder, res.metrics)
        if figure:
            plot_sweep(res.table, param, folder / "sweep.png",
                       title=f"sweep of {param} ({len(seeds)} seeds); base: {describe(data, training)}")
    return res


def _sweep(folder: Path | None, param: str, values: list, configs: list, seeds: list[int], bootstrap: int,
           confidence: float, min_effect: float, on_run: Callable[[Any, int, dict], None] | None) -> SweepResult:
    """Every (value, seed) of the sweep, simulated."""
    rows, frames = [], []
    for v, (dm, tr) in zip(values, configs):
        for s in seeds:
            r = simulate(dm, tr, s, bootstrap=bootstrap, confidence=confidence, min_effect=min_effect)
            row = {"parameter": param, "value": v, "seed": s, **table_row(r)}
            rows.append(row)
            frames.append(r.metrics.assign(**{param: v, "seed": s}))
            if on_run is not None:
                on_run(v, s, row)
    return SweepResult(folder, param, pd.DataFrame(rows), pd.concat(frames, ignore_index=True))


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per swept value: mean and standard deviation over seeds of the phase magnitudes, and
    how many seeds showed a significant increase."""
    g = table.groupby("value", sort=True)
    out = pd.DataFrame({
        "seeds": g.size(),
        "relative_decrease_mean": g["relative_decrease"].mean(),
        "relative_decrease_sd": g["relative_decrease"].std(ddof=1),
        "relative_increase_mean": g["relative_increase"].mean(),
        "relative_increase_sd": g["relative_increase"].std(ddof=1),
        "increase_significant": g["increase_significant"].sum(),
        "min_iteration_median": g["min_iteration"].median(),
    })
    return out.reset_index()
