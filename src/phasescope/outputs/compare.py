"""Several runs side by side: seeds of one configuration, or different layers, datasets,
optimisers, learning rates. Everything is computed from run folders (files only)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import _setup_axis, new_figure, phases_payload
from .rebuild import measured_phases, with_defaults
from .runs import RunFileError, read_errors, read_json, read_metrics, save_figure, writer_pid


FINISHED = ("complete", "stopped")  # statuses of a run that ended as planned
NO_STATUS = "no final status"


class NoCheckpoint(FileNotFoundError):
    """A run folder (config.json) without a measured checkpoint yet (no metrics.csv)."""


@dataclass
class LoadedRun:
    path: Path
    config: dict
    metrics: pd.DataFrame
    phases: dict
    status: str | None = None  # None: phases.json's, else "complete"; "running" while a process writes the folder

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def run_status(self) -> str:
        return self.status or self.phases.get("status") or "complete"

    @property
    def partial(self) -> bool:
        """The run has not ended as planned: its phases are from the checkpoints measured so far."""
        return self.run_status not in FINISHED


def load_run(d: str | Path) -> LoadedRun:
    """One run folder (config.json, metrics.csv, phases.json), validated: a corrupt or truncated file
    raises :class:`~phasescope.outputs.runs.RunFileError` naming it; no config.json raises FileNotFoundError,
    no metrics.csv :class:`NoCheckpoint`. A run still in progress (its lock held by a live process)
    or one that ended without phases.json gets its phases from the checkpoints so far (errors.npz),
    computed here and written nowhere; its ``status`` says which ("running", "no final status")."""
    d = Path(d)
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} is not a phasescope run folder (no config.json).")
    doc = read_json(d / "config.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise RunFileError(d / "config.json", "has no 'config' section; it is not a phasescope config.json.")
    pid = writer_pid(d)
    if not (d / "metrics.csv").exists():
        raise NoCheckpoint(f"{d} has no measured checkpoint yet (no metrics.csv): "
                           + (f"the run is starting (process {pid})." if pid else
                              "the run ended before its first checkpoint."))
    metrics = read_metrics(d)
    ph = read_json(d / "phases.json") if (d / "phases.json").exists() else None
    if ph is not None and (not isinstance(ph, dict) or not isinstance(ph.get("layers", {}), dict) or any(
            not isinstance(p, dict) or not {"phases", "min_iteration", "relative_decrease", "relative_increase"} <= set(p)
            for p in ph.get("layers", {}).values())):
        raise RunFileError(d / "phases.json", "is not a complete phasescope phases.json; rebuild it with "
                                              f"`phasescope report {d}`.")
    if pid or ph is None:  # in progress, or killed: the phases of the checkpoints so far
        errors = read_errors(d)
        ph = {**(ph or {}), **phases_payload(measured_phases(errors, with_defaults(doc["config"])), metrics,
                                             (doc.get("data") or {}).get("num_classes"))}
    if pid:
        status = "running"
    elif ph.get("status"):
        status = ph["status"]
    else:  # an older phasescope recorded no status: complete when every planned checkpoint is measured
        planned = ((doc.get("measurement") or {}).get("schedule") or [doc["config"].get("iterations")])[-1]
        status = "complete" if planned is not None and int(metrics.iteration.max()) >= int(planned) else NO_STATUS
    return LoadedRun(d, doc["config"], metrics, ph, status)


def load_runs(dirs: list[str | Path]) -> list[LoadedRun]:
    """:func:`load_run` of every folder."""
    return [load_run(d) for d in dirs]


def available_metrics(runs: list[LoadedRun]) -> list[str]:
    """Metrics of the tracked layers on the test split, in any of ``runs`` (what --metric can overlay)."""
    names = set()
    for r in runs:
        m = r.metrics
        names |= set(m[(m.layer != "model") & (m.split == "test")].metric.unique())
    return sorted(map(str, names))


def differing_keys(runs: list[LoadedRun]) -> list[str]:
    """Configuration keys whose values differ between runs (what the comparison is about)."""
    keys = set().union(*(r.config for r in runs))
    return sorted(k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1)


def run_labels(runs: list[LoadedRun]) -> list[str]:
    keys = [k for k in differing_keys(runs) if k not in ("data_dir",)]
    if not keys:
        return [r.label for r in runs]
    return [", ".join(f"{k}={r.config.get(k)}" for k in keys) for r in runs]


def phase_table(runs: list[LoadedRun], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per run and layer: phases, minimum, relative decrease and increase with intervals."""
    labels = labels or run_labels(runs)
    rows = []
    for run, label in zip(runs, labels):
        for layer, p in run.phases.get("layers", {}).items():
            rows.append({
                "run": label, "path": str(run.path), "seed": run.config.get("seed"), "layer": layer,
                "phases": "+".join(q["name"] for q in p["phases"]),
                "min_iteration": p["min_iteration"], "min_value": p["min_value"]["value"],
                "relative_decrease": p["relative_decrease"]["value"],
                "relative_decrease_ci_low": p["relative_decrease"]["ci_low"],
                "relative_decrease_ci_high": p["relative_decrease"]["ci_high"],
                "relative_increase": p["relative_increase"]["value"],
                "relative_increase_ci_low": p["relative_increase"]["ci_low"],
                "relative_increase_ci_high": p["relative_increase"]["ci_high"],
                "three_phases": p["decrease_significant"] and p["increase_significant"],
                "final_test_accuracy": run.phases.get("final_accuracy", {}).get("test"),
                "status": run.run_status, "partial": run.partial,
            })
    return pd.DataFrame(rows)


