"""Classifiers phasescope trains and measures, and the names of their trackable layers.

Every image/tabular model has a ``features`` ``nn.Sequential`` of blocks and a ``head``; a
block's module name (``features.3``) is the natural layer to track: its output is what the
next block sees. The language model ``gpt`` (:mod:`phasescope.run.gpt`) takes windows of token ids
and has ``blocks.0`` ... ``blocks.3``, all tracked by default. Any module name from
``model.named_modules()`` can be tracked.

Build with :func:`build_model`; list names and output shapes with :func:`trackable_layers`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import ModelError
from .gpt import GPT, gpt
from ..engine.layers import (
    build_foreign, dry_run, foreign_default_layer, foreign_trackable_layers, preserved_modes, resolve_layers,
    transformer_blocks,
)

__all__ = ["ModelError", "build_model", "default_layers", "output_shapes", "preserved_modes", "resolve_layers",
           "trackable_layers"]


def conv_block(c_in: int, c_out: int, stride: int = 2) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU: the unit of the VGG family."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _scaled(channels: int, width: float) -> int:
    """Channel count ``channels`` times the width multiplier (at least 4)."""
    return max(4, int(round(channels * width)))


class Classifier(nn.Module):
    """``features`` (a Sequential of blocks), then ``head`` ([pool,] flatten, linear)."""

    def __init__(self, features: nn.Sequential, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _flat_dim(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad(), preserved_modes(features):
        features.eval()
        out = features(torch.zeros(1, *input_shape))
    return int(out[0].numel())


def mlp(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, depth: int = 3) -> Classifier:
    """Fully connected net: ``depth`` hidden layers of ``256*width`` units with ReLU."""
    d_in = 1
    for s in input_shape:
        d_in *= s
    hidden = max(8, int(round(256 * width)))
    blocks: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        blocks.append(nn.Sequential(nn.Linear(d_in if i == 0 else hidden, hidden), nn.ReLU(inplace=True)))
    return Classifier(nn.Sequential(*blocks), nn.Linear(hidden, num_classes))


def small_cnn(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> Classifier:
    """Four stride-2 conv blocks (16-32-64-64 channels at width 1): the CPU-sized default."""
    if len(input_shape) != 3:
        raise ModelError(f"cnn needs image inputs (C, H, W); got input shape {input_shape}.")
    widths = [_scaled(w, width) for w in (16, 32, 64, 64)]
    chans = [input_shape[0], *widths]
    features = nn.Sequential(*[conv_block(chans[i], chans[i + 1]) for i in range(4)])
    return Classifier(features, nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(features, input_shape), num_classes)))


# VGG channel plans, from the authors' research code for arXiv 2312.06887
# (github.com/JohnTailor/LearnPhase, models.py, class ``Classifier``). Each entry is one
# 3x3 conv-BN-ReLU block: a bare int ``w`` is a stride-2 block of width ``w``, a pair
# ``(w, 1)`` a stride-1 block; ``"M"`` (kept for custom plans) is a 2x2 max-pool.
# As in that code, the VGGs downsample with stride-2 convolutions, not max-pools, five
# times in every plan: 32x32 inputs end at 1x1 (28x28 ones too: 28-14-7-4-2-1), so the
# last block has 512*width features, like VGG-8's. The widths are narrower than the
# ImageNet VGGs (32..512 instead of 64..512), and the head is one linear layer instead
# of three (the conv counts, 8/10/13, are the standard ones). VGG-8 is five stride-2
# blocks (32-64-128-256-512), as in the published method.
VGG_PLANS: dict[str, list] = {
    "vgg8": [32, 64, 128, 256, 512],
    "vgg11": [32, 64, (128, 1), 128, (256, 1), 256, (512, 1), 512],
    "vgg13": [32, (32, 1), 64, (128, 1), 128, (256, 1), 256, (512, 1), (512, 1), 512],
    "vgg16": [(32, 1), 32, (64, 1), 64, (128, 1), (128, 1), 128, (256, 1), (256, 1), 256,
              (512, 1), (512, 1), 512],
}


def vgg(plan: list, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> Classifier:
    """VGG from a channel plan (see ``VGG_PLANS``): one child of ``features`` per entry."""
    if len(input_shape) != 3:
        raise ModelError(f"VGG needs image inputs (C, H, W); got input shape {input_shape}.")
    layers: list[nn.Module] = []
    c = input_shape[0]
    for v in plan:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        w, stride = (v, 2) if isinstance(v, int) else v
        layers.append(conv_block(c, _scaled(w, width), stride=stride))
        c = _scaled(w, width)
    features = nn.Sequential(*layers)
    return Classifier(features, nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(features, input_shape), num_classes)))


class BasicBlock(nn.Module):
    """Residual block: two 3x3 conv-BN (ReLU between), identity or 1x1-conv-BN shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet10(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> Classifier:
    """ResNet-10 for small images: a 3x3 stem (64*width, stride 1), then four stages of one
    BasicBlock each (64-128-256-512 times width, strides 1,2,2,2), global average pool and
    a linear head.

    ``features`` = [stem, stage1, stage2, stage3, stage4]; ``head`` = [avg-pool, flatten,
    linear], so ``head.0`` (the pooled 512*width features) is trackable too. The default
    layer is the last stage (512*width x 4 x 4 on 32x32 and on 28x28 inputs). The
    authors' research code imports a ``resnet.R10`` that is not in their repository;
    this is the standard CIFAR-style layout (conv1 + 4 stages, 8 convs + head = 10 layers
    with weights, shortcuts not counted).
    """
    if len(input_shape) != 3:
        raise ModelError(f"resnet10 needs image inputs (C, H, W); got input shape {input_shape}.")
    widths = [_scaled(w, width) for w in (64, 128, 256, 512)]
    stem = conv_block(input_shape[0], widths[0], stride=1)
    stages = [BasicBlock(widths[0], widths[0], 1)]
    stages += [BasicBlock(widths[i - 1], widths[i], 2) for i in range(1, 4)]
    features = nn.Sequential(stem, *stages)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes))
    return Classifier(features, head)


