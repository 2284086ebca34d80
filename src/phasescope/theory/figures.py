"""Figures of the single-layer theory, drawn from tidy tables (so they can be redrawn from
a run folder without retraining): the curves of one run and the phase magnitudes of a sweep."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..outputs.figures import PHASE_COLOURS, _setup_axis, new_figure, shade_phases

BLUE, LIGHT_BLUE, ORANGE, GREEN, RED, GREY = "#08519c", "#6baed6", "#e6550d", "#31a354", "#cb181d", "#636363"


def _series(df: pd.DataFrame, layer: str, split: str, metric: str) -> pd.DataFrame:
    return df[(df.layer == layer) & (df.split == split) & (df.metric == metric)].sort_values("iteration")


def plot_theory_curves(df: pd.DataFrame, phases: dict, path: Path, *, title: str | None = None,
                       atypical_fraction: float | None = None, layer: str = "logits") -> Path:
    """Three panels on one log-iteration axis: (a) reconstruction loss of the input from the
    layer's outputs, (b) training loss of typical and atypical samples, (c) the atypical
    samples' share of the gradient. ``phases`` maps layer -> phases.json entry."""
    from matplotlib.patches import Patch  # lazy: matplotlib is heavy and only the figure needs it

    fig = new_figure((6.4, 7.6))
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1.25, 1, 0.8]})
    ph = (phases.get(layer) or {})
    k_min = ph.get("min_iteration")
    for ax in axes:
        shade_phases(ax, ph.get("phases", []))
        if k_min is not None:
            ax.axvline(k_min, color=GREY, ls=":", lw=1)

    ax = axes[0]
    te = _series(df, layer, "test", "reconstruction_mse")
    tr = _series(df, layer, "train", "reconstruction_mse")
    ax.plot(te.iteration, te.value, "o-", color=BLUE, ms=3, label=f"test ({layer})")
    ax.fill_between(te.iteration, te.ci_low, te.ci_high, color=BLUE, alpha=0.2, lw=0, label="95% interval")
    ax.plot(tr.iteration, tr.value, "--", color=LIGHT_BLUE, label=f"train ({layer})")
    other = [n for n in ("logits", "softmax") if n != layer]
    for name in other:
        s = _series(df, name, "test", "reconstruction_mse")
        if len(s):
            ax.plot(s.iteration, s.value, ":", color=GREY, lw=1.2, label=f"test ({name})")
    ax.set_ylabel("reconstruction MSE\n(per coordinate)")
    ax.set_title("(a) optimal linear reconstruction of the input from the layer's outputs", fontsize=9, loc="left")
    ax.legend(fontsize=7.5, loc="upper right", frameon=False)

    ax = axes[1]
    for group, colour in (("typical", GREEN), ("atypical", RED)):
        for split, style in (("train", "o-"), ("test", "--")):
            s = _series(df, "model", split, f"loss_{group}")
            if len(s):
                ax.plot(s.iteration, s.value, style, color=colour, ms=2.5, lw=1.2 if split == "train" else 0.9,
                        label=f"{group} ({split})")
    ax.set_yscale("log")
    ax.set_ylabel("cross-entropy")
    ax.set_title("(b) loss of typical and atypical samples", fontsize=9, loc="left")
    ax.legend(fontsize=7.5, loc="lower left", frameon=False, ncol=2)

    ax = axes[2]
    s = _series(df, "model", "train", "gradient_share_atypical")
    q = _series(df, "model", "train", "gradient_share_atypical_per_sample")
    if len(_series(df, "model", "train", "loss_atypical")):
        ax.plot(s.iteration, s.value, "o-", color=ORANGE, ms=2.5, label=r"$\|G_A\| / (\|G_A\| + \|G_T\|)$")
        ax.plot(q.iteration, q.value, "--", color=ORANGE, lw=1, label="share of per-sample gradient norms")
        ax.legend(fontsize=7.5, loc="upper left", frameon=False)
    else:
        ax.text(0.5, 0.75, "no atypical samples", transform=ax.transAxes, ha="center", va="center", color=GREY)
    ax.axhline(0.5, color=GREY, lw=0.8)
    if atypical_fraction:
        ax.axhline(atypical_fraction, color=GREY, lw=0.8, ls="--")
        ax.text(1.02, atypical_fraction, "atypical\nfraction", transform=ax.get_yaxis_transform(), fontsize=6.5,
                va="center", color=GREY)
    ax.set_ylim(0, 1)
    ax.set_ylabel("atypical share\nof the gradient")
    ax.set_title("(c) share of the training gradient from atypical samples", fontsize=9, loc="left")
    for ax in axes:
        _setup_axis(ax)
    axes[-1].set_xlabel("iteration (gradient steps; log scale, 0 included)")
    handles = [Patch(color=c, alpha=0.4, label=name) for name, c in PHASE_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7.5, frameon=False, title=None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=150)
    return Path(path)


