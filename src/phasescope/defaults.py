"""Allowed values and measurement defaults, declared once (imports nothing of phasescope).

The configuration, the tracker, the estimators and the CLI's help all read them from here.
"""
from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw")
BN_MODES = ("recalibrate", "running", "batch")
DECODERS = ("linear", "conv")
PROBES = ("ridge", "logistic")
INPUT_SPANS = ("auto", "off")  # decode inputs of more dimensions than fit samples through their span
TOKENS = ("mean", "cls", "pool", "last")  # (B, tokens, D) layer outputs: mean, class, all pooled, last token
TARGETS = ("input", "tokens")  # what the decoder reconstructs: the input, or the one-hot of token ids (measure.targets)

# Relative ridge of the linear decoder and probe: lambda = RELATIVE_RIDGE x the mean
# eigenvalue of the centred feature covariance (see measure.ridge for how it was chosen).
RELATIVE_RIDGE = 0.1
# BatchNorm statistics of the frozen copy are recalibrated on a seeded subset of the fit
# samples of this size: they average over samples and positions, and 1,024 samples move
# the default run's reconstruction curve by 0.1-0.2 of its interval half-width (README).
BN_SAMPLES = 1024
MAX_FEATURES = 4096  # spatial layers above this many features are average-pooled to a grid
MEASURE_BATCH_SIZE = 500
BOOTSTRAP = 1000
CONFIDENCE = 0.95
MIN_EFFECT = 0.02  # relative change below which a significant change is no phase


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """``value`` if allowed, else a ValueError naming the parameter and the choices."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(allowed)}.")
    return value
