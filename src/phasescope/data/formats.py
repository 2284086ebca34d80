"""Readers for on-disk data formats, kept free of any dataset-specific policy.

- CIFAR python pickle batches (Python 2 pickles with ``bytes`` keys), read with an
  unpickler that only admits the few numpy globals those files use;
- IDX files (MNIST, Fashion-MNIST), plain or gzipped;
- ``.npz`` archives with ``x_train, y_train, x_test, y_test`` (and optional ``classes``);
- image-folder trees (``<class>/<image>``), read with Pillow.

Every failure is a :class:`~phasescope.data.base.DataError` naming the file.
"""
from __future__ import annotations

import codecs
import gzip
import io
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError

# --------------------------------------------------------------------------- pickles

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar as _scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar as _scalar
    from numpy.core.numeric import _frombuffer


class _ForeignGlobal(pickle.UnpicklingError):
    pass


def _latin1_encode(obj: Any, encoding: str = "utf-8", *args: Any) -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (latin-1 only, no other codec)."""
    if encoding not in ("latin1", "latin-1") or args:
        raise _ForeignGlobal(f"_codecs.encode(..., {encoding!r})")
    return codecs.encode(obj, "latin-1")


# The only globals a CIFAR batch needs: numpy arrays (written by numpy 1.x or 2.x; protocol 5
# uses _frombuffer), numpy scalars, and the codec call that protocol-2 pickles written by
# Python 3 use for bytes. Everything else (os.system, builtins.open, pathlib, eval, ...) is
# refused before it can be called: every callable a pickle uses is named through find_class.
_PICKLE_GLOBALS = {
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _ForeignGlobal(f"{module}.{name}") from None


def read_pickle(data: bytes, *, source: str) -> dict:
    """Unpickle a CIFAR-style batch (a dict) from ``data``; ``source`` names it in errors."""
    try:
        obj = _DataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _ForeignGlobal as e:
        raise DataError(
            f"{source} refers to {e}, which a CIFAR pickle batch never does; refusing to unpickle it "
            "(pickles can run code). Use the files from the official archive."
        ) from None
    except Exception as e:  # unpickling corrupt bytes can raise almost anything
        raise DataError(
            f"{source} is not a readable CIFAR pickle batch ({type(e).__name__}: {e}); "
            "the file is truncated or corrupt: download it again."
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{source} holds a {type(obj).__name__}, not the dict a CIFAR pickle batch holds.")
    return obj


def pickle_get(d: dict, key: str, *, source: str) -> Any:
    """``d[b'key']`` (Python 2 pickles) or ``d['key']``; a DataError naming the keys found otherwise."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    found = ", ".join(sorted(k.decode() if isinstance(k, bytes) else str(k) for k in d))
    raise DataError(f"{source} has no {key!r} entry (found: {found}); is it the right file?")


