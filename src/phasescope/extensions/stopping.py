"""``BestFeaturesKeeper``: keep the weights at the reconstruction minimum, and stop there.

Features transfer best around the reconstruction minimum, before the network starts
fitting the few. The minimum needs no transfer labels: it is read off the tracker's test
reconstruction curve. The keeper is a tracker extension: after every checkpoint it keeps
a copy of the weights when the error is the lowest so far, and (``stop_on_increase``)
tells the loop to stop once the rise after the minimum is significant:

    keeper = BestFeaturesKeeper(layer="features.3", stop_on_increase=True)
    tracker = PhaseTracker(model, layers, fit, test, schedule=4096, extensions=[keeper])
    for it in range(4097):
        tracker.maybe_measure(model, it)
        if tracker.stop:                       # the keeper's decision
            break
        ...one optimiser step...
    keeper.restore(model)                      # the weights at the minimum seen so far

``BestFeaturesKeeper(tracker)`` with ``keeper.update(model, it)`` at every iteration works too
(the keeper then drives the tracker itself).

The hook is thin: :func:`decide` is a pure function of the checkpoints' per-sample
errors, tested without training. Stopping uses the same paired bootstrap and the same
(Bonferroni-adjusted) rule as :func:`~phasescope.engine.phases.detect_phases`: stop once the
curve so far has a significant increase after its minimum (and, by default, a
significant decrease before it, so a curve that only rises at the start does not stop
training at initialisation).

The kept weights are the model's full ``state_dict`` (BatchNorm buffers included, as
training left them); recalibrate BatchNorm on your data before using frozen features
(:func:`phasescope.engine.measure.capture.recalibrate_bn`), as the tracker does.
"""
from __future__ import annotations

import dataclasses

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..extension import CheckpointContext, Decision, Extension, RunSetup
from ..errors import StopTraining  # noqa: F401  (re-exported: raised by training hooks)
from ..engine.phases import PhaseSettings, detect_phases
from .transfer.options import TransferOptions
from ..outputs.runs import atomic_write


def decide(iterations: Sequence[int], errors: np.ndarray, *, stop_on_increase: bool = False,
           require_decrease: bool = True, settings: PhaseSettings | None = None, confidence: float | None = None,
           n_boot: int | None = None, min_effect: float | None = None, seed: int | None = None) -> Decision:
    """Keep and stop decision after the last of ``iterations``.

    ``settings``: how phases are decided (:class:`~phasescope.engine.phases.PhaseSettings`; the loose
    ``confidence``, ``n_boot``, ``min_effect`` and ``seed`` replace its values when given).

    ``errors``: (K, n) per-sample test reconstruction errors of the same n samples at the K
    checkpoints so far (or a (K,) curve of means; then only ``min_effect`` decides).
    ``new_best`` when the last checkpoint has the lowest mean error so far (strictly, the
    first of ties wins); ``stop`` when ``stop_on_increase`` and
    ``detect_phases`` on these checkpoints finds a significant increase (and, with
    ``require_decrease``, a significant decrease before the minimum).
    """
    its = [int(i) for i in iterations]
    E = np.asarray(errors, dtype=np.float64)
    if not its:
        return Decision(False, "no checkpoint measured yet")
    mean = E.mean(axis=1) if E.ndim == 2 else E
    k_min = int(np.argmin(mean))
    new_best = k_min == len(its) - 1
    best = its[k_min]
    if not stop_on_increase or len(its) < (3 if require_decrease else 2):
        why = "new minimum of the reconstruction error" if new_best else f"minimum still at iteration {best}"
        return Decision(False, why, new_best, best)
    r = detect_phases(its, E, settings=settings, confidence=confidence, n_boot=n_boot, min_effect=min_effect, seed=seed)
    inc = r.relative_increase
    ci = "" if inc.ci_low is None or not np.isfinite(inc.ci_low) else \
        f" [{100 * inc.ci_low:.1f}%, {100 * inc.ci_high:.1f}%]"
    increase = (f"reconstruction error at iteration {r.max_after_min_iteration} is "
                f"{100 * inc.value:.1f}%{ci} above the minimum at iteration {best}")
    if r.increase_significant and (r.decrease_significant or not require_decrease):
        return Decision(True, f"stop: {increase} (significant, paired bootstrap)", new_best, best)
    if r.increase_significant:
        return Decision(False, f"{increase}, but no significant decrease came before it", new_best, best)
    why = "new minimum of the reconstruction error" if new_best else f"{increase}: not significant yet"
    return Decision(False, why, new_best, best)


