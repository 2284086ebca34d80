"""Datasets: embedded defaults, standard distribution files, and bring-your-own data.

``load_dataset(name, ...)`` is the single entry point; ``DATASETS`` lists the names.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from .base import DataError, Splits, check_labels, make_splits
from .embedded import load_mnist_digits, load_sklearn_digits
from .files import FILE_DATASETS, STANDARD_DATASETS, default_download_dir, load_file_dataset
from .subsets import measurement_indices, measurement_sets
from .synthetic import load_synthetic

# name -> loader(train_size=..., seed=..., data_dir=..., download=...) ; extended by other modules.
_LOADERS: dict[str, Callable[..., Splits]] = {
    "mnist-digits": lambda *, train_size=None, seed=0, data_dir=None, download=False: load_mnist_digits(
        train_size=train_size, seed=seed
    ),
    "digits": lambda *, train_size=None, seed=0, data_dir=None, download=False: load_sklearn_digits(
        train_size=train_size, seed=seed
    ),
}

DATASETS: tuple[str, ...] = tuple(_LOADERS)
EMBEDDED = ("mnist-digits", "digits", "synthetic")  # no files: --data-dir makes no sense for them


def register_dataset(name: str, loader: Callable[..., Splits]) -> None:
    global DATASETS
    _LOADERS[name] = loader
    DATASETS = tuple(_LOADERS)


# Standard distribution files (cifar10, cifar100, mnist, fashion-mnist) and bring-your-own
# data (npz, folder); these read ``data_dir`` and honour ``download``.
for _name in FILE_DATASETS:
    register_dataset(_name, partial(load_file_dataset, _name))
del _name

# The data model of the single-layer theory; its knobs are keyword arguments of the loader
# (the RunConfig.synthetic section).
register_dataset("synthetic", load_synthetic)


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    train_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    num_classes: int | None = None,
    **params,
) -> Splits:
    """Load dataset ``name`` as normalised :class:`Splits`.

    ``data_dir`` is where standard distribution files live (or an ``.npz`` file);
    ``train_size`` takes a seeded, class-balanced subset of the training split;
    ``num_classes``: the class count when some classes are absent from training (labels must
    then lie in 0..num_classes-1; otherwise every class 0..max label must be in training);
    ``params`` go to loaders that take knobs (``synthetic``: the data model's).
    """
    if name not in _LOADERS:
        raise DataError(f"Unknown dataset {name!r}. Choose one of: {', '.join(sorted(_LOADERS))}.")
    if params and name != "synthetic":
        raise DataError(f"Dataset {name!r} takes no parameters; got {sorted(params)}.")
    if data_dir is not None and name in EMBEDDED:
        raise DataError(f"--data-dir is only for file datasets; {name!r} is generated or ships with phasescope. "
                        f"Drop --data-dir, or choose a file dataset ({', '.join(FILE_DATASETS)}).")
    splits = _LOADERS[name](train_size=train_size, seed=seed, data_dir=data_dir, download=download, **params)
    if num_classes is None and splits.classes != [str(i) for i in range(len(splits.classes))]:
        num_classes = len(splits.classes)  # the files name their classes: some may be absent from a subset
    k = check_labels(name, splits.y_train.numpy(), splits.y_test.numpy(), num_classes)  # every loader, one rule
    if k > len(splits.classes):
        splits.classes = [*splits.classes, *(str(i) for i in range(len(splits.classes), k))]
    return splits


__all__ = [
    "DATASETS",
    "FILE_DATASETS",
    "STANDARD_DATASETS",
    "DataError",
    "Splits",
    "default_download_dir",
    "load_dataset",
    "make_splits",
    "measurement_indices",
    "measurement_sets",
    "register_dataset",
]
