"""Small pure summaries of a single-layer run, computed from its tidy metrics.

``turn_summary`` describes the moment the reconstruction loss turns (its minimum): how far
the typical and the atypical samples' training losses have fallen by then, and when the
atypical samples' share of the gradient first reaches one half. These are the quantities
of prediction 4 in docs/theory.md.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..engine.phases import PhaseResult
from ..data.datamodel import DataModel, normalise
from .single_layer import LinearReconstruction, Training, initial_weights


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
    ``angle_*``: the mean angle (degrees) between the centred class weights and the centred
    prototypes at the minimum, at the end, and the iteration at which it is smallest.
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
    angle = _series(metrics, "prototype_angle_centred")
    if len(angle):  # the class weights turn toward the prototypes, then away from them
        out["angle_at_min"] = float(angle.loc[k])
        out["angle_final"] = float(angle.iloc[-1])
        out["angle_min_iteration"] = int(angle.idxmin())
    return out


def max_margin_reconstruction(data: DataModel, training: Training, seed: int = 0, C: float = 1e4) -> dict:
    """The reconstruction loss that gradient descent approaches as t -> infinity.

    On linearly separable data, gradient descent on the cross-entropy converges in
    direction to the multiclass hard-margin SVM (over [W, b]), while the sum of the class
    weight vectors stays at its initial value. By the invariance of the optimal linear
    decoder, the late reconstruction loss tends to that of the row space spanned by the
    SVM's weights plus that fixed sum. The SVM is approximated by scikit-learn's
    Crammer-Singer ``LinearSVC`` with a large ``C`` (``min_margin`` near 1 means the hard
    margin is reached). Returns the train and test losses and the SVM's training accuracy.
    """
    from sklearn.svm import LinearSVC  # lazy: scikit-learn is heavy and only this baseline needs it

    X, y, _ = data.generate(seed, "train")
    Xt, _, _ = data.generate(seed, "test")
    X, Xt, _, _ = normalise(X, Xt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at very small tolerances
        svm = LinearSVC(C=C, multi_class="crammer_singer", fit_intercept=True, max_iter=200_000, tol=1e-10).fit(X, y)
    W0, _ = initial_weights(data, training, seed)
    V = np.vstack([svm.coef_, W0.sum(0)])  # (K+1, d): the SVM directions and the conserved sum
    Z = X @ svm.coef_.T + svm.intercept_
    margin = Z[np.arange(len(y)), y][:, None] - Z
    margin[np.arange(len(y)), y] = np.inf
    dec = LinearReconstruction().fit(X @ V.T, X)
    return {
        "train": float(dec.per_sample_error(X @ V.T, X).mean()),
        "test": float(dec.per_sample_error(Xt @ V.T, Xt).mean()),
        "train_accuracy": float((Z.argmax(1) == y).mean()),
        "min_margin": float(margin.min()),
        "C": C,
    }
