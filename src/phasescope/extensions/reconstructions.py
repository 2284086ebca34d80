"""What does a layer keep? Its decoder's reconstructions of fixed test images over training.

    ext = Reconstructions(per_class=2, mean=data.mean, std=data.std, classes=data.classes)
    tracker = PhaseTracker(model, layers, fit_data, test_data, extensions=[ext])
    ...train, calling tracker.maybe_measure(model, t)...
    ext.write(out, tracker.results(), payload, figure=True)   # reconstructions.npz + reconstructions.png

At every checkpoint :class:`Reconstructions` asks the tracker's freshly fitted decoder
(``ctx.reconstruct``) for its reconstructions of a few test images of every class, un-normalises
them back to pixels and keeps them as uint8. The images are chosen once, by a fixed seed
(:data:`SELECTION_SEED`) over the measurement test set, so they are the same at every checkpoint
and for every seed of a configuration (the test subset itself does not depend on the run's seed).

With ``prototypes`` it also decodes each class's mean test feature. The default decoder is affine
(ridge with a bias), so the decoding of the class-mean feature is exactly the class mean of the
decoded test inputs, which is how it is computed (the ``conv`` decoder is not affine: there the row
is the class mean of the reconstructions, and the files say so). The same pass measures how much
of the input's variation the reconstructions keep, within classes and between them
(:func:`spread_kept`): if late reconstructions collapse toward class means, the within-class share
falls while the between-class share stays.

Files (written by :meth:`Reconstructions.write`, redrawn from files by :func:`rebuild_reconstructions`):

* ``reconstructions.npz``: ``iterations`` (K,), ``test_index`` (n,) indices into the dataset's test
  split, ``rows`` (n,) rows of the measurement test set, ``labels`` (n,), ``original`` (n, C, H, W),
  ``reconstructions`` (K, n, C, H, W), all images uint8 pixels; with prototypes ``prototype_labels``
  (P,), ``prototype_original`` (P, C, H, W) the class-mean input, ``prototypes`` (K, P, C, H, W),
  ``within_class_kept`` and ``between_class_kept`` (K,); ``layer``, ``classes``, ``selection_seed``,
  ``prototype_method``.
* ``reconstructions.png``: rows = images (original first), columns = checkpoints, the reconstruction
  minimum's column framed, the phases as a colour band on top, class-mean rows below.

Inputs that are not images (one dimension, e.g. the synthetic data) are skipped: phases.json says so.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch

from ..config import Section, opt
from ..data.subsets import measurement_indices
from ..extension import Extension, RunSetup
from ..outputs.figures import PHASE_COLOURS, to_rgb8
from ..outputs.runs import atomic_write as _atomic, save_figure

SELECTION_SEED = 20220217  # fixed: the same test images for every run and seed (not the run's seed)
NPZ, PNG = "reconstructions.npz", "reconstructions.png"


# ---------------------------------------------------------------------- pure functions
def select_images(y: np.ndarray, per_class: int, seed: int = SELECTION_SEED) -> np.ndarray:
    """Rows of ``y`` to show: ``per_class`` per class (fewer where a class has fewer), chosen by
    ``seed``, in class order, each class's rows ascending."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rows.append(np.sort(rng.choice(members, min(per_class, len(members)), replace=False)))
    return np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)


