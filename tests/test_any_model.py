"""Models that are not phasescope's own: transformer tokens, tuple/dict outputs, LayerNorm and
GroupNorm, nested non-Sequential structures, tabular inputs, models named by import path.
Every model is written here (no downloads)."""
from __future__ import annotations

import sys
import textwrap

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from phasescope import PhaseTracker
from phasescope.interfaces.cli import app
from phasescope.data import load_dataset
from phasescope.engine.layers import parse_layer
from phasescope.run.models import ModelError, build_model, default_layers, trackable_layers


class TinyViT(nn.Module):
    """Patch embedding, class token, nn.TransformerEncoderLayer blocks (batch_first), LayerNorm, head."""

    def __init__(self, input_shape=(1, 8, 8), num_classes=10, dim=32, depth=2, patch=4):
        super().__init__()
        c, h, w = input_shape
        self.patch = nn.Conv2d(c, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (h // patch) * (w // patch) + 1, dim) * 0.02)
        self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        for b in self.blocks:
            t = b(t)
        return self.head(self.norm(t)[:, 0])


class TupleBlock(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(2, c_out)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x)))
        return h, h.mean((2, 3))  # (features, a summary): as many real blocks return


class DictEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return {"hidden": torch.relu(self.conv(x)), "attn": None}


class Nested(nn.Module):
    """No nn.Sequential trunk: a ModuleDict of stages, tuple and dict outputs, GroupNorm, a head."""

    def __init__(self, input_shape=(1, 8, 8), num_classes=10):
        super().__init__()
        self.trunk = nn.ModuleDict({"stem": TupleBlock(input_shape[0], 8), "stage": nn.ModuleList([DictEncoder(8)])})
        self.classifier = nn.ModuleDict({"pool": nn.AdaptiveAvgPool2d(1), "fc": nn.Linear(8, num_classes)})

    def forward(self, x):
        h, _summary = self.trunk["stem"](x)
        h = self.trunk["stage"][0](h)["hidden"]
        return self.classifier["fc"](self.classifier["pool"](h).flatten(1))


class TabularNet(nn.Module):
    def __init__(self, d_in=20, num_classes=3):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d_in, 32), nn.LayerNorm(32), nn.GELU())
        self.out = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.out(self.encoder(x))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tracker(model, digits, layers, n_fit=300, n_test=100, **kw):
    return PhaseTracker(model, layers, (digits.x_train[:n_fit], digits.y_train[:n_fit]),
                        (digits.x_test[:n_test], digits.y_test[:n_test]), schedule=[0, 1], bootstrap=50, **kw)


def test_parse_layer():
    assert parse_layer("features.3") == ("features.3", ())
    assert parse_layer("blocks.3[0]") == ("blocks.3", (0,))
    assert parse_layer("encoder[hidden]") == ("encoder", ("hidden",))
    assert parse_layer("enc['states'][-1]") == ("enc", ("states", -1))
    with pytest.raises(ModelError, match="selectors"):
        parse_layer("blocks.3[0")


@pytest.mark.parametrize("tokens, features", [("mean", 32), ("cls", 32), ("pool", 5 * 32)])
def test_vit_tokens_are_selectable_and_recorded(digits, tokens, features):
    torch.manual_seed(0)
    model = TinyViT()
    t = tracker(model, digits, ["blocks.1"], tokens=tokens)
    assert t.layer_shapes["blocks.1"] == [5, 32]
    assert t._feature_dim("blocks.1") == features
    d = t.describe()
    assert d["tokens"] == tokens and "tokens" in d["features_from"]["blocks.1"]
    assert d["bn_samples"] is None  # LayerNorm only: nothing to recalibrate
    rows = pd.DataFrame(t.measure(model, 0))
    rec = rows[(rows.metric == "reconstruction_mse") & (rows.split == "test")].value.item()
    assert 0 < rec < 2


def test_vit_pool_respects_the_feature_budget(digits):
    model = TinyViT()
    t = tracker(model, digits, ["blocks.1"], tokens="pool", max_features=100)
    assert t._feature_dim("blocks.1") == 3 * 32  # 5 tokens pooled to 3 (3 x 32 <= 100)
    assert "pooled to 3" in t.describe()["features_from"]["blocks.1"]
    t.measure(model, 0)


def test_vit_default_layer_and_listing():
    model = TinyViT()
    assert default_layers(model, (1, 8, 8)) == ["norm"]  # what feeds the classifier
    names = [r["name"] for r in trackable_layers(model, (1, 8, 8))]
    assert names[:2] == ["patch", "blocks.0"] and "blocks.0.self_attn[0]" in names and names[-1] == "head"


