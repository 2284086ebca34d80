"""How far has each layer's representation moved? Linear CKA over training (Kornblith et al. 2019).

    phasescope run --extension cka                 # or --cka; --cka-max-samples N; cka:max_samples=none: all
    tracker = PhaseTracker(model, layers, fit_data, test_data, extensions=[LinearCKA()])   # or "cka"

At every checkpoint, for every tracked layer, :class:`LinearCKA` compares the layer's features of
the test samples (the (n, p) features the tracker scores its decoder on: pooled to at most
``max_features`` like the decoder's inputs) with the same layer's features of the same samples

* at initialisation (the first measured checkpoint): metric ``cka_init``, 1 at that checkpoint;
* at the previous measured checkpoint: metric ``cka_previous`` (from the second checkpoint on; on
  the log-spaced schedule, consecutive checkpoints are a fixed fraction of an octave apart).

Rows (split ``test``): ``value`` the estimate over the n samples, ``ci_low``/``ci_high`` the
tracker's percentile-bootstrap interval over test samples. Both feature matrices are resampled
jointly (a resample repeats the same samples in both), with :class:`phasescope.engine.stats.Bootstrap`
built from the tracker's ``bootstrap`` count, ``confidence`` and ``seed``: the resample weights
of n samples are the very ones the tracker's own intervals use for n test samples (the same when
``max_samples`` keeps them all), and the same at every checkpoint (paired). A resample's value is
the same U-statistic over its tuples of distinct samples (weighted by how often it holds each; see
:func:`cka`): no tuple pairs a sample with a copy of itself, as the estimator leaves out the
diagonal. In simulations its 95% intervals covered the population CKA in 95-100% of draws
(n = 100 to 200 samples, 5 to 200 features), at or above their nominal width.

The estimator (:func:`cka`) is the unbiased HSIC of Song et al. (2012) that Kornblith et al.
recommend, with the linear kernel K = X Xᵀ:

    HSIC₁(K, L) ∝ tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1,   K̃ = K with a zero diagonal
    CKA(X, Y) = HSIC₁(K, L) / sqrt(HSIC₁(K, K) HSIC₁(L, L))

(equal to the Frobenius product of their unbiasedly centred Gram matrices with zeroed diagonals,
as in Kornblith et al.'s code). It is invariant to orthogonal transforms and isotropic scaling of
either feature matrix, near 0 for independent features, and undefined (NaN) for a layer whose
features are constant over the samples (HSIC₁(K, K) <= 0). A resample that holds sample i c_i
times is handled exactly without building it: its statistic is a sum of forms in c, c² and c³
with K̃, L̃ and K̃∘L̃ (:func:`gram_pass`), so the estimate and its B resamples cost a few
(n x n) @ (n x 2(1 + B)) products.

Memory and cost. Kept between checkpoints, per tracked layer: the initial and the previous
features of the n samples used, float32: ``2 * n * p * 4`` bytes (n = 1000, p = 4096: 33 MB per
layer); they are in the run's state.pt too (resume compares with the same references). Besides,
per layer, derived statistics of both references over the 1 + B resample columns, float64, not
saved (recomputed from the features after a resume): ``4 * n * (1 + B) * 8`` bytes (n = B = 1000:
32 MB). ``describe()`` (config.json's ``measurement.extensions.cka``, phases.json's
``cka.settings``) records both: ``reference_bytes`` per layer and ``cached_bytes_per_layer``.
The Gram matrices are not kept: each checkpoint rebuilds them from the features, whole (n x n
float64) when n * max(n, 2(1 + B)) <= :data:`BLOCK_ELEMENTS` (n <= 1047 at B = 1000, n <= 1448
at B <= 723), else in blocks of rows from feature products, so that the working memory stays at a
few such blocks (16 MB each; a whole n = 2000 Gram matrix would be 32 MB). Work per layer and
checkpoint: n²(p + p_init + p_previous) multiply-adds for the Gram rows and 8 n²(1 + B) for the
estimates (n = B = 1000: 8e9; the default CNN run spent 0.93 s per checkpoint on its layer on one
CPU thread, about as long as the rest of its measurement; n = 2000: four times that), in float64
on the tracker's device (the CPU for MPS, which has no float64). ``max_samples`` (default 1000: a
subset of the test samples seeded by the run's seed, the same at every checkpoint) bounds both.

phases.json's ``cka`` section: the settings, and per layer the end of training (``cka_init``
with its interval), ``cka_init`` at the reconstruction minimum and the largest move between
consecutive checkpoints (the lowest ``cka_previous``). Figure ``cka.png``: per layer, both curves
over iterations (log axis) with their intervals, the phases shaded. ``phasescope report RUN``
recomputes the section and redraws the figure from metrics.csv.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Section, opt
from ..extension import Extension, RunSetup
from ..engine.measure.information import subsample
from ..engine.stats import Bootstrap
from ..outputs.figures import PHASE_COLOURS, _series, _setup_axis, new_figure, shade_phases
from ..outputs.runs import save_figure

METRICS = ("cka_init", "cka_previous")
PNG = "cka.png"
BLOCK_ELEMENTS = 1 << 21  # float64 entries of one (rows x n) or (rows x 2(1 + B)) block: 16 MB
STYLE = {"cka_init": ("#08519c", "with initialisation"), "cka_previous": ("#e6550d", "with the previous checkpoint")}


# ---------------------------------------------------------------------- the estimator
@dataclass
class GramStats:
    """What the estimator needs of one feature matrix over the count columns (R = 1 + B: all
    samples, then each resample), to pair it with others without recomputing it: with K̃ its Gram
    matrix with a zero diagonal and w a column, ``k`` = K̃w and ``k2`` = K̃w² (each (n, R)), and
    ``hsic`` (R,) = N(K, K) (see :func:`gram_pass`)."""

    k: torch.Tensor
    k2: torch.Tensor
    hsic: torch.Tensor


def _device(device: Any) -> torch.device:
    dev = torch.device(device)
    return torch.device("cpu") if dev.type == "mps" else dev  # no float64 on MPS


def _columns(n: int, counts: Any | None, dev: torch.device) -> torch.Tensor:
    """(n, 1 + B): the all-ones count vector, then the B resamples' counts."""
    c = torch.ones(1, n, dtype=torch.float64, device=dev)
    if counts is not None:
        c = torch.cat([c, torch.as_tensor(np.asarray(counts), dtype=torch.float64).to(dev).reshape(-1, n)])
    return c.T.contiguous()


