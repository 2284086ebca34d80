"""``SampleDynamics``: the tracker extension that records per-sample dynamics (see the package docstring)."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...config import Section, opt
from ...extension import HEAD, Extension, Requires, RunSetup
from .metrics import (HISTORY, METRICS, class_distance, forgetting_counts, gradient_concentration,
                      last_layer_grad_norm, learned_at, logit_margin, summarise_samples)
from .report import plot_few, plot_samples, rebuild_samples, summary_lines as report_lines, write_samples_table
from ...data.subsets import measurement_indices
from ...engine.measure.capture import capture_inputs, final_linear_name
from ...engine.measure.inputs import as_tensors as _as_tensors
from ...outputs.runs import atomic_write, write_bytes_to


@dataclass
class SamplesOptions(Section):
    """The ``samples`` section of a run's configuration (``--samples/--no-samples``, ``--samples-max``)."""

    section: ClassVar[str] = "samples"
    enabled: bool = opt(True, "Per-sample dynamics: who drives the last-layer gradient, learned-at, forgetting.",
                        flag="--samples/--no-samples")
    max_samples: int | None = opt(None, "Follow a seeded random subset of this many fit samples [all].",
                                  flag="--samples-max", positive=True)
    seed: int = opt(0, "Seed of the --samples-max subset.")


