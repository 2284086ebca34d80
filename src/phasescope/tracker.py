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
model's weights nor any random number generator. Per layer it fits a fresh decoder
(exact ridge by default) of the input from the layer's activations, and a fresh linear
probe of the label, on ``fit_data``, and scores both on ``test_data``; it also records the
classifier's own accuracy and loss. Per-sample test reconstruction errors are kept so
that phases get paired-bootstrap intervals.

Extensions (per-sample dynamics, transfer probes, ...) plug in through ``extensions``:
objects with ``name``, ``measure(ctx) -> list[row]`` and optionally ``state_dict`` /
``load_state_dict``; ``ctx`` is a :class:`CheckpointContext`. An extension with
``needs_head_input = True`` also gets the input of the final ``nn.Linear`` on the fit set,
captured in the same forward pass (``ctx.fit_head_inputs``).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .measure.capture import capture_inputs, final_linear_name, flatten_features, iter_batches, pool_grid, prepare
from .errors import NonFiniteActivations, NonFiniteInput
from .measure.precision import full_precision
from .measure.ridge import DEFAULT_RIDGE, StreamingRidge, logistic_probe, one_hot
from .models import output_shapes, preserved_modes, resolve_layers
from .phases import PhaseResult, bootstrap_weights, detect_phases
from .schedule import log_schedule

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


METRIC_COLUMNS = ["iteration", "layer", "split", "metric", "value", "ci_low", "ci_high"]
CACHE_BYTES = 1 << 30  # fit-set features kept in memory up to this size, else recomputed


@dataclass
class CheckpointContext:
    """What an extension sees at a checkpoint."""

    iteration: int
    model: nn.Module  # frozen, BatchNorm-prepared copy; do not train it
    layers: list[str]
    device: torch.device
    fit_x: torch.Tensor
    fit_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    features: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    fit_features: dict[str, torch.Tensor] | None = None  # pooled (n_fit, p) per layer when cached
    test_features: dict[str, torch.Tensor] = field(default_factory=dict)
    fit_logits: torch.Tensor | None = None
    test_logits: torch.Tensor | None = None
    head: str | None = None  # name of the final nn.Linear whose input is in fit_head_inputs
    fit_head_inputs: torch.Tensor | None = None  # (n_fit, d) input of ``head``, same forward as fit_logits


class Extension(Protocol):
    name: str

    def measure(self, ctx: CheckpointContext) -> list[dict]: ...


def _batches(data: Any, name: str) -> list[tuple[Any, Any]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list, dict)):
        return [(data[0], data[1])]
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        batches = []
        for b in data:
            if isinstance(b, dict):
                raise TypeError(f"{name} yields dicts (keys {sorted(b)}); give batches of (x, y) instead, e.g. a "
                                "DataLoader with collate_fn=lambda b: (inputs, labels), or tensors (x, y).")
            if not isinstance(b, (tuple, list)) or len(b) < 2:
                raise TypeError(f"{name} must yield (x, y) batches; got a {type(b).__name__}.")
            batches.append((b[0], b[1]))
        return batches
    raise TypeError(f"{name} must be (x, y) arrays/tensors or an iterable of (x, y) batches; got {type(data).__name__}.")