def gram_pass(x: torch.Tensor, references: Sequence[torch.Tensor], ct: torch.Tensor,
              known: Sequence[GramStats | None] = (), *, block_elements: int = BLOCK_ELEMENTS
              ) -> tuple[GramStats, list[GramStats], list[torch.Tensor]]:
    """One pass over row blocks of the Gram matrices of ``x`` and ``references`` (float64 (n, p)
    tensors on one device) for the weight columns ``ct`` (n, R) (:func:`_columns`): the statistics
    of ``x``, of every reference (taken from ``known`` where given, not recomputed) and the cross
    terms N(K_x, K_ref), each (R,).

    N(K, L) is the numerator of the weighted U-statistic of HSIC over 4-tuples (t, u, v, s) of
    distinct samples, each tuple weighted by w_t w_u w_v w_s (see :func:`cka`); with K̃, L̃ the
    Gram matrices with zero diagonals, H = K̃∘L̃, W = Σw, Q = Σw², k = K̃w, l = L̃w, k2 = K̃w²,
    l2 = L̃w², S_K = wᵀk, a1 = wᵀHw, a2 = (w²)ᵀHw, a3 = (w³)ᵀHw, a4 = (w²)ᵀHw², by inclusion and
    exclusion of the tuples that repeat a sample:

        Σ w⁴ K_tu L_tu   = (W² - Q) a1 - 4W a2 + 4 a3 + 2 a4
        Σ w⁴ K_tu L_vs   = S_K S_L - 4 Σ w² k l + 2 a4
        Σ w⁴ K_tu L_tv   = Σ w (W - w) k l - W a2 + a4 - Σ w k2 l - Σ w k l2 + 2 a3
        N = first + second - 2 third

    For w = 1 this is (n-1)(n-2) times Song et al.'s tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1.
    The a's need Hw and Hw², products of the blocks with [w | w²]."""
    mats = [x, *references]
    n, R = len(x), ct.shape[1]
    dev = x.device
    known = list(known) + [None] * (len(references) - len(known))
    need = [True] + [k is None for k in known]
    wide = torch.cat([ct, ct * ct], 1)  # [w | w²]
    ks = [torch.empty(n, 2 * R, dtype=torch.float64, device=dev) if need[j] else None for j in range(len(mats))]
    pairs = [(j, j) for j in range(len(mats)) if need[j]] + [(0, j) for j in range(1, len(mats))]
    a = {p: torch.zeros(4, R, dtype=torch.float64, device=dev) for p in pairs}  # a1..a4 per pair
    rows = max(1, min(n, int(block_elements) // max(n, 2 * R)))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        w = ct[r0:r1]
        w2 = w * w
        grams = [m[r0:r1] @ m.T for m in mats]  # rows r0:r1 of each Gram matrix, from the features
        diag = [g[:, r0:r1].diagonal() for g in grams]
        for j, (g, d) in enumerate(zip(grams, diag)):
            if need[j]:
                ks[j][r0:r1] = g @ wide - d[:, None] * wide[r0:r1]  # K̃[w | w²] on these rows
        for p, q in pairs:
            h = (grams[p] * grams[q]) @ wide - (diag[p] * diag[q])[:, None] * wide[r0:r1]
            h1, h2 = h[:, :R], h[:, R:]
            a[p, q] += torch.stack([(w * h1).sum(0), (w2 * h1).sum(0), (w2 * w * h1).sum(0), (w2 * h2).sum(0)])
    k = [ks[j][:, :R] if need[j] else known[j - 1].k for j in range(len(mats))]
    k2 = [ks[j][:, R:] if need[j] else known[j - 1].k2 for j in range(len(mats))]
    W, Q = ct.sum(0), (ct * ct).sum(0)

    def numerator(p: int, q: int) -> torch.Tensor:
        a1, a2, a3, a4 = a[p, q]
        kl = k[p] * k[q]
        first = (W * W - Q) * a1 - 4 * W * a2 + 4 * a3 + 2 * a4
        second = (ct * k[p]).sum(0) * (ct * k[q]).sum(0) - 4 * (ct * ct * kl).sum(0) + 2 * a4
        third = ((ct * (W - ct)) * kl).sum(0) - W * a2 + a4 - (ct * k2[p] * k[q]).sum(0) - (ct * k[p] * k2[q]).sum(0) + 2 * a3
        return first + second - 2 * third

    stats = [GramStats(k[j], k2[j], numerator(j, j)) if need[j] else known[j - 1] for j in range(len(mats))]
    return stats[0], stats[1:], [numerator(0, j) for j in range(1, len(mats))]


def cka_from(x: GramStats, ref: GramStats, cross: torch.Tensor) -> np.ndarray:
    """(R,) CKA from the statistics of both matrices and their cross term; NaN where either
    matrix is constant over the samples (its HSIC estimate is <= 0)."""
    den = x.hsic * ref.hsic
    return torch.where(den > 0, cross / den.clamp_min(1e-300).sqrt(), torch.nan).cpu().numpy()


def cka(x: Any, references: Sequence[Any], counts: Any | None = None, *, device: Any = "cpu",
        block_elements: int = BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Linear CKA (unbiased HSIC) of the features ``x`` (n, p) with each of ``references`` ((n, q)
    each, the same samples in the same order), over all n samples and over every resample.

    ``counts``: (B, n) resample counts (row b: how often each sample is in resample b), e.g.
    ``Bootstrap.weights(n) * n``. Returns ``(estimates, resampled)``: (R,) and (R, B) for the R
    references (B = 0 without counts); NaN where a layer is constant over the samples.

    Over all samples this is Song et al.'s unbiased HSIC, a U-statistic: an average over 4-tuples
    of distinct samples. A resample that holds sample i c_i times gets the same statistic over its
    4-tuples of distinct samples, each weighted by how often the resample holds its samples
    (c_t c_u c_v c_s): the estimator on the resample, leaving out every tuple that would pair a
    sample with a copy of itself, as the unbiased estimator leaves out the diagonal. Counting such
    pairs (the unbiased formula on the resample's rows as they are) would bring back the bias the
    diagonal's removal removes: a resample has about n pairs of copies, as many as the diagonal has
    entries, and its CKA then carries the bias of the biased estimator (+0.5 to +0.7 for n = 100
    samples of 200 independent features; the intervals miss the estimate). With 0/1 counts it is
    the unbiased CKA of the samples held. Computed for the all-ones column and the B count columns
    at once, in row blocks of the Gram matrices (:func:`gram_pass`)."""
    dev = _device(device)
    mats = [torch.as_tensor(m).detach().to(dev, torch.float64).reshape(len(m), -1) for m in (x, *references)]
    n = len(mats[0])
    if any(len(m) != n for m in mats):
        raise ValueError(f"CKA needs the same samples in every feature matrix; got {[len(m) for m in mats]} rows.")
    if n < 4:
        raise ValueError(f"the unbiased CKA needs at least 4 samples; got {n}.")
    ct = _columns(n, counts, dev)
    sx, srefs, cross = gram_pass(mats[0], mats[1:], ct, block_elements=block_elements)
    res = np.stack([cka_from(sx, r, c) for r, c in zip(srefs, cross)]) if srefs else np.zeros((0, ct.shape[1]))
    return res[:, 0], res[:, 1:]


# ---------------------------------------------------------------------- the extension
@dataclass
class CKAOptions(Section):
    """The ``cka`` section of a run's configuration (``--cka/--no-cka``, ``--extension cka``)."""

    section: ClassVar[str] = "cka"
    enabled: bool = opt(False, "Linear CKA of each layer's test features with those at initialisation and at the "
                               "previous checkpoint: cka_init/cka_previous rows, cka.png.", flag="--cka/--no-cka")
    max_samples: int | None = opt(1000, "Test samples CKA uses (a seeded subset, the same at every checkpoint); cost "
                                        "and kept memory grow with it. All: --extension cka:max_samples=none.", min=4)


class LinearCKA(Extension):
    """Tracker extension: linear CKA of every tracked layer's test features with its features at
    the first measured checkpoint (``cka_init``) and at the previous one (``cka_previous``).

    Parameters
    ----------
    max_samples: test samples used (a subset seeded by ``seed``, the same at every checkpoint);
        None: all of them.
    layers: tracked layers to compare [all tracked layers].
    seed: seed of the subset [the tracker's seed]. The resamples are always the tracker's
        (its bootstrap count, confidence and seed).
    """

    name = "cka"
    options = CKAOptions
    files = (PNG,)
    figures = {PNG: ("cka", "Linear CKA (unbiased) of each layer's test features with the same layer's features at "
                            "initialisation and at the previous checkpoint, against iteration (log axis); bands: "
                            "bootstrap intervals over test samples; phases shaded, dotted: reconstruction minimum.")}
    report_title, report_anchor, report_order = "CKA", "cka", 40
    report_template = """\
{% from "macros.html.j2" import figure with context %}
{% if cka %}
<h2>How far the representation moves: linear CKA over training</h2>
<p>Linear CKA (unbiased HSIC, Kornblith et al. 2019) of each layer's features of {{ cka.samples }} test samples
  with the same layer's features at initialisation (iteration {{ cka.init_iteration }}) and at the previous
  checkpoint: 1 = the same representation up to rotation and scale, 0 = unrelated. Intervals: {{ cka.level }}
  bootstrap over test samples ({{ cka.bootstrap }} resamples).</p>
{% if cka.layers %}
<table id="cka-table">
  <thead><tr><th>layer</th><th class="num">with initialisation, at the end</th>
    <th class="num">at the reconstruction minimum</th><th class="num">largest move (lowest CKA with the previous)</th></tr></thead>
  <tbody>{% for r in cka.layers %}
    <tr><td><code>{{ r.layer }}</code></td><td class="num">{{ r.end }}</td><td class="num">{{ r.minimum }}</td>
      <td class="num">{{ r.move }}</td></tr>
  {% endfor %}</tbody>
</table>
{% endif %}
{{ figure('cka.png') }}
{% endif %}
"""

    def __init__(self, max_samples: int | None = 1000, *, layers: Sequence[str] | None = None,
                 seed: int | None = None):
        if max_samples is not None and (not isinstance(max_samples, (int, np.integer)) or max_samples < 4):
            raise ValueError(f"cka max_samples must be an integer >= 4 or None; got {max_samples!r}.")
        self.max_samples, self.seed = max_samples, seed
        self.layers = list(layers) if layers is not None else None
        self._reset()

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["LinearCKA"]:
        """On with ``--cka`` (``cka.enabled``) or ``--extension cka``; the seed is the run's."""
        cfg = setup.cfg
        o = getattr(cfg, "cka", None) or CKAOptions()
        if not o.enabled and cls.name not in (getattr(cfg, "extensions", None) or ()):
            return []
        return [cls(o.max_samples, seed=cfg.seed)]

    def _reset(self) -> None:
        self.rows_: np.ndarray | None = None  # the test rows used
        self.init_: dict[str, torch.Tensor] = {}  # layer -> (n, p) float32 features at the first checkpoint
        self.previous_: dict[str, torch.Tensor] = {}  # layer -> those at the last checkpoint measured
        self.init_iteration: int | None = None
        self.previous_iteration: int | None = None
        self.timings: dict[int, float] = {}
        # derived, not saved (recomputed after a resume): the references' GramStats and the count columns
        self._stats_init: dict[str, GramStats] = {}
        self._stats_previous: dict[str, GramStats] = {}
        self._ct: torch.Tensor | None = None
        self._settings: dict[str, Any] = {}
        self._dims: dict[str, int] = {}
        self._bootstrap: Bootstrap | None = None

    def setup(self, tracker: Any) -> None:
        self.layers_ = self.layers or list(tracker.layers)
        missing = [n for n in self.layers_ if n not in tracker.layers]
        if missing:
            raise ValueError(f"cka layers {missing} are not tracked; choose from: {', '.join(tracker.layers)}.")
        if self.seed is None:
            self.seed = int(tracker.seed)
        self._bootstrap = Bootstrap(tracker.bootstrap, tracker.confidence, tracker.seed)
        self._settings = {"bootstrap": int(tracker.bootstrap), "confidence": float(tracker.confidence),
                          "bootstrap_seed": int(tracker.seed)}
        maps = getattr(tracker, "feature_maps", {}) or {}
        self._dims = {n: int(maps[n].features) for n in self.layers_ if n in maps}
        self._n_test = int(len(tracker.test_x))

    def _n(self) -> int | None:
        n = len(self.rows_) if self.rows_ is not None else getattr(self, "_n_test", None)
        return None if n is None else min(n, self.max_samples or n)

    def describe(self) -> dict:
        """Settings, as recorded in config.json and phases.json (``cka.settings``): with the bytes of
        the kept reference features per layer (initial and previous, float32)."""
        n = self._n()
        kept = {layer: 2 * n * p * 4 for layer, p in self._dims.items()} if n else {}
        columns = 1 + self._settings.get("bootstrap", 0)
        cached = 4 * n * columns * 8 if n else None  # k and k2 of two references (GramStats)
        return {"estimator": "linear CKA, unbiased HSIC (Song et al. 2012)", "samples": n,
                "max_samples": self.max_samples, "seed": self.seed,
                "resampling": "phasescope.engine.stats.Bootstrap with the tracker's bootstrap, confidence and seed; "
                              "test samples resampled jointly for both feature matrices; a resample's value is the "
                              "U-statistic over its tuples of distinct samples",
                **self._settings, "reference_bytes": kept, "reference_bytes_total": int(sum(kept.values())),
                "cached_bytes_per_layer": cached}

    # ------------------------------------------------------------------ measurement
    def measure(self, ctx) -> list[dict]:
        t0 = time.perf_counter()
        layers = getattr(self, "layers_", None) or list(ctx.layers)
        if self.rows_ is None:
            self.rows_ = subsample(len(ctx.test_y), self.max_samples, self.seed or 0)
        rows_t = torch.as_tensor(self.rows_)
        it, n = int(ctx.iteration), len(self.rows_)
        boot = self._bootstrap or Bootstrap(ctx.tracker.bootstrap, ctx.tracker.confidence, ctx.tracker.seed)
        dev = _device(ctx.device)
        if self._ct is None or self._ct.device != dev:
            self._ct = _columns(n, boot.weights(n) * n, dev)  # all samples, then the tracker's resamples
        first = self.init_iteration is None
        with_previous = not first and self.previous_iteration is not None and self.previous_iteration != it
        out: list[dict] = []
        for layer in layers:
            x = ctx.test_features[layer][rows_t].float().cpu()
            xd = x.to(dev, torch.float64)
            if first:
                sx = gram_pass(xd, [], self._ct)[0]
                values = {"cka_init": cka_from(sx, sx, sx.hsic)}
                self._stats_init[layer] = sx
            else:
                refs = [self.init_[layer]] + ([self.previous_[layer]] if with_previous else [])
                known = [self._stats_init.get(layer)] + ([self._stats_previous.get(layer)] if with_previous else [])
                sx, srefs, cross = gram_pass(xd, [r.to(dev, torch.float64) for r in refs], self._ct, known)
                self._stats_init[layer] = srefs[0]
                values = {m: cka_from(sx, r, c) for m, r, c in zip(METRICS, srefs, cross)}
            for metric, v in values.items():
                lo, hi = boot.interval(v[1:]) if np.isfinite(v[1:]).all() and len(v) > 1 else (math.nan, math.nan)
                out.append({"iteration": it, "layer": layer, "split": "test", "metric": metric,
                            "value": float(v[0]), "ci_low": float(lo), "ci_high": float(hi)})
            if first:
                self.init_[layer] = x  # a copy of the test features' rows, never changed
            self.previous_[layer] = x
            self._stats_previous[layer] = sx
        if first:
            self.init_iteration = it
        self.previous_iteration = it
        self.timings[it] = time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------ results
    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        """Hook of write_outputs: the ``cka`` key of phases.json."""
        section = summarise_cka(df, payload)
        if section is None:
            return {}
        section["settings"] = self.describe()
        sec = list(self.timings.values())
        section["seconds_per_checkpoint"] = float(np.mean(sec)) if sec else None
        return {"cka": section}

    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        """cka.png when ``figure`` (the rows are in metrics.csv, the summary in phases.json)."""
        if not figure or df is None or not len(df) or not df.metric.isin(METRICS).any():
            return []
        return [plot_cka(df, payload, Path(out) / PNG)]

    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        """The ``cka`` key of phases.json (settings and timing kept) and cka.png, from metrics.csv."""
        section = summarise_cka(df, payload)
        if section is None:
            return {}
        old = payload.get("cka") if isinstance(payload.get("cka"), dict) else {}
        section.update({k: old[k] for k in ("settings", "seconds_per_checkpoint") if k in old})
        plot_cka(df, payload, Path(run_dir) / PNG)
        return {"cka": section}

    @classmethod
    def summary_lines(cls, payload: dict) -> list[str]:
        c = payload.get("cka")
        if not isinstance(c, dict) or not c.get("layers"):
            return []
        ends = [f"{layer} {_fmt(e.get('end', {}).get('cka_init'))}" for layer, e in c["layers"].items()]
        last = next(iter(c["layers"].values())).get("end", {}).get("iteration")
        lines = [f"linear CKA with initialisation at iteration {last}: " + ", ".join(ends)]
        moves = [(layer, e["largest_move"]) for layer, e in c["layers"].items() if e.get("largest_move")]
        if moves:
            lines.append("largest move between checkpoints (lowest CKA with the previous): " + ", ".join(
                f"{layer} {_fmt(m['cka_previous'])} at {m['iteration']}" for layer, m in moves))
        return lines

    @classmethod
    def report_context(cls, payload: dict) -> dict:
        c = payload.get("cka")
        if not isinstance(c, dict) or not c.get("layers"):
            return {"cka": None}
        settings = c.get("settings") or {}
        rows = []
        for layer, e in c["layers"].items():
            end, m, mv = e.get("end") or {}, e.get("at_reconstruction_minimum") or {}, e.get("largest_move") or {}
            rows.append({"layer": layer,
                         "end": f"{_fmt(end.get('cka_init'))} {_interval(end)} @ {end.get('iteration')}" if end else "–",
                         "minimum": f"{_fmt(m.get('cka_init'))} @ {m.get('iteration')}" if m else "–",
                         "move": f"{_fmt(mv.get('cka_previous'))} @ {mv.get('iteration')} (since {mv.get('since')})"
                         if mv else "–"})
        level = settings.get("confidence")
        return {"cka": {"layers": rows, "samples": settings.get("samples", "the"),
                        "init_iteration": c.get("init_iteration"), "bootstrap": settings.get("bootstrap", "the"),
                        "level": f"{100 * level:g}%" if isinstance(level, (int, float)) else "percentile"}}

    @classmethod
    def report_timings(cls, payload: dict) -> list[tuple[str, str]]:
        s = (payload.get("cka") or {}).get("seconds_per_checkpoint") if isinstance(payload.get("cka"), dict) else None
        return [("linear CKA", f"{s:.3f} s per checkpoint")] if isinstance(s, (int, float)) else []

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """The reference features (float32 tensors), the rows used and the timings."""
        return {"rows": None if self.rows_ is None else torch.as_tensor(self.rows_),
                "init": dict(self.init_), "previous": dict(self.previous_),
                "init_iteration": self.init_iteration, "previous_iteration": self.previous_iteration,
                "timings": dict(self.timings)}

    def load_state_dict(self, state: dict) -> None:
        self._stats_init, self._stats_previous, self._ct = {}, {}, None  # recomputed from the features
        rows = state.get("rows")
        self.rows_ = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.init_ = {k: torch.as_tensor(v) for k, v in (state.get("init") or {}).items()}
        self.previous_ = {k: torch.as_tensor(v) for k, v in (state.get("previous") or {}).items()}
        self.init_iteration = state.get("init_iteration")
        self.previous_iteration = state.get("previous_iteration")
        self.timings = {int(k): float(v) for k, v in (state.get("timings") or {}).items()}


# ---------------------------------------------------------------------- summaries (from the tidy rows)
def _fmt(v: Any) -> str:
    return "–" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.3f}"


def _interval(d: dict) -> str:
    ci = d.get("ci") or [None, None]
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if all(isinstance(v, (int, float)) for v in ci) else ""


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def summarise_cka(df: pd.DataFrame | None, payload: dict | None) -> dict | None:
    """The ``cka`` section of phases.json (without settings) from metrics.csv's rows: per layer the
    last ``cka_init`` with its interval (``end``), ``cka_init`` at the reconstruction minimum and
    the lowest ``cka_previous`` (``largest_move``, with the checkpoint before it). None: no rows."""
    if df is None or not len(df) or not df.metric.isin(METRICS).any():
        return None
    rows = df[df.metric.isin(METRICS) & (df.split == "test")]
    minima = {layer: p.get("min_iteration") for layer, p in ((payload or {}).get("layers") or {}).items()
              if isinstance(p, dict)}
    layers: dict[str, Any] = {}
    for layer in dict.fromkeys(rows.layer):
        init = rows[(rows.layer == layer) & (rows.metric == "cka_init")].sort_values("iteration")
        prev = rows[(rows.layer == layer) & (rows.metric == "cka_previous")].sort_values("iteration")
        e: dict[str, Any] = {}
        if len(init):
            last = init.iloc[-1]
            e["end"] = {"iteration": int(last.iteration), "cka_init": _num(last.value),
                        "ci": [_num(last.ci_low), _num(last.ci_high)]}
            m = minima.get(layer)
            at = init[init.iteration == m] if m is not None else init.iloc[:0]
            if len(at):
                e["at_reconstruction_minimum"] = {"iteration": int(m), "cka_init": _num(at.value.iloc[0])}
        ok = prev[np.isfinite(prev.value.astype(float))]
        if len(ok):
            low = ok.loc[ok.value.astype(float).idxmin()]
            its = sorted(int(i) for i in rows[rows.layer == layer].iteration.unique())
            k = its.index(int(low.iteration))
            e["largest_move"] = {"iteration": int(low.iteration), "since": its[k - 1] if k else None,
                                 "cka_previous": _num(low.value), "ci": [_num(low.ci_low), _num(low.ci_high)]}
        layers[layer] = e
    first = rows[rows.metric == "cka_init"].iteration
    return {"metrics": list(METRICS), "init_iteration": int(first.min()) if len(first) else None, "layers": layers}


# ---------------------------------------------------------------------- the figure
def plot_cka(df: pd.DataFrame, payload: dict | None, path: Path, title: str | None = None) -> Path:
    """cka.png: one panel per layer, ``cka_init`` and ``cka_previous`` against iteration (log axis)
    with their bootstrap intervals as bands, the phases shaded and the reconstruction minimum dotted."""
    payload = payload or {}
    rows = df[df.metric.isin(METRICS) & (df.split == "test")]
    layers = list(dict.fromkeys(rows.layer))
    ncol = min(3, max(1, len(layers)))
    nrow = max(1, math.ceil(len(layers) / ncol))
    fig = new_figure((max(7.0, 4.2 * ncol + 0.4), 3.2 * nrow + 0.9))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for k, ax in enumerate(a for row in axes for a in row):
        if k >= len(layers):
            ax.set_axis_off()
            continue
        layer = layers[k]
        info = ((payload.get("layers") or {}).get(layer) or {})
        shade_phases(ax, info.get("phases") or [])
        for metric in METRICS:
            s = _series(rows, layer, "test", metric)
            colour, label = STYLE[metric]
            ax.plot(s.iteration, s.value, "o-", color=colour, ms=3, lw=1.4, label=label)
            if len(s) and s.ci_low.notna().any():
                ax.fill_between(s.iteration, s.ci_low, s.ci_high, color=colour, alpha=0.2, lw=0)
        if info.get("min_iteration") is not None:
            ax.axvline(info["min_iteration"], color="#555555", ls=":", lw=1.2)
        _setup_axis(ax)
        ax.set_ylim(min(0.0, float(np.nanmin(rows[rows.layer == layer].ci_low.fillna(0)))) - 0.02, 1.04)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("linear CKA")
    if layers:
        from matplotlib.patches import Patch  # lazy: matplotlib is heavy and only the figure needs it

        handles, labels = axes[0][0].get_legend_handles_labels()
        names = {p.get("name") for info in (payload.get("layers") or {}).values() if isinstance(info, dict)
                 for p in info.get("phases") or [] if isinstance(p, dict)}
        handles += [Patch(color=PHASE_COLOURS[n], alpha=0.25, label=n) for n in PHASE_COLOURS if n in names]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(5 if ncol > 1 else 3, len(handles)), fontsize=8,
                   frameon=False)
    else:
        axes[0][0].text(0.5, 0.5, "no CKA rows", ha="center", va="center", transform=axes[0][0].transAxes)
    settings = (payload.get("cka") or {}).get("settings") or {}
    note = [f"{settings['samples']} test samples" if settings.get("samples") else "",
            f"bands: {100 * settings['confidence']:g}% bootstrap intervals" if settings.get("confidence") else "bands: "
            "bootstrap intervals", "dotted: reconstruction minimum"]
    fig.suptitle((title or "How far each layer's representation moves: linear CKA") + "\n"
                 + "; ".join(filter(None, note)), fontsize=9)
    save_figure(fig, path, dpi=130)
    return Path(path)
