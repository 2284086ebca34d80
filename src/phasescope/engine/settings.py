"""Typed measurement settings of a :class:`~phasescope.engine.tracker.PhaseTracker`: one value, checked once.

    settings = MeasureSettings(decoder="linear", relative_ridge=0.1, bootstrap=1000)
    tracker = PhaseTracker(model, layers, fit, test, schedule, settings=settings)
    tracker = PhaseTracker(model, layers, fit, test, schedule, bootstrap=1000)   # the same: keywords build it
    settings = MeasureSettings.from_config(cfg)                                  # a run's, from its RunConfig

Every field reuses the default, help and constraints of the RunConfig field it comes from
(``config.like``; the field named in its ``key`` metadata when the names differ), and
``config.validate_fields`` (the one validator) checks them when the settings are made; the two
a run derives from its data (``target``, ``vocab_size``: token targets of a language model) are
declared here, with ``key`` None. The
settings hold plain values only (what config.json records); what is not a setting but a thing
(the device, the extensions, a ``forward`` function, a process group) stays an argument of the
tracker. :meth:`MeasureSettings.phases` gives the :class:`~phasescope.engine.phases.PhaseSettings`
that :func:`~phasescope.engine.phases.detect_phases` takes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, RunConfig, did_you_mean, like, validate_fields
from ..defaults import TARGETS
from .phases import PhaseSettings


@dataclass(frozen=True)
class MeasureSettings:
    """How each checkpoint is measured. ``decoder_options``: options of the conv decoder
    (``epochs``, ``channels``); the other fields are documented on :class:`~phasescope.config.RunConfig`
    (``batch_size`` is its ``measure_batch_size``)."""

    decoder: str = like(RunConfig, "decoder")
    decoder_options: dict | None = field(default=None, metadata={"key": None})  # from conv_epochs/conv_channels
    probe: str = like(RunConfig, "probe")
    bn_mode: str = like(RunConfig, "bn_mode")
    bn_samples: int | None = like(RunConfig, "bn_samples")
    relative_ridge: float | str | list = like(RunConfig, "relative_ridge")
    max_features: int = like(RunConfig, "max_features")
    batch_size: int = like(RunConfig, "measure_batch_size", key="measure_batch_size")
    tokens: str = like(RunConfig, "tokens")
    input_span: str = like(RunConfig, "input_span")
    # Language models: what the decoder reconstructs. target and vocab_size are not RunConfig fields
    # (a run derives them from its dataset); token_window is.
    target: str = field(default="input", metadata={"key": None, "choices": TARGETS,
                                                   "help": "What the decoder reconstructs: the input, or the one-hot "
                                                           "of the last token(s) of windows of token ids."})
    vocab_size: int | None = field(default=None, metadata={"key": None, "positive": True,
                                                           "help": "Token targets: the number of token ids "
                                                                   "[the number of classes]."})
    token_window: int = like(RunConfig, "token_window")
    bootstrap: int = like(RunConfig, "bootstrap")
    confidence: float = like(RunConfig, "confidence")
    min_effect: float = like(RunConfig, "min_effect")
    seed: int = like(RunConfig, "seed")

    def __post_init__(self) -> None:
        validate_fields(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, settings: "MeasureSettings | None" = None, **changes: Any) -> "MeasureSettings":
        """``settings`` (or the defaults) with ``changes``; an unknown name is a TypeError naming the valid ones."""
        unknown = [k for k in changes if k not in cls.names()]
        if unknown:
            raise TypeError(f"unknown measurement setting {unknown[0]!r}{did_you_mean(unknown[0], cls.names())}; "
                            f"valid: {', '.join(cls.names())}.")
        return dataclasses.replace(settings or cls(), **changes)

    @classmethod
    def from_config(cls, cfg: RunConfig, **changes: Any) -> "MeasureSettings":
        """A run's settings: each field from the RunConfig field of its name (or its ``key``);
        ``changes``: the fields a run derives from its data (``target="tokens"``, ``vocab_size``)."""
        values = {f.name: getattr(cfg, f.metadata.get("key", f.name)) for f in dataclasses.fields(cls)
                  if f.metadata.get("key", f.name) is not None}
        if cfg.decoder == "conv":
            values["decoder_options"] = {"epochs": cfg.conv_epochs, "channels": cfg.conv_channels}
        return cls.build(cls(**values), **changes)

    def phases(self) -> PhaseSettings:
        """The settings :func:`~phasescope.engine.phases.detect_phases` takes."""
        return PhaseSettings(confidence=self.confidence, bootstrap=self.bootstrap, min_effect=self.min_effect,
                             seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


__all__ = ["ConfigError", "MeasureSettings", "PhaseSettings"]
