"""One typed configuration for a run: validated at the boundary, saved with every result.

``RunConfig`` holds every knob of data, model, training and measurement (its core fields, and
the ``synthetic`` data section). The options of extensions live in typed sections
(:class:`Section` dataclasses) that each extension declares itself (``Extension.options``) and
the registry collects (:mod:`phasescope.registry`): ``cfg.samples``, ``cfg.transfer``, ... are
those sections, and config.json holds each under its own key. Every field carries its help text,
its command-line flag and its constraints (``field(metadata=...)``, see :func:`opt`), from which
the CLI builds its options and :func:`check_field`, the one validator, checks values: defaults,
help and rules exist once. ``from_dict`` rejects unknown keys at every level and ``validate``
bad values, with messages that name the parameter, the value and the fix; neither changes its
input.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import numbers
import os
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import defaults
from .data.atypical import parse_atypical
from .defaults import BN_MODES, DECODERS, INPUT_SPANS, OPTIMIZERS, PROBES, TOKENS
from .errors import ConfigError  # noqa: F401  (defined with the other exceptions; imported from here too)
from .registry import parse_value  # noqa: F401  (the value syntax of --extension NAME:KEY=VALUE)
from .registry import get, is_builtin, option_sections, section_extensions


def opt(default: Any = None, help: str = "", *, factory: Any = None, cli: bool = True, flag: str | None = None,
        parse: Any = None, choices: tuple | None = None, positive: bool = False, min: float | None = None,
        max: float | None = None, between: tuple[float, float] | None = None, implies: dict | None = None,
        check: Any = None) -> Any:
    """A configuration field with its help text and what :func:`check_field` checks.

    ``cli=False``: not a command-line option. ``flag``: its command-line flag when it is not the
    default (``--FIELD`` for RunConfig, ``--SECTION-FIELD`` for a section), e.g. ``"--samples-max"``
    or ``"--samples/--no-samples"``; ``parse``: turns the flag's text into the value. Constraints:
    ``choices`` (for a list: of every item), ``positive`` (> 0), ``min``/``max`` (inclusive),
    ``between`` (exclusive), ``check`` (a rule of its own: ``check(value)`` raises ConfigError);
    None is never checked against them. ``implies``: options that giving this one on the command
    line also sets (``--stop-on-increase`` keeps the best weights)."""
    meta: dict[str, Any] = {"help": help, "cli": cli}
    extra = {"flag": flag, "parse": parse, "choices": choices, "positive": positive, "min": min, "max": max,
             "between": between, "implies": implies, "check": check}
    meta.update({k: v for k, v in extra.items() if v is not None and v is not False})
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def like(owner: type, name: str, **meta: Any) -> Any:
    """A field with the default, help and constraints of field ``name`` of ``owner`` (declared there
    once), plus ``meta``: how typed settings (:class:`~phasescope.engine.phases.PhaseSettings`,
    :class:`~phasescope.engine.settings.MeasureSettings`) reuse RunConfig's declarations."""
    f = next(f for f in dataclasses.fields(owner) if f.name == name)
    metadata = {**f.metadata, **meta}
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=metadata)
    return field(default=f.default, metadata=metadata)


