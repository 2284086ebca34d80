"""The information plane beside the reconstruction curve: a tracker extension.

    ext = InfoPlane(estimators=("binning", "kde"))          # or from_options("binning,kde")
    tracker = PhaseTracker(model, layers, fit_data, test_data, extensions=[ext])
    ...train, calling tracker.maybe_measure(model, t)...
    df = tracker.results()        # + rows metric mi_input / mi_label, one per estimator
    ext.summary(df, minima)       # does compression (falling I(X;T)) coincide with the reconstruction rise?

At every checkpoint, for every tracked layer, :class:`InfoPlane` estimates I(X;T) and
I(T;Y) in bits from the features the tracker has already computed (the pooled (N, p)
layer outputs of its forward pass over the fit samples; no extra forward pass), with the
estimators of :mod:`phasescope.engine.measure.information`:

====================  =====================================================================
``binning``           equal-width bins over the range observed at the checkpoint (``bins``, ``binning_scope``)
``quantile``          equal-mass (adaptive) bins per unit, for unbounded ReLU activations
``kde``               pairwise-distance (KL) upper bound for the layer plus Gaussian noise
``kde-lower``         the matching pairwise (Bhattacharyya) lower bound; shares ``kde``'s distances
====================  =====================================================================

Rows (tidy, like the transfer probes' ``task`` rows): ``iteration, layer, split, metric,
value, ci_low, ci_high, estimator`` with ``metric`` ``mi_input`` (I(X;T)) or ``mi_label``
(I(T;Y)), ``split`` ``train`` (the fit samples; ``split="test"`` uses the held-out ones)
and ``estimator`` one of the names above. ``ci_low``/``ci_high`` are empty: a bootstrap
resample repeats samples, and repeated samples are identical patterns (binning) or
zero-distance pairs (KDE), so the resampled estimates are biased downward (H(T) of a
resample is at most log2 of its ~63% distinct samples) and a percentile interval would
not cover the estimate; the estimates' real uncertainty is their dependence on the bins,
the noise and the budgets, all recorded in the ``infoplane`` section of phases.json.

Budgets (recorded): at most ``max_units`` units per layer (spatial maps average-pooled,
else a seeded random subset) and ``max_samples`` samples (a seeded random subset, the
same at every checkpoint); see :mod:`phasescope.engine.measure.information` for what they do to
the estimates.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import ConfigError, Section, comma_list, opt
from ..engine.measure.capture import capture
from ..extension import Extension, Requires, RunSetup
from ..engine.measure.information import (binning_mi, discrete_entropy, kde_mi, reduce_units, subsample)
from ..outputs.figures import _series, _setup_axis, shade_phases

ESTIMATORS = {
    "binning": "equal-width bins over the range observed at the checkpoint",
    "quantile": "equal-mass (adaptive) bins per unit",
    "kde": "pairwise-distance upper bound, Gaussian noise",
    "kde-lower": "pairwise-distance lower bound, Gaussian noise",
}
METRICS = ("mi_input", "mi_label")
SPLITS = ("train", "test")
ESTIMATOR_STYLE = {  # estimator -> (marker, line colour) in the figures
    "binning": ("o", "#3f007d"), "quantile": ("s", "#807dba"), "kde": ("^", "#a50f15"), "kde-lower": ("v", "#fb6a4a"),
}
DEFAULTS = {"estimators": ["binning", "kde"], "bins": 30, "binning_scope": "layer", "noise": 0.1, "sigma": None,
            "max_units": 256, "max_samples": 2000, "split": "train", "seed": 0}


def parse_estimators(spec: str | Sequence[str]) -> list[str]:
    """Estimator names from ``"binning,kde"`` (or a list), validated, in the given order."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not names:
        raise ConfigError(f"No information-plane estimator given; choose from: {', '.join(ESTIMATORS)} "
                          "(comma-separated, e.g. 'binning,kde').")
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise ConfigError(f"Unknown information-plane estimator(s) {unknown}; choose from: "
                          + "; ".join(f"{k} ({v})" for k, v in ESTIMATORS.items()) + " (comma-separated, e.g. 'binning,kde').")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"Information-plane estimator(s) {', '.join(dup)} given twice.")
    return names


