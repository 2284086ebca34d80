"""Information-plane estimators: I(X;T) and I(T;Y) of a layer T, in bits.

The information-bottleneck account of deep learning (2017) describes training as a
path in the *information plane* (I(X;T) against I(T;Y)): a fitting phase in which both
grow, then a *compression* phase in which I(X;T) falls. For a deterministic network
and distinct inputs I(X;T) is infinite for continuous T (or log2 N for N samples), so
every estimate is one of a *quantised* or a *noisy* T, and depends on that choice. Two
estimators are provided, both pure functions of a layer's (N, p) activations ``h`` and
the labels ``y``, seeded and deterministic:

``binning`` (:func:`binning_mi`)
    Discretise every unit into ``bins`` bins, either of equal width over the range
    observed at that checkpoint (``mode="equal"``, the scheme of the 2017 account; one
    range for the whole layer with ``scope="layer"``, or one per unit with
    ``scope="unit"``), or of equal mass per unit (``mode="quantile"``, adaptive: for
    unbounded ReLU activations, whose equal-width bins are mostly empty; tied values
    such as ReLU's zeros share one bin). Each sample's row of bin codes is one
    *pattern*; with the empirical distribution over the N samples

        I(X;T) = H(T)                (T is a function of X and every input is distinct)
        I(T;Y) = H(T) - H(T|Y) = H(T) - sum_y p(y) H(T | Y=y).

    Both are plug-in estimates from counts, so I(T;Y) <= H(Y) (empirical) exactly and
    I(X;T) <= log2 N. **Saturation**: with many units, nearly every sample gets its own
    pattern and the estimates sit at I(X;T) = log2 N and I(T;Y) = H(Y) whatever the
    network does; the more units (and bins), the sooner. ``saturation`` in the result is
    H(T) / log2 N.

``kde`` (:func:`kde_mi`)
    Add Gaussian noise N(0, sigma^2 I) to the layer (T' = T + noise) and bound the
    entropy of the resulting mixture of N Gaussians with pairwise distances between its
    components ("Estimating mixture entropy with pairwise distances", 2017), X being
    uniform over the N samples. The noise entropy cancels in I(X;T') = H(T') - H(T'|X),
    leaving, in nats,

        I(X;T') <= -mean_i log mean_j exp(-||t_i - t_j||^2 / (2 sigma^2))   (KL: upper bound)
        I(X;T') >= -mean_i log mean_j exp(-||t_i - t_j||^2 / (8 sigma^2))   (Bhattacharyya: lower bound)

    and I(T';Y) is estimated as the bound minus its class-conditional version (sums over
    same-class j, weighted by class frequency). That difference is an estimate, not a
    bound, but it is never above H(Y) (empirical). The default noise is relative to the
    layer's scale: sigma^2 = ``noise`` x the total variance E||t - E t||^2 (0.1 by
    default, so a typical pair of samples is exp(-10) apart in kernel value: independent
    of the layer's width and of any overall rescaling); ``sigma`` fixes it absolutely
    instead (e.g. for tanh layers bounded by 1). Both bounds lie in [0, log2 N]; with a
    small sigma against the spread they go to log2 N (every sample its own bump), with a
    large one to 0. Squared distances come in blocks of ``block`` rows, each from one
    fused matrix product (the product form ``torch.cdist`` uses for large inputs), exactly
    0 on the diagonal, and are reduced with logsumexp (stable for any sigma).

Budgets for wide layers (:func:`reduce_units`, :func:`subsample`, both recorded)
    A dimensionality budget ``max_units`` (256 by default): a spatial (C, H, W) map is
    average-pooled to the largest square grid with C*g*g <= max_units, and a seeded
    random subset of units (channels for a pooled map) is kept when that is still too
    many; a flat layer keeps a seeded random subset of ``max_units`` units. A sample
    budget ``max_samples`` keeps a seeded random subset of the rows (the same rows at
    every checkpoint). Effects: the binning estimates grow with the number of units kept
    and saturate at log2 N (so a budget of 256 units usually saturates them: fewer units
    or bins show more structure); the KDE bounds with the relative noise depend on the
    *shape* of the cloud of points rather than its size, so pooling and subsetting
    change them only through that shape, but their ceiling is log2 N too, so a smaller
    sample budget lowers the ceiling of both estimators.
"""
from __future__ import annotations

import math
import zlib
from typing import Any, Sequence

import numpy as np
import torch

LN2 = math.log(2.0)
BINNING_MODES = ("equal", "quantile")
BINNING_SCOPES = ("layer", "unit")


# ---------------------------------------------------------------------- discrete entropies
def _as_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)


