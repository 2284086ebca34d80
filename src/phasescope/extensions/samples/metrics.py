"""The science of the per-sample dynamics, as small pure functions tested on their own.

Closed-form last-layer gradient norms, learned-at and forgetting, gradient concentration,
typicality, and the ``samples`` summary of phases.json (see the package docstring).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

METRICS = ("grad_share_top1", "grad_share_top10", "grad_effective_fraction", "misclassified_fraction")
HISTORY = ("correct", "loss", "margin", "grad_norm")  # per-checkpoint, per-sample arrays kept in state


# ---------------------------------------------------------------------- pure functions
def last_layer_grad_norm(logits: torch.Tensor, y: torch.Tensor, head_input: torch.Tensor,
                         bias: bool = True) -> torch.Tensor:
    """(n,) norm of each sample's cross-entropy gradient w.r.t. the final Linear's
    weight (and bias): ||p - e|| * sqrt(||a||^2 + 1). ``head_input`` is a, (n, d)."""
    p = torch.softmax(logits.double(), dim=1)  # (n, C)
    p[torch.arange(len(y)), y] -= 1.0  # p - e
    a2 = head_input.double().pow(2).sum(1)  # (n,)
    return (p.pow(2).sum(1) * (a2 + (1.0 if bias else 0.0))).sqrt()


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n,) true-class logit minus the largest other logit (> 0 iff correctly classified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.max(1).values


def learned_at(correct: np.ndarray, iterations: Sequence[int]) -> np.ndarray:
    """Iteration from which each sample stays correct: the first checkpoint k with
    ``correct[k:]`` all true. ``correct`` is (K, n) in checkpoint order. NaN where the
    sample is wrong at the last checkpoint (never learned)."""
    c = np.asarray(correct, dtype=bool)
    its = np.asarray(iterations, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != len(its):
        raise ValueError(f"correct must be (K, n) with K = len(iterations) = {len(its)}; got shape {c.shape}.")
    out = np.full(c.shape[1], np.nan)
    if c.shape[0] == 0:
        return out
    wrong = ~c
    # last checkpoint at which the sample was wrong (-1 if never wrong)
    last_wrong = np.where(wrong.any(0), c.shape[0] - 1 - np.argmax(wrong[::-1], axis=0), -1)
    ok = last_wrong < c.shape[0] - 1
    out[ok] = its[last_wrong[ok] + 1]
    return out


def forgetting_counts(correct: np.ndarray) -> np.ndarray:
    """Number of correct -> incorrect transitions between consecutive checkpoints, per sample."""
    c = np.asarray(correct, dtype=bool)
    if c.shape[0] < 2:
        return np.zeros(c.shape[1] if c.ndim == 2 else 0, dtype=np.int64)
    return (c[:-1] & ~c[1:]).sum(0).astype(np.int64)


def top_share(g: np.ndarray, fraction: float) -> float:
    """Share of ``sum(g)`` carried by the ceil(fraction * n) largest entries (at least one)."""
    g = np.asarray(g, dtype=np.float64)
    total = g.sum()
    if g.size == 0 or total <= 0:
        return float("nan")
    k = max(1, math.ceil(fraction * g.size - 1e-9))
    return float(np.partition(g, g.size - k)[g.size - k:].sum() / total)


def effective_fraction(g: np.ndarray) -> float:
    """Inverse participation ratio (sum g)^2 / (n sum g^2): 1 when all g are equal, 1/n
    when one sample carries everything."""
    g = np.asarray(g, dtype=np.float64)
    s2 = (g ** 2).sum()
    return float(g.sum() ** 2 / (g.size * s2)) if g.size and s2 > 0 else float("nan")


def gradient_concentration(g: np.ndarray) -> dict[str, float]:
    """The per-checkpoint concentration metrics of per-sample gradient norms ``g``."""
    return {"grad_share_top1": top_share(g, 0.01), "grad_share_top10": top_share(g, 0.10),
            "grad_effective_fraction": effective_fraction(g)}


def class_distance(h: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Euclidean distance of each row of ``h`` (n, p) to its class mean, with its
    within-class z-score and within-class rank (0 = closest to the mean, 1 = farthest)."""
    h = np.asarray(h, dtype=np.float64).reshape(len(h), -1)
    y = np.asarray(y)
    d, z, r = np.zeros(len(y)), np.zeros(len(y)), np.zeros(len(y))
    for c in np.unique(y):
        m = y == c
        dc = np.linalg.norm(h[m] - h[m].mean(0), axis=1)
        d[m] = dc
        sd = dc.std()
        z[m] = (dc - dc.mean()) / sd if sd > 0 else 0.0
        r[m] = (pd.Series(dc).rank(method="average").to_numpy() - 1) / max(1, m.sum() - 1)
    return d, z, r