@dataclass
class InfoPlaneOptions(Section):
    """The ``infoplane`` section of a run's configuration (``--info-plane binning,kde``)."""

    section: ClassVar[str] = "infoplane"
    estimators: list[str] = opt(help="Information-plane estimators per checkpoint: binning, quantile, kde, kde-lower "
                                     "[none: off].", factory=list, flag="--info-plane", parse=comma_list,
                                choices=tuple(ESTIMATORS))
    bins: int = opt(30, "Bins per unit of the binning estimators.", min=2)
    noise: float = opt(0.1, "KDE noise variance, relative to the layer's total variance.", positive=True)
    max_units: int | None = opt(256, "Units budget: wider layers are pooled or subsampled (seeded).", positive=True)
    max_samples: int | None = opt(2000, "Samples budget of the estimators (seeded subset).", min=2)


class InfoPlane(Extension):
    """Tracker extension: I(X;T) and I(T;Y) per tracked layer and estimator, in bits.

    Parameters
    ----------
    estimators: names from :data:`ESTIMATORS` (``"binning"``, ``"quantile"``, ``"kde"``, ``"kde-lower"``).
    bins: bins per unit of ``binning`` and ``quantile`` [30].
    binning_scope: ``"layer"`` (one range for the whole layer, default) or ``"unit"`` (a range per unit) for ``binning``.
    noise: KDE noise variance relative to the layer's total variance (sigma^2 = noise x E||t - E t||^2) [0.1].
    sigma: a fixed (absolute) KDE noise standard deviation instead of ``noise``.
    max_units: dimensionality budget per layer [256] (None: all units).
    max_samples: sample budget [2000], a seeded subset of the split's samples (None: all).
    split: ``"train"`` (the tracker's fit samples, default) or ``"test"``.
    layers: tracked layers to estimate (default: all tracked layers).
    seed: seed of the sample and unit subsets.
    """

    name = "infoplane"
    options = InfoPlaneOptions
    files = ("infoplane.png",)

    def __init__(self, estimators: str | Sequence[str] = ("binning", "kde"), bins: int = 30, *,
                 binning_scope: str = "layer", noise: float = 0.1, sigma: float | None = None,
                 max_units: int | None = 256, max_samples: int | None = 2000, split: str = "train",
                 layers: Sequence[str] | None = None, seed: int = 0, block: int = 1024):
        self.estimators = parse_estimators(estimators)
        if not isinstance(bins, (int, np.integer)) or bins < 2:
            raise ConfigError(f"infoplane bins must be an integer >= 2; got {bins!r}.")
        if binning_scope not in ("layer", "unit"):
            raise ConfigError(f"infoplane binning_scope={binning_scope!r}; choose layer or unit.")
        if sigma is None and not noise > 0:
            raise ConfigError(f"infoplane noise must be > 0 (relative noise variance); got {noise!r}.")
        if sigma is not None and not sigma > 0:
            raise ConfigError(f"infoplane sigma must be > 0 or None (relative noise); got {sigma!r}.")
        if max_units is not None and (not isinstance(max_units, (int, np.integer)) or max_units < 1):
            raise ConfigError(f"infoplane max_units must be a positive integer or None; got {max_units!r}.")
        if max_samples is not None and (not isinstance(max_samples, (int, np.integer)) or max_samples < 2):
            raise ConfigError(f"infoplane max_samples must be an integer >= 2 or None; got {max_samples!r}.")
        if split not in SPLITS:
            raise ConfigError(f"infoplane split={split!r}; choose one of: {', '.join(SPLITS)}.")
        self.bins, self.binning_scope, self.noise, self.sigma = int(bins), binning_scope, float(noise), sigma
        self.max_units, self.max_samples, self.split = max_units, max_samples, split
        self.layers = list(layers) if layers is not None else None
        self.seed, self.block = int(seed), int(block)
        self.requires = Requires(fit_features=split == "train")
        self._reset()

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["InfoPlane"]:
        """The information-plane extension of a run when ``cfg.infoplane.estimators`` names any
        (``--info-plane binning,kde``; ``--extension infoplane`` alone: binning and kde); the seed is the run's."""
        cfg = setup.cfg
        o = cfg.infoplane
        if not o.estimators and cls.name not in (getattr(cfg, "extensions", None) or ()):
            return []
        return [cls(o.estimators or DEFAULTS["estimators"], bins=o.bins, noise=o.noise, max_units=o.max_units,
                    max_samples=o.max_samples, seed=cfg.seed)]

    def _reset(self) -> None:
        self.details: dict[str, dict[int, dict[str, dict]]] = {}  # layer -> iteration -> estimator -> extras
        self.reduction: dict[str, dict] = {}  # layer -> what the dimensionality budget did
        self.samples_: dict[str, int] = {}  # n, label entropy of the estimated subset
        self.timings: dict[int, float] = {}
        self.estimator_seconds: dict[int, dict[str, float]] = {}
        self._shapes: dict[str, tuple] | None = None

    def restart(self) -> None:
        """Forget the checkpoints measured; keep the layers' output shapes (see PhaseTracker.restart)."""
        shapes = self._shapes
        self._reset()
        self._shapes = shapes

    def describe(self) -> dict:
        """Settings, as recorded in phases.json (``infoplane.settings``)."""
        return {"estimators": list(self.estimators), "bins": self.bins, "binning_scope": self.binning_scope,
                "kde_noise": None if self.sigma is not None else self.noise,
                "kde_sigma_mode": "absolute" if self.sigma is not None else "relative",
                "kde_sigma": self.sigma, "max_units": self.max_units, "max_samples": self.max_samples,
                "split": self.split, "seed": self.seed, "units": "bits"}

    # ------------------------------------------------------------------ measurement
    def _layer_shapes(self, ctx) -> dict[str, tuple]:
        """Per-sample output shape of each tracked layer, from one 2-sample forward through
        hooks (the model's train/eval modes are left as they are)."""
        if self._shapes is None:
            with torch.no_grad(), capture(ctx.model, list(ctx.layers)) as store:
                ctx.model(ctx.fit_x[:2].to(ctx.device))
                self._shapes = {n: tuple(store[n].shape[1:]) for n in ctx.layers}
        return self._shapes

    def _features(self, ctx) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if self.split == "test":
            return ctx.test_features, ctx.test_y
        feats = ctx.fit_features
        if feats is None:  # the tracker did not keep them: one forward over the fit samples
            _, feats = ctx.features(ctx.fit_x)
        return feats, ctx.fit_y

    @staticmethod
    def _grid_shape(shape: tuple, p: int) -> tuple | None:
        """(C, g, g) layout of the tracker's (possibly pooled) features of a (C, H, W) output."""
        if len(shape) != 3:
            return None
        c, h, w = shape
        if c * h * w == p:
            return (c, h, w)
        g = int(round(math.sqrt(p / c))) if c else 0
        return (c, g, g) if g and c * g * g == p else None

    def measure(self, ctx) -> list[dict]:
        t0 = time.perf_counter()
        layers = self.layers or list(ctx.layers)
        missing = [n for n in layers if n not in ctx.layers]
        if missing:
            raise ValueError(f"InfoPlane layers {missing} are not tracked; choose from: {', '.join(ctx.layers)}.")
        feats, y = self._features(ctx)
        y = torch.as_tensor(y).cpu()
        rows_idx = torch.as_tensor(subsample(len(y), self.max_samples, self.seed))
        y_sub = y[rows_idx].numpy()
        self.samples_ = {"n": int(len(rows_idx)), "of": int(len(y)),
                         "label_entropy": discrete_entropy(y_sub), "max_bits": math.log2(len(rows_idx))}
        it = int(ctx.iteration)
        rows: list[dict] = []
        seconds = {e: 0.0 for e in self.estimators}
        for layer in layers:
            h = feats[layer].float().cpu()[rows_idx]
            t1 = time.perf_counter()
            over = self.max_units is not None and h.shape[1] > self.max_units  # only then: the map's layout
            shape = self._grid_shape(self._layer_shapes(ctx).get(layer, ()), h.shape[1]) if over else None
            h, info = reduce_units(h, self.max_units, shape, seed=self.seed, key=layer)
            self.reduction[layer] = info
            reduce_s = time.perf_counter() - t1
            results: dict[str, dict] = {}
            for est in self.estimators:
                t1 = time.perf_counter()
                if est in ("binning", "quantile"):
                    r = binning_mi(h, y_sub, self.bins, "equal" if est == "binning" else "quantile", self.binning_scope)
                    results[est] = {"mi_input": r["mi_input"], "mi_label": r["mi_label"],
                                    "patterns": r["patterns"], "saturation": r["saturation"]}
                elif "kde" not in results and "kde-lower" not in results:
                    r = kde_mi(h, y_sub, noise=self.noise, sigma=self.sigma, block=self.block,
                               lower="kde-lower" in self.estimators)
                    for name, suffix in (("kde", ""), ("kde-lower", "_lower")):
                        if name in self.estimators:
                            results[name] = {"mi_input": r["mi_input" + suffix], "mi_label": r["mi_label" + suffix],
                                             "sigma": r["sigma"]}
                seconds[est] += time.perf_counter() - t1 + reduce_s / len(self.estimators)
            self.details.setdefault(layer, {})[it] = {
                est: {k: v for k, v in res.items() if k not in METRICS} for est, res in results.items()}
            for est in self.estimators:
                for m in METRICS:
                    rows.append({"iteration": it, "layer": layer, "split": self.split, "metric": m,
                                 "value": float(results[est][m]), "ci_low": float("nan"), "ci_high": float("nan"),
                                 "estimator": est})
        self.estimator_seconds[it] = seconds
        self.timings[it] = time.perf_counter() - t0
        return rows

    # ------------------------------------------------------------------ results
    def summary(self, df: pd.DataFrame, minima: dict[str, int] | None = None) -> dict[str, Any]:
        """The ``infoplane`` section of phases.json: settings, the budgets' effect, and per
        layer and estimator whether compression coincides with the reconstruction rise
        (see :func:`compression_summary`)."""
        section = summarise_infoplane(df, minima or {}, split=self.split)
        section["settings"] = self.describe()
        section["samples"] = dict(self.samples_)
        for layer, info in self.reduction.items():
            entry = section["layers"].setdefault(layer, {})
            entry["reduction"] = info
            its = sorted(self.details.get(layer, {}))
            for est in self.estimators:
                extra = [self.details[layer][i].get(est, {}) for i in its]
                e = entry.setdefault("estimators", {}).setdefault(est, {})
                if est in ("binning", "quantile") and extra:
                    sat = [x.get("saturation") for x in extra]
                    e["saturation_min"] = float(np.nanmin(sat))  # H(T)/log2 N; 1 = every sample its own pattern
                    e["saturated"] = bool(np.nanmin(sat) > 0.99)
                if est in ("kde", "kde-lower") and extra:
                    e["sigma"] = {int(i): x.get("sigma") for i, x in zip(its, extra)}
        sec = list(self.timings.values())
        section["seconds_per_checkpoint"] = float(np.mean(sec)) if sec else None
        per = [v for v in self.estimator_seconds.values()]
        section["seconds_per_estimator"] = {e: float(np.mean([p.get(e, 0.0) for p in per])) for e in self.estimators} if per else {}
        return section

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        """Hook of :func:`phasescope.run.experiment.write_outputs`: the ``infoplane`` key of phases.json."""
        return {"infoplane": self.summary(df, reconstruction_minima(df, payload))}

    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        """Hook of :func:`phasescope.run.experiment.write_outputs`: infoplane.png when ``figure``
        (the rows themselves are in metrics.csv, the summary in phases.json)."""
        if not figure or df is None or not len(df) or "estimator" not in df.columns:
            return []
        return [plot_infoplane(df, payload, Path(out) / "infoplane.png")]

    # ------------------------------------------------------------------ resume
    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        """infoplane.png redrawn from metrics.csv (the rows with an ``estimator``)."""
        if "estimator" not in df.columns or not df.metric.isin(["mi_input", "mi_label"]).any():
            return {}
        plot_infoplane(df, payload, Path(run_dir) / "infoplane.png")
        return {}

    def state_dict(self) -> dict:
        return {"details": {l: dict(v) for l, v in self.details.items()}, "reduction": dict(self.reduction),
                "samples": dict(self.samples_), "timings": dict(self.timings),
                "estimator_seconds": dict(self.estimator_seconds)}

    def load_state_dict(self, state: dict) -> None:
        self._reset()
        self.details = {l: {int(k): v for k, v in its.items()} for l, its in state.get("details", {}).items()}
        self.reduction = dict(state.get("reduction", {}))
        self.samples_ = dict(state.get("samples", {}))
        self.timings = {int(k): float(v) for k, v in state.get("timings", {}).items()}
        self.estimator_seconds = {int(k): dict(v) for k, v in state.get("estimator_seconds", {}).items()}