def _as_tensors(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (x float32, y int64) tensors from (x, y) arrays/tensors or an iterable of (x, y) batches."""
    xs, ys = [], []
    for x, y in _batches(data, name):
        x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
        y = y if torch.is_tensor(y) else torch.as_tensor(np.asarray(y))
        if x.dtype.is_complex or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int8, torch.int16,
                                                                                torch.int32, torch.int64, torch.bool)):
            raise TypeError(f"{name}: inputs have dtype {x.dtype}; give real numbers (float or integer pixels).")
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu().reshape(-1) if y.dim() > 1 and y.shape[1:].numel() == 1 else y.detach().cpu())
    x = torch.cat(xs) if xs else torch.zeros(0)
    y = torch.cat(ys) if ys else torch.zeros(0)
    if len(x) == 0:
        raise ValueError(f"{name} is empty; give at least two samples per split.")
    if y.dim() != 1:
        raise ValueError(f"{name}: labels must be a 1-D vector of class indices; got shape {tuple(y.shape)} "
                         "(one-hot labels: pass y.argmax(1)).")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} inputs but {len(y)} labels; give one label per input.")
    if y.dtype.is_floating_point:
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise ValueError(f"{name}: labels must be integer class indices 0..K-1; got non-integer values.")
    if (y < 0).any():
        raise ValueError(f"{name}: labels must be class indices 0..K-1; found {int(y.min())}.")
    x = x.float()
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name}: {bad} input values are NaN or infinite; clean or drop those samples.")
    return x, y.long()


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


class PhaseTracker:
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
        ridge: float = DEFAULT_RIDGE,
        max_features: int = 4096,
        batch_size: int = 500,
        bootstrap: int = 1000,
        confidence: float = 0.95,
        min_effect: float = 0.02,
        device: str | torch.device | None = None,
        extensions: Sequence[Extension] = (),
        decoder_options: dict | None = None,
        seed: int = 0,
        num_classes: int | None = None,
    ):
        self.layers = list(layers)
        resolve_layers(model, self.layers)  # fail now, listing valid names, if a layer is unknown
        self.fit_x, self.fit_y = _as_tensors(fit_data, "fit_data")
        self.test_x, self.test_y = _as_tensors(test_data, "test_data")
        if self.fit_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"fit_data inputs have shape {tuple(self.fit_x.shape[1:])} but test_data inputs "
                             f"{tuple(self.test_x.shape[1:])}; both must be what the model takes.")
        top = int(max(self.fit_y.max(), self.test_y.max()))
        if num_classes is not None and top >= num_classes:
            raise ValueError(f"labels go up to {top} but num_classes={num_classes}; labels must be 0..{num_classes - 1}.")
        self.num_classes = int(num_classes) if num_classes is not None else top + 1
        if self.num_classes < 2:
            raise ValueError("the labels hold a single class; a classifier's phases need at least two.")
        self.schedule = sorted(set(log_schedule(schedule) if isinstance(schedule, int) else schedule))
        if decoder not in ("linear", "conv"):
            raise ValueError(f"decoder={decoder!r}; choose linear or conv.")
        if probe not in ("ridge", "logistic"):
            raise ValueError(f"probe={probe!r}; choose ridge or logistic.")
        self.decoder, self.probe, self.bn_mode = decoder, probe, bn_mode
        self.ridge, self.max_features, self.batch_size = ridge, max_features, batch_size
        self.bootstrap, self.confidence, self.min_effect = bootstrap, confidence, min_effect
        self.decoder_options = dict(decoder_options or {})
        self.seed = seed
        p = next(model.parameters(), None)
        self.device = _check_device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
        self.extensions = list(extensions)
        # The final Linear's input is captured in the fit pass only when an extension asks.
        self.head = final_linear_name(model) if any(getattr(e, "needs_head_input", False) for e in self.extensions) else None
        shapes = output_shapes(model, self.layers, tuple(self.fit_x.shape[1:]))
        self.layer_shapes = {n: list(s) for n, s in shapes.items()}
        self.pooling = {n: pool_grid(tuple(s), max_features) for n, s in shapes.items()}
        self.rows: list[dict] = []
        self.errors: dict[str, dict[int, np.ndarray]] = {n: {} for n in self.layers}  # layer -> it -> (n_test,)
        self.timings: dict[int, float] = {}
        self._boot: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ schedule
    @property
    def measured(self) -> list[int]:
        return sorted(self.timings)

    def should_measure(self, iteration: int) -> bool:
        return iteration in self.schedule and iteration not in self.timings

    def maybe_measure(self, model: nn.Module, iteration: int) -> list[dict] | None:
        """Measure if ``iteration`` is scheduled and not yet measured; else do nothing."""
        return self.measure(model, iteration) if self.should_measure(iteration) else None

    def describe(self) -> dict:
        """Measurement settings, as recorded in config.json."""
        return {
            "layers": self.layers, "layer_shapes": self.layer_shapes,
            "pooled_to_grid": {n: g for n, g in self.pooling.items()}, "decoder": self.decoder,
            "decoder_options": self.decoder_options, "probe": self.probe, "bn_mode": self.bn_mode,
            "ridge": self.ridge, "max_features": self.max_features, "measure_batch_size": self.batch_size,
            "fit_samples": int(len(self.fit_x)), "test_samples": int(len(self.test_x)),
            "bootstrap": self.bootstrap, "confidence": self.confidence, "min_effect": self.min_effect,
            "schedule": self.schedule,
        }

    # ------------------------------------------------------------------ measurement
    def _ci(self, values: torch.Tensor | np.ndarray) -> tuple[float, float, float]:
        v = np.asarray(values.cpu() if torch.is_tensor(values) else values, dtype=np.float64).reshape(-1)
        if v.size < 2:
            return float(v.mean()) if v.size else float("nan"), float("nan"), float("nan")
        if v.size not in self._boot:
            self._boot[v.size] = bootstrap_weights(v.size, self.bootstrap, self.seed)
        means = self._boot[v.size] @ v
        lo, hi = np.quantile(means, [(1 - self.confidence) / 2, (1 + self.confidence) / 2])
        return float(v.mean()), float(lo), float(hi)

    def _row(self, it: int, layer: str, split: str, metric: str, values: Any) -> dict:
        if isinstance(values, float):
            v, lo, hi = values, float("nan"), float("nan")
        else:
            v, lo, hi = self._ci(values)
        return {"iteration": it, "layer": layer, "split": split, "metric": metric, "value": v, "ci_low": lo, "ci_high": hi}

    def features(self, frozen: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and pooled (N, p) features of every tracked layer for inputs ``x``."""
        logits, feats = [], {n: [] for n in self.layers}
        for _, lg, outs in iter_batches(frozen, self.layers, x, self.batch_size, self.device):
            logits.append(lg.float().cpu())
            for n in self.layers:
                feats[n].append(flatten_features(outs[n], self.pooling[n]).cpu())
        return torch.cat(logits), {n: torch.cat(v) for n, v in feats.items()}

    def measure(self, model: nn.Module, iteration: int) -> list[dict]:
        """Measure now, at ``iteration`` (scheduled or not), and return the new rows."""
        t0 = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        try:  # never moves training's RNG, no TF32, and every submodule keeps its own train/eval mode
            with torch.random.fork_rng(devices=devices), full_precision(), preserved_modes(model):
                rows = self._measure(model, iteration)
        except NonFiniteInput as e:  # a decoder/probe solve met overflowed statistics
            raise NonFiniteActivations(iteration, "the decoder's statistics (products of the features overflowed)") from e
        self.timings[iteration] = time.perf_counter() - t0
        self.rows.extend(rows)
        return rows

    def _measure(self, model: nn.Module, it: int) -> list[dict]:
        frozen = prepare(model, self.bn_mode, self.fit_x, self.batch_size, self.device)
        finite = _FiniteCheck(it)
        conv = self.decoder == "conv"
        solvers = {n: StreamingRidge(self.ridge) for n in self.layers}
        keep = conv or self.probe == "logistic" or self.extensions or (
            sum(self._feature_dim(n) for n in self.layers) * len(self.fit_x) * 4 < CACHE_BYTES)
        fit_feats: dict[str, list] = {n: [] for n in self.layers}
        raw_fit: dict[str, list] = {n: [] for n in self.layers}
        fit_logits = []
        Y_fit = one_hot(self.fit_y, self.num_classes)
        # Pass 1: fit set -> sufficient statistics of the decoder and probe (one forward).
        with capture_inputs(frozen, [self.head] if self.head else []) as head_inputs:
            for rows_, logits, outs in iter_batches(frozen, self.layers, self.fit_x, self.batch_size, self.device):
                fit_logits.append(logits.float().cpu())
                finite.add("the logits", logits)
                xb = self.fit_x[rows_].reshape(len(logits), -1).to(self.device)
                for n in self.layers:
                    h = flatten_features(outs[n], self.pooling[n])
                    finite.add(f"activations of layer {n!r}", h)
                    solvers[n].partial_fit(h, {"x": xb, "y": Y_fit[rows_].to(self.device)})
                    if keep:
                        fit_feats[n].append(h.cpu())
                    if conv:
                        raw_fit[n].append(outs[n].float().cpu())
        finite.raise_if_any()  # before any solve: nothing of this checkpoint is recorded
        fit_head = torch.cat([a.float().cpu() for a in head_inputs[self.head]]) if self.head else None
        for s in solvers.values():
            s.solve()
        fit_logits_t = torch.cat(fit_logits)
        cached = {n: torch.cat(v) for n, v in fit_feats.items()} if keep else None
        # Pass 2: test set -> per-sample errors (one forward).
        test_logits, test_feats = [], {n: [] for n in self.layers}
        raw_test: dict[str, list] = {n: [] for n in self.layers}
        for rows_, logits, outs in iter_batches(frozen, self.layers, self.test_x, self.batch_size, self.device):
            test_logits.append(logits.float().cpu())
            finite.add("the logits", logits)
            for n in self.layers:
                h = flatten_features(outs[n], self.pooling[n])
                finite.add(f"activations of layer {n!r}", h)
                test_feats[n].append(h.cpu())
                if conv:
                    raw_test[n].append(outs[n].float().cpu())
        finite.raise_if_any()
        test_logits_t = torch.cat(test_logits)
        test_feats_t = {n: torch.cat(v) for n, v in test_feats.items()}
        if cached is None:  # features too large to keep: one more forward over the fit set
            _, cached = self.features(frozen, self.fit_x)

        rows: list[dict] = []
        errors: dict[str, np.ndarray] = {}  # recorded only once the whole checkpoint succeeded
        X_test = self.test_x.reshape(len(self.test_x), -1)
        for n in self.layers:
            s = solvers[n]
            if conv:
                from .measure.conv_decoder import ConvDecoder

                dec = ConvDecoder(seed=self.seed, device=str(self.device), **self.decoder_options)
                with warnings.catch_warnings():  # convergence is recorded as a metric instead
                    warnings.simplefilter("ignore", UserWarning)
                    dec.fit(torch.cat(raw_fit[n]), self.fit_x)
                rows.append(self._row(it, n, "train", "decoder_converged", float(dec.converged_)))
                err = dec.per_sample_error(torch.cat(raw_test[n]), self.test_x).double().cpu()
                train_mse = float(dec.train_mse_)
                rows.append(self._row(it, n, "train", "decoder_epochs", float(dec.epochs_run_)))
            else:
                err = s.per_sample_mse(test_feats_t[n].to(self.device), X_test.to(self.device), "x").cpu()
                train_mse = s.train_mse_["x"]
            if not torch.isfinite(err).all():  # finite features so large that the reconstruction overflowed
                raise NonFiniteActivations(it, f"the reconstructions from layer {n!r}")
            errors[n] = err.numpy()
            rows.append(self._row(it, n, "test", "reconstruction_mse", err))
            rows.append(self._row(it, n, "train", "reconstruction_mse", train_mse))
            rows += self._probe_rows(it, n, s, cached[n], test_feats_t[n])
        for split, lg, y in (("train", fit_logits_t, self.fit_y), ("test", test_logits_t, self.test_y)):
            rows.append(self._row(it, "model", split, "accuracy", (lg.argmax(1) == y).double()))
            rows.append(self._row(it, "model", split, "loss", F.cross_entropy(lg, y, reduction="none").double()))
        if self.extensions:
            ctx = CheckpointContext(
                iteration=it, model=frozen, layers=self.layers, device=self.device,
                fit_x=self.fit_x, fit_y=self.fit_y, test_x=self.test_x, test_y=self.test_y,
                features=lambda x: self.features(frozen, x), fit_features=cached,
                test_features=test_feats_t, fit_logits=fit_logits_t, test_logits=test_logits_t,
                head=self.head, fit_head_inputs=fit_head,
            )
            for ext in self.extensions:
                rows += ext.measure(ctx)
        for n, err in errors.items():
            self.errors[n][it] = err
        return rows

    def _feature_dim(self, layer: str) -> int:
        shape = self.layer_shapes[layer]
        g = self.pooling[layer]
        return int(np.prod(shape)) if g is None else shape[0] * g * g

    def _probe_rows(self, it: int, layer: str, solver: StreamingRidge, H_fit: torch.Tensor, H_test: torch.Tensor) -> list[dict]:
        rows = []
        if self.probe == "ridge":
            for split, H, y in (("train", H_fit, self.fit_y), ("test", H_test, self.test_y)):
                scores = solver.predict(H.to(self.device), "y").cpu()
                rows.append(self._row(it, layer, split, "probe_accuracy", (scores.argmax(1) == y).double()))
                loss = ((scores - one_hot(y, self.num_classes)) ** 2).sum(1).double()  # squared loss on one-hot
                rows.append(self._row(it, layer, split, "probe_loss", loss))
        else:
            clf = logistic_probe(H_fit.numpy(), self.fit_y.numpy(), seed=self.seed)
            for split, H, y in (("train", H_fit, self.fit_y), ("test", H_test, self.test_y)):
                proba = np.clip(clf.predict_proba(H.numpy()), 1e-12, 1)
                full = np.full((len(y), self.num_classes), 1e-12)
                full[:, clf.classes_] = proba
                rows.append(self._row(it, layer, split, "probe_accuracy", (full.argmax(1) == y.numpy()).astype(float)))
                rows.append(self._row(it, layer, split, "probe_loss", -np.log(full[np.arange(len(y)), y.numpy()])))
        return rows

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
            "extensions": {e.name: e.state_dict() for e in self.extensions if hasattr(e, "state_dict")},
        }

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])
        self.errors = {n: {int(k): np.asarray(v) for k, v in state["errors"].get(n, {}).items()} for n in self.layers}
        self.timings = {int(k): float(v) for k, v in state["timings"].items()}
        for e in self.extensions:
            if hasattr(e, "load_state_dict") and e.name in state.get("extensions", {}):
                e.load_state_dict(state["extensions"][e.name])
