"""What a user meets when things go wrong around a run: a full disk mid-run, a hostile run-folder
name in `compare --html`, a --model function that raises or exits, `report`/`compare` on folders
that hold no finished run, and a PhaseTracker given too few samples or another tracker's state.
Every test asserts what the user sees: the exit code, the one-line message, the files."""
from __future__ import annotations

import errno
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from phasescope.interfaces.cli import app
from phasescope.outputs.runs import read_json, read_metrics

runner = CliRunner()
RUN = ["run", "--dataset", "digits", "--width", "0.5", "--batch-size", "32", "--iterations", "16",
       "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "20", "--no-samples", "--no-reconstructions",
       "--quiet", "--threads", "1"]
CHECKPOINTS = [0, 1, 2, 4, 8, 16]  # the schedule of RUN


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(output: str) -> str:
    lines = [l for l in output.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


# ---------------------------------------------------------------------- 1. a full disk mid-run
class DiskFills:
    """torch.save that fills the disk at its ``at``-th call: it writes some bytes, then fails as torch
    does on a full disk (its RuntimeError, the OSError(ENOSPC) of the file handle as its context).
    With ``everything``, every later fsync fails too: no file of the run can be written any more."""

    def __init__(self, monkeypatch, at: int, everything: bool = False):
        self.calls, self.at, self.full = 0, at, False
        self._save, self._fsync = torch.save, __import__("os").fsync
        monkeypatch.setattr(torch, "save", self.save)
        if everything:
            monkeypatch.setattr("os.fsync", self.fsync)

    def save(self, obj, f, *args, **kwargs):
        self.calls += 1
        if self.calls >= self.at:
            self.full = True
            f.write(b"PK\x03\x04 partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
        return self._save(obj, f, *args, **kwargs)

    def fsync(self, fd):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._fsync(fd)


def _assert_disk_full_message(res, out):
    assert res.exit_code == 4, res.output
    line = one_line_error(res.output)
    assert f"could not write {out / 'state.pt'}" in line and "disk is full" in line
    assert "Free some space" in line and f"phasescope run --out {out} --resume" in line


def _assert_resume_completes(out, *options: str):
    res = invoke("run", *options, "--out", str(out), "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    ph = read_json(out / "phases.json")
    assert ph["status"] == "complete" and ph["checkpoints"] == CHECKPOINTS
    return read_metrics(out)


def test_disk_full_while_saving_state_exits_4_keeps_checkpoints_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    disk = DiskFills(monkeypatch, at=3)  # the third checkpoint's state.pt does not fit
    res = invoke(*RUN, "--out", str(out))
    _assert_disk_full_message(res, out)
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=False)  # the second checkpoint's, intact
    assert state["iteration"] == CHECKPOINTS[1]
    assert set(read_metrics(out).iteration) == set(CHECKPOINTS[:3])  # measured before the failed save
    assert read_json(out / "phases.json")["status"] == "failed"  # small files still fit: the status is recorded
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", disk._save)  # space freed
    _assert_resume_completes(out, *RUN[1:])  # the options given again (all sections compared as saved)


def test_disk_full_for_every_file_exits_4_and_leaves_the_earlier_files_intact(tmp_path, monkeypatch):
    out = tmp_path / "run"
    disk = DiskFills(monkeypatch, at=4, everything=True)
    res = invoke(*RUN, "--out", str(out))
    _assert_disk_full_message(res, out)
    assert torch.load(out / "state.pt", map_location="cpu", weights_only=False)["iteration"] == CHECKPOINTS[2]
    assert set(read_metrics(out).iteration) == set(CHECKPOINTS[:4])  # written before the state that did not fit
    assert not (out / "phases.json").exists()  # no room even for the status
    assert read_json(out / "config.json")["config"]["iterations"] == 16
    monkeypatch.setattr(torch, "save", disk._save)
    monkeypatch.setattr("os.fsync", disk._fsync)
    _assert_resume_completes(out)  # the command the message gives


def test_torch_write_error_on_a_full_disk_names_the_file(tmp_path, monkeypatch):
    """torch.save to a path raises a RuntimeError without errno; a disk with no space left means ENOSPC."""
    import os

    from phasescope.outputs.runs import RunWriteError, atomic_write

    class Full:
        f_bavail = f_favail = 0

    def torch_fails(p):
        p.write_bytes(b"x")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    (tmp_path / "state.pt").write_bytes(b"old")
    with pytest.raises(RunWriteError) as e:
        atomic_write(tmp_path / "state.pt", torch_fails)
    assert e.value.errno == errno.ENOSPC and e.value.path == tmp_path / "state.pt"
    assert (tmp_path / "state.pt").read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run of a few seconds (a read-only template: tests copy it)."""
    from phasescope import RunConfig, run_experiment

    cfg = RunConfig(dataset="digits", model="cnn", width=0.5, iterations=4, batch_size=32, lr=0.05, fit_samples=200,
                    test_samples=100, bootstrap=20, device="cpu")
    return run_experiment(cfg, tmp_path_factory.mktemp("finished") / "run", progress=False).out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# ---------------------------------------------------------------------- 2. links and script policy of the pages
def _script_policy(text: str) -> str:
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    return next(d for d in csp.split(";") if d.strip().startswith("script-src"))


def test_index_links_cannot_become_a_javascript_url_and_the_page_allows_only_its_own_script(tmp_path, finished_run):
    import base64
    import hashlib

    hostile = copy_run(finished_run, tmp_path / "javascript:alert(4)")
    res = invoke("compare", str(hostile), "--out", str(tmp_path), "--html")  # index.html beside the run folder
    assert res.exit_code == 0, res.output
    text = (tmp_path / "index.html").read_text()
    links = [h for h in re.findall(r'<a href="([^"]*)"', text)]
    assert links == ["./javascript%3Aalert%284%29/report.html"]
    assert "javascript:" not in "".join(re.findall(r'href="([^"]*)"', text))
    policy = _script_policy(text)
    assert "'unsafe-inline'" not in policy
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    assert len(scripts) == 1 and "<script " not in text
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert policy.split() == ["script-src", f"'sha256-{digest}'"]  # the sorting script, and only it, may run


def test_report_file_links_are_relative_and_encoded(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "javascript:alert(1)").write_text("a file with a hostile name")
    assert invoke("report", str(run), "--html").exit_code == 0
    text = (run / "report.html").read_text()
    files = re.findall(r'<li><a href="([^"]*)"><code>([^<]*)</code>', text)
    assert ("./javascript%3Aalert%281%29", "javascript:alert(1)") in files
    assert all(h.startswith("./") for h, _ in files) and "'unsafe-inline'" not in _script_policy(text)


# ---------------------------------------------------------------------- 3. a --model function that fails
USER_MODULE = '''
import sys
from torch import nn

def raises(input_shape, num_classes):
    raise RuntimeError("weights file not found\\nsecond line of the message")

def exits(input_shape, num_classes):
    sys.exit(0)

def no_parameters():
    return nn.Linear(2, 2)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models_rel.py").write_text(USER_MODULE)
    (tmp_path / "user_models_broken.py").write_text("import sys\nsys.exit(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models_rel"


@pytest.mark.parametrize("command", ["run", "layers"])
@pytest.mark.parametrize("fn, expected", [
    ("raises", "raises((1, 8, 8), 10) failed: RuntimeError: weights file not found. Fix raises"),
    ("exits", "exits((1, 8, 8), 10) failed: it called sys.exit(0). Fix exits (return the model instead of exiting)"),
    ("no_parameters", "no_parameters cannot be called as no_parameters(input_shape, num_classes): "
                      "too many positional arguments"),
])
def test_a_model_function_that_raises_exits_or_takes_other_arguments_is_bad_input(tmp_path, user_module, command,
                                                                                   fn, expected):
    out = tmp_path / "out"
    args = [command, "--dataset", "digits", "--model", f"{user_module}:{fn}"]
    res = invoke(*args, *(["--iterations", "4", "--quiet", "--out", str(out)] if command == "run" else []))
    assert res.exit_code == 2, res.output
    line = one_line_error(res.output)
    assert f"--model '{user_module}:{fn}'" in line and expected in line and "second line" not in line
    assert not out.exists()  # nothing written


def test_a_model_module_that_exits_on_import_is_bad_input(user_module):
    res = invoke("layers", "--dataset", "digits", "--model", "user_models_broken:build")
    assert res.exit_code == 2, res.output
    assert "importing 'user_models_broken' failed: it called sys.exit(1)" in one_line_error(res.output)


# ---------------------------------------------------------------------- 4. report/compare on what is no finished run
def _random_files(folder, *names):
    import random

    folder.mkdir()
    rng = random.Random(0)
    for name in ("data.bin", "notes.txt", *names):
        (folder / name).write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("stray", [(), ("metrics.csv",), ("phases.json",)])
def test_report_on_a_folder_of_other_files_is_bad_input_and_writes_nothing(tmp_path, stray):
    folder = tmp_path / "random"
    before = _random_files(folder, *stray)
    for args in (["report", str(folder), "--html"], ["report", str(folder)], ["compare", str(folder), "--out",
                                                                              str(tmp_path / "cmp")]):
        res = invoke(*args)
        assert res.exit_code == 2, res.output
        line = one_line_error(res.output)
        assert f"{folder} is not a phasescope run folder" in line and "no config.json" in line
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no report.html, no .lock
    assert not (tmp_path / "cmp").exists()


def test_report_on_a_foreign_config_json_is_bad_input(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "config.json").write_text('{"model": "mine"}')
    res = invoke("report", str(folder), "--html")
    assert res.exit_code == 2 and "its config.json has no 'config' section" in one_line_error(res.output)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]


def test_compare_includes_a_run_in_progress_marked_partial(tmp_path, finished_run):
    from phasescope.outputs.runs import locked_folder

    running = copy_run(finished_run, tmp_path / "running")
    (running / "phases.json").unlink()  # as while the run trains: written when it ends
    out = tmp_path / "cmp"
    with locked_folder(running):  # the lock held by the process writing the folder
        res = invoke("compare", str(running), str(finished_run), "--out", str(out))
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"note: {running} is still running: its rows are from the 4 checkpoints measured so far " \
           "(iterations 0 to 4) and marked partial." in text
    import pandas as pd

    table = pd.read_csv(out / "compare.csv")
    mine, done = table[table.path == str(running)], table[table.path == str(finished_run)]
    assert len(mine) == len(done) >= 1  # the phases of the checkpoints so far, one row per layer
    assert list(mine.status) == ["running"] * len(mine) and mine.partial.all()
    assert list(done.status) == ["complete"] * len(done) and not done.partial.any()
    assert not (running / "phases.json").exists()  # computed, never written into the running folder


def test_compare_with_nothing_measured_yet_is_bad_input_and_writes_nothing(tmp_path, finished_run):
    from phasescope.outputs.runs import locked_folder

    starting = copy_run(finished_run, tmp_path / "starting")
    for name in ("metrics.csv", "metrics.parquet", "errors.npz", "phases.json"):
        (starting / name).unlink(missing_ok=True)
    one = copy_run(finished_run, tmp_path / "one")  # a single checkpoint: no phases yet
    import pandas as pd

    m = pd.read_csv(one / "metrics.csv")
    m[m.iteration == 0].to_csv(one / "metrics.csv", index=False)
    for name in ("metrics.parquet", "errors.npz", "phases.json"):
        (one / name).unlink(missing_ok=True)
    out = tmp_path / "cmp"
    with locked_folder(starting):
        res = invoke("compare", str(starting), str(one), "--out", str(out))
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"{starting} has no measured checkpoint yet (no metrics.csv): the run is starting" in text
    assert f"{one} has no phases yet (1 checkpoint(s) measured; phases need at least two)" in text
    assert "error: nothing to compare" in text and not out.exists()


# ---------------------------------------------------------------------- 5. PhaseTracker: too few samples, another tracker's state
def _net():
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.arange(n) % 3


def _tracker(model, layers=("2",), fit=30, test=12, schedule=(0, 1, 2, 4)):
    from phasescope import PhaseTracker

    return PhaseTracker(model, list(layers), _data(fit), _data(test, 1), schedule=list(schedule), num_classes=3,
                        bootstrap=20)


@pytest.mark.filterwarnings("ignore:layer '2' has 6 features for 2 fit samples")
@pytest.mark.parametrize("split", ["fit", "test"])
def test_tracker_with_a_single_sample_in_a_split_is_refused_at_construction(split):
    with pytest.raises(ValueError, match=f"{split}_data holds 1 sample; .* needs at least 2.* Give more samples "
                                         f"in {split}_data"):
        _tracker(_net(), **{split: 1})
    assert _tracker(_net(), fit=2, test=2).measure(_net(), 0)  # two of each are enough to measure


def _saved(model):
    t = _tracker(model)
    for i in (0, 1):
        t.measure(model, i)
    return t.state_dict()


@pytest.mark.parametrize("other, expected", [
    ({"layers": ("2", "4")}, "layers: saved ['2'], this tracker ['2', '4']"),
    ({"test": 15}, "test samples: saved 12, this tracker 15"),
    ({"fit": 40}, "fit samples: saved 30, this tracker 40"),
    ({"schedule": (0, 2, 4)}, "schedule up to the last checkpoint measured (1): saved [0, 1], this tracker [0]"),
])
def test_load_state_dict_refuses_the_state_of_a_tracker_with_other_settings(other, expected):
    model = _net()
    state = _saved(model)
    t = _tracker(model, **other)
    with pytest.raises(ValueError, match="cannot continue from that state") as e:
        t.load_state_dict(state)
    assert expected in str(e.value) and t.measured == [] and t.rows == []  # nothing loaded


def test_load_state_dict_checks_a_state_of_an_earlier_version_by_its_errors():
    model = _net()
    state = _saved(model)
    del state["settings"]  # as saved before the settings were recorded
    with pytest.raises(ValueError, match=r"test samples: saved 12, this tracker 15"):
        _tracker(model, test=15).load_state_dict(state)
    with pytest.raises(ValueError, match=r"layers: saved \['2'\], this tracker \['4'\]"):
        _tracker(model, layers=("4",)).load_state_dict(state)


def test_load_state_dict_continues_the_same_tracker_and_a_longer_schedule():
    model = _net()
    state = _saved(model)
    same = _tracker(model)
    same.load_state_dict(state)
    assert same.measured == [0, 1]
    longer = _tracker(model, schedule=(0, 1, 2, 4, 8, 16))  # agrees up to the last checkpoint measured
    longer.load_state_dict(state)
    longer.measure(model, 2)
    assert longer.measured == [0, 1, 2] and set(longer.phases()) == {"2"}


def test_resume_compares_every_option_section_key_by_key():
    """`--no-reconstructions`/`--info-plane` given again to --resume are the saved options, not different ones."""
    from phasescope import RunConfig
    from phasescope.run.experiment import config_differences

    saved = RunConfig(dataset="digits", reconstructions={"enabled": False},
                      infoplane={"estimators": ["binning"]}).to_dict()
    given = {"reconstructions": {"enabled": False}, "infoplane": {"estimators": ["binning"]}}
    assert config_differences(saved, given) == []
    assert config_differences(saved, {"reconstructions": {"enabled": True}}) == [
        ("--reconstructions/--no-reconstructions", False, True)]