# ---------------------------------------------------------------------- options and wiring
def from_options(spec: str | Sequence[str], **options: Any) -> InfoPlane:
    """An :class:`InfoPlane` from a comma-separated estimator list (``"binning,kde"``, as
    the CLI's ``--info-plane`` would pass it) and keyword options of the constructor."""
    return InfoPlane(parse_estimators(spec), **options)


def infoplane_extensions(cfg, given: Sequence = ()) -> list[InfoPlane]:
    """Deprecated: ``InfoPlane.from_config(RunSetup(cfg, None, given))`` (none when one is given)."""
    warnings.warn("infoplane_extensions(cfg, given) is deprecated; use InfoPlane.from_config(RunSetup(cfg, data, "
                  "given))", DeprecationWarning, stacklevel=2)
    if any(getattr(e, "name", None) == InfoPlane.name for e in given):
        return []
    return InfoPlane.from_config(RunSetup(cfg, None, list(given)))


# ---------------------------------------------------------------------- summaries (from the tidy rows)
def reconstruction_minima(df: pd.DataFrame, payload: dict | None = None) -> dict[str, int]:
    """{layer: iteration of the test reconstruction minimum}: from phases.json's payload
    (``layers[layer]["min_iteration"]``, or ``["minimum"]``) where present, else the
    argmin of the test ``reconstruction_mse`` rows."""
    out: dict[str, int] = {}
    for layer, p in ((payload or {}).get("layers") or {}).items():
        m = p.get("min_iteration", p.get("minimum")) if isinstance(p, dict) else None
        if isinstance(m, dict):
            m = m.get("iteration")
        if m is not None:
            out[layer] = int(m)
    if df is not None and len(df):
        rec = df[(df.metric == "reconstruction_mse") & (df.split == "test")]
        for layer, g in rec.groupby("layer"):
            if layer not in out and len(g):
                out[layer] = int(g.loc[g.value.idxmin(), "iteration"])
    return out


