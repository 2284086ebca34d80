"""Fashion-MNIST from Debian's dataset-fashion-mnist package, read without --data-dir."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.data import DataError, files, load_dataset
from phasescope.run.presets import preset_config

from .test_files import write_idx_set

DEBIAN = files.SYSTEM_DATA_DIRS["fashion-mnist"][0]
needs_debian = pytest.mark.skipif(
    files.system_data_dir("fashion-mnist") is None,
    reason=f"Debian's Fashion-MNIST files are not in {DEBIAN} (apt-get install dataset-fashion-mnist)",
)


def test_the_debian_location_is_where_the_package_installs_the_files():
    assert str(DEBIAN) == "/usr/share/datasets/fashion-mnist"


@needs_debian
def test_the_debian_files_are_read_without_data_dir():
    full = load_dataset("fashion-mnist")
    assert full.info["source"] == str(DEBIAN) and full.info["format"] == "IDX"
    assert tuple(full.x_train.shape) == (60000, 1, 28, 28) and tuple(full.x_test.shape) == (10000, 1, 28, 28)
    assert full.num_classes == 10 and full.classes[0] == "T-shirt/top" and full.classes[9] == "Ankle boot"
    assert full.y_train.bincount().tolist() == [6000] * 10 and full.y_test.bincount().tolist() == [1000] * 10


@needs_debian
def test_the_fashion_preset_finds_the_debian_files():
    cfg = preset_config("fashion-vgg11", {"train_size": 200})
    assert cfg.dataset == "fashion-mnist" and cfg.data_dir is None
    small = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_size=cfg.train_size)
    assert tuple(small.x_train.shape) == (200, 1, 28, 28) and small.info["source"] == str(DEBIAN)


def test_data_dir_wins_over_the_debian_location(tmp_path):
    write_idx_set(tmp_path, gz=True)
    s = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert s.info["source"] == str(tmp_path) and len(s.x_train) == 30


@pytest.fixture
def no_debian_files(tmp_path, monkeypatch):
    monkeypatch.setitem(files.SYSTEM_DATA_DIRS, "fashion-mnist", (tmp_path / "absent",))
    return tmp_path / "absent"


def test_without_files_the_error_names_the_package_data_dir_and_download(no_debian_files):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    for part in ("apt-get install dataset-fashion-mnist", str(no_debian_files), "--data-dir", "--download"):
        assert part in msg
    assert "\n" not in msg


def test_the_cli_reports_missing_files_in_one_line(no_debian_files, tmp_path):
    res = CliRunner().invoke(app, ["run", "--dataset", "fashion-mnist", "--iterations", "8",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "apt-get install dataset-fashion-mnist" in res.output and "Traceback" not in res.output


def test_a_partial_debian_install_says_to_reinstall(no_debian_files):
    no_debian_files.mkdir()
    (no_debian_files / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match="apt-get install --reinstall dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_other_datasets_still_need_data_dir():
    with pytest.raises(DataError, match="pass --data-dir .*or --download") as e:
        load_dataset("mnist")
    assert "apt-get" not in str(e.value)
