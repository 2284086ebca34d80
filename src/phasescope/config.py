"""One typed configuration for a run: validated at the boundary, saved with every result.

``RunConfig`` holds every knob of data, model, training and measurement. It rejects
unknown keys (``RunConfig.from_dict``) and bad values (``validate``) with messages that
name the parameter, the value and the fix. ``resolved()`` is what config.json stores.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


OPTIMIZERS = ("sgd", "adam")
BN_MODES = ("recalibrate", "running", "batch")
DECODERS = ("linear", "conv")
PROBES = ("ridge", "logistic")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class RunConfig:
    # --- data ---
    dataset: str = "mnist-digits"       # a name from phasescope.data.DATASETS
    data_dir: str | None = None         # folder of standard files, or an .npz file
    download: bool = False              # fetch with torchvision when available
    train_size: int | None = None       # seeded class-balanced subset of the training split
    num_classes: int | None = None      # classifier outputs (>= 2); labels must lie in 0..num_classes-1 and classes
                                        # may be absent from training. None: from the labels, every class in training
    # --- model ---
    model: str = "cnn"                  # mlp | cnn | vgg8 | ...
    width: float = 1.0                  # channel/width multiplier
    layers: list[str] | None = None     # module names to track; None = the last feature block
    # --- training (SGD with momentum 0.9 and batch 128 as in method.md) ---
    iterations: int = 4096              # optimiser steps
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9               # SGD only
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"                # cpu | cuda | auto
    # --- checkpoint schedule ---
    points_per_octave: int = 1          # 1: 0,1,2,4,...; 2 adds the geometric midpoints
    # --- measurement ---
    fit_samples: int | None = 4000      # training samples the decoder/probe are fitted on (None = all)
    test_samples: int | None = 2000     # held-out samples they are scored on (None = all)
    decoder: str = "linear"             # linear (exact ridge) | conv (transposed-conv, iterative)
    conv_epochs: int = 20               # conv decoder: epoch budget per checkpoint (early stop on convergence)
    conv_channels: int = 16             # conv decoder: channels of its full-resolution stage (x2 per stage above)
    ridge: float = 0.1                  # ridge strength, relative to the mean feature variance
    max_features: int = 4096            # spatial layers above this are average-pooled to a grid
    probe: str = "ridge"                # ridge (closed form, one-hot targets) | logistic (L-BFGS)
    bn_mode: str = "recalibrate"        # recalibrate | running | batch (see measure.capture)
    measure_batch_size: int = 500
    bootstrap: int = 1000               # bootstrap resamples for intervals
    confidence: float = 0.95
    min_effect: float = 0.02            # relative change below which a significant change is no phase
    extra: dict[str, Any] = field(default_factory=dict)  # options of plug-ins (transfer, samples, ...)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown configuration key(s) {unknown}. Valid keys: {', '.join(sorted(known))}.")
        return cls(**d).validate()

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "RunConfig":
        def choice(name: str, allowed: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in allowed:
                raise ConfigError(f"{name}={v!r} is not valid; choose one of: {', '.join(allowed)}.")

        def positive(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if v is None or v <= 0:
                raise ConfigError(f"{name} must be positive; got {v!r}.")

        choice("optimizer", OPTIMIZERS)
        choice("bn_mode", BN_MODES)
        choice("decoder", DECODERS)
        choice("probe", PROBES)
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} is not valid; choose cpu, cuda, cuda:N or auto.")
        for name in ("iterations", "batch_size", "lr", "width", "points_per_octave", "max_features",
                     "measure_batch_size", "bootstrap", "conv_epochs", "conv_channels"):
            positive(name)
        for name in ("train_size", "fit_samples", "test_samples"):
            positive(name, allow_none=True)
        if self.num_classes is not None and (type(self.num_classes) is not int or self.num_classes < 2):
            raise ConfigError(f"num_classes must be an integer >= 2, or unset to count labels; got {self.num_classes!r}.")
        if self.ridge < 0:
            raise ConfigError(f"ridge must be >= 0; got {self.ridge}.")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1); got {self.confidence}.")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("momentum and weight_decay must be >= 0.")
        if self.layers is not None:
            if isinstance(self.layers, str):
                self.layers = [s.strip() for s in self.layers.split(",") if s.strip()]
            if not self.layers:
                raise ConfigError("layers is empty; give module names such as features.3 or leave it unset.")
        return self
