"""Figures and printed lines for the per-sample dynamics (phasescope.samples), drawn from
the tidy results (metrics.csv, phases.json, samples.parquet) so they can be rebuilt."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .metrics import curves_from_metrics, summarise_samples
from ...data.base import unnormalise
from ...outputs.figures import _series, _setup_axis, new_figure, to_rgb8
from ...outputs.runs import RunFileError, atomic_write, save_figure

CONCENTRATION_STYLE = {  # metric -> (label, colour, line style)
    "grad_share_top10": ("gradient share of top 10%", "#a50f15", "o-"),
    "grad_share_top1": ("gradient share of top 1%", "#fb6a4a", "s-"),
    "grad_effective_fraction": ("effective fraction of samples", "#3f007d", "^-"),
    "misclassified_fraction": ("misclassified (train)", "#31a354", "--"),
}


def plot_samples(df: pd.DataFrame, payload: dict, path: Path, title: str | None = None) -> Path:
    """Two panels on the same log iteration axis: the test reconstruction loss of each
    tracked layer (top) and the concentration of the last-layer gradient on few samples
    (bottom), with the reconstruction minimum and the top-10% half-crossing marked."""
    from matplotlib import colormaps  # lazy: matplotlib is heavy and only the figure needs it

    fig = new_figure((6.8, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True)
    layers = payload.get("layers", {})
    colours = colormaps["Blues"](np.linspace(0.9, 0.5, max(1, len(layers))))
    for colour, (layer, p) in zip(colours, layers.items()):
        te = _series(df, layer, "test", "reconstruction_mse")
        top.plot(te.iteration, te.value, "o-", ms=3, color=colour, label=f"{layer} (test)")
        if te.ci_low.notna().any():
            top.fill_between(te.iteration, te.ci_low, te.ci_high, color=colour, alpha=0.2, lw=0)
        if p.get("min_iteration") is not None:
            for ax in (top, bottom):
                ax.axvline(p["min_iteration"], color=colour, ls=":", lw=1.2)
    top.set_ylabel("reconstruction MSE (per pixel)")
    top.legend(fontsize=8, frameon=False)
    for metric, (label, colour, style) in CONCENTRATION_STYLE.items():
        s = _series(df, "model", "train", metric)
        bottom.plot(s.iteration, s.value, style, color=colour, ms=3, label=label)
    bottom.axhline(0.5, color="#999999", lw=0.8)
    cross = (payload.get("samples") or {}).get("top10_half_iteration")
    if cross is not None:
        bottom.axvline(cross, color="#a50f15", ls="--", lw=1)
        bottom.annotate(f"top 10% carry half: {cross}", (cross, 0.52), fontsize=8, color="#a50f15")
    bottom.set_ylim(0, 1.02)
    bottom.set_ylabel("fraction")
    bottom.set_xlabel("iteration (dotted: reconstruction minimum)")
    bottom.legend(fontsize=8, frameon=False, loc="center left")
    for ax in (top, bottom):
        _setup_axis(ax)
    fig.suptitle(title or "Who drives the gradient? Concentration on few samples vs reconstruction", fontsize=10)
    save_figure(fig, path, dpi=150)
    return Path(path)


def learning_order(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(last, first): the table sorted from the latest learned (never learned first, then by
    learned_at descending, ties by higher mean loss) and from the earliest learned (ties by
    lower mean loss)."""
    learned = table.learned_at.to_numpy(dtype=np.float64, na_value=np.inf)
    t = table.assign(_learned=learned)
    last = t.sort_values(["_learned", "mean_loss"], ascending=[False, False], kind="stable")
    first = t[np.isfinite(learned)].sort_values(["_learned", "mean_loss"], ascending=[True, True], kind="stable")
    return last.drop(columns="_learned"), first.drop(columns="_learned")


