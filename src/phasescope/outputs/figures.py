"""Figures and text summaries, computed from the tidy results (so they can be rebuilt
from a run folder without retraining).

Figures are drawn with matplotlib's object-oriented API (``matplotlib.figure.Figure``
saved straight to a file): no pyplot, no backend switch, nothing left open, so drawing
never changes the state of a notebook or script that imports phasescope."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .runs import save_figure
from ..engine.diagnostics import run_warnings
from ..registry import extensions

PHASE_COLOURS = {"constant": "#bdbdbd", "decrease": "#74c476", "increase": "#fb6a4a"}
TASK_COLOURS = ["#756bb1", "#dd1c77", "#8c6d31", "#636363", "#17becf", "#bcbd22"]  # extensions' curves, one per series


def _series(df: pd.DataFrame, layer: str, split: str, metric: str) -> pd.DataFrame:
    s = df[(df.layer == layer) & (df.split == split) & (df.metric == metric)]
    return s.sort_values("iteration")


def _setup_axis(ax) -> None:
    ax.set_xscale("symlog", linthresh=1, linscale=0.5)  # log axis that still shows iteration 0
    ax.set_xlim(left=0)
    ax.grid(True, which="major", alpha=0.3)


def shade_phases(ax, phases: list[dict]) -> None:
    for p in phases:
        ax.axvspan(p["start"], p["end"], color=PHASE_COLOURS.get(p["name"], "#dddddd"), alpha=0.25, lw=0)


def new_figure(figsize: tuple[float, float], *, layout: str | None = "constrained"):
    """A matplotlib Figure that belongs to no pyplot state (save it with ``fig.savefig``)."""
    from matplotlib.figure import Figure  # lazy: matplotlib is heavy and only the figures need it

    return Figure(figsize=figsize, layout=layout)


def to_rgb8(canvas: np.ndarray) -> np.ndarray:
    """A [0, 1] RGB mosaic as 8-bit pixels: what the PNG stores, and matplotlib draws it without
    the float normalisation pass."""
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def plot_curves(df: pd.DataFrame, phases: dict[str, Any], path: Path, title: str | None = None) -> Path:
    """One panel per tracked layer: test/train reconstruction MSE (left axis, with 95% band)
    and accuracies (right axis) against iteration (log axis), phases shaded; every extension
    may add curves to the accuracy axis (``Extension.draw_curves``, e.g. transfer accuracy)."""
    from matplotlib.patches import Patch  # lazy: matplotlib is heavy and only the figures need it

    layers = [l for l in df.layer.unique() if l != "model" and not str(l).startswith("_")
              and (df[(df.layer == l) & (df.metric == "reconstruction_mse")].shape[0] > 0)]
    n = max(1, len(layers))
    fig = new_figure((max(6.4, 4.6 * n), 4.2))
    axes = fig.subplots(1, n, squeeze=False)
    model_acc = {s: _series(df, "model", s, "accuracy") for s in ("train", "test")}
    for ax, layer in zip(axes[0], layers):
        ph = (phases.get(layer) or {}).get("phases", [])
        shade_phases(ax, ph)
        te = _series(df, layer, "test", "reconstruction_mse")
        tr = _series(df, layer, "train", "reconstruction_mse")
        ax.plot(te.iteration, te.value, "o-", color="#08519c", ms=3, label="reconstruction (test)")
        if te.ci_low.notna().any():
            ax.fill_between(te.iteration, te.ci_low, te.ci_high, color="#08519c", alpha=0.2, lw=0)
        ax.plot(tr.iteration, tr.value, "--", color="#6baed6", label="reconstruction (train)")
        m = phases.get(layer, {}).get("min_iteration")
        if m is not None:
            ax.axvline(m, color="#08519c", ls=":", lw=1)
        _setup_axis(ax)
        ax.set_xlabel("iteration")
        tok = _series(df, layer, "test", "token_recovery")  # token inputs: the one-hot of the last token
        ax.set_ylabel("reconstruction MSE (per one-hot entry)" if len(tok) else "reconstruction MSE (per pixel)")
        ax.set_title(layer, fontsize=10)
        ax2 = ax.twinx()
        pr = _series(df, layer, "test", "probe_accuracy")
        ax2.plot(pr.iteration, pr.value, "s-", color="#e6550d", ms=2.5, label="probe accuracy (test)")
        if len(tok):
            ax2.plot(tok.iteration, tok.value, "d-", color="#54278f", ms=2.5, label="token recovery (test)")
        for split, style in (("test", "-"), ("train", "--")):
            s = model_acc[split]
            ax2.plot(s.iteration, s.value, style, color="#31a354", label=f"model accuracy ({split})")
        for cls in extensions():  # e.g. the transfer probes' accuracy per task
            cls.draw_curves(ax2, df, layer)
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("accuracy")
    handles = []
    for a in (axes[0][0], axes[0][0].figure.axes[-1] if n == 1 else axes[0][0].figure.axes[n]):
        handles += a.get_legend_handles_labels()[0]
    handles += [Patch(color=c, alpha=0.4, label=name) for name, c in PHASE_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3 if n == 1 else 5, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path, dpi=150)
    return Path(path)


def fmt_estimate(e: dict | None, pct: bool = True) -> str:
    if not e or e.get("value") is None:
        return "-"
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.4g}")
    if e.get("ci_low") is None:
        return f(e["value"])
    return f"{f(e['value'])} [{f(e['ci_low'])}, {f(e['ci_high'])}]"


def summary_rows(phases: dict[str, Any]) -> list[dict[str, str]]:
    """One row of text per layer for the printed summary."""
    out = []
    for layer, p in phases.get("layers", {}).items():
        spans = ", ".join(f"{q['name']} {q['start']}-{q['end']}" for q in p["phases"])
        out.append({
            "layer": layer,
            "phases": spans,
            "minimum": f"{p['min_value']['value']:.4f} @ {p['min_iteration']}",
            "decrease": fmt_estimate(p["relative_decrease"]) + ("" if p["decrease_significant"] else " (n.s.)"),
            "increase": fmt_estimate(p["relative_increase"]) + ("" if p["increase_significant"] else " (n.s.)"),
        })
    return out


def final_accuracy(df: pd.DataFrame) -> dict[str, float]:
    out = {}
    last = df.iteration.max() if len(df) else None
    for split in ("train", "test"):
        s = df[(df.layer == "model") & (df.metric == "accuracy") & (df.split == split) & (df.iteration == last)]
        if len(s):
            out[split] = float(s.value.iloc[0])
    return out


def phases_payload(phase_results: dict, df: pd.DataFrame, num_classes: int | None = None) -> dict:
    """The phases.json document; ``warnings`` (see diagnostics) are checked when the class count is known."""
    return {
        "layers": {n: r.to_dict() for n, r in phase_results.items()},
        "final_accuracy": final_accuracy(df),
        "checkpoints": sorted(int(i) for i in df.iteration.unique()) if len(df) else [],
        "warnings": run_warnings(df, num_classes),
    }
