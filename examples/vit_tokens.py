"""A ViT-style model's token layer, measured in your own loop (no download, CPU).

    python examples/vit_tokens.py                         # < 1 min: 1,024 steps on the embedded 8x8 digits
    python examples/vit_tokens.py --tokens cls            # the class token instead of the mean token
    python examples/vit_tokens.py --iterations 8          # a smoke test

The model: 2x2 patches of the 8x8 digits (16 tokens; 7x7 patches of 28x28 ones with
``--dataset mnist-digits``) plus a class token, learned position embeddings,
``nn.TransformerEncoderLayer(batch_first=True)`` blocks, LayerNorm, a linear head on the class
token. Each block outputs (batch, 17 tokens, 48): ``tokens="mean"`` measures the mean token,
``"cls"`` the class token, ``"pool"`` all tokens (pooled to the feature budget; 17 x 48 features
hold the 64 pixels many times over, so that decoder reconstructs almost perfectly).
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

from phasescope import PhaseTracker, log_schedule
from phasescope.data import load_dataset


class ViT(nn.Module):
    def __init__(self, input_shape, num_classes, dim=48, depth=2, heads=4, patch=7):
        super().__init__()
        c, h, w = input_shape
        self.patch = nn.Conv2d(c, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (h // patch) * (w // patch) + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True,
                                                                 norm_first=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)                     # (B, 16, dim)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos  # (B, 17, dim)
        return self.head(self.norm(self.blocks(t))[:, 0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=1024)
    p.add_argument("--tokens", default="mean", choices=["mean", "cls", "pool"])
    p.add_argument("--dataset", default="digits", help="an embedded dataset: digits (8x8) or mnist-digits (28x28)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    data = load_dataset(a.dataset)
    patch = 7 if data.input_shape[-1] % 7 == 0 else 2
    model = ViT(data.input_shape, data.num_classes, patch=patch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    layers = ["blocks.0", "blocks.1"]
    tracker = PhaseTracker(model, layers, (data.x_train[:1000], data.y_train[:1000]), (data.x_test, data.y_test),
                           schedule=log_schedule(a.iterations), tokens=a.tokens, seed=a.seed)
    for name, how in tracker.describe()["features_from"].items():
        print(f"{name}: {how}")
    g = torch.Generator().manual_seed(a.seed)
    for it in range(a.iterations + 1):
        tracker.maybe_measure(model, it)
        if it == a.iterations:
            break
        idx = torch.randint(len(data.x_train), (64,), generator=g)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    df = tracker.results()
    print(df.query("metric == 'reconstruction_mse' and split == 'test'")
            .pivot(index="iteration", columns="layer", values="value").round(4))
    acc = df.query("layer == 'model' and metric == 'accuracy' and split == 'test'").value.iloc[-1]
    print(f"final test accuracy {acc:.3f}; measurement {sum(tracker.timings.values()):.1f} s")
    for layer, r in tracker.phases().items():
        print(f"{layer} (tokens={a.tokens}):", ", ".join(f"{q.name} {q.start}-{q.end}" for q in r.phases),
              f"| min at {r.min_iteration}, decrease {r.relative_decrease.value:.1%}, "
              f"increase {r.relative_increase.value:.1%}")


if __name__ == "__main__":
    main()
