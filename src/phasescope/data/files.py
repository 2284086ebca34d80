"""Datasets read from their standard distribution files, and bring-your-own data.

- ``cifar10``, ``cifar100``: the python pickle batches, from the folder that holds
  ``cifar-10-batches-py/`` (``cifar-100-python/``), that folder itself, or the
  ``cifar-10-python.tar.gz`` (``cifar-100-python.tar.gz``) archive, read in memory;
- ``mnist``, ``fashion-mnist``: the four IDX files, plain or gzipped, in the folder given
  or in its ``MNIST/raw`` / ``FashionMNIST/raw`` (torchvision's layout) or ``mnist/`` /
  ``fashion-mnist/`` subfolder;
- ``npz``: an ``.npz`` with ``x_train, y_train, x_test, y_test`` (optional ``classes``).
  Any of these names also reads an ``.npz`` when ``data_dir`` ends with ``.npz``;
- ``folder``: ``data_dir/train/<class>/*`` and ``data_dir/test/<class>/*`` images, or
  ``data_dir/<class>/*`` split 80/20 (stratified, fixed seed 0 so that runs with
  different seeds share the test samples, as for the embedded datasets).

Without ``data_dir`` a dataset that a system package installs is read from where the package
puts it (:data:`SYSTEM_DATA_DIRS`): Fashion-MNIST from Debian's ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``), four gzipped IDX files in
``/usr/share/datasets/fashion-mnist``. The order is: ``data_dir`` when given, else the system
folders, else (with ``download``) the download folder.

``download=True`` fetches the four standard datasets with torchvision when it is
installed (``pip install 'phasescope[download]'``) and reads them with the readers here.
"""
from __future__ import annotations

import os
import posixpath
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from . import formats
from .base import DataError, Splits, make_splits, stratified_split

DIGIT_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

STANDARD_DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist")
FILE_DATASETS = STANDARD_DATASETS + ("npz", "folder")

# Class names used when an .npz given for a standard dataset carries none.
_DEFAULT_CLASSES = {"cifar10": CIFAR10_CLASSES, "mnist": DIGIT_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
_TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_WHERE = {
    "cifar10": "the folder holding cifar-10-batches-py (or cifar-10-python.tar.gz)",
    "cifar100": "the folder holding cifar-100-python (or cifar-100-python.tar.gz)",
    "mnist": "the folder holding the MNIST IDX files train-images-idx3-ubyte[.gz] etc. (or its parent with MNIST/raw)",
    "fashion-mnist": "the folder holding the Fashion-MNIST IDX files train-images-idx3-ubyte[.gz] etc. "
    "(or its parent with FashionMNIST/raw)",
    "npz": "an .npz file with x_train, y_train, x_test, y_test (and optionally classes)",
    "folder": "a folder with train/<class>/ and test/<class>/ image folders (or just <class>/ folders)",
}


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return self.train + self.test + (self.meta,)


_CIFAR = {
    "cifar10": _CifarLayout(
        "cifar-10-batches-py", "cifar-10-python.tar.gz", tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",), "batches.meta", "labels", "label_names", 10,
    ),
    "cifar100": _CifarLayout(
        "cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",), "meta",
        "fine_labels", "fine_label_names", 100,
    ),
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_SUBDIRS = {
    "mnist": ("MNIST/raw", "mnist", "mnist/raw", "MNIST"),
    "fashion-mnist": ("FashionMNIST/raw", "fashion-mnist", "fashion-mnist/raw", "fashion_mnist", "FashionMNIST"),
}


# Folders where a system package installs a dataset's distribution files, searched in order when
# no data_dir is given, and the package that installs them (named in the error when they are absent).
# Debian's dataset-fashion-mnist: the four original gzipped IDX files (see `dpkg -L dataset-fashion-mnist`).
SYSTEM_DATA_DIRS: dict[str, tuple[Path, ...]] = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
SYSTEM_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}


def system_data_dir(name: str) -> Path | None:
    """The first of :data:`SYSTEM_DATA_DIRS` that holds all of dataset ``name``'s files, or None."""
    for folder in SYSTEM_DATA_DIRS.get(name, ()):
        if not folder.is_dir():
            continue
        find = _find_cifar if name in _CIFAR else _find_idx
        try:
            if find(name, folder) is not None:
                return folder
        except DataError as e:  # some files only: a broken install
            package = SYSTEM_PACKAGES.get(name)
            fix = f" Reinstall it with apt-get install --reinstall {package}, or pass --data-dir." if package else ""
            raise DataError(f"{e}{fix}") from None
    return None


