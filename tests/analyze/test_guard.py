"""The integrity guard: every kind of finding, named in phases.json, the summary and report.html;
a corrupt file is skipped while the others are measured; --strict refuses with exit 2."""
import json

import pytest
import torch
from typer.testing import CliRunner

from phasescope.interfaces.analyze import IntegrityRefused, analyze
from phasescope.interfaces.cli import app

from .helpers import TINY_ARGS, save_steps, state, tiny_cfg

runner = CliRunner()


def troubled(folder):
    """A checkpoint folder with one problem of every kind, each at its own step."""
    folder.mkdir()
    torch.save(state(0), folder / "step-0.pt")
    torch.save(state(0), folder / "step-1.pt")  # identical to step 0
    torch.save(state(2), folder / "step-2.pt")
    torch.save(state(3), folder / "checkpoint-2.pt")  # step 2 again, other weights
    torch.save({"model": state(4), "step": 5}, folder / "step-4.pt")  # records another step
    torch.save({"model": state(8), "step": 3}, folder / "step-8.pt")  # ... and one that goes back
    sd = state(16)
    del sd["head.1.bias"]
    torch.save(sd, folder / "step-16.pt")  # a key missing
    torch.save({**state(32), "extra.weight": torch.zeros(3)}, folder / "step-32.pt")  # a key too many
    sd = state(64)
    sd["head.1.weight"] = torch.zeros(10, 7)
    torch.save(sd, folder / "step-64.pt")  # does not fit the model
    sd = state(128)
    sd["features.0.0.weight"] = sd["features.0.0.weight"].half()
    torch.save(sd, folder / "step-128.pt")  # another dtype
    sd = state(256)
    sd["features.1.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, folder / "step-256.pt")  # diverged
    torch.save(state(512), folder / "step-512.pt")
    raw = (folder / "step-512.pt").read_bytes()
    (folder / "step-512.pt").write_bytes(raw[: len(raw) // 2])  # truncated
    return folder


def test_every_finding_is_reported_and_the_unusable_are_skipped(tmp_path):
    ckpts = troubled(tmp_path / "ckpts")
    result = analyze(ckpts, tiny_cfg(), tmp_path / "out", progress=False)
    kinds = {f.kind: f for f in result.findings}
    assert set(kinds) == {"identical", "repeated-step", "step-mismatch", "order", "missing-keys", "extra-keys",
                          "shape", "dtype", "non-finite", "corrupt"}
    assert kinds["identical"].steps == [0, 1]
    assert kinds["repeated-step"].steps == [2] and "DIFFERENT" in kinds["repeated-step"].message
    assert [f.steps for f in result.findings if f.kind == "step-mismatch"] == [[4], [8]]
    assert kinds["order"].steps == [4, 8]
    assert kinds["missing-keys"].steps == [16] and "head.1.bias" in kinds["missing-keys"].message
    assert kinds["extra-keys"].steps == [32] and "extra.weight" in kinds["extra-keys"].message
    assert kinds["shape"].steps == [64] and "(10, 7)" in kinds["shape"].message
    assert kinds["dtype"].steps == [128] and "float16" in kinds["dtype"].message
    assert kinds["non-finite"].steps == [256] and "features.1.0.weight" in kinds["non-finite"].message
    assert kinds["corrupt"].steps == [512] and "step-512.pt" in kinds["corrupt"].message
    # measured: all but the misfit, the diverged and the corrupt one; step 2 from its first entry by name
    payload = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert payload["checkpoints"] == [0, 1, 2, 4, 8, 16, 32, 128] and payload["status"] == "complete"
    status = {c["name"]: c["status"] for c in payload["analyze"]["checkpoints"]}
    assert status["checkpoint-2.pt"] == "measured" and status["step-2.pt"] == "skipped"  # the first by name
    assert status["step-64.pt"] == status["step-256.pt"] == status["step-512.pt"] == "skipped"
    for kind in kinds:  # in phases.json's warnings and report.html, with the kind and the steps
        assert any(f"checkpoint integrity ({kind})" in w for w in payload["warnings"])
        assert f"checkpoint integrity ({kind})" in (tmp_path / "out" / "report.html").read_text()
    # phasescope report recomputes the warnings from the metrics: the guard's are kept
    assert runner.invoke(app, ["report", str(tmp_path / "out")]).exit_code == 0
    rebuilt = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert [w for w in rebuilt["warnings"] if "integrity" in w] == [w for w in payload["warnings"] if "integrity" in w]


def test_corrupt_file_is_named_and_skipped_while_the_others_are_measured(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1, 2, 4])
    (ckpts / "step-2.pt").write_bytes(b"not a checkpoint at all")
    res = runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "checkpoint integrity (corrupt)" in res.output and "step-2.pt" in res.output
    payload = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert payload["checkpoints"] == [0, 1, 4]
    assert payload["analyze"]["findings"][0]["names"] == ["step-2.pt"]


def test_strict_refuses_with_exit_2_and_writes_nothing(tmp_path):
    ckpts = save_steps(tmp_path / "ckpts", [0, 1, 2])
    torch.save(state(0), ckpts / "step-4.pt")  # identical to step 0
    res = runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--strict", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "--strict" in res.output and "(identical)" in res.output and "steps 0, 4" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
    with pytest.raises(IntegrityRefused) as e:
        analyze(ckpts, tiny_cfg(), tmp_path / "out", strict=True, progress=False)
    assert [f.kind for f in e.value.findings] == ["identical"]
    # without findings --strict measures
    (ckpts / "step-4.pt").unlink()
    res = runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--strict", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output


def test_nothing_measurable_is_exit_1_with_the_reason(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    torch.save(torch.nn.Linear(2, 2), ckpts / "step-0.pt")  # a whole pickled module
    res = runner.invoke(app, ["analyze", str(ckpts), *TINY_ARGS, "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert "--allow-pickle" in res.output and "step-0.pt" in res.output


def test_a_checkpoint_whose_measurement_fails_is_recorded_and_the_others_measured(tmp_path):
    """Finite weights so large that the activations overflow pass the guard and fail in the
    measurement: that checkpoint is named in the warnings; the phases use the others."""
    ckpts = save_steps(tmp_path / "ckpts", [0, 1, 2, 4])
    sd = state(1)
    sd["head.1.weight"] = torch.full_like(sd["head.1.weight"], 3e38)  # finite; logits overflow to inf
    torch.save(sd, ckpts / "step-1.pt")
    result = analyze(ckpts, tiny_cfg(), tmp_path / "out", progress=False)
    assert result.outcomes[1]["status"] == "failed" and not result.findings
    payload = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert payload["checkpoints"] == [0, 2, 4] and payload["status"] == "complete"
    assert any("measurement failed at step 1" in w for w in payload["warnings"])
    assert payload["analyze"]["failed"] == {"1": result.outcomes[1]["message"]}
