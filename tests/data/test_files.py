"""Loaders for the standard distribution files and bring-your-own data.

Every test writes small files in the exact on-disk formats into tmp_path and reads
them back through ``load_dataset``.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from phasescope.data import DATASETS, DataError, load_dataset

SHARED_SUBSET = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10_subset.npz"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- writers


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did for the CIFAR files: protocol 2, every str a byte string."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the real files) lives at numpy.core, numpy 2 at numpy._core.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_images(n: int, rng) -> np.ndarray:
    return rng.randint(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)


def write_cifar10(root: Path, n: int = 20, seed: int = 0) -> dict:
    """cifar-10-batches-py/ under root with 5 training batches and a test batch of n images each."""
    rng = np.random.RandomState(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    raw = {"x_train": [], "y_train": []}
    for i in range(1, 7):
        x = cifar_images(n, rng)
        y = [int(v) for v in np.arange(n) % 10]
        rng.shuffle(y)
        batch = {"batch_label": f"batch {i}", "labels": y, "data": x.reshape(n, -1), "filenames": [f"{k}.png" for k in range(n)]}
        fname = f"data_batch_{i}" if i <= 5 else "test_batch"
        (folder / fname).write_bytes(py2_pickle(batch))
        if i <= 5:
            raw["x_train"].append(x)
            raw["y_train"] += y
        else:
            raw["x_test"], raw["y_test"] = x, np.array(y)
    (folder / "batches.meta").write_bytes(
        py2_pickle({"label_names": CIFAR10_NAMES, "num_cases_per_batch": n, "num_vis": 3072})
    )
    raw["x_train"] = np.concatenate(raw["x_train"])
    raw["y_train"] = np.array(raw["y_train"])
    return raw


def make_tar_gz(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_set(folder: Path, *, gz: bool, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    raw = {
        "x_train": rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    for key, fname in names.items():
        data = idx_bytes(raw[key])
        if gz:
            (folder / f"{fname}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / fname).write_bytes(data)
    return raw


def unnormalise(s, x: torch.Tensor) -> np.ndarray:
    """Raw 0..255 pixels back from normalised inputs, using the recorded mean/std."""
    mean = torch.tensor(s.mean).view(1, -1, 1, 1)
    std = torch.tensor(s.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).numpy()


def assert_pixels_round_trip(s, x_train_raw: np.ndarray, x_test_raw: np.ndarray) -> None:
    for x, raw in ((s.x_train, x_train_raw), (s.x_test, x_test_raw)):
        back = unnormalise(s, x)
        assert np.abs(back - raw).max() < 1e-2
        np.testing.assert_array_equal(np.rint(back).astype(np.uint8), raw)
    # The recorded mean is the raw training split's per-channel mean in [0, 1] units.
    np.testing.assert_allclose(s.mean, (x_train_raw / 255.0).mean(axis=(0, 2, 3)), atol=1e-6)


# --------------------------------------------------------------------------- registry


def test_file_datasets_are_registered():
    for name in ("cifar10", "cifar100", "mnist", "fashion-mnist", "npz", "folder"):
        assert name in DATASETS


# --------------------------------------------------------------------------- CIFAR


@pytest.fixture
def cifar10_dir(tmp_path):
    raw = write_cifar10(tmp_path)
    return tmp_path, raw


def check_cifar10(s, raw):
    assert s.name == "cifar10"
    assert tuple(s.x_train.shape) == (100, 3, 32, 32) and tuple(s.x_test.shape) == (20, 3, 32, 32)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    assert s.classes == CIFAR10_NAMES
    np.testing.assert_array_equal(s.y_train.numpy(), raw["y_train"])
    np.testing.assert_array_equal(s.y_test.numpy(), raw["y_test"])
    assert_pixels_round_trip(s, raw["x_train"], raw["x_test"])


def test_cifar10_from_parent_folder(cifar10_dir):
    root, raw = cifar10_dir
    s = load_dataset("cifar10", data_dir=root)
    check_cifar10(s, raw)
    assert s.info["source"] == str(root / "cifar-10-batches-py")
    assert "test_batch" in s.info["files"]


def test_cifar10_from_batches_folder_itself(cifar10_dir):
    root, raw = cifar10_dir
    check_cifar10(load_dataset("cifar10", data_dir=str(root / "cifar-10-batches-py")), raw)


def test_cifar10_from_tar_gz(tmp_path):
    raw = write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_tar_gz(tmp_path / "src" / "cifar-10-batches-py", archive)
    s = load_dataset("cifar10", data_dir=archive)
    check_cifar10(s, raw)
    assert s.info["source"] == str(archive) and "tar" in s.info["format"]
    # A folder holding only the archive is read the same way, without extracting it.
    only = tmp_path / "only"
    only.mkdir()
    archive.rename(only / archive.name)
    check_cifar10(load_dataset("cifar10", data_dir=only), raw)
    assert sorted(p.name for p in only.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar10_train_size_and_seed_pass_through(cifar10_dir):
    root, raw = cifar10_dir
    a = load_dataset("cifar10", data_dir=root, train_size=50, seed=1)
    b = load_dataset("cifar10", data_dir=root, train_size=50, seed=2)
    assert len(a.y_train) == 50 and a.info["train_size"] == 50
    assert np.bincount(a.y_train.numpy(), minlength=10).tolist() == [5] * 10
    assert not torch.equal(a.x_train, b.x_train)
    assert torch.equal(a.y_test, b.y_test)


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.RandomState(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i:02d}" for i in range(100)]
    raw = {}
    for split, n in (("train", 100), ("test", 10)):
        x = cifar_images(n, rng)
        # Every class must occur in the training split: one sample each, in a random order.
        fine = (rng.permutation(100) if split == "train" else rng.randint(0, 100, n)).tolist()
        coarse = rng.randint(0, 20, n).tolist()
        d = {"filenames": ["f"] * n, "batch_label": split, "fine_labels": fine, "coarse_labels": coarse, "data": x.reshape(n, -1)}
        (folder / split).write_bytes(py2_pickle(d))
        raw[split] = (x, np.array(fine))
    (folder / "meta").write_bytes(py2_pickle({"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]}))
    s = load_dataset("cifar100", data_dir=tmp_path)
    assert s.classes == names and s.num_classes == 100
    assert tuple(s.x_train.shape) == (100, 3, 32, 32)
    np.testing.assert_array_equal(s.y_train.numpy(), raw["train"][1])
    np.testing.assert_array_equal(s.y_test.numpy(), raw["test"][1])
    assert_pixels_round_trip(s, raw["train"][0], raw["test"][0])
    # and from the archive
    make_tar_gz(folder, tmp_path / "cifar-100-python.tar.gz")
    t = load_dataset("cifar100", data_dir=tmp_path / "cifar-100-python.tar.gz")
    assert torch.equal(t.x_train, s.x_train) and torch.equal(t.y_test, s.y_test)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_batches_pickled_by_python3(cifar10_dir, protocol):
    root, raw = cifar10_dir
    folder = root / "cifar-10-batches-py"
    for i, key in ((1, b"labels"), (2, "labels")):  # bytes keys as in the originals, or str keys
        d = pickle.loads((folder / f"data_batch_{i}").read_bytes(), encoding="bytes")
        d = {(k if isinstance(key, bytes) else k.decode()): v for k, v in d.items()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(d, protocol=protocol))
    check_cifar10(load_dataset("cifar10", data_dir=root), raw)


def test_cifar_needs_data_dir():
    with pytest.raises(DataError, match="--data-dir pointing at the folder holding cifar-10-batches-py") as e:
        load_dataset("cifar10")
    assert "--download" in str(e.value)


def test_cifar_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")
    assert "cifar-10-batches-py/data_batch_1" in str(e.value) and "--download" in str(e.value)
    with pytest.raises(DataError, match="holds none of its files"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_missing_file_lists_expected(cifar10_dir):
    root, _ = cifar10_dir
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3") as e:
        load_dataset("cifar10", data_dir=root)
    assert "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch, batches.meta" in str(e.value)


def test_cifar_tar_missing_member(tmp_path):
    write_cifar10(tmp_path / "src")
    (tmp_path / "src" / "cifar-10-batches-py" / "test_batch").unlink()
    make_tar_gz(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz lacks test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "cifar-10-python.tar.gz")


def test_cifar_truncated_archive(tmp_path):
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_tar_gz(tmp_path / "src" / "cifar-10-batches-py", archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        load_dataset("cifar10", data_dir=archive)


def test_cifar_truncated_pickle(cifar10_dir):
    root, _ = cifar10_dir
    f = root / "cifar-10-batches-py" / "data_batch_2"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DataError, match="data_batch_2 is not a readable CIFAR pickle batch") as e:
        load_dataset("cifar10", data_dir=root)
    assert "download it again" in str(e.value)


def test_cifar_pickle_with_foreign_global_is_refused(cifar10_dir):
    root, _ = cifar10_dir

    class Evil:
        def __reduce__(self):
            return (eval, ("0",))  # not print: importing ray (analyze tests) replaces builtins.print

    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1 refers to __builtin__\.eval, .* refusing to unpickle it"):
        load_dataset("cifar10", data_dir=root)


def test_cifar_label_count_mismatch(cifar10_dir):
    root, _ = cifar10_dir
    x = np.zeros((20, 3072), np.uint8)
    batch = {"labels": list(range(10)) * 2 + [0], "data": x}
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle(batch))
    with pytest.raises(DataError, match="test_batch: 20 images but 21 labels"):
        load_dataset("cifar10", data_dir=root)


def test_cifar_batch_missing_key(cifar10_dir):
    root, _ = cifar10_dir
    (root / "cifar-10-batches-py" / "data_batch_4").write_bytes(py2_pickle({"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match="data_batch_4 has no 'labels' entry"):
        load_dataset("cifar10", data_dir=root)


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gz(tmp_path, gz):
    raw = write_idx_set(tmp_path, gz=gz)
    s = load_dataset("mnist", data_dir=tmp_path)
    assert s.name == "mnist" and s.classes == [str(i) for i in range(10)]
    assert tuple(s.x_train.shape) == (30, 1, 28, 28) and tuple(s.x_test.shape) == (10, 1, 28, 28)
    assert s.x_train.dtype == torch.float32 and s.y_train.dtype == torch.int64
    np.testing.assert_array_equal(s.y_train.numpy(), raw["y_train"])
    np.testing.assert_array_equal(s.y_test.numpy(), raw["y_test"])
    assert_pixels_round_trip(s, raw["x_train"][:, None], raw["x_test"][:, None])
    assert s.info["source"] == str(tmp_path)
    assert s.info["files"][0] == "train-images-idx3-ubyte" + (".gz" if gz else "")


def test_torchvision_layout_discovery(tmp_path):
    m = write_idx_set(tmp_path / "MNIST" / "raw", gz=False, seed=1)
    f = write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=True, seed=2)
    sm = load_dataset("mnist", data_dir=tmp_path)
    sf = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert sm.info["source"] == str(tmp_path / "MNIST" / "raw")
    assert sf.info["source"] == str(tmp_path / "FashionMNIST" / "raw")
    assert_pixels_round_trip(sm, m["x_train"][:, None], m["x_test"][:, None])
    assert_pixels_round_trip(sf, f["x_train"][:, None], f["x_test"][:, None])
    assert sf.classes == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_lowercase_subfolders(tmp_path):
    write_idx_set(tmp_path / "mnist", gz=True)
    write_idx_set(tmp_path / "fashion-mnist", gz=False)
    assert load_dataset("mnist", data_dir=tmp_path).info["source"] == str(tmp_path / "mnist")
    assert load_dataset("fashion-mnist", data_dir=tmp_path).info["source"] == str(tmp_path / "fashion-mnist")


def test_idx_wrong_magic(tmp_path):
    write_idx_set(tmp_path, gz=False)
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(b"\x12\x34\x56\x78" + f.read_bytes()[4:])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is not an IDX file \(magic number 0x12345678"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_truncated(tmp_path):
    write_idx_set(tmp_path, gz=False)
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated: its header declares 10 x 28 x 28 uint8"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_corrupt_gzip(tmp_path):
    write_idx_set(tmp_path, gz=True)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is a corrupt or truncated gzip file"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_count_mismatch(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(DataError, match="holds 30 images but .*train-labels-idx1-ubyte holds 29 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_missing_file_lists_expected(tmp_path):
    write_idx_set(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]") as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" in str(e.value)


def test_idx_nothing_found(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", gz=False)
    with pytest.raises(DataError, match="holds none of its files") as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "FashionMNIST/raw" in str(e.value)


# --------------------------------------------------------------------------- npz


def test_npz_hwc_uint8(tmp_path):
    rng = np.random.RandomState(0)
    xtr = rng.randint(0, 256, (24, 8, 8, 3)).astype(np.uint8)
    xte = rng.randint(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    ytr, yte = np.arange(24) % 3, np.arange(6) % 3
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=np.array(["a", "b", "c"]))
    s = load_dataset("npz", data_dir=path)
    assert s.name == "npz" and s.classes == ["a", "b", "c"]
    assert tuple(s.x_train.shape) == (24, 3, 8, 8) and s.x_train.dtype == torch.float32
    np.testing.assert_array_equal(s.y_train.numpy(), ytr)
    assert_pixels_round_trip(s, xtr.transpose(0, 3, 1, 2), xte.transpose(0, 3, 1, 2))
    assert s.info == {"source": str(path), "format": "npz"}


def test_npz_chw_float(tmp_path):
    rng = np.random.RandomState(1)
    xtr = rng.randint(0, 256, (20, 1, 6, 6)).astype(np.float32) / 255
    xte = rng.randint(0, 256, (5, 1, 6, 6)).astype(np.float32) / 255
    path = tmp_path / "grey.npz"
    np.savez(path, x_train=xtr, y_train=(np.arange(20) % 2).astype(np.float64), x_test=xte, y_test=np.arange(5) % 2)
    s = load_dataset("npz", data_dir=path, train_size=10, seed=3)
    assert tuple(s.x_train.shape) == (10, 1, 6, 6) and s.classes == ["0", "1"]
    assert s.y_train.dtype == torch.int64 and np.bincount(s.y_train.numpy()).tolist() == [5, 5]
    full = load_dataset("npz", data_dir=path)
    assert_pixels_round_trip(full, np.rint(xtr * 255).astype(np.uint8), np.rint(xte * 255).astype(np.uint8))


def test_any_file_dataset_reads_npz(tmp_path):
    rng = np.random.RandomState(2)
    path = tmp_path / "subset.npz"
    np.savez(path, x_train=rng.randint(0, 256, (20, 32, 32, 3)).astype(np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.randint(0, 256, (10, 32, 32, 3)).astype(np.uint8), y_test=np.arange(10))
    s = load_dataset("cifar10", data_dir=path)
    assert s.name == "cifar10" and s.classes == CIFAR10_NAMES  # no classes in the file: the dataset's own
    t = load_dataset("mnist", data_dir=str(path))
    assert t.name == "mnist" and t.classes == [str(i) for i in range(10)]
    with pytest.raises(DataError, match="--download fetches only"):
        load_dataset("cifar10", data_dir=path, download=True)


def test_npz_missing_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4)), y_train=np.zeros(2), images=np.zeros(3))
    with pytest.raises(DataError, match="lacks x_test, y_test: it has keys images, x_train, y_train") as e:
        load_dataset("npz", data_dir=path)
    assert "expected x_train, y_train, x_test, y_test" in str(e.value)


def test_npz_errors(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir pointing at an .npz"):
        load_dataset("npz")
    with pytest.raises(DataError, match="No such file"):
        load_dataset("npz", data_dir=tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="junk.npz is not a readable .npz"):
        load_dataset("npz", data_dir=tmp_path / "junk.npz")
    path = tmp_path / "mismatch.npz"
    np.savez(path, x_train=np.zeros((5, 4, 4)), y_train=np.zeros(4, int), x_test=np.zeros((2, 4, 4)), y_test=np.zeros(2, int))
    with pytest.raises(DataError, match=r"mismatch\.npz: x_train has 5 samples but y_train has 4 labels"):
        load_dataset("npz", data_dir=path)
    path = tmp_path / "onehot.npz"
    np.savez(path, x_train=np.zeros((4, 4, 4)), y_train=np.eye(4), x_test=np.zeros((2, 4, 4)), y_test=np.zeros(2, int))
    with pytest.raises(DataError, match="one-hot"):
        load_dataset("npz", data_dir=path)


# --------------------------------------------------------------------------- image folders


def write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_with_train_test(tmp_path):
    rng = np.random.RandomState(0)
    raw = {"train": [], "test": []}
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cat", "dog", "emu"):
            for i in range(n):
                a = rng.randint(0, 256, (6, 5, 3)).astype(np.uint8)
                write_png(tmp_path / split / c / f"{i}.png", a)
                raw[split].append(a.transpose(2, 0, 1))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    s = load_dataset("folder", data_dir=tmp_path)
    assert s.classes == ["cat", "dog", "emu"]
    assert tuple(s.x_train.shape) == (12, 3, 6, 5) and tuple(s.x_test.shape) == (6, 3, 6, 5)
    assert s.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and s.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    assert_pixels_round_trip(s, np.stack(raw["train"]), np.stack(raw["test"]))
    assert s.info["source"] == str(tmp_path)


def test_folder_without_split_is_stratified_80_20(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            write_png(tmp_path / c / f"{i}.png", np.full((4, 4), 10 * i + (c == "b"), np.uint8))
    s = load_dataset("folder", data_dir=tmp_path, seed=5)
    assert tuple(s.x_train.shape) == (16, 1, 4, 4) and tuple(s.x_test.shape) == (4, 1, 4, 4)
    assert np.bincount(s.y_test.numpy()).tolist() == [2, 2]
    # The split does not depend on the run's seed.
    t = load_dataset("folder", data_dir=tmp_path, seed=6)
    assert torch.equal(s.x_test, t.x_test)
    assert "80%/20%" in s.info["split"]


def test_folder_size_mismatch_names_file(tmp_path):
    write_png(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "train" / "b" / "1.png", np.zeros((5, 4), np.uint8))
    write_png(tmp_path / "test" / "a" / "2.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"train/b/1\.png is 4x5 but .*train/a/0\.png is 4x4"):
        load_dataset("folder", data_dir=tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("folder")
    write_png(tmp_path / "train" / "a" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="has train/ but no test"):
        load_dataset("folder", data_dir=tmp_path)
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "test" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/b holds no images"):
        load_dataset("folder", data_dir=tmp_path)
    (tmp_path / "train" / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"test holds no images in its class folders"):
        load_dataset("folder", data_dir=tmp_path)
    write_png(tmp_path / "test" / "a" / "1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"Cannot read image .*train/b/0\.png"):
        load_dataset("folder", data_dir=tmp_path)


# --------------------------------------------------------------------------- download


def test_download_without_torchvision(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DataError, match=r"pip install 'phasescope\[download\]'") as e:
        load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert "place the cifar10 files in" in str(e.value)


def test_download_skipped_when_files_present(cifar10_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    root, raw = cifar10_dir
    check_cifar10(load_dataset("cifar10", data_dir=root, download=True), raw)


def test_download_uses_torchvision_then_own_reader(tmp_path, monkeypatch):
    calls = []

    def fake(cls_name, writer):
        def init(self, root, train=True, download=False, **kw):
            calls.append((cls_name, root, download))
            writer(Path(root))
        return type(cls_name, (), {"__init__": init})

    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = fake("CIFAR10", write_cifar10)
    datasets.MNIST = fake("MNIST", lambda r: write_idx_set(r / "MNIST" / "raw", gz=True))
    tv = types.ModuleType("torchvision")
    tv.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)

    s = load_dataset("cifar10", data_dir=tmp_path / "c", download=True)
    assert tuple(s.x_train.shape) == (100, 3, 32, 32)
    m = load_dataset("mnist", data_dir=tmp_path / "m", download=True)
    assert m.info["source"] == str(tmp_path / "m" / "MNIST" / "raw")
    assert calls == [("CIFAR10", str(tmp_path / "c"), True), ("MNIST", str(tmp_path / "m"), True)]
    # Without a data_dir, downloads go to the cache folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    load_dataset("cifar10", download=True)
    assert calls[-1][1] == str(tmp_path / "cache" / "phasescope" / "data")


# --------------------------------------------------------------------------- the shared real subset


def test_shared_cifar10_subset():
    if not SHARED_SUBSET.is_file():
        pytest.skip(f"{SHARED_SUBSET} is not present")
    s = load_dataset("cifar10", data_dir=SHARED_SUBSET)
    assert s.name == "cifar10" and s.classes == CIFAR10_NAMES
    assert len(s.y_train) == 10000 and len(s.y_test) == 2000
    assert s.input_shape == (3, 32, 32)
    np.testing.assert_allclose(s.mean, [0.491, 0.482, 0.447], atol=0.01)
    assert np.bincount(s.y_train.numpy()).tolist() == [1000] * 10
