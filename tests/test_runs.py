"""The run folder (phasescope.outputs.runs and run_experiment's use of it): atomic writes, the lock,
--overwrite, restart, resume checks, validated readers, Ctrl-C handling."""
import os
import signal
import threading

import pytest

from phasescope import run_experiment
from phasescope.config import ConfigError
from phasescope.outputs.runs import (InterruptGuard, ResumeMismatch, RunFileError, RunFolder, RunFolderError, RunLockedError,
                             atomic_write, is_temporary, read_errors, read_json, read_metrics)


# ---------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "metrics.csv"
    path.write_text("old\n")

    def write(p):
        p.write_text("half a fi")
        raise error

    with pytest.raises(error):
        atomic_write(path, write)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["metrics.csv"]
    atomic_write(path, lambda p: p.write_text("new\n"), previous=tmp_path / "metrics.prev")
    assert path.read_text() == "new\n" and (tmp_path / "metrics.prev").read_text() == "old\n"
    assert not any(is_temporary(n) for n in os.listdir(tmp_path))


# ---------------------------------------------------------------------- readers
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from phasescope import RunConfig

    cfg = RunConfig(dataset="digits", model="cnn", width=0.5, iterations=8, batch_size=32, lr=0.05,
                    fit_samples=300, test_samples=150, bootstrap=50)
    out = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(cfg, out, progress=False)
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_read_metrics_rejects_corrupt_and_truncated_files(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    good = (run / "metrics.csv").read_bytes()
    lines = good.splitlines(keepends=True)
    cases = {
        "empty": b"",
        "binary": b"PK\x03\x04\x00\x00garbage\x00\x01\n",
        "cut mid-line": good[: len(good) - 7],
        "cut at a line end": b"".join(lines[:-3]),
        "header only": lines[0],
        "other columns": b"a,b\n1,2\n",
        "text in value": lines[0] + b"0,model,test,accuracy,high,,\n",
    }
    for what, content in cases.items():
        (run / "metrics.csv").write_bytes(content)
        with pytest.raises(RunFileError, match="metrics.csv") as e:
            read_metrics(run)
        assert str(run / "metrics.csv") in str(e.value), what
    (run / "metrics.csv").write_bytes(good)
    assert len(read_metrics(run)) == good.count(b"\n") - 1


def test_read_json_and_errors_name_the_truncated_file(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    text = (run / "phases.json").read_text()
    (run / "phases.json").write_text(text[: len(text) // 2])
    with pytest.raises(RunFileError, match="phases.json.*not valid JSON"):
        read_json(run / "phases.json")
    data = (run / "errors.npz").read_bytes()
    (run / "errors.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunFileError, match="errors.npz.*corrupt or truncated"):
        read_errors(run)


# ---------------------------------------------------------------------- the folder
def test_the_lock_refuses_a_second_writer_and_is_released(tmp_path):
    first = RunFolder.claim(tmp_path / "run", "x")
    with pytest.raises(RunLockedError, match=f"in use by another phasescope process \\(pid {os.getpid()}\\)"):
        RunFolder.claim(tmp_path / "run", "x", overwrite=True)
    from typer.testing import CliRunner

    from phasescope.interfaces.cli import app

    res = CliRunner().invoke(app, ["report", str(tmp_path / "run")])  # report rewrites files: not while a run writes
    assert res.exit_code == 2 and "in use" in res.output
    first.release()
    RunFolder.claim(tmp_path / "run", "x").release()


def test_overwrite_removes_stale_extension_files_and_keeps_nothing_foreign(tmp_path, tiny_cfg):
    out = tmp_path / "run"
    cfg = tiny_cfg.replace(iterations=8, transfer={"keep_best": True})
    run_experiment(cfg, out, progress=False)
    assert (out / "best_features.pt").exists() and (out / "samples.npz").exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"--overwrite refused.*notes\.txt.*Nothing was deleted"):
        run_experiment(tiny_cfg.replace(iterations=8), out, overwrite=True, progress=False)
    assert (out / "best_features.pt").exists() and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    run_experiment(tiny_cfg.replace(iterations=8, samples={"enabled": False}), out, overwrite=True,
                   progress=False)
    names = set(os.listdir(out))
    assert not names & {"best_features.pt", "samples.npz", "samples.parquet", "samples.png", "few.png"}
    from phasescope.outputs.rebuild import rebuild

    assert "samples" not in rebuild(out)  # report no longer trips over the old run's files


def test_a_bad_configuration_leaves_no_folder_and_loses_nothing(tmp_path, tiny_cfg):
    with pytest.raises(ValueError, match="nope"):
        run_experiment(tiny_cfg.replace(layers=["nope"]), tmp_path / "new" / "run", progress=False)
    assert not (tmp_path / "new" / "run").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="nope"):
        run_experiment(tiny_cfg.replace(layers=["nope"]), empty, progress=False)
    assert os.listdir(empty) == []
    out = tmp_path / "run"
    run_experiment(tiny_cfg.replace(iterations=4), out, progress=False)
    before = sorted(os.listdir(out))
    with pytest.raises(ValueError, match="nope"):  # --overwrite with a bad option deletes nothing
        run_experiment(tiny_cfg.replace(layers=["nope"]), out, overwrite=True, progress=False)
    assert sorted(os.listdir(out)) == before


def test_a_run_killed_before_its_first_checkpoint_restarts_without_overwrite(tmp_path, tiny_cfg):
    out = tmp_path / "run"
    run_experiment(tiny_cfg.replace(iterations=4), out, progress=False)
    for name in os.listdir(out):  # what a kill during the first measurement leaves: config.json only
        if name not in ("config.json", ".lock"):
            os.unlink(out / name)
    (out / ".metrics.csv.123.0123abcd.tmp").write_text("half")  # and a killed writer's temporary file
    r = run_experiment(tiny_cfg.replace(iterations=4), out, progress=False)
    assert r.status == "complete" and any("first checkpoint" in n for n in r.notes)
    assert not any(is_temporary(n) for n in os.listdir(out))
    with pytest.raises(RunFolderError, match="finished run.*--resume.*--overwrite"):
        run_experiment(tiny_cfg.replace(iterations=4), out, progress=False)


def test_resume_refuses_other_options_and_accepts_the_requested_values(tmp_path, tiny_cfg):
    from phasescope.run.experiment import resume_config

    cfg = tiny_cfg.replace(iterations=8, batch_size=5000, fit_samples=5000)  # more than the 1437 training samples
    r = run_experiment(cfg, tmp_path / "run", progress=False)
    doc = read_json(tmp_path / "run" / "config.json")
    assert doc["config"]["batch_size"] == 1437 and doc["config"]["fit_samples"] == 1437
    assert doc["adjusted"]["batch_size"] == {"requested": 5000, "used": 1437,
                                             "why": "--batch-size 5000 is more than the 1437 training samples; using 1437"}
    assert len(doc["notes"]) == 2 and r.notes == doc["notes"]
    with pytest.raises(ResumeMismatch) as e:
        run_experiment(cfg.replace(lr=0.1, bootstrap=10), tmp_path / "run", resume=True, progress=False)
    assert "--lr: saved 0.05, given 0.1" in str(e.value) and "--bootstrap: saved 200, given 10" in str(e.value)
    assert isinstance(e.value, ConfigError)
    # the values as requested (or only some options) are the same run
    assert resume_config(tmp_path / "run", {"batch_size": 5000, "lr": 0.05}).batch_size == 1437
    assert run_experiment(cfg, tmp_path / "run", resume=True, progress=False).status == "complete"


def test_sample_counts_below_the_number_of_classes_name_the_option(tmp_path, tiny_cfg):
    for key, option in (("fit_samples", "--fit-samples"), ("test_samples", "--test-samples")):
        with pytest.raises(ConfigError, match=f"{option} 5 is smaller than the number of classes \\(10\\)"):
            run_experiment(tiny_cfg.replace(**{key: 5}), tmp_path / key, progress=False)
        assert not (tmp_path / key).exists()


def test_divergence_is_recorded_as_the_status(tmp_path, tiny_cfg):
    from phasescope.run.training import TrainingDiverged

    with pytest.raises(TrainingDiverged):
        run_experiment(tiny_cfg.replace(lr=1e6, momentum=0.0, iterations=256), tmp_path / "run", progress=False)
    ph = read_json(tmp_path / "run" / "phases.json")
    assert ph["status"] == "diverged" and ph["checkpoints"][0] == 0
    assert (tmp_path / "run" / "curves.png").exists()


# ---------------------------------------------------------------------- Ctrl-C
@pytest.mark.skipif(threading.current_thread() is not threading.main_thread() or os.name != "posix",
                    reason="signals go to the main thread")
def test_interrupt_guard_holds_ctrl_c_during_a_checkpoint_and_ignores_it_while_closing():
    # The caller's handler is a marker, whatever an earlier test or library left installed;
    # raise_signal delivers in this (the main) thread, so the handler runs before the next line.
    def caller(signum, frame):
        raise AssertionError("the guard's handler should have been in place")

    original = signal.signal(signal.SIGINT, caller)
    try:
        guard = InterruptGuard()
        with guard:
            with pytest.raises(KeyboardInterrupt):
                with guard.protect():
                    signal.raise_signal(signal.SIGINT)
                    done = True  # the block runs to its end first
            assert done and guard.interrupted
            with guard.closing():
                signal.raise_signal(signal.SIGINT)  # a second Ctrl-C: ignored
        assert signal.getsignal(signal.SIGINT) is caller  # the caller's handler is back
    finally:
        signal.signal(signal.SIGINT, original)


def test_plain_progress_lines_every_tenth(capsys):
    from phasescope.run.experiment import PlainProgress

    bar = PlainProgress(100, start=0)
    with bar:
        for t in range(1, 101):
            bar.update(0, completed=t, loss=1.0 / t)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[0].startswith("training: iteration 10/100 (10%), loss 0.1000")
    assert lines[-1].startswith("training: iteration 100/100 (100%)")