class _LazyFeatures:
    """``layer in feats`` / ``feats[layer]`` over the context's fit features, computed only when read."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __contains__(self, layer: str) -> bool:
        return layer in self.ctx.layers

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.ctx.fit_features[layer]


class SampleDynamics(Extension):
    """Tracker extension recording per-sample dynamics on the training set.

    Parameters
    ----------
    data: (x, y) of your own to follow instead of the tracker's fit subset; it costs one
        extra forward pass per checkpoint (the fit subset reuses the tracker's pass).
    index: training-set index of each followed sample, written to ``samples()``
        (default 0..n-1, rows of the followed set).
    max_samples: follow a seeded random subset of this many samples (recorded).
    layer: tracked layer whose feature space measures typicality (default: the last).
    seed: seed of that subset.
    marks: per-sample flags indexed like ``index`` (training-set index), written as columns of
        ``samples()``, e.g. ``{"atypical": mask}`` of ``--atypical``.
    images, mean, std, classes: for the gallery few.png drawn by :meth:`write`: the
        normalised images ``index`` points into (N, C, H, W), the per-channel mean/std
        they were normalised with, and the class names.
    """

    name = "samples"
    options = SamplesOptions
    report_template = "extensions/samples.html.j2"
    report_title, report_anchor, report_order = "The few", "samples", 30
    files = ("samples.parquet", "samples.csv", "samples.npz", "samples.png", "few.png")
    figures = {
        "few.png": ("samples", "Per class, the training samples learned last (\"the few\") next to those learned first, "
                               "with the iteration each was learned at."),
        "samples.png": ("samples", "Concentration of the last-layer gradient on few samples (bottom) against the "
                                   "reconstruction loss (top)."),
    }
    # the final Linear's input, from the tracker's fit pass; the fit features (typicality in the layer)
    requires = Requires(module_inputs=(HEAD,), fit_features=True)

    def __init__(self, data: Any = None, *, index: Sequence[int] | None = None, max_samples: int | None = None,
                 layer: str | None = None, seed: int = 0, images: torch.Tensor | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 classes: Sequence[str] | None = None, name: str = "samples",
                 marks: dict[str, np.ndarray] | None = None):
        self.name = name  # unique among a tracker's extensions (state and files are keyed by it)
        if max_samples is not None and max_samples <= 0:
            raise ValueError(f"max_samples must be positive or None (all samples); got {max_samples}.")
        self.data, self.index, self.max_samples, self.layer, self.seed = data, index, max_samples, layer, seed
        self.images, self.mean, self.std, self.classes = images, mean, std, classes
        self.marks = {k: np.asarray(v) for k, v in (marks or {}).items()}
        self._reset()

    def _reset(self) -> None:
        self.iterations: list[int] = []
        self.history: dict[str, list[np.ndarray]] = {k: [] for k in HISTORY}
        self.rows_: np.ndarray | None = None  # rows of the followed set that are kept
        self.labels_: np.ndarray | None = None
        self.input_typicality_: tuple | None = None
        self.layer_typicality_: tuple | None = None
        self.layer_: str | None = None
        self.timings: dict[int, float] = {}
        self.bias_: bool = True

    def restart(self) -> None:
        """Forget the checkpoints measured; keep the followed rows, their labels and the inputs'
        typicality (none depends on the weights; see PhaseTracker.restart)."""
        self.iterations = []
        self.history = {k: [] for k in HISTORY}
        self.layer_typicality_ = None
        self.timings = {}
        self.bias_ = True

    # ------------------------------------------------------------------ measurement
    def _forward(self, ctx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """x, y, logits, head input and tracked-layer features of the followed samples."""
        if self.data is None and HEAD in ctx.module_inputs:
            return ctx.fit_x, ctx.fit_y, ctx.fit_logits, ctx.module_inputs[HEAD], _LazyFeatures(ctx)
        # Own forward: followed data of the user's, or a tracker that did not capture the head.
        x, y = (ctx.fit_x, ctx.fit_y) if self.data is None else _as_tensors(self.data, "data")
        head = final_linear_name(ctx.model)
        if head is None:
            raise ValueError("SampleDynamics needs a final nn.Linear producing the logits; the model has none.")
        tokens = getattr(getattr(ctx.tracker, "target", None), "kind", "input") == "tokens"
        with capture_inputs(ctx.model, [head], last_position=[head] if tokens else []) as store:  # a causal LM's head
            logits, feats = ctx.features(x)
        return x, y, logits, torch.cat([a.float().cpu() for a in store[head]]), feats

    def measure(self, ctx) -> list[dict]:
        t0 = time.perf_counter()
        x, y, logits, a, feats = self._forward(ctx)
        logits, y, a = logits.float().cpu(), y.cpu(), a.float().cpu()
        if self.rows_ is None:
            self._setup(ctx, x, y)
        rows = torch.as_tensor(self.rows_)
        self._check_head(ctx, logits, a)
        logits, y, a = logits[rows], y[rows], a[rows]
        g = last_layer_grad_norm(logits, y, a, bias=self.bias_).numpy()
        record = {
            "correct": (logits.argmax(1) == y).numpy(),
            "loss": F.cross_entropy(logits, y, reduction="none").numpy().astype(np.float32),
            "margin": logit_margin(logits, y).numpy().astype(np.float32),
            "grad_norm": g.astype(np.float32),
        }
        if ctx.iteration in self.iterations:  # measured again: replace
            k = self.iterations.index(ctx.iteration)
            for key in HISTORY:
                self.history[key][k] = record[key]
        else:
            k = int(np.searchsorted(self.iterations, ctx.iteration))
            self.iterations.insert(k, int(ctx.iteration))
            for key in HISTORY:
                self.history[key].insert(k, record[key])
        if self.layer_ in feats and ctx.iteration == self.iterations[-1]:  # typicality "at the end" so far
            self.layer_typicality_ = class_distance(feats[self.layer_].cpu().numpy()[self.rows_], self.labels_)
        values = {**gradient_concentration(g), "misclassified_fraction": float(1 - record["correct"].mean())}
        self.timings[int(ctx.iteration)] = time.perf_counter() - t0
        return [{"iteration": ctx.iteration, "layer": "model", "split": "train", "metric": m, "value": values[m],
                 "ci_low": float("nan"), "ci_high": float("nan")} for m in METRICS]

    def _setup(self, ctx, x: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        if self.max_samples is not None and self.max_samples < n:
            rng = np.random.default_rng(self.seed)
            self.rows_ = np.sort(rng.choice(n, self.max_samples, replace=False))
        else:
            self.rows_ = np.arange(n)
        if self.index is not None and len(self.index) != n:
            raise ValueError(f"index has {len(self.index)} entries but the followed set has {n} samples.")
        self.labels_ = y.numpy()[self.rows_]
        self.layer_ = self.layer or ctx.layers[-1]
        if self.layer_ not in ctx.layers:
            raise ValueError(f"layer={self.layer_!r} is not tracked; choose one of: {', '.join(ctx.layers)}.")
        self.input_typicality_ = class_distance(x.reshape(n, -1).cpu().numpy()[self.rows_], self.labels_)

    def _check_head(self, ctx, logits: torch.Tensor, a: torch.Tensor) -> None:
        """The captured input must be what the logits are computed from: logits = a W^T + b."""
        lin = ctx.model.get_submodule(final_linear_name(ctx.model))
        self.bias_ = lin.bias is not None
        k = min(8, len(a))
        pred = F.linear(a[:k].to(lin.weight.device, lin.weight.dtype), lin.weight, lin.bias).float().cpu()
        if a.shape[1] != lin.in_features or not torch.allclose(pred, logits[:k], rtol=1e-3, atol=1e-3 * (1 + logits[:k].abs().max())):
            raise ValueError("The last nn.Linear of the model does not compute the logits from its input, so "
                             "the closed-form last-layer gradient does not apply; make the final Linear the "
                             "model's last module (phasescope's models do).")

    # ------------------------------------------------------------------ results
    def matrix(self, key: str) -> np.ndarray:
        """(K, n) history of ``key`` (one of correct, loss, margin, grad_norm) in checkpoint order."""
        if key not in HISTORY:
            raise KeyError(f"{key!r}; choose one of: {', '.join(HISTORY)}.")
        v = self.history[key]
        return np.stack(v) if v else np.zeros((0, 0 if self.rows_ is None else len(self.rows_)))

    def samples(self) -> pd.DataFrame:
        """One row per followed sample (see the module docstring for the columns)."""
        if not self.iterations:
            return pd.DataFrame()
        correct = self.matrix("correct")
        idx = np.asarray(self.index)[self.rows_] if self.index is not None else self.rows_
        df = pd.DataFrame({
            "index": idx.astype(np.int64),
            "label": self.labels_.astype(np.int64),
            # nullable integer: missing (not a magic number) when never learned
            "learned_at": pd.array(learned_at(correct, self.iterations), dtype="Int64"),
            "forgotten": forgetting_counts(correct),
            "final_correct": correct[-1],
            "final_loss": self.history["loss"][-1],
            "final_margin": self.history["margin"][-1],
            "final_grad_norm": self.history["grad_norm"][-1],
            "mean_loss": self.matrix("loss").mean(0),
        })
        for key, flags in self.marks.items():  # e.g. atypical: made atypical by --atypical
            df[key] = flags[idx]
        for space, typ in (("input", self.input_typicality_), ("layer", self.layer_typicality_)):
            d, z, r = typ if typ is not None else (np.full(len(df), np.nan),) * 3
            df[f"{space}_distance"], df[f"{space}_distance_z"], df[f"{space}_distance_rank"] = d, z, r
        return df

    def curves(self) -> pd.DataFrame:
        """Per checkpoint: the concentration metrics (wide)."""
        g, c = self.matrix("grad_norm"), self.matrix("correct")
        return pd.DataFrame([{"iteration": it, **gradient_concentration(g[k]), "misclassified_fraction": 1 - c[k].mean()}
                             for k, it in enumerate(self.iterations)])

    def summary(self, reconstruction_minimum: dict[str, int] | None = None) -> dict[str, Any]:
        """Concentration, the checkpoint where the top-10% share crosses one half, and how
        learning order relates to typicality; compared with ``reconstruction_minimum``
        ({layer: iteration}, e.g. from ``tracker.phases()``) when given."""
        return summarise_samples(self.samples(), self.curves(), reconstruction_minimum or {},
                                 layer=self.layer_, seconds=self.timings,
                                 followed={"n": 0 if self.rows_ is None else int(len(self.rows_)),
                                           "max_samples": self.max_samples, "seed": self.seed,
                                           "source": "fit subset" if self.data is None else "data"},
                                 marks=[k for k, v in self.marks.items() if v.dtype.kind == "f"])  # text: frequencies

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        """Hook of :func:`phasescope.run.experiment.write_outputs`: the ``samples`` key of phases.json."""
        minima = {n: p["min_iteration"] for n, p in payload.get("layers", {}).items()}
        return {"samples": self.summary(minima)}

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["SampleDynamics"]:
        """The per-sample dynamics of a run, unless ``cfg.samples.enabled`` is off (``--no-samples``).
        Follows the tracker's fit subset, so it reuses the tracker's forward pass."""
        cfg, data = setup.cfg, setup.data
        opts = cfg.samples
        if not opts.enabled and cls.name not in (getattr(cfg, "extensions", None) or ()):
            return []
        fit, _ = measurement_indices(data, cfg.fit_samples, cfg.test_samples, cfg.seed)  # the tracker's fit rows
        marks = {"atypical": data.train_meta["atypical"]} if "atypical" in data.info else {}
        marks.update({k: data.train_meta[k] for k in data.info.get("marks", ()) if k in data.train_meta})  # text
        marks = marks or None
        return [cls(index=fit, max_samples=opts.max_samples, seed=opts.seed, images=data.x_train,
                    mean=data.mean, std=data.std, classes=data.classes, marks=marks)]

    @classmethod
    def report_context(cls, payload: dict) -> dict:
        return {"samples_lines": [line.strip() for line in cls.summary_lines(payload)] if payload.get("samples") else []}

    @classmethod
    def report_timings(cls, payload: dict) -> list[tuple[str, str]]:
        s = (payload.get("samples") or {}).get("seconds_per_checkpoint") if isinstance(payload.get("samples"), dict) \
            else None
        return [("per-sample dynamics", f"{s:.3f} s per checkpoint")] if isinstance(s, (int, float)) else []

    @classmethod
    def summary_lines(cls, payload: dict) -> list[str]:
        return report_lines(payload)

    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        """The ``samples`` key and samples.png from samples.parquet and the metrics (few.png needs the images)."""
        updated = dict(payload)
        return {"samples": updated["samples"]} if rebuild_samples(run_dir, df, updated) else {}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"iterations": list(self.iterations), "history": {k: list(v) for k, v in self.history.items()},
                "rows": self.rows_, "labels": self.labels_, "input_typicality": self.input_typicality_,
                "layer_typicality": self.layer_typicality_, "layer": self.layer_, "timings": dict(self.timings),
                "bias": self.bias_}

    def load_state_dict(self, state: dict) -> None:
        self._reset()
        self.iterations = [int(i) for i in state["iterations"]]
        self.history = {k: [np.asarray(a) for a in state["history"][k]] for k in HISTORY}
        self.rows_, self.labels_ = state["rows"], state["labels"]
        self.input_typicality_, self.layer_typicality_ = state["input_typicality"], state["layer_typicality"]
        self.layer_, self.timings, self.bias_ = state["layer"], dict(state["timings"]), state["bias"]

    # ------------------------------------------------------------------ files
    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        """Hook of :func:`phasescope.run.experiment.write_outputs`: samples.parquet (or .csv
        without pyarrow) and samples.npz (raw per-checkpoint arrays); with ``figure`` also
        samples.png and, for image data given as ``images``, few.png."""
        out = Path(out)
        table = self.samples()
        if table.empty:
            return []
        written = [write_samples_table(out, table)]
        arrays = {"iterations": np.asarray(self.iterations), "index": table["index"].to_numpy(),
                  "label": self.labels_, **{k: self.matrix(k) for k in HISTORY}}
        atomic_write(out / "samples.npz", write_bytes_to(lambda f: np.savez_compressed(f, **arrays)))
        written.append(out / "samples.npz")
        if figure:
            written.append(plot_samples(df, payload, out / "samples.png"))
            if self.images is not None and self.images.ndim == 4:
                written.append(plot_few(table, self.images, self.mean, self.std, out / "few.png", classes=self.classes))
        return written


def sample_extensions(cfg, data, given: Sequence = ()) -> list[SampleDynamics]:
    """Deprecated: ``SampleDynamics.from_config(RunSetup(cfg, data, given))`` (none when one is given)."""
    warnings.warn("sample_extensions(cfg, data, given) is deprecated; use "
                  "SampleDynamics.from_config(RunSetup(cfg, data, given))", DeprecationWarning, stacklevel=2)
    if any(getattr(e, "name", None) == SampleDynamics.name for e in given):
        return []
    return SampleDynamics.from_config(RunSetup(cfg, data, list(given)))
