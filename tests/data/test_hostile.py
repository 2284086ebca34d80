"""Hostile and broken files: each gives a DataError naming the file and the problem, and nothing unsafe happens.

Every test writes real files (CIFAR pickles and archives, IDX, npz, PNG) into tmp_path.
Attack payloads would create a marker file if they ever ran; the tests assert it does not exist.
"""
from __future__ import annotations

import builtins
import gzip
import io
import os
import pathlib
import pickle
import struct
import tarfile

import numpy as np
import pytest

from phasescope.data import DataError, files, formats, load_dataset

from .test_files import idx_bytes, make_tar_gz, write_cifar10, write_idx_set, write_png


def tree(root: pathlib.Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --------------------------------------------------------------------------- pickles that would run code


class _Payload:
    """Unpickling it calls ``func(*args)``: an attacker's code, here one that creates a file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: pathlib.Path) -> dict:
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "open": _Payload(builtins.open, str(marker), "w"),
        "Path.touch": _Payload(pathlib.Path.touch, marker),
    }


@pytest.mark.parametrize("kind", ["os.system", "open", "Path.touch"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, kind, protocol):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": _payloads(marker)[kind], b"labels": [0]}, protocol=protocol))
    with pytest.raises(DataError, match=r"data_batch_3 refers to .*refusing to unpickle it") as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "pickles can run code" in str(e.value)
    assert not marker.exists()
    if kind != "os.system":  # the payload is real: plain pickle.loads does create the marker
        control = tmp_path / "control"
        pickle.loads(pickle.dumps(_payloads(control)[kind], protocol=protocol))
        assert control.exists()


def test_cifar_pickle_with_foreign_codec_is_refused(tmp_path):
    import codecs

    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": _Payload(codecs.encode, "x", "rot13")}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch refers to _codecs\.encode\(\.\.\., 'rot13'\)"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_malicious_pickle_inside_an_archive_is_refused(tmp_path):
    write_cifar10(tmp_path / "src")
    marker = tmp_path / "pwned"
    batch = tmp_path / "src" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": _payloads(marker)["open"]}, protocol=2))
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_tar_gz(tmp_path / "src" / "cifar-10-batches-py", archive)
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz:cifar-10-batches-py/data_batch_1 refers to "):
        load_dataset("cifar10", data_dir=archive)
    assert not marker.exists()


def test_npz_with_pickled_objects_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "objects.npz"
    evil = np.empty(2, dtype=object)
    evil[:] = [_payloads(marker)["open"], 1]
    np.savez(path, x_train=evil, y_train=np.arange(2), x_test=np.zeros((2, 4)), y_test=np.arange(2))
    with pytest.raises(DataError, match=r"objects\.npz: cannot read its arrays .*no Python objects"):
        load_dataset("npz", data_dir=path)
    assert not marker.exists()


# --------------------------------------------------------------------------- archives with members that escape


def _archive_with(tmp_path: pathlib.Path, *members: tarfile.TarInfo) -> pathlib.Path:
    """A real cifar-10-python.tar.gz, two folders deep, with ``members`` appended (files get 4 bytes)."""
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "a" / "b" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tf:
        for m in members:
            if m.isfile():
                m.size = 4
                tf.addfile(m, io.BytesIO(b"evil"))
            else:
                tf.addfile(m)
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


def _cases(tmp_path: pathlib.Path) -> dict:
    outside = tmp_path / "outside"
    return {
        "traversal": ([_member("../../outside")], "climbs out of its folder"),
        "absolute": ([_member(str(outside))], "an absolute path"),
        "symlink-absolute": ([_member("cifar-10-batches-py/escape", tarfile.SYMTYPE, str(tmp_path)),
                              _member("cifar-10-batches-py/escape/outside")], "link"),
        "symlink-relative": ([_member("cifar-10-batches-py/escape", tarfile.SYMTYPE, "../../.."),
                              _member("cifar-10-batches-py/escape/outside")], "link"),
        "hardlink": ([_member("cifar-10-batches-py/data_batch_9", tarfile.LNKTYPE, "../../../outside")], "link"),
        "device": ([_member("cifar-10-batches-py/null", tarfile.CHRTYPE)], "special file|SpecialFile"),
    }


@pytest.mark.parametrize("with_data_filter", [True, False])
@pytest.mark.parametrize("case", ["traversal", "absolute", "symlink-absolute", "symlink-relative", "hardlink",
                                  "device"])
def test_archive_members_that_escape_are_refused(tmp_path, monkeypatch, case, with_data_filter):
    if with_data_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    if not with_data_filter:  # the manual check older Pythons use
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    members, problem = _cases(tmp_path)[case]
    archive = _archive_with(tmp_path, *members)
    before = tree(tmp_path)
    with pytest.raises(DataError, match=problem) as e:
        load_dataset("cifar10", data_dir=archive)
    msg = str(e.value)
    assert str(archive) in msg and repr(members[0].name) in msg and "refuses to read it" in msg
    assert not (tmp_path / "outside").exists() and not (tmp_path / "a" / "outside").exists()
    assert tree(tmp_path) == before  # nothing written anywhere


def test_archive_member_claiming_a_huge_size_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_MEMBER_BYTES", 1000)
    archive = _archive_with(tmp_path)
    with pytest.raises(DataError, match=r"member 'cifar-10-batches-py/\w+' claims \d+ bytes"):
        load_dataset("cifar10", data_dir=archive)


def test_truncated_archive_names_the_file(tmp_path):
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_tar_gz(tmp_path / "src" / "cifar-10-batches-py", archive)
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz is a corrupt or truncated archive .*download it"):
        load_dataset("cifar10", data_dir=archive)


# --------------------------------------------------------------------------- IDX


def test_idx_header_declaring_absurd_sizes(tmp_path):
    write_idx_set(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\0" * 64)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated: its header declares 4294967295 x"):
        load_dataset("mnist", data_dir=tmp_path)


def test_gzip_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "MAX_DECOMPRESSED_BYTES", 4096)  # stands in for 1 GiB
    write_idx_set(tmp_path, gz=True)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz decompresses to more than"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_truncated_gz_and_label_out_of_range(tmp_path):
    write_idx_set(tmp_path, gz=True)
    f = tmp_path / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-6])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is a corrupt or truncated gzip file"):
        load_dataset("mnist", data_dir=tmp_path)
    f.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 200]))))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz has label 200; 'mnist' has 10 classes .*download"):
        load_dataset("mnist", data_dir=tmp_path)


# --------------------------------------------------------------------------- npz


def _npz(tmp_path, name="bad.npz", **overrides) -> pathlib.Path:
    rng = np.random.RandomState(0)
    arrays = {"x_train": rng.randint(0, 256, (20, 4, 4)).astype(np.uint8), "y_train": np.arange(20) % 4,
              "x_test": rng.randint(0, 256, (8, 4, 4)).astype(np.uint8), "y_test": np.arange(8) % 4}
    arrays.update(overrides)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


NPZ_CASES = {
    "x strings": ({"x_train": np.full((20, 4, 4), "a")}, r"x_train holds <U1 \(strings\); store inputs as"),
    "x complex": ({"x_test": np.zeros((8, 4, 4), complex)}, r"x_test holds complex128 \(complex numbers\)"),
    "x 1-D": ({"x_train": np.zeros(20)}, r"x_train has shape \(20,\); expected"),
    "y strings": ({"y_train": np.array(list("abcd") * 5)}, r"y_train: labels are <U1 \(strings\).*np\.unique"),
    "y 2-D": ({"y_train": np.eye(4)[np.arange(20) % 4]}, r"y_train: labels have shape \(20, 4\).*one-hot"),
    "lengths differ": ({"y_test": np.arange(7) % 4}, r"x_test has 8 samples but y_test has 7 labels"),
    "non-integer labels": ({"y_train": np.arange(20) % 4 + 0.5}, r"y_train: label 0\.5 at index 0 is not an integer"),
    "NaN labels": ({"y_test": np.array([0, 1, np.nan, 3, 0, 1, 2, 3])}, r"y_test: 1 label\(s\) are NaN"),
    "negative label": ({"y_test": np.array([0, 1, 2, 3, 0, 1, 2, -1])}, r"y_test: label -1 .*labels must be 0\.\.K-1"),
    "stray label": ({"y_train": np.r_[np.arange(19) % 4, 1_000_000]},
                    r"have no training samples \(4-999999\); largest labels: 1000000 \(1 sample\).*--num-classes"),
    "absurd label": ({"y_test": np.r_[np.arange(7) % 4, 10**15]}, r"largest labels: 1000000000000000 \(1 sample\)"),
    "class missing from training": ({"y_train": np.arange(20) % 4 * (np.arange(20) % 4 != 2)},
                                    r"y_train: labels must be 0\.\.K-1 .* 1 of the 4 classes 0\.\.3 have no training "
                                    r"samples \(2\)"),
    "single class": ({"y_train": np.zeros(20, int)}, r"y_train holds a single class \(label 0\)"),
    "NaN pixels": ({"x_train": np.where(np.arange(320).reshape(20, 4, 4) % 50 == 0, np.nan, 0.5)},
                   r"x_train holds 7 NaN and 0 infinite value\(s\), in 7 of 20 samples \(first: sample 0\)"),
    "inf pixels": ({"x_test": np.full((8, 4, 4), np.inf)}, r"x_test holds 0 NaN and 128 infinite value\(s\)"),
    "huge pixels": ({"x_train": np.full((20, 4, 4), 1e30, np.float32)}, r"x_train holds values up to 1e\+30 .*Rescale"),
    "empty train": ({"x_train": np.zeros((0, 4, 4)), "y_train": np.zeros(0, int)}, r"the train split is empty"),
    "empty test": ({"x_test": np.zeros((0, 4, 4)), "y_test": np.zeros(0, int)}, r"the test split is empty"),
    "shapes differ": ({"x_test": np.zeros((8, 5, 5))}, r"training inputs have shape \(1, 4, 4\) but test inputs"),
}


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_npz_nonsense_is_a_clear_error_naming_the_file(tmp_path, case):
    overrides, message = NPZ_CASES[case]
    path = _npz(tmp_path, **overrides)
    with pytest.raises(DataError, match=message) as e:
        load_dataset("npz", data_dir=path)
    assert str(e.value).startswith(str(path))


def test_npz_truncated(tmp_path):
    path = _npz(tmp_path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"bad\.npz is not a readable \.npz file"):
        load_dataset("npz", data_dir=path)


def test_train_size_larger_than_available(tmp_path):
    path = _npz(tmp_path)
    with pytest.raises(DataError, match=r"bad\.npz: train_size=21 is larger than the 20 training samples; use at most"):
        load_dataset("npz", data_dir=path, train_size=21)
    assert len(load_dataset("npz", data_dir=path, train_size=20).y_train) == 20


# --------------------------------------------------------------------------- image folders


def test_folder_images_of_mixed_sizes(tmp_path):
    for c in ("a", "b"):
        for i in range(5):
            write_png(tmp_path / c / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "b" / "5.png", np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"b/5\.png is 8x9 but .*a/0\.png is 8x8: .*resize them first"):
        load_dataset("folder", data_dir=tmp_path)


def test_folder_with_a_single_class(tmp_path):
    for i in range(5):
        write_png(tmp_path / "train" / "only" / f"{i}.png", np.zeros((4, 4), np.uint8))
        write_png(tmp_path / "test" / "only" / f"{i}.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"y_train holds a single class \(label 0\)") as e:
        load_dataset("folder", data_dir=tmp_path)
    assert str(e.value).startswith(str(tmp_path))


def test_folder_truncated_image(tmp_path):
    for c in ("a", "b"):
        for i in range(5):
            write_png(tmp_path / c / f"{i}.png", np.full((6, 6), 40 * i, np.uint8))
    png = tmp_path / "b" / "3.png"
    png.write_bytes(png.read_bytes()[:30])
    with pytest.raises(DataError, match=r"Cannot read image .*b/3\.png"):
        load_dataset("folder", data_dir=tmp_path)


# --------------------------------------------------------------------------- the command line


def test_cli_bad_npz_exits_2_naming_the_file(tmp_path):
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    path = _npz(tmp_path, y_train=np.r_[np.arange(19) % 4, 1_000_000])
    res = CliRunner().invoke(app, ["run", "--dataset", "npz", "--data-dir", str(path), "--out", str(tmp_path / "run"),
                                   "--quiet"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())  # the console may wrap long lines
    assert "bad.npz" in text and "1000000 (1 sample)" in text and "--num-classes" in text
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
