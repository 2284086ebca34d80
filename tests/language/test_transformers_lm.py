"""PhaseScopeCallback with a Hugging Face causal LM: a tiny GPT-2 built from a config (no download),
trained by the Trainer for a few steps on Tiny Shakespeare windows, measured on token inputs."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'phasescope[transformers]')")
pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install 'phasescope[transformers]')")
from transformers import AutoModelForCausalLM, GPT2Config, Trainer, TrainingArguments  # noqa: E402

from phasescope import log_schedule  # noqa: E402
from phasescope.data import load_dataset  # noqa: E402
from phasescope.interfaces.integrations.transformers import PhaseScopeCallback, transformer_blocks  # noqa: E402
from phasescope.outputs.runs import read_json  # noqa: E402

STEPS, CONTEXT = 8, 32


class Windows(torch.utils.data.Dataset):
    """What a causal LM's Trainer expects: items {input_ids, labels} (the model shifts the labels)."""

    def __init__(self, x, y):
        self.ids = torch.cat([x, y[:, None]], 1)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.fixture(scope="module")
def text():
    return load_dataset("shakespeare", context=CONTEXT)


def tiny_gpt2(vocab: int):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab,
                                                       n_positions=64, bos_token_id=0, eos_token_id=0))


def test_causal_lm_with_the_trainer_callback_writes_a_run_folder(text, tmp_path):
    g = torch.Generator().manual_seed(0)
    train_rows = torch.randint(0, len(text.y_train), (256,), generator=g)
    fit_rows, test_rows = torch.arange(0, 40_000, 200), torch.arange(0, 10_000, 100)  # 200 and 100 windows
    model = tiny_gpt2(text.num_classes)
    assert transformer_blocks(model) == ["transformer.h.0", "transformer.h.1"]
    cb = PhaseScopeCallback(fit_data=(text.x_train[fit_rows], text.y_train[fit_rows]),
                            test_data=Windows(text.x_test[test_rows], text.y_test[test_rows]),  # items work too
                            out=tmp_path / "run", bootstrap=50)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=STEPS, per_device_train_batch_size=16,
                             learning_rate=1e-3, use_cpu=True, disable_tqdm=True, seed=0, report_to=[],
                             save_strategy="no", logging_steps=4)
    Trainer(model=model, args=args, train_dataset=Windows(text.x_train[train_rows], text.y_train[train_rows]),
            callbacks=[cb]).train()
    d = cb.tracker.describe()
    assert d["layers"] == ["transformer.h.0", "transformer.h.1"] and d["tokens"] == "last"
    assert d["forward"] == "causal_lm_forward" and d["target"]["vocab_size"] == 65
    assert cb.tracker.measured == log_schedule(STEPS)
    for f in ("config.json", "metrics.csv", "errors.npz", "phases.json", "curves.png"):
        assert (tmp_path / "run" / f).exists(), f
    df = pd.read_csv(tmp_path / "run" / "metrics.csv")
    rec = df[(df.metric == "token_recovery") & (df.split == "test")]
    assert sorted(rec.layer.unique()) == ["transformer.h.0", "transformer.h.1"]
    assert sorted(rec.iteration.unique()) == log_schedule(STEPS)
    assert rec.value.gt(0.5).all()  # the residual stream at the last position carries its token
    assert read_json(tmp_path / "run" / "phases.json")["checkpoints"] == log_schedule(STEPS)
