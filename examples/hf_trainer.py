"""phasescope in a Hugging Face Trainer: a callback measures a ViT image classifier's phases.

    pip install "phasescope[transformers]"
    python examples/hf_trainer.py                 # < 1 min on CPU: a tiny ViT built from a config (no download)
    python examples/hf_trainer.py --steps 8       # a smoke test

The model is called as model(pixel_values=x) and its .logits measured (the callback's default
forward). Metrics go through Trainer.log (to report_to's integrations and trainer.state.log_history);
the run folder to runs/hf-example/phases.
"""
import argparse

import torch
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from phasescope.data import load_dataset
from phasescope.interfaces.integrations.transformers import PhaseScopeCallback


class PixelDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=512)
    p.add_argument("--out", default="runs/hf-example")
    p.add_argument("--overwrite", action="store_true", help="replace the run of an earlier call in --out")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, num_labels=data.num_classes))
    callback = PhaseScopeCallback(
        layers=["vit.layers.0", "vit.layers.1"],     # (batch, 17 tokens, 48): the mean token by default (tokens=...)
        fit_data=PixelDataset(data.x_train, data.y_train), test_data=(data.x_test, data.y_test),
        out=f"{a.out}/phases",
        overwrite=a.overwrite,                       # a folder holding a run is refused without it
    )
    args = TrainingArguments(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=64, learning_rate=1e-3,
                             logging_steps=64, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             seed=0)
    Trainer(model=model, args=args, train_dataset=PixelDataset(data.x_train, data.y_train),
            callbacks=[callback]).train()
    for layer, r in callback.tracker.phases().items():
        print(layer, ", ".join(f"{q.name} {q.start}-{q.end}" for q in r.phases),
              f"| min at {r.min_iteration}, decrease {r.relative_decrease.value:.1%}, "
              f"increase {r.relative_increase.value:.1%}")
    print(f"run folder {a.out}/phases")


if __name__ == "__main__":
    main()
