"""sweep.png: one panel per configuration, the test reconstruction curve of each tracked layer
with every seed drawn thin and the mean across seeds bold."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...outputs.runs import save_figure
from .spec import SweepSpec
from .tables import OK, run_dir, run_status
from ...outputs.compare import load_runs
from ...outputs.figures import _setup_axis, new_figure

COLOURS = ("#08519c", "#a63603", "#006d2c", "#54278f", "#7f2704", "#252525")


def plot_sweep(spec: SweepSpec, out: Path, path: Path | None = None, metric: str = "reconstruction_mse") -> Path | None:
    """Write ``out/sweep.png`` from the run folders; None when no run has finished yet."""
    groups: dict[str, list] = {}
    for run in spec.runs:
        if run_status(out, run.name)[0] not in OK:
            continue
        try:
            groups.setdefault(run.configuration, []).extend(load_runs([run_dir(out, run.name)]))
        except Exception:  # noqa: BLE001 - a run folder that cannot be read is reported by the tables
            continue
    if not groups:
        return None
    n = len(groups)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = new_figure((4.4 * ncols + 0.4, 3.5 * nrows + 0.4))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (configuration, runs) in zip(axes, groups.items()):
        layers = list(dict.fromkeys(l for r in runs for l in r.metrics.layer.unique() if l != "model"))
        for layer, colour in zip(layers, COLOURS * 4):
            curves = []
            for r in runs:
                m = r.metrics
                s = m[(m.layer == layer) & (m.split == "test") & (m.metric == metric)].sort_values("iteration")
                if s.empty:
                    continue
                ax.plot(s.iteration, s.value, color=colour, lw=0.7, alpha=0.45)
                curves.append(s.set_index("iteration").value)
            if not curves:
                continue

            mean = pd.concat(curves, axis=1).mean(axis=1).sort_index()
            ax.plot(mean.index, mean.values, "o-", color=colour, ms=2.5, lw=1.6,
                    label=f"{layer}: mean of {len(curves)}" if len(curves) > 1 else layer)
        _setup_axis(ax)
        seeds = ", ".join(str(r.config.get("seed")) for r in runs)
        ax.set_title(f"{configuration}\n(seeds {seeds})", fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{metric.replace('_', ' ')} (test)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{Path(spec.source).stem}: thin lines are seeds, bold their mean", fontsize=10)
    path = Path(path) if path is not None else Path(out) / "sweep.png"
    save_figure(fig, path, dpi=130)
    return path
