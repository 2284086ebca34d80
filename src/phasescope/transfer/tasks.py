"""Transfer tasks: labelled data on which frozen features are probed at every checkpoint.

A :class:`TransferTask` holds inputs in the *pre-training* model's input space (same
shape, normalised with the pre-training data's statistics) and labels of a different
task. The tasks, by the names the CLI takes (``--transfer``):

* ``colour``: colour dominance, which of R, G, B has the largest sum over the raw,
  un-normalised image (3 classes), on the tracker's own fit and test inputs. Colour data only.
* ``switch:DATASET`` (or ``switch:DATASET@PATH`` to read it from ``PATH``): another dataset
  of the same kind of input (MNIST <-> Fashion-MNIST, CIFAR-10 <-> CIFAR-100,
  ``mnist-digits`` <-> ``digits``). Its raw images are resized to the pre-training input
  size (bilinear ``torch.nn.functional.interpolate``, antialiased when shrinking) and
  normalised with the pre-training data's statistics. The channel counts must match.
* ``class-split``: pre-train on the first half of the classes, transfer to the other
  half. This changes the *pre-training* data (:func:`split_classes`): the tracked run
  never sees the transfer classes, neither in training nor in its measurement sets.
* ``npz:PATH``: any labelled dataset in an ``.npz`` (``x_train, y_train, x_test, y_test``)
  with exactly the pre-training input shape.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data import Splits, load_dataset, measurement_sets
from ..data.base import DataError, normalise, unnormalise


class TransferError(ValueError):
    """A transfer task cannot be set up; the message says which and how to fix it."""


TASK_HELP = "colour, class-split, switch:DATASET[@PATH] or npz:PATH"


@dataclass
class TransferTask:
    """Inputs and labels of one transfer task.

    ``train``/``test`` are ``(x, y)`` with x already in the pre-training input space. When
    they are None, the task reuses the tracker's fit/test inputs (and their features) and
    ``label_fn`` computes its labels from those inputs.
    """

    name: str
    num_classes: int
    classes: list[str]
    train: tuple[torch.Tensor, torch.Tensor] | None = None
    test: tuple[torch.Tensor, torch.Tensor] | None = None
    label_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.train is None) != (self.test is None) or (self.train is None and self.label_fn is None):
            raise TransferError(f"Task {self.name!r} needs train and test data, or a label_fn over the tracker's inputs.")

    @property
    def uses_tracker_inputs(self) -> bool:
        return self.train is None

    def describe(self) -> dict[str, Any]:
        out = {"num_classes": self.num_classes, "classes": self.classes, **self.info}
        if self.train is not None:
            out.update(n_train=int(len(self.train[1])), n_test=int(len(self.test[1])))
        return out


# --------------------------------------------------------------------------- parsing


def parse_specs(specs: str | Sequence[str] | None) -> list[str]:
    """Task specs from ``"colour,switch:digits"`` or a list; validated, duplicates rejected."""
    if specs is None:
        return []
    items = [s.strip() for s in (specs.split(",") if isinstance(specs, str) else specs) if s and s.strip()]
    for s in items:
        kind, _, arg = s.partition(":")
        if kind in ("colour", "color", "class-split"):
            if arg:
                raise TransferError(f"Transfer task {s!r} takes no argument; use {kind!r}.")
        elif kind in ("switch", "npz"):
            if not arg:
                raise TransferError(f"Transfer task {s!r} needs a {'dataset name' if kind == 'switch' else 'path'}: "
                                    f"{kind}:{'DATASET' if kind == 'switch' else 'PATH'}.")
        else:
            raise TransferError(f"Unknown transfer task {s!r}; choose {TASK_HELP}.")
    items = ["colour" if s == "color" else s for s in items]
    dup = sorted({s for s in items if items.count(s) > 1})
    if dup:
        raise TransferError(f"Transfer task(s) {', '.join(dup)} given twice.")
    return items


# --------------------------------------------------------------------------- pixel helpers


def colour_dominance(raw: torch.Tensor) -> torch.Tensor:
    """Which of R, G, B has the largest sum over a raw (N, 3, H, W) image: labels 0, 1, 2."""
    if raw.dim() != 4 or raw.shape[1] != 3:
        raise TransferError(f"colour dominance needs RGB images (N, 3, H, W); got shape {tuple(raw.shape)}.")
    return raw.double().sum(dim=(2, 3)).argmax(1)


def resize(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) images; antialiased when shrinking."""
    if tuple(raw.shape[-2:]) == tuple(size):
        return raw
    shrink = size[0] < raw.shape[-2] or size[1] < raw.shape[-1]
    return F.interpolate(raw.float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)


