"""Per-sample dynamics: who are "the few" the network fits last?

    ext = SampleDynamics()
    tracker = PhaseTracker(model, layers, fit_data, test_data, extensions=[ext])
    ...train, calling tracker.maybe_measure(model, t)...
    ext.samples()    # one row per training sample: learned_at, forgotten, final loss/margin, typicality
    ext.summary()    # gradient concentration, when it crosses one half, typicality correlations

At every checkpoint, over the tracker's fit subset of the training set (or ``data`` of
your own), :class:`SampleDynamics` records each sample's loss, correctness, margin and
the norm of its gradient w.r.t. the final ``nn.Linear`` (weights and bias). The norm is
closed form for softmax cross-entropy: with probabilities p, one-hot label e and the
final layer's input a, grad_W = (p - e) a^T and grad_b = p - e, so

    ||grad||^2 = ||p - e||^2 (||a||^2 + 1)        (without a bias: ||p - e||^2 ||a||^2)

No per-sample backward pass is run: the tracker captures ``a`` in the forward pass it
already makes over the fit set (``needs_head_input``).

Per checkpoint it adds to metrics.csv (layer ``model``, split ``train``):

* ``grad_share_top1`` / ``grad_share_top10``: share of the sum of per-sample gradient
  norms carried by the 1% / 10% of samples with the largest norms (0.01 / 0.1 when all
  samples pull equally; 1 when one sample carries everything);
* ``grad_effective_fraction``: inverse participation ratio (sum g)^2 / (n sum g^2), the
  effective number of samples driving the gradient as a fraction of n (1 = all equal);
* ``misclassified_fraction``.

Pure functions (``last_layer_grad_norm``, ``learned_at``, ``forgetting_counts``,
``gradient_concentration``, ``class_distance``, ``typicality_correlation``) carry the
science and are tested on their own; the extension only records and assembles.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .config import ConfigError

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
    from scipy.stats import spearmanr

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
DEFAULTS = {"enabled": True, "max_samples": None, "seed": 0}


def samples_options(extra: dict | None) -> dict[str, Any]:
    """Resolved options of the per-sample dynamics from ``RunConfig.extra["samples"]``."""
    given = dict((extra or {}).get("samples") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"Unknown samples option(s) {unknown}; valid: {', '.join(DEFAULTS)}.")
    opts = {**DEFAULTS, **given}
    m = opts["max_samples"]
    if m is not None and (not isinstance(m, int) or m <= 0):
        raise ConfigError(f"samples max_samples must be a positive integer or None (all fit samples); got {m!r}.")
    return opts


# ---------------------------------------------------------------------- the extension
class SampleDynamics:
    """Tracker extension recording per-sample dynamics on the training set.

    Parameters
    ----------
    data: (x, y) of your own to follow instead of the tracker's fit subset; it costs one
        extra forward pass per checkpoint (the fit subset reuses the tracker's pass).
    index: training-set index of each followed sample, written to ``samples()``
        (default 0..n-1, rows of the followed set).
    max_samples: follow a seeded random subset of this many samples (recorded).
    layer: tracked layer whose feature space measures typicality (default: the last).
    seed: seed of that subset.
    images, mean, std, classes: for the gallery few.png drawn by :meth:`write`: the
        normalised images ``index`` points into (N, C, H, W), the per-channel mean/std
        they were normalised with, and the class names.
    """

    name = "samples"
    needs_head_input = True

    def __init__(self, data: Any = None, *, index: Sequence[int] | None = None, max_samples: int | None = None,
                 layer: str | None = None, seed: int = 0, images: torch.Tensor | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 classes: Sequence[str] | None = None):
        if max_samples is not None and max_samples <= 0:
            raise ValueError(f"max_samples must be positive or None (all samples); got {max_samples}.")
        self.data, self.index, self.max_samples, self.layer, self.seed = data, index, max_samples, layer, seed
        self.images, self.mean, self.std, self.classes = images, mean, std, classes
        self._reset()

    def _reset(self) -> None:
        self.iterations: list[int] = []
        self.history: dict[str, list[np.ndarray]] = {k: [] for k in HISTORY}
        self.rows_: np.ndarray | None = None  # rows of the followed set that are kept
        self.labels_: np.ndarray | None = None
        self.input_typicality_: tuple | None = None
        self.layer_typicality_: tuple | None = None
        self.layer_: str | None = None
        self.timings: dict[int, float] = {}
        self.bias_: bool = True

    # ------------------------------------------------------------------ measurement
    def _forward(self, ctx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """x, y, logits, head input and tracked-layer features of the followed samples."""
        from .measure.capture import capture_inputs, final_linear_name
        from .tracker import _as_tensors

        if self.data is None and ctx.fit_head_inputs is not None:
            return ctx.fit_x, ctx.fit_y, ctx.fit_logits, ctx.fit_head_inputs, ctx.fit_features or {}
        # Own forward: followed data of the user's, or a tracker that did not capture the head.
        x, y = (ctx.fit_x, ctx.fit_y) if self.data is None else _as_tensors(self.data, "data")
        head = ctx.head or final_linear_name(ctx.model)
        if head is None:
            raise ValueError("SampleDynamics needs a final nn.Linear producing the logits; the model has none.")
        with capture_inputs(ctx.model, [head]) as store:
            logits, feats = ctx.features(x)
        return x, y, logits, torch.cat([a.float().cpu() for a in store[head]]), feats

    def measure(self, ctx) -> list[dict]:
        t0 = time.perf_counter()
        x, y, logits, a, feats = self._forward(ctx)
        logits, y, a = logits.float().cpu(), y.cpu(), a.float().cpu()
        if self.rows_ is None:
            self._setup(ctx, x, y)
        rows = torch.as_tensor(self.rows_)
        self._check_head(ctx, logits, a)
        logits, y, a = logits[rows], y[rows], a[rows]
        g = last_layer_grad_norm(logits, y, a, bias=self.bias_).numpy()
        record = {
            "correct": (logits.argmax(1) == y).numpy(),
            "loss": F.cross_entropy(logits, y, reduction="none").numpy().astype(np.float32),
            "margin": logit_margin(logits, y).numpy().astype(np.float32),
            "grad_norm": g.astype(np.float32),
        }
        if ctx.iteration in self.iterations:  # measured again: replace
            k = self.iterations.index(ctx.iteration)
            for key in HISTORY:
                self.history[key][k] = record[key]
        else:
            k = int(np.searchsorted(self.iterations, ctx.iteration))
            self.iterations.insert(k, int(ctx.iteration))
            for key in HISTORY:
                self.history[key].insert(k, record[key])
        if self.layer_ in feats and ctx.iteration == self.iterations[-1]:  # typicality "at the end" so far
            self.layer_typicality_ = class_distance(feats[self.layer_].cpu().numpy()[self.rows_], self.labels_)
        values = {**gradient_concentration(g), "misclassified_fraction": float(1 - record["correct"].mean())}
        self.timings[int(ctx.iteration)] = time.perf_counter() - t0
        return [{"iteration": ctx.iteration, "layer": "model", "split": "train", "metric": m, "value": values[m],
                 "ci_low": float("nan"), "ci_high": float("nan")} for m in METRICS]

    def _setup(self, ctx, x: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        if self.max_samples is not None and self.max_samples < n:
            rng = np.random.default_rng(self.seed)
            self.rows_ = np.sort(rng.choice(n, self.max_samples, replace=False))
        else:
            self.rows_ = np.arange(n)
        if self.index is not None and len(self.index) != n:
            raise ValueError(f"index has {len(self.index)} entries but the followed set has {n} samples.")
        self.labels_ = y.numpy()[self.rows_]
        self.layer_ = self.layer or ctx.layers[-1]
        if self.layer_ not in ctx.layers:
            raise ValueError(f"layer={self.layer_!r} is not tracked; choose one of: {', '.join(ctx.layers)}.")
        self.input_typicality_ = class_distance(x.reshape(n, -1).cpu().numpy()[self.rows_], self.labels_)

    def _check_head(self, ctx, logits: torch.Tensor, a: torch.Tensor) -> None:
        """The captured input must be what the logits are computed from: logits = a W^T + b."""
        from .measure.capture import final_linear_name

        lin = ctx.model.get_submodule(ctx.head or final_linear_name(ctx.model))
        self.bias_ = lin.bias is not None
        k = min(8, len(a))
        pred = F.linear(a[:k].to(lin.weight.device, lin.weight.dtype), lin.weight, lin.bias).float().cpu()
        if a.shape[1] != lin.in_features or not torch.allclose(pred, logits[:k], rtol=1e-3, atol=1e-3 * (1 + logits[:k].abs().max())):
            raise ValueError("The last nn.Linear of the model does not compute the logits from its input, so "
                             "the closed-form last-layer gradient does not apply; make the final Linear the "
                             "model's last module (phasescope's models do).")

    # ------------------------------------------------------------------ results
    def matrix(self, key: str) -> np.ndarray:
        """(K, n) history of ``key`` (one of correct, loss, margin, grad_norm) in checkpoint order."""
        if key not in HISTORY:
            raise KeyError(f"{key!r}; choose one of: {', '.join(HISTORY)}.")
        v = self.history[key]
        return np.stack(v) if v else np.zeros((0, 0 if self.rows_ is None else len(self.rows_)))

    def samples(self) -> pd.DataFrame:
        """One row per followed sample (see the module docstring for the columns)."""
        if not self.iterations:
            return pd.DataFrame()
        correct = self.matrix("correct")
        idx = np.asarray(self.index)[self.rows_] if self.index is not None else self.rows_
        df = pd.DataFrame({
            "index": idx.astype(np.int64),
            "label": self.labels_.astype(np.int64),
            # nullable integer: missing (not a magic number) when never learned
            "learned_at": pd.array(learned_at(correct, self.iterations), dtype="Int64"),
            "forgotten": forgetting_counts(correct),
            "final_correct": correct[-1],
            "final_loss": self.history["loss"][-1],
            "final_margin": self.history["margin"][-1],
            "final_grad_norm": self.history["grad_norm"][-1],
            "mean_loss": self.matrix("loss").mean(0),
        })
        for space, typ in (("input", self.input_typicality_), ("layer", self.layer_typicality_)):
            d, z, r = typ if typ is not None else (np.full(len(df), np.nan),) * 3
            df[f"{space}_distance"], df[f"{space}_distance_z"], df[f"{space}_distance_rank"] = d, z, r
        return df

    def curves(self) -> pd.DataFrame:
        """Per checkpoint: the concentration metrics (wide)."""
        g, c = self.matrix("grad_norm"), self.matrix("correct")
        return pd.DataFrame([{"iteration": it, **gradient_concentration(g[k]), "misclassified_fraction": 1 - c[k].mean()}
                             for k, it in enumerate(self.iterations)])

    def summary(self, reconstruction_minimum: dict[str, int] | None = None) -> dict[str, Any]:
        """Concentration, the checkpoint where the top-10% share crosses one half, and how
        learning order relates to typicality; compared with ``reconstruction_minimum``
        ({layer: iteration}, e.g. from ``tracker.phases()``) when given."""
        return summarise_samples(self.samples(), self.curves(), reconstruction_minimum or {},
                                 layer=self.layer_, seconds=self.timings,
                                 followed={"n": 0 if self.rows_ is None else int(len(self.rows_)),
                                           "max_samples": self.max_samples, "seed": self.seed,
                                           "source": "fit subset" if self.data is None else "data"})

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        """Hook of :func:`phasescope.experiment.write_outputs`: the ``samples`` key of phases.json."""
        minima = {n: p["min_iteration"] for n, p in payload.get("layers", {}).items()}
        return {"samples": self.summary(minima)}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"iterations": list(self.iterations), "history": {k: list(v) for k, v in self.history.items()},
                "rows": self.rows_, "labels": self.labels_, "input_typicality": self.input_typicality_,
                "layer_typicality": self.layer_typicality_, "layer": self.layer_, "timings": dict(self.timings),
                "bias": self.bias_}

    def load_state_dict(self, state: dict) -> None:
        self._reset()
        self.iterations = [int(i) for i in state["iterations"]]
        self.history = {k: [np.asarray(a) for a in state["history"][k]] for k in HISTORY}
        self.rows_, self.labels_ = state["rows"], state["labels"]
        self.input_typicality_, self.layer_typicality_ = state["input_typicality"], state["layer_typicality"]
        self.layer_, self.timings, self.bias_ = state["layer"], dict(state["timings"]), state["bias"]

    # ------------------------------------------------------------------ files
    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        """Hook of :func:`phasescope.experiment.write_outputs`: samples.parquet (or .csv
        without pyarrow) and samples.npz (raw per-checkpoint arrays); with ``figure`` also
        samples.png and, for image data given as ``images``, few.png."""
        from .runs import atomic_write, write_bytes_to
        from .samples_report import plot_few, plot_samples

        out = Path(out)
        table = self.samples()
        if table.empty:
            return []
        written = [write_samples_table(out, table)]
        arrays = {"iterations": np.asarray(self.iterations), "index": table["index"].to_numpy(),
                  "label": self.labels_, **{k: self.matrix(k) for k in HISTORY}}
        atomic_write(out / "samples.npz", write_bytes_to(lambda f: np.savez_compressed(f, **arrays)))
        written.append(out / "samples.npz")
        if figure:
            written.append(plot_samples(df, payload, out / "samples.png"))
            if self.images is not None and self.images.ndim == 4:
                written.append(plot_few(table, self.images, self.mean, self.std, out / "few.png", classes=self.classes))
        return written


def write_samples_table(out: Path, table: pd.DataFrame) -> Path:
    """samples.parquet when pyarrow is installed, else samples.csv (missing learned_at is empty)."""
    from .runs import atomic_write

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        atomic_write(out / "samples.csv", lambda p: table.to_csv(p, index=False, float_format="%.6g"))
        return out / "samples.csv"
    atomic_write(out / "samples.parquet", lambda p: table.to_parquet(p, index=False))
    return out / "samples.parquet"


def read_samples_table(run_dir: Path) -> pd.DataFrame:
    from .runs import RunFileError

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


def summarise_samples(table: pd.DataFrame, curves: pd.DataFrame, reconstruction_minimum: dict[str, int], *,
                      layer: str | None = None, seconds: dict[int, float] | None = None,
                      followed: dict | None = None) -> dict[str, Any]:
    """The ``samples`` document of phases.json, from the per-sample table and the curves."""
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
    }


def sample_extensions(cfg, data, given: Sequence = ()) -> list[SampleDynamics]:
    """The per-sample dynamics of a run (``run_experiment``), unless disabled in
    ``cfg.extra["samples"]`` or already among the ``given`` extensions. Records the
    resolved options in ``cfg.extra["samples"]`` (saved in config.json). Follows the
    tracker's fit subset, so it reuses the tracker's forward pass."""
    from .data.base import stratified_subset

    opts = samples_options(cfg.extra)
    cfg.extra["samples"] = opts
    if not opts["enabled"] or any(getattr(e, "name", None) == SampleDynamics.name for e in given):
        return []
    fit = stratified_subset(data.y_train.numpy(), cfg.fit_samples, seed=cfg.seed)  # as experiment.measurement_sets
    return [SampleDynamics(index=fit, max_samples=opts["max_samples"], seed=opts["seed"], images=data.x_train,
                           mean=data.mean, std=data.std, classes=data.classes)]


def curves_from_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """The per-checkpoint concentration metrics (wide) from a tidy metrics table."""
    s = df[(df.layer == "model") & (df.split == "train") & df.metric.isin(METRICS)]
    return s.pivot_table(index="iteration", columns="metric", values="value").reset_index()