def comma_list(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (the parser of list flags such as --transfer)."""
    return [s.strip() for s in str(text).split(",") if s.strip()]


# ---------------------------------------------------------------------- the one validator
@functools.lru_cache(maxsize=None)
def _hints(owner: type) -> dict[str, Any]:
    return typing.get_type_hints(owner)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", None))


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` declares (ints count as numbers, paths as strings,
    tuples as lists); types this checker does not know are left to the ``validate`` methods."""
    origin = typing.get_origin(hint)
    if _is_union(hint):
        return any(matches(value, h) for h in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, os.PathLike))
    if origin is list or hint is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, (list, tuple)) and all(item is Any or matches(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe_hint(hint: Any) -> str:
    """'a number', 'an integer or unset (omit the key)', 'a list of strings', ..."""
    if _is_union(hint):
        return " or ".join(describe_hint(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "unset (omit the key)"
    if typing.get_origin(hint) is list:
        return f"a list of {describe_hint(typing.get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    if typing.get_origin(hint) is dict:
        return "a table"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _label(owner: type, name: str) -> str:
    section = getattr(owner, "section", "")
    return f"{section} {name}" if section else name


def check_field(owner: type, name: str, value: Any, *, constraints: bool = True) -> Any:
    """Check ``value`` for field ``name`` of ``owner`` (RunConfig or a Section class): its type,
    then (``constraints``) the choices and ranges its metadata declares (see :func:`opt`).
    Returns the value; raises ConfigError naming the option, the value and what is allowed."""
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if name not in fields:
        raise ConfigError(f"Unknown {_label(owner, 'option') if getattr(owner, 'section', '') else 'option'} "
                          f"{name!r}{did_you_mean(name, fields)}; valid: {', '.join(fields)}.")
    hint = _hints(owner)[name]
    label = _label(owner, name)
    if not matches(value, hint):
        raise ConfigError(f"{label} must be {describe_hint(hint)}; got {type_name(value)} {value!r}.")
    meta = fields[name].metadata
    if not constraints or value is None:
        return value
    choices = meta.get("choices")
    if choices is not None:
        if isinstance(value, (list, tuple)):
            if any(v not in choices for v in value):
                raise ConfigError(f"{label} {list(value)!r}: choose from {', '.join(choices)}.")
        elif value not in choices:
            raise ConfigError(f"{label}={value!r} is not valid; choose one of: {', '.join(choices)}.")
    if "check" in meta:  # a field's own rule first: its message says what is allowed
        meta["check"](value)
    if meta.get("positive") and (not value > 0 or value == math.inf):  # `not value > 0`: NaN too
        raise ConfigError(f"{label} must be positive" + (" and finite" if isinstance(value, float) else "")
                          + f"; got {value!r}.")
    if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison below
        raise ConfigError(f"{label} must be a finite number; got {value!r}.")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{label} must be >= {meta['min']}; got {value!r}.")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{label} must be <= {meta['max']}; got {value!r}.")
    if "between" in meta and not meta["between"][0] < value < meta["between"][1]:
        lo, hi = meta["between"]
        raise ConfigError(f"{label} must be in ({lo:g}, {hi:g}); got {value}.")
    return value


def validate_fields(obj: Any) -> Any:
    """:func:`check_field` on every field of a RunConfig or Section (sections inside are checked
    by their own ``validate``). Returns ``obj``."""
    owner = type(obj)
    hints = _hints(owner)
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Section):
            continue
        check_field(owner, f.name, getattr(obj, f.name))
    return obj


def did_you_mean(word: str, known: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def flag_of(owner: type, name: str) -> str:
    """The command-line flag of a field: declared (``flag=``), else ``--FIELD`` for RunConfig and
    ``--SECTION-FIELD`` for a section (dashes for underscores; a section's booleans get
    ``--SECTION-FIELD/--no-SECTION-FIELD``)."""
    f = next(f for f in dataclasses.fields(owner) if f.name == name)
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    section = getattr(owner, "section", "")
    flag = (f"{section}-{name}" if section else name).replace("_", "-")
    return f"--{flag}/--no-{flag}" if _hints(owner)[name] is bool and section else f"--{flag}"


class Section:
    """Typed options of one extension (a dataclass subclass; ``section`` is its config.json key):
    rejects unknown keys, never mutates what it is given. Field metadata (:func:`opt`) declares
    help, flag and constraints; cross-field rules go in :meth:`validate` (call ``super().validate()``)."""

    section: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any] | "Section" | None) -> "Section":
        if isinstance(d, cls):
            return dataclasses.replace(d)
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"{cls.section} must be a table of {cls.section} options, e.g. "
                              f"{{{dataclasses.fields(cls)[0].name!r}: ...}}; got {type_name(d)} {d!r}.")
        d = dict(d or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
            raise ConfigError(f"Unknown {cls.section} option(s) {unknown}{hint}; valid: {', '.join(sorted(known))}.")
        obj = cls(**d)
        validate_fields(obj)
        return obj.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Section":
        """Every field against its metadata; subclasses add cross-field rules after ``super().validate()``."""
        return validate_fields(self)


@dataclass
class SyntheticOptions(Section):
    section: ClassVar[str] = "synthetic"
    knobs: dict[str, Any] = opt(help="Knobs of the synthetic data model, e.g. atypical_fraction=0.1,dim=100.",
                                factory=dict)
    data_seed: int | None = opt(None, "Seed of the data instance [the run's seed].")
    # The knobs are checked against the data model's fields when the data are made (data.synthetic).


def check_ridges(value: Any) -> None:
    """The rule of ``relative_ridge``: a number >= 0 or 'auto', or a non-empty list of distinct ones."""
    ridges = value if isinstance(value, (list, tuple)) else [value]
    if not ridges or any(r != "auto" and not (isinstance(r, numbers.Real) and not isinstance(r, bool) and 0 <= r < math.inf)
                         for r in ridges):
        raise ConfigError(f"relative_ridge must be a number >= 0 or 'auto' (or a non-empty list of them); "
                          f"got {value!r}.")
    if len({str(r) if r == "auto" else f"{float(r):g}" for r in ridges}) != len(ridges):
        raise ConfigError(f"relative_ridge {value!r} repeats a value; give each ridge once.")


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
                           "is its next token.", positive=True)
    download: bool = opt(False, "Fetch the dataset with torchvision (needs phasescope[download]).")
    train_size: int | None = opt(None, "Use a seeded, class-balanced subset of this many training samples.",
                                  positive=True)
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
    width: float = opt(1.0, "Width multiplier of the model's channels/units.", positive=True)
    layers: list[str] | None = opt(None, "Module names to track, comma-separated [the last feature block]; "
                                         "MODULE[i] / MODULE[key] picks a tensor from a tuple/dict output.")
    # --- training (SGD with momentum 0.9 and batch 128, as in the papers' research code) ---
    iterations: int = opt(4096, "Optimiser steps.", positive=True)
    batch_size: int = opt(128, "Training batch size.", positive=True)
    optimizer: str = opt("sgd", "sgd (with momentum), adam or adamw (decoupled weight decay on weight matrices "
                                "and embeddings). `phasescope run --model gpt` defaults to adamw, lr 1e-3, warm-up 100, "
                                "weight decay 0.1, batch 32.", choices=OPTIMIZERS)
    lr: float = opt(0.01, "Learning rate.", positive=True)
    momentum: float = opt(0.9, "SGD momentum.", min=0)
    weight_decay: float = opt(0.0, "Weight decay.", min=0)
    warmup: int = opt(0, "Learning-rate warm-up: linear from lr/warmup to lr over this many steps (0: none).", min=0)
    seed: int = opt(0, "Seed of initialisation, batch order and subsets.")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto.")
    # --- checkpoint schedule ---
    points_per_octave: int = opt(1, "Checkpoints per doubling of the iteration (1: 0, 1, 2, 4, ...).", positive=True)
    save_checkpoints: bool = opt(False, "Also keep the weights at every checkpoint, as checkpoints/step-N.pt in the "
                                        "run folder (for `phasescope analyze`).")
    # --- measurement ---
    fit_samples: int | None = opt(4000, "Training samples the decoder and probe are fitted on.", positive=True)
    test_samples: int | None = opt(2000, "Held-out samples they are scored on.", positive=True)
    decoder: str = opt("linear", "linear (exact ridge) or conv (transposed convolutions, iterative).",
                       choices=DECODERS)
    conv_epochs: int = opt(20, "Conv decoder: epoch budget per checkpoint (early stop on convergence).",
                           positive=True)
    conv_channels: int = opt(16, "Conv decoder: channels at full resolution (x2 per stage above).",
                             positive=True)
    relative_ridge: float | str | list = opt(defaults.RELATIVE_RIDGE, "Ridge strength of the linear decoder and probe, "
                                             "relative to the mean feature variance; 'auto' chooses it per checkpoint "
                                             "and layer by generalised cross-validation. A comma-separated list (e.g. "
                                             "1e-4,1e-3,0.01,0.1,1,auto) also measures the decoder at every further "
                                             "value from the same Gram matrix, each with its own phases; the first "
                                             "value stays the main measurement.", check=check_ridges)
    max_features: int = opt(defaults.MAX_FEATURES, "Average-pool spatial layers above this many features.",
                            positive=True)
    tokens: str = opt("auto", "Layers with (tokens, features) outputs (transformer blocks): measure the mean token, "
                              "the class token (cls), the last token (last) or all tokens average-pooled to "
                              "max_features (pool); auto: last for text (token inputs), else mean.",
                      choices=(*TOKENS, "auto"))
    token_window: int = opt(1, "Text: the decoder reconstructs the one-hot of the last K tokens of each window (the "
                               "features are those of the last position).", positive=True)
    probe: str = opt("ridge", "ridge (closed form) or logistic (L-BFGS).", choices=PROBES)
    bn_mode: str = opt("recalibrate", "BatchNorm when measuring: recalibrate, running or batch.", choices=BN_MODES)
    bn_samples: int | None = opt(defaults.BN_SAMPLES, "Fit samples BatchNorm statistics are recalibrated on "
                                                      "(seeded subset; all if larger).", positive=True)
    measure_batch_size: int = opt(defaults.MEASURE_BATCH_SIZE, "Batch size of the measurement's forward passes.",
                                   positive=True)
    bootstrap: int = opt(defaults.BOOTSTRAP, "Bootstrap resamples for intervals.", positive=True)
    confidence: float = opt(defaults.CONFIDENCE, "Confidence level of the intervals.", between=(0, 1))
    min_effect: float = opt(defaults.MIN_EFFECT, "Relative change below which a significant change is no phase.",
                         min=0)
    input_span: str = opt("auto", "Linear decoder of inputs with more values than fit samples (e.g. 224x224 images): "
                                  "auto decodes them exactly through the span of the fit inputs (same errors, "
                                  "far less time and memory); off decodes every input value.", choices=INPUT_SPANS)
    budget: float | None = opt(None, "Overhead budget: keep the measurement near, and as far as the timings predict at "
                                     "or under, this fraction of the training time (e.g. 0.05) by choosing sample "
                                     "counts, pooling and which checkpoints to measure from a short calibration, and "
                                     "thinning or densifying the checkpoints as the run goes (up to twice the points "
                                     "per octave); phases.json records the choices and the fraction achieved "
                                     "[none: measure every checkpoint].", between=(0, 1))
    # --- data knobs of --dataset synthetic (the extensions' sections come from the registry: see below) ---
    synthetic: SyntheticOptions = opt(factory=SyntheticOptions, cli=False)
    # --- extensions turned on by name (--extension NAME), built-in or installed; recorded when any ---
    extensions: list[str] = opt(help="Extensions turned on by name, built-in or installed (see `phasescope "
                                     "extensions`).", factory=list, cli=False)

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
        every = sections()
        known = [f.name for f in dataclasses.fields(cls)] + [n for n in every if n not in _CORE]
        unknown = sorted(set(d) - set(known))
        if unknown:
            hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
            raise ConfigError(f"Unknown configuration key(s) {unknown}{hint}. Valid keys: {', '.join(sorted(known))}"
                              " (an extension's options: `phasescope extensions`).")
        d = expand_extension_specs(d)
        for name, section in every.items():
            if name in d:
                d[name] = section.from_dict(d[name])
        if isinstance(d.get("layers"), str):
            d["layers"] = [s.strip() for s in d["layers"].split(",") if s.strip()]
        return cls(**d).validate()

    def replace(self, **changes: Any) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """config.json's ``config``: the core fields, then every section in :func:`sections` order
        (an installed extension's only while it is on), then ``extensions`` when any is named."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
               if f.name not in ("synthetic", "extensions")}
        for name in self.recorded_sections():
            out[name] = getattr(self, name).to_dict()
        if self.extensions:
            out["extensions"] = list(self.extensions)
        return out

    def recorded_sections(self) -> list[str]:
        """The sections config.json holds: synthetic and the built-in extensions' always (so that its
        shape stays the same), an installed extension's when that extension is on."""
        out = []
        for name in sections():
            owners = section_extensions(name)
            if name == "synthetic" or any(is_builtin(c) for c in owners) or name in self.extensions \
                    or any(c.name in self.extensions for c in owners):
                out.append(name)
        return out

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        held = self.__dict__.get("_sections") or {}
        parts = [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)]
        return f"{type(self).__name__}({', '.join(parts + [f'{k}={v!r}' for k, v in held.items()])})"

    def __copy__(self) -> "RunConfig":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        object.__setattr__(new, "_sections", dict(self.__dict__.get("_sections") or {}))
        return new

    def __getattr__(self, name: str) -> Any:
        """An extension's options section: ``cfg.samples``, ``cfg.transfer``, ..."""
        held = self.__dict__.get("_sections")
        if held is None or name.startswith("__"):
            raise AttributeError(name)
        if name not in held:
            cls = extension_sections().get(name)
            if cls is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            held[name] = cls()  # an extension registered after this configuration was made
        return held[name]

    def __setattr__(self, name: str, value: Any) -> None:
        held = self.__dict__.get("_sections")
        if held is not None and name in held:
            held[name] = value
        else:
            object.__setattr__(self, name, value)

    def validate(self) -> "RunConfig":
        """Check every value; raise ConfigError naming the parameter and the fix. Changes nothing."""
        k = self.num_classes
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 2):
            raise ConfigError(f"num_classes must be an integer >= 2 (or unset: max label + 1); got {k!r}.")
        if self.layers is not None and (isinstance(self.layers, str) or not self.layers):
            raise ConfigError(f"layers must be a non-empty list of module names such as ['features.3'], or unset; "
                              f"got {self.layers!r}.")
        validate_fields(self)  # types, choices, ranges and rules declared by the fields (opt)
        if self.token_window > self.context:
            raise ConfigError(f"token_window {self.token_window} is longer than the context {self.context}; give "
                              f"--token-window {self.context} or less.")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} is not valid; choose cpu, cuda, cuda:N or auto.")

        try:
            parse_atypical(self.atypical)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name, section in sections().items():
            value = getattr(self, name)
            if not isinstance(value, section):
                raise ConfigError(f"{name} must be a {section.__name__}; build the config with RunConfig.from_dict.")
            validate_fields(value)
            value.validate()

        for name in self.extensions:
            get(name)  # a registered extension, else ConfigError with the closest names
        if len(set(self.extensions)) != len(self.extensions):
            raise ConfigError(f"extensions {self.extensions!r} names an extension twice; name each once.")
        return self


