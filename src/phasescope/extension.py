"""Extensions: what plugs into a :class:`~phasescope.engine.tracker.PhaseTracker` and a run.

An extension measures something more at every checkpoint (per-sample dynamics, transfer
probes, information-plane estimates, ...) or acts on what was measured (keep the weights at
the reconstruction minimum, stop training). It subclasses :class:`Extension` and overrides
only the hooks it needs; every hook has a no-op default. The lifecycle:

    setup(tracker)            once, when the tracker is built (layers, data, device known)
    measure(ctx) -> rows      at every checkpoint, on the frozen copy; tidy metric rows
    after_checkpoint(ctx)     after the checkpoint is recorded; may return a Decision to stop
    summarise(df, payload)    -> dict merged into phases.json (from results so far)
    write(out, df, payload, figure=...)   its own files in the run folder (atomically), when
                              the run ends; after every checkpoint too if ``checkpoint_files``
    summary_lines(payload)    (classmethod) lines for the printed summary, from phases.json
    report_context(payload)   (classmethod) what its section of report.html shows, from phases.json;
                              ``figures`` names its PNGs with their report section and caption
    rebuild(run_dir, df, payload)   (classmethod) recompute its phases.json part and figures from files
    state_dict() / load_state_dict()   resume
    restart()                 (optional) forget every checkpoint measured, keep what does not depend
                              on the weights (samples chosen, statistics of the inputs): a tracker
                              whose extensions all have it is reused from checkpoint to checkpoint by
                              ``phasescope analyze`` (:meth:`PhaseTracker.restart
                              <phasescope.engine.tracker.PhaseTracker.restart>`); without it, a new
                              tracker is built for every checkpoint

An extension also declares how a run (``phasescope run``, a sweep) uses it, all optional:

    options                   its typed options section (a dataclass subclass of
                              :class:`phasescope.config.Section`): config.json key, flags, help, checks
    from_config(setup)        (classmethod) the instances a run's configuration asks for
    check_config(cfg)         (classmethod) checks before any data is loaded
    files, figures            what it writes in a run folder; figures: file -> (report section, caption)
    report_template           its section of report.html (a Jinja fragment: a template name under
                              phasescope/templates, or the source), with ``report_title``/``report_anchor``
    draw_curves(ax, df, layer)   (classmethod) its curves on the accuracy axis of curves.png

Built-in extensions are listed by :mod:`phasescope.registry`; others install as plug-ins through
the ``phasescope.extensions`` entry-point group (see the README, "Write an extension").

``requires`` declares what the tracker's forward passes must capture for it, so nothing
is computed that no one uses: inputs of named modules over the fit set (:data:`HEAD`
names the model's final ``nn.Linear``), and whether it reads ``ctx.fit_features``. Those
cost nothing when the tracker kept them and one forward pass (once per checkpoint) when it
did not.

Under ``torch.distributed`` (a sharded tracker, see :class:`~phasescope.engine.tracker.PhaseTracker`)
an extension sees exactly what one process would: the context's logits, test features,
module inputs and decoders are every rank's, gathered, and the same on every rank. Its
``distributed`` attribute says where it runs:

* ``"all"`` (default): ``measure`` and ``after_checkpoint`` run on every rank, on the gathered
  tensors; since they see the same data, every rank keeps the same state and decides alike
  (rank 0's decision is still the one every rank takes). ``ctx.fit_features`` are gathered
  first when ``requires.fit_features`` says so; undeclared, reading them costs each rank a
  forward pass over all fit samples. ``ctx.features(x)`` always forwards all of ``x`` on the
  rank that calls it (no collective inside extension code: a rank failing in it cannot leave
  the others waiting).
* ``"rank0"``: only on rank 0, for extensions with side effects outside the run folder
  (:class:`~phasescope.interfaces.integrations.tensorboard.TensorBoardLogger` writes event files); the rows
  its ``measure`` returns are sent to the other ranks.

Files (``write``) are written by whoever writes the run folder: rank 0 only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

HEAD = "<head>"  # stands for the model's final nn.Linear in Requires.module_inputs


@dataclass(frozen=True)
class Requires:
    module_inputs: tuple[str, ...] = ()  # modules whose (flattened) input over the fit set is captured
    fit_features: bool = False  # reads ctx.fit_features: a sharded tracker gathers them from every rank first


@dataclass(frozen=True)
class Decision:
    """What an extension decides after a checkpoint; ``stop`` ends training."""

    stop: bool
    reason: str
    new_best: bool = False  # this checkpoint is the lowest reconstruction error so far
    best_iteration: int | None = None


@dataclass
class RunSetup:
    """What :meth:`Extension.from_config` builds a run's extensions from: the configuration
    (a :class:`~phasescope.config.RunConfig`), the data (:class:`~phasescope.data.Splits`) and the
    extensions already given. An extension that changes the pre-training data (the transfer
    class-split) replaces ``data``; the extensions built after it see the new data."""

    cfg: Any
    data: Any
    given: list = field(default_factory=list)


@dataclass
class CheckpointContext:
    """What an extension sees at a checkpoint. Tensors are on the CPU unless noted."""

    iteration: int
    model: nn.Module  # frozen, BatchNorm-prepared copy (on ``device``); do not train it
    live_model: nn.Module  # the user's model as it is at this iteration; read only
    tracker: Any  # the PhaseTracker measuring (its results so far: errors, rows, settings)
    layers: list[str]
    device: torch.device
    fit_x: torch.Tensor
    fit_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    features: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # x -> logits, {layer: (N, p)}
    test_features: dict[str, torch.Tensor]  # (n_test, p) per layer
    fit_logits: torch.Tensor  # (n_fit, K)
    test_logits: torch.Tensor  # (n_test, K)
    module_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n_fit, d), as required
    estimate: Callable[[Any], tuple[float, float, float]] | None = None  # values -> (mean, ci_low, ci_high)
    # (layer, test rows) -> the decoder's reconstructions of those test inputs, (len(rows), D) flattened
    reconstruct: Callable[[str, Any], torch.Tensor] | None = None
    decoders: dict[str, Any] = field(default_factory=dict)  # layer -> the fitted decoder (StreamingRidge when linear)
    _fit_features: dict[str, torch.Tensor] | None = None
    _fit_features_fn: Callable[[], dict[str, torch.Tensor]] | None = None

    @property
    def fit_features(self) -> dict[str, torch.Tensor]:
        """(n_fit, p) features per layer: kept from the fit pass, or computed once on first use."""
        if self._fit_features is None and self._fit_features_fn is not None:
            self._fit_features = self._fit_features_fn()
        return self._fit_features or {}

    def row(self, layer: str, split: str, metric: str, values: Any, **keys: Any) -> dict:
        """A tidy metric row; per-sample ``values`` get the tracker's bootstrap interval."""
        if isinstance(values, (int, float)):
            v, lo, hi = float(values), float("nan"), float("nan")
        else:
            v, lo, hi = self.estimate(values)
        return {"iteration": self.iteration, "layer": layer, "split": split, "metric": metric,
                "value": v, "ci_low": lo, "ci_high": hi, **keys}


