"""The single-layer model of the theory, trained by gradient descent and measured exactly.

The model is one all-to-all linear map to K class scores, ``z = W x + b`` (W: (K, d)),
with softmax cross-entropy, trained by full-batch (``batch_size=None``) or mini-batch
gradient descent from small random weights (entries N(0, init_scale^2 / d), b = 0) on
inputs normalised with the training split's global mean and std. At the log-spaced
checkpoints of :func:`phasescope.log_schedule` it records, with no fitting noise:

* the **exact** optimal affine reconstruction of the input from the layer's outputs
  (:class:`LinearReconstruction`, a least-squares projection fitted on the training split),
  per sample on train and test, for two readings of "outputs": the logits (layer
  ``logits``) and the softmax probabilities (layer ``softmax``);
* loss and accuracy of all, typical and atypical samples (layer ``model``);
* the share of the training gradient that comes from atypical samples
  (:func:`gradient_shares`);
* the angle between each class's weight vector and its prototype.

Everything is numpy in float64 (``Training.precision="mixed"`` runs the two matrix products
of a training step in float32). Training is the fused loop of :func:`_descend`: two skinny
matrix products and one softmax per step, nothing else between checkpoints.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..errors import NotFittedError
from ..engine.phases import PhaseResult, PhaseSettings, detect_phases
from ..engine.schedule import log_schedule
from ..engine.stats import Bootstrap
from ..data.datamodel import DataModel, normalise
from ..engine.measure.ridge import StreamingRidge, _check_ridge

METRIC_COLUMNS = ["iteration", "layer", "split", "metric", "value", "ci_low", "ci_high"]
OUTPUT_LAYERS = ("logits", "softmax")
PRECISIONS = ("float64", "mixed")
RCOND = 1e-12  # ridge 0: eigenvalues of the centred Gram matrix below this x the largest are dropped


# ----------------------------------------------------------------------------- reconstruction
class LinearReconstruction:
    """The affine decoder ``x ~ z B + c`` from outputs Z (n, K) to inputs X (n, d), solved by
    the same ridge code as the tracker's decoder (:class:`phasescope.engine.measure.ridge.StreamingRidge`,
    here with its products in float64), so theory and experiment measure the same thing.

    ``ridge`` is relative, as in ``phasescope run --ridge``: lambda = ridge x the mean eigenvalue
    of the centred Gram matrix Zc^T Zc. The default 0 is exact least squares with an intercept
    (the orthogonal projection of the centred inputs onto the span of the centred outputs): with
    the eigendecomposition Zc^T Zc = V diag(s) V^T, B = V diag(1/s) V^T Zc^T Xc over the
    eigen-directions with s > ``rcond`` x max(s); the others are dropped (minimum-norm
    solution). They are directions the outputs do not resolve: the centred softmax
    probabilities sum to zero, so they have rank at most K-1, and a Gram matrix in float64 holds
    eigenvalues only to about 1e-16 x the largest. The default ``rcond`` 1e-12 on eigenvalues
    is 1e-6 on singular values of Zc: the threshold is relative, so the fit is invariant to any
    invertible affine map of the outputs, rescaling included. ``ridge="auto"`` chooses the
    ridge by generalised cross-validation, as the tracker's ``auto`` does. No iteration.
    """

    def __init__(self, ridge: float | str = 0.0, rcond: float | None = None):
        self.ridge, self.rcond = ridge, rcond

    def fit(self, Z: np.ndarray, X: np.ndarray) -> "LinearReconstruction":
        Z = np.asarray(Z, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        if Z.ndim != 2 or X.ndim != 2 or len(Z) != len(X):
            raise ValueError(f"Z and X must be (n, K) and (n, d) with the same n; got {Z.shape} and {X.shape}.")
        solver = StreamingRidge(self.ridge, dtype=torch.float64, rcond=self.rcond if self.rcond is not None else RCOND)
        solver.partial_fit(torch.from_numpy(Z), {"x": torch.from_numpy(X)}).solve()
        sol = solver.solution("x", self.ridge)
        self.coef_ = sol.coef.numpy()  # (K, d)
        self.intercept_ = sol.intercept.numpy()
        self.rank_, self.lam_, self.dof_, self.train_mse_ = sol.rank, sol.lam, sol.dof, sol.train_mse
        return self

    def predict(self, Z: np.ndarray) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise NotFittedError("Call fit(Z, X) before predict().")
        return np.asarray(Z, dtype=np.float64) @ self.coef_ + self.intercept_

    def per_sample_error(self, Z: np.ndarray, X: np.ndarray) -> np.ndarray:
        """(n,) squared reconstruction error per sample, averaged over the d coordinates."""
        return ((np.asarray(X, dtype=np.float64) - self.predict(Z)) ** 2).mean(1)


# ----------------------------------------------------------------------------- gradients
def softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(1, keepdims=True))
    return E / E.sum(1, keepdims=True)


def cross_entropy(Z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) per-sample softmax cross-entropy of logits Z (n, K)."""
    m = Z.max(1)
    lse = m + np.log(np.exp(Z - m[:, None]).sum(1))
    return lse - Z[np.arange(len(y)), y]