def test_tuple_and_dict_outputs_with_selectors(digits):
    torch.manual_seed(0)
    model = Nested()
    layers = ["trunk.stem[0]", "trunk.stem[1]", "trunk.stage.0[hidden]"]
    t = tracker(model, digits, layers)
    assert t.layer_shapes == {"trunk.stem[0]": [8, 4, 4], "trunk.stem[1]": [8], "trunk.stage.0[hidden]": [8, 4, 4]}
    df = pd.DataFrame(t.measure(model, 0))
    assert set(df.layer) == {*layers, "model"}
    assert t.describe()["bn_samples"] is None  # GroupNorm: no BatchNorm to recalibrate
    assert default_layers(model, (1, 8, 8)) == ["classifier.pool"]
    listed = [r["name"] for r in trackable_layers(model, (1, 8, 8))]
    assert {"trunk.stem[0]", "trunk.stem[1]", "trunk.stage.0[hidden]"} <= set(listed)


@pytest.mark.parametrize("layer, message", [
    ("trunk.stem", r"'trunk.stem'.*returned a tuple of 2.*\[0\] a tensor of shape \(2, 8, 4, 4\).*'trunk.stem\[0\]'"),
    ("trunk.stem[7]", r"'trunk.stem\[7\]'.*selector \[7\] does not match.*tuple of 2"),
    ("trunk.stage.0[missing]", r"selector \[missing\] does not match.*dict.*\[hidden\]"),
    ("trunk.stage.0[attn]", r"'trunk.stage.0\[attn\]' is None; the tracker needs a tensor"),
    ("trunk.nothere", r"Unknown layer name"),
])
def test_bad_layers_name_the_layer_and_what_it_returned(digits, layer, message):
    with pytest.raises(ModelError, match=message):
        tracker(Nested(), digits, [layer])


def test_data_that_does_not_fit_the_model(digits):
    x = torch.randn(50, 3, 8, 8)  # 3 channels for a 1-channel model
    y = torch.arange(50) % 10
    with pytest.raises(ModelError, match=r"does not run on inputs of shape \(3, 8, 8\)"):
        PhaseTracker(TinyViT(), ["blocks.1"], (x, y), (x, y), schedule=[0])


def test_model_outputs_that_are_no_logits(digits):
    class NoLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(64, 10)

        def forward(self, x):
            return {"scores": self.body(x.flatten(1))}

    with pytest.raises(ModelError, match="needs logits.*forward=lambda"):
        tracker(NoLogits(), digits, ["body"])
    t = tracker(NoLogits(), digits, ["body"], forward=lambda m, x: m(x)["scores"])
    t.measure(NoLogits(), 0)


def test_tabular_vectors_are_reconstructed(digits):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=g) * 2
    y = torch.arange(600) % 3
    x = centres[y] + torch.randn(600, 20, generator=g)
    torch.manual_seed(0)
    model = TabularNet()
    t = PhaseTracker(model, ["encoder"], (x[:400], y[:400]), (x[400:], y[400:]), schedule=[0], bootstrap=50)
    assert default_layers(model, (20,)) == ["encoder"]
    df = pd.DataFrame(t.measure(model, 0))
    rec = df[(df.layer == "encoder") & (df.metric == "reconstruction_mse") & (df.split == "test")].value.item()
    # the target is the 20-dim input vector: the decoder does better than predicting the mean
    assert rec < float(x[400:].var(0).mean())


def test_import_path_model_for_layers_and_run(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        from torch import nn

        def make_model(input_shape, num_classes):
            c, h, w = input_shape
            return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(8 * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    model = build_model("mymodels:make_model", (1, 8, 8), 10)
    assert default_layers(model, (1, 8, 8)) == ["5"]  # the ReLU whose output the final Linear reads
    runner = CliRunner()
    res = runner.invoke(app, ["layers", "--model", "mymodels:make_model", "--dataset", "digits"])
    assert res.exit_code == 0, res.output
    assert "default layer: 5" in res.output and "GroupNorm" not in res.output
    res = runner.invoke(app, ["run", "--model", "mymodels:make_model", "--dataset", "digits", "--iterations", "4",
                              "--fit-samples", "200", "--test-samples", "100", "--bootstrap", "50", "--no-samples",
                              "--quiet", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "metrics.csv").exists()
    res = runner.invoke(app, ["layers", "--model", "mymodels:nothere"])
    assert res.exit_code == 2 and "has no attribute" in res.output
