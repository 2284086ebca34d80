"""Several decoder ridges at once: ``--ridge 1e-4,1e-3,1e-2,0.1,1,auto``.

Is the rise of the reconstruction error a property of the features or of the decoder's
regularisation? The sweep answers it at almost no cost: every ridge value is solved from
the *same* Gram matrix the main decoder was fitted from. One eigendecomposition per layer and
checkpoint (``StreamingRidge.eigen``, shared with ``auto``) serves them all; each value then
costs a diagonal rescale and one matrix product over the test features.

The first value of the list stays *the* measurement: metrics.csv's ``reconstruction_mse``,
errors.npz, phases.json's ``layers``, the probe (the probe always uses the first value), the
figures. Every further value adds, per layer and checkpoint, metrics.csv rows named
``METRIC@ridge=VALUE`` (so readers that select ``reconstruction_mse`` see the main
measurement only) with a ``ridge`` column holding VALUE as text:

* ``reconstruction_mse@ridge=V``: split ``test`` (mean with its bootstrap interval) and
  ``train`` (exact);
* ``decoder_lambda@ridge=V`` and ``decoder_dof@ridge=V`` (split ``train``): the absolute
  lambda used and the effective degrees of freedom, sum s_i/(s_i + lambda).

Their phases, detected exactly like the main ones (same bootstrap seed and tolerances), are in
phases.json's ``ridge_sweep`` section: ``{"ridges": [...every value, main first], "main": V0,
"per_ridge": {V: {layer: {phases, min_iteration, relative_increase, ...}}}}`` (the main value
included, a copy of ``layers``). The per-sample errors of the extra values are in
``errors_ridge.npz`` (keys ``V::LAYER::iterations`` and ``V::LAYER::errors``), from which
``phasescope report RUN`` recomputes the section. With pandas::

    df = pd.read_csv("metrics.csv")
    sweep = df[df.metric.str.startswith("reconstruction_mse@") & (df.split == "test")]
    sweep.pivot_table(index="iteration", columns=["layer", "ridge"], values="value")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, NonFiniteActivations
from ..extension import Extension, RunSetup
from ..engine.measure.ridge import AUTO, StreamingRidge, _check_ridge
from ..engine.phases import PhaseSettings, detect_phases
from ..outputs.figures import _setup_axis, new_figure, summary_rows
from ..outputs.runs import atomic_write, by_iteration, save_figure, write_bytes_to

ERRORS_FILE = "errors_ridge.npz"
SWEEP_METRICS = ("reconstruction_mse", "decoder_lambda", "decoder_dof")


def ridge_label(ridge: float | str) -> str:
    """The text of a relative ridge in metric names and phases.json: ``auto``, ``0.01``, ``1e-05``."""
    return AUTO if ridge == AUTO else f"{float(ridge):g}"


def sweep_metric(metric: str, ridge: float | str) -> str:
    return f"{metric}@ridge={ridge_label(ridge)}"


def check_ridges(ridges: Any) -> list[float | str]:
    """A relative ridge or a list of them (numbers >= 0 or ``auto``, no repeats) as a list."""
    values = list(ridges) if isinstance(ridges, (list, tuple)) else [ridges]
    if not values:
        raise ValueError("relative_ridge is an empty list; give at least one value.")
    for r in values:
        _check_ridge(r)
    labels = [ridge_label(r) for r in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"relative_ridge {values!r} repeats a value; give each ridge once.")
    return values


class RidgeSweep(Extension):
    """Tracker extension: the reconstruction curve and phases of the linear decoder at further
    relative ``ridges`` (see the module docstring). The tracker adds it by itself when its
    ``relative_ridge`` is a list of several values."""

    name = "ridge_sweep"
    report_template = "extensions/ridge_sweep.html.j2"
    report_title, report_anchor, report_order = "Ridges", "ridge", 20
    files = (ERRORS_FILE, "ridge_sweep.png")
    figures = {"ridge_sweep.png": ("ridge", "Test reconstruction loss of each layer at every relative ridge, "
                                   "all solved from the same Gram matrix at each checkpoint.")}
    checkpoint_files = True  # the per-ridge errors are measurements, kept like errors.npz after every checkpoint

    @classmethod
    def check_config(cls, cfg) -> None:
        if cls.name in (getattr(cfg, "extensions", None) or ()) and not _further_ridges(cfg.relative_ridge):
            raise ConfigError("the ridge_sweep extension needs a list of ridges: --ridge 0.1,1e-3,1 (the first value "
                              "is the measurement, the others are swept).")

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["RidgeSweep"]:
        """The sweep of a run whose ``relative_ridge`` is a list of several values (``--ridge 0.1,1,auto``)."""
        further = _further_ridges(setup.cfg.relative_ridge)
        return [cls(further)] if further else []

    def __init__(self, ridges: Sequence[float | str]):
        self.ridges = check_ridges(list(ridges))
        self.errors: dict[str, dict[str, dict[int, np.ndarray]]] = {ridge_label(r): {} for r in self.ridges}

    def setup(self, tracker: Any) -> None:
        if tracker.decoder != "linear":
            raise ValueError(f"a list of ridges needs the linear decoder; decoder={tracker.decoder!r} has no ridge.")
        if getattr(getattr(tracker, "target", None), "kind", "input") != "input":
            raise ValueError("a list of ridges is not measured for token inputs yet; give one --ridge value.")
        main = ridge_label(tracker.relative_ridge)
        if main in self.errors:
            raise ValueError(f"relative_ridge repeats the main value {main}; give each ridge once.")
        self.main = main
        self.phase_settings = PhaseSettings.from_config(tracker)  # the tracker's (any object with those attributes)

    def restart(self) -> None:
        """Forget the checkpoints measured (see PhaseTracker.restart)."""
        self.errors = {label: {} for label in self.errors}

    def describe(self) -> dict:
        return {"ridges": [ridge_label(r) for r in self.ridges], "errors_file": ERRORS_FILE}

    def measure(self, ctx) -> list[dict]:
        rows: list[dict] = []
        X = ctx.test_x.reshape(len(ctx.test_x), -1)
        new: dict[tuple[str, str], np.ndarray] = {}
        for layer in ctx.layers:
            solver = ctx.decoders.get(layer)
            if not isinstance(solver, StreamingRidge):
                raise ValueError(f"layer {layer!r} has no ridge decoder to sweep.")
            H = ctx.test_features[layer].to(ctx.device)
            Xd = X.to(ctx.device)
            for r in self.ridges:
                label = ridge_label(r)
                sol = solver.solution("x", r)
                err = ((Xd.float() - solver.predict_with(H, sol)) ** 2).mean(1, dtype=torch.float64).cpu()
                if not torch.isfinite(err).all():
                    raise NonFiniteActivations(ctx.iteration, f"the reconstructions from layer {layer!r} at ridge {label}")
                new[label, layer] = err.numpy()
                keys = {"ridge": label}
                rows.append(ctx.row(layer, "test", sweep_metric("reconstruction_mse", r), err, **keys))
                rows.append(ctx.row(layer, "train", sweep_metric("reconstruction_mse", r), float(sol.train_mse), **keys))
                rows.append(ctx.row(layer, "train", sweep_metric("decoder_lambda", r), float(sol.lam), **keys))
                rows.append(ctx.row(layer, "train", sweep_metric("decoder_dof", r), float(sol.dof), **keys))
        for (label, layer), err in new.items():  # only once every value of the checkpoint is finite
            self.errors[label].setdefault(layer, {})[int(ctx.iteration)] = err
        return rows

    # ------------------------------------------------------------------ results
    def phases(self) -> dict[str, dict[str, Any]]:
        """{ridge label: {layer: PhaseResult}} of the extra ridges (layers with >= 2 checkpoints)."""
        s = getattr(self, "phase_settings", None)
        return {label: _phases(per_layer, s) for label, per_layer in self.errors.items()}

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        per = {self.main: payload.get("layers", {})}
        per.update({label: {n: r.to_dict() for n, r in res.items()} for label, res in self.phases().items()})
        return {"ridge_sweep": {"ridges": list(per), "main": self.main, "per_ridge": per}}

    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        arrays = {}
        for label, per_layer in self.errors.items():
            for layer, per_it in per_layer.items():
                arrays.update(by_iteration(per_it, f"{label}::{layer}", "errors"))
        atomic_write(Path(out) / ERRORS_FILE, write_bytes_to(lambda f: np.savez(f, **arrays)))  # as errors.npz
        written = [Path(out) / ERRORS_FILE]
        if figure and arrays:
            written.append(plot_ridge_sweep(df, payload, Path(out) / "ridge_sweep.png"))
        return written

    @classmethod
    def summary_lines(cls, payload: dict) -> list[str]:
        sweep = payload.get("ridge_sweep")
        if not sweep:
            return []
        lines = [f"ridge sweep (main ridge {sweep['main']}): phases per relative ridge"]
        for label, per_layer in sweep["per_ridge"].items():
            parts = []
            for layer, r in per_layer.items():
                names = "/".join(p["name"] for p in r["phases"]) or "-"
                inc = r["relative_increase"]["value"]
                parts.append(f"{layer}: {names}" + (f" (+{100 * inc:.1f}%)" if inc is not None else ""))
            lines.append(f"  ridge {label}: " + "; ".join(parts))
        return lines

    @classmethod
    def report_context(cls, payload: dict) -> dict:
        """report.html's ridge section: per ridge and layer, the printed summary's row (phases,
        minimum, decrease, increase)."""
        sweep = payload.get("ridge_sweep")
        if not sweep:
            return {"ridge_sweep": None}
        rows = [{"ridge": label, "main": label == sweep["main"], **row}
                for label, per_layer in sweep["per_ridge"].items() for row in summary_rows({"layers": per_layer})]
        return {"ridge_sweep": {"main": sweep["main"], "rows": rows}}

    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        """The ``ridge_sweep`` section recomputed from errors_ridge.npz (settings from phases.json)."""
        path = Path(run_dir) / ERRORS_FILE
        old = payload.get("ridge_sweep")
        if not path.exists() or not old:
            return {}
        errors = read_sweep_errors(path)
        settings = next((r.get("settings", {}) for r in payload.get("layers", {}).values()), {})
        kw = PhaseSettings.from_config(settings)  # as recorded in phases.json (older runs: the defaults)
        per = {old["main"]: payload.get("layers", {})}
        per.update({label: {n: r.to_dict() for n, r in _phases(e, kw).items()} for label, e in errors.items()})
        return {"ridge_sweep": {"ridges": list(per), "main": old["main"], "per_ridge": per}}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"errors": {label: {n: dict(v) for n, v in per.items()} for label, per in self.errors.items()}}

    def load_state_dict(self, state: dict) -> None:
        for label, per in state.get("errors", {}).items():
            if label in self.errors:
                self.errors[label] = {n: {int(k): np.asarray(v) for k, v in its.items()} for n, its in per.items()}


def _further_ridges(relative_ridge: Any) -> list:
    """The values after the first of a list of ridges (the first is the main measurement)."""
    return list(relative_ridge[1:]) if isinstance(relative_ridge, (list, tuple)) else []


def _phases(per_layer: dict[str, dict[int, np.ndarray]], settings: PhaseSettings | None = None) -> dict:
    out = {}
    for layer, per_it in per_layer.items():
        its = sorted(per_it)
        if len(its) >= 2:
            out[layer] = detect_phases(its, np.stack([per_it[i] for i in its]), settings=settings)
    return out


def read_sweep_errors(path: Path) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """errors_ridge.npz as {ridge label: {layer: {iteration: (n_test,) errors}}}."""
    out: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    with np.load(path) as z:
        for key in z.files:
            if key.endswith("::iterations"):
                label, layer, _ = key.split("::")
                E = z[f"{label}::{layer}::errors"]
                out.setdefault(label, {})[layer] = {int(i): E[k] for k, i in enumerate(z[key])}
    return out


def sweep_curves(df: pd.DataFrame, main: str | None = None, split: str = "test") -> pd.DataFrame:
    """Long table (iteration, layer, ridge, value, ci_low, ci_high) of the reconstruction curves at
    every ridge of a run's metrics, the main one (``reconstruction_mse``, labelled ``main``) included."""
    m = df[(df.split == split) & ((df.metric == "reconstruction_mse") | df.metric.str.startswith("reconstruction_mse@"))]
    m = m[m.layer != "model"].copy()
    m["ridge"] = [main if met == "reconstruction_mse" else met.split("=", 1)[1] for met in m.metric]
    return m[["iteration", "layer", "ridge", "value", "ci_low", "ci_high"]].reset_index(drop=True)


