"""One typed configuration for a run: validated at the boundary, saved with every result.

``RunConfig`` holds every knob of data, model, training and measurement; the options of
plug-ins live in typed sections (:class:`SamplesOptions`, :class:`TransferOptions`,
:class:`SyntheticOptions`). Every field carries its help text (``field(metadata=...)``), from
which the CLI builds its options, so defaults and help exist once. ``from_dict`` rejects
unknown keys at every level and ``validate`` bad values, with messages that name the
parameter, the value and the fix; neither changes its input.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import defaults
from .defaults import BN_MODES, DECODERS, OPTIMIZERS, PROBES, TOKENS


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and how to fix it."""


def opt(default: Any = None, help: str = "", *, factory: Any = None, cli: bool = True) -> Any:
    """A configuration field with its help text (``cli=False``: not a command-line option)."""
    meta = {"help": help, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """Typed options of one plug-in: rejects unknown keys, never mutates what it is given."""

    section: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any] | "Section" | None) -> "Section":
        if isinstance(d, cls):
            return dataclasses.replace(d)
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown {cls.section} option(s) {unknown}; valid: {', '.join(sorted(known))}.")
        return cls(**d).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Section":
        return self


@dataclass
class SamplesOptions(Section):
    section: ClassVar[str] = "samples"
    enabled: bool = opt(True, "Per-sample dynamics: who drives the last-layer gradient, learned-at, forgetting.")
    max_samples: int | None = opt(None, "Follow a seeded random subset of this many fit samples [all].")
    seed: int = opt(0, "Seed of that subset.")

    def validate(self) -> "SamplesOptions":
        m = self.max_samples
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m <= 0):
            raise ConfigError(f"samples max_samples must be a positive integer or None (all fit samples); got {m!r}.")
        return self


@dataclass
class TransferOptions(Section):
    section: ClassVar[str] = "transfer"
    tasks: list[str] = opt(help="Transfer tasks probed at every checkpoint: colour, class-split, switch:DATASET[@PATH], "
                                "npz:PATH.", factory=list)
    keep_best: bool = opt(False, "Save the weights at the reconstruction minimum to best_features.pt.")
    stop_on_increase: bool = opt(False, "Like keep_best, and stop training once the reconstruction error rises "
                                        "significantly after its minimum.")
    keep_layer: str | None = opt(None, "Layer whose minimum keep_best follows [the last tracked layer].")

    def validate(self) -> "TransferOptions":
        if isinstance(self.tasks, str):
            raise ConfigError(f"transfer tasks must be a list of names, e.g. ['colour']; got the string {self.tasks!r}.")
        if self.stop_on_increase and not self.keep_best:
            raise ConfigError("stop_on_increase needs keep_best (--keep-best/--stop-on-increase): "
                              "stopping keeps the weights at the reconstruction minimum.")
        return self


@dataclass
class SyntheticOptions(Section):
    section: ClassVar[str] = "synthetic"
    knobs: dict[str, Any] = opt(help="Knobs of the synthetic data model, e.g. atypical_fraction=0.1,dim=100.",
                                factory=dict)
    data_seed: int | None = opt(None, "Seed of the data instance [the run's seed].")
    # The knobs are checked against the data model's fields when the data are made (data.synthetic).


@dataclass
class InfoPlaneOptions(Section):
    section: ClassVar[str] = "infoplane"
    estimators: list[str] = opt(help="Information-plane estimators per checkpoint: binning, quantile, kde, kde-lower "
                                     "[none: off].", factory=list)
    bins: int = opt(30, "Bins per unit of the binning estimators.")
    noise: float = opt(0.1, "KDE noise variance, relative to the layer's total variance.")
    max_units: int | None = opt(256, "Units budget: wider layers are pooled or subsampled (seeded).")
    max_samples: int | None = opt(2000, "Samples budget of the estimators (seeded subset).")

    def validate(self) -> "InfoPlaneOptions":
        allowed = ("binning", "quantile", "kde", "kde-lower")
        bad = [e for e in self.estimators if e not in allowed]
        if isinstance(self.estimators, str) or bad:
            raise ConfigError(f"infoplane estimators {self.estimators!r}: choose from {', '.join(allowed)}.")
        return self


@dataclass
class ReconstructionsOptions(Section):
    section: ClassVar[str] = "reconstructions"
    enabled: bool = opt(True, "Decoded test images at every checkpoint: reconstructions.npz and reconstructions.png.")
    per_class: int = opt(2, "Test images per class (the same images for every seed).")
    layer: str | None = opt(None, "Tracked layer they are decoded from [the last tracked layer].")
    prototypes: bool = opt(True, "Also decode each class's mean test feature (a class-mean row per class).")

    def validate(self) -> "ReconstructionsOptions":
        if not isinstance(self.per_class, int) or isinstance(self.per_class, bool) or self.per_class <= 0:
            raise ConfigError(f"reconstructions per_class must be a positive integer; got {self.per_class!r}.")
        return self