def pattern_ids(codes: Any) -> np.ndarray:
    """(N,) integer id of each row of ``codes`` ((N,) or (N, d) discrete values): equal
    rows get equal ids (0..K-1, in sorted order of the distinct rows)."""
    c = _as_numpy(codes)
    if c.ndim == 1:
        c = c[:, None]
    c = np.ascontiguousarray(c.reshape(len(c), -1))
    if c.shape[1] == 0:
        return np.zeros(len(c), dtype=np.int64)
    # Each row as one opaque byte string: hashing rows without comparing units one by one.
    rows = c.view(np.dtype((np.void, c.dtype.itemsize * c.shape[1]))).reshape(-1)
    _, inverse = np.unique(rows, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def entropy_from_counts(counts: Any) -> float:
    """Shannon entropy in bits of the distribution proportional to ``counts``."""
    n = np.asarray(counts, dtype=np.float64)
    n = n[n > 0]
    if n.size == 0:
        return 0.0
    p = n / n.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))


def discrete_entropy(a: Any) -> float:
    """Plug-in entropy (bits) of the empirical distribution of the rows of ``a``."""
    return entropy_from_counts(np.bincount(pattern_ids(a)))


def conditional_entropy(a: Any, y: Any) -> float:
    """H(A | Y) in bits: sum_y p(y) H(A | Y = y), plug-in, rows of ``a`` as patterns."""
    ids, yv = pattern_ids(a), pattern_ids(y)
    n = len(ids)
    if n == 0:
        return 0.0
    out = 0.0
    for c in np.unique(yv):
        m = yv == c
        out += m.sum() / n * entropy_from_counts(np.bincount(ids[m]))
    return float(out)


def discrete_mutual_information(a: Any, b: Any) -> float:
    """Plug-in I(A;B) = H(A) - H(A|B) in bits between two discrete variables given as
    N paired observations (rows as patterns)."""
    return max(0.0, discrete_entropy(a) - conditional_entropy(a, b))