class Extension:
    """Base class: override the hooks you need (see the module docstring).

    Under ``torch.distributed`` (a sharded tracker) ``measure`` and ``after_checkpoint`` run on
    every rank on the gathered data (``distributed = "all"``, the default: every built-in
    extension but the TensorBoard writer), or on rank 0 only (``"rank0"``: for side effects
    outside the run folder; the rows are sent to the other ranks). Declare
    ``requires = Requires(fit_features=True)`` when ``measure`` reads ``ctx.fit_features``.
    """

    name: str = "extension"
    requires: Requires = Requires()
    # True: write() also runs after every checkpoint, for files a kill must not lose (kept weights).
    # Summaries (tables, figures) are written once, when the run ends.
    checkpoint_files: bool = False
    # Its figures in the run folder: file -> (report.html section, caption).
    figures: dict[str, tuple[str, str]] = {}
    # Every file it may write in a run folder (--overwrite deletes these and no others:
    # phasescope.outputs.runs.RUN_FILES holds every registered extension's).
    files: tuple[str, ...] = ()
    # Under torch.distributed: "all" ranks run measure/after_checkpoint on the gathered data, or "rank0" only.
    distributed: str = "all"
    # Its options section (a Section dataclass; None: no options). Several extensions may share one.
    options: Any = None
    # Its section of report.html: a template name (e.g. "extensions/samples.html.j2") or Jinja source,
    # rendered with the report's context and report_context(payload); None: its figures only, if any.
    report_template: str | None = None
    report_title: str | None = None  # the section's entry in the report's navigation [name]
    report_anchor: str | None = None  # the section's id [name]
    report_order: int = 100  # sections are shown by this number, then in registry order
    # Optional hook (a method in the subclass): forget the checkpoints measured, keep what does not
    # depend on the weights. None: the extension cannot be restarted (see PhaseTracker.restart).
    restart: Any = None

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["Extension"]:
        """The instances of this extension a run's configuration asks for. By default one,
        ``cls(**options)`` with the options section's values as keyword arguments, when the
        extension is named in ``cfg.extensions`` (``--extension NAME``); none otherwise."""
        cfg = setup.cfg
        if cls.name not in (getattr(cfg, "extensions", None) or ()):
            return []
        options = getattr(cfg, cls.options.section).to_dict() if cls.options is not None else {}
        return [cls(**options)]

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ConfigError for what can be checked before any data is loaded."""

    @classmethod
    def draw_curves(cls, ax: Any, df: pd.DataFrame, layer: str) -> None:
        """Draw on the accuracy axis (0-1) of ``layer``'s panel of curves.png; labelled lines join its legend."""

    @classmethod
    def report_timings(cls, payload: dict) -> list[tuple[str, str]]:
        """Rows (what, time) for the timings table of report.html, from phases.json."""
        return []

    def setup(self, tracker: Any) -> None:
        pass

    def measure(self, ctx: CheckpointContext) -> list[dict]:
        return []

    def after_checkpoint(self, ctx: CheckpointContext) -> Decision | None:
        return None

    def describe(self) -> dict:
        """Settings recorded in config.json under ``extensions``."""
        return {}

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        return {}

    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        return []

    @classmethod
    def summary_lines(cls, payload: dict) -> list[Any]:
        """Lines (str or rich renderables) for the printed summary, from phases.json alone."""
        return []

    @classmethod
    def report_context(cls, payload: dict) -> dict:
        """Entries of report.html's template context for its section, from phases.json alone."""
        return {}

    @classmethod
    def figures_expected(cls, payload: dict) -> bool:
        """Whether a run with this phases.json should have drawn ``figures``."""
        return bool(payload.get(cls.name))

    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        """phases.json entries recomputed from the run folder's files (and figures redrawn)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
