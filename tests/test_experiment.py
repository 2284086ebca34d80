import json
import os

import pandas as pd
import pytest

from phasescope import run_experiment
from phasescope.outputs.runs import RunFolderError
from phasescope.run.training import TrainingDiverged

FILES = {"config.json", "metrics.csv", "phases.json", "curves.png", "errors.npz", "state.pt"}


def test_run_writes_every_output(tmp_path, tiny_cfg):
    r = run_experiment(tiny_cfg, tmp_path / "run", progress=False)
    assert FILES <= {p.name for p in (tmp_path / "run").iterdir()}
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["config"]["iterations"] == 64 and cfg["versions"]["torch"]
    assert cfg["measurement"]["bn_mode"] == "recalibrate" and cfg["measurement"]["relative_ridge"] == 0.1
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert {"iteration", "layer", "split", "metric", "value", "ci_low", "ci_high"} <= set(df.columns)
    ph = json.loads((tmp_path / "run" / "phases.json").read_text())
    layer = ph["layers"]["features.3"]
    assert layer["phases"][0]["start"] == 0 and layer["phases"][-1]["end"] == 64
    assert {"value", "ci_low", "ci_high"} <= set(layer["relative_decrease"])
    assert r.status == "complete" and 0 <= ph["final_accuracy"]["test"] <= 1


def test_existing_folder_is_never_overwritten(tmp_path, tiny_cfg):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="not a phasescope run folder. Choose another --out"):
        run_experiment(tiny_cfg, out, progress=False)
    with pytest.raises(RunFolderError, match="files phasescope did not write.*Nothing was deleted"):
        run_experiment(tiny_cfg, out, overwrite=True, progress=False)
    assert os.listdir(out) == ["precious.txt"] and (out / "precious.txt").read_text() == "keep me"


def test_divergence_stops_with_message_and_keeps_measurements(tmp_path, tiny_cfg):
    cfg = tiny_cfg.replace(lr=1e6, momentum=0.0, iterations=256)
    with pytest.raises(TrainingDiverged, match="Lower --lr"):
        run_experiment(cfg, tmp_path / "run", progress=False)
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert 0 in set(df.iteration)  # the initial checkpoint survives
    assert (tmp_path / "run" / "phases.json").exists()


def test_interrupted_run_resumes_to_the_identical_result(tmp_path, tiny_cfg):
    full = run_experiment(tiny_cfg, tmp_path / "full", progress=False)

    def interrupt(t, tracker):
        if t == 8:
            raise KeyboardInterrupt

    part = run_experiment(tiny_cfg, tmp_path / "part", progress=False, on_checkpoint=interrupt)
    assert part.status == "interrupted"
    assert max(pd.read_csv(tmp_path / "part" / "metrics.csv").iteration) == 8  # complete files so far
    resumed = run_experiment(tiny_cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed.status == "complete"
    pd.testing.assert_frame_equal(full.metrics, resumed.metrics)


def test_a_checkpoint_writes_only_what_is_new_and_the_end_writes_the_summaries(tmp_path, tiny_cfg):
    """After each checkpoint: metrics, errors and state hold every checkpoint so far (a kill loses
    nothing measured); phase detection, tables and figures wait for the end of the run."""
    from phasescope.outputs.runs import read_errors, read_metrics

    out = tmp_path / "run"
    seen = []

    def inspect(iteration, tracker):
        files = {p.name for p in out.iterdir()}
        m = read_metrics(out)
        its, _ = read_errors(out)[tracker.layers[0]]
        seen.append((iteration, sorted(m.iteration.unique()) == tracker.measured, its == tracker.measured,
                     {"state.pt", "metrics.csv", "errors.npz"} <= files,
                     files & {"phases.json", "samples.npz", "samples.png", "curves.png", "reconstructions.npz"}))

    run_experiment(tiny_cfg, out, progress=False, on_checkpoint=inspect)
    assert len(seen) == 8 and all(a and b and c and not summaries for _, a, b, c, summaries in seen), seen
    for name in ("phases.json", "samples.npz", "curves.png", "reconstructions.npz", "report.html"):
        assert (out / name).exists(), name
