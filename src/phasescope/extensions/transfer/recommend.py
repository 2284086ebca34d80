"""When to stop pre-training: transfer accuracy at the reconstruction minimum, at the
transfer peak and at the end of training, computed from tidy metrics.

Pure functions over metrics tables (``metrics.csv`` of a run, with its ``task`` column):

* :func:`recommendation_table`: one row per (task, layer) of one run;
* :func:`transfer_section`: the ``transfer`` section of phases.json for one run, with
  paired-bootstrap intervals on the gaps when per-sample correctness is given;
* :func:`aggregate_runs`: the same quantities over several runs (seeds), with
  t-intervals over runs.

The reconstruction minimum needs no transfer labels (it is the argmin of the test
reconstruction curve of the pre-training data), so stopping there is a rule a user can
apply; the transfer *peak* is chosen on the transfer test accuracy itself, so the
accuracy there is an optimistic (selected) figure and the peak is an upper bound of
what any stopping rule can reach on these checkpoints.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...engine.phases import Estimate
from ...engine.stats import Bootstrap

ACCURACIES = ("acc_at_start", "acc_at_min", "acc_at_peak", "acc_at_end")
GAPS = {  # name -> (a, b): accuracy at a minus accuracy at b
    "gap_peak_minus_min": ("peak", "min"),
    "gap_min_minus_end": ("min", "end"),
    "gap_peak_minus_end": ("peak", "end"),
    # against the untrained network (the first checkpoint, iteration 0): does pre-training help at all?
    "gap_min_minus_start": ("min", "start"),
    "gap_end_minus_start": ("end", "start"),
}
QUANTITIES = ("start_iteration", "min_iteration", "peak_iteration", "end_iteration", *ACCURACIES, *GAPS,
              "checkpoints_min_to_peak")
POINTS = {"start": "untrained", "min": "reconstruction_minimum", "peak": "transfer_peak", "end": "end"}


def _curve(metrics: pd.DataFrame, layer: str, metric: str, task: str | None = None) -> pd.DataFrame:
    m = metrics[(metrics.layer == layer) & (metrics.split == "test") & (metrics.metric == metric)]
    if task is not None:
        m = m[m.task == task]
    return m.sort_values("iteration").set_index("iteration")


def recommendation_table(metrics: pd.DataFrame, minimum: dict[str, int] | None = None) -> pd.DataFrame:
    """Per (task, layer): the checkpoints of the reconstruction minimum, of the best transfer
    test accuracy and of the end, the accuracy at each (with ``*_ci_low/high`` from the
    table's intervals), the gaps between them, and how many checkpoints the peak lies after
    the minimum (negative: before).

    ``minimum`` maps layer -> iteration of the reconstruction minimum (phases.json); layers
    it lacks use the argmin of the table's test ``reconstruction_mse``.
    """
    cols = ["task", "layer", *QUANTITIES] + [f"{a}_ci_{s}" for a in ACCURACIES for s in ("low", "high")]
    if "task" not in metrics.columns:
        return pd.DataFrame(columns=cols)
    t = metrics[(metrics.metric == "transfer_accuracy") & (metrics.split == "test")]
    rows = []
    for (task, layer), _ in t.groupby(["task", "layer"], sort=False):
        acc = _curve(metrics, layer, "transfer_accuracy", task)
        rec = _curve(metrics, layer, "reconstruction_mse")
        its = list(acc.index)
        k_min = (minimum or {}).get(layer)
        if k_min is None and len(rec):
            k_min = int(rec.value.idxmin())
        if k_min not in acc.index:  # no transfer measurement at the minimum
            continue
        at = {"start": int(its[0]), "min": int(k_min), "peak": int(acc.value.idxmax()), "end": int(its[-1])}
        row = {"task": task, "layer": layer, **{f"{k}_iteration": v for k, v in at.items()}}
        for k, it in at.items():
            row[f"acc_at_{k}"] = float(acc.value[it])
            row[f"acc_at_{k}_ci_low"] = float(acc.ci_low[it])
            row[f"acc_at_{k}_ci_high"] = float(acc.ci_high[it])
        for name, (a, b) in GAPS.items():
            row[name] = row[f"acc_at_{a}"] - row[f"acc_at_{b}"]
        row["checkpoints_min_to_peak"] = its.index(at["peak"]) - its.index(at["min"])
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _paired_gap(a: np.ndarray | None, b: np.ndarray | None, value: float, boot: Bootstrap) -> Estimate:
    """Paired-bootstrap interval of mean(a) - mean(b) over the same test samples (NaN ends
    when either is missing or they are not the same samples)."""
    if a is None or b is None or len(a) != len(b):
        return Estimate(value, float("nan"), float("nan"))
    _, lo, hi = boot.difference(a, b)
    return Estimate(value, lo, hi)


def _advice(row: pd.Series, gap_min_end: Estimate) -> str:
    gain = f"{100 * gap_min_end.value:+.1f} points"
    if np.isfinite(gap_min_end.ci_low):
        gain += f" [{100 * gap_min_end.ci_low:+.1f}, {100 * gap_min_end.ci_high:+.1f}]"
    where = (f"stopping at the reconstruction minimum (iteration {row.min_iteration}) instead of the end "
             f"(iteration {row.end_iteration}) changes transfer accuracy by {gain}")
    where += (f"; the untrained network (iteration {row.start_iteration}) reaches {row.acc_at_start:.3f}, "
              f"the end {100 * (row.acc_at_end - row.acc_at_start):+.1f} points from it")
    if np.isfinite(gap_min_end.ci_low) and gap_min_end.ci_low > 0:
        return f"stop early: {where}"
    if np.isfinite(gap_min_end.ci_high) and gap_min_end.ci_high < 0:
        return f"train to the end: {where}"
    return f"no significant difference: {where}"


def transfer_section(metrics: pd.DataFrame, minimum: dict[str, int] | None = None,
                     correct: dict[str, dict[str, dict[int, np.ndarray]]] | None = None,
                     tasks: dict[str, dict] | None = None, *, confidence: float = 0.95, n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """The ``transfer`` section of phases.json: per task and layer, the transfer accuracy at
    the reconstruction minimum, at the transfer peak and at the end, the gaps, and advice.

    ``correct[task][layer][iteration]`` holds per-sample test correctness (0/1); with it the
    gaps get paired-bootstrap intervals (the samples are the same at every checkpoint).
    ``tasks`` maps task -> a description stored alongside.
    """
    table = recommendation_table(metrics, minimum)
    boot = Bootstrap(n_boot, confidence, seed)
    out: dict = {"tasks": {}, "note": "acc_at_peak is selected on the transfer test accuracy itself (optimistic); "
                 "the reconstruction minimum needs no transfer labels."}
    for name, info in (tasks or {}).items():
        out["tasks"].setdefault(name, {"info": info, "layers": {}})
    for _, r in table.iterrows():
        per_sample = ((correct or {}).get(r.task) or {}).get(r.layer) or {}
        entry = {"checkpoints_min_to_peak": int(r.checkpoints_min_to_peak)}
        for k in POINTS:
            entry[POINTS[k]] = {
                "iteration": int(r[f"{k}_iteration"]),
                "accuracy": Estimate(r[f"acc_at_{k}"], r[f"acc_at_{k}_ci_low"], r[f"acc_at_{k}_ci_high"]).to_dict()}
        gaps = {}
        for g, (a, b) in GAPS.items():
            gaps[g] = _paired_gap(per_sample.get(int(r[f"{a}_iteration"])), per_sample.get(int(r[f"{b}_iteration"])),
                                  float(r[g]), boot)
        entry["gaps"] = {g: e.to_dict() for g, e in gaps.items()}
        entry["advice"] = _advice(r, gaps["gap_min_minus_end"])
        out["tasks"].setdefault(r.task, {"info": {}, "layers": {}})["layers"][r.layer] = entry
    return out


def _t_interval(v: np.ndarray, confidence: float) -> tuple[float, float, float]:
    from scipy import stats  # lazy: scipy is heavy and only this statistic needs it

    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def aggregate_runs(tables: Sequence[pd.DataFrame], minima: Sequence[dict[str, int] | None] | None = None, *,
                   confidence: float = 0.95) -> pd.DataFrame:
    """The recommendation over several runs (seeds): one row per (task, layer, quantity)
    with the mean over runs and a t-interval over runs (``ci_low``, ``ci_high``), the number
    of runs and the per-run values. For the checkpoint iterations (``*_iteration``), which
    are log-spaced, ``estimate`` is the median over runs and there is no interval.

    ``tables`` are the runs' metrics (``metrics.csv``); ``minima`` optionally the runs'
    reconstruction minima per layer. Quantities: see :data:`QUANTITIES`.
    """
    minima = list(minima) if minima is not None else [None] * len(tables)
    if len(minima) != len(tables):
        raise ValueError(f"{len(tables)} tables but {len(minima)} minima; give one per run or none.")
    per_run = [recommendation_table(t, m).assign(run=i) for i, (t, m) in enumerate(zip(tables, minima))]
    per_run = [p for p in per_run if len(p)]
    cols = ["task", "layer", "quantity", "estimate", "statistic", "ci_low", "ci_high", "n_runs", "values"]
    if not per_run:
        return pd.DataFrame(columns=cols)
    allr = pd.concat(per_run, ignore_index=True)
    rows = []
    for (task, layer), g in allr.groupby(["task", "layer"], sort=False):
        for q in QUANTITIES:
            v = g[q].to_numpy(np.float64)
            if q.endswith("_iteration"):
                m, lo, hi, stat = float(np.median(v)), float("nan"), float("nan"), "median"
            else:
                (m, lo, hi), stat = _t_interval(v, confidence), "mean"
            rows.append({"task": task, "layer": layer, "quantity": q, "estimate": m, "statistic": stat,
                         "ci_low": lo, "ci_high": hi, "n_runs": int(len(v)), "values": [float(x) for x in v]})
    return pd.DataFrame(rows, columns=cols)


def transfer_summary_rows(section: dict) -> list[dict[str, str]]:
    """One row of text per (task, layer) of a phases.json ``transfer`` section."""
    def acc(e: dict) -> str:
        a = e["accuracy"]
        s = f"{a['value']:.3f}" if a.get("value") is not None else "-"
        if a.get("ci_low") is not None:
            s += f" [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
        return f"{s} @ {e['iteration']}"

    def gap(e: dict) -> str:
        s = f"{100 * e['value']:+.1f}"
        if e.get("ci_low") is not None:
            s += f" [{100 * e['ci_low']:+.1f}, {100 * e['ci_high']:+.1f}]"
        return s

    rows = []
    for task, t in section.get("tasks", {}).items():
        majority = (t.get("info") or {}).get("majority_test_accuracy")
        for layer, e in t.get("layers", {}).items():
            rows.append({"task": task, "layer": layer, "majority": "-" if majority is None else f"{majority:.3f}",
                         "at_start": acc(e["untrained"]) if "untrained" in e else "-",
                         "at_minimum": acc(e["reconstruction_minimum"]),
                         "at_peak": acc(e["transfer_peak"]), "at_end": acc(e["end"]),
                         "min_minus_end": gap(e["gaps"]["gap_min_minus_end"]),
                         "peak_minus_min": gap(e["gaps"]["gap_peak_minus_min"]), "advice": e["advice"]})
    return rows
