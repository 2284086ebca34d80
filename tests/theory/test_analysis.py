"""The turn summary: pure functions of a tidy table."""
from __future__ import annotations

import pandas as pd
import pytest

from phasescope.theory.analysis import first_crossing, octaves_between, turn_summary


def _table(share, typ, atyp):
    rows = []
    for it, s, t, a in zip([0, 1, 2, 4, 8], share, typ, atyp):
        for metric, v in (("gradient_share_atypical", s), ("loss_typical", t), ("loss_atypical", a),
                          ("accuracy_typical", 1.0), ("accuracy_atypical", 0.0)):
            rows.append({"iteration": it, "layer": "model", "split": "train", "metric": metric, "value": v})
    return pd.DataFrame(rows)


def test_turn_summary_reads_the_minimum():
    df = _table([0.1, 0.2, 0.4, 0.6, 0.7], [2.0, 1.0, 0.5, 0.1, 0.05], [2.0, 2.0, 1.9, 1.8, 1.0])
    t = turn_summary(df, {"min_iteration": 4})
    assert t["typical_loss_ratio"] == pytest.approx(0.05) and t["atypical_loss_ratio"] == pytest.approx(0.9)
    assert t["gradient_share_at_min"] == pytest.approx(0.6)
    assert t["share_crossing_iteration"] == 4 and t["octaves_min_to_crossing"] == 0


def test_without_atypical_samples_there_is_no_share():
    df = _table([0.0] * 5, [2.0, 1.0, 0.5, 0.1, 0.05], [None] * 5)
    df = df[~df.metric.str.endswith("_atypical") | (df.metric == "gradient_share_atypical")]
    t = turn_summary(df, {"min_iteration": 8})
    assert t["atypical_loss_ratio"] is None and t["share_crossing_iteration"] is None
    assert t["octaves_min_to_crossing"] is None


def test_crossing_and_octaves():
    s = pd.Series([0.1, 0.5, 0.4, 0.9], index=[0, 1, 2, 4])
    assert first_crossing(s, 0.5) == 1 and first_crossing(s, 0.95) is None
    assert octaves_between(16, 64) == 2 and octaves_between(0, 1) == 1


def test_max_margin_limit():
    import numpy as np

    from phasescope.theory import DataModel, Training
    from phasescope.theory.analysis import max_margin_reconstruction
    from phasescope.data.datamodel import normalise

    dm = DataModel(num_classes=3, dim=20, n_train=60, n_test=60, atypical_fraction=0.2)
    mm = max_margin_reconstruction(dm, Training(), seed=0)
    assert mm["train_accuracy"] == 1.0 and mm["min_margin"] == pytest.approx(1.0, abs=1e-3)  # hard margin reached
    X, _, _ = dm.generate(0)
    X, _, _, _ = normalise(X, X)
    ev = np.linalg.eigvalsh(np.cov(X.T, bias=True))
    # Rank K (the K-1 SVM directions and the fixed sum of the weights): at least the PCA floor.
    assert ev[:-3].sum() / dm.dim - 1e-9 <= mm["train"] < 1 and 0 < mm["test"] < 1.5