def plot_sweep(table: pd.DataFrame, param: str, path: Path, *, title: str | None = None) -> Path:
    """Phase magnitudes against the swept parameter: relative decrease and relative increase
    of the test reconstruction loss (each seed with its 95% interval, and the mean over seeds),
    and the iteration of the minimum next to the iteration at which the atypical gradient
    share reaches one half."""
    values = np.sort(table["value"].unique())
    numeric = np.issubdtype(np.asarray(values).dtype, np.number)
    pos = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    span = (max(pos.values()) - min(pos.values())) or 1.0
    seeds = sorted(table["seed"].unique())
    jitter = {s: (i - (len(seeds) - 1) / 2) * 0.012 * span for i, s in enumerate(seeds)}
    fig = new_figure((11.5, 3.5))
    axes = fig.subplots(1, 3)
    for ax, key, label, colour in ((axes[0], "relative_decrease", "relative decrease", PHASE_COLOURS["decrease"]),
                                   (axes[1], "relative_increase", "relative increase", PHASE_COLOURS["increase"])):
        for s in seeds:
            g = table[table.seed == s].sort_values("value")
            x = np.array([pos[v] for v in g["value"]]) + jitter[s]
            yerr = np.vstack([g[key] - g[f"{key}_ci_low"], g[f"{key}_ci_high"] - g[key]]).clip(min=0)
            ax.errorbar(x, g[key], yerr=yerr, fmt="o", ms=3.5, color=colour, mec="k", mew=0.4, elinewidth=0.8,
                        capsize=2, alpha=0.85, label="seed (95% interval)" if s == seeds[0] else None)
        m = table.groupby("value")[key].mean()
        ax.plot([pos[v] for v in m.index], m.values, "-", color="k", lw=1.2, label=f"mean over {len(seeds)} seeds")
        ax.axhline(0, color=GREY, lw=0.6)
        ax.set_ylabel(f"{label} of test reconstruction MSE")
        ax.set_title(f"({'ab'[key == 'relative_increase']}) {label}", fontsize=9, loc="left")
        ax.legend(fontsize=7.5, frameon=False)
    ax = axes[2]
    def x_of(g, shift=0.0):  # minima a little left, crossings a little right: both stay visible
        return [pos[v] + jitter[s] + shift * span for v, s in zip(g["value"], g["seed"])]

    turned = table[table["increase_significant"].astype(bool)]
    flat = table[~table["increase_significant"].astype(bool)]
    ax.plot(x_of(turned, -0.005), turned["min_iteration"].astype(float), "o", color=BLUE, ms=4, mec="k", mew=0.4, ls="none",
            label="reconstruction minimum (turn)")
    if len(flat):
        ax.plot(x_of(flat, -0.005), flat["min_iteration"].astype(float).clip(lower=0.5), "o", mfc="none", color=BLUE, ms=4,
                ls="none", label="minimum, no significant increase")
    g = table.dropna(subset=["share_crossing_iteration"])
    if len(g):
        ax.plot(x_of(g, 0.005), g["share_crossing_iteration"].astype(float), "s", color=ORANGE, ms=3.5, mec="k", mew=0.4,
                ls="none", label="atypical gradient share reaches 1/2")
    ax.set_yscale("log", base=2)
    ax.set_ylabel("iteration")
    ax.set_title("(c) when the loss turns", fontsize=9, loc="left")
    ax.legend(fontsize=7.5, frameon=False)
    for ax in axes:
        ax.set_xlabel(param.replace("_", " "))
        ax.grid(True, alpha=0.3)
        if not numeric:
            ax.set_xticks(list(pos.values()), [str(v) for v in values])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=150)
    return Path(path)