def to_input_space(x: torch.Tensor, source: Splits, target: Splits, *, allow_resize: bool, what: str) -> torch.Tensor:
    """Inputs of ``source`` (normalised with its own statistics) as inputs of ``target``'s model."""
    want = tuple(target.input_shape)
    have = tuple(x.shape[1:])
    if have != want:
        if not allow_resize or len(have) != 3 or len(want) != 3:
            raise TransferError(
                f"{what} has input shape {have} but the pre-training data {target.name!r} has {want}; "
                "give a dataset with the same input shape.")
        if have[0] != want[0]:
            raise TransferError(
                f"{what} has {have[0]} channel(s) but the pre-training data {target.name!r} has {want[0]}; "
                "switch between datasets with the same number of channels (MNIST <-> Fashion-MNIST, "
                "CIFAR-10 <-> CIFAR-100, mnist-digits <-> digits).")
    raw = unnormalise(x, source.mean, source.std)
    if have != want:
        raw = resize(raw, want[1:])
    return normalise(raw, target.mean, target.std).contiguous()


# --------------------------------------------------------------------------- tasks


def colour_task(data: Splits) -> TransferTask:
    """Colour dominance on the tracker's own inputs (``data`` gives the normalisation)."""
    if len(data.input_shape) != 3 or data.input_shape[0] != 3:
        raise TransferError(
            f"Transfer task 'colour' needs colour (RGB) images, but dataset {data.name!r} has input shape "
            f"{data.input_shape}; use it with cifar10, cifar100 or RGB npz/folder data.")
    mean, std = list(data.mean), list(data.std)
    return TransferTask("colour", 3, ["red", "green", "blue"],
                        label_fn=lambda x: colour_dominance(unnormalise(x, mean, std)),
                        info={"labels": "argmax over R, G, B of the raw pixel sum", "inputs": "the tracker's fit/test sets"})


def dataset_task(name: str, other: Splits, data: Splits, *, allow_resize: bool, fit_samples: int | None = 4000,
                 test_samples: int | None = 2000, seed: int = 0, info: dict | None = None) -> TransferTask:
    """A task on another labelled dataset ``other``, moved into ``data``'s input space."""
    (xf, yf), (xt, yt) = measurement_sets(other, fit_samples, test_samples, seed)  # as the tracker's sets
    xf = to_input_space(xf, other, data, allow_resize=allow_resize, what=f"transfer data {other.name!r}")
    xt = to_input_space(xt, other, data, allow_resize=allow_resize, what=f"transfer data {other.name!r}")
    resized = tuple(other.input_shape) != tuple(data.input_shape)
    info = {"source": other.name, "source_shape": list(other.input_shape),
            "resized": f"bilinear {list(other.input_shape[1:])} -> {list(data.input_shape[1:])}" if resized else None,
            "normalised_with": f"pre-training statistics of {data.name!r}", **(info or {})}
    return TransferTask(name, other.num_classes, list(other.classes), train=(xf, yf), test=(xt, yt), info=info)


def switch_task(spec: str, data: Splits, *, fit_samples: int | None = 4000, test_samples: int | None = 2000,
                seed: int = 0, download: bool = False) -> TransferTask:
    """``switch:DATASET[@PATH]``: probe on another dataset (resized to ``data``'s input size)."""
    target = spec.partition(":")[2]
    name, _, path = target.partition("@")
    if name == data.name and not path:
        raise TransferError(f"{spec!r} switches to the pre-training dataset itself; name another dataset.")
    try:
        other = load_dataset(name, data_dir=path or None, download=download)
    except DataError as e:
        hint = "" if path else f" Give the dataset's location in the task itself: switch:{name}@PATH."
        raise TransferError(f"Transfer task {spec!r}: {e}{hint}") from e
    return dataset_task(spec, other, data, allow_resize=True, fit_samples=fit_samples, test_samples=test_samples,
                        seed=seed, info={"path": path or None})


def npz_task(spec: str, data: Splits, *, fit_samples: int | None = 4000, test_samples: int | None = 2000,
             seed: int = 0) -> TransferTask:
    """``npz:PATH``: probe on a labelled ``.npz`` with exactly ``data``'s input shape."""
    from ..data.files import load_npz

    path = spec.partition(":")[2]
    try:
        other = load_npz(path, name=Path(path).stem)
    except DataError as e:
        raise TransferError(f"Transfer task {spec!r}: {e}") from e
    return dataset_task(spec, other, data, allow_resize=False, fit_samples=fit_samples, test_samples=test_samples,
                        seed=seed, info={"path": str(path)})


