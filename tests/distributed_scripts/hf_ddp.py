"""A Hugging Face Trainer under ``torchrun --nproc_per_node 2`` (DDP on gloo, CPU) with two
PhaseScopeCallbacks on the same model: sharded (the default) and ``distributed=False`` (process zero
alone): their run folders must agree. Then a second Trainer resumes from checkpoint-8 on every rank.

    hf_ddp.py OUT

OUT/sharded, OUT/single: run folders of the first training (16 steps, checkpoints every 8);
OUT/rank<r>.json: what each rank holds, the callback resumed at step 8 too.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from phasescope.data import load_dataset
from phasescope.interfaces.integrations.transformers import PhaseScopeCallback

SCHEDULE = [0, 1, 2, 4, 8, 16]


class PixelDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def vit():
    torch.manual_seed(0)
    return ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=32,
                                               num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                               num_labels=10))


def callback(data, out: Path, **kw):
    return PhaseScopeCallback(layers=["vit.layers.1"], fit_data=(data.x_train[:300], data.y_train[:300]),
                              test_data=(data.x_test[:150], data.y_test[:150]), schedule=SCHEDULE, out=out,
                              bootstrap=100, batch_size=64, **kw)


def train(data, out: Path, callbacks, resume=None):
    args = TrainingArguments(output_dir=str(out / "hf"), max_steps=16, per_device_train_batch_size=16,
                             learning_rate=1e-3, use_cpu=True, disable_tqdm=True, seed=0, logging_steps=4,
                             report_to=[], save_strategy="steps", save_steps=8, ddp_backend="gloo")
    trainer = Trainer(model=vit(), args=args, train_dataset=PixelDataset(data.x_train[:512], data.y_train[:512]),
                      callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def main() -> None:
    out = Path(sys.argv[1])
    warnings.simplefilter("ignore")
    data = load_dataset("digits")
    first = [callback(data, out / "sharded"), callback(data, out / "single", prefix="single", distributed=False)]
    trainer = train(data, out, first)
    resumed = callback(data, None)
    train(data, out, [resumed], resume=str(out / "hf" / "checkpoint-8"))
    rank = trainer.args.process_index
    logged = [k for entry in trainer.state.log_history for k in entry if k.startswith("phasescope/")]
    (out / f"rank{rank}.json").write_text(json.dumps({
        "sharded": first[0].tracker.results().to_dict("records"),
        "single": None if first[1].tracker is None else first[1].tracker.results().to_dict("records"),
        "resumed": resumed.tracker.results().to_dict("records"),
        "logged": len(logged),
        "world": trainer.args.world_size,
    }, default=float))


if __name__ == "__main__":
    main()
