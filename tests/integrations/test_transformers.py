"""PhaseScopeCallback with a real Hugging Face Trainer on the CPU: a tiny ViT built from a config
(no download), trained for 16 steps on the embedded 8x8 digits."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'phasescope[transformers]')")
pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install 'phasescope[transformers]')")
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification  # noqa: E402

from phasescope import log_schedule  # noqa: E402
from phasescope.data import load_dataset  # noqa: E402
from phasescope.interfaces.integrations.transformers import PhaseScopeCallback  # noqa: E402
from phasescope.outputs.runs import read_json  # noqa: E402

STEPS = 16
KEY = "phasescope/vit.layers.1/test/reconstruction_mse"


class PixelDataset(torch.utils.data.Dataset):
    """What the Trainer expects: items {pixel_values, labels}."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def vit():
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=32,
                                               num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                               num_labels=10))


def train(digits, tmp_path, callbacks=(), **args):
    model = vit()
    targs = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=STEPS, per_device_train_batch_size=32,
                              learning_rate=1e-3, use_cpu=True, disable_tqdm=True, seed=0,
                              **{"logging_steps": 4, "report_to": [], "save_strategy": "no", **args})
    trainer = Trainer(model=model, args=targs, train_dataset=PixelDataset(digits.x_train[:512], digits.y_train[:512]),
                      callbacks=list(callbacks))
    trainer.train()
    return model, trainer


def callback(digits, **kw):
    fit = PixelDataset(digits.x_train[:300], digits.y_train[:300])  # the Trainer's kind of dataset works too
    return PhaseScopeCallback(layers=["vit.layers.1"], fit_data=fit, test_data=(digits.x_test[:150], digits.y_test[:150]),
                              bootstrap=50, **kw)


def test_callback_measures_logs_and_never_changes_training(digits, tmp_path):
    plain, _ = train(digits, tmp_path / "a")
    cb = callback(digits, out=tmp_path / "run")
    tracked, trainer = train(digits, tmp_path / "b", [cb], report_to=["tensorboard"])
    for (k, a), b in zip(plain.state_dict().items(), tracked.state_dict().values()):
        assert torch.equal(a, b), k
    assert cb.tracker.measured == log_schedule(STEPS)
    d = cb.tracker.describe()
    assert d["tokens"] == "mean" and d["layer_shapes"]["vit.layers.1"] == [5, 32]
    assert d["forward"] == "pixel_values_forward"
    # logged through Trainer.log: in the history, at the global step ...
    hist = [h for h in trainer.state.log_history if KEY in h]
    assert [h["step"] for h in hist] == log_schedule(STEPS)
    # ... and so in the report_to integrations (here the Trainer's TensorBoard callback)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_file = next((tmp_path / "b" / "hf").rglob("events.out.tfevents*"))  # output_dir/runs/<date-host>/
    acc = EventAccumulator(str(event_file.parent), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/" + KEY)] == log_schedule(STEPS)  # the Trainer adds "train/"
    for f in ("config.json", "metrics.csv", "errors.npz", "phases.json", "curves.png"):
        assert (tmp_path / "run" / f).exists(), f
    assert read_json(tmp_path / "run" / "phases.json")["checkpoints"] == log_schedule(STEPS)


def test_a_measured_step_keeps_the_trainers_own_log(digits, tmp_path):
    """Trainer.log clears control.should_log: the loss log due at a measured step (4, 8, 16 here) must
    still happen (under DDP the other processes would otherwise gather the loss alone and hang)."""
    _, trainer = train(digits, tmp_path, [callback(digits)])
    losses = [h["step"] for h in trainer.state.log_history if "loss" in h]
    assert losses == [4, 8, 12, 16]


def test_resume_reads_the_state_saved_beside_the_checkpoint(digits, tmp_path):
    first = callback(digits)
    train(digits, tmp_path, [first], save_strategy="steps", save_steps=8)
    assert (tmp_path / "hf" / "checkpoint-8" / "phasescope_tracker.pt").exists()
    again = callback(digits)
    model = vit()
    targs = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=STEPS, per_device_train_batch_size=32,
                              learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                              seed=0)
    Trainer(model=model, args=targs, train_dataset=PixelDataset(digits.x_train[:512], digits.y_train[:512]),
            callbacks=[again]).train(resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-8"))
    assert again.tracker.measured == log_schedule(STEPS)
    assert all(again.tracker.timings[t] == first.tracker.timings[t] for t in (0, 1, 2, 4, 8))  # not re-measured