SECTIONS: dict[str, type[Section]] = {c.section: c for c in (SamplesOptions, TransferOptions, SyntheticOptions,
                                                              InfoPlaneOptions, ReconstructionsOptions)}
RENAMED = {"ridge": "relative_ridge"}  # old key -> new key, accepted with a deprecation warning


@dataclass
class RunConfig:
    # --- data ---
    dataset: str = opt("mnist-digits", "Dataset: mnist-digits (embedded, default), digits (embedded 8x8), cifar10, "
                                       "cifar100, mnist, fashion-mnist, npz, folder, synthetic; text: shakespeare "
                                       "(embedded), text (a text file as --data-dir).")
    data_dir: str | None = opt(None, "Folder with the standard distribution files, an .npz file, an image-folder tree, "
                                     "or a text file (--dataset text).")
    context: int = opt(64, "Text datasets: tokens per window (the language model's context); the label of a window "
                           "is its next token.")
    download: bool = opt(False, "Fetch the dataset with torchvision (needs phasescope[download]).")
    train_size: int | None = opt(None, "Use a seeded, class-balanced subset of this many training samples.")
    num_classes: int | None = opt(None, "Number of classes when some may be absent from the training split "
                                        "[max label + 1, every class present].")
    atypical: str = opt("none", "Make a seeded fraction of the training samples atypical: label-noise:F (labels "
                                "replaced by another class), random-labels:F (labels redrawn from all classes, about "
                                "1/K unchanged by chance; F = 1 allowed), foreign:F[@PATH] (images replaced by another "
                                "source's, labels kept; see phasescope.data.atypical). Saved as atypical.npz.")
    # --- model ---
    model: str = opt("cnn", "Model: cnn, mlp, vgg8, vgg11, vgg13, vgg16, resnet10, gpt (text) (see `phasescope "
                            "layers`), or an "
                            "import path package.module:function of a callable (input_shape, num_classes) -> nn.Module.")
    width: float = opt(1.0, "Width multiplier of the model's channels/units.")
    layers: list[str] | None = opt(None, "Module names to track, comma-separated [the last feature block]; "
                                         "MODULE[i] / MODULE[key] picks a tensor from a tuple/dict output.")
    # --- training (SGD with momentum 0.9 and batch 128, as in the papers' research code) ---
    iterations: int = opt(4096, "Optimiser steps.")
    batch_size: int = opt(128, "Training batch size.")
    optimizer: str = opt("sgd", "sgd (with momentum), adam or adamw (decoupled weight decay on weight matrices "
                                "and embeddings). `phasescope run --model gpt` defaults to adamw, lr 1e-3, warm-up 100, "
                                "weight decay 0.1, batch 32.")
    lr: float = opt(0.01, "Learning rate.")
    momentum: float = opt(0.9, "SGD momentum.")
    weight_decay: float = opt(0.0, "Weight decay.")
    warmup: int = opt(0, "Learning-rate warm-up: linear from lr/warmup to lr over this many steps (0: none).")
    seed: int = opt(0, "Seed of initialisation, batch order and subsets.")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto.")
    # --- checkpoint schedule ---
    points_per_octave: int = opt(1, "Checkpoints per doubling of the iteration (1: 0, 1, 2, 4, ...).")
    # --- measurement ---
    fit_samples: int | None = opt(4000, "Training samples the decoder and probe are fitted on.")
    test_samples: int | None = opt(2000, "Held-out samples they are scored on.")
    decoder: str = opt("linear", "linear (exact ridge) or conv (transposed convolutions, iterative).")
    conv_epochs: int = opt(20, "Conv decoder: epoch budget per checkpoint (early stop on convergence).")
    conv_channels: int = opt(16, "Conv decoder: channels at full resolution (x2 per stage above).")
    relative_ridge: float | str | list = opt(defaults.RELATIVE_RIDGE, "Ridge strength of the linear decoder and probe, "
                                             "relative to the mean feature variance; 'auto' chooses it per checkpoint "
                                             "and layer by generalised cross-validation. A comma-separated list (e.g. "
                                             "1e-4,1e-3,0.01,0.1,1,auto) also measures the decoder at every further "
                                             "value from the same Gram matrix, each with its own phases; the first "
                                             "value stays the main measurement.")
    max_features: int = opt(defaults.MAX_FEATURES, "Average-pool spatial layers above this many features.")
    tokens: str = opt("auto", "Layers with (tokens, features) outputs (transformer blocks): measure the mean token, "
                              "the class token (cls), the last token (last) or all tokens average-pooled to "
                              "max_features (pool); auto: last for text (token inputs), else mean.")
    token_window: int = opt(1, "Text: the decoder reconstructs the one-hot of the last K tokens of each window (the "
                               "features are those of the last position).")
    probe: str = opt("ridge", "ridge (closed form) or logistic (L-BFGS).")
    bn_mode: str = opt("recalibrate", "BatchNorm when measuring: recalibrate, running or batch.")
    bn_samples: int | None = opt(defaults.BN_SAMPLES, "Fit samples BatchNorm statistics are recalibrated on "
                                                      "(seeded subset; all if larger).")
    measure_batch_size: int = opt(defaults.MEASURE_BATCH_SIZE, "Batch size of the measurement's forward passes.")
    bootstrap: int = opt(defaults.BOOTSTRAP, "Bootstrap resamples for intervals.")
    confidence: float = opt(defaults.CONFIDENCE, "Confidence level of the intervals.")
    min_effect: float = opt(defaults.MIN_EFFECT, "Relative change below which a significant change is no phase.")
    # --- plug-ins ---
    samples: SamplesOptions = opt(factory=SamplesOptions, cli=False)
    transfer: TransferOptions = opt(factory=TransferOptions, cli=False)
    synthetic: SyntheticOptions = opt(factory=SyntheticOptions, cli=False)
    infoplane: InfoPlaneOptions = opt(factory=InfoPlaneOptions, cli=False)
    reconstructions: ReconstructionsOptions = opt(factory=ReconstructionsOptions, cli=False)

    @property
    def ridge(self) -> float:  # deprecated name
        return self.relative_ridge

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        d = dict(d)
        for old, new in RENAMED.items():
            if old in d:
                warnings.warn(f"configuration key {old!r} is now {new!r}", DeprecationWarning, stacklevel=2)
                d.setdefault(new, d.pop(old))
        if "extra" in d:  # config.json of runs made before the typed sections
            d.update(_sections_from_extra(d.pop("extra") or {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown configuration key(s) {unknown}. Valid keys: {', '.join(sorted(known))}.")
        for name, section in SECTIONS.items():
            if name in d:
                d[name] = section.from_dict(d[name])
        if isinstance(d.get("layers"), str):
            d["layers"] = [s.strip() for s in d["layers"].split(",") if s.strip()]
        return cls(**d).validate()

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "RunConfig":
        """Check every value; raise ConfigError naming the parameter and the fix. Changes nothing."""
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
        choice("tokens", (*TOKENS, "auto"))
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} is not valid; choose cpu, cuda, cuda:N or auto.")
        for name in ("iterations", "batch_size", "lr", "width", "points_per_octave", "max_features",
                     "measure_batch_size", "bootstrap", "conv_epochs", "conv_channels", "context", "token_window"):
            positive(name)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup must be an integer >= 0 (steps of linear learning-rate warm-up); got {self.warmup!r}.")
        if self.token_window > self.context:
            raise ConfigError(f"token_window {self.token_window} is longer than the context {self.context}; give "
                              f"--token-window {self.context} or less.")
        for name in ("train_size", "fit_samples", "test_samples", "bn_samples"):
            positive(name, allow_none=True)
        k = self.num_classes
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
            raise ConfigError(f"num_classes must be an integer >= 2 (or unset: max label + 1); got {k!r}.")
        ridges = self.relative_ridge if isinstance(self.relative_ridge, (list, tuple)) else [self.relative_ridge]
        if not ridges or any(r != "auto" and not (isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0)
                             for r in ridges):
            raise ConfigError(f"relative_ridge must be a number >= 0 or 'auto' (or a non-empty list of them); "
                              f"got {self.relative_ridge!r}.")
        if len({str(r) if r == "auto" else f"{float(r):g}" for r in ridges}) != len(ridges):
            raise ConfigError(f"relative_ridge {self.relative_ridge!r} repeats a value; give each ridge once.")
        from .data.atypical import parse_atypical

        try:
            parse_atypical(self.atypical)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1); got {self.confidence}.")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("momentum and weight_decay must be >= 0.")
        if self.layers is not None and (isinstance(self.layers, str) or not self.layers):
            raise ConfigError(f"layers must be a non-empty list of module names such as ['features.3'], or unset; "
                              f"got {self.layers!r}.")
        for name, section in SECTIONS.items():
            if not isinstance(getattr(self, name), section):
                raise ConfigError(f"{name} must be a {section.__name__}; build the config with RunConfig.from_dict.")
            getattr(self, name).validate()
        return self


def _sections_from_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """The typed sections of an old ``extra`` dict (config.json of earlier versions)."""
    out: dict[str, Any] = {}
    if extra.get("samples"):
        out["samples"] = dict(extra["samples"])
    transfer = {k: extra[k] for k in ("keep_best", "stop_on_increase", "keep_layer") if k in extra}
    if extra.get("transfer"):
        transfer["tasks"] = list(extra["transfer"])
    if transfer:
        out["transfer"] = transfer
    if extra.get("synthetic"):
        knobs = dict(extra["synthetic"])
        out["synthetic"] = {"data_seed": knobs.pop("data_seed", None), "knobs": knobs}
    unknown = sorted(set(extra) - {"samples", "transfer", "keep_best", "stop_on_increase", "keep_layer", "synthetic"})
    if unknown:
        raise ConfigError(f"Unknown extra option(s) {unknown}.")
    return out