def plot_ridge_sweep(df: pd.DataFrame, payload: dict, path: Path) -> Path:
    """One panel per layer: the test reconstruction curve at every ridge, each divided by its
    value at iteration 0 (so their shapes compare), the minimum of each marked."""
    sweep = payload.get("ridge_sweep") or {}
    curves = sweep_curves(df, sweep.get("main"))
    layers = list(dict.fromkeys(curves.layer))
    fig = new_figure((max(6.4, 4.6 * len(layers)), 4.0))
    axes = fig.subplots(1, max(1, len(layers)), squeeze=False)[0]
    labels = sweep.get("ridges") or sorted(curves.ridge.unique())
    cmap = __import__("matplotlib").colormaps["viridis"]
    numeric = sorted((l for l in labels if l != AUTO), key=float)  # colours in the order of the ridge
    for ax, layer in zip(axes, layers):
        for i, label in enumerate(labels):
            c = curves[(curves.layer == layer) & (curves.ridge == label)].sort_values("iteration")
            if c.empty:
                continue
            v0 = float(c.value.iloc[0])
            colour = "#d62728" if label == AUTO else cmap(0.9 * numeric.index(label) / max(1, len(numeric) - 1))
            ax.plot(c.iteration, c.value / v0, "o-", ms=2.5, color=colour, lw=1.6 if label == sweep.get("main") else 1,
                    label=f"ridge {label}" + (" (main)" if label == sweep.get("main") else ""))
            m = ((sweep.get("per_ridge") or {}).get(label) or {}).get(layer, {}).get("min_iteration")
            if m is not None:
                ax.plot([m], c.value[c.iteration == m] / v0, "v", color=colour, ms=6)
        _setup_axis(ax)
        ax.set_xlabel("iteration")
        ax.set_ylabel("test reconstruction MSE / value at iteration 0")
        ax.set_title(layer, fontsize=10)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return path


def load_sweep(run_dir: Path) -> dict:
    """The ``ridge_sweep`` section of a run's phases.json ({} when the run swept no ridge)."""
    return json.loads((Path(run_dir) / "phases.json").read_text()).get("ridge_sweep") or {}