def gradient_shares(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, atypical: np.ndarray) -> dict[str, float]:
    """How much of the gradient of the mean training loss comes from the atypical samples.

    The per-sample gradient of the cross-entropy with respect to (W, b) is the outer
    product ``g_i = r_i [x_i, 1]^T`` with ``r_i = softmax(z_i) - e_{y_i}``. With
    ``G_A = (1/n) sum_{i atypical} g_i`` and ``G_T`` likewise for the typical samples
    (``G_A + G_T`` is the full-batch gradient):

    * ``gradient_share_atypical`` = ||G_A|| / (||G_A|| + ||G_T||): the atypical part of
      the update, in norm (1/2 when both groups push equally hard);
    * ``gradient_share_atypical_per_sample`` = sum_A ||g_i|| / sum_all ||g_i||: the share
      of the per-sample gradient norms (ignores cancellation within a group);
    * ``gradient_norm`` = ||G_A + G_T||. Norms are Frobenius norms over W and b together.
    """
    n = len(y)
    R = softmax(X @ W.T + b)
    R[np.arange(n), y] -= 1.0  # (n, K) residuals r_i
    Xa = np.hstack([X, np.ones((n, 1))])
    atypical = np.asarray(atypical, dtype=bool)
    G_A = R[atypical].T @ Xa[atypical] / n
    G_T = R[~atypical].T @ Xa[~atypical] / n
    a, t = np.linalg.norm(G_A), np.linalg.norm(G_T)
    per = np.linalg.norm(R, axis=1) * np.linalg.norm(Xa, axis=1)  # ||r_i x_i^T|| = ||r_i|| ||x_i||
    return {
        "gradient_share_atypical": float(a / (a + t)) if a + t > 0 else float("nan"),
        "gradient_share_atypical_per_sample": float(per[atypical].sum() / per.sum()) if per.sum() > 0 else float("nan"),
        "gradient_norm": float(np.linalg.norm(G_A + G_T)),
    }


