"""Phase detection on a reconstruction curve, with paired-bootstrap intervals.

Input: the per-sample test reconstruction errors ``E`` of shape (K, n): row k holds the
error of each of the same n test samples at checkpoint k. Because the samples are the
same at every checkpoint, differences between checkpoints are *paired*: resampling the
n samples (the same resample for all checkpoints) gives intervals for any contrast
between checkpoints that are much tighter than comparing two unpaired means.

The rule (all tolerances are arguments, recorded in phases.json):

* ``k_min`` = argmin of the mean curve. ``k_max`` = argmax of the curve after ``k_min``.
* **decrease** is real when the paired interval of ``mean_0 - mean_min`` excludes zero and
  the relative decrease exceeds ``min_effect``. **increase** likewise for
  ``mean_max - mean_min``. Because ``k_min`` and ``k_max`` are chosen among K checkpoints,
  these two decisions use Bonferroni-adjusted intervals (level ``1 - alpha/(K-1)`` for the
  decrease, ``1 - alpha/(K(K-1)/2)`` for the increase, whose two ends are both chosen);
  the intervals *reported* are the plain ``confidence`` ones.
* **constant** is the initial stretch: checkpoints whose change from iteration 0 is either
  not significant (adjusted interval includes zero) or small against the later decrease
  (below ``constant_tolerance`` = 10% of it). The decrease runs from the end of that
  stretch to the first checkpoint that is level with the minimum (its difference to the
  minimum is not significant, Bonferroni-adjusted); the increase starts after
  the last checkpoint level with the minimum and runs to the end. A broad bottom between
  the two, or a plateau after the decrease when nothing rises, is a ``constant`` phase.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ..config import RunConfig, like, validate_fields
from .stats import Bootstrap, bootstrap_weights, percentile_interval as _interval

__all__ = ["Estimate", "Phase", "PhaseResult", "PhaseSettings", "bootstrap_weights", "detect_phases", "mean_ci"]


@dataclass(frozen=True)
class PhaseSettings:
    """How phases are decided: the interval level, bootstrap resamples, the smallest relative change
    that is a phase, and the bootstrap's seed. One value for :func:`detect_phases`; the defaults and
    constraints are RunConfig's fields of the same names (checked by ``config.check_field``)."""

    confidence: float = like(RunConfig, "confidence")
    bootstrap: int = like(RunConfig, "bootstrap")
    min_effect: float = like(RunConfig, "min_effect")
    seed: int = like(RunConfig, "seed")

    def __post_init__(self) -> None:
        validate_fields(self)

    @classmethod
    def from_config(cls, cfg: Any) -> "PhaseSettings":
        """From a RunConfig, any object with these attributes (a tracker), or a saved config dict
        (missing keys: the defaults)."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d: getattr(cfg, k, d))
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float]:
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass
class Phase:
    name: str  # constant | decrease | increase
    start: int  # iteration
    end: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PhaseResult:
    phases: list[Phase]
    min_iteration: int
    min_value: Estimate
    max_after_min_iteration: int
    relative_decrease: Estimate
    relative_increase: Estimate
    decrease_significant: bool
    increase_significant: bool
    settings: dict = field(default_factory=dict)

    def names(self) -> list[str]:
        return [p.name for p in self.phases]

    def has(self, name: str) -> bool:
        return any(p.name == name for p in self.phases)

    def to_dict(self) -> dict:
        return {
            "phases": [p.to_dict() for p in self.phases],
            "min_iteration": self.min_iteration,
            "min_value": self.min_value.to_dict(),
            "max_after_min_iteration": self.max_after_min_iteration,
            "relative_decrease": self.relative_decrease.to_dict(),
            "relative_increase": self.relative_increase.to_dict(),
            "decrease_significant": self.decrease_significant,
            "increase_significant": self.increase_significant,
            "settings": self.settings,
        }


def _clean(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def mean_ci(values: np.ndarray, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Mean of per-sample values with a percentile-bootstrap interval (:class:`~phasescope.engine.stats.Bootstrap`)."""
    return Estimate(*Bootstrap(n_boot, confidence, seed).estimate(values))


