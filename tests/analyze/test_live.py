"""`phasescope run --save-checkpoints` keeps the weights at every checkpoint, and `phasescope
analyze RUN/checkpoints` with the same data options reproduces the run's own measurements:
metrics, per-sample errors, phases, per-sample dynamics and reconstructions."""
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from phasescope.interfaces.cli import app

runner = CliRunner()
DATA = ["--dataset", "digits", "--width", "0.5", "--fit-samples", "300", "--test-samples", "150", "--bootstrap", "100"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    res = runner.invoke(app, ["run", *DATA, "--iterations", "32", "--batch-size", "32", "--lr", "0.05",
                              "--save-checkpoints", "--quiet", "--out", str(root / "run")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["analyze", str(root / "run" / "checkpoints"), *DATA, "--quiet", "--out", str(root / "an")])
    assert res.exit_code == 0, res.output
    return root / "run", root / "an"


def test_checkpoints_are_saved_at_every_scheduled_iteration(live):
    run, _ = live
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(
        f"step-{t}.pt" for t in (0, 1, 2, 4, 8, 16, 32))
    assert json.loads((run / "config.json").read_text())["config"]["save_checkpoints"] is True


def test_analyze_reproduces_the_live_measurements(live):
    run, an = live
    pd.testing.assert_frame_equal(pd.read_csv(an / "metrics.csv"), pd.read_csv(run / "metrics.csv"), rtol=1e-5)
    with np.load(run / "errors.npz") as a, np.load(an / "errors.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5)
    live_p, an_p = (json.loads((d / "phases.json").read_text()) for d in live)
    assert an_p["layers"] == live_p["layers"] and an_p["checkpoints"] == live_p["checkpoints"]
    for name in ("samples.npz", "reconstructions.npz"):  # per-sample dynamics from the fit predictions; images
        with np.load(run / name) as a, np.load(an / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                if a[k].dtype.kind in "fc":
                    np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
                elif a[k].dtype == np.uint8:  # pixels: a rounding may differ by one level
                    assert np.abs(b[k].astype(int) - a[k]).max() <= 1
                else:
                    np.testing.assert_array_equal(b[k], a[k])
    assert rounded(an_p["samples"]) == rounded(live_p["samples"])


def rounded(v):
    """A phases.json section with floats to 5 significant digits and its timings left out."""
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items() if "seconds" not in k}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return float(f"{v:.5g}") if isinstance(v, float) else v


def test_report_and_compare_read_the_analysis_unchanged(live, tmp_path):
    run, an = live
    assert runner.invoke(app, ["report", str(an), "--html"]).exit_code == 0
    res = runner.invoke(app, ["compare", str(run), str(an), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(table) == 2 and table.phases.nunique() == 1 and table.min_iteration.nunique() == 1


def test_overwrite_deletes_the_saved_checkpoints_and_refuses_foreign_files(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--dataset", "digits", "--width", "0.5", "--iterations", "2", "--fit-samples", "100",
            "--test-samples", "50", "--bootstrap", "20", "--no-samples", "--no-reconstructions", "--quiet"]
    assert runner.invoke(app, [*args, "--save-checkpoints", "--out", str(out)]).exit_code == 0
    (out / "checkpoints" / "mine.txt").write_text("x")
    res = runner.invoke(app, [*args, "--out", str(out), "--overwrite"])
    assert res.exit_code == 2 and "checkpoints/mine.txt" in res.output
    (out / "checkpoints" / "mine.txt").unlink()
    res = runner.invoke(app, [*args, "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("extras", [["--ridge", "0.1,1", "--info-plane", "binning"], ["--transfer", "class-split"]],
                         ids=["ridge-list-and-info-plane", "transfer"])
def test_the_other_extensions_agree_too(tmp_path, extras):
    """A ridge list (errors_ridge.npz), the information plane and transfer probes (on a class split
    of the data, with a 5-class model) measured from the saved weights agree with the live run."""
    data = ["--dataset", "digits", "--width", "0.5", "--fit-samples", "200", "--test-samples", "100", "--bootstrap",
            "50", "--no-samples", "--no-reconstructions", *extras]
    res = runner.invoke(app, ["run", *data, "--iterations", "4", "--batch-size", "32", "--lr", "0.05",
                              "--save-checkpoints", "--quiet", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["analyze", str(tmp_path / "run" / "checkpoints"), *data, "--quiet",
                              "--out", str(tmp_path / "an")])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "an" / "metrics.csv"),
                                  pd.read_csv(tmp_path / "run" / "metrics.csv"), rtol=1e-5)
    for name in ("errors_ridge.npz", "transfer.npz"):
        if (tmp_path / "run" / name).exists():
            with np.load(tmp_path / "run" / name) as a, np.load(tmp_path / "an" / name) as b:
                assert sorted(a.files) == sorted(b.files)
                for k in a.files:
                    np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    live_p, an_p = (json.loads((tmp_path / d / "phases.json").read_text()) for d in ("run", "an"))
    for key in ("ridge_sweep", "transfer", "infoplane"):
        assert rounded(an_p.get(key)) == rounded(live_p.get(key))