def _vgg_builder(name: str) -> Callable[..., Classifier]:
    def build(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> Classifier:
        return vgg(VGG_PLANS[name], input_shape, num_classes, width)

    build.__name__ = name
    build.__doc__ = f"{name.upper()} with the plan VGG_PLANS[{name!r}] (stride-2 conv downsampling)."
    return build


MODELS: dict[str, Callable[..., Classifier]] = {
    "mlp": mlp,
    "cnn": small_cnn,
    "vgg8": _vgg_builder("vgg8"),
    "vgg11": _vgg_builder("vgg11"),
    "vgg13": _vgg_builder("vgg13"),
    "vgg16": _vgg_builder("vgg16"),
    "resnet10": resnet10,
    "gpt": gpt,
}
TOKEN_MODELS = ("gpt",)  # built-in models whose inputs are token ids (text datasets)

# How `phasescope run` trains a model when the options are not given (presets.preset_config): the
# GPT with AdamW, a learning-rate warm-up and weight decay (nanoGPT's character-level settings).
TRAINING_DEFAULTS: dict[str, dict] = {
    "gpt": {"optimizer": "adamw", "lr": 1e-3, "warmup": 100, "weight_decay": 0.1, "batch_size": 32},
}

# The layer tracked when the user names none: the last feature block (as in the papers).
def default_layers(model: nn.Module, input_shape: tuple[int, ...] | None = None, forward=None,
                   dtype: torch.dtype | None = None) -> list[str]:
    """The last feature block of phasescope's models, every block of the GPT; for any other model
    (given its per-sample ``input_shape`` and input ``dtype``), what feeds the classifier (see
    :func:`phasescope.engine.layers.foreign_default_layer`)."""
    if isinstance(model, Classifier):
        return [f"features.{len(model.features) - 1}"]
    if isinstance(model, GPT):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    if input_shape is not None:
        return [foreign_default_layer(model, tuple(input_shape), forward, dtype)]
    names = [n for n, _ in model.named_modules() if n]
    return names[-2:-1] or names[-1:]


def token_layers(model: nn.Module, input_shape: tuple[int, ...], forward=None,
                 dtype: torch.dtype = torch.long) -> list[str]:
    """Every transformer block of a language model that takes token ids (see
    :func:`phasescope.engine.layers.transformer_blocks`), with the selector ``[0]`` where a block returns
    a tuple (older transformers); a model without blocks: :func:`default_layers`."""
    names = transformer_blocks(model)
    if not names:
        return default_layers(model, tuple(input_shape), forward, dtype=dtype)
    try:
        dry_run(model, names, tuple(input_shape), forward, dtype=dtype)
        return names
    except ModelError:
        return [f"{n}[0]" for n in names]


def check_model_name(name: str) -> None:
    """Raise ModelError unless ``name`` is a built-in model or an import path ``package.module:function``
    (imported only when the model is built). What ``phasescope run`` and sweep files accept."""
    if not isinstance(name, str):
        raise ModelError(f"model must be a string; got {type(name).__name__}.")
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ModelError(f"model {name!r}: give a built-in name or an import path 'package.module:function'.")
    elif name not in MODELS:
        raise ModelError(f"Unknown model {name!r}. Choose one of: {', '.join(MODELS)}, or give an import path "
                         "package.module:function.")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` (without the batch axis).

    ``name`` is a built-in model or an import path ``package.module:function`` naming a callable
    ``(input_shape, num_classes) -> nn.Module`` (it gets ``width=`` too when width is not 1).
    """
    check_model_name(name)
    if ":" in name:
        if width <= 0:
            raise ModelError(f"width must be positive; got {width}.")
        return build_foreign(name, tuple(input_shape), num_classes, width)
    if width <= 0:
        raise ModelError(f"width must be positive; got {width}.")
    return MODELS[name](tuple(input_shape), num_classes, width=width)


def trackable_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """Name, output shape and feature count of every block worth tracking.

    Blocks are the children of ``features`` (and of ``head``), listed in forward order. For any
    other model: every module that runs in a forward pass, in the order it starts, with one
    entry per tensor (and its selector, ``name[0]``) for modules that return tuples or dicts.
    """
    if isinstance(model, GPT):
        names = ["embed", *(f"blocks.{i}" for i in range(len(model.blocks))), "ln_f"]
        shapes = output_shapes(model, names, input_shape, dtype=torch.long)
        return [{"name": n, "shape": list(shapes[n]), "features": int(shapes[n][-1])} for n in names]
    if not isinstance(model, Classifier):
        return foreign_trackable_layers(model, tuple(input_shape))
    names = [f"features.{i}" for i in range(len(model.features))]
    names += [f"head.{i}" for i in range(len(model.head))] if isinstance(model.head, nn.Sequential) else []
    names = [n for n in names if not isinstance(model.get_submodule(n), nn.Flatten)]
    shapes = output_shapes(model, names, input_shape)
    return [{"name": n, "shape": list(shapes[n]), "features": int(torch.Size(shapes[n]).numel())} for n in names]


def output_shapes(model: nn.Module, names: list[str], input_shape: tuple[int, ...],
                  forward=None, dtype: torch.dtype | None = None) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of each named layer, from one dry forward pass (see
    :func:`phasescope.engine.layers.dry_run`; selectors such as ``blocks.3[0]`` pick a tensor)."""
    return dry_run(model, names, input_shape, forward, dtype=dtype)[0]