def display_image(x: torch.Tensor | np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """(C, H, W) normalised image -> (H, W) grey or (H, W, 3) RGB in [0, 1] (no normalisation
    when ``mean``/``std`` are None)."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    c = x.shape[0]
    raw = unnormalise(x[None], mean if mean is not None else [0.0] * c, std if std is not None else [1.0] * c)[0]
    img = np.clip(raw.numpy(), 0, 1)
    return img[0] if c == 1 else img.transpose(1, 2, 0)


def plot_few(table: pd.DataFrame, images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
             path: Path, *, classes: Sequence[str] | None = None, per_class: int = 6) -> Path:
    """Per class (rows): the samples learned last ("the few", never learned first), next
    to those learned first, each labelled with the iteration it was learned at.
    ``images`` is the set ``table['index']`` points into, (N, C, H, W), normalised with
    ``mean``/``std``. Drawn as one mosaic image (one axes: fast)."""
    if images.ndim != 4:
        raise ValueError(f"few.png needs image inputs (N, C, H, W); got shape {tuple(images.shape)}.")
    labels = sorted(int(c) for c in table.label.unique())
    k, (h, w) = per_class, images.shape[-2:]
    pad, gap = max(1, h // 8), w  # pixels between tiles; between the two groups
    cell_h, cell_w = h + 3 * pad, w + pad  # room under each tile for its label
    width = 2 * k * cell_w + gap
    canvas = np.ones((len(labels) * cell_h, width, 3))
    captions = []  # (x, y, text, learned last?)
    for r, c in enumerate(labels):
        last, first = learning_order(table[table.label == c])
        for group, (sub, x0) in enumerate(((last, 0), (first, k * cell_w + gap))):
            for i, (_, row) in enumerate(sub.head(k).iterrows()):
                img = display_image(images[int(row["index"])], mean, std)
                y, x = r * cell_h, x0 + i * cell_w
                canvas[y : y + h, x : x + w] = img[..., None] if img.ndim == 2 else img
                when = "never" if pd.isna(row.learned_at) else f"t={int(row.learned_at)}"
                captions.append((x + w / 2, y + h + 0.2 * pad, when, group == 0))
    scale = 0.9 / max(h, w)  # inches per pixel: a tile is about 0.9 inch
    fig = new_figure((width * scale + 0.9, len(labels) * cell_h * scale + 0.5), layout=None)
    ax = fig.add_axes([0.8 / (width * scale + 0.9), 0.02, width * scale / (width * scale + 0.9),
                       len(labels) * cell_h * scale / (len(labels) * cell_h * scale + 0.5)])
    ax.imshow(to_rgb8(canvas), interpolation="nearest")
    ax.set_axis_off()
    for x, y, text, late in captions:
        ax.text(x, y, text, ha="center", va="top", fontsize=6, color="#a50f15" if late else "#333333")
    for r, c in enumerate(labels):
        name = classes[c] if classes is not None and c < len(classes) else str(c)
        ax.text(-pad, r * cell_h + h / 2, name, ha="right", va="center", fontsize=8)
    ax.text(k * cell_w / 2, -pad, "learned last (the few)", ha="center", va="bottom", fontsize=9)
    ax.text(k * cell_w + gap + k * cell_w / 2, -pad, "learned first", ha="center", va="bottom", fontsize=9)
    save_figure(fig, path, dpi=120)
    return Path(path)


def _rho(d: dict) -> str:
    return "-" if d.get("rho") is None else f"{d['rho']:+.2f}"


def summary_lines(payload: dict[str, Any]) -> list[str]:
    """The printed summary of the per-sample dynamics (empty when it was not recorded)."""
    s = payload.get("samples")
    if not s or not s.get("n"):
        return []
    lines = [f"samples ({s['n']} training samples, {s.get('source', '')}):"]
    bracket = s.get("top10_half_bracket")
    if s.get("top10_half_iteration") is None:
        lines.append("  the top 10% of samples never carry half of the last-layer gradient norm")
    else:
        when = f"by iteration {bracket[1]}" if bracket[0] is None else f"between iterations {bracket[0]} and {bracket[1]}"
        lines.append(f"  the top 10% of samples come to carry half of the last-layer gradient norm {when}")
    for layer, c in (s.get("reconstruction") or {}).items():
        rel = c.get("octaves_after_minimum")
        rel_txt = ("" if rel is None else " (the same checkpoint as the crossing)" if rel == 0 else
                   f" ({abs(rel):.3g} octave(s) {'before' if rel > 0 else 'after'} the crossing)")
        at = c.get("at_minimum") or {}
        lines.append(f"  reconstruction minimum of {layer} at {c['min_iteration']}{rel_txt}: "
                     f"{100 * at.get('misclassified_fraction', float('nan')):.1f}% misclassified, "
                     f"top-10% share {at.get('grad_share_top10', float('nan')):.2f}")
    end = s.get("final") or {}
    lines.append(f"  at the end: {100 * end.get('misclassified_fraction', float('nan')):.1f}% misclassified, "
                 f"top-10% share {end.get('grad_share_top10', float('nan')):.2f}; never learned: {s['never_learned']}, "
                 f"forgotten at least once: {s['forgotten_at_least_once']}")
    typ = s.get("typicality", {})
    if typ:
        parts = [f"{space} {_rho(t['learned_only'])} (learned only) / {_rho(t['never_as_latest'])} (never learned last)"
                 for space, t in typ.items()]
        lines.append("  Spearman(learned at, distance to class mean, within-class z): " + "; ".join(parts))
    if s.get("marks"):
        parts = [f"{m} {_rho(t['learned_only'])} (learned only) / {_rho(t['never_as_latest'])} (never learned last)"
                 for m, t in s["marks"].items()]
        lines.append("  Spearman(learned at, mark): " + "; ".join(parts))
    if s.get("seconds_per_checkpoint") is not None:
        lines.append(f"  cost: {s['seconds_per_checkpoint']:.3f} s per checkpoint")
    return lines


def rebuild_samples(run_dir: Path, df: pd.DataFrame, payload: dict) -> bool:
    """Recompute the ``samples`` key of ``payload`` and samples.png from a run folder's
    files (samples.parquet/csv, metrics). few.png needs the images and is not redrawn.
    Returns False (and changes nothing) when the run has no per-sample dynamics."""
    try:
        table = read_samples_table(run_dir)
    except FileNotFoundError:
        return False
    old = dict(payload.get("samples") or {})
    minima = {n: p["min_iteration"] for n, p in payload.get("layers", {}).items()}
    followed = {"n": int(len(table)), **{k: old[k] for k in ("n", "max_samples", "seed", "source") if k in old}}
    marks = list(old.get("marks") or {}) or _data_marks(run_dir, table)
    new = summarise_samples(table, curves_from_metrics(df), minima, layer=old.get("layer"), followed=followed,
                            marks=marks)
    new["seconds_per_checkpoint"] = old.get("seconds_per_checkpoint")
    payload["samples"] = new
    plot_samples(df, payload, Path(run_dir) / "samples.png")
    return True


def _data_marks(run_dir: Path, table: pd.DataFrame) -> list[str]:
    """The per-sample marks the dataset attached (config.json's ``data.marks``, e.g. a text window's
    ``target_frequency``) that the table holds."""
    try:
        marks = json.loads((Path(run_dir) / "config.json").read_text()).get("data", {}).get("marks") or []
    except (OSError, ValueError):
        return []
    return [m for m in marks if m in table.columns]


def write_samples_table(out: Path, table: pd.DataFrame) -> Path:
    """samples.parquet when pyarrow is installed, else samples.csv (missing learned_at is empty)."""
    try:
        import pyarrow  # noqa: F401  # lazy: optional dependency (pyarrow): samples.parquet only when it is installed
    except ImportError:
        atomic_write(out / "samples.csv", lambda p: table.to_csv(p, index=False, float_format="%.6g"))
        return out / "samples.csv"
    atomic_write(out / "samples.parquet", lambda p: table.to_parquet(p, index=False))
    return out / "samples.parquet"


def read_samples_table(run_dir: Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    for name, read in (("samples.parquet", pd.read_parquet),
                       ("samples.csv", lambda p: pd.read_csv(p, dtype={"learned_at": "Int64"}))):
        path = run_dir / name
        if path.exists():
            try:
                table = read(path)
            except Exception as e:  # truncated or corrupt file
                raise RunFileError(path, f"cannot be read ({type(e).__name__}: {e}); the file is corrupt or "
                                         "truncated. Delete it to rebuild the rest, or re-run.") from e
            missing = [c for c in ("index", "label", "learned_at", "forgotten") if c not in table.columns]
            if missing:
                raise RunFileError(path, f"columns {missing} are missing; the file is corrupt.")
            return table
    raise FileNotFoundError(f"No samples.parquet or samples.csv in {run_dir}: was the run made with --samples?")