def aggregate(runs: list[LoadedRun]) -> pd.DataFrame:
    """Mean, standard deviation and count across runs per (iteration, layer, split, metric)."""
    df = pd.concat([r.metrics.assign(run=i) for i, r in enumerate(runs)])
    keys = [c for c in ("iteration", "layer", "split", "metric", "task") if c in df.columns]
    g = df.groupby(keys, dropna=False)["value"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def seed_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer across seeds: how many show all three phases, and the spread of the minimum."""
    if table.empty:
        return table
    return table.groupby("layer").agg(
        seeds=("seed", "count"), three_phases=("three_phases", "sum"),
        min_iteration_low=("min_iteration", "min"), min_iteration_high=("min_iteration", "max"),
        relative_decrease_mean=("relative_decrease", "mean"), relative_decrease_std=("relative_decrease", "std"),
        relative_increase_mean=("relative_increase", "mean"), relative_increase_std=("relative_increase", "std"),
    ).reset_index()


def plot_compare(runs: list[LoadedRun], path: Path, labels: list[str] | None = None,
                 metric: str = "reconstruction_mse", title: str | None = None) -> Path:
    """Overlay the test curve of ``metric`` of every run, one panel per layer."""
    from matplotlib import colormaps  # lazy: matplotlib is heavy and only the figures need it

    labels = labels or run_labels(runs)
    layers = sorted({l for r in runs for l in r.metrics.layer.unique() if l != "model"
                     and (r.metrics[(r.metrics.layer == l) & (r.metrics.metric == metric)].shape[0] > 0)})
    n = max(1, len(layers))
    fig = new_figure((max(6.4, 4.6 * n), 4.2))
    axes = fig.subplots(1, n, squeeze=False)
    colours = colormaps["viridis"](np.linspace(0, 0.9, len(runs)))
    for ax, layer in zip(axes[0], layers):
        for run, label, c in zip(runs, labels, colours):
            s = run.metrics[(run.metrics.layer == layer) & (run.metrics.split == "test") & (run.metrics.metric == metric)]
            if s.empty:
                continue
            s = s.sort_values("iteration")
            ax.plot(s.iteration, s.value, "o-", ms=2.5, color=c, label=label)
            if s.ci_low.notna().any():
                ax.fill_between(s.iteration, s.ci_low, s.ci_high, color=c, alpha=0.15, lw=0)
            m = run.phases.get("layers", {}).get(layer, {}).get("min_iteration")
            if m is not None:
                ax.axvline(m, color=c, ls=":", lw=0.8)
        _setup_axis(ax)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{metric.replace('_', ' ')} (test)")
    axes[0][0].legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path, dpi=150)
    return Path(path)


def plot_seeds(runs: list[LoadedRun], path: Path, title: str | None = None) -> Path:
    """Mean and spread across seeds of the test reconstruction curve, one panel per layer."""
    agg = aggregate(runs)
    rec = agg[(agg.metric == "reconstruction_mse") & (agg.split == "test") & (agg.layer != "model")]
    layers = sorted(rec.layer.unique())
    fig = new_figure((max(6.4, 4.6 * len(layers)), 4.2))
    axes = fig.subplots(1, max(1, len(layers)), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for run in runs:
            s = run.metrics[(run.metrics.layer == layer) & (run.metrics.split == "test") &
                            (run.metrics.metric == "reconstruction_mse")].sort_values("iteration")
            ax.plot(s.iteration, s.value, color="#9ecae1", lw=0.8)
        s = rec[rec.layer == layer].sort_values("iteration")
        ax.plot(s.iteration, s["mean"], "o-", color="#08519c", ms=3, label=f"mean of {len(runs)} seeds")
        ax.fill_between(s.iteration, s["mean"] - s["std"], s["mean"] + s["std"], color="#08519c", alpha=0.2, lw=0,
                        label="± 1 sd")
        _setup_axis(ax)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("reconstruction MSE (test)")
        ax.legend(fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path, dpi=150)
    return Path(path)
