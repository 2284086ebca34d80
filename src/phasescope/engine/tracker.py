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
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import defaults, registry
from ..errors import ModelError, NonFiniteActivations, NonFiniteInput
from ..extension import HEAD, CheckpointContext, Decision, Extension, Requires
from .layers import Forward, dry_run, preserved_modes, resolve_layers
from .measure.capture import (FeatureMap, bn_layers, capture_inputs, channels_last_helps, feature_map,
                              final_linear_name, flatten_features, iter_batches, prepare)
from .measure.conv_decoder import ConvDecoder
from .measure.distributed import DEFAULT_TIMEOUT, Shard, check_distributed, local_module, resolve_group
from .measure.inputs import RowSubset, as_tensors as _as_tensors
from .measure.precision import full_precision
from .measure.probe import LinearProbe
from .measure.ridge import OneHot, StreamingRidge, all_reduce_statistics
from .measure.span import InputSpan, Projected
from .measure.targets import InputTarget, TokenTarget
from .phases import PhaseResult, detect_phases
from .schedule import log_schedule
from .settings import MeasureSettings
from .stats import Bootstrap

METRIC_COLUMNS = ["iteration", "layer", "split", "metric", "value", "ci_low", "ci_high"]
MIN_SAMPLES = 2  # per split: the decoder's ridge regression needs two fit samples, an interval two test samples
CACHE_BYTES = 1 << 30  # fit-set features kept in memory up to this size, else recomputed when needed
BATCH_INPUT_BYTES = 1 << 26  # measurement batches hold at most this much input (64 MiB: 111 images of 224 x 224 x 3
# in float32); a batch's activations grow with its input, so large inputs are forwarded in fewer rows at a time


def _merge_stats(held: list[list[tuple]]) -> list[tuple]:
    """One group's ridge statistics inputs from its batches' (``(layer, features, targets)`` per
    layer, every layer sharing one targets dict): features and targets concatenated in row order."""
    if len(held) == 1:
        return held[0]
    first = held[0][0][2]
    targets = {k: (OneHot(torch.cat([b[0][2][k].index for b in held]), v.num_classes) if isinstance(v, OneHot)
                   else torch.cat([b[0][2][k] for b in held])) for k, v in first.items()}
    return [(name, torch.cat([b[i][1] for b in held]), targets) for i, (name, _, _) in enumerate(held[0])]


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
    features: dict[str, torch.Tensor] | None  # (n_fit, p) per layer when kept (see CACHE_BYTES); sharded: the share's
    raw: dict[str, torch.Tensor] = field(default_factory=dict)  # unpooled outputs, conv decoder only
    module_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # as extensions require
    rows: slice = field(default_factory=lambda: slice(None))  # the fit rows of ``features`` (sharded: this rank's share)
    gathered: dict[str, torch.Tensor] | None = None  # sharded: every rank's features, once gathered


@dataclass
class _TestPass:
    logits: torch.Tensor  # (n_test, K)
    features: dict[str, torch.Tensor]  # (n_test, p) per layer (sharded: this rank's rows until gathered)
    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    decoders: dict[str, Any] = field(default_factory=dict)  # per layer, set when scoring
    rows: slice = field(default_factory=lambda: slice(None))  # the test rows of ``features`` while they are this rank's share

    def reconstruct(self, layer: str, rows: Any) -> torch.Tensor:
        """Decoded inputs of test samples ``rows`` from ``layer``: (len(rows), D) flattened, on the CPU."""
        dec = self.decoders[layer]
        if isinstance(dec, StreamingRidge):
            return dec.predict(self.features[layer][rows], "x").cpu()
        return dec.predict(self.raw[layer][rows]).reshape(len(self.raw[layer][rows]), -1).cpu()