def cifar_batch(d: dict, *, label_key: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from one unpickled batch."""
    x = np.asarray(pickle_get(d, "data", source=source))
    y = np.asarray(pickle_get(d, label_key, source=source))
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{source}: 'data' has shape {x.shape}; a CIFAR batch holds (N, 3072) pixel rows.")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() > 255)):
            raise DataError(f"{source}: 'data' is {x.dtype}; a CIFAR batch holds uint8 pixels.")
        x = x.astype(np.uint8)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: {label_key!r} should be a list of integer labels, got {y.dtype} {y.shape}.")
    if len(y) != len(x):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels; the file is corrupt: download it again.")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def decode_names(names: Any, *, source: str) -> list[str]:
    if not isinstance(names, (list, tuple, np.ndarray)):
        raise DataError(f"{source}: class names should be a list, got {type(names).__name__}.")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


# --------------------------------------------------------------------------- IDX

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# No data file phasescope reads is this large once decompressed (the largest MNIST IDX file is
# 47 MB); a gzip "bomb" that claims more is refused instead of filling the memory.
MAX_DECOMPRESSED_BYTES = 1 << 30


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it is gzip data (detected from its magic, not its name)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
                out = g.read(MAX_DECOMPRESSED_BYTES + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a corrupt or truncated gzip file ({e}): download it again.") from e
        if len(out) > MAX_DECOMPRESSED_BYTES:
            raise DataError(f"{path} decompresses to more than {MAX_DECOMPRESSED_BYTES >> 20} MiB, far more than any "
                            "dataset file it could be; refusing to read it. Download the file again.")
        return out
    return raw


def parse_idx(buf: bytes, *, source: str) -> np.ndarray:
    """An IDX file's array, after checking its magic number and that its size matches the header."""
    magic = buf[:4]
    if len(buf) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_DTYPES or magic[3] == 0:
        raise DataError(
            f"{source} is not an IDX file (magic number 0x{magic.hex() or 'empty'}; expected 0x00000801 "
            "for labels or 0x00000803 for images): the file is corrupt or of another format."
        )
    ndim = magic[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{source} is truncated inside its IDX header: download it again.")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = np.dtype(IDX_DTYPES[magic[2]])
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: a hostile header cannot overflow it
    if len(buf) != expected:
        state = "truncated" if len(buf) < expected else "longer than its header says"
        raise DataError(
            f"{source} is {state}: its header declares {' x '.join(map(str, dims))} {dtype.name} values "
            f"({expected} bytes) but it holds {len(buf)} bytes. Download it again."
        )
    return np.frombuffer(buf, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or gzipped)."""
    return parse_idx(read_bytes(path), source=str(path))


# --------------------------------------------------------------------------- npz

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """The four arrays of a bring-your-own ``.npz`` and its optional class names (checked by ``make_splits``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No such file: {path}. Pass --data-dir pointing at an .npz with {', '.join(NPZ_KEYS)}.")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable .npz file ({e}); save it with numpy.savez.") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not an .npz with keys {', '.join(NPZ_KEYS)}.")
    with z:
        missing = [k for k in NPZ_KEYS if k not in z.files]
        if missing:
            raise DataError(
                f"{path} lacks {', '.join(missing)}: it has keys {', '.join(sorted(z.files)) or '(none)'}; "
                f"expected {', '.join(NPZ_KEYS)} (and optionally classes)."
            )
        try:
            arrays = {k: z[k] for k in NPZ_KEYS}
            classes = [str(c) for c in z["classes"].reshape(-1)] if "classes" in z.files else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(
                f"{path}: cannot read its arrays ({e}). Store numbers and strings as plain numpy arrays "
                "(no Python objects), e.g. classes=np.array(names)."
            ) from e
    return arrays, classes


# --------------------------------------------------------------------------- image folders

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def read_images(paths: list[Path]) -> np.ndarray:
    """Images as ``(N, C, H, W)`` uint8: C=1 when every image is greyscale, else RGB (alpha dropped).

    All images must share one size; the error names the first file that does not.
    """
    try:
        from PIL import Image  # lazy: Pillow only for image folders
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("Reading image folders needs Pillow: pip install pillow.") from e
    arrays: list[np.ndarray] = []
    size = None
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                if size is None:
                    size = im.size
                elif im.size != size:
                    raise DataError(
                        f"{p} is {im.size[0]}x{im.size[1]} but {paths[0]} is {size[0]}x{size[1]}: "
                        "all images must share one size; resize them first."
                    )
                arrays.append(np.asarray(im.convert("L" if im.mode in _GREY_MODES else "RGB"), dtype=np.uint8))
        except DataError:
            raise
        except Exception as e:  # Pillow raises many types for unreadable files
            raise DataError(f"Cannot read image {p} ({type(e).__name__}: {e}).") from e
    if any(a.ndim == 3 for a in arrays):
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        return np.stack(arrays).transpose(0, 3, 1, 2)
    return np.stack(arrays)[:, None]