def mi_curves(df: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """Wide view: one row per (layer, estimator, iteration) with columns mi_input, mi_label."""
    if df is None or "estimator" not in df.columns:
        return pd.DataFrame(columns=["layer", "estimator", "iteration", *METRICS])
    s = df[df.metric.isin(METRICS) & df.estimator.notna()]
    if split is not None:
        s = s[s.split == split]
    if s.empty:
        return pd.DataFrame(columns=["layer", "estimator", "iteration", *METRICS])
    wide = s.pivot_table(index=["layer", "estimator", "iteration"], columns="metric", values="value").reset_index()
    wide.columns.name = None
    return wide.sort_values(["layer", "estimator", "iteration"]).reset_index(drop=True)


def _first_max(v: np.ndarray) -> int:
    """Index of the first value within rounding (1e-9 relative) of the maximum."""
    v = np.asarray(v, dtype=np.float64)
    return int(np.nonzero(v >= v.max() - 1e-9 * max(1.0, float(np.abs(v).max())))[0][0])


def compression_summary(iterations: Sequence[int], mi_input: Sequence[float], min_iteration: int | None,
                        reconstruction: Sequence[float] | None = None, min_effect: float = 0.02) -> dict[str, Any]:
    """Does I(X;T) fall ("compression") while the reconstruction loss rises?

    From the I(X;T) curve (bits) over the checkpoints ``iterations`` and the iteration of
    the reconstruction minimum:

    * ``start``, ``peak`` (and ``peak_iteration``), ``end``; ``compression`` = peak - end;
    * ``at_minimum``: I(X;T) at the reconstruction minimum; ``change_during_increase`` =
      end - at_minimum (net; negative: I(X;T) ends lower than at the minimum);
    * ``fall_before_minimum`` / ``fall_during_increase``: the summed decreases of I(X;T)
      between consecutive checkpoints up to / after the minimum (bits, >= 0), and
      ``share_of_fall_during_increase``, the second over their sum (None without any fall);
    * ``peak_octaves_from_minimum`` = log2(peak iteration) - log2(minimum) (None if either is 0);
    * ``spearman_during_increase``: rank correlation of I(X;T) with the reconstruction loss
      over the checkpoints from the minimum on (negative: opposite directions; None with
      fewer than 3 checkpoints or a constant series);
    * ``coincides``: I(X;T) falls during the increase by more than ``min_effect`` of its
      value at the minimum (net), and at least half of all its falling happens there.
    """
    its = np.asarray(iterations, dtype=np.int64)
    v = np.asarray(mi_input, dtype=np.float64)
    if len(its) == 0:
        return {}
    k = _first_max(v)
    peak, peak_it, end = float(v[k]), int(its[k]), float(v[-1])
    out: dict[str, Any] = {"start": float(v[0]), "peak": peak, "peak_iteration": peak_it, "end": end,
                           "compression": peak - end, "relative_compression": (peak - end) / peak if peak > 0 else 0.0}
    if min_iteration is None or int(min_iteration) not in set(its.tolist()):
        return out
    m = int(min_iteration)
    km = int(np.nonzero(its == m)[0][0])
    tol = 1e-9 * max(1.0, float(np.abs(v).max()))  # rounding, not a fall
    falls = np.clip(-np.diff(v), 0, None)
    falls[falls < tol] = 0.0
    before, during = float(falls[:km].sum()), float(falls[km:].sum())
    out["reconstruction_min_iteration"] = m
    out["at_minimum"] = float(v[km])
    out["change_during_increase"] = end - float(v[km])
    out["fall_before_minimum"] = before
    out["fall_during_increase"] = during
    out["share_of_fall_during_increase"] = during / (before + during) if before + during > 0 else None
    out["peak_octaves_from_minimum"] = (math.log2(peak_it) - math.log2(m)) if peak_it > 0 and m > 0 else None
    rho = None
    if reconstruction is not None and len(its) - km >= 3:
        from scipy.stats import spearmanr  # lazy: scipy is heavy and only this statistic needs it

        a, b = v[km:], np.asarray(reconstruction, dtype=np.float64)[km:]
        if np.ptp(a) > tol and np.ptp(b) > 0:  # not constant up to rounding
            rho = float(spearmanr(a, b).statistic)
    out["spearman_during_increase"] = rho
    share = out["share_of_fall_during_increase"]
    out["coincides"] = bool(out["change_during_increase"] < -min_effect * max(float(v[km]), tol)
                            and share is not None and share >= 0.5)
    return out


def summarise_infoplane(df: pd.DataFrame, minima: dict[str, int], split: str | None = None) -> dict[str, Any]:
    """Per layer and estimator: :func:`compression_summary` of I(X;T), and I(T;Y) at the
    start, the reconstruction minimum and the end (from the tidy rows alone, so it can be
    rebuilt from a run folder)."""
    curves = mi_curves(df, split)
    layers: dict[str, Any] = {}
    rec = df[(df.metric == "reconstruction_mse") & (df.split == "test")] if df is not None and len(df) else None
    for (layer, est), g in curves.groupby(["layer", "estimator"], sort=False):
        g = g.sort_values("iteration")
        its = g.iteration.astype(int).tolist()
        rc = None
        if rec is not None:
            r = rec[rec.layer == layer].set_index("iteration").value
            if all(i in r.index for i in its):
                rc = [float(r[i]) for i in its]
        m = minima.get(layer)
        s = compression_summary(its, g.mi_input.tolist(), m, rc)
        lab = g.mi_label.to_numpy()
        s["mi_label"] = {"start": float(lab[0]), "end": float(lab[-1]),
                         "at_minimum": float(lab[its.index(m)]) if m in its else None,
                         "peak": float(lab.max()), "peak_iteration": int(its[_first_max(lab)])}
        layers.setdefault(layer, {}).setdefault("estimators", {})[est] = s
        layers[layer]["reconstruction_min_iteration"] = m
    return {"layers": layers}


# ---------------------------------------------------------------------- figure
def plot_infoplane(df: pd.DataFrame, payload: dict | None, path: Path, title: str | None = None) -> Path:
    """infoplane.png: one row per layer; per estimator a panel of I(X;T) against I(T;Y)
    with points coloured by iteration (log colour scale) and the reconstruction minimum
    ringed, and beside them the test reconstruction curve (phases shaded) with I(X;T)
    of every estimator on a second axis (legend below the figure). Object-oriented
    matplotlib only (no pyplot state)."""
    from matplotlib import colors  # lazy: matplotlib is heavy and only the figure needs it
    from matplotlib.cm import ScalarMappable  # lazy: matplotlib is heavy and only the figure needs it
    from matplotlib.figure import Figure  # lazy: matplotlib is heavy and only the figure needs it

    payload = payload or {}
    curves = mi_curves(df)
    minima = reconstruction_minima(df, payload)
    layers = list(dict.fromkeys(curves.layer)) if len(curves) else []
    ests = [e for e in ESTIMATORS if e in set(curves.estimator)] if len(curves) else []
    section = payload.get("infoplane") or {}
    ncol = max(1, len(ests)) + 1
    nrow = max(1, len(layers))
    fig = Figure(figsize=(3.6 * ncol + 0.8, 3.3 * nrow + 0.9), constrained_layout=True)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    vmax = max(2, int(curves.iteration.max())) if len(curves) else 2
    norm = colors.SymLogNorm(linthresh=1, linscale=0.5, vmin=0, vmax=vmax, base=2)
    cmap = "viridis"
    n_info = section.get("samples") or {}
    for r, layer in enumerate(layers):
        m = minima.get(layer)
        for c, est in enumerate(ests):
            ax = axes[r][c]
            g = curves[(curves.layer == layer) & (curves.estimator == est)].sort_values("iteration")
            ax.plot(g.mi_input, g.mi_label, "-", color="#bbbbbb", lw=1, zorder=1)
            marker = ESTIMATOR_STYLE.get(est, ("o", "k"))[0]
            ax.scatter(g.mi_input, g.mi_label, c=g.iteration, cmap=cmap, norm=norm, marker=marker, s=36,
                       edgecolors="k", linewidths=0.3, zorder=2)
            if m is not None and (g.iteration == m).any():
                p = g[g.iteration == m].iloc[0]
                ax.scatter([p.mi_input], [p.mi_label], s=190, facecolors="none", edgecolors="#e6550d", linewidths=1.8,
                           zorder=3)
                ax.annotate(f"rec. min {m}", (p.mi_input, p.mi_label), xytext=(7, -12), textcoords="offset points",
                            fontsize=7, color="#e6550d")
            # Absolute ranges, the same in every panel: 0 to log2 N (ceiling of I(X;T)) and to H(Y)
            # (ceiling of I(T;Y)), so saturation and the size of movements are visible as they are.
            xmax = max(n_info.get("max_bits") or 0.0, float(curves.mi_input.max()))
            ymax = max(n_info.get("label_entropy") or 0.0, float(curves.mi_label.max()))
            ax.set_xlim(0, 1.04 * xmax if xmax > 0 else 1)
            ax.set_ylim(min(0.0, float(curves.mi_label.min()) * 1.1), 1.06 * ymax if ymax > 0 else 1)
            if n_info.get("max_bits"):
                ax.axvline(n_info["max_bits"], color="#999999", ls=":", lw=0.8)
            if n_info.get("label_entropy"):
                ax.axhline(n_info["label_entropy"], color="#999999", ls=":", lw=0.8)
            ax.set_xlabel("I(X;T) [bits]")
            ax.set_ylabel("I(T;Y) [bits]")
            ax.set_title(f"{layer}: {est}", fontsize=9)
            ax.grid(True, alpha=0.3)
        ax = axes[r][ncol - 1]
        ph = ((payload.get("layers") or {}).get(layer) or {}).get("phases", [])
        shade_phases(ax, ph)
        te = _series(df, layer, "test", "reconstruction_mse")
        ax.plot(te.iteration, te.value, "o-", color="#08519c", ms=3, label="reconstruction (test)")
        if len(te) and te.ci_low.notna().any():
            ax.fill_between(te.iteration, te.ci_low, te.ci_high, color="#08519c", alpha=0.2, lw=0)
        if m is not None:
            ax.axvline(m, color="#e6550d", ls=":", lw=1.2)
        _setup_axis(ax)
        ax.set_xlabel("iteration (dotted: reconstruction minimum)")
        ax.set_ylabel("reconstruction MSE (per pixel)")
        ax.set_title(f"{layer}: reconstruction and I(X;T)", fontsize=9)
        ax2 = ax.twinx()
        for est in ests:
            g = curves[(curves.layer == layer) & (curves.estimator == est)].sort_values("iteration")
            mk, col = ESTIMATOR_STYLE.get(est, ("o", "k"))
            ax2.plot(g.iteration, g.mi_input, mk + "--", color=col, ms=3, lw=1, label=f"I(X;T) {est}")
        ax2.set_ylabel("I(X;T) [bits]")
        if r == 0:
            legend = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    if layers:
        fig.legend(handles=legend, loc="outside lower right", ncol=len(legend), fontsize=8, frameon=False)
    else:
        axes[0][0].text(0.5, 0.5, "no information-plane rows", ha="center", va="center", transform=axes[0][0].transAxes)
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=[a for row in axes for a in row[:-1]] or axes[0][0],
                        shrink=0.9, pad=0.01)
    ticks = [0] + [2 ** k for k in range(0, int(math.log2(vmax)) + 1, 2 if vmax > 256 else 1)]
    cbar.set_ticks(ticks)
    cbar.set_ticklabels([str(t) for t in ticks])
    cbar.set_label("iteration")
    settings = section.get("settings") or {}
    note = []
    if n_info.get("n"):
        note.append(f"{n_info['n']} {settings.get('split', 'train')} samples (dotted: log2 N, H(Y)); orange ring: reconstruction minimum")
    if settings:
        note.append(f"bins {settings.get('bins')}, KDE noise "
                    + (f"{settings.get('kde_noise')} x layer variance" if settings.get("kde_sigma_mode") == "relative"
                       else f"sigma {settings.get('kde_sigma')}")
                    + f", <= {settings.get('max_units')} units")
    fig.suptitle((title or "Information plane beside the reconstruction curve")
                 + ("\n" + "; ".join(note) if note else ""), fontsize=10)
    fig.savefig(path, dpi=130)
    return Path(path)
