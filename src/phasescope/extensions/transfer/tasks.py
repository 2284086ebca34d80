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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ...data import Splits, load_dataset, measurement_sets
from ...data.base import DataError, unnormalise  # noqa: F401  (unnormalise: re-exported)
from ...data.classes import split_classes
from ...data.convert import resize, to_input_space  # noqa: F401  (resize: re-exported)
from ...data.files import load_npz
from ...errors import TransferError


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
    path = spec.partition(":")[2]
    try:
        other = load_npz(path, name=Path(path).stem)
    except DataError as e:
        raise TransferError(f"Transfer task {spec!r}: {e}") from e
    return dataset_task(spec, other, data, allow_resize=False, fit_samples=fit_samples, test_samples=test_samples,
                        seed=seed, info={"path": str(path)})


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
