"""Cost of tracking: the default run against the same training with tracking off.

Runs, in one process and side by side:
  1. training alone (the default configuration, no measurement);
  2. the same training with the PhaseTracker measuring at every checkpoint;
  3. one forward pass of the model over the measurement samples (fit + test), the unit in
     which the per-checkpoint measurement cost is reported (target: at most 4).

    python benchmarks/bench_overhead.py                 # default: cnn on embedded MNIST, 4096 iterations
    python benchmarks/bench_overhead.py --iterations 1024
"""
from __future__ import annotations

import argparse
import time

import torch

from phasescope import RunConfig
from phasescope.data import load_dataset
from phasescope.experiment import build_tracker
from phasescope.measure.capture import iter_batches, prepare
from phasescope.models import build_model
from phasescope.training import BatchStream, make_optimizer, train


def timed_training(cfg, data, tracker_on: bool):
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    tracker = build_tracker(cfg, model, data, torch.device("cpu")) if tracker_on else None
    opt = make_optimizer(cfg, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, cfg.seed)
    hook = (lambda m, t: tracker.maybe_measure(m, t)) if tracker else None
    t = time.perf_counter()
    train(model, opt, stream, cfg.iterations, torch.device("cpu"), on_iteration=hook)
    return time.perf_counter() - t, tracker, model


def forward_unit(model, cfg, tracker) -> float:
    """Seconds of one eval forward pass over the measurement samples (fit + test)."""
    frozen = prepare(model, "running", tracker.fit_x[:1], cfg.measure_batch_size, torch.device("cpu"))
    x = torch.cat([tracker.fit_x, tracker.test_x])
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in iter_batches(frozen, tracker.layers, x, cfg.measure_batch_size, torch.device("cpu")):
            pass
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = RunConfig(iterations=args.iterations)
    data = load_dataset(cfg.dataset)
    t_off, _, _ = timed_training(cfg, data, tracker_on=False)
    t_on, tracker, model = timed_training(cfg, data, tracker_on=True)
    unit = forward_unit(model, cfg, tracker)
    per_ckpt = sum(tracker.timings.values()) / len(tracker.timings)
    n = len(tracker.fit_x) + len(tracker.test_x)
    print(f"default run: {cfg.model} on {cfg.dataset}, {cfg.iterations} iterations, {len(tracker.timings)} checkpoints, "
          f"{n} measurement samples, layers {tracker.layers}, {args.threads} threads")
    print(f"training alone          {t_off:8.1f} s")
    print(f"training + tracking     {t_on:8.1f} s   ratio {t_on / t_off:.2f}")
    print(f"measurement/checkpoint  {per_ckpt:8.2f} s   = {per_ckpt / unit:.2f} forward passes over the measurement samples "
          f"(one pass: {unit:.3f} s)")


if __name__ == "__main__":
    main()
