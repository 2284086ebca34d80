"""Running analyze again into the same --out measures only what is new (or changed)."""
import json

import pandas as pd
import torch
from typer.testing import CliRunner

from phasescope.interfaces.analyze import analyze
from phasescope.interfaces.cli import app

from .helpers import TINY_ARGS, save_steps, state, tiny_cfg

runner = CliRunner()


def test_rerun_skips_measured_checkpoints_and_measures_new_ones(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1, 2])
    out = tmp_path / "out"
    first = analyze(ckpts, tiny_cfg(), out, progress=False)
    assert sorted(first.outcomes) == [0, 1, 2]
    again = analyze(ckpts, tiny_cfg(), out, progress=False)
    assert again.outcomes == {} and sorted(again.skipped) == ["step-0.pt", "step-1.pt", "step-2.pt"]
    torch.save(state(3), ckpts / "step-4.pt")  # training went on
    torch.save(state(9), ckpts / "step-2.pt")  # a checkpoint rewritten with other weights
    (ckpts / "step-0.pt").unlink()  # a trainer that keeps the last k
    third = analyze(ckpts, tiny_cfg(), out, progress=False)
    assert sorted(third.outcomes) == [2, 4]
    assert any("step 2" in n and "measured again" in n for n in third.notes)
    assert any("no longer in" in n and "0" in n for n in third.notes)
    payload = json.loads((out / "phases.json").read_text())
    assert payload["checkpoints"] == [0, 1, 2, 4] and payload["analyze"]["measured_now"] == [2, 4]
    # the same as measuring the final set of weights from scratch
    fresh = tmp_path / "fresh"
    save_steps(fresh, [0, 1])
    torch.save(state(9), fresh / "step-2.pt")
    torch.save(state(3), fresh / "step-4.pt")
    analyze(fresh, tiny_cfg(), tmp_path / "fresh-out", progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), pd.read_csv(tmp_path / "fresh-out" / "metrics.csv"))


def test_cli_rerun_needs_no_options_and_refuses_other_ones(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1])
    out = tmp_path / "out"
    assert runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--out", str(out)]).exit_code == 0
    torch.save(state(2), ckpts / "step-2.pt")
    res = runner.invoke(app, ["analyze", str(ckpts), "--out", str(out)])  # the saved options are used
    assert res.exit_code == 0, res.output
    assert "1 in this call, 2 earlier" in res.output
    res = runner.invoke(app, ["analyze", str(ckpts), "--out", str(out), "--fit-samples", "150"])
    assert res.exit_code == 2 and "--fit-samples: saved 200, given 150" in res.output
    res = runner.invoke(app, ["analyze", str(tmp_path), "--out", str(out)])
    assert res.exit_code == 2  # another checkpoint folder
    res = runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--fit-samples", "150", "--out", str(out),
                              "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "3 in this call, 0 earlier" in res.output


def test_a_run_folder_of_phasescope_run_is_not_written_over(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1])
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    res = runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--out", str(out)])
    assert res.exit_code == 2 and "already exists and holds a run" in res.output and "--overwrite" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_out_must_not_hold_the_checkpoints(tmp_path):
    run = tmp_path / "run"
    save_steps(run / "checkpoints", [0, 1])
    for out in (run, run / "checkpoints"):
        res = runner.invoke(app, ["analyze", str(run / "checkpoints"), *TINY_ARGS, "--out", str(out), "--overwrite"])
        assert res.exit_code == 2 and "holds the checkpoints" in res.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0.pt", "step-1.pt"]


def test_phasescope_run_does_not_write_over_an_analysis(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1])
    out = tmp_path / "out"
    assert runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["run", "--dataset", "digits", "--iterations", "2", "--quiet", "--out", str(out)])
    assert res.exit_code == 2 and "holds a finished run of `phasescope analyze`" in res.output
    assert (out / "analyze.pt").exists()


def test_an_analysis_killed_before_its_first_checkpoint_is_continued(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1])
    out = tmp_path / "out"
    assert runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--out", str(out)]).exit_code == 0
    for name in ("analyze.pt", "phases.json", "metrics.csv", "errors.npz"):  # as if killed after config.json
        (out / name).unlink()
    res = runner.invoke(app, ["analyze", str(ckpts), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 in this call, 0 earlier" in res.output
