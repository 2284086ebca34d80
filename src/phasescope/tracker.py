"""PhaseTracker: measure a model's learning phases from any training loop.

    tracker = PhaseTracker(model, layers=["features.3"], fit_data=(x_fit, y_fit),
                           test_data=(x_test, y_test), schedule=log_schedule(4096))
    for iteration in range(4097):
        tracker.maybe_measure(model, iteration)   # measures only at scheduled iterations
        ...one optimiser step...
    df = tracker.results()        # tidy pandas DataFrame
    phases = tracker.phases()     # {layer: PhaseResult}

At each scheduled iteration the tracker works on a frozen, BatchNorm-prepared copy of
the model (see measure.capture), so training is never disturbed: it touches neither the
model's weights, nor its submodules' train/eval modes, nor any random number generator.
A checkpoint is three steps:

1. **fit pass** (one forward over ``fit_data``): per layer, the sufficient statistics of
   one ridge regression whose targets are the input (the decoder) and the one-hot label
   (the probe): both share the Gram matrix of the features, so one accumulation serves two
   estimators. Features are kept for the probe's training accuracy when they fit in
   ``CACHE_BYTES``, else recomputed by one more forward pass.
2. **test pass** (one forward over ``test_data``): features and logits.
3. **scoring**: per-sample test reconstruction errors (kept for paired-bootstrap phase
   intervals), probe and classifier accuracy/loss with bootstrap intervals; then the
   extensions (see :mod:`phasescope.extension`).

Nothing is trusted: NaN/inf in activations, logits or the decoder's statistics raise
:class:`~phasescope.errors.NonFiniteActivations` (a :class:`TrainingDiverged`) before
anything of that checkpoint is recorded.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import defaults
from .defaults import BN_MODES, DECODERS, PROBES, TARGETS, TOKENS, check_choice
from .errors import NonFiniteActivations, NonFiniteInput
from .extension import HEAD, CheckpointContext, Decision, Extension, Requires
from .layers import Forward, dry_run
from .measure.capture import (FeatureMap, bn_layers, capture_inputs, feature_map, final_linear_name, flatten_features,
                              iter_batches, prepare)
from .measure.inputs import as_tensors as _as_tensors
from .measure.precision import full_precision
from .measure.probe import LinearProbe
from .measure.ridge import StreamingRidge
from .measure.targets import InputTarget, TokenTarget
from .models import ModelError, preserved_modes, resolve_layers
from .phases import PhaseResult, detect_phases
from .schedule import log_schedule
from .stats import Bootstrap

METRIC_COLUMNS = ["iteration", "layer", "split", "metric", "value", "ci_low", "ci_high"]
CACHE_BYTES = 1 << 30  # fit-set features kept in memory up to this size, else recomputed when needed


class _FiniteCheck:
    """Collects, without a device sync per batch, whether each named tensor stream stayed finite."""

    def __init__(self, iteration: int):
        self.iteration, self.ok = iteration, {}

    def add(self, what: str, t: torch.Tensor) -> None:
        ok = torch.isfinite(t).all()
        self.ok[what] = ok if what not in self.ok else self.ok[what] & ok

    def raise_if_any(self) -> None:
        bad = [what for what, ok in self.ok.items() if not bool(ok)]
        if bad:
            raise NonFiniteActivations(self.iteration, " and ".join(bad))


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device={device!r} is not a device name ({e}); use 'cpu', 'cuda' or 'cuda:N'.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s).")
    return dev


@dataclass
class _FitPass:
    solvers: dict[str, StreamingRidge]  # per layer: decoder (target "x") and ridge probe (target "y")
    logits: torch.Tensor  # (n_fit, K)
    features: dict[str, torch.Tensor] | None  # (n_fit, p) per layer when kept (see CACHE_BYTES)
    raw: dict[str, torch.Tensor] = field(default_factory=dict)  # unpooled outputs, conv decoder only
    module_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # as extensions require


@dataclass
class _TestPass:
    logits: torch.Tensor  # (n_test, K)
    features: dict[str, torch.Tensor]  # (n_test, p) per layer
    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    decoders: dict[str, Any] = field(default_factory=dict)  # per layer, set when scoring

    def reconstruct(self, layer: str, rows: Any) -> torch.Tensor:
        """Decoded inputs of test samples ``rows`` from ``layer``: (len(rows), D) flattened, on the CPU."""
        dec = self.decoders[layer]
        if isinstance(dec, StreamingRidge):
            return dec.predict(self.features[layer][rows], "x").cpu()
        return dec.predict(self.raw[layer][rows]).reshape(len(self.raw[layer][rows]), -1).cpu()


def _requires(ext: Any) -> Requires:
    return getattr(ext, "requires", None) or Requires()


def _hook(ext: Any, name: str):
    """An extension's hook, or the base class's no-op for objects that only implement some hooks."""
    return getattr(ext, name, None) or getattr(Extension(), name)


class PhaseTracker:
    """Measures reconstruction and probes of ``layers`` at the ``schedule``'s iterations.

    ``fit_data`` / ``test_data``: (x, y) tensors or arrays, or an iterable of (x, y) batches.
    ``decoder``: ``linear`` (exact ridge) or ``conv``; ``probe``: ``ridge`` or ``logistic``;
    ``relative_ridge``: ridge strength relative to the mean feature variance (``"auto"``: by
    GCV; a list: the first value is the measurement, the others a :class:`~phasescope.ridge_sweep.RidgeSweep`);
    ``bn_mode``/``bn_samples``: how BatchNorm statistics of the frozen copy are prepared
    (recalibrated on a seeded subset of ``bn_samples`` fit samples by default);
    ``extensions``: :class:`~phasescope.extension.Extension` objects; ``num_classes``:
    the label count when some class may be absent from the measurement samples (default:
    the model's number of logits).

    Any model: ``layers`` may select a tensor from a module's tuple/dict output
    (``"blocks.3[0]"``, ``"encoder[hidden]"``, see :mod:`phasescope.layers`); ``tokens`` says
    how (B, tokens, D) outputs become features: ``mean`` token, ``cls`` (token 0), ``last``
    (the last token) or ``pool`` (all tokens, average-pooled along the tokens to
    ``max_features``); ``auto`` [default]: ``last`` for token inputs, else ``mean``;
    ``forward(model, x)`` calls a model whose forward is not ``model(x) -> logits``, e.g.
    ``forward=lambda m, x: m(pixel_values=x).logits`` (outputs with ``.logits`` or a tuple
    whose first element is the logits are understood without it).

    Language models: ``target="tokens"`` when the inputs are windows of token ids ``(N, T)`` (see
    :mod:`phasescope.measure.targets`): the decoder reconstructs the one-hot of the last token of
    each window (``token_window=k``: of the last k tokens) from the features at the last position
    (``tokens="auto"``), and ``token_recovery`` rows say how often its argmax is that token; the
    label of a window is its next token, which the probe predicts and the model's logits (at the
    last position) score. ``vocab_size``: the number of token ids [the number of classes].
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        fit_data: Any,
        test_data: Any,
        schedule: Sequence[int] | int = 4096,
        *,
        decoder: str = "linear",
        probe: str = "ridge",
        bn_mode: str = "recalibrate",
        bn_samples: int | None = defaults.BN_SAMPLES,
        relative_ridge: float | str | Sequence[float | str] = defaults.RELATIVE_RIDGE,
        max_features: int = defaults.MAX_FEATURES,
        batch_size: int = defaults.MEASURE_BATCH_SIZE,
        bootstrap: int = defaults.BOOTSTRAP,
        confidence: float = defaults.CONFIDENCE,
        min_effect: float = defaults.MIN_EFFECT,
        device: str | torch.device | None = None,
        extensions: Sequence[Extension] = (),
        decoder_options: dict | None = None,
        seed: int = 0,
        num_classes: int | None = None,
        tokens: str = "auto",
        forward: Forward | None = None,
        target: str = "input",
        vocab_size: int | None = None,
        token_window: int = 1,
        ridge: float | None = None,  # deprecated name of relative_ridge
    ):
        if ridge is not None:
            warnings.warn("PhaseTracker(ridge=...) is deprecated; use relative_ridge=...", DeprecationWarning,
                          stacklevel=2)
            relative_ridge = ridge
        ridges = list(relative_ridge) if isinstance(relative_ridge, (list, tuple)) else [relative_ridge]
        relative_ridge = ridges[0]  # the main measurement; further values: a RidgeSweep (below)
        self.layers = list(layers)
        resolve_layers(model, self.layers)  # fail now, listing valid names, if a layer is unknown
        check_choice("target", target, TARGETS)
        token_ids = target == "tokens"  # inputs are token ids: kept as integers
        self.fit_x, self.fit_y = _as_tensors(fit_data, "fit_data", tokens=token_ids)
        self.test_x, self.test_y = _as_tensors(test_data, "test_data", tokens=token_ids)
        if self.fit_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"fit_data inputs have shape {tuple(self.fit_x.shape[1:])} but test_data inputs "
                             f"{tuple(self.test_x.shape[1:])}; both must be what the model takes.")
        if tokens == "auto":  # a language model is measured where it predicts: the last position
            tokens = "last" if token_ids else "mean"
        check_choice("tokens", tokens, TOKENS)
        self.tokens, self.forward = tokens, forward
        # One dry forward: every layer's output shape and the logits' (fails naming the layer or the data shape).
        shapes, logit_shape = dry_run(model, self.layers, tuple(self.fit_x.shape[1:]), forward,
                                      dtype=self.fit_x.dtype if token_ids else None)
        top = int(max(self.fit_y.max(), self.test_y.max()))
        if num_classes is not None and top >= num_classes:
            raise ValueError(f"labels go up to {top} but num_classes={num_classes}; labels must be 0..{num_classes - 1}.")
        if (num_classes if num_classes is not None else top + 1) < 2:
            raise ValueError("the labels hold a single class; a classifier's phases need at least two.")
        k = int(logit_shape[0])
        if k <= top or (num_classes is not None and k != num_classes):
            raise ModelError(f"The model outputs {k} logits per sample, but the labels go up to {top}"
                             + (f" and num_classes={num_classes}" if num_classes is not None else "")
                             + "; the tracker needs one logit per class.")
        self.num_classes = int(num_classes) if num_classes is not None else k
        # What the decoder reconstructs (measure.targets): the input, or the one-hot of its last token(s).
        self.target = (TokenTarget(vocab_size if vocab_size is not None else self.num_classes, self.num_classes,
                                   token_window) if token_ids else InputTarget(self.fit_y, self.num_classes))
        if token_ids:
            self.target.check(self.fit_x, "fit_data")
            self.target.check(self.test_x, "test_data")
            if decoder != "linear":
                raise ValueError(f"decoder={decoder!r} reconstructs images; token inputs use decoder='linear'.")
        self.schedule = sorted(set(log_schedule(schedule) if isinstance(schedule, int) else schedule))
        check_choice("decoder", decoder, DECODERS)
        check_choice("probe", probe, PROBES)
        check_choice("bn_mode", bn_mode, BN_MODES)
        if bn_samples is not None and bn_samples < 1:
            raise ValueError(f"bn_samples must be positive or None (all fit samples); got {bn_samples}.")
        self.decoder, self.probe, self.bn_mode = decoder, probe, bn_mode
        self.relative_ridge, self.max_features, self.batch_size = relative_ridge, max_features, batch_size
        self.bootstrap, self.confidence, self.min_effect = bootstrap, confidence, min_effect
        self.decoder_options = dict(decoder_options or {})
        self.seed = seed
        p = next(model.parameters(), None)
        self.device = _check_device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
        # BatchNorm recalibration: a seeded subset of the fit set; none at all without BatchNorm.
        self.bn_x = self._bn_subset(model, bn_samples)
        modules = resolve_layers(model, self.layers)
        self.layer_shapes = {n: list(shapes[n]) for n in self.layers}
        self.feature_maps: dict[str, FeatureMap] = {n: feature_map(shapes[n], max_features, tokens, modules[n])
                                                    for n in self.layers}
        self.pooling = {n: fm.grid for n, fm in self.feature_maps.items()}  # spatial grids, as recorded before
        if decoder == "conv":
            flat = [n for n in self.layers if len(shapes[n]) != 3]
            if flat:
                raise ValueError(f"decoder='conv' needs (C, H, W) layer outputs; {flat} have shapes "
                                 f"{[tuple(shapes[n]) for n in flat]}. Use decoder='linear' for them.")
        self.notes = [f"layer {n!r} has {self._feature_dim(n)} features for {len(self.fit_x)} fit samples: the decoder "
                      "can nearly memorise its fit set and its test loss then depends mostly on the ridge. Use more "
                      "fit samples, or a lower max_features (pooling), for clearly fewer features than samples."
                      for n in self.layers if self._feature_dim(n) >= len(self.fit_x)]
        for note in self.notes:
            warnings.warn(note, stacklevel=2)
        self.rows: list[dict] = []
        self.errors: dict[str, dict[int, np.ndarray]] = {n: {} for n in self.layers}  # layer -> it -> (n_test,)
        self.timings: dict[int, float] = {}
        self.decisions: dict[int, Decision] = {}
        self._bootstrap = Bootstrap(bootstrap, confidence, seed)  # phasescope.stats: every interval
        self.extensions = list(extensions)
        if len(ridges) > 1 and not any(getattr(e, "name", None) == "ridge_sweep" for e in self.extensions):
            from .ridge_sweep import RidgeSweep

            self.extensions.append(RidgeSweep(ridges[1:]))
        names = [e.name for e in self.extensions]
        if len(set(names)) != len(names):
            raise ValueError(f"extension names must be unique; got {names}.")
        for e in self.extensions:
            _hook(e, "setup")(self)
        # Module inputs captured in the fit pass, only as extensions require (HEAD = final Linear).
        wanted = dict.fromkeys(n for e in self.extensions for n in _requires(e).module_inputs)
        self.module_inputs = {n: (final_linear_name(model) if n == HEAD else n) for n in wanted}
        if None in self.module_inputs.values():
            raise ValueError("An extension needs the input of the model's final nn.Linear, but the model has none.")

    @property
    def ridge(self) -> float:  # deprecated alias
        return self.relative_ridge

    def _bn_subset(self, model: nn.Module, bn_samples: int | None) -> torch.Tensor | None:
        if self.bn_mode != "recalibrate" or not bn_layers(model):
            return None
        n = len(self.fit_x)
        if bn_samples is None or bn_samples >= n:
            return self.fit_x
        rows = np.sort(np.random.default_rng(self.seed).choice(n, bn_samples, replace=False))
        return self.fit_x[torch.as_tensor(rows)]

    # ------------------------------------------------------------------ schedule
    @property
    def measured(self) -> list[int]:
        return sorted(self.timings)

    def should_measure(self, iteration: int) -> bool:
        return iteration in self.schedule and iteration not in self.timings

    def maybe_measure(self, model: nn.Module, iteration: int) -> list[dict] | None:
        """Measure if ``iteration`` is scheduled and not yet measured; else do nothing."""
        return self.measure(model, iteration) if self.should_measure(iteration) else None

    @property
    def stop(self) -> Decision | None:
        """The first extension decision to stop training, if any (e.g. --stop-on-increase)."""
        return next((d for _, d in sorted(self.decisions.items()) if d.stop), None)

    def describe(self) -> dict:
        """Measurement settings, as recorded in config.json."""
        return {
            "layers": self.layers, "layer_shapes": self.layer_shapes,
            "pooled_to_grid": {n: g for n, g in self.pooling.items()}, "tokens": self.tokens,
            **({"target": self.target.describe()} if self.target.kind != "input" else {}),
            "features_from": {n: fm.describe() for n, fm in self.feature_maps.items()},
            **({"forward": getattr(self.forward, "__name__", type(self.forward).__name__)} if self.forward else {}),
            "decoder": self.decoder,
            "decoder_options": self.decoder_options, "probe": self.probe, "bn_mode": self.bn_mode,
            "bn_samples": None if self.bn_x is None else int(len(self.bn_x)),
            "relative_ridge": self.relative_ridge, "max_features": self.max_features,
            "measure_batch_size": self.batch_size,
            "fit_samples": int(len(self.fit_x)), "test_samples": int(len(self.test_x)),
            "bootstrap": self.bootstrap, "confidence": self.confidence, "min_effect": self.min_effect,
            "schedule": self.schedule,
            "extensions": {e.name: _hook(e, "describe")() or {} for e in self.extensions},
            "notes": self.notes,
        }

    # ------------------------------------------------------------------ measurement
    def estimate(self, values: torch.Tensor | np.ndarray) -> tuple[float, float, float]:
        """Mean of per-sample ``values`` with its bootstrap interval (seeded, weights cached per size)."""
        return self._bootstrap.estimate(values)

    def features(self, frozen: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and pooled (N, p) features of every tracked layer for inputs ``x``."""
        logits = torch.empty(len(x), self.num_classes)
        feats = {n: torch.empty(len(x), self._feature_dim(n)) for n in self.layers}  # filled in place: one copy
        for rows, lg, outs in iter_batches(frozen, self.layers, x, self.batch_size, self.device, self.forward):
            logits[rows] = lg.float().cpu()
            for n in self.layers:
                feats[n][rows] = flatten_features(outs[n], self.feature_maps[n]).cpu()
        return logits, feats

    def measure(self, model: nn.Module, iteration: int) -> list[dict]:
        """Measure now, at ``iteration`` (scheduled or not), and return the new rows."""
        t0 = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        try:  # never moves training's RNG, no TF32, and every submodule keeps its own train/eval mode
            with torch.random.fork_rng(devices=devices), full_precision(), preserved_modes(model):
                rows, errors, ctx = self._measure(model, iteration)
        except NonFiniteInput as e:  # a decoder/probe solve met overflowed statistics
            raise NonFiniteActivations(iteration, "the decoder's statistics (products of the features overflowed)") from e
        # The checkpoint succeeded as a whole: record it, then let extensions act on it.
        for n, err in errors.items():
            self.errors[n][iteration] = err
        self.rows.extend(rows)
        self.timings[iteration] = time.perf_counter() - t0
        for ext in self.extensions:
            d = _hook(ext, "after_checkpoint")(ctx)
            if d is not None:
                self.decisions[iteration] = d if d.stop or iteration not in self.decisions else self.decisions[iteration]
        return rows

    def _measure(self, model: nn.Module, it: int) -> tuple[list[dict], dict[str, np.ndarray], CheckpointContext]:
        no_bn = self.bn_mode == "recalibrate" and self.bn_x is None  # no BatchNorm: nothing to recalibrate
        frozen = prepare(model, "running" if no_bn else self.bn_mode, self.bn_x, self.batch_size, self.device,
                         self.forward)
        fit = self._fit_pass(frozen, it)
        test = self._test_pass(frozen, it)
        if fit.features is None and self.probe == "logistic":  # the iterative probe needs them all at once
            fit.features = self.features(frozen, self.fit_x)[1]
        rows, errors = self._score(it, fit, test, frozen)
        ctx = CheckpointContext(
            iteration=it, model=frozen, live_model=model, tracker=self, layers=self.layers, device=self.device,
            fit_x=self.fit_x, fit_y=self.fit_y, test_x=self.test_x, test_y=self.test_y,
            features=lambda x: self.features(frozen, x), test_features=test.features, fit_logits=fit.logits,
            test_logits=test.logits, module_inputs=fit.module_inputs, estimate=self.estimate,
            _fit_features=fit.features, _fit_features_fn=lambda: self.features(frozen, self.fit_x)[1],
            reconstruct=test.reconstruct, decoders=test.decoders,
        )
        for ext in self.extensions:
            rows += ext.measure(ctx)
        return rows, errors, ctx

    def _keep_fit_features(self) -> bool:
        return sum(self._feature_dim(n) for n in self.layers) * len(self.fit_x) * 4 <= CACHE_BYTES

    def _fit_pass(self, frozen: nn.Module, it: int) -> _FitPass:
        """One forward over the fit set: the ridge statistics of decoder and probe, per layer."""
        finite = _FiniteCheck(it)
        n, conv = len(self.fit_x), self.decoder == "conv"
        solvers = {name: StreamingRidge(self.relative_ridge) for name in self.layers}
        keep = self._keep_fit_features()
        feats = {name: torch.empty(n, self._feature_dim(name)) for name in self.layers} if keep else None
        raw: dict[str, list] = {name: [] for name in self.layers}
        logits = torch.empty(n, self.num_classes)
        with capture_inputs(frozen, list(self.module_inputs.values())) as inputs:
            for rows, lg, outs in iter_batches(frozen, self.layers, self.fit_x, self.batch_size, self.device,
                                               self.forward):
                finite.add("the logits", lg)
                logits[rows] = lg.float().cpu()
                targets = self.target.fit_targets(self.fit_x[rows], self.fit_y[rows], rows, self.device)
                for name in self.layers:
                    h = flatten_features(outs[name], self.feature_maps[name])
                    finite.add(f"activations of layer {name!r}", h)
                    solvers[name].partial_fit(h, targets)
                    if keep:
                        feats[name][rows] = h.cpu()
                    if conv:
                        raw[name].append(outs[name].float().cpu())
        finite.raise_if_any()  # before any solve: nothing of this checkpoint is recorded
        for s in solvers.values():
            s.solve()
        captured = {key: torch.cat([a.float().cpu() for a in inputs[mod]]) for key, mod in self.module_inputs.items()}
        return _FitPass(solvers, logits, feats, {k: torch.cat(v) for k, v in raw.items() if v}, captured)

    def _test_pass(self, frozen: nn.Module, it: int) -> _TestPass:
        """One forward over the test set: features and logits (and raw outputs for the conv decoder)."""
        finite = _FiniteCheck(it)
        n, conv = len(self.test_x), self.decoder == "conv"
        feats = {name: torch.empty(n, self._feature_dim(name)) for name in self.layers}
        raw: dict[str, list] = {name: [] for name in self.layers}
        logits = torch.empty(n, self.num_classes)
        for rows, lg, outs in iter_batches(frozen, self.layers, self.test_x, self.batch_size, self.device,
                                           self.forward):
            finite.add("the logits", lg)
            logits[rows] = lg.float().cpu()
            for name in self.layers:
                h = flatten_features(outs[name], self.feature_maps[name])
                finite.add(f"activations of layer {name!r}", h)
                feats[name][rows] = h.cpu()
                if conv:
                    raw[name].append(outs[name].float().cpu())
        finite.raise_if_any()
        return _TestPass(logits, feats, {k: torch.cat(v) for k, v in raw.items() if v})

    def _score(self, it: int, fit: _FitPass, test: _TestPass, frozen: nn.Module) -> tuple[list[dict], dict[str, np.ndarray]]:
        """Per-sample errors and metric rows of decoder, probe and classifier."""
        rows: list[dict] = []
        errors: dict[str, np.ndarray] = {}
        decoders = test.decoders  # filled per layer: what reconstructs the input from that layer
        probes = {n: self._probe(fit.solvers[n], None if fit.features is None else fit.features[n]) for n in self.layers}
        train_scores = ({n: probes[n].per_sample(fit.features[n], self.fit_y) for n in self.layers}
                        if fit.features is not None else self._streamed_train_scores(frozen, probes))
        for n in self.layers:
            extra_test: dict[str, torch.Tensor] = {}
            if self.decoder == "conv":
                err, train_mse, extra, decoders[n] = self._conv_decoder(fit.raw[n], test.raw[n])
                rows += [self._row(it, n, "train", k, v) for k, v in extra.items()]
            else:
                solver = decoders[n] = fit.solvers[n]
                err, extra_test = self.target.score(solver, test.features[n], self.test_x, self.device)
                train_mse = solver.train_mse_["x"]
                if self.relative_ridge == "auto":  # what GCV chose at this checkpoint
                    rows.append(self._row(it, n, "train", "decoder_lambda", float(solver.lams_["x"])))
                    rows.append(self._row(it, n, "train", "decoder_dof", float(solver.dof_["x"])))
            if not torch.isfinite(err).all():  # finite features so large that the reconstruction overflowed
                raise NonFiniteActivations(it, f"the reconstructions from layer {n!r}")
            errors[n] = err.numpy()
            rows.append(self._row(it, n, "test", "reconstruction_mse", err))
            rows.append(self._row(it, n, "train", "reconstruction_mse", train_mse))
            rows += [self._row(it, n, "test", k, v) for k, v in extra_test.items()]  # token_recovery
            for split, (correct, loss) in (("train", train_scores[n]),
                                           ("test", probes[n].per_sample(test.features[n], self.test_y))):
                rows.append(self._row(it, n, split, "probe_accuracy", correct))
                rows.append(self._row(it, n, split, "probe_loss", loss))
        for split, lg, y in (("train", fit.logits, self.fit_y), ("test", test.logits, self.test_y)):
            rows.append(self._row(it, "model", split, "accuracy", (lg.argmax(1) == y).double()))
            rows.append(self._row(it, "model", split, "loss", F.cross_entropy(lg, y, reduction="none").double()))
        return rows, errors

    def _streamed_train_scores(self, frozen: nn.Module, probes: dict[str, LinearProbe]) -> dict[str, tuple]:
        """Probe correctness and loss on the fit set without holding its features (one forward)."""
        parts: dict[str, list] = {n: [] for n in self.layers}
        for rows, _, outs in iter_batches(frozen, self.layers, self.fit_x, self.batch_size, self.device, self.forward):
            for n in self.layers:
                parts[n].append(probes[n].per_sample(flatten_features(outs[n], self.feature_maps[n]), self.fit_y[rows]))
        return {n: tuple(np.concatenate(k) for k in zip(*v)) for n, v in parts.items()}

    def _probe(self, solver: StreamingRidge, H_fit: torch.Tensor | None) -> LinearProbe:
        """The label probe: the ridge one shares the decoder's solved statistics (target "y")."""
        if self.probe == "ridge":
            return LinearProbe.from_solver(solver, "y", num_classes=self.num_classes, device=self.device)
        return LinearProbe("logistic", num_classes=self.num_classes, seed=self.seed).fit(H_fit, self.fit_y)

    def _conv_decoder(self, raw_fit: torch.Tensor, raw_test: torch.Tensor) -> tuple[torch.Tensor, float, dict, Any]:
        from .measure.conv_decoder import ConvDecoder  # the iterative decoder is optional and heavier

        dec = ConvDecoder(seed=self.seed, device=str(self.device), **self.decoder_options)
        with warnings.catch_warnings():  # convergence is recorded as a metric instead
            warnings.simplefilter("ignore", UserWarning)
            dec.fit(raw_fit, self.fit_x)
        err = dec.per_sample_error(raw_test, self.test_x).double().cpu()
        return err, float(dec.train_mse_), {"decoder_converged": float(dec.converged_),
                                            "decoder_epochs": float(dec.epochs_run_)}, dec

    def _row(self, it: int, layer: str, split: str, metric: str, values: Any) -> dict:
        v, lo, hi = (float(values), float("nan"), float("nan")) if isinstance(values, float) else self.estimate(values)
        return {"iteration": it, "layer": layer, "split": split, "metric": metric, "value": v, "ci_low": lo, "ci_high": hi}

    def _feature_dim(self, layer: str) -> int:
        return self.feature_maps[layer].features

    # ------------------------------------------------------------------ results
    def results(self) -> pd.DataFrame:
        """All measurements so far as a tidy DataFrame (one row per measurement).

        The core columns come first; keys that extensions add to their rows (``task`` for
        transfer probes, ...) follow as extra columns, empty for rows without them.
        """
        extra = [k for k in dict.fromkeys(k for r in self.rows for k in r) if k not in METRIC_COLUMNS]
        df = pd.DataFrame(self.rows, columns=METRIC_COLUMNS + extra)
        return df.sort_values(["iteration", "layer", "split", "metric"], kind="stable").reset_index(drop=True)

    def error_matrix(self, layer: str) -> tuple[list[int], np.ndarray]:
        """Checkpoint iterations and the (K, n_test) per-sample test reconstruction errors."""
        its = sorted(self.errors[layer])
        return its, np.stack([self.errors[layer][i] for i in its]) if its else np.zeros((0, len(self.test_x)))

    def phases(self) -> dict[str, PhaseResult]:
        """Phases of every tracked layer from the checkpoints measured so far (needs >= 2)."""
        out = {}
        for n in self.layers:
            its, E = self.error_matrix(n)
            if len(its) >= 2:
                out[n] = detect_phases(its, E, confidence=self.confidence, n_boot=self.bootstrap,
                                       min_effect=self.min_effect, seed=self.seed)
        return out

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {
            "rows": list(self.rows),
            "errors": {n: dict(v) for n, v in self.errors.items()},
            "timings": dict(self.timings),
            "decisions": dict(self.decisions),
            "extensions": {e.name: e.state_dict() for e in self.extensions if hasattr(e, "state_dict")},
        }

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self.errors = {n: {int(k): np.asarray(v) for k, v in state["errors"].get(n, {}).items()} for n in self.layers}
        self.timings = {int(k): float(v) for k, v in state["timings"].items()}
        self.decisions = {int(k): v for k, v in state.get("decisions", {}).items()}
        for e in self.extensions:
            if hasattr(e, "load_state_dict") and e.name in state.get("extensions", {}):
                e.load_state_dict(state["extensions"][e.name])