def to_pixels(x: torch.Tensor | np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Normalised images (N, C, H, W) -> uint8 pixels (N, C, H, W): x * std + mean, clipped to [0, 1]."""
    x = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)
    c = x.shape[1]
    m = np.asarray(mean if mean is not None else [0.0] * c, dtype=np.float64).reshape(1, -1, 1, 1)
    s = np.asarray(std if std is not None else [1.0] * c, dtype=np.float64).reshape(1, -1, 1, 1)
    return np.round(np.clip(x * s + m, 0, 1) * 255).astype(np.uint8)


def class_sums(A: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(within-class, between-class) sums of squares of the rows of ``A`` (N, D): around each class's
    mean, and of the class means around the overall mean weighted by class size (float64 sums)."""
    A, y = np.asarray(A), np.asarray(y)
    grand = A.mean(0, dtype=np.float64)
    within = between = 0.0
    for c in np.unique(y):
        a = A[y == c]
        m = a.mean(0, dtype=np.float64)
        within += float(np.square(a - m.astype(a.dtype)).sum(dtype=np.float64))
        between += len(a) * float(np.square(m - grand).sum())
    return within, between


def spread_kept(X: np.ndarray, R: np.ndarray, y: np.ndarray, x_sums: tuple[float, float] | None = None) -> tuple[float, float]:
    """How much of the inputs' variation the reconstructions keep: (within-class, between-class)
    sums of squares of ``R`` divided by those of ``X`` (both (N, D), same units). 1 = all of it.
    ``x_sums``: :func:`class_sums` of ``X`` when already known (they do not change over training)."""
    xw, xb = x_sums if x_sums is not None else class_sums(X, y)
    rw, rb = class_sums(R, y)
    ratio = lambda r, x: float(r / x) if x > 0 else float("nan")  # noqa: E731
    return ratio(rw, xw), ratio(rb, xb)


def phase_at(phases: list[dict], iteration: int) -> str | None:
    """Name of the phase a checkpoint lies in (a boundary checkpoint belongs to the later phase)."""
    for p in phases:
        if p["start"] <= iteration < p["end"]:
            return p["name"]
    return phases[-1]["name"] if phases and iteration == phases[-1]["end"] else None


# ---------------------------------------------------------------------- the extension
@dataclass
class ReconstructionsOptions(Section):
    """The ``reconstructions`` section of a run's configuration (``--reconstructions/--no-reconstructions``)."""

    section: ClassVar[str] = "reconstructions"
    enabled: bool = opt(True, "Decoded test images at every checkpoint: reconstructions.npz and reconstructions.png.",
                        flag="--reconstructions/--no-reconstructions")
    per_class: int = opt(2, "Test images per class (the same images for every seed).", positive=True)
    layer: str | None = opt(None, "Tracked layer they are decoded from [the last tracked layer].")
    prototypes: bool = opt(True, "Also decode each class's mean test feature (a class-mean row per class).")


class Reconstructions(Extension):
    """Tracker extension keeping the decoder's reconstructions of fixed test images.

    Parameters
    ----------
    per_class: test images per class.
    layer: tracked layer to decode from (default: the last tracked layer).
    prototypes: also decode each class's mean test feature, and measure the spread kept.
    mean, std: per-channel normalisation of the inputs (to un-normalise to pixels; default 0 and 1).
    classes: class names (for the figure).
    index: dataset test-split index of each row of the tracker's test set (written as ``test_index``).
    seed: selection seed (default :data:`SELECTION_SEED`, independent of the run's seed).
    """

    name = "reconstructions"
    options = ReconstructionsOptions
    report_template = "extensions/reconstructions.html.j2"
    report_title, report_anchor, report_order = "Reconstructions", "reconstructions", 10
    files = (NPZ, PNG)
    figures = {"reconstructions.png": ("reconstructions", "The decoder's reconstructions of fixed test images at every "
                                       "checkpoint (first column: the input); the reconstruction minimum is framed, "
                                       "the phases are the band on top; class means below.")}

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["Reconstructions"]:
        """The reconstruction strip of a run, unless ``cfg.reconstructions.enabled`` is off. The
        tracker's test set is the seed-0 stratified subset of the test split (as
        experiment.measurement_sets), so ``test_index`` can point into the dataset."""
        cfg, data = setup.cfg, setup.data
        opts = getattr(cfg, "reconstructions", None)
        if opts is None or (not opts.enabled and cls.name not in (getattr(cfg, "extensions", None) or ())):
            return []
        test = measurement_indices(data, cfg.fit_samples, cfg.test_samples, cfg.seed)[1]  # the tracker's test rows
        return [cls(per_class=opts.per_class, layer=opts.layer, prototypes=opts.prototypes,
                    mean=data.mean, std=data.std, classes=data.classes, index=test)]

    @classmethod
    def figures_expected(cls, payload: dict) -> bool:
        r = payload.get("reconstructions")
        return r is not None and not (r or {}).get("skipped")

    @classmethod
    def report_context(cls, payload: dict) -> dict:
        r = payload.get("reconstructions")
        if not isinstance(r, dict):
            return {"reconstructions": None}
        if r.get("skipped"):
            return {"reconstructions": {"skipped": r["skipped"]}}
        kept = r.get("kept") or {}
        rows = [{"when": k, "iteration": v.get("iteration"), "within": v.get("within_class"),
                 "between": v.get("between_class")} for k, v in kept.items() if isinstance(v, dict)]
        return {"reconstructions": {"layer": r.get("layer"), "images": r.get("images"),
                                    "method": r.get("prototype_method"), "kept": rows}}

    def __init__(self, *, per_class: int = 2, layer: str | None = None, prototypes: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 classes: Sequence[str] | None = None, index: Sequence[int] | None = None,
                 seed: int = SELECTION_SEED):
        if per_class <= 0:
            raise ValueError(f"per_class must be positive; got {per_class}.")
        self.per_class, self.layer, self.prototypes, self.seed = int(per_class), layer, bool(prototypes), int(seed)
        self.mean, self.std = mean, std
        self.classes = list(classes) if classes is not None else None
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.skipped: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.iterations: list[int] = []
        self.images: list[np.ndarray] = []  # per checkpoint (n, C, H, W) uint8
        self.protos: list[np.ndarray] = []  # per checkpoint (P, C, H, W) uint8
        self.kept: list[tuple[float, float]] = []  # per checkpoint (within, between)
        self.rows_: np.ndarray | None = None
        self.labels_: np.ndarray | None = None
        self.original_: np.ndarray | None = None
        self.proto_labels_: np.ndarray | None = None
        self.proto_original_: np.ndarray | None = None
        self.x_sums_: tuple[float, float] | None = None  # class_sums of the test inputs (fixed)
        self.layer_: str | None = None
        self.method_: str = "class mean of the decoded test inputs"

    def setup(self, tracker) -> None:
        shape = tuple(tracker.test_x.shape[1:])
        if len(shape) != 3:
            self.skipped = (f"inputs of shape {shape} are not images (C, H, W); no reconstruction strip "
                            "(reconstructions.npz/png) is drawn.")
            return
        self.layer_ = self.layer or tracker.layers[-1]
        if self.layer_ not in tracker.layers:
            raise ValueError(f"reconstructions layer={self.layer_!r} is not tracked; choose one of: "
                             f"{', '.join(tracker.layers)}.")
        if getattr(tracker, "decoder", "linear") != "linear":
            self.method_ = "class mean of the reconstructions (the conv decoder is not affine)"
        else:
            self.method_ = "decoded class-mean feature (= class mean of the decoded inputs: the decoder is affine)"

    def restart(self) -> None:
        """Forget the checkpoints measured; keep the images chosen, their originals and the test
        inputs' class sums (none depends on the weights; see PhaseTracker.restart)."""
        self.iterations, self.images, self.protos, self.kept = [], [], [], []

    def describe(self) -> dict:
        return {"per_class": self.per_class, "layer": self.layer_ or self.layer, "prototypes": self.prototypes,
                "selection_seed": self.seed, **({"skipped": self.skipped} if self.skipped else {})}

    def _select(self, ctx) -> None:
        y = ctx.test_y.cpu().numpy()
        self.rows_ = select_images(y, self.per_class, self.seed)
        self.labels_ = y[self.rows_]
        self.original_ = to_pixels(ctx.test_x[torch.as_tensor(self.rows_)], self.mean, self.std)
        if self.prototypes:
            self.proto_labels_ = np.unique(y)
            x = ctx.test_x.double()
            self.proto_original_ = to_pixels(torch.stack([x[torch.as_tensor(y == c)].mean(0)
                                                          for c in self.proto_labels_]), self.mean, self.std)

    def measure(self, ctx) -> list[dict]:
        if self.skipped or ctx.reconstruct is None:
            return []
        if self.rows_ is None:  # chosen once: the first checkpoint's selection is kept
            self._select(ctx)
        shape = (-1, *ctx.test_x.shape[1:])
        rec = ctx.reconstruct(self.layer_, torch.as_tensor(self.rows_)).reshape(shape)
        images = to_pixels(rec, self.mean, self.std)
        protos, kept = None, (float("nan"), float("nan"))
        if self.prototypes:
            y = ctx.test_y.cpu().numpy()
            R = ctx.reconstruct(self.layer_, torch.arange(len(y))).float().numpy()
            if self.x_sums_ is None:
                self.x_sums_ = class_sums(ctx.test_x.reshape(len(y), -1).float().numpy(), y)
            kept = spread_kept(None, R, y, self.x_sums_)
            means = np.stack([R[y == c].mean(0, dtype=np.float64) for c in self.proto_labels_]).reshape(shape)
            protos = to_pixels(means, self.mean, self.std)
        t = int(ctx.iteration)
        if t in self.iterations:  # measured again: replace
            k = self.iterations.index(t)
            self.images[k], self.kept[k] = images, kept
            if protos is not None:
                self.protos[k] = protos
        else:
            k = int(np.searchsorted(self.iterations, t))
            self.iterations.insert(k, t)
            self.images.insert(k, images)
            self.kept.insert(k, kept)
            if protos is not None:
                self.protos.insert(k, protos)
        return []

    # ------------------------------------------------------------------ results
    def arrays(self) -> dict[str, np.ndarray]:
        """The contents of reconstructions.npz (empty before the first checkpoint)."""
        if not self.iterations:
            return {}
        rows = self.rows_
        out = {
            "iterations": np.asarray(self.iterations, dtype=np.int64),
            "rows": rows.astype(np.int64),
            "test_index": (self.index[rows] if self.index is not None else rows).astype(np.int64),
            "labels": self.labels_.astype(np.int64),
            "original": self.original_,
            "reconstructions": np.stack(self.images),
            "layer": np.array(self.layer_),
            "classes": np.array(self.classes if self.classes is not None else [], dtype=str),
            "selection_seed": np.array(self.seed),
        }
        if self.prototypes and self.protos:
            out.update({
                "prototype_labels": self.proto_labels_.astype(np.int64),
                "prototype_original": self.proto_original_,
                "prototypes": np.stack(self.protos),
                "within_class_kept": np.array([k[0] for k in self.kept]),
                "between_class_kept": np.array([k[1] for k in self.kept]),
                "prototype_method": np.array(self.method_),
            })
        return out

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        """Hook of write_outputs: the ``reconstructions`` key of phases.json."""
        if self.skipped:
            return {"reconstructions": {"skipped": self.skipped}}
        a = self.arrays()
        return {"reconstructions": summarise_arrays(a, payload) if a else {"images": 0}}

    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        """reconstructions.npz after every checkpoint; with ``figure`` also reconstructions.png."""
        a = self.arrays()
        if self.skipped or not a:
            return []
        out = Path(out)
        write_arrays(out / NPZ, a)
        written = [out / NPZ]
        if figure:
            written.append(plot_reconstructions(a, payload, out / PNG))
        return written

    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        return rebuild_reconstructions(run_dir, payload)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"iterations": list(self.iterations), "images": list(self.images), "protos": list(self.protos),
                "kept": list(self.kept), "rows": self.rows_, "labels": self.labels_, "original": self.original_,
                "proto_labels": self.proto_labels_, "proto_original": self.proto_original_,
                "layer": self.layer_, "method": self.method_}

    def load_state_dict(self, state: dict) -> None:
        self._reset()
        self.iterations = [int(i) for i in state["iterations"]]
        self.images, self.protos = list(state["images"]), list(state["protos"])
        self.kept = [tuple(k) for k in state["kept"]]
        self.rows_, self.labels_, self.original_ = state["rows"], state["labels"], state["original"]
        self.proto_labels_, self.proto_original_ = state["proto_labels"], state["proto_original"]
        self.layer_ = state["layer"] or self.layer_
        self.method_ = state.get("method", self.method_)


