"""Every image model in MODELS: layer names and shapes agree with a real forward pass, the
width multiplier scales channels, bad layer names fail helpfully, sizes are sane. (The GPT,
whose inputs are token ids, is tested in tests/language/test_gpt.py.)"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from phasescope.run.models import (
    MODELS,
    TOKEN_MODELS,
    VGG_PLANS,
    Classifier,
    ModelError,
    build_model,
    default_layers,
    resolve_layers,
    trackable_layers,
)

SHAPES = [(3, 32, 32), (1, 28, 28)]
IMAGE_MODELS = [n for n in MODELS if n not in TOKEN_MODELS]
NUM_CLASSES = 7


def forward_shapes(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Per-sample output shapes of the named modules, from hooks on a real forward pass."""
    seen: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, tuple(o.shape[1:])))
             for n in names]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    seen["__out__"] = tuple(out.shape)
    return seen


def conv_channels(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("shape", SHAPES, ids=["3x32x32", "1x28x28"])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_trackable_layers_match_forward(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, NUM_CLASSES, width=0.25)
    assert isinstance(model, Classifier)
    layers = trackable_layers(model, shape)
    names = [layer["name"] for layer in layers]
    # every child of features (but a Flatten) is listed, in forward order
    blocks = [f"features.{i}" for i, m in enumerate(model.features) if not isinstance(m, nn.Flatten)]
    assert names[: len(blocks)] == blocks
    model.eval()
    seen = forward_shapes(model, names, torch.randn(5, *shape))
    for layer in layers:
        assert tuple(layer["shape"]) == seen[layer["name"]], layer["name"]
        assert layer["features"] == int(torch.Size(layer["shape"]).numel())
    assert seen["__out__"] == (5, NUM_CLASSES)
    # with a Sequential head the last trackable layer is the logits (mlp's head is a bare Linear)
    if isinstance(model.head, nn.Sequential):
        assert layers[-1]["shape"] == [NUM_CLASSES]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_logits_shape_in_train_mode_and_backward(name):
    model = build_model(name, (3, 32, 32), NUM_CLASSES, width=0.25)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, NUM_CLASSES)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_default_layer_is_last_feature_block(name):
    shape = (3, 32, 32)
    model = build_model(name, shape, NUM_CLASSES, width=0.5)
    default = default_layers(model)
    assert default == [f"features.{len(model.features) - 1}"]
    resolve_layers(model, default)
    layer = {entry["name"]: entry for entry in trackable_layers(model, shape)}[default[0]]
    if name.startswith("vgg"):
        # five stride-2 blocks: 512*width channels at 1x1, as in the published method
        assert layer["shape"] == [256, 1, 1]
    if name == "resnet10":
        assert layer["shape"] == [256, 4, 4]


@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if n != "mlp"])
def test_width_multiplier_scales_channels(name):
    narrow = conv_channels(build_model(name, (3, 32, 32), NUM_CLASSES, width=0.5))
    wide = conv_channels(build_model(name, (3, 32, 32), NUM_CLASSES, width=1.0))
    assert len(narrow) == len(wide)
    assert [2 * c for c in narrow] == wide


def test_width_multiplier_scales_mlp():
    narrow = build_model("mlp", (1, 28, 28), NUM_CLASSES, width=0.5)
    wide = build_model("mlp", (1, 28, 28), NUM_CLASSES, width=1.0)
    assert trackable_layers(narrow, (1, 28, 28))[1]["shape"] == [128]
    assert trackable_layers(wide, (1, 28, 28))[1]["shape"] == [256]


@pytest.mark.parametrize("name", ["vgg8", "vgg11", "vgg13", "vgg16"])
def test_vgg_follows_plan(name):
    model = build_model(name, (3, 32, 32), NUM_CLASSES, width=1.0)
    plan = VGG_PLANS[name]
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [v if isinstance(v, int) else v[0] for v in plan]
    assert [c.stride[0] for c in convs] == [2 if isinstance(v, int) else v[1] for v in plan]
    assert len(model.features) == len(plan)
    # standard conv counts of VGG-8/11/13/16 (one linear head)
    assert len(convs) == {"vgg8": 5, "vgg11": 8, "vgg13": 10, "vgg16": 13}[name]


def test_resnet10_structure():
    model = build_model("resnet10", (3, 32, 32), NUM_CLASSES, width=1.0)
    assert len(model.features) == 5  # stem + 4 stages
    names = [e["name"] for e in trackable_layers(model, (3, 32, 32))]
    shapes = {e["name"]: e["shape"] for e in trackable_layers(model, (3, 32, 32))}
    assert [shapes[f"features.{i}"] for i in range(5)] == [
        [64, 32, 32], [64, 32, 32], [128, 16, 16], [256, 8, 8], [512, 4, 4]]
    assert shapes["head.0"] == [512, 1, 1]  # the global average pool is trackable too
    assert "head.1" not in names  # Flatten is skipped
    weight_layers = [m for m in model.modules()
                     if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))]
    assert len(weight_layers) == 10  # stem + 4x2 block convs + linear (1x1 shortcuts not counted)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_bad_layer_name_lists_valid_ones(name):
    model = build_model(name, (3, 32, 32), NUM_CLASSES, width=0.25)
    with pytest.raises(ModelError) as err:
        resolve_layers(model, ["features.0", "no_such_layer"])
    msg = str(err.value)
    assert "no_such_layer" in msg
    for i in range(len(model.features)):
        assert f"features.{i}" in msg


# parameter counts at width 1 on 3x32x32 with 10 classes; bounds leave room for small
# changes but catch a wrong plan (an ImageNet-sized VGG-16 has ~15M convolution weights)
PARAM_BOUNDS = {
    "mlp": (0.5e6, 1.5e6),
    "cnn": (2e4, 2e5),
    "vgg8": (1.0e6, 2.5e6),
    "vgg11": (3e6, 7e6),
    "vgg13": (5e6, 9e6),
    "vgg16": (6e6, 10e6),
    "resnet10": (4e6, 6e6),
}


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_parameter_count_sane(name):
    lo, hi = PARAM_BOUNDS[name]
    full = sum(p.numel() for p in build_model(name, (3, 32, 32), 10, width=1.0).parameters())
    quarter = sum(p.numel() for p in build_model(name, (3, 32, 32), 10, width=0.25).parameters())
    assert lo <= full <= hi
    assert quarter < full / 4  # conv weights scale with width squared


def test_every_model_has_bounds():
    assert set(PARAM_BOUNDS) == set(IMAGE_MODELS)


@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if n != "mlp"])
def test_image_models_reject_flat_inputs(name):
    with pytest.raises(ModelError):
        build_model(name, (784,), 10)


def test_unknown_model_and_bad_width():
    with pytest.raises(ModelError, match="vgg11"):
        build_model("vgg99", (3, 32, 32), 10)
    with pytest.raises(ModelError, match="width"):
        build_model("vgg11", (3, 32, 32), 10, width=0)