def _select(data: Splits, keep: list[int], split: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    y = getattr(data, f"y_{split}")
    idx = np.flatnonzero(np.isin(y.numpy(), keep))
    remap = torch.full((data.num_classes,), -1, dtype=torch.long)
    remap[torch.as_tensor(keep)] = torch.arange(len(keep))
    return getattr(data, f"x_{split}")[idx], remap[y[idx]], idx


def split_classes(data: Splits, pretrain_classes: Sequence[int] | None = None) -> tuple[Splits, Splits]:
    """Split ``data`` by class into pre-training and transfer datasets.

    ``pretrain_classes`` (label indices) default to the first half, ``0 .. k//2 - 1``; the
    others are the transfer classes. Both parts are relabelled ``0..`` in the original
    order and normalised with the statistics of the *pre-training* part's training split
    (so not even the normalisation sees the transfer classes). ``train_meta``/``test_meta``
    gain ``original_label`` and ``original_index`` (rows of ``data``'s splits); ``info`` of
    the pre-training part records which classes are which.
    """
    k = data.num_classes
    pre = sorted({int(c) for c in (pretrain_classes if pretrain_classes is not None else range(k // 2))})
    post = [c for c in range(k) if c not in pre]
    if len(pre) < 2 or len(post) < 2 or not all(0 <= c < k for c in pre):
        raise TransferError(f"class-split needs at least 2 pre-training and 2 transfer classes among the {k} "
                            f"classes 0..{k - 1} of {data.name!r}; got pre-training classes {pre}.")
    # Statistics of the pre-training part's raw training images: both parts are normalised with them.
    raw_pre = unnormalise(data.x_train[np.isin(data.y_train.numpy(), pre)], data.mean, data.std).double()
    axes = (0, 2, 3) if raw_pre.dim() == 4 else (0, 1)
    mean = [round(float(v), 6) for v in raw_pre.mean(axes).reshape(-1)]
    std = [round(float(v) + 1e-6, 6) for v in raw_pre.std(axes, unbiased=False).reshape(-1)]
    names = list(data.classes)
    record = {"pretrain_classes": [names[c] for c in pre], "transfer_classes": [names[c] for c in post],
              "pretrain_labels": pre, "transfer_labels": post, "source": data.name}

    def renorm(x: torch.Tensor) -> torch.Tensor:
        return normalise(unnormalise(x, data.mean, data.std), mean, std).contiguous()

    def meta(m: dict, idx: np.ndarray, y: torch.Tensor) -> dict:
        return {**{key: v[idx] for key, v in m.items()}, "original_label": y[idx].numpy(), "original_index": idx}

    out = []
    for role, keep in (("pretrain", pre), ("transfer", post)):
        xtr, ytr, itr = _select(data, keep, "train")
        xte, yte, ite = _select(data, keep, "test")
        out.append(dataclasses.replace(
            data, name=f"{data.name}[{role} classes]", x_train=renorm(xtr), y_train=ytr, x_test=renorm(xte),
            y_test=yte, classes=[names[c] for c in keep], mean=mean, std=std,
            info={**data.info, "class_split": {**record, "role": role}},
            train_meta=meta(data.train_meta, itr, data.y_train), test_meta=meta(data.test_meta, ite, data.y_test),
        ))
    return out[0], out[1]


def class_split_task(transfer: Splits, pretrain: Splits, *, fit_samples: int | None = 4000,
                     test_samples: int | None = 2000, seed: int = 0) -> TransferTask:
    return dataset_task("class-split", transfer, pretrain, allow_resize=False, fit_samples=fit_samples,
                        test_samples=test_samples, seed=seed,
                        info={k: v for k, v in transfer.info["class_split"].items() if k != "role"})


def build_tasks(specs: str | Sequence[str] | None, data: Splits, *, fit_samples: int | None = 4000,
                test_samples: int | None = 2000, seed: int = 0, download: bool = False) -> tuple[Splits, list[TransferTask]]:
    """The (possibly class-split) pre-training data and the transfer tasks named by ``specs``.

    ``class-split`` is applied first, so the other tasks see the pre-training half's
    normalisation; transfer train/test sets are subsets of ``fit_samples``/``test_samples``
    taken as the tracker's measurement sets are (train by ``seed``, test fixed).
    """
    specs = parse_specs(specs)
    tasks: list[TransferTask] = []
    if "class-split" in specs:
        data, transfer = split_classes(data)
        tasks.append(class_split_task(transfer, data, fit_samples=fit_samples, test_samples=test_samples, seed=seed))
    for s in specs:
        kind = s.partition(":")[0]
        if kind == "colour":
            tasks.append(colour_task(data))
        elif kind == "switch":
            tasks.append(switch_task(s, data, fit_samples=fit_samples, test_samples=test_samples, seed=seed,
                                     download=download))
        elif kind == "npz":
            tasks.append(npz_task(s, data, fit_samples=fit_samples, test_samples=test_samples, seed=seed))
    order = {s: i for i, s in enumerate(specs)}
    tasks.sort(key=lambda t: order[t.name])
    return data, tasks