# ---------------------------------------------------------------------- binning
def bin_activations(h: Any, bins: int = 30, mode: str = "equal", scope: str = "layer") -> np.ndarray:
    """(N, d) integer bin codes of the activations ``h`` (N, d).

    ``mode="equal"``: ``bins`` bins of equal width over [min, max] observed, of the whole
    layer (``scope="layer"``) or of each unit (``scope="unit"``); a constant range maps to
    bin 0. ``mode="quantile"``: per unit, edges at the j/bins quantiles (equal mass),
    bins (e_(k-1), e_k]; repeated edges (ties, e.g. ReLU zeros) collapse, so tied values
    share one bin, of their own when they are an edge.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}.")
    if mode not in BINNING_MODES:
        raise ValueError(f"mode={mode!r}; choose one of: {', '.join(BINNING_MODES)}.")
    if scope not in BINNING_SCOPES:
        raise ValueError(f"scope={scope!r}; choose one of: {', '.join(BINNING_SCOPES)}.")
    x = _as_numpy(h).astype(np.float64, copy=False)
    x = x.reshape(len(x), -1)
    dtype = np.int16 if bins <= np.iinfo(np.int16).max else np.int32
    if len(x) == 0 or x.shape[1] == 0:
        return np.zeros(x.shape, dtype=dtype)
    if mode == "equal":
        lo = x.min() if scope == "layer" else x.min(0, keepdims=True)
        hi = x.max() if scope == "layer" else x.max(0, keepdims=True)
        width = np.where(hi > lo, hi - lo, 1.0)
        codes = np.floor((x - lo) / width * bins)
        return np.clip(codes, 0, bins - 1).astype(dtype)
    edges = np.quantile(x, np.arange(1, bins) / bins, axis=0)  # (bins-1, d)
    # code = number of edges below the value: bins (e_k-1, e_k]. Repeated edges (ties) add
    # the same count to every value above them, so they change the codes' numbering but not
    # which values share a bin; a tied value (ReLU's 0) that is itself an edge keeps a bin
    # of its own, apart from the larger values.
    codes = np.zeros(x.shape, dtype=dtype)
    for e in edges:
        codes += x > e
    return codes


def binning_mi(h: Any, y: Any, bins: int = 30, mode: str = "equal", scope: str = "layer") -> dict[str, Any]:
    """I(X;T) = H(T) and I(T;Y) = H(T) - H(T|Y) (bits) of the binned layer ``h`` (N, d)
    with labels ``y`` (N,); see the module docstring. Returns the two estimates with
    what they depend on: ``bins``, ``mode``, ``scope``, ``n``, ``units``, ``patterns``
    (distinct binned rows), ``max_bits`` (log2 N), ``label_entropy`` (H(Y)) and
    ``saturation`` (H(T) / log2 N)."""
    codes = bin_activations(h, bins, mode, scope)
    yv = _as_numpy(y).reshape(-1)
    if len(yv) != len(codes):
        raise ValueError(f"h has {len(codes)} rows but y has {len(yv)} labels.")
    ids = pattern_ids(codes)
    h_t = entropy_from_counts(np.bincount(ids)) if len(ids) else 0.0
    h_t_y = conditional_entropy(ids, yv)
    n = len(ids)
    max_bits = math.log2(n) if n > 1 else 0.0
    return {
        "mi_input": h_t, "mi_label": max(0.0, h_t - h_t_y), "estimator": "binning",
        "bins": int(bins), "mode": mode, "scope": scope if mode == "equal" else "unit",
        "n": int(n), "units": int(codes.shape[1]), "patterns": int(ids.max() + 1) if n else 0,
        "max_bits": max_bits, "label_entropy": discrete_entropy(yv),
        "saturation": h_t / max_bits if max_bits > 0 else float("nan"),
    }


# ---------------------------------------------------------------------- KDE (pairwise distances)
def relative_sigma(h: Any, noise: float = 0.1) -> float:
    """sigma with sigma^2 = ``noise`` x the total variance of the rows of ``h`` (mean
    squared distance to their mean). 0 for a constant layer."""
    x = torch.as_tensor(_as_numpy(h), dtype=torch.float64).reshape(len(h), -1)
    if len(x) == 0:
        return 0.0
    tv = float((x - x.mean(0)).pow(2).sum(1).mean())
    return math.sqrt(noise * tv)


def _pairwise_terms(x: torch.Tensor, labels: torch.Tensor, scales: Sequence[float], block: int
                    ) -> tuple[list[float], list[float]]:
    """For each scale s: mean over i of log mean_j exp(-s ||x_i - x_j||^2) over all j, and
    over the j with the label of i (nats; not yet negated).

    Rows are sorted by label, so the same-label j of a block of rows are one contiguous
    slice of columns (no masking). Squared distances come from one fused matrix product
    per block (float32, on mean-centred rows), are clamped at 0 and exactly 0 on the
    diagonal, so the kernel of a sample with itself is exactly 1 for any sigma.
    """
    n = len(x)
    order = torch.argsort(labels, stable=True)
    x, labels = x[order], labels[order]
    counts = torch.bincount(labels)
    ends = torch.cumsum(counts, 0)
    sq = x.pow(2).sum(1)
    full = [0.0] * len(scales)
    cond = [0.0] * len(scales)
    log_n = math.log(n)
    for c in torch.nonzero(counts).reshape(-1).tolist():
        c_stop = int(ends[c])
        c_start = c_stop - int(counts[c])
        log_nc = math.log(c_stop - c_start)
        for start in range(c_start, c_stop, block):
            stop = min(c_stop, start + block)
            rows = torch.arange(stop - start)
            # ||x_i - x_j||^2 = |x_i|^2 + |x_j|^2 - 2 x_i.x_j: one fused product, then in place
            d2 = torch.addmm(sq[None, :], x[start:stop], x.T, alpha=-2.0).add_(sq[start:stop, None]).clamp_(min=0.0)
            d2[rows, rows + start] = 0.0  # exact zero on the diagonal (the product form leaves rounding)
            for k, s in enumerate(scales):
                logits = d2 * (-s) if k < len(scales) - 1 else d2.mul_(-s)  # the last scale reuses d2's memory
                full[k] += float(torch.logsumexp(logits, 1).double().sum()) - (stop - start) * log_n
                cond[k] += float(torch.logsumexp(logits[:, c_start:c_stop], 1).double().sum()) - (stop - start) * log_nc
    return [f / n for f in full], [v / n for v in cond]


def kde_mi(h: Any, y: Any, noise: float = 0.1, sigma: float | None = None, block: int = 1024,
           lower: bool = True) -> dict[str, Any]:
    """Pairwise-distance estimates (bits) of I(X;T') and I(T';Y) for T' = T + N(0, sigma^2 I).

    ``sigma`` None: sigma^2 = ``noise`` x the layer's total variance (see
    :func:`relative_sigma`). Returns ``mi_input`` (KL upper bound), ``mi_label`` (upper
    bound minus the class-conditional one), with ``lower``: ``mi_input_lower`` and
    ``mi_label_lower`` from the Bhattacharyya lower bound; and ``sigma``,
    ``sigma_mode`` (relative/absolute), ``noise``, ``n``, ``units``, ``max_bits``.
    Float32 distances (on mean-centred rows), float64 sums.
    """
    x = torch.as_tensor(_as_numpy(h), dtype=torch.float32).reshape(len(h), -1)
    yv = torch.as_tensor(pattern_ids(_as_numpy(y).reshape(-1)))
    if len(yv) != len(x):
        raise ValueError(f"h has {len(x)} rows but y has {len(yv)} labels.")
    if sigma is None:
        if noise <= 0:
            raise ValueError(f"noise must be > 0 (relative noise variance); got {noise}.")
        sig, mode = relative_sigma(x, noise), "relative"
    else:
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0; got {sigma}.")
        sig, mode = float(sigma), "absolute"
    n = len(x)
    out: dict[str, Any] = {"estimator": "kde", "sigma": sig, "sigma_mode": mode,
                           "noise": float(noise) if mode == "relative" else None,
                           "n": int(n), "units": int(x.shape[1]), "max_bits": math.log2(n) if n > 1 else 0.0}
    if n < 2 or sig == 0.0:  # a single point, or a constant layer (relative noise 0): no information
        out.update(mi_input=0.0, mi_label=0.0, **({"mi_input_lower": 0.0, "mi_label_lower": 0.0} if lower else {}))
        return out
    x = x - x.mean(0)
    scales = [1.0 / (2 * sig ** 2)] + ([1.0 / (8 * sig ** 2)] if lower else [])
    full, cond = _pairwise_terms(x, yv, scales, block)
    names = [("mi_input", "mi_label")] + ([("mi_input_lower", "mi_label_lower")] if lower else [])
    for (mi_x, mi_y), f, c in zip(names, full, cond):
        out[mi_x] = max(0.0, -f / LN2)
        out[mi_y] = (c - f) / LN2  # (-f) - (-c): the bound minus its class-conditional version
    return out


# ---------------------------------------------------------------------- budgets
def layer_rng(seed: int, key: str = "") -> np.random.Generator:
    """A generator seeded by ``seed`` and a name (each layer its own stream)."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def subsample(n: int, max_samples: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``max_samples`` of ``n`` rows (all if None or >= n)."""
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2; got {max_samples}.")
    return np.sort(np.random.default_rng([int(seed), 1]).choice(n, max_samples, replace=False))