def typicality_correlation(learned: np.ndarray, distance: np.ndarray) -> dict[str, Any]:
    """Does learning late go with being far from the class mean? Never-learned samples
    (NaN in ``learned``) are handled explicitly, three ways:

    * ``learned_only``: Spearman rho over the samples that were learned;
    * ``never_as_latest``: Spearman rho with never-learned samples ranked after every
      learned one (tied among themselves);
    * ``never_vs_learned``: mean distance of the never-learned vs the learned samples.
    """
    from scipy.stats import spearmanr  # lazy: scipy is heavy and only this statistic needs it

    learned = np.asarray(learned, dtype=np.float64)
    distance = np.asarray(distance, dtype=np.float64)
    never = np.isnan(learned)

    def rho(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
            return {"rho": None, "p": None, "n": int(len(a))}
        r = spearmanr(a, b)
        return {"rho": float(r.statistic), "p": float(r.pvalue), "n": int(len(a))}

    return {
        "learned_only": rho(learned[~never], distance[~never]),
        "never_as_latest": rho(np.where(never, np.inf, learned), distance),
        "never_vs_learned": {
            "never_mean": float(distance[never].mean()) if never.any() else None,
            "learned_mean": float(distance[~never].mean()) if (~never).any() else None,
            "n_never": int(never.sum()),
        },
    }


def first_crossing(iterations: Sequence[int], values: Sequence[float], level: float = 0.5) -> tuple[int | None, int | None]:
    """(previous checkpoint, first checkpoint) at which ``values`` first reaches ``level``;
    (None, None) if it never does. The crossing lies between the two."""
    for k, (it, v) in enumerate(zip(iterations, values)):
        if v is not None and np.isfinite(v) and v >= level:
            return (int(iterations[k - 1]) if k else None), int(it)
    return None, None


# ---------------------------------------------------------------------- options


def summarise_samples(table: pd.DataFrame, curves: pd.DataFrame, reconstruction_minimum: dict[str, int], *,
                      layer: str | None = None, seconds: dict[int, float] | None = None,
                      followed: dict | None = None, marks: Sequence[str] = ()) -> dict[str, Any]:
    """The ``samples`` document of phases.json, from the per-sample table and the curves; with
    ``marks`` (numeric columns of the table, e.g. a text window's ``target_frequency``), how learning
    late goes with each (:func:`typicality_correlation` of learned-at and the mark)."""
    if table.empty:
        return {"n": 0}
    its = [int(i) for i in curves.iteration]
    before, at = first_crossing(its, curves.grad_share_top10.tolist(), 0.5)
    learned = table.learned_at.to_numpy(dtype=np.float64, na_value=np.nan)

    def at_iteration(it: int) -> dict[str, float] | None:
        row = curves[curves.iteration == it]
        return None if row.empty else {m: float(row[m].iloc[0]) for m in METRICS}

    comparison = {}
    for name, m in reconstruction_minimum.items():
        comparison[name] = {
            "min_iteration": int(m),
            # > 0: the top-10% share crosses one half after the reconstruction minimum
            "octaves_after_minimum": (math.log2(at) - math.log2(m)) if at and m else None,
            "at_minimum": at_iteration(int(m)),
        }
    sec = list((seconds or {}).values())
    return {
        **(followed or {}),
        "layer": layer,
        "checkpoints": its,
        "top10_half_iteration": at,
        "top10_half_bracket": [before, at] if at is not None else None,
        "reconstruction": comparison,
        "final": at_iteration(its[-1]),
        "never_learned": int(np.isnan(learned).sum()),
        "forgotten_at_least_once": int((table.forgotten > 0).sum()),
        "learned_at_quartiles": ([float(q) for q in np.quantile(learned[~np.isnan(learned)], [0.25, 0.5, 0.75])]
                                 if (~np.isnan(learned)).any() else None),
        "typicality": {
            "input": typicality_correlation(learned, table.input_distance_z.to_numpy()),
            "layer": typicality_correlation(learned, table.layer_distance_z.to_numpy()),
        },
        "seconds_per_checkpoint": float(np.mean(sec)) if sec else None,
        **({"marks": {m: typicality_correlation(learned, table[m].to_numpy(dtype=np.float64))
                      for m in marks if m in table}} if marks else {}),
    }


def curves_from_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """The per-checkpoint concentration metrics (wide) from a tidy metrics table."""
    s = df[(df.layer == "model") & (df.split == "train") & df.metric.isin(METRICS)]
    return s.pivot_table(index="iteration", columns="metric", values="value").reset_index()