# ---------------------------------------------------------------------- files
def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    _atomic(Path(path), save)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def summarise_arrays(a: dict[str, np.ndarray], payload: dict) -> dict[str, Any]:
    """The ``reconstructions`` document of phases.json from the arrays of reconstructions.npz."""
    layer = str(a["layer"])
    its = [int(i) for i in a["iterations"]]
    out: dict[str, Any] = {"layer": layer, "file": NPZ, "figure": PNG, "images": int(len(a["labels"])),
                           "checkpoints": its, "test_index": [int(i) for i in a["test_index"]],
                           "selection_seed": int(a["selection_seed"])}
    if "within_class_kept" in a:
        within, between = a["within_class_kept"], a["between_class_kept"]
        out["prototype_method"] = str(a["prototype_method"])
        out["within_class_kept"] = [_num(v) for v in within]
        out["between_class_kept"] = [_num(v) for v in between]
        m = (payload.get("layers") or {}).get(layer, {}).get("min_iteration")
        picks = {"start": its[0], "minimum": m, "end": its[-1]}
        out["kept"] = {k: {"iteration": int(t), "within_class": _num(within[its.index(t)]),
                           "between_class": _num(between[its.index(t)])}
                       for k, t in picks.items() if t is not None and t in its}
    return out


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def rebuild_reconstructions(run_dir: Path, payload: dict) -> dict:
    """Recompute the ``reconstructions`` key of phases.json and redraw reconstructions.png from
    reconstructions.npz. Returns {} (and draws nothing) when the run has no such file."""
    run_dir = Path(run_dir)
    if not (run_dir / NPZ).exists():
        return {}
    a = read_arrays(run_dir / NPZ)
    plot_reconstructions(a, payload, run_dir / PNG)
    return {"reconstructions": summarise_arrays(a, payload)}


