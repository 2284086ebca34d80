"""Discovery: the step of every naming pattern, each format, what is skipped and why (--dry-run)."""
import json

import pytest
import torch
from typer.testing import CliRunner

from phasescope.interfaces.analyze.discover import DiscoveryError, discover, step_from_name
from phasescope.interfaces.cli import app

from .helpers import state

runner = CliRunner()


@pytest.mark.parametrize("name, step", [
    ("step-1000.pt", 1000), ("step1000", 1000), ("step_1000.safetensors", 1000), ("global_step1000.pt", 1000),
    ("epoch=3-step=1200.ckpt", 1200), ("checkpoint-500", 500), ("iter_0004096", 4096), ("it1000.pth", 1000),
    ("iteration-12.bin", 12), ("1000.pt", 1000), ("model_step=7.pt", 7),
    ("epoch=3.ckpt", None), ("last.ckpt", None), ("model_v2.pt", None), ("split3.pt", None),
])
def test_step_from_every_naming_pattern(name, step):
    assert step_from_name(name) == step


def test_formats_recorded_steps_and_skips(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file

    d = tmp_path / "ckpts"
    d.mkdir()
    torch.save(state(0), d / "step-10.pt")
    save_file(state(1), str(d / "step20.safetensors"))
    torch.save({"state_dict": {f"model.{k}": v for k, v in state(2).items()}, "global_step": 30, "epoch": 1},
               d / "epoch=1-step=30.ckpt")
    torch.save({"state_dict": state(3), "global_step": 40}, d / "last.ckpt")  # the step only inside
    hf = d / "checkpoint-50"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    save_file(state(4), str(hf / "model.safetensors"))
    (hf / "trainer_state.json").write_text(json.dumps({"global_step": 50}))
    (d / "iter_0000060").mkdir()
    torch.save(state(5), d / "iter_0000060" / "model.pt")
    (d / "notes.txt").write_text("x")
    (d / "empty").mkdir()
    torch.save(state(6), d / "weights.pt")  # no step anywhere
    (d / ".step-70.pt.tmp").write_text("")  # an interrupted save: hidden, ignored
    found = discover(d)
    rows = [(c.step, c.name, c.format, c.step_from) for c in found.checkpoints]
    assert rows == [(10, "step-10.pt", "torch", "name"), (20, "step20.safetensors", "safetensors", "name"),
                    (30, "epoch=1-step=30.ckpt", "lightning", "name"), (40, "last.ckpt", "lightning", "global_step"),
                    (50, "checkpoint-50/", "hf", "name"), (60, "iter_0000060/", "torch", "name")]
    hf_entry = found.checkpoints[4]
    assert hf_entry.recorded_step == 50 and hf_entry.weights == "model.safetensors"
    skipped = {s.name: s.reason for s in found.skipped}
    assert set(skipped) == {"notes.txt", "empty/", "weights.pt"}
    assert "suffix .txt" in skipped["notes.txt"] and "without a weights file" in skipped["empty/"]
    assert "--steps-from" in skipped["weights.pt"]


def test_steps_from_regex(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for name in ("ckpt_a7.pt", "ckpt_a12.pt", "other.pt"):
        torch.save(state(0), d / name)
    found = discover(d, steps_from=r"ckpt_a(?P<step>\d+)")
    assert [(c.step, c.step_from) for c in found.checkpoints] == [(7, "--steps-from"), (12, "--steps-from")]
    assert [s.name for s in found.skipped] == ["other.pt"]
    with pytest.raises(DiscoveryError, match="no group"):
        discover(d, steps_from=r"ckpt_a\d+")
    with pytest.raises(DiscoveryError, match="not a regular expression"):
        discover(d, steps_from="(")


def test_dry_run_lists_found_and_skipped_and_measures_nothing(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    torch.save(state(0), d / "step-0.pt")
    torch.save(state(1), d / "step-8.pt")
    torch.save(state(2), d / "checkpoint-8.pt")  # the same step twice
    (d / "readme.md").write_text("x")
    res = runner.invoke(app, ["analyze", str(d), "--dry-run", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    for text in ("3 checkpoint(s)", "step-0.pt", "step-8.pt", "torch", "skipped (1)", "readme.md", "suffix .md",
                 "steps found more than once: 8"):
        assert text in res.output
    assert not (tmp_path / "out").exists()


def test_missing_folder_and_empty_folder_are_one_line_errors(tmp_path):
    res = runner.invoke(app, ["analyze", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["analyze", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no checkpoints found" in res.output and "--dry-run" in res.output
    assert not (tmp_path / "o").exists()
