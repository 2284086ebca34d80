"""Forward and training-step times of every model in MODELS on CPU.

Run: python benchmarks/bench_models.py [--threads 2] [--batch 128] [--widths 0.25 0.5 1]
Times are the median of ``--repeats`` timed calls after two warm-up calls, for a batch
of random 3x32x32 inputs; a step is forward + cross-entropy + backward + SGD update.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from phasescope.run.models import MODELS, build_model


def median_time(fn, repeats: int) -> float:
    for _ in range(2):  # warm-up: allocator and kernel selection
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, *args.shape)
    y = torch.randint(0, 10, (args.batch,))
    print(f"threads={args.threads} batch={args.batch} input={tuple(args.shape)} (median of {args.repeats})")
    print(f"{'model':10s} {'width':>5s} {'params':>10s} {'forward_s':>10s} {'step_s':>8s}")
    for name in args.models:
        for width in args.widths:
            model = build_model(name, tuple(args.shape), 10, width=width)
            opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
            loss_fn = nn.CrossEntropyLoss()

            def forward() -> None:
                with torch.no_grad():
                    model(x)

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()

            model.eval()
            t_fwd = median_time(forward, args.repeats)
            model.train()
            t_step = median_time(step, args.repeats)
            n_params = sum(p.numel() for p in model.parameters())
            print(f"{name:10s} {width:5.2f} {n_params:10d} {t_fwd:10.4f} {t_step:8.4f}", flush=True)


if __name__ == "__main__":
    main()