_CORE = frozenset(f.name for f in dataclasses.fields(RunConfig))
_dataclass_init = RunConfig.__init__


@functools.wraps(_dataclass_init)
def _init(self: RunConfig, *args: Any, **kwargs: Any) -> None:
    """The dataclass's ``__init__``, plus the extensions' sections as keyword arguments
    (``RunConfig(samples=SamplesOptions(max_samples=100))``; a dict is read with ``from_dict``)."""
    every = extension_sections()
    given = {k: kwargs.pop(k) for k in list(kwargs) if k in every}
    _dataclass_init(self, *args, **kwargs)
    held: dict[str, Section] = {}
    for name, cls in every.items():
        v = given.get(name)
        held[name] = cls() if v is None else cls.from_dict(v) if isinstance(v, dict) else v
    object.__setattr__(self, "_sections", held)

    for name in given:  # an installed extension's options were given: it is on
        owners = section_extensions(name)
        if owners and not any(is_builtin(c) for c in owners) and not any(c.name in self.extensions for c in owners):
            self.extensions = [*self.extensions, owners[0].name]


RunConfig.__init__ = _init


# ---------------------------------------------------------------------- sections from the registry
SECTION_ORDER = ("samples", "transfer", "synthetic", "infoplane", "reconstructions")  # config.json's order so far


