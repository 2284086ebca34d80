"""Every checkpoint format measures the same weights to the same numbers: plain state_dicts,
training-loop dicts with a DDP prefix, safetensors, Lightning's layout (prefix stripped), whole
pickled modules (only with --allow-pickle), and Hugging Face save_pretrained folders (--hf)."""
import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from phasescope.interfaces.analyze import analyze, Source
from phasescope.interfaces.cli import app

from .helpers import TINY_ARGS, model, save_steps, state, tiny_cfg

runner = CliRunner()
STEPS = [0, 3, 10]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The reference: plain state_dicts, measured once."""
    root = tmp_path_factory.mktemp("plain")
    analyze(save_steps(root / "ckpts", STEPS), tiny_cfg(), root / "out", progress=False)
    return pd.read_csv(root / "out" / "metrics.csv")


def same_metrics(out, plain):
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), plain, rtol=1e-5)


def test_training_loop_dicts_with_a_ddp_prefix(tmp_path, plain):
    wrap = lambda sd, s: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"state": {}}, "step": s}
    result = analyze(save_steps(tmp_path / "c", STEPS, "ckpt_{}.pth", wrap=wrap), tiny_cfg(), tmp_path / "out",
                     progress=False, steps_from=r"ckpt_(\d+)")
    assert not result.findings  # the recorded step agrees, the prefix is stripped
    same_metrics(tmp_path / "out", plain)


def test_safetensors(tmp_path, plain):
    save_file = pytest.importorskip("safetensors.torch").save_file

    (tmp_path / "c").mkdir()
    for i, s in enumerate(STEPS):
        save_file(state(i), str(tmp_path / "c" / f"step{s}.safetensors"))
    result = analyze(tmp_path / "c", tiny_cfg(), tmp_path / "out", progress=False)
    assert [c["name"] for c in json.loads((tmp_path / "out" / "config.json").read_text())["integration"]["discovered"]] \
        == ["step0.safetensors", "step3.safetensors", "step10.safetensors"] and not result.findings
    same_metrics(tmp_path / "out", plain)


def test_lightning_layout_with_global_step(tmp_path, plain):
    """A .ckpt as Lightning writes it: state_dict under 'state_dict' with the module's attribute
    prefix, global_step recorded (here the only source of the step for last.ckpt)."""
    (tmp_path / "c").mkdir()
    for i, s in enumerate(STEPS):
        ckpt = {"epoch": 0, "global_step": s, "pytorch-lightning_version": "2.6.6",
                "state_dict": {f"model.{k}": v for k, v in state(i).items()}, "optimizer_states": [], "loops": {}}
        torch.save(ckpt, tmp_path / "c" / ("last.ckpt" if s == 10 else f"epoch=0-step={s}.ckpt"))
    result = analyze(tmp_path / "c", tiny_cfg(), tmp_path / "out", progress=False)
    assert not result.findings
    assert json.loads((tmp_path / "out" / "config.json").read_text())["integration"]["discovered"][-1]["step_from"] \
        == "global_step"
    same_metrics(tmp_path / "out", plain)


def test_whole_pickled_modules_only_with_allow_pickle(tmp_path, plain):
    (tmp_path / "c").mkdir()
    for i, s in enumerate(STEPS):
        torch.save(model(i), tmp_path / "c" / f"step-{s}.pt")
    res = runner.invoke(app, ["analyze", str(tmp_path / "c"), *TINY_ARGS, "--out", str(tmp_path / "refused")])
    assert res.exit_code == 1 and "--allow-pickle" in res.output
    res = runner.invoke(app, ["analyze", str(tmp_path / "c"), *TINY_ARGS, "--allow-pickle", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    same_metrics(tmp_path / "out", plain)


def test_hugging_face_folders_with_trainer_state(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32, num_labels=10)
    ckpts = tmp_path / "hf-run"
    for i, s in enumerate([0, 4, 8]):
        torch.manual_seed(i)
        folder = ckpts / f"checkpoint-{s}"
        transformers.ViTForImageClassification(config).save_pretrained(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": s, "log_history": []}))
    (ckpts / "runs").mkdir()  # the Trainer's TensorBoard folder: not a checkpoint
    res = runner.invoke(app, ["analyze", str(ckpts), "--dry-run"])
    assert res.exit_code == 0 and "hf (model.safetensors)" in res.output and "runs/" in res.output
    res = runner.invoke(app, ["analyze", str(ckpts), *[a for a in TINY_ARGS if a != "--width" and a != "0.5"],
                              "--hf", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    payload = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert payload["checkpoints"] == [0, 4, 8] and not payload["analyze"]["findings"]
    doc = json.loads((tmp_path / "out" / "config.json").read_text())
    assert doc["model"]["name"] == "hf:ViTForImageClassification"
    assert doc["measurement"]["layers"]  # a layer of the ViT, found as for any model
    df = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert df.value.notna().all() and set(df.iteration) == {0, 4, 8}


def test_allow_pickle_is_never_implied_by_an_earlier_call(tmp_path):
    (tmp_path / "c").mkdir()
    torch.save(state(0), tmp_path / "c" / "step-0.pt")
    torch.save(model(1), tmp_path / "c" / "step-1.pt")  # a pickled module
    out = str(tmp_path / "out")
    res = runner.invoke(app, ["analyze", str(tmp_path / "c"), *TINY_ARGS, "--out", out])
    assert res.exit_code == 0 and "(corrupt)" in res.output and "--allow-pickle" in res.output
    res = runner.invoke(app, ["analyze", str(tmp_path / "c"), "--out", out, "--allow-pickle"])
    assert res.exit_code == 0, res.output
    assert "1 in this call, 1 earlier" in res.output  # the refused file is read again, now allowed
    torch.save(model(2), tmp_path / "c" / "step-2.pt")
    res = runner.invoke(app, ["analyze", str(tmp_path / "c"), "--out", out])
    assert res.exit_code == 0 and "step-2.pt" in res.output and "(corrupt)" in res.output
    assert json.loads((tmp_path / "out" / "phases.json").read_text())["checkpoints"] == [0, 1]