def _per_sample(probe: LinearProbe, H: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A probe's per-sample correctness and loss; empty for no samples (a rank's empty share)."""
    return probe.per_sample(H, y) if len(y) else (np.zeros(0), np.zeros(0))


def _everywhere(ext: Any) -> bool:
    """Whether a sharded tracker runs this extension on every rank (else on rank 0 only; see Extension)."""
    return getattr(ext, "distributed", "all") != "rank0"


def _requires(ext: Any) -> Requires:
    return getattr(ext, "requires", None) or Requires()


def _hook(ext: Any, name: str):
    """An extension's hook, or the base class's no-op for objects that only implement some hooks."""
    return getattr(ext, name, None) or getattr(Extension(), name)


class PhaseTracker:
    """Measures reconstruction and probes of ``layers`` at the ``schedule``'s iterations.

    ``fit_data`` / ``test_data``: (x, y) tensors or arrays, or an iterable of (x, y) batches.
    ``settings``: a :class:`~phasescope.engine.settings.MeasureSettings` (typed, checked once); the
    measurement keywords below (``decoder=``, ``probe=``, ``relative_ridge=``, ``bootstrap=``, ...:
    its fields) build it, or change the given ``settings``. ``tracker.settings`` holds the result.
    ``decoder``: ``linear`` (exact ridge) or ``conv``; ``probe``: ``ridge`` or ``logistic``;
    ``relative_ridge``: ridge strength relative to the mean feature variance (``"auto"``: by
    GCV; a list: the first value is the measurement, the others a :class:`~phasescope.extensions.ridge_sweep.RidgeSweep`);
    ``bn_mode``/``bn_samples``: how BatchNorm statistics of the frozen copy are prepared
    (recalibrated on a seeded subset of ``bn_samples`` fit samples by default);
    ``extensions``: :class:`~phasescope.extension.Extension` objects, or names of registered
    ones (``"samples"``, ``"infoplane:estimators=binning+kde"``); ``num_classes``:
    the label count when some class may be absent from the measurement samples (default:
    the model's number of logits).

    Any model: ``layers`` may select a tensor from a module's tuple/dict output
    (``"blocks.3[0]"``, ``"encoder[hidden]"``, see :mod:`phasescope.engine.layers`); ``tokens`` says
    how (B, tokens, D) outputs become features: ``mean`` token, ``cls`` (token 0), ``last``
    (the last token) or ``pool`` (all tokens, average-pooled along the tokens to
    ``max_features``); ``auto`` [default]: ``last`` for token inputs, else ``mean``;
    ``forward(model, x)`` calls a model whose forward is not ``model(x) -> logits``, e.g.
    ``forward=lambda m, x: m(pixel_values=x).logits`` (outputs with ``.logits`` or a tuple
    whose first element is the logits are understood without it).

    Several processes: ``distributed="auto"`` (default) shares each checkpoint among the ranks of
    ``torch.distributed``'s default group when it is initialised with more than one rank; a
    ``ProcessGroup`` names the group; ``False`` measures in the calling process alone. Sharded,
    every rank must build the tracker and call :meth:`measure` at the same iterations; each
    forwards its share of the samples, and all return exactly one process's rows (see
    :mod:`phasescope.engine.measure.distributed`). ``distributed_timeout``: seconds a rank waits for the
    others before raising :class:`~phasescope.errors.RankFailed`. A model wrapped in
    DistributedDataParallel is measured as its ``.module`` (layer names are the module's); FSDP
    models are refused.

    ``input_span``: ``"auto"`` (default) fits the linear decoder of inputs with more values than
    fit samples (D > n, e.g. 224 x 224 x 3 images) to the inputs' coordinates in the span of the
    centred fit inputs (r <= n of them, computed once per tracker; see
    :mod:`phasescope.engine.measure.span`): the same per-sample errors, training error and
    reconstructions, without (p, D) products; ``"off"`` decodes all D values. Token targets
    never use the span (``"auto"`` is ``"off"`` for them; see below); ``tracker.span`` is the span
    once computed. Input tensors are used as given (not copied; a DataLoader's inputs over
    ``SPILL_BYTES`` go to a memory-mapped temporary file; see :mod:`phasescope.engine.measure.inputs`),
    and large inputs are forwarded in batches of at most ``BATCH_INPUT_BYTES`` of input
    (``batch_size``: the rows forwarded at a time, ``measure_batch_size`` or fewer; recorded as
    ``measure_batch_rows`` when fewer), their decoder statistics accumulated in groups of up to
    ``measure_batch_size`` rows.

    Language models: ``target="tokens"`` when the inputs are windows of token ids ``(N, T)`` (see
    :mod:`phasescope.engine.measure.targets`): the decoder reconstructs the one-hot of the last token of
    each window (``token_window=k``: of the last k tokens) from the features at the last position
    (``tokens="auto"``), and ``token_recovery`` rows say how often its argmax is that token; the
    label of a window is its next token, which the probe predicts and the model's logits (at the
    last position) score. ``vocab_size``: the number of token ids [the number of classes].
    Sharded, the one-hot statistics are index-added per rank and summed over the ranks like the
    dense ones.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        fit_data: Any,
        test_data: Any,
        schedule: Sequence[int] | int = 4096,
        *,
        settings: MeasureSettings | None = None,
        device: str | torch.device | None = None,
        extensions: Sequence[Extension | str] = (),
        num_classes: int | None = None,
        forward: Forward | None = None,
        distributed: Any = "auto",
        distributed_timeout: float = DEFAULT_TIMEOUT,
        ridge: float | None = None,  # deprecated name of relative_ridge
        **measure: Any,  # decoder=, probe=, relative_ridge=, bootstrap=, ...: the fields of MeasureSettings
    ):
        if ridge is not None:
            warnings.warn("PhaseTracker(ridge=...) is deprecated; use relative_ridge=...", DeprecationWarning,
                          stacklevel=2)
            measure["relative_ridge"] = ridge
        self.settings = s = MeasureSettings.build(settings, **measure)  # checked by config's one validator
        decoder, probe, bn_mode, bn_samples = s.decoder, s.probe, s.bn_mode, s.bn_samples
        relative_ridge, max_features, batch_size, tokens = s.relative_ridge, s.max_features, s.batch_size, s.tokens
        bootstrap, confidence, min_effect, seed = s.bootstrap, s.confidence, s.min_effect, s.seed
        decoder_options, input_span = s.decoder_options, s.input_span
        target, vocab_size, token_window = s.target, s.vocab_size, s.token_window
        ridges = list(relative_ridge) if isinstance(relative_ridge, (list, tuple)) else [relative_ridge]
        relative_ridge = ridges[0]  # the main measurement; further values: a RidgeSweep (below)
        check_distributed(distributed)
        self.distributed, self.distributed_timeout, self._shard = distributed, float(distributed_timeout), None
        model = local_module(model)  # layer names are those of DDP's own module; FSDP is refused
        self.layers = list(layers)
        resolve_layers(model, self.layers)  # fail now, listing valid names, if a layer is unknown
        token_ids = target == "tokens"  # inputs are token ids: kept as integers
        self.fit_x, self.fit_y = _as_tensors(fit_data, "fit_data", tokens=token_ids)
        self.test_x, self.test_y = _as_tensors(test_data, "test_data", tokens=token_ids)
        for name, n, what in (("fit_data", len(self.fit_x), "the decoder's ridge regression"),
                              ("test_data", len(self.test_x), "the test loss and its interval")):
            if n < MIN_SAMPLES:
                raise ValueError(f"{name} holds {n} sample; {what} needs at least {MIN_SAMPLES}, and the "
                                 "measurement is reliable with clearly more samples than features (e.g. 1000+). "
                                 f"Give more samples in {name}.")
        if self.fit_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"fit_data inputs have shape {tuple(self.fit_x.shape[1:])} but test_data inputs "
                             f"{tuple(self.test_x.shape[1:])}; both must be what the model takes.")
        if tokens == "auto":  # a language model is measured where it predicts: the last position
            tokens = "last" if token_ids else "mean"
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
        if not isinstance(schedule, int):  # an empty or odd schedule would silently never measure
            items = list(schedule)
            if not items or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0 for i in items):
                raise ValueError(f"schedule must be a non-empty list of iterations (integers >= 0), or the last "
                                 f"iteration as an int (log-spaced checkpoints); got {str(items)[:80]}.")
            schedule = [int(i) for i in items]
        # What the decoder reconstructs (measure.targets): the input, or the one-hot of its last token(s).
        self.target = (TokenTarget(vocab_size if vocab_size is not None else self.num_classes, self.num_classes,
                                   token_window) if token_ids else InputTarget(self.num_classes))
        if token_ids:
            self.target.check(self.fit_x, "fit_data")
            self.target.check(self.test_x, "test_data")
            if decoder != "linear":
                raise ValueError(f"decoder={decoder!r} reconstructs images; token inputs use decoder='linear'.")
        self.schedule = sorted(set(log_schedule(schedule) if isinstance(schedule, int) else schedule))
        if token_ids:  # the one-hot's columns are what is reconstructed: never a span of the token ids
            input_span = "off"
        self.input_span, self._span = input_span, None  # the span: computed at the first checkpoint that needs it
        self.decoder, self.probe, self.bn_mode = decoder, probe, bn_mode
        self.relative_ridge, self.max_features, self.measure_batch_size = relative_ridge, max_features, batch_size
        # Rows forwarded at a time in the (eval-mode) measurement passes: fewer for large inputs. Not with
        # bn_mode="batch" (each batch is normalised with its own statistics: its size is part of the
        # measurement), and BatchNorm recalibration keeps measure_batch_size (its per-batch statistics).
        row_bytes = max(1, self.fit_x[0].numel() * self.fit_x.element_size())
        self.batch_size = (batch_size if bn_mode == "batch"
                           else min(batch_size, max(1, BATCH_INPUT_BYTES // row_bytes)))
        self.bootstrap, self.confidence, self.min_effect = bootstrap, confidence, min_effect
        self.decoder_options = dict(decoder_options or {})
        self.seed = seed
        p = next(model.parameters(), None)
        self.device = _check_device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
        # BatchNorm recalibration: a seeded subset of the fit set; none at all without BatchNorm.
        self.bn_x = self._bn_subset(model, bn_samples)
        # Conv nets on a CPU are measured in channels-last memory order when that runs (and agrees) on
        # two fit samples: their forward passes, most of a checkpoint, take 1.1-1.45x less time.
        self.channels_last = channels_last_helps(model, self.fit_x[:2], self.device, forward)
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
        self._bootstrap = Bootstrap(bootstrap, confidence, seed)  # phasescope.engine.stats: every interval
        self.extensions = [registry.create(e) for e in extensions]  # instances, or names ("samples")
        if len(ridges) > 1 and not any(getattr(e, "name", None) == "ridge_sweep" for e in self.extensions):
            self.extensions.append(registry.get("ridge_sweep")(ridges[1:]))
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

    def _bn_subset(self, model: nn.Module, bn_samples: int | None) -> torch.Tensor | RowSubset | None:
        if self.bn_mode != "recalibrate" or not bn_layers(model):
            return None
        n = len(self.fit_x)
        if bn_samples is None or bn_samples >= n:
            return self.fit_x
        rows = np.sort(np.random.default_rng(self.seed).choice(n, bn_samples, replace=False))
        return RowSubset(self.fit_x, torch.as_tensor(rows))  # rows copied a batch at a time, when recalibrating

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

    @property
    def span(self) -> InputSpan | None:
        """The span of the fit inputs that the linear decoder works in (``input_span``; its ``rank``,
        ``dim``, ...), once a checkpoint has computed it; None before, or where it is not used."""
        return self._span[0] if self._span else None

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
            "measure_batch_size": self.measure_batch_size, "input_span": self.input_span,
            **({"input_span_rank": self.span.rank} if self.span is not None else {}),
            **({"measure_batch_rows": self.batch_size} if self.batch_size != self.measure_batch_size else {}),
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
        """Measure now, at ``iteration`` (scheduled or not), and return the new rows.

        Sharded (see ``distributed``): every rank of the group must call it at the same
        iterations; each forwards its share of the samples, and all return the same rows."""
        t0 = time.perf_counter()
        model = local_module(model)  # DDP's own module: never a second wrapper around it
        group = resolve_group(self.distributed)
        self._shard = Shard(group, self.batch_size, iteration, self.distributed_timeout) if group is not None else None
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
        self._after_checkpoint(ctx, iteration)
        return rows

    def _after_checkpoint(self, ctx: CheckpointContext, iteration: int) -> None:
        sh = self._shard
        for ext in self.extensions:
            hook = _hook(ext, "after_checkpoint")
            if sh is None:
                d = hook(ctx)
            else:
                with sh.agree(f"extension {ext.name!r} (after the checkpoint)"):
                    d = hook(ctx) if _everywhere(ext) or sh.rank == 0 else None
            if d is not None:
                self.decisions[iteration] = d if d.stop or iteration not in self.decisions else self.decisions[iteration]
        if sh is not None:  # every rank takes rank 0's decision: training goes on (or stops) in lock-step
            d = sh.broadcast_object(self.decisions.get(iteration), 0, "sharing the checkpoint's decision")
            if d is None:
                self.decisions.pop(iteration, None)
            else:
                self.decisions[iteration] = d

    def _agree(self, what: str):
        """A local phase that every rank of a sharded measurement finishes, or all raise (see Shard.agree)."""
        return nullcontext() if self._shard is None else self._shard.agree(what)

    def _measure(self, model: nn.Module, it: int) -> tuple[list[dict], dict[str, np.ndarray], CheckpointContext]:
        sh = self._shard
        no_bn = self.bn_mode == "recalibrate" and self.bn_x is None  # no BatchNorm: nothing to recalibrate
        frozen = prepare(model, "running" if no_bn else self.bn_mode, self.bn_x, self.measure_batch_size, self.device,
                         self.forward, sh, channels_last=self.channels_last)
        fit = self._fit_pass(frozen, it)
        test = self._test_pass(frozen, it)
        if fit.features is None and self.probe == "logistic" and sh is None:  # the iterative probe needs them all
            fit.features = self.features(frozen, self.fit_x)[1]
        rows, errors = self._score(it, fit, test, frozen)
        fit_features = fit.features
        if sh is not None:  # extensions see every sample: gathered, or computed by this rank alone when read
            fit_features = fit.gathered
            if fit_features is None and any(_requires(e).fit_features for e in self.extensions):
                fit_features = self._gather_fit_features(frozen, fit)
            if self.extensions:
                test.features = {n: sh.gather(test.features[n], len(self.test_x), "gathering the test features")
                                 for n in self.layers}
        ctx = CheckpointContext(
            iteration=it, model=frozen, live_model=model, tracker=self, layers=self.layers, device=self.device,
            fit_x=self.fit_x, fit_y=self.fit_y, test_x=self.test_x, test_y=self.test_y,
            features=lambda x: self.features(frozen, x), test_features=test.features, fit_logits=fit.logits,
            test_logits=test.logits, module_inputs=fit.module_inputs, estimate=self.estimate,
            _fit_features=fit_features, _fit_features_fn=lambda: self.features(frozen, self.fit_x)[1],
            reconstruct=test.reconstruct, decoders=test.decoders,
        )
        for ext in self.extensions:
            if sh is None:
                rows += ext.measure(ctx)
                continue
            everywhere = _everywhere(ext)
            with sh.agree(f"extension {ext.name!r}"):
                new = ext.measure(ctx) if everywhere or sh.rank == 0 else None
            rows += new if everywhere else sh.broadcast_object(new, 0, f"sharing the rows of extension {ext.name!r}")
        return rows, errors, ctx

    def _keep_fit_features(self) -> bool:
        return sum(self._feature_dim(n) for n in self.layers) * len(self.fit_x) * 4 <= CACHE_BYTES

    def _input_span(self) -> tuple[InputSpan, Projected] | None:
        """The span of the fit inputs and the test inputs' projection onto it, computed once, when
        the linear decoder's inputs have more values than there are fit samples (input_span="auto").
        The ranks of a sharded tracker split the work (each its row blocks of the Gram matrix and its
        share of the test inputs) and all hold the same result."""
        if (self.input_span == "off" or self.decoder != "linear" or self.target.kind != "input"
                or self.fit_x[0].numel() <= len(self.fit_x)):  # token targets: a one-hot, never a span
            return None
        if self._span is None:
            sh = self._shard
            if sh is None:
                span = InputSpan(self.fit_x)
                self._span = (span, span.project(self.test_x))
            else:  # the Gram matrix's row blocks and the test projections split over the ranks
                span = InputSpan(self.fit_x, part=(sh.rank, sh.world),
                                 all_reduce=lambda G: sh.all_reduce([G], "summing the input span's Gram matrix")[0])
                n = len(self.test_x)
                with sh.agree("projecting the test inputs onto the input span"):
                    local = span.project(self.test_x[sh.share(n)])
                self._span = (span, Projected(sh.gather(local.coords, n, "gathering the test inputs' span coordinates"),
                                              sh.gather(local.residual, n, "gathering the test inputs' residuals")))
        return self._span

    def _share(self, n: int) -> slice:
        """This process's rows of ``n`` samples: all of them, or its share when sharded."""
        return slice(0, n) if self._shard is None else self._shard.share(n)

    def _fit_pass(self, frozen: nn.Module, it: int) -> _FitPass:
        """One forward over the fit set (sharded: this rank's share): the ridge statistics of
        decoder and probe, per layer (sharded: summed over the ranks before the solve)."""
        sh = self._shard
        finite = _FiniteCheck(it)
        conv, n_all = self.decoder == "conv", len(self.fit_x)
        share = self._share(n_all)
        fit_x, fit_y = self.fit_x[share], self.fit_y[share]
        n = len(fit_x)
        span = self._input_span()
        spans = {"x": span[0]} if span else None
        solvers = {name: StreamingRidge(self.relative_ridge, spans=spans) for name in self.layers}
        fit_t = span[0].coords[share].float() if span else fit_x  # the decoder's targets: span coordinates
        keep = self._keep_fit_features()
        feats = {name: torch.empty(n, self._feature_dim(name)) for name in self.layers} if keep else None
        raw: dict[str, list] = {name: [] for name in self.layers}
        logits = torch.empty(n, self.num_classes)
        dims = {"x": span[0].rank if span else self.target.width(self.fit_x), "y": self.num_classes}

        def forward_batch(rows: slice, lg: torch.Tensor, outs: dict) -> list[tuple]:
            """Checks and keeps one batch's outputs; returns what its ridge statistics are made of."""
            finite.add("the logits", lg)
            logits[rows] = lg.float().cpu()
            targets = self.target.fit_targets(fit_t[rows], fit_y[rows], self.device)
            stats = []
            for name in self.layers:
                h = flatten_features(outs[name], self.feature_maps[name])
                finite.add(f"activations of layer {name!r}", h)
                stats.append((name, h, targets))
                if keep:
                    feats[name][rows] = h.cpu()
                if conv:
                    raw[name].append(outs[name].float().cpu())
            return stats

        def accumulate(stats: list[tuple]) -> None:
            for name, h, targets in stats:
                solvers[name].partial_fit(h, targets)

        # Forward batches capped for memory (large inputs) are accumulated in groups of up to
        # measure_batch_size rows, as far as the group's targets stay within BATCH_INPUT_BYTES (span
        # coordinates do; all D values of a large input do not): the per-group float32 sums are then
        # those of uncapped batches, and the float64 accumulation runs once per group, not per batch.
        group_rows = min(self.measure_batch_size, max(self.batch_size, BATCH_INPUT_BYTES // (4 * max(1, dims["x"]))))

        def groups(batches) -> Iterator[list[tuple]]:
            held, rows = [], 0
            for batch in batches:
                held.append(forward_batch(*batch))
                rows += len(batch[1])
                if rows >= group_rows:
                    yield _merge_stats(held)
                    held, rows = [], 0
            if held:
                yield _merge_stats(held)

        head = [self.module_inputs[HEAD]] if HEAD in self.module_inputs and self.target.kind == "tokens" else []
        with capture_inputs(frozen, list(self.module_inputs.values()), last_position=head) as inputs:
            batches = groups(iter_batches(frozen, self.layers, fit_x, self.batch_size, self.device, self.forward))
            with self._agree("the fit pass"):
                held = next(batches, [])
                if sh is None or sh.rank == 0:  # the first group of all: its means are every rank's shift
                    accumulate(held)
                    held = []
            if sh is not None:  # the other ranks accumulate around rank 0's shift, as one process would
                self._share_shifts(solvers, sh, dims)
            with self._agree("the fit pass"):
                accumulate(held)
                for stats in batches:
                    accumulate(stats)
                finite.raise_if_any()  # before any solve: nothing of this checkpoint is recorded
                captured = {key: torch.cat([a.float().cpu() for a in inputs[mod]]) if inputs[mod] else None
                            for key, mod in self.module_inputs.items()}
        if sh is not None:  # every rank's statistics summed: all solve the same decoder and probe
            all_reduce_statistics(list(solvers.values()), sh)
        with self._agree("solving the decoder"):
            for s in solvers.values():
                s.solve()
        raw_cat = {k: torch.cat(v) if v else None for k, v in raw.items() if v or (conv and sh is not None)}
        if sh is None:
            return _FitPass(solvers, logits, feats, raw_cat, captured)
        return _FitPass(solvers, sh.gather(logits, n_all, "gathering the fit logits"), feats,
                        {k: sh.gather_rows(v, n_all, "gathering the fit outputs") for k, v in raw_cat.items()},
                        {k: sh.gather_rows(v, n_all, "gathering module inputs") for k, v in captured.items()},
                        rows=share)

    def _share_shifts(self, solvers: dict[str, StreamingRidge], sh: Shard, dims: dict[str, int]) -> None:
        """Rank 0's ridge shifts (the means of the first fit group, the shifts of one process) on every
        rank, before the others accumulate: their float32 products are then those one process forms
        (where forward batches are capped and grouped, the groups at the edges of the ranks' shares
        are cut there: equal to one process's to float32 rounding)."""
        parts = []
        for name, s in solvers.items():
            if sh.rank == 0:
                h, t = s.shifts
                parts += [h, t["x"], t["y"]]
            else:
                parts += [torch.zeros(self._feature_dim(name)), torch.zeros(dims["x"]), torch.zeros(dims["y"])]
        it = iter(sh.broadcast(parts, 0, "sharing the decoder's shifts"))
        if sh.rank != 0:
            for name, s in solvers.items():
                h, x, y = next(it), next(it), next(it)
                s.allocate(len(h), dims, self.device, shifts=(h, {"x": x, "y": y}))

    def _gather_fit_features(self, frozen: nn.Module, fit: _FitPass) -> dict[str, torch.Tensor]:
        """Sharded: every rank's fit features, on every rank (forwarded again when not kept)."""
        sh = self._shard
        if fit.gathered is None:
            local = fit.features
            if local is None:
                with sh.agree("forwarding the fit set again"):
                    local = self.features(frozen, self.fit_x[fit.rows])[1]
            fit.gathered = {n: sh.gather(local[n], len(self.fit_x), "gathering the fit features") for n in self.layers}
        return fit.gathered

    def _test_pass(self, frozen: nn.Module, it: int) -> _TestPass:
        """One forward over the test set (sharded: this rank's share): features and logits (and raw
        outputs for the conv decoder). Sharded, the logits and raw outputs are gathered; the
        features stay this rank's until scored."""
        sh = self._shard
        finite = _FiniteCheck(it)
        conv, n_all = self.decoder == "conv", len(self.test_x)
        share = self._share(n_all)
        test_x = self.test_x[share]
        n = len(test_x)
        feats = {name: torch.empty(n, self._feature_dim(name)) for name in self.layers}
        raw: dict[str, list] = {name: [] for name in self.layers}
        logits = torch.empty(n, self.num_classes)
        with self._agree("the test pass"):
            for rows, lg, outs in iter_batches(frozen, self.layers, test_x, self.batch_size, self.device,
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
        raw_cat = {k: torch.cat(v) if v else None for k, v in raw.items() if v or (conv and sh is not None)}
        if sh is None:
            return _TestPass(logits, feats, raw_cat)
        return _TestPass(sh.gather(logits, n_all, "gathering the test logits"), feats,
                         {k: sh.gather_rows(v, n_all, "gathering the test outputs") for k, v in raw_cat.items()},
                         rows=share)

    def _score(self, it: int, fit: _FitPass, test: _TestPass, frozen: nn.Module) -> tuple[list[dict], dict[str, np.ndarray]]:
        """Per-sample errors and metric rows of decoder, probe and classifier. Sharded, each rank
        scores its share of the samples with the common decoder and probes, and the per-sample
        values are gathered: every rank then estimates (bootstrap) on all of them alike."""
        sh = self._shard
        rows: list[dict] = []
        errors: dict[str, np.ndarray] = {}
        decoders = test.decoders  # filled per layer: what reconstructs the input from that layer
        H_fit = fit.features
        if sh is not None and self.probe == "logistic":  # the iterative probe: fitted on all fit features, on every rank
            H_fit = self._gather_fit_features(frozen, fit)
        errs, train_mse, extra, test_scores = {}, {}, {}, {}
        extra_test: dict[str, dict[str, torch.Tensor]] = {n: {} for n in self.layers}  # token_recovery, per sample
        with self._agree("scoring"):
            probes = {n: self._probe(fit.solvers[n], None if H_fit is None else H_fit[n]) for n in self.layers}
            if H_fit is not None and H_fit is fit.gathered:  # all fit samples, on every rank: nothing to gather
                train_scores = {n: _per_sample(probes[n], H_fit[n], self.fit_y) for n in self.layers}
            elif H_fit is not None:
                train_scores = {n: _per_sample(probes[n], H_fit[n], self.fit_y[fit.rows]) for n in self.layers}
            else:
                train_scores = self._streamed_train_scores(frozen, probes, fit.rows)
            test_x, test_y = self.test_x[test.rows], self.test_y[test.rows]
            span = self._input_span()
            X_test = span[1][test.rows].to(self.device) if span else self.target.test_targets(test_x, self.device)
            for n in self.layers:
                if self.decoder == "conv":  # sharded: the raw outputs of every sample, fitted on every rank
                    errs[n], train_mse[n], extra[n], decoders[n] = self._conv_decoder(fit.raw[n], test.raw[n])
                else:
                    solver = decoders[n] = fit.solvers[n]
                    errs[n], extra_test[n] = self.target.score(solver, test.features[n], X_test, self.device)
                    train_mse[n] = solver.train_mse_["x"]
                    extra[n] = ({"decoder_lambda": float(solver.lams_["x"]), "decoder_dof": float(solver.dof_["x"])}
                                if self.relative_ridge == "auto" else {})  # what GCV chose at this checkpoint
                test_scores[n] = _per_sample(probes[n], test.features[n], test_y)
        if sh is not None:  # every sample's values, in sample order, on every rank
            n_fit, n_test = len(self.fit_x), len(self.test_x)
            if not (H_fit is not None and H_fit is fit.gathered):
                train_scores = {n: tuple(sh.gather(a, n_fit, "gathering the probe's scores") for a in v)
                                for n, v in train_scores.items()}
            test_scores = {n: tuple(sh.gather(a, n_test, "gathering the probe's scores") for a in v)
                           for n, v in test_scores.items()}
            if self.decoder != "conv":
                errs = {n: sh.gather(e, n_test, "gathering the reconstruction errors") for n, e in errs.items()}
                extra_test = {n: {k: sh.gather(v, n_test, f"gathering {k}") for k, v in e.items()}
                              for n, e in extra_test.items()}
        for n in self.layers:
            err = errs[n]
            if not torch.isfinite(err).all():  # finite features so large that the reconstruction overflowed
                raise NonFiniteActivations(it, f"the reconstructions from layer {n!r}")
            errors[n] = err.numpy()
            rows += [(it, n, "train", k, v) for k, v in extra[n].items()]
            rows.append((it, n, "test", "reconstruction_mse", err))
            rows.append((it, n, "train", "reconstruction_mse", train_mse[n]))
            rows += [(it, n, "test", k, v) for k, v in extra_test[n].items()]  # token_recovery (token targets)
            for split, (correct, loss) in (("train", train_scores[n]), ("test", test_scores[n])):
                rows.append((it, n, split, "probe_accuracy", correct))
                rows.append((it, n, split, "probe_loss", loss))
        for split, lg, y in (("train", fit.logits, self.fit_y), ("test", test.logits, self.test_y)):
            rows.append((it, "model", split, "accuracy", (lg.argmax(1) == y).double()))
            rows.append((it, "model", split, "loss", F.cross_entropy(lg, y, reduction="none").double()))
        return self._rows(rows), errors

    def _streamed_train_scores(self, frozen: nn.Module, probes: dict[str, LinearProbe],
                               share: slice = slice(None)) -> dict[str, tuple]:
        """Probe correctness and loss on the fit set (or its ``share``) without holding its features (one forward)."""
        parts: dict[str, list] = {n: [] for n in self.layers}
        fit_x, fit_y = self.fit_x[share], self.fit_y[share]
        for rows, _, outs in iter_batches(frozen, self.layers, fit_x, self.batch_size, self.device, self.forward):
            for n in self.layers:
                parts[n].append(probes[n].per_sample(flatten_features(outs[n], self.feature_maps[n]), fit_y[rows]))
        empty = (np.zeros(0), np.zeros(0))
        return {n: tuple(np.concatenate(k) for k in zip(*v)) if v else empty for n, v in parts.items()}

    def _probe(self, solver: StreamingRidge, H_fit: torch.Tensor | None) -> LinearProbe:
        """The label probe: the ridge one shares the decoder's solved statistics (target "y")."""
        if self.probe == "ridge":
            return LinearProbe.from_solver(solver, "y", num_classes=self.num_classes, device=self.device)
        return LinearProbe("logistic", num_classes=self.num_classes, seed=self.seed).fit(H_fit, self.fit_y)

    def _conv_decoder(self, raw_fit: torch.Tensor, raw_test: torch.Tensor) -> tuple[torch.Tensor, float, dict, Any]:
        dec = ConvDecoder(seed=self.seed, device=str(self.device), **self.decoder_options)
        with warnings.catch_warnings():  # convergence is recorded as a metric instead
            warnings.simplefilter("ignore", UserWarning)
            dec.fit(raw_fit, self.fit_x)
        err = dec.per_sample_error(raw_test, self.test_x).double().cpu()
        return err, float(dec.train_mse_), {"decoder_converged": float(dec.converged_),
                                            "decoder_epochs": float(dec.epochs_run_)}, dec

    def _rows(self, specs: list[tuple]) -> list[dict]:
        """:meth:`_row` of each (it, layer, split, metric, values), the per-sample vectors' intervals
        from one bootstrap product per sample size (:meth:`~phasescope.engine.stats.Bootstrap.estimate_all`)."""
        vectors = [i for i, spec in enumerate(specs) if not isinstance(spec[4], float)]
        values = [specs[i][4] for i in vectors]
        estimates = dict(zip(vectors, self._bootstrap.estimate_all(values) if self._shard is None
                             else self._shared_estimates(values)))
        return [{"iteration": it, "layer": layer, "split": split, "metric": metric,
                 **dict(zip(("value", "ci_low", "ci_high"),
                            estimates.get(i) or (float(values), float("nan"), float("nan"))))}
                for i, (it, layer, split, metric, values) in enumerate(specs)]

    def _shared_estimates(self, values: list) -> list[tuple[float, float, float]]:
        """Sharded: every rank holds every per-sample vector; each estimates the intervals of some sample
        sizes (whole sizes, the largest first to the least loaded rank: the bootstrap weights are read once
        per size), and one all-reduce gives every rank all of them (the others' entries are zeros)."""
        sh = self._shard
        sizes: dict[int, list[int]] = {}
        for j, v in enumerate(values):
            sizes.setdefault(len(v), []).append(j)
        load, owner = [0] * sh.world, {}
        for size in sorted(sizes, reverse=True):  # the same sizes, so the same assignment, on every rank
            r = int(np.argmin(load))
            load[r] += size * (self.bootstrap + len(sizes[size]))
            owner.update(dict.fromkeys(sizes[size], r))
        out = torch.zeros(len(values), 3, dtype=torch.float64)
        with sh.agree("the bootstrap intervals"):
            mine = [j for j in range(len(values)) if owner[j] == sh.rank]
            for j, e in zip(mine, self._bootstrap.estimate_all([values[j] for j in mine])):
                out[j] = torch.tensor(e, dtype=torch.float64)
        out = sh.all_reduce([out], "sharing the bootstrap intervals")[0]
        return [tuple(float(v) for v in row) for row in out.tolist()]

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
                out[n] = detect_phases(its, E, settings=self.settings.phases())
        return out

    # ------------------------------------------------------------------ reuse
    def restartable(self) -> bool:
        """Whether :meth:`restart` can reuse this tracker: every extension has a ``restart`` hook."""
        return all(callable(getattr(e, "restart", None)) for e in self.extensions)

    def restart(self, schedule: Sequence[int] | None = None) -> bool:
        """Forget every measurement (rows, per-sample errors, timings, decisions, and each
        extension's records through its ``restart`` hook) and keep what does not depend on the
        weights: the converted fit and test inputs, the layers' feature maps, the BatchNorm
        subset, the span of the inputs, the bootstrap weights, the extensions' choice of samples
        and statistics of the inputs. Measuring another model of the same structure then gives
        what a new tracker would (``phasescope analyze`` measures checkpoint after checkpoint
        this way). ``schedule``: the new schedule. Returns False, changing nothing, when an
        extension has no ``restart`` hook (build a new tracker then)."""
        if not self.restartable():
            return False
        self.rows = []  # new containers: states handed out before keep theirs
        self.errors = {n: {} for n in self.layers}
        self.timings = {}
        self.decisions = {}
        for e in self.extensions:
            e.restart()
        if schedule is not None:
            self.schedule = sorted(set(int(i) for i in schedule))
        return True

    # ------------------------------------------------------------------ resume
    def _identity(self) -> dict:
        """What a saved state must agree with to be continued by this tracker (see load_state_dict)."""
        return {"layers": list(self.layers), "fit_samples": int(len(self.fit_x)),
                "test_samples": int(len(self.test_x)), "schedule": [int(i) for i in self.schedule]}

    def _differences(self, state: dict) -> list[str]:
        """How the tracker that saved ``state`` differs from this one, one line per setting.

        A state of an earlier phasescope records no settings: its layers and test-set size are read
        from its per-sample errors. Schedules need to agree only up to the last checkpoint measured,
        so a run may continue under a longer schedule that extends the saved one."""
        mine = self._identity()
        saved = dict(state.get("settings") or {})
        errors = state.get("errors") or {}
        saved.setdefault("layers", list(errors))
        sizes = {len(np.asarray(e)) for per in errors.values() for e in per.values()}
        if "test_samples" not in saved and len(sizes) == 1:
            saved["test_samples"] = sizes.pop()
        out = []
        if "layers" in saved and set(saved["layers"]) != set(mine["layers"]):
            out.append(f"layers: saved {list(saved['layers'])}, this tracker {mine['layers']}")
        for key, name in (("fit_samples", "fit samples"), ("test_samples", "test samples")):
            if key in saved and int(saved[key]) != mine[key]:
                out.append(f"{name}: saved {int(saved[key])}, this tracker {mine[key]}")
        measured = [int(i) for i in state.get("timings") or {}]
        if "schedule" in saved and measured:
            last = max(measured)
            a = [int(i) for i in saved["schedule"] if int(i) <= last]
            b = [i for i in mine["schedule"] if i <= last]
            if a != b:
                out.append(f"schedule up to the last checkpoint measured ({last}): saved {a}, this tracker {b}")
        return out

    def state_dict(self) -> dict:
        return {
            "settings": self._identity(),  # checked by load_state_dict
            "rows": list(self.rows),
            "errors": {n: dict(v) for n, v in self.errors.items()},
            "timings": dict(self.timings),
            "decisions": dict(self.decisions),
            "extensions": {e.name: e.state_dict() for e in self.extensions if hasattr(e, "state_dict")},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of a tracker with the same layers, fit and test sample
        counts and schedule; raises ValueError listing every difference (nothing is loaded then)."""
        if not isinstance(state, dict):
            raise TypeError(f"load_state_dict needs the dict returned by PhaseTracker.state_dict(); got "
                            f"{type(state).__name__}.")
        diffs = self._differences(state)
        if diffs:
            raise ValueError("This tracker cannot continue from that state: it was saved by a tracker with other "
                             "settings (" + "; ".join(diffs) + "). Build the tracker with the saved settings, "
                             "or start without the state.")
        self.rows = list(state["rows"])
        self.errors = {n: {int(k): np.asarray(v) for k, v in state["errors"].get(n, {}).items()} for n in self.layers}
        self.timings = {int(k): float(v) for k, v in state["timings"].items()}
        self.decisions = {int(k): v for k, v in state.get("decisions", {}).items()}
        for e in self.extensions:
            if hasattr(e, "load_state_dict") and e.name in state.get("extensions", {}):
                e.load_state_dict(state["extensions"][e.name])
