"""A run trained and saved by a plain PyTorch loop, analysed afterwards, beside the live curve.

    python examples/posthoc_plain_loop.py [--out runs/posthoc] [--iterations 4096] [--every 128]

1. **The plain loop** (no phasescope in it): the default CNN on the embedded MNIST digits,
   SGD (lr 0.01, momentum 0.9, batch 128), ``torch.save(model.state_dict(), ckpts/step-N.pt)``
   every ``--every`` steps, as most training scripts save.
2. **The same loop, measured live**: the same seed, with ``PhaseTracker.maybe_measure`` at the
   log-spaced steps 0, 1, 2, 4, ..., 4096 (the tracker never touches training: the final
   weights of both loops are checked to be identical).
3. **Afterwards**: ``phasescope analyze OUT/ckpts --out OUT/analyzed`` (the CLI, as a user would
   type it) measures every saved checkpoint with the same fit and test samples.
4. Prints the two curves at the steps both have (they must agree to float tolerance) and the
   phases each finds, and draws ``OUT/posthoc.png``: the live curve and the post-hoc one per layer.

About 3 minutes on one CPU core.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from phasescope import PhaseTracker, log_schedule
from phasescope.data import load_dataset
from phasescope.data.subsets import measurement_sets
from phasescope.run.models import build_model, default_layers


def train(data, iterations: int, *, save_dir: Path | None = None, every: int = 0, tracker=None):
    """The user's loop. Saves state_dicts every ``every`` steps, or measures live with ``tracker``."""
    torch.manual_seed(0)
    model = build_model("cnn", data.input_shape, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for step in range(iterations + 1):
        if save_dir is not None and step % every == 0:
            torch.save(model.state_dict(), save_dir / f"step-{step}.pt")
        if tracker is not None:
            tracker.maybe_measure(model, step)
        if step == iterations:
            break
        idx = torch.randint(len(data.x_train), (128,), generator=g)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/posthoc"))
    ap.add_argument("--iterations", type=int, default=4096)
    ap.add_argument("--every", type=int, default=128, help="save a checkpoint every N steps")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpts = args.out / "ckpts"
    ckpts.mkdir(parents=True, exist_ok=True)

    data = load_dataset("mnist-digits")
    saved = train(data, args.iterations, save_dir=ckpts, every=args.every)

    probe = build_model("cnn", data.input_shape, data.num_classes)
    layers = default_layers(probe, data.input_shape)
    fit, test = measurement_sets(data, 4000, 2000, 0)  # phasescope run's defaults: 4,000 fit, 2,000 test, seed 0
    tracker = PhaseTracker(probe, layers, fit, test, log_schedule(args.iterations), num_classes=data.num_classes)
    live_model = train(data, args.iterations, tracker=tracker)
    same = all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), live_model.state_dict().values()))
    print(f"final weights of the two loops identical: {same}")
    live = tracker.results()
    live.to_csv(args.out / "live_metrics.csv", index=False)
    live_phases = tracker.phases()

    analyzed = args.out / "analyzed"
    cmd = [sys.executable, "-m", "phasescope", "analyze", str(ckpts), "--model", "cnn", "--dataset", "mnist-digits",
           "--out", str(analyzed), "--threads", "1"]
    print("$ phasescope analyze", " ".join(cmd[4:]))
    subprocess.run(cmd, check=True)
    post = pd.read_csv(analyzed / "metrics.csv")
    post_phases = json.loads((analyzed / "phases.json").read_text())

    key = ["layer", "iteration"]
    pick = lambda df: df.query("metric == 'reconstruction_mse' and split == 'test'")[key + ["value"]]  # noqa: E731
    both = pick(live).merge(pick(post), on=key, suffixes=("_live", "_posthoc"))
    both["rel_diff"] = (both.value_posthoc - both.value_live).abs() / both.value_live.abs()
    print(both.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    print(f"largest relative difference at the {both.iteration.nunique()} shared steps: {both.rel_diff.max():.2e}")
    for layer in layers:
        lp = live_phases[layer]
        pp = post_phases["layers"][layer]
        print(f"{layer}: live min at {lp.min_iteration}, phases {[(p.name, p.start, p.end) for p in lp.phases]}")
        print(f"{' ' * len(layer)}  post-hoc min at {pp.get('min_iteration')}, phases "
              f"{[(p['name'], p['start'], p['end']) for p in pp.get('phases', [])]}")
    draw(pick(live), pick(post), layers, args.out / "posthoc.png", args.every)


def draw(live: pd.DataFrame, post: pd.DataFrame, layers: list[str], path: Path, every: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.4), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        lv, pv = live[live.layer == layer], post[post.layer == layer]
        ax.plot(np.maximum(pv.iteration, 0.5), pv.value, ".-", color="tab:orange", lw=1.2, ms=4,
                label=f"post hoc (every {every} steps)")
        ax.plot(np.maximum(lv.iteration, 0.5), lv.value, "o", color="tab:blue", ms=5, mfc="none",
                label="live (log-spaced)")
        ax.set_xscale("log")
        ax.set_title(layer)
        ax.set_xlabel("iteration (0 drawn at 0.5)")
        ax.set_ylabel("test reconstruction MSE")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
