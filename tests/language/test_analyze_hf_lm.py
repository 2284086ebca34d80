"""``phasescope analyze --hf`` of a Hugging Face causal LM: checkpoint folders written by
``save_pretrained`` of an ``AutoModelForCausalLM`` built from a config (a tiny GPT-2, no download)
are loaded by the real ``from_pretrained`` code and measured on Tiny Shakespeare like
``phasescope run --model gpt``: every block, the one-hot of the last token, the next-token logits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'phasescope[transformers]')")

from phasescope.interfaces.cli import app  # noqa: E402
from phasescope.data import load_dataset  # noqa: E402
from phasescope.data.subsets import measurement_indices  # noqa: E402

runner = CliRunner()
CONTEXT, STEPS = 16, [0, 2, 5]
ARGS = ["--dataset", "shakespeare", "--context", str(CONTEXT), "--fit-samples", "300", "--test-samples", "120",
        "--bootstrap", "50", "--no-reconstructions", "--quiet"]  # the per-window dynamics ("the few") on


def tiny_gpt2(seed: int):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=65, n_positions=CONTEXT,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.AutoModelForCausalLM.from_config(config)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Trainer-style folders checkpoint-N/ (save_pretrained and trainer_state.json), one seed per step."""
    root = tmp_path_factory.mktemp("hf-lm") / "ckpts"
    for i, s in enumerate(STEPS):
        folder = root / f"checkpoint-{s}"
        tiny_gpt2(i).save_pretrained(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": s, "log_history": []}))
    return root


def test_analyze_hf_measures_a_causal_lm_from_save_pretrained_folders(checkpoints, tmp_path):
    res = runner.invoke(app, ["analyze", str(checkpoints), "--dry-run"])
    assert res.exit_code == 0 and "hf (model.safetensors)" in res.output, res.output
    out = tmp_path / "out"
    res = runner.invoke(app, ["analyze", str(checkpoints), *ARGS, "--hf", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "config.json").read_text())
    assert doc["model"]["name"] == "hf:GPT2LMHeadModel"
    m = doc["measurement"]
    assert m["layers"] == ["transformer.h.0", "transformer.h.1"]  # every block, as the callback tracks them
    assert m["forward"] == "causal_lm_forward" and m["tokens"] == "last" and m["input_span"] == "off"
    assert m["target"]["vocab_size"] == 65 and m["target"]["token_window"] == 1
    assert set(doc["data"]["measured_windows"]) >= {"fit", "test"}
    assert not json.loads((out / "phases.json").read_text())["analyze"]["findings"]

    df = pd.read_csv(out / "metrics.csv")
    assert df.value.notna().all() and sorted(df.iteration.unique()) == STEPS
    rec = df[(df.metric == "token_recovery") & (df.split == "test")]
    assert sorted(rec.layer.unique()) == ["transformer.h.0", "transformer.h.1"] and len(rec) == 2 * len(STEPS)
    assert rec.value.gt(0.5).all()  # an untrained residual stream at the last position still carries its token
    # the few: the head's input is taken at the last position, where the logits are read (GPT-2 applies
    # its lm_head at every position), so the closed-form last-layer gradient applies
    assert {"grad_share_top10", "misclassified_fraction"} <= set(df.metric) and (out / "samples.npz").exists()
    marks = json.loads((out / "phases.json").read_text())["samples"]["marks"]
    assert set(marks) == {"target_frequency", "continuation_probability"}

    # the model rows are the next-token loss of the last position, computed here from the folder itself
    data = load_dataset("shakespeare", context=CONTEXT)
    _, test = measurement_indices(data, 300, 120, 0)
    x, y = data.x_test[test], data.y_test[test]
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints / "checkpoint-5", local_files_only=True)
    with torch.no_grad():
        loss = F.cross_entropy(model.eval()(input_ids=x).logits[:, -1], y).item()
    row = df.query("iteration == 5 and layer == 'model' and split == 'test' and metric == 'loss'").value
    assert np.isclose(row.item(), loss, rtol=1e-4)