def reconstruction_extensions(cfg, data, given: Sequence = ()) -> list[Reconstructions]:
    """Deprecated: ``Reconstructions.from_config(RunSetup(cfg, data, given))`` (none when one is given)."""
    warnings.warn("reconstruction_extensions(cfg, data, given) is deprecated; use "
                  "Reconstructions.from_config(RunSetup(cfg, data, given))", DeprecationWarning, stacklevel=2)
    if any(getattr(e, "name", None) == Reconstructions.name for e in given):
        return []
    return Reconstructions.from_config(RunSetup(cfg, data, list(given)))


# ---------------------------------------------------------------------- the figure
def _tile(img: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W, 3) float in [0, 1] (grey repeated; other channel counts: their mean)."""
    x = img.astype(np.float64) / 255.0
    if x.shape[0] == 3:
        return x.transpose(1, 2, 0)
    g = x.mean(0)
    return np.repeat(g[..., None], 3, axis=2)


def plot_reconstructions(a: dict[str, np.ndarray], payload: dict, path: Path, *, classes: Sequence[str] | None = None,
                         title: str | None = None) -> Path:
    """The strip: rows = images (original first column), columns = checkpoints; the reconstruction
    minimum's column framed; the phases as a colour band on top; class means below the images.
    ``a`` holds the arrays of reconstructions.npz, ``payload`` phases.json (for phases and minimum)."""
    from matplotlib.figure import Figure  # lazy: matplotlib is heavy and only the figure needs it
    from matplotlib.patches import Rectangle  # lazy: matplotlib is heavy and only the figure needs it

    its = [int(i) for i in a["iterations"]]
    layer = str(a["layer"])
    names = list(classes) if classes is not None else [str(c) for c in a.get("classes", [])]
    info = (payload.get("layers") or {}).get(layer, {})
    phases, minimum = info.get("phases") or [], info.get("min_iteration")
    rec, orig, labels = a["reconstructions"], a["original"], a["labels"]
    blocks = [(orig, rec, [names[c] if c < len(names) else str(c) for c in labels])]
    if "prototypes" in a:
        pl = a["prototype_labels"]
        blocks.append((a["prototype_original"], a["prototypes"],
                       [f"{names[c] if c < len(names) else c} mean" for c in pl]))
    K = len(its)
    h, w = orig.shape[-2:]
    pad = max(1, h // 10)
    cell_w, cell_h = w + pad, h + pad
    gap = max(2, w // 2)  # between the original column and the checkpoints; between the blocks
    x_cols = [0] + [w + gap + pad + k * cell_w for k in range(K)]  # left pixel of each column
    width = x_cols[-1] + w
    n_rows = sum(len(b[0]) for b in blocks)
    height = n_rows * cell_h + (len(blocks) - 1) * 2 * gap
    canvas = np.ones((height, width, 3))
    row_y, y = [], 0
    for bi, (o, r, lab) in enumerate(blocks):
        ys = []
        for i in range(len(o)):
            canvas[y:y + h, 0:w] = _tile(o[i])
            for k in range(K):
                canvas[y:y + h, x_cols[k + 1]:x_cols[k + 1] + w] = _tile(r[k, i])
            ys.append(y)
            y += cell_h
        row_y.append(ys)
        y += 2 * gap
    # margins (in pixels of the canvas) for labels, headers and the phase band
    left, top, bottom, right = 3.4 * w, 2.3 * h, 0.6 * h, 0.3 * w
    scale = 0.36 / max(h, w)  # inches per pixel: a tile is about 0.36 inch
    fig_w, fig_h = (width + left + right) * scale, (height + top + bottom) * scale
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(to_rgb8(canvas), interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    ax.set_xlim(-left, width + right)
    ax.set_ylim(height + bottom, -top)
    ax.set_axis_off()
    fs = 7
    centre = lambda k: x_cols[k + 1] + w / 2 - 0.5  # noqa: E731  column k's centre
    for k, t in enumerate(its):
        ax.text(centre(k), -0.25 * h, str(t), ha="center", va="bottom", fontsize=fs,
                fontweight="bold" if t == minimum else "normal")
    ax.text(w / 2 - 0.5, -0.25 * h, "input", ha="center", va="bottom", fontsize=fs)
    # phases: a colour band over the checkpoint columns, boundaries at the boundary checkpoints
    band_top, band_h = -1.55 * h, 0.6 * h
    cx = [centre(k) for k in range(K)]
    for p in phases:
        x0 = np.interp(p["start"], its, cx) if p["start"] > its[0] else cx[0] - cell_w / 2
        x1 = np.interp(p["end"], its, cx) if p["end"] < its[-1] else cx[-1] + cell_w / 2
        if x1 <= x0:
            continue
        ax.add_patch(Rectangle((x0, band_top), x1 - x0, band_h, color=PHASE_COLOURS.get(p["name"], "#dddddd"), lw=0))
        if x1 - x0 > 1.6 * cell_w:
            ax.text((x0 + x1) / 2, band_top + band_h / 2, p["name"], ha="center", va="center", fontsize=fs - 0.5)
    if not phases:
        ax.text(np.mean(cx) if cx else 0, band_top + band_h / 2, "phases: not detected yet (fewer than 2 checkpoints)",
                ha="center", va="center", fontsize=fs - 0.5, color="#666666")
    ax.text(centre(-1) if K else 0, band_top + band_h / 2, "phases", ha="center", va="center", fontsize=fs)
    if minimum is not None and minimum in its:
        k = its.index(minimum)
        ax.add_patch(Rectangle((x_cols[k + 1] - pad / 2 - 0.5, -0.2 * h), w + pad, height + 0.2 * h,
                               fill=False, ec="#08519c", lw=1.6))
        ax.text(centre(k), height + 0.05 * h, "minimum", ha="center", va="top", fontsize=fs - 0.5, color="#08519c")
    for ys, (_, _, lab) in zip(row_y, blocks):
        for yy, text in zip(ys, lab):
            ax.text(-0.3 * w, yy + h / 2, text, ha="right", va="center", fontsize=fs)
    head = title or f"What {layer} keeps: decoded test images over training (columns: iteration)"
    ax.text(-left + 0.2 * w, -top + 0.15 * h, head, ha="left", va="top", fontsize=fs + 1.5)
    save_figure(fig, path, dpi=max(150, int(1.5 * max(h, w) / 0.36)))  # at least 1.5 output pixels per image pixel
    return Path(path)