def detect_phases(
    iterations: Sequence[int],
    errors: np.ndarray,
    *,
    settings: PhaseSettings | None = None,
    confidence: float | None = None,
    n_boot: int | None = None,
    min_effect: float | None = None,
    constant_tolerance: float = 0.1,
    seed: int | None = None,
) -> PhaseResult:
    """Split a reconstruction curve into constant / decrease / increase phases.

    ``iterations``: K checkpoint iterations (ascending); ``errors``: (K, n) per-sample errors
    on the same n samples at every checkpoint (a (K,) curve of means is accepted too, then
    no interval can be computed and only ``min_effect`` decides). ``settings``: a
    :class:`PhaseSettings` [its defaults: 0.95, 1000 resamples, 0.02, seed 0]; the loose
    ``confidence``, ``n_boot``, ``min_effect`` and ``seed``, when given, replace its values.
    """
    loose = {"confidence": confidence, "bootstrap": n_boot, "min_effect": min_effect, "seed": seed}
    s = dataclasses.replace(settings or PhaseSettings(), **{k: v for k, v in loose.items() if v is not None})
    confidence, n_boot, min_effect, seed = s.confidence, s.bootstrap, s.min_effect, s.seed
    it = np.asarray(list(iterations), dtype=np.int64)
    E = np.asarray(errors, dtype=np.float64)
    if E.ndim == 1:
        E = E[:, None]
    K, n = E.shape
    if K != len(it):
        raise ValueError(f"{len(it)} iterations but errors has {K} rows.")
    if K == 0:
        raise ValueError("No checkpoints to analyse.")
    if np.any(np.diff(it) <= 0):
        raise ValueError("iterations must be strictly increasing.")
    settings = {"confidence": confidence, "bootstrap": n_boot, "min_effect": min_effect,
                "constant_tolerance": constant_tolerance, "correction": "bonferroni: K-1 (decrease), K(K-1)/2 (increase)",
                "n_samples": n, "seed": seed}
    mean = E.mean(axis=1)  # (K,)
    if n > 1:
        boot = Bootstrap(n_boot, confidence, seed).means_many(E)  # (K, B) bootstrap means, paired
    else:
        boot = np.repeat(mean[:, None], 2, axis=1)
    alpha = 1 - confidence
    adj_dec = 1 - alpha / max(K - 1, 1)  # k_min chosen among K-1 later checkpoints
    adj_inc = 1 - alpha / max(K * (K - 1) // 2, 1)  # the pair (k_min, k_max) chosen among K(K-1)/2

    k_min = int(np.argmin(mean))
    k_max = k_min + int(np.argmax(mean[k_min:]))
    m0, mmin, mmax = mean[0], mean[k_min], mean[k_max]

    dec_boot = (boot[0] - boot[k_min]) / boot[0]
    inc_boot = (boot[k_max] - boot[k_min]) / boot[k_min]
    rel_dec = Estimate(float((m0 - mmin) / m0), *_interval(dec_boot, confidence))
    rel_inc = Estimate(float((mmax - mmin) / mmin), *_interval(inc_boot, confidence))
    dec_lo_adj, _ = _interval(dec_boot, adj_dec) if n > 1 else (rel_dec.value, 0)
    inc_lo_adj, _ = _interval(inc_boot, adj_inc) if n > 1 else (rel_inc.value, 0)
    decrease = k_min > 0 and dec_lo_adj > 0 and rel_dec.value > min_effect
    increase = k_max > k_min and inc_lo_adj > 0 and rel_inc.value > min_effect

    # Initial constant stretch: last checkpoint c such that every k <= c is "no real change".
    total_drop = max(m0 - mmin, 0.0)
    c = 0
    end_search = k_min if decrease else (k_min if increase else K - 1)
    for k in range(1, end_search + 1):
        diff = boot[0] - boot[k]
        lo, hi = _interval(diff, adj_dec) if n > 1 else (diff[0], diff[0])
        insignificant = lo <= 0 <= hi
        small = abs(m0 - mean[k]) <= constant_tolerance * total_drop if decrease else abs(m0 - mean[k]) <= min_effect * m0
        if insignificant or small:
            c = k
        else:
            break
    if decrease:
        c = min(c, k_min - 1)

    # Ends of the bottom: the decrease stops at the first checkpoint that is already as low as
    # the minimum (no significant or no sizeable difference), the increase starts after the
    # last such checkpoint; a broad bottom in between is reported as a constant phase.
    def level_with_min(k: int) -> bool:
        diff = boot[k] - boot[k_min]
        lo, _ = _interval(diff, adj_dec) if n > 1 else (diff[0], 0)
        return lo <= 0  # not significantly above the minimum

    dec_end = k_min
    if decrease:
        dec_end = next(k for k in range(c + 1, k_min + 1) if level_with_min(k))
    inc_start = k_min
    if increase:
        while inc_start + 1 < k_max and level_with_min(inc_start + 1):
            inc_start += 1

    phases: list[Phase] = []
    if c > 0 or not (decrease or increase):
        phases.append(Phase("constant", int(it[0]), int(it[c if (decrease or increase) else K - 1])))
    if decrease:
        phases.append(Phase("decrease", int(it[c]), int(it[dec_end])))
    bottom_start = dec_end if decrease else c
    if increase:
        if inc_start > bottom_start:
            phases.append(Phase("constant", int(it[bottom_start]), int(it[inc_start])))
        phases.append(Phase("increase", int(it[max(inc_start, bottom_start)]), int(it[-1])))
    elif decrease and dec_end < K - 1:
        phases.append(Phase("constant", int(it[dec_end]), int(it[-1])))

    min_ci = _interval(boot[k_min], confidence) if n > 1 else (float("nan"), float("nan"))
    return PhaseResult(
        phases=phases,
        min_iteration=int(it[k_min]),
        min_value=Estimate(float(mmin), *min_ci),
        max_after_min_iteration=int(it[k_max]),
        relative_decrease=rel_dec,
        relative_increase=rel_inc,
        decrease_significant=bool(decrease),
        increase_significant=bool(increase),
        settings=settings,
    )
