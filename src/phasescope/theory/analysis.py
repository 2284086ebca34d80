"""Small pure summaries of a single-layer run, computed from its tidy metrics.

``turn_summary`` describes the moment the reconstruction loss turns (its minimum): how far
the typical and the atypical samples' training losses have fallen by then, and when the
atypical samples' share of the gradient first reaches one half. These are the quantities
of prediction 4 in docs/theory.md.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..phases import PhaseResult


def _series(df: pd.DataFrame, metric: str, layer: str = "model", split: str = "train") -> pd.Series:
    s = df[(df.layer == layer) & (df.split == split) & (df.metric == metric)]
    return s.set_index("iteration")["value"].sort_index()


def first_crossing(curve: pd.Series, level: float) -> int | None:
    """First iteration at which ``curve`` reaches ``level`` (None if it never does)."""
    hit = curve[curve >= level]
    return int(hit.index[0]) if len(hit) else None


def octaves_between(a: int | None, b: int | None) -> float | None:
    """|log2(a) - log2(b)| with iteration 0 counted as 1/2 (one octave before iteration 1)."""
    if a is None or b is None:
        return None
    return float(abs(np.log2(max(a, 0.5)) - np.log2(max(b, 0.5))))


def turn_summary(metrics: pd.DataFrame, phases: PhaseResult | dict) -> dict:
    """Where the reconstruction minimum falls relative to the typical/atypical dynamics.

    Losses are the mean training cross-entropy of each group; ``*_loss_ratio`` is the loss
    at the minimum over the loss at iteration 0. ``share_crossing_iteration`` is the first
    checkpoint at which ``gradient_share_atypical`` reaches 1/2;
    ``octaves_min_to_crossing`` is the distance between the two on the log-2 axis.
    """
    p = phases.to_dict() if isinstance(phases, PhaseResult) else phases
    k = int(p["min_iteration"])
    out: dict = {"min_iteration": k}
    share = _series(metrics, "gradient_share_atypical")
    for group in ("typical", "atypical"):
        loss = _series(metrics, f"loss_{group}")
        acc = _series(metrics, f"accuracy_{group}")
        if loss.empty:
            out[f"{group}_loss_at_min"] = out[f"{group}_loss_ratio"] = out[f"{group}_accuracy_at_min"] = None
            continue
        out[f"{group}_loss_at_min"] = float(loss.loc[k])
        out[f"{group}_loss_ratio"] = float(loss.loc[k] / loss.iloc[0])
        out[f"{group}_accuracy_at_min"] = float(acc.loc[k])
    has_atypical = not _series(metrics, "loss_atypical").empty
    out["gradient_share_at_min"] = float(share.loc[k]) if has_atypical else None
    out["share_crossing_iteration"] = first_crossing(share, 0.5) if has_atypical else None
    out["octaves_min_to_crossing"] = octaves_between(k, out["share_crossing_iteration"])
    return out