def _system_hint(name: str) -> str:
    """How to get ``name``'s files from a system package, for the error when none are found."""
    package = SYSTEM_PACKAGES.get(name)
    if package is None:
        return ""
    where = ", ".join(str(p) for p in SYSTEM_DATA_DIRS[name])
    return f"install them with apt-get install {package} (Debian/Ubuntu; read from {where}), "


def default_download_dir() -> Path:
    """Where ``download=True`` puts files when no ``data_dir`` is given: ``~/.cache/phasescope/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "phasescope" / "data"


def load_file_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    train_size: int | None = None,
    seed: int = 0,
    download: bool = False,
    num_classes: int | None = None,
) -> Splits:
    """Load one of :data:`FILE_DATASETS` from ``data_dir`` (see the module docstring)."""
    if name not in FILE_DATASETS:
        raise DataError(f"{name!r} is not a file dataset; choose one of: {', '.join(FILE_DATASETS)}.")
    is_npz = data_dir is not None and str(data_dir).lower().endswith(".npz")
    if name in ("npz", "folder") or is_npz:
        if data_dir is None:
            raise DataError(f"Dataset {name!r} needs --data-dir pointing at {_WHERE[name]}.")
        if download:
            raise DataError(
                f"--download fetches only {', '.join(STANDARD_DATASETS)} into a folder; "
                f"drop it to read {data_dir}."
            )
        if name == "folder" and not is_npz:
            return load_image_folder(data_dir, train_size=train_size, seed=seed, num_classes=num_classes)
        return load_npz(data_dir, name=name, classes=_DEFAULT_CLASSES.get(name), train_size=train_size, seed=seed,
                        num_classes=num_classes)

    if data_dir is None:
        data_dir = system_data_dir(name)
    if data_dir is None:
        if not download:
            raise DataError(
                f"Dataset {name!r} reads its distribution files: {_system_hint(name)}pass --data-dir pointing at "
                f"{_WHERE[name]}, or --download."
            )
        data_dir = default_download_dir()
    root = Path(data_dir).expanduser()
    find = _find_cifar if name in _CIFAR else _find_idx
    found = find(name, root)
    if found is None:
        if not download:
            state = "does not exist" if not root.exists() else "holds none of its files"
            raise DataError(
                f"{root} {state} for dataset {name!r} (expected {', '.join(_expected(name))}). "
                f"Pass --data-dir pointing at {_WHERE[name]}, or --download."
            )
        fetch(name, root)
        found = find(name, root)
        if found is None:
            raise DataError(
                f"Downloaded {name!r} into {root} but cannot find its files there ({', '.join(_expected(name))})."
            )
    read = _read_cifar if name in _CIFAR else _read_idx
    return read(name, found, train_size=train_size, seed=seed, num_classes=num_classes)


def fetch(name: str, root: str | Path) -> None:
    """Download dataset ``name`` into ``root`` with torchvision (which must be installed)."""
    root = Path(root)
    try:
        import torchvision.datasets as tvd  # lazy: optional dependency (torchvision): downloads only
    except Exception as e:  # ImportError, or a torchvision built for another torch
        raise DataError(
            f"--download needs torchvision ({type(e).__name__}: {e}). Install it with "
            f"pip install 'phasescope[download]', or place the {name} files in {root} yourself "
            f"and pass --data-dir pointing at {_WHERE[name]}."
        ) from e
    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(tvd, _TORCHVISION[name])(root=str(root), train=True, download=True)
    except Exception as e:  # network, disk, checksum errors
        raise DataError(
            f"Downloading {name!r} into {root} failed ({type(e).__name__}: {e}). "
            f"Place the files there yourself: --data-dir should point at {_WHERE[name]}."
        ) from e


def _expected(name: str) -> list[str]:
    if name in _CIFAR:
        lay = _CIFAR[name]
        return [f"{lay.folder}/{f}" for f in lay.files] + [f"or {lay.archive}"]
    return [f"{f}[.gz]" for f in IDX_FILES.values()]


# --------------------------------------------------------------------------- CIFAR


def _find_cifar(name: str, root: Path) -> tuple[str, Path] | None:
    """``('dir', folder)`` or ``('tar', archive)`` holding the batches; None when nothing is there."""
    lay = _CIFAR[name]
    if root.name.endswith((".tar.gz", ".tgz", ".tar")) and not root.exists():
        raise DataError(f"No such archive: {root}. Pass --data-dir pointing at {_WHERE[name]}.")
    if root.is_file():
        if root.name.endswith((".tar.gz", ".tgz", ".tar")):
            return "tar", root
        raise DataError(f"{root} is a file; for {name!r} pass {_WHERE[name]}, or the {lay.archive} archive.")
    partial = None
    for folder in (root, root / lay.folder):
        if folder.is_dir():
            present = [f for f in lay.files if (folder / f).is_file()]
            if len(present) == len(lay.files):
                return "dir", folder
            if present and partial is None:
                partial = (folder, [f for f in lay.files if f not in present])
    if (root / lay.archive).is_file():
        return "tar", root / lay.archive
    if partial:
        raise DataError(
            f"{partial[0]} lacks {', '.join(partial[1])} of the {name!r} files "
            f"(expected {', '.join(lay.files)}). Download the dataset again or pass --download."
        )
    return None


def _cifar_members(name: str, kind: str, where: Path) -> Iterator[tuple[str, str, bytes]]:
    """``(file name, source for messages, bytes)`` for every batch file, from a folder or an archive."""
    lay = _CIFAR[name]
    if kind == "dir":
        for f in lay.files:
            try:
                data = (where / f).read_bytes()
            except OSError as e:
                raise DataError(f"Cannot read {where / f}: {e}.") from e
            yield f, str(where / f), data
        return
    seen: set[str] = set()
    try:
        with tarfile.open(where, "r:*") as tf:
            for m in tf:
                _vet_member(m, where, name)
                base = PurePosixPath(m.name).name
                if m.isfile() and base in lay.files and base not in seen:
                    seen.add(base)
                    fh = tf.extractfile(m)
                    yield base, f"{where}:{m.name}", fh.read() if fh else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{where} is a corrupt or truncated archive ({e}): download it again.") from e
    missing = [f for f in lay.files if f not in seen]
    if missing:
        raise DataError(
            f"{where} lacks {', '.join(missing)}; a {name!r} archive holds "
            f"{', '.join(f'{lay.folder}/{f}' for f in lay.files)}."
        )


# The largest member of a CIFAR archive (cifar-100-python/train) holds 155 MB.
MAX_MEMBER_BYTES = 1 << 30
# Where members are checked to land, as if the archive were extracted into an empty folder.
# A path that does not exist, so that the check never depends on what is on this disk.
_NOTIONAL_ROOT = os.path.join(os.path.abspath(os.sep), "phasescope-archive-root-that-does-not-exist")


def _member_problem(m: tarfile.TarInfo) -> str | None:
    """Why extracting member ``m`` could write outside its folder, or None when it could not.

    tarfile's ``data`` filter decides where Python has it (3.11.4+, 3.12); older Pythons get the
    same checks by hand. Absolute names are refused too (the filter would only strip the '/').
    """
    path = PurePosixPath(m.name)
    if m.name.startswith(("/", "\\")) or path.is_absolute() or (len(m.name) > 1 and m.name[1] == ":"):
        return "an absolute path"
    if ".." in path.parts:
        return "a path that climbs out of its folder ('..')"
    if hasattr(tarfile, "data_filter"):
        try:
            tarfile.data_filter(m, _NOTIONAL_ROOT)
        except tarfile.FilterError as e:
            return f"which tarfile's data filter refuses ({type(e).__name__}: {e})"
        return None
    if m.issym() or m.islnk():
        if m.linkname.startswith("/") or PurePosixPath(m.linkname).is_absolute():
            return f"a link to the absolute path {m.linkname!r}"
        base = path.parent if m.issym() else PurePosixPath()  # hard links are relative to the archive's root
        if posixpath.normpath(posixpath.join(str(base), m.linkname)).split("/")[0] == "..":
            return f"a link to {m.linkname!r}, outside its folder"
    elif not (m.isfile() or m.isdir()):
        return "a device or other special file"
    return None


def _vet_member(m: tarfile.TarInfo, archive: Path, name: str) -> None:
    """Refuse an archive holding a member that could escape its folder, or an oversized one.

    phasescope reads archives in memory and never extracts them, so nothing is written in any
    case; such members only appear in archives built to attack, never in an original.
    """
    problem = _member_problem(m)
    if problem:
        raise DataError(f"{archive} holds the member {m.name!r}, {problem}; an original {name!r} archive never "
                        "does, so phasescope refuses to read it. Download the archive again from the official site.")
    if m.size > MAX_MEMBER_BYTES:
        raise DataError(f"{archive}: member {m.name!r} claims {m.size} bytes, more than any {name!r} file; "
                        "refusing to read it. Download the archive again.")


def _read_cifar(name: str, found: tuple[str, Path], *, train_size: int | None, seed: int,
                num_classes: int | None = None) -> Splits:
    lay = _CIFAR[name]
    kind, where = found
    batches: dict[str, tuple[str, dict]] = {}
    for fname, source, data in _cifar_members(name, kind, where):
        batches[fname] = (source, formats.read_pickle(data, source=source))

    def stack(files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        parts = [formats.cifar_batch(batches[f][1], label_key=lay.label_key, source=batches[f][0]) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    x_train, y_train = stack(lay.train)
    x_test, y_test = stack(lay.test)
    meta_source, meta = batches[lay.meta]
    classes = formats.decode_names(formats.pickle_get(meta, lay.names_key, source=meta_source), source=meta_source)
    if len(classes) != lay.num_classes:
        raise DataError(f"{meta_source} names {len(classes)} classes; {name!r} has {lay.num_classes}.")
    for src, y in ((lay.train, y_train), (lay.test, y_test)):
        if len(y) and (y.min() < 0 or y.max() >= lay.num_classes):
            raise DataError(
                f"{name!r} {', '.join(src)}: labels outside 0..{lay.num_classes - 1}; the files are corrupt."
            )
    info = {"source": str(where), "format": "CIFAR python pickle batches" + (" (tar archive)" if kind == "tar" else ""),
            "files": list(lay.files)}
    return make_splits(name, x_train, y_train, x_test, y_test, classes, train_size=train_size, seed=seed, info=info,
                       num_classes=num_classes)


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


def _idx_candidates(stem: str) -> list[str]:
    alt = stem.replace("-idx", ".idx")  # some copies name them t10k-images.idx3-ubyte
    return [stem, f"{stem}.gz", alt, f"{alt}.gz"]


def _find_idx(name: str, root: Path) -> dict[str, Path] | None:
    """The four IDX files by role; None when no folder searched holds any of them."""
    if root.is_file():
        raise DataError(f"{root} is a file; for {name!r} pass {_WHERE[name]}.")
    partial = None
    for folder in [root] + [root / s for s in _IDX_SUBDIRS[name]]:
        if not folder.is_dir():
            continue
        found = {}
        for role, stem in IDX_FILES.items():
            hit = next((folder / c for c in _idx_candidates(stem) if (folder / c).is_file()), None)
            if hit is not None:
                found[role] = hit
        if len(found) == len(IDX_FILES):
            return found
        if found and partial is None:
            partial = (folder, [f"{IDX_FILES[r]}[.gz]" for r in IDX_FILES if r not in found])
    if partial:
        raise DataError(
            f"{partial[0]} lacks {', '.join(partial[1])} of the {name!r} IDX files "
            f"(expected {', '.join(IDX_FILES.values())}, each optionally .gz). Download them again or pass --download."
        )
    return None


def _read_idx(name: str, files: dict[str, Path], *, train_size: int | None, seed: int,
              num_classes: int | None = None) -> Splits:
    arrays = {role: formats.read_idx(path) for role, path in files.items()}
    classes = _DEFAULT_CLASSES[name]
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        xf, yf = files[f"x_{split}"], files[f"y_{split}"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(
                f"{xf} holds {x.dtype} of shape {x.shape}; expected uint8 images (N, H, W). Is it the images file?"
            )
        if y.ndim != 1:
            raise DataError(f"{yf} holds shape {y.shape}; expected labels (N,). Is it the labels file?")
        if len(x) != len(y):
            raise DataError(
                f"{xf} holds {len(x)} images but {yf} holds {len(y)} labels; the files do not belong together."
            )
        if len(y) and int(y.max()) >= len(classes):
            raise DataError(f"{yf} has label {int(y.max())}; {name!r} has {len(classes)} classes "
                            f"(0..{len(classes) - 1}). The file is corrupt or not a labels file: download it again.")
    info = {"source": str(files["x_train"].parent), "format": "IDX", "files": [p.name for p in files.values()]}
    return make_splits(
        name, arrays["x_train"][:, None], arrays["y_train"], arrays["x_test"][:, None], arrays["y_test"],
        classes, train_size=train_size, seed=seed, info=info, num_classes=num_classes,
    )


# --------------------------------------------------------------------------- bring your own


def load_npz(
    path: str | Path,
    *,
    name: str = "npz",
    classes: list[str] | None = None,
    train_size: int | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> Splits:
    """Splits from an ``.npz`` (images HWC or CHW, uint8 or float); its ``classes`` win over ``classes``."""
    path = Path(path).expanduser()
    arrays, file_classes = formats.read_npz(path)
    return make_splits(
        name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        file_classes if file_classes is not None else classes,
        train_size=train_size, seed=seed, info={"source": str(path), "format": "npz"}, num_classes=num_classes,
    )


_TEST_DIRS = ("test", "val", "valid", "validation")


def load_image_folder(
    data_dir: str | Path,
    *,
    name: str = "folder",
    train_size: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    num_classes: int | None = None,
) -> Splits:
    """Splits from an image-folder tree (class = sub-folder name, classes sorted by name)."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; dataset {name!r} needs --data-dir pointing at {_WHERE['folder']}.")
    train_dir = root / "train"
    test_dir = next((root / d for d in _TEST_DIRS if (root / d).is_dir()), None)
    if train_dir.is_dir() or test_dir is not None:
        if not train_dir.is_dir() or test_dir is None:
            have, lack = ("train", "test (or val)") if train_dir.is_dir() else (test_dir.name, "train")
            raise DataError(f"{root} has {have}/ but no {lack}/ folder; give both, or only <class>/ folders.")
        classes = [d.name for d in formats.class_dirs(train_dir)]
        extra = sorted({d.name for d in formats.class_dirs(test_dir)} - set(classes))
        if extra:
            raise DataError(f"{test_dir} has class folders {', '.join(extra)} that {train_dir} lacks.")
        tr_paths, y_tr = _class_images(train_dir, classes)
        te_paths, y_te = _class_images(test_dir, classes, allow_empty=True)
        x = formats.read_images(tr_paths + te_paths)
        x_tr, x_te = x[: len(tr_paths)], x[len(tr_paths):]
        split = f"{train_dir.name}/ and {test_dir.name}/ folders"
    else:
        classes = [d.name for d in formats.class_dirs(root)]
        paths, y = _class_images(root, classes)
        x = formats.read_images(paths)
        try:
            tr, te = stratified_split(y, test_fraction, seed=0)
        except ValueError as e:
            raise DataError(
                f"{root}: cannot split {len(y)} images {1 - test_fraction:.0%}/{test_fraction:.0%} by class ({e})."
            ) from e
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        split = f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%}, seed 0"
    info = {"source": str(root), "format": "image folder", "split": split}
    return make_splits(name, x_tr, y_tr, x_te, y_te, classes, train_size=train_size, seed=seed, info=info,
                       num_classes=num_classes)


def _class_images(folder: Path, classes: list[str], *, allow_empty: bool = False) -> tuple[list[Path], np.ndarray]:
    if not classes:
        raise DataError(f"{folder} has no class folders; expected {folder}/<class>/<image>.png.")
    paths: list[Path] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        sub = folder / c
        files = formats.image_files(sub) if sub.is_dir() else []
        if not files and not allow_empty:
            exts = ", ".join(sorted(formats.IMAGE_EXTENSIONS))
            raise DataError(f"{sub} holds no images ({exts}); remove the folder or add images.")
        paths += files
        labels += [k] * len(files)
    if not paths:
        raise DataError(f"{folder} holds no images in its class folders.")
    return paths, np.asarray(labels, dtype=np.int64)
