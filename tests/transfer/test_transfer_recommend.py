"""The stop-pre-training recommendation: per run, and across runs with intervals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from phasescope.transfer import aggregate_runs, recommendation_table, transfer_section, transfer_summary_rows

ITS = [0, 1, 2, 4, 8, 16, 32, 64]
RECON = [1.0, 1.0, 0.95, 0.9, 0.8, 0.7, 0.75, 0.9]          # minimum at 16
TRANSFER = [0.70, 0.70, 0.72, 0.75, 0.80, 0.79, 0.76, 0.72]  # peak at 8


def metrics(recon=RECON, transfer=TRANSFER, task="colour", layer="features.4", shift=0.0):
    rows = []
    for it, r, t in zip(ITS, recon, transfer):
        rows.append(dict(iteration=it, layer=layer, split="test", metric="reconstruction_mse", value=r,
                         ci_low=r - 0.01, ci_high=r + 0.01, task=np.nan))
        rows.append(dict(iteration=it, layer="model", split="test", metric="accuracy", value=0.5, ci_low=0.4,
                         ci_high=0.6, task=np.nan))
        for split in ("train", "test"):
            v = t + shift + (0.1 if split == "train" else 0.0)
            rows.append(dict(iteration=it, layer=layer, split=split, metric="transfer_accuracy", value=v,
                             ci_low=v - 0.02, ci_high=v + 0.02, task=task))
    return pd.DataFrame(rows)


def test_recommendation_table_reads_minimum_peak_and_end():
    t = recommendation_table(metrics())
    assert len(t) == 1
    r = t.iloc[0]
    assert (r.task, r.layer) == ("colour", "features.4")
    assert (r.min_iteration, r.peak_iteration, r.end_iteration) == (16, 8, 64)
    assert r.acc_at_min == pytest.approx(0.79) and r.acc_at_peak == pytest.approx(0.80)
    assert r.acc_at_end == pytest.approx(0.72) and r.acc_at_min_ci_low == pytest.approx(0.77)
    assert r.gap_peak_minus_min == pytest.approx(0.01) and r.gap_min_minus_end == pytest.approx(0.07)
    assert r.gap_peak_minus_end == pytest.approx(0.08)
    assert r.checkpoints_min_to_peak == -1  # the peak is one checkpoint before the minimum


def test_recommendation_table_uses_the_given_minimum_and_tolerates_plain_tables():
    assert recommendation_table(metrics(), {"features.4": 32}).iloc[0].acc_at_min == pytest.approx(0.76)
    assert recommendation_table(metrics().drop(columns="task")).empty


def test_transfer_section_gives_paired_intervals_on_gaps():
    n = 500
    rng = np.random.default_rng(0)
    base = rng.random(n) < 0.72
    at_min = base | (rng.random(n) < 0.25)  # the minimum gets some more samples right, on the same samples
    correct = {"colour": {"features.4": {16: at_min.astype(np.uint8), 64: base.astype(np.uint8),
                                          8: at_min.astype(np.uint8)}}}
    df = metrics()
    # Make the table agree with the per-sample arrays at the checkpoints they describe.
    for it, arr in correct["colour"]["features.4"].items():
        df.loc[(df.metric == "transfer_accuracy") & (df.split == "test") & (df.iteration == it), "value"] = arr.mean()
    sec = transfer_section(df, None, correct, {"colour": {"num_classes": 3}}, n_boot=500)
    e = sec["tasks"]["colour"]["layers"]["features.4"]
    g = e["gaps"]["gap_min_minus_end"]
    assert g["value"] == pytest.approx(at_min.mean() - base.mean())
    assert 0 < g["ci_low"] < g["value"] < g["ci_high"]  # paired: tight, and excludes zero
    assert e["advice"].startswith("stop early")
    assert sec["tasks"]["colour"]["info"] == {"num_classes": 3}
    # Without per-sample data the gaps have no interval, and the advice says so.
    plain = transfer_section(metrics())["tasks"]["colour"]["layers"]["features.4"]
    assert plain["gaps"]["gap_min_minus_end"]["ci_low"] is None
    assert plain["advice"].startswith("no significant difference")
    rows = transfer_summary_rows(sec)
    assert rows[0]["at_minimum"].endswith("@ 16") and rows[0]["task"] == "colour"


def test_aggregate_runs_over_seeds_uses_t_intervals():
    shifts = [0.0, 0.01, 0.03]
    out = aggregate_runs([metrics(shift=s) for s in shifts])
    row = out[(out.quantity == "acc_at_min")].iloc[0]
    vals = np.array([0.79 + s for s in shifts])
    h = stats.t.ppf(0.975, 2) * vals.std(ddof=1) / np.sqrt(3)
    assert row.n_runs == 3 and row.estimate == pytest.approx(vals.mean()) and row.statistic == "mean"
    assert row.ci_low == pytest.approx(vals.mean() - h) and row.ci_high == pytest.approx(vals.mean() + h)
    assert row["values"] == pytest.approx(list(vals))
    gap = out[(out.quantity == "gap_min_minus_end")].iloc[0]
    assert gap.estimate == pytest.approx(0.07) and gap.ci_low == pytest.approx(0.07)  # identical in every run
    assert set(out.quantity) >= {"acc_at_peak", "acc_at_end", "checkpoints_min_to_peak", "peak_iteration"}
    it = out[out.quantity == "min_iteration"].iloc[0]
    assert (it.estimate, it.statistic) == (16, "median") and np.isnan(it.ci_low)


def test_aggregate_runs_keeps_tasks_and_layers_apart():
    a = pd.concat([metrics(), metrics(task="switch:digits", transfer=[0.5] * 8)])
    out = aggregate_runs([a, a])
    assert set(out.task) == {"colour", "switch:digits"}
    one = aggregate_runs([metrics()])
    assert np.isnan(one[one.quantity == "acc_at_end"].iloc[0].ci_low)  # one run: no interval
    with pytest.raises(ValueError, match="2 tables but 1 minima"):
        aggregate_runs([a, a], minima=[None])
