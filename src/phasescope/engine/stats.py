"""Percentile-bootstrap intervals of per-sample means: the one implementation.

Every interval phasescope reports comes from here: the tracker's rows, the phases of a
reconstruction curve, the transfer probes and their gaps, and the single-layer theory.

The resampling weights of n samples are a (B, n) matrix ``W``: row b holds the counts of
a multinomial resample of the n samples (n draws with replacement), divided by n, so that
``W @ v`` gives the B bootstrap means of a per-sample vector ``v`` and ``M @ W.T`` those of
every row of a matrix ``M`` at once. The same seed gives the same ``W``, so the same
samples measured at different checkpoints are resampled identically (*paired*): the
bootstrap means of a difference between checkpoints are the differences of their
bootstrap means. Intervals are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
of the bootstrap means.

Fewer than two samples give no interval (NaN ends); no samples give a NaN mean too.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Bootstrap", "bootstrap_weights", "percentile_interval"]


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) resampling counts / n: ``E @ W.T`` gives bootstrap means of every row of E."""
    # Counts of n uniform draws with replacement (a multinomial resample), drawn for a block of
    # rows at a time and counted with one bincount: ~10x faster than Generator.multinomial.
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n), dtype=np.float64)
    rows = max(1, (1 << 20) // max(n, 1))  # about 1M draws (8 MB of indices) per block
    for r0 in range(0, n_boot, rows):
        r1 = min(n_boot, r0 + rows)
        idx = rng.integers(0, n, size=(r1 - r0, n)) + (np.arange(r1 - r0) * n)[:, None]
        out[r0:r1] = np.bincount(idx.ravel(), minlength=(r1 - r0) * n).reshape(r1 - r0, n)
    out /= n
    return out


def percentile_interval(samples: np.ndarray, level: float, axis: int | None = None) -> tuple:
    """The central ``level`` percentile interval of bootstrap ``samples`` (along ``axis``).

    Returns ``(lo, hi)``: floats when ``axis`` is None, arrays otherwise.
    """
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return (float(lo), float(hi)) if axis is None else (lo, hi)


def _as_vector(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device (no torch import needed here)
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


class Bootstrap:
    """Seeded percentile-bootstrap intervals of means, with the weights cached per sample size.

    ``estimate(v)`` -> (mean, lo, hi) of a per-sample vector; ``estimate_many(M)`` -> arrays
    for every row of M (one matrix product); ``estimate_all([v, ...])`` -> ``estimate`` of each
    vector, one matrix product per sample size; ``difference(a, b)`` -> the paired interval of
    ``mean(a) - mean(b)`` over the same samples; ``means``/``means_many`` give the bootstrap
    means themselves, for statistics built on them (see :func:`phasescope.engine.phases.detect_phases`).
    """

    def __init__(self, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0):
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1; got {n_boot}.")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
        self.n_boot, self.confidence, self.seed = int(n_boot), float(confidence), seed
        self._weights: dict[int, np.ndarray] = {}

    def weights(self, n: int) -> np.ndarray:
        """The (n_boot, n) resampling weights of n samples (drawn once per n, then cached)."""
        if n not in self._weights:
            self._weights[n] = bootstrap_weights(n, self.n_boot, self.seed)
        return self._weights[n]

    def means(self, values) -> np.ndarray:
        """(n_boot,) bootstrap means of a per-sample vector."""
        v = _as_vector(values)
        return self.weights(v.size) @ v

    def means_many(self, matrix) -> np.ndarray:
        """(m, n_boot) bootstrap means of every row of an (m, n) matrix, with the same
        resamples for every row (paired)."""
        M = np.asarray(matrix, dtype=np.float64)
        if M.ndim != 2:
            raise ValueError(f"means_many needs an (m, n) matrix; got shape {M.shape}.")
        return M @ self.weights(M.shape[1]).T

    def interval(self, samples: np.ndarray, level: float | None = None) -> tuple[float, float]:
        """Percentile interval of bootstrap samples at ``level`` (default: ``confidence``)."""
        return percentile_interval(samples, self.confidence if level is None else level)

    def estimate(self, values) -> tuple[float, float, float]:
        """(mean, lo, hi) of a per-sample vector (a numpy array, a list or a torch tensor)."""
        v = _as_vector(values)
        if v.size < 2:
            return (float(v[0]) if v.size else float("nan")), float("nan"), float("nan")
        lo, hi = self.interval(self.weights(v.size) @ v)
        return float(v.mean()), lo, hi

    def estimate_many(self, matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(means, lo, hi), each (m,), for the m rows of an (m, n) matrix of per-sample values."""
        M = np.asarray(matrix, dtype=np.float64)
        if M.ndim != 2:
            raise ValueError(f"estimate_many needs an (m, n) matrix; got shape {M.shape}.")
        mean = M.mean(axis=1) if M.shape[1] else np.full(len(M), np.nan)
        if M.shape[1] < 2:
            return mean, np.full(len(M), np.nan), np.full(len(M), np.nan)
        lo, hi = percentile_interval(self.means_many(M), self.confidence, axis=1)
        return mean, lo, hi

    def estimate_all(self, vectors) -> list[tuple[float, float, float]]:
        """(mean, lo, hi) of each per-sample vector of a list, as :meth:`estimate` gives them, with one
        matrix product per sample size instead of one pass over the (n_boot, n) weights per vector:
        the weights are read once per size (at 1,000 x 4,000 they are 32 MB, so that pass is the cost)."""
        vs = [_as_vector(v) for v in vectors]
        out: list = [None] * len(vs)
        sizes: dict[int, list[int]] = {}
        for i, v in enumerate(vs):
            sizes.setdefault(v.size, []).append(i)
        for size, idx in sizes.items():
            if size < 2:
                for i in idx:
                    out[i] = self.estimate(vs[i])
                continue
            M = np.stack([vs[i] for i in idx])
            lo, hi = percentile_interval(self.means_many(M), self.confidence, axis=1)
            for k, i in enumerate(idx):
                out[i] = (float(vs[i].mean()), float(lo[k]), float(hi[k]))
        return out

    def difference(self, a, b) -> tuple[float, float, float]:
        """(mean(a) - mean(b), lo, hi): the paired interval over the same samples.

        ``a`` and ``b`` hold per-sample values of the same samples in the same order
        (for example correctness at two checkpoints).
        """
        a, b = _as_vector(a), _as_vector(b)
        if a.shape != b.shape:
            raise ValueError(f"paired values need the same samples; got {a.size} and {b.size}.")
        return self.estimate(a - b)
