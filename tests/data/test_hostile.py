"""Hostile and nonsensical data files: each gives a DataError (exit 2 from the CLI) that names
the file and the problem, and nothing unsafe happens (no code runs, nothing is written)."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from phasescope.cli import app
from phasescope.data import DataError, load_dataset
from tests.data.test_files import write_cifar10


def save_npz(path: Path, **over) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((40, 4, 4)).astype(np.float32), "y_train": np.arange(40) % 4,
              "x_test": rng.random((12, 4, 4)).astype(np.float32), "y_test": np.arange(12) % 4}
    arrays.update(over)
    np.savez(path, **arrays)
    return path


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    root = tmp_path / "data"
    write_cifar10(root)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    with pytest.raises(DataError, match="data_batch_2.*refusing to unpickle"):
        load_dataset("cifar10", data_dir=root)
    assert not marker.exists()


@pytest.mark.parametrize("evil", ["../../escaped.txt", "/tmp/phasescope-absolute-escape.txt", "link"])
def test_archive_members_never_write_outside(tmp_path, evil):
    """Archives are read in memory; traversal, absolute and symlink members are never extracted."""
    root = tmp_path / "data"
    write_cifar10(root)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for f in sorted((root / "cifar-10-batches-py").iterdir()):
            tf.add(f, arcname=f"cifar-10-batches-py/{f.name}")
        if evil == "link":
            info = tarfile.TarInfo("cifar-10-batches-py/evil-link")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
        else:
            data = b"escaped"
            info = tarfile.TarInfo(evil)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    before = set(tmp_path.rglob("*"))
    s = load_dataset("cifar10", data_dir=archive)  # the real members load; the evil one is ignored
    assert s.num_classes == 10
    assert set(tmp_path.rglob("*")) == before
    assert not Path("/tmp/phasescope-absolute-escape.txt").exists()
    assert not (tmp_path.parent / "escaped.txt").exists()


@pytest.mark.parametrize("case, arrays, message", [
    ("label out of range", {"y_train": np.r_[np.arange(39) % 4, 1_000_000]}, "labels go up to 1000000 but classes"),
    ("negative label", {"y_test": np.r_[np.arange(11) % 4, -1]}, "found -1"),
    ("fractional label", {"y_train": (np.arange(40) % 4) + 0.5}, "integer class indices"),
    ("string labels", {"y_train": np.array(["a"] * 40)}, "integer|label"),
    ("single class", {"y_train": np.zeros(40, int), "y_test": np.zeros(12, int)}, "single class"),
    ("nan pixels", {"x_train": np.where(np.arange(40)[:, None, None] == 3, np.nan, 0.5) * np.ones((40, 4, 4))},
     "16 NaN or infinite"),
    ("huge values", {"x_train": np.full((40, 4, 4), 1e30)}, "values up to 1e\\+30"),
    ("complex dtype", {"x_train": np.ones((40, 4, 4), np.complex64)}, "dtype complex64"),
    ("empty test split", {"x_test": np.zeros((0, 4, 4)), "y_test": np.zeros(0, int)}, "empty"),
    ("lengths differ", {"y_train": np.arange(39) % 4}, "40 training inputs but 39 labels"),
    ("2-d labels", {"y_train": np.ones((40, 3))}, "one-hot|labels"),
])
def test_npz_files_that_make_nonsense_are_refused_by_name(tmp_path, case, arrays, message):
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_dataset("npz", data_dir=path)
    assert "npz" in str(e.value)


def test_declared_class_count_allows_absent_classes_but_not_labels_beyond_it(tmp_path):
    path = save_npz(tmp_path / "gap.npz", y_train=np.arange(40) % 3 * 2, y_test=np.arange(12) % 3 * 2)  # 0, 2, 4
    with pytest.raises(DataError, match="classes 1, 3 have no training sample.*--num-classes"):
        load_dataset("npz", data_dir=path)
    s = load_dataset("npz", data_dir=path, num_classes=6)
    assert s.num_classes == 6
    with pytest.raises(DataError, match="outside 0..3"):
        load_dataset("npz", data_dir=path, num_classes=4)


def test_wrong_keys_and_pickled_objects_in_an_npz(tmp_path):
    np.savez(tmp_path / "keys.npz", images=np.zeros((4, 4, 4)), labels=np.zeros(4))
    with pytest.raises(DataError, match="keys.npz lacks x_train"):
        load_dataset("npz", data_dir=tmp_path / "keys.npz")
    obj = np.empty(40, dtype=object)
    obj[:] = [{"x": 1}] * 40
    np.savez(tmp_path / "obj.npz", x_train=obj, y_train=np.arange(40) % 4, x_test=np.zeros((12, 4, 4)),
             y_test=np.arange(12) % 4)
    with pytest.raises(DataError, match="obj.npz"):
        load_dataset("npz", data_dir=tmp_path / "obj.npz")


def test_a_truncated_npz_is_named(tmp_path):
    path = save_npz(tmp_path / "cut.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.npz"):
        load_dataset("npz", data_dir=path)


def test_images_of_mixed_sizes_in_a_folder_name_the_file(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(tmp_path / "b" / "odd.png")
    with pytest.raises(DataError, match="odd.png"):
        load_dataset("folder", data_dir=tmp_path)


def test_data_dir_for_an_embedded_dataset_is_an_error(tmp_path):
    with pytest.raises(DataError, match="only for file datasets"):
        load_dataset("mnist-digits", data_dir=tmp_path)


def test_cli_exit_code_2_names_the_file(tmp_path):
    path = save_npz(tmp_path / "stray.npz", y_train=np.r_[np.arange(39) % 4, 1_000_000])
    res = CliRunner().invoke(app, ["run", "--dataset", "npz", "--data-dir", str(path), "--iterations", "2",
                                   "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 2 and "1000000" in res.output
    assert not (tmp_path / "run").exists()  # nothing left behind by a configuration error