def angle_deg(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise angle in degrees between u (m, d) and v (m, d)."""
    cos = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


# ----------------------------------------------------------------------------- training
@dataclass
class Training:
    iterations: int = 65536            # gradient steps
    lr: float = 0.05                   # step size
    batch_size: int | None = None      # None: full batch (plain gradient descent)
    init_scale: float = 0.5            # initial weights N(0, init_scale^2 / d); biases start at 0
    points_per_octave: int = 1         # checkpoints: 0, 1, 2, 4, ... (see log_schedule)
    precision: str = "float64"         # float64 | mixed (float32 matrix products, float64 weights; ~2x faster)
    decoder_ridge: float | str = 0.0   # relative ridge of the reconstruction decoder: 0 exact, "auto" GCV

    def validate(self) -> "Training":
        if not isinstance(self.iterations, (int, np.integer)) or self.iterations < 1:
            raise ValueError(f"iterations must be a positive integer; got {self.iterations!r}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive; got {self.lr}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive or None (full batch); got {self.batch_size}.")
        if self.init_scale < 0:
            raise ValueError(f"init_scale must be >= 0; got {self.init_scale}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not valid; choose one of: {', '.join(PRECISIONS)}.")

        _check_ridge(self.decoder_ridge)
        if self.points_per_octave < 1:
            raise ValueError(f"points_per_octave must be >= 1; got {self.points_per_octave}.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _descend(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, training: Training, schedule: list[int],
             seed: int, on_checkpoint: Callable[[int, np.ndarray, np.ndarray], None]) -> None:
    """Gradient descent on the mean cross-entropy, calling ``on_checkpoint(t, W, b)`` at the
    scheduled iterations (before step t+1).

    Speed: the bias is a weight on a constant input, so a step is two skinny matrix
    products and a softmax, written into preallocated buffers. The softmax needs no
    max-subtraction: every gradient step sums to zero over the K classes, so the mean logit
    of a sample stays at its initial value (near 0), the largest logit is at least that,
    and exp cannot underflow to all zeros; overflow (logits above ~700) only comes with
    divergence, which the finiteness check at every checkpoint reports.
    With ``precision="mixed"`` the two products run in float32 (about twice as fast) while
    the residuals softmax - onehot and the weights stay in float64.
    """
    n, d = X.shape
    K = W.shape[0]
    Xa = np.hstack([X, np.ones((n, 1))])  # (n, d+1)
    Wa = np.hstack([W, b[:, None]])  # (K, d+1), float64 master copy
    full = training.batch_size is None or training.batch_size >= n
    B = n if full else int(training.batch_size)
    mixed = training.precision == "mixed"
    cdt = np.float32 if mixed else np.float64
    Xc = Xa.astype(cdt)  # (n, d+1)
    XcT = np.ascontiguousarray(Xc.T)  # (d+1, n)
    onehotT = np.ascontiguousarray(np.eye(K)[y].T)  # (K, n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4]))
    perm, pos = rng.permutation(n), 0
    # Scores are kept as (K, B): the softmax then works on K contiguous rows of length B.
    Z = np.empty((K, B))
    Zc = np.empty((K, B), cdt) if mixed else Z
    s = np.empty(B)
    G = np.empty((K, d + 1), cdt)
    step = training.lr / B
    todo = sorted(set(schedule))
    k = 0
    matmul, exp, colsum, divide, subtract = np.matmul, np.exp, np.add.reduce, np.divide, np.subtract
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported at the next checkpoint
        for t in range(training.iterations + 1):
            if k < len(todo) and t == todo[k]:
                if not np.isfinite(Wa).all():
                    raise FloatingPointError(f"Training diverged before iteration {t} (lr={training.lr}, "
                                             f"init_scale={training.init_scale}); use a smaller lr.")
                on_checkpoint(t, Wa[:, :-1].copy(), Wa[:, -1].copy())
                k += 1
            if t == training.iterations:
                break
            if full:
                xb, xbT, yb = Xc, XcT, onehotT
            else:  # epochs of a seeded permutation, batches of B (a short remainder is skipped)
                if pos + B > n:
                    perm, pos = rng.permutation(n), 0
                idx = perm[pos:pos + B]
                pos += B
                xb, xbT, yb = Xc[idx], XcT[:, idx], onehotT[:, idx]
            if mixed:
                matmul(Wa.astype(np.float32), xbT, out=Zc)
                Z[:] = Zc
            else:
                matmul(Wa, xbT, out=Z)
            exp(Z, out=Z)
            colsum(Z, 0, None, s)
            divide(Z, s, out=Z)
            subtract(Z, yb, out=Z)  # residuals softmax - onehot, in float64 (no cancellation when they are tiny)
            if mixed:
                Zc[:] = Z
            matmul(Zc, xb, out=G)  # (K, d+1) gradient times B
            Wa -= step * G


# ----------------------------------------------------------------------------- measuring
class _Rows:
    """Tidy rows; the percentile-bootstrap intervals of per-sample means are computed at the
    end, in one batched quantile per sample size (the same resampling weights for every
    metric of that size, as the tracker does)."""

    def __init__(self, bootstrap: int, confidence: float, seed: int):
        self.bootstrap, self.confidence, self.seed = bootstrap, confidence, seed
        self.rows: list[dict] = []
        self._pending: dict[int, list[tuple[int, np.ndarray]]] = {}  # size -> [(row index, values)]

    def add(self, it: int, layer: str, split: str, metric: str, values) -> None:
        if np.isscalar(values):
            v = float(values)
        else:
            x = np.asarray(values, dtype=np.float64)
            if x.size == 0:
                return
            v = float(x.mean())
            if x.size > 1 and self.bootstrap > 0:
                self._pending.setdefault(x.size, []).append((len(self.rows), x))
        self.rows.append({"iteration": int(it), "layer": layer, "split": split, "metric": metric,
                          "value": v, "ci_low": float("nan"), "ci_high": float("nan")})

    def frame(self) -> pd.DataFrame:
        boot = Bootstrap(self.bootstrap, self.confidence, self.seed) if self._pending else None
        for size, items in self._pending.items():
            _, lo, hi = boot.estimate_many(np.stack([x for _, x in items]))  # one (m, size) @ (size, B) product
            for (i, _), l, h in zip(items, lo, hi):
                self.rows[i]["ci_low"], self.rows[i]["ci_high"] = float(l), float(h)
        self._pending = {}
        df = pd.DataFrame(self.rows, columns=METRIC_COLUMNS)
        return df.sort_values(["iteration", "layer", "split", "metric"], kind="stable").reset_index(drop=True)


@dataclass
class TheoryResult:
    """What one simulation produced: tidy metrics, per-sample test reconstruction errors
    (per output layer, (K_checkpoints, n_test)) and the phases of each output layer."""

    data: DataModel
    training: Training
    seed: int
    metrics: pd.DataFrame
    iterations: list[int]
    errors: dict[str, np.ndarray]
    phases: dict[str, PhaseResult]
    settings: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def curve(self, metric: str, layer: str = "model", split: str = "train") -> pd.Series:
        """One metric against iteration, e.g. ``curve("reconstruction_mse", "logits", "test")``."""
        df = self.metrics
        s = df[(df.layer == layer) & (df.split == split) & (df.metric == metric)]
        if s.empty:
            have = sorted(set(df.metric[(df.layer == layer) & (df.split == split)]))
            raise KeyError(f"No metric {metric!r} for layer={layer!r}, split={split!r}; available: {', '.join(have)}.")
        return s.set_index("iteration")["value"].sort_index()

    def errors_by_iteration(self) -> dict[str, dict[int, np.ndarray]]:
        """The per-sample errors in the layout of :func:`phasescope.outputs.runs.write_errors`."""
        return {layer: dict(zip(self.iterations, E)) for layer, E in self.errors.items()}


def initial_weights(data: DataModel, training: Training, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """W0 (K, d) with entries N(0, init_scale^2 / d) from the seed's own stream, and b0 = 0."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    W0 = training.init_scale / np.sqrt(data.dim) * rng.standard_normal((data.num_classes, data.dim))
    return W0, np.zeros(data.num_classes)


def simulate(data: DataModel, training: Training | None = None, seed: int = 0, *, bootstrap: int = 1000,
             confidence: float = 0.95, min_effect: float = 0.02) -> TheoryResult:
    """Generate the data of ``seed``, train the single layer and measure it at every checkpoint."""
    training = (training or Training()).validate()
    data.validate()
    if bootstrap < 1 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap must be >= 1 and confidence in (0, 1); got {bootstrap} and {confidence}.")
    t0 = time.perf_counter()
    X_raw, y, typical = data.generate(seed, "train")
    Xt_raw, yt, typical_t = data.generate(seed, "test")
    X, Xt, mean, std = normalise(X_raw, Xt_raw)
    mu = data.prototypes(seed)
    mu_c = mu - mu.mean(0)
    K = data.num_classes
    W0, b0 = initial_weights(data, training, seed)
    schedule = log_schedule(training.iterations, training.points_per_octave)
    rows = _Rows(bootstrap, confidence, seed)
    errors: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_LAYERS}
    splits = {"train": (X, y, typical), "test": (Xt, yt, typical_t)}
    timing = {"measure": 0.0}

    def measure(it: int, W: np.ndarray, b: np.ndarray) -> None:
        tm = time.perf_counter()
        Z = {s: x @ W.T + b for s, (x, _, _) in splits.items()}
        outputs = {"logits": Z, "softmax": {s: softmax(z) for s, z in Z.items()}}
        for name, out in outputs.items():
            dec = LinearReconstruction(training.decoder_ridge).fit(out["train"], X)
            for s, (x, _, typ) in splits.items():
                e = dec.per_sample_error(out[s], x)
                if s == "test":
                    errors[name].append(e)
                rows.add(it, name, s, "reconstruction_mse", e)
                rows.add(it, name, s, "reconstruction_mse_typical", e[typ])
                rows.add(it, name, s, "reconstruction_mse_atypical", e[~typ])
            rows.add(it, name, "train", "decoder_rank", float(dec.rank_))
            if training.decoder_ridge != 0:
                rows.add(it, name, "train", "decoder_lambda", float(dec.lam_))
                rows.add(it, name, "train", "decoder_dof", float(dec.dof_))
        for s, (x, lab, typ) in splits.items():
            loss = cross_entropy(Z[s], lab)
            acc = (Z[s].argmax(1) == lab).astype(np.float64)
            for suffix, sel in (("", slice(None)), ("_typical", typ), ("_atypical", ~typ)):
                rows.add(it, "model", s, "loss" + suffix, loss[sel])
                rows.add(it, "model", s, "accuracy" + suffix, acc[sel])
        for metric, v in gradient_shares(X, y, W, b, ~typical).items():
            rows.add(it, "model", "train", metric, v)
        # Angles in input space: normalisation by a global scalar does not change directions.
        ang = angle_deg(W, mu)
        ang_c = angle_deg(W - W.mean(0), mu_c)  # GD leaves sum_k w_k fixed: only the centred part moves
        rows.add(it, "model", "train", "prototype_angle", float(ang.mean()))
        rows.add(it, "model", "train", "prototype_angle_centred", float(ang_c.mean()))
        for k in range(K):
            rows.add(it, "model", "train", f"prototype_angle_class{k}", float(ang[k]))
        rows.add(it, "model", "train", "weight_norm", float(np.linalg.norm(W)))
        timing["measure"] += time.perf_counter() - tm

    t_train = time.perf_counter()
    _descend(X, y, W0, b0, training, schedule, seed, measure)
    t_train = time.perf_counter() - t_train - timing["measure"]
    metrics = rows.frame()
    E = {name: np.stack(v) for name, v in errors.items()}
    settings = PhaseSettings(confidence=confidence, bootstrap=bootstrap, min_effect=min_effect, seed=seed)
    phases = {name: detect_phases(schedule, E[name], settings=settings) for name in OUTPUT_LAYERS}
    total = time.perf_counter() - t0
    return TheoryResult(
        data=data, training=training, seed=seed, metrics=metrics, iterations=schedule, errors=E, phases=phases,
        settings={"normalisation": {"mean": float(mean), "std": float(std)}, "bootstrap": bootstrap,
                  "confidence": confidence, "min_effect": min_effect},
        seconds={"total": total, "train": t_train, "measure": timing["measure"]},
    )