def extension_sections() -> dict[str, type[Section]]:
    """{config.json key: Section class} of the registered extensions (built-in and installed),
    without those whose key is a core field (a warning names the plug-in)."""
    out = {}
    for name, cls in option_sections().items():
        if name in _CORE:
            warnings.warn(f"extension options section {name!r} ({cls.__module__}.{cls.__name__}) is ignored: "
                          f"{name!r} is a core configuration key.", RuntimeWarning, stacklevel=2)
            continue
        out[name] = cls
    return out


def sections() -> dict[str, type[Section]]:
    """Every typed section of a RunConfig, in config.json's order: the built-in ones as before
    (:data:`SECTION_ORDER`), then those of installed extensions in registry order."""
    every = {"synthetic": SyntheticOptions, **extension_sections()}
    order = [n for n in SECTION_ORDER if n in every] + [n for n in every if n not in SECTION_ORDER]
    return {n: every[n] for n in order}


def __getattr__(name: str) -> Any:
    """``SECTIONS`` (now :func:`sections`) and the section classes that moved to their extensions."""
    if name == "SECTIONS":
        return sections()
    if name.startswith("_") or not name[:1].isupper():  # __path__, __spec__ ...: never load the registry for them
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for cls in extension_sections().values():
        if cls.__name__ == name:
            warnings.warn(f"phasescope.config.{name} is now {cls.__module__}.{name}", DeprecationWarning, stacklevel=2)
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- extensions named with options
def parse_extension(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"NAME[:KEY=VALUE,...]"`` -> (extension name, its options section's key or None, options).

    The name must be registered (else a ConfigError with the closest names); keys must be fields
    of its options section; a single value for a list field becomes a one-item list, and an option
    that implies others (``opt(implies=...)``) sets them too. Values are checked by the section."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"extension {spec!r}: give an extension's name, optionally with options: "
                          "NAME or NAME:KEY=VALUE,KEY=VALUE (see `phasescope extensions`).")
    name, _, rest = spec.partition(":")
    cls = get(name.strip())
    options: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in rest.split(","))):
        if "=" not in item:
            raise ConfigError(f"extension {spec!r}: give options as KEY=VALUE pairs separated by commas, e.g. "
                              f"{cls.name}:KEY=VALUE (lists: a+b).")
        k, v = item.split("=", 1)
        options[k.strip()] = parse_value(v)
    if not options:
        return cls.name, (cls.options.section if cls.options else None), {}
    if cls.options is None:
        raise ConfigError(f"extension {cls.name!r} takes no options; got {spec!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls.options)}
    hints = _hints(cls.options)
    out: dict[str, Any] = {}
    for k, v in options.items():
        if k not in fields:
            raise ConfigError(f"extension {spec!r}: {cls.name} has no option {k!r}{did_you_mean(k, fields)}; "
                              f"its options: {', '.join(fields)}.")
        if typing.get_origin(hints[k]) is list and not isinstance(v, list):
            v = [v]
        out[k] = v
        for implied, value in (fields[k].metadata.get("implies") or {}).items():
            if v:
                out.setdefault(implied, value)
    return cls.name, cls.options.section, out


def expand_extension_specs(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (a configuration dict) with ``extensions`` entries of the form ``NAME:KEY=VALUE,...``
    split into the names and their options (merged over the section's keys already in ``d``)."""
    specs = d.get("extensions")
    if specs is None or (isinstance(specs, (list, tuple)) and all(isinstance(s, str) and ":" not in s for s in specs)):
        return d
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"extensions must be a list of extension names (NAME or NAME:KEY=VALUE,...); "
                          f"got {type_name(specs)} {specs!r}.")
    d = dict(d)
    names: list[str] = []
    for spec in specs:
        name, section, options = parse_extension(spec)
        if options:
            base = d.get(section)
            base = base.to_dict() if isinstance(base, Section) else dict(base or {})
            d[section] = {**base, **options}
        if name not in names:
            names.append(name)
    d["extensions"] = names
    return d


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
