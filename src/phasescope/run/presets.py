"""Named configurations: the papers' settings at CPU-friendly and at full scale.

``phasescope run --preset NAME`` starts from the preset; any other option overrides it.
Runtimes are wall-clock on 2 CPU cores unless marked GPU (see README, measured figures).
"""
from __future__ import annotations

from .models import TRAINING_DEFAULTS
from ..config import ConfigError, RunConfig

PRESETS: dict[str, dict] = {
    "mnist-cnn": {
        "about": "The default: small CNN on the embedded 5,000 MNIST digits. CPU: about 2 min with one free core (31 ms/step).",
        "config": {},
    },
    "digits-mlp": {
        "about": "MLP on scikit-learn's 8x8 digits. CPU: under a minute.",
        "config": {"dataset": "digits", "model": "mlp", "iterations": 2048, "lr": 0.01, "layers": ["features.3"]},
    },
    "cifar10-vgg8": {
        "about": "VGG-8 at half width on CIFAR-10 (10,000 training images: pass the subset or --train-size), "
                 "SGD lr 0.002, momentum 0.9, batch 128, last block tracked. GPU (H200): 28 s measured; "
                 "CPU: about 4 min, estimated from 37 ms/step.",
        "config": {"dataset": "cifar10", "model": "vgg8", "width": 0.5, "lr": 0.002, "train_size": 10000,
                   "iterations": 4096, "fit_samples": 4000, "test_samples": 2000},
    },
    "cifar10-vgg8-full": {
        "about": "The published setting: full-width VGG-8 on CIFAR-10 to 65,536 iterations. GPU (H200): 195 s measured "
                 "on the 10,000-image subset; CPU: hours (0.14 s/step).",
        "config": {"dataset": "cifar10", "model": "vgg8", "width": 1.0, "lr": 0.002, "iterations": 65536,
                   "fit_samples": 10000, "test_samples": 10000},
    },
    "fashion-vgg11": {
        "about": "VGG-11 at quarter width on Fashion-MNIST (10,000 training images), lr 0.002; reads Debian's "
                 "files without --data-dir (apt-get install dataset-fashion-mnist). CPU, one thread: 3.5-5.5 min "
                 "at 2,048 iterations on a busy 2-core machine (docs/results.md), so about 7-11 min as set.",
        "config": {"dataset": "fashion-mnist", "model": "vgg11", "width": 0.25, "lr": 0.002, "train_size": 10000,
                   "iterations": 4096, "fit_samples": 4000, "test_samples": 2000},
    },
    "cifar100-resnet10": {
        "about": "ResNet-10 at quarter width on CIFAR-100 (10,000 training images), lr 0.002; the last block is "
                 "pooled to 512 features (max_features 1024) so the decoder has 8x more fit samples than features. "
                 "CPU: about 20 min (0.26 s/step); GPU: under a minute (ResNet-10 on CIFAR-10 measured 3 seeds in ~2 min).",
        "config": {"dataset": "cifar100", "model": "resnet10", "width": 0.25, "lr": 0.002, "train_size": 10000,
                   "iterations": 4096, "fit_samples": 4000, "test_samples": 2000, "max_features": 1024},
    },
    "shakespeare-gpt": {
        "about": "The zoo's GPT (4 layers, 128 dims, 4 heads, context 64) on the embedded Tiny Shakespeare, "
                 "characters as tokens, every block tracked; AdamW lr 1e-3 with 100 warm-up steps, batch 32. "
                 "CPU (one thread): about 1.3 s/step on a busy 2-core machine (docs/language.md).",
        "config": {"dataset": "shakespeare", "model": "gpt", "iterations": 4096, "fit_samples": 4000,
                   "test_samples": 2000, "optimizer": "adamw", "lr": 1e-3, "warmup": 100, "weight_decay": 0.1,
                   "batch_size": 32},  # the training defaults spelled out: sweep files read presets as they are
    },
}


def preset_config(name: str | None, overrides: dict) -> RunConfig:
    """The preset's configuration with ``overrides`` (options the user gave) on top; under both, the
    training defaults of the model they name (``models.TRAINING_DEFAULTS``: AdamW with warm-up for gpt)."""
    base = RunConfig().to_dict()
    if name is not None and name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}.")
    given = {**(PRESETS[name]["config"] if name is not None else {}), **{k: v for k, v in overrides.items() if v is not None}}
    base.update(TRAINING_DEFAULTS.get(given.get("model", base["model"]), {}))
    if name is not None:
        base.update(PRESETS[name]["config"])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig.from_dict(base)