class BestFeaturesKeeper(Extension):
    """Keeps a copy of the weights at the lowest test reconstruction error of ``layer``.

    ``layer`` defaults to the tracker's last tracked layer; the statistical settings default
    to the tracker's. ``meta`` is stored with the weights in best_features.pt.
    """

    name = "best_features"
    options = TransferOptions  # keep_best, stop_on_increase, keep_layer (shared with the transfer probes)
    checkpoint_files = True  # the kept weights must survive a kill
    FILE = "best_features.pt"
    files = (FILE,)

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["BestFeaturesKeeper"]:
        """The keeper of a run when ``cfg.transfer.keep_best`` (``--keep-best``, ``--stop-on-increase``)."""
        cfg = setup.cfg
        t = cfg.transfer
        if not t.keep_best and cls.name not in (getattr(cfg, "extensions", None) or ()):
            return []
        return [cls(layer=t.keep_layer, stop_on_increase=t.stop_on_increase,
                    meta={"model": cfg.model, "config": cfg.to_dict()})]

    def __init__(self, tracker=None, layer: str | None = None, *, stop_on_increase: bool = False,
                 require_decrease: bool = True, confidence: float | None = None, n_boot: int | None = None,
                 min_effect: float | None = None, seed: int | None = None, meta: dict | None = None):
        self.layer, self.stop_on_increase, self.require_decrease = layer, stop_on_increase, require_decrease
        self.confidence, self.n_boot, self.min_effect, self.seed = confidence, n_boot, min_effect, seed
        self.meta = dict(meta or {})
        self.tracker = None
        self.best_iteration: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_iteration: int | None = None
        self.decision: Decision | None = None
        self._saved: int | None = None  # iteration of the weights last written to best_features.pt
        if tracker is not None:
            self.setup(tracker)

    def setup(self, tracker) -> None:
        """Attach to ``tracker`` (anything with ``layers``, ``error_matrix(layer)`` and ``maybe_measure``)."""
        self.tracker = tracker
        self.layer = self.layer if self.layer is not None else tracker.layers[-1]
        if self.layer not in tracker.layers:
            raise ValueError(f"layer={self.layer!r} is not tracked; choose one of: {', '.join(tracker.layers)}.")
        # The phase settings given to the keeper, else the tracker's (else the defaults): one checked value.
        theirs = PhaseSettings.from_config(tracker)
        mine = {"confidence": self.confidence, "bootstrap": self.n_boot, "min_effect": self.min_effect, "seed": self.seed}
        self.phase_settings = dataclasses.replace(theirs, **{k: v for k, v in mine.items() if v is not None})
        s = self.phase_settings
        self.confidence, self.n_boot, self.min_effect, self.seed = s.confidence, s.bootstrap, s.min_effect, s.seed

    # ------------------------------------------------------------------ the hooks
    def after_checkpoint(self, ctx: CheckpointContext) -> Decision:
        return self._decide(ctx.live_model, ctx.iteration)

    def update(self, model: nn.Module, iteration: int) -> Decision:
        """Measure through the tracker if scheduled, then keep/stop after this checkpoint.

        For loops that drive the keeper rather than the tracker: call it at every iteration
        with the model as it is then; iterations without a new measurement return the last
        decision (or a no-op one).
        """
        self.tracker.maybe_measure(model, iteration)  # as an extension, after_checkpoint already decided
        return self._decide(model, iteration)

    def _decide(self, model: nn.Module, iteration: int) -> Decision:
        its, E = self.tracker.error_matrix(self.layer)
        if iteration not in its or (self.last_iteration is not None and iteration <= self.last_iteration):
            return self.decision or Decision(False, f"no measurement at iteration {iteration}")
        upto = [k for k, i in enumerate(its) if i <= iteration]
        d = decide([its[k] for k in upto], E[upto], stop_on_increase=self.stop_on_increase,
                   require_decrease=self.require_decrease, settings=self.phase_settings)
        if d.new_best:
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.best_iteration = int(iteration)
        self.last_iteration = int(iteration)
        self.decision = d
        return d

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the kept weights into ``model`` (exactly; buffers included)."""
        if self.best_state is None:
            raise RuntimeError("BestFeaturesKeeper has kept no weights yet: call update(model, iteration) "
                               "at measured iterations first.")
        model.load_state_dict(self.best_state)
        return model

    def describe(self) -> dict:
        return {"layer": self.layer, "best_iteration": self.best_iteration, "last_iteration": self.last_iteration,
                "stop_on_increase": self.stop_on_increase, "require_decrease": self.require_decrease,
                "decision": asdict(self.decision) if self.decision else None}

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        return {"best_features": {**self.describe(), "file": self.FILE}}

    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        """best_features.pt, rewritten only when the kept weights changed."""
        if self.best_state is None or self._saved == self.best_iteration:
            return []
        self.save(Path(out) / self.FILE, **self.meta)
        self._saved = self.best_iteration
        return [Path(out) / self.FILE]

    @classmethod
    def summary_lines(cls, payload: dict) -> list[str]:
        best = payload.get("best_features")
        if not best or best.get("best_iteration") is None:
            return []
        why = (best.get("decision") or {}).get("reason", "")
        return [f"best features (reconstruction minimum of {best['layer']}): iteration {best['best_iteration']}"
                f" -> {best['file']}" + (f"; {why}" if payload.get("status") == "stopped" else "")]

    def state_dict(self) -> dict:
        return {**self.describe(), "best_state": self.best_state, "saved": self._saved}

    def load_state_dict(self, state: dict) -> None:
        if state.get("layer") not in (None, self.layer):
            raise ValueError(f"State was kept for layer {state['layer']!r}, this keeper tracks {self.layer!r}.")
        self.best_iteration = state.get("best_iteration")
        self.last_iteration = state.get("last_iteration")
        self.best_state = state.get("best_state")
        self._saved = state.get("saved")
        d = state.get("decision")
        self.decision = Decision(**d) if d else None

    def save(self, path, **meta: Any) -> None:
        """Write the kept weights with their iteration and layer (atomically) to ``path``."""
        doc = {"iteration": self.best_iteration, "layer": self.layer, "state_dict": self.best_state,
               "decision": asdict(self.decision) if self.decision else None, **meta}
        atomic_write(path, lambda p: torch.save(doc, p))