def reduce_units(h: Any, max_units: int | None = 256, shape: Sequence[int] | None = None, seed: int = 0,
                 key: str = "") -> tuple[torch.Tensor, dict[str, Any]]:
    """(N, k) activations with k <= ``max_units``, and a description of what was done.

    ``shape``: the per-sample (C, g, g) layout of the rows of ``h`` when it is a spatial
    map (as the tracker's pooled features are); it is average-pooled to the largest grid
    g' with C*g'*g' <= max_units, and if C alone exceeds the budget a seeded random subset
    of channels (of the 1x1-pooled map) is kept. Otherwise a seeded random subset of
    units (``seed`` and ``key``, e.g. the layer name). ``max_units`` None keeps all.
    """
    x = torch.as_tensor(_as_numpy(h)).float()
    x = x.reshape(len(x), -1)
    p = x.shape[1]
    info: dict[str, Any] = {"units": int(p), "kept": int(p), "method": "none", "max_units": max_units}
    if max_units is None or p <= max_units:
        return x, info
    if max_units < 1:
        raise ValueError(f"max_units must be >= 1 or None; got {max_units}.")
    if shape is not None and len(shape) == 3 and int(np.prod(shape)) == p:
        c, gh, gw = (int(s) for s in shape)
        g = max(1, int(math.floor(math.sqrt(max_units / c))))
        g = min(g, gh, gw)
        x = torch.nn.functional.adaptive_avg_pool2d(x.reshape(len(x), c, gh, gw), g).reshape(len(x), -1)
        info.update(method=f"average-pooled {gh}x{gw} -> {g}x{g}", grid=g, kept=int(x.shape[1]))
        if x.shape[1] <= max_units:
            return x, info
        keep = np.sort(layer_rng(seed, key).choice(c, max_units, replace=False))  # g == 1: columns are channels
        info.update(method=info["method"] + f", random {max_units} of {c} channels", kept=int(max_units))
        return x[:, torch.as_tensor(keep)], info
    keep = np.sort(layer_rng(seed, key).choice(p, max_units, replace=False))
    info.update(method=f"random {max_units} of {p} units", kept=int(max_units))
    return x[:, torch.as_tensor(keep)], info


# ---------------------------------------------------------------------- analytic references
def gaussian_channel_mi(variance: float, noise_variance: float, dims: int = 1) -> float:
    """I(X; X + Z) in bits for X ~ N(0, variance I_dims), Z ~ N(0, noise_variance I_dims):
    dims/2 log2(1 + variance / noise_variance)."""
    return 0.5 * dims * math.log2(1.0 + variance / noise_variance)
