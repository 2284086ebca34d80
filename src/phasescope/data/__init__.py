"""Datasets: embedded defaults, standard distribution files, text, and bring-your-own data.

``load_dataset(name, ...)`` is the single entry point; ``DATASETS`` lists the names.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from .base import DataError, Splits, make_splits
from .embedded import load_mnist_digits, load_sklearn_digits
from .files import FILE_DATASETS, STANDARD_DATASETS, default_download_dir, load_file_dataset
from .synthetic import load_synthetic
from .text import load_shakespeare, load_text_file, text_splits
from .subsets import measurement_indices, measurement_sets
from .validate import DataWarning, check_splits

# name -> loader(train_size=..., seed=..., data_dir=..., download=...) ; extended by other modules.
_LOADERS: dict[str, Callable[..., Splits]] = {
    "mnist-digits": lambda *, train_size=None, seed=0, data_dir=None, download=False: load_mnist_digits(
        train_size=train_size, seed=seed
    ),
    "digits": lambda *, train_size=None, seed=0, data_dir=None, download=False: load_sklearn_digits(
        train_size=train_size, seed=seed
    ),
}

# Datasets that read no files (data_dir is an error for them).
EMBEDDED_DATASETS = ("mnist-digits", "digits", "synthetic", "shakespeare")
# Text as windows of token ids (data.text): their loaders take the window length, ``context``.
TEXT_DATASETS = ("shakespeare", "text")


def register_dataset(name: str, loader: Callable[..., Splits]) -> None:
    _LOADERS[name] = loader  # DATASETS is derived from the loaders (see __getattr__): nothing is rebound


def __getattr__(name: str) -> Any:
    if name == "DATASETS":  # the names of the registered datasets, in registration order
        return tuple(_LOADERS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Standard distribution files (cifar10, cifar100, mnist, fashion-mnist) and bring-your-own
# data (npz, folder); these read ``data_dir`` and honour ``download``.
for _name in FILE_DATASETS:
    register_dataset(_name, partial(load_file_dataset, _name))
del _name

# The data model of the single-layer theory; its knobs are keyword arguments of the loader
# (RunConfig.extra["synthetic"]).
register_dataset("synthetic", load_synthetic)
register_dataset("shakespeare", load_shakespeare)
register_dataset("text", load_text_file)


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    train_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    num_classes: int | None = None,
    context: int | None = None,
    **params,
) -> Splits:
    """Load dataset ``name`` as normalised, validated :class:`Splits`.

    ``data_dir`` is where standard distribution files live (or an ``.npz`` file);
    ``train_size`` takes a seeded, class-balanced subset of the training split;
    ``num_classes`` fixes the number of classes (labels must lie in 0..num_classes-1; classes
    may then be absent from training); without it every class 0..K-1 must occur in training;
    ``params`` go to loaders that take knobs (``synthetic``: the data model's); ``context``: the
    window length of text datasets (tokens per sample) [64].
    Whatever the loader returns passes :func:`~phasescope.data.validate.check_splits`.
    """
    if name not in _LOADERS:
        raise DataError(f"Unknown dataset {name!r}. Choose one of: {', '.join(sorted(_LOADERS))}.")
    if params and name != "synthetic":
        raise DataError(f"Dataset {name!r} takes no parameters; got {sorted(params)}.")
    if data_dir is not None and name in EMBEDDED_DATASETS:
        raise DataError(
            f"--data-dir is only for file datasets ({', '.join(FILE_DATASETS)}); {name} is embedded and reads "
            f"no files. Drop --data-dir {data_dir}, or pick the dataset that reads it (npz for an .npz file, "
            "folder for an image-folder tree, text for a text file)."
        )
    if name in FILE_DATASETS:  # their readers check labels against num_classes as they read the files
        params["num_classes"] = num_classes
    if name in TEXT_DATASETS and context is not None:
        params["context"] = context
    splits = _LOADERS[name](train_size=train_size, seed=seed, data_dir=data_dir, download=download, **params)
    if name in TEXT_DATASETS and num_classes is None:  # a token absent from the training labels is no error
        num_classes = splits.info["vocab_size"]
    return check_splits(splits, num_classes=num_classes)


__all__ = [
    "measurement_indices",
    "measurement_sets",
    "DATASETS",
    "FILE_DATASETS",
    "STANDARD_DATASETS",
    "TEXT_DATASETS",
    "DataError",
    "DataWarning",
    "EMBEDDED_DATASETS",
    "Splits",
    "default_download_dir",
    "load_dataset",
    "check_splits",
    "make_splits",
    "register_dataset",
    "text_splits",
]
