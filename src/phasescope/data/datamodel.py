"""The data model of the single-layer theory: class prototypes plus noise, and a few atypical samples.

Every class k has a prototype ``mu_k`` in R^d (a random direction, norm
``prototype_strength * sqrt(d)``, so ``prototype_strength`` is its per-coordinate RMS).
A *typical* sample of class k is ``mu_k + noise``; an *atypical* one keeps the label k but
not the prototype:

* ``atypical_kind="random"``: a fresh random pattern with the prototype's norm, plus noise
  (a sample that shares nothing with its class);
* ``atypical_kind="other"``: the prototype of another class (uniformly among the K-1
  others), plus noise, with the label k kept (a mislabelled sample).

``noise`` is the per-coordinate standard deviation of the isotropic Gaussian noise added to
every sample. Class sizes are deterministic: with ``imbalance`` r the class sizes fall
geometrically from the largest to the smallest, whose ratio is r (1 = balanced); in every
class exactly ``round(atypical_fraction * n_k)`` samples are atypical. The test split is
drawn from the same model with the same prototypes. Samples are returned raw (not
normalised); the measurements normalise with the training split's global mean and std,
as :func:`phasescope.data.make_splits` does for flat data.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

ATYPICAL_KINDS = ("random", "other")
SPLITS = ("train", "test")


@dataclass
class DataModel:
    num_classes: int = 5              # K
    dim: int = 100                    # d, input dimension
    n_train: int = 500                # training samples, all classes together
    n_test: int = 500                 # held-out samples (same prototypes, fresh noise and atypical patterns)
    prototype_strength: float = 1.0   # per-coordinate RMS of a prototype: ||mu_k|| = strength * sqrt(d)
    noise: float = 1.0                # per-coordinate std of the Gaussian noise on every sample
    atypical_fraction: float = 0.1    # share of each class's samples that are atypical
    atypical_kind: str = "random"     # random (pattern of matched norm) | other (another class's prototype, label kept)
    imbalance: float = 1.0            # largest / smallest class size, geometric in between (1 = balanced)

    def validate(self) -> "DataModel":
        for name in ("num_classes", "dim", "n_train", "n_test"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}.")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2; got {self.num_classes}.")
        for name in ("prototype_strength", "noise", "atypical_fraction", "imbalance"):
            v = getattr(self, name)  # NaN passes every comparison below, so it is refused by name here
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                raise ValueError(f"{name} must be a finite number; got {v!r}.")
        if self.prototype_strength <= 0:
            raise ValueError(f"prototype_strength must be positive; got {self.prototype_strength}.")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0; got {self.noise}.")
        if not 0 <= self.atypical_fraction < 1:
            raise ValueError(f"atypical_fraction must be in [0, 1); got {self.atypical_fraction}.")
        if self.atypical_kind not in ATYPICAL_KINDS:
            raise ValueError(f"atypical_kind={self.atypical_kind!r} is not valid; choose one of: {', '.join(ATYPICAL_KINDS)}.")
        if self.imbalance < 1:
            raise ValueError(f"imbalance is the largest/smallest class size ratio and must be >= 1; got {self.imbalance}.")
        for name, n in (("n_train", self.n_train), ("n_test", self.n_test)):
            if self.class_sizes(n).min() < 1:
                raise ValueError(f"{name}={n} leaves a class empty with num_classes={self.num_classes} "
                                 f"and imbalance={self.imbalance}; use more samples or less imbalance.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "DataModel":
        return dataclasses.replace(self, **changes).validate()

    def class_sizes(self, n: int) -> np.ndarray:
        """Samples per class for n samples: shares proportional to imbalance^(-k/(K-1)), rounded
        by largest remainder so that they sum to n."""
        K = self.num_classes
        share = float(self.imbalance) ** (-np.arange(K) / (K - 1))
        share /= share.sum()
        raw = n * share
        sizes = np.floor(raw).astype(np.int64)
        order = np.argsort(-(raw - sizes), kind="stable")
        sizes[order[: n - sizes.sum()]] += 1
        return sizes

    def atypical_counts(self, n: int) -> np.ndarray:
        """Atypical samples per class for n samples."""
        return np.round(self.atypical_fraction * self.class_sizes(n)).astype(np.int64)

    def prototypes(self, seed: int) -> np.ndarray:
        """(K, d) class prototypes; the same for both splits of a seed."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
        return self._patterns(rng, self.num_classes)

    def _patterns(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """m random directions with norm prototype_strength * sqrt(d)."""
        g = rng.standard_normal((m, self.dim))
        return g * (self.prototype_strength * np.sqrt(self.dim) / np.linalg.norm(g, axis=1, keepdims=True))

    def generate(self, seed: int, split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples of one split: X (n, d) float64 raw, y (n,) int64, typical (n,) bool.

        The same seed gives the same prototypes for both splits and independent noise and
        atypical patterns; the samples come in a seeded random order.
        """
        self.validate()
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not valid; choose train or test.")
        n = self.n_train if split == "train" else self.n_test
        mu = self.prototypes(seed)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1 + SPLITS.index(split)]))
        sizes, n_atyp = self.class_sizes(n), self.atypical_counts(n)
        y = np.repeat(np.arange(self.num_classes), sizes)
        typical = np.concatenate([np.arange(s) >= a for s, a in zip(sizes, n_atyp)])
        base = mu[y]  # (n, d)
        atyp = np.flatnonzero(~typical)
        if len(atyp):
            if self.atypical_kind == "random":
                base[atyp] = self._patterns(rng, len(atyp))
            else:  # another class's prototype, label kept
                other = (y[atyp] + rng.integers(1, self.num_classes, size=len(atyp))) % self.num_classes
                base[atyp] = mu[other]
        X = base + self.noise * rng.standard_normal((n, self.dim))
        order = rng.permutation(n)
        return X[order], y[order], typical[order]


def normalise(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Both splits in units of the training split's global mean and std (one scalar each,
    as :func:`phasescope.data.make_splits` normalises flat data)."""
    mean, std = float(X_train.mean()), float(X_train.std())
    if std == 0:
        raise ValueError("The training inputs are constant; nothing to normalise (noise=0 and identical prototypes?).")
    return (X_train - mean) / std, (X_test - mean) / std, mean, std
