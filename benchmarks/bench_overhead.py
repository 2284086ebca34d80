"""What tracking costs a user, end to end and per checkpoint.

1. **End to end**: ``run_experiment`` as ``phasescope run`` does it (measurement, the
   per-sample extension, file writing after every checkpoint, figures at the end) against
   the same training with tracking off (same data, model, optimiser, batches), as pairs
   interleaved in alternating order; it prints every pair, the median and the minimum of
   the ratio. Target: <= 1.10 at the default schedule.
2. **Per checkpoint**, in forward-pass units: the tracker's time for one checkpoint
   (steady state, after the first) divided by one eval forward pass of the model over
   the measurement samples (fit + test), measured beside it in alternating order (median of
   the per-round ratios, and fastest checkpoint / fastest unit). Target: <= 2 units. Settings: the default run
   (CNN, embedded MNIST digits) and, with ``--cifar PATH`` (an .npz with x_train, y_train,
   x_test, y_test, e.g. a CIFAR-10 subset), VGG-8 at half width.

    python benchmarks/bench_overhead.py                               # default schedule (4096), 3 pairs
    python benchmarks/bench_overhead.py --iterations 256 --pairs 3    # a short schedule
    python benchmarks/bench_overhead.py --skip-end-to-end --cifar ../data/cifar10_subset.npz
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from phasescope import RunConfig, run_experiment
from phasescope.data import load_dataset
from phasescope.run.experiment import build_tracker
from phasescope.engine.measure.capture import iter_batches, prepare
from phasescope.run.models import build_model
from phasescope.engine.schedule import log_schedule
from phasescope.extension import RunSetup
from phasescope.extensions.samples import SampleDynamics
from phasescope.run.training import BatchStream, make_optimizer, resolve_device, train


def training_alone(cfg: RunConfig, data) -> float:
    """Seconds of the same training with no tracking at all (model built the same way)."""
    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width).to(device)
    opt = make_optimizer(cfg, model.parameters())
    train(model, opt, BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed), cfg.iterations, device)
    return time.perf_counter() - t


def full_run(cfg: RunConfig, data, attributed: list | None = None) -> float:
    """Seconds of run_experiment: measurement, extensions, files and figures.

    With ``attributed`` (a list), the run's own untracked cost is estimated inside it and the
    ratio appended: the run's time over ``iterations`` x the mean time between consecutive
    optimiser steps that had no checkpoint between them. Both come from the same minutes of the
    same process, so the machine's drift between separate runs (often 5-25% here) cancels."""
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        run_experiment(cfg, Path(d) / "run", progress=False, data=data,
                       on_step=lambda it, loss: stamps.append(time.perf_counter()))
        total = time.perf_counter() - t
    if attributed is not None:
        # interval i lies between the ends of steps i+1 and i+2: it holds the checkpoint at i+1, if any
        gaps = np.diff(stamps)
        scheduled = set(log_schedule(cfg.iterations, cfg.points_per_octave))
        plain = np.array([i + 1 not in scheduled for i in range(len(gaps))])
        attributed.append(total / (float(gaps[plain].mean()) * cfg.iterations))
    return total


def end_to_end(cfg: RunConfig, pairs: int) -> None:
    data = load_dataset(cfg.dataset)
    # Warm-up: both paths once on a short schedule, so that neither pair pays the process's
    # first-use costs (torch's optimiser machinery, matplotlib and its fonts, ...); a CLI run
    # pays them once, and they are printed here.
    short = replace(cfg, iterations=8)
    cold_off, cold_on = training_alone(short, data), full_run(short, data)
    warm_off, warm_on = training_alone(short, data), full_run(short, data)
    print(f"  first-use costs of a process (8-iteration runs, cold - warm): tracking off "
          f"{cold_off - warm_off:.1f} s, phasescope run {cold_on - warm_on:.1f} s")
    ratios, inside = [], []
    for k in range(pairs):  # alternate which goes first, so drift of the machine's speed cancels
        if k % 2 == 0:
            off, on = training_alone(cfg, data), full_run(cfg, data, inside)
        else:
            on, off = full_run(cfg, data, inside), training_alone(cfg, data)
        ratios.append(on / off)
        print(f"  pair {k + 1}: tracking off {off:7.1f} s, phasescope run {on:7.1f} s, ratio {on / off:.3f}; "
              f"within the run {inside[-1]:.3f}", flush=True)
    print(f"  end-to-end ratio at {cfg.iterations} iterations over {pairs} pairs: separate runs median "
          f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}); within each run median "
          f"{statistics.median(inside):.3f} (min {min(inside):.3f}, max {max(inside):.3f})")


def forward_unit(model, tracker) -> float:
    """Seconds of one eval forward pass over the measurement samples (fit + test), hooks on."""
    frozen = prepare(model, "running", None, tracker.batch_size, tracker.device)
    x = torch.cat([tracker.fit_x, tracker.test_x])
    t = time.perf_counter()
    for _ in iter_batches(frozen, tracker.layers, x, tracker.batch_size, tracker.device):
        pass
    return time.perf_counter() - t


def per_checkpoint(cfg: RunConfig, data, label: str, rounds: int = 6) -> None:
    """Steady-state checkpoints against forward units measured beside them: in each round
    (the weights moved by 8 steps) one unit and one checkpoint, in alternating order, so that
    a change of the machine's speed hits both; the median of the per-round ratios and the
    ratio of the fastest checkpoint to the fastest unit are printed."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    samples = SampleDynamics.from_config(RunSetup(cfg, data, []))  # the per-sample dynamics, on by default
    tracker = build_tracker(cfg, model, data, torch.device("cpu"), samples)
    forward_unit(model, tracker)  # warm-up
    first = time.perf_counter()
    tracker.measure(model, 0)
    first = time.perf_counter() - first
    first_unit = forward_unit(model, tracker)
    opt = make_optimizer(cfg, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed)
    units, costs = [], []
    for k in range(1, rounds + 1):
        train(model, opt, stream, 8 * k, torch.device("cpu"), start=8 * (k - 1))  # weights move between checkpoints
        if k % 2:
            units.append(forward_unit(model, tracker))
        t = time.perf_counter()
        tracker.measure(model, 8 * k)
        costs.append(time.perf_counter() - t)
        if not k % 2:
            units.append(forward_unit(model, tracker))
    ratios = [c / u for c, u in zip(costs, units)]
    print(f"  {label}: {len(tracker.fit_x)} fit + {len(tracker.test_x)} test samples, layers {tracker.layers}, "
          f"BatchNorm recalibrated on {tracker.describe()['bn_samples']} samples")
    print(f"    one forward pass {statistics.median(units):.3f} s (median of {rounds}); first checkpoint {first:.3f} s "
          f"= {first / first_unit:.2f} units; steady state {statistics.median(costs):.3f} s: "
          f"median {statistics.median(ratios):.2f} units, fastest/fastest {min(costs) / min(units):.2f} units "
          f"(per round: {', '.join(f'{r:.2f}' for r in ratios)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=4096, help="schedule of the end-to-end pairs")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: immune to a busy second core)")
    ap.add_argument("--cifar", type=Path, default=None, help=".npz with a CIFAR-10 subset for the VGG-8 setting")
    ap.add_argument("--skip-end-to-end", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    print("per checkpoint (forward-pass units; target <= 2):")
    per_checkpoint(RunConfig(), load_dataset("mnist-digits"), "default run: cnn on mnist-digits")
    if args.cifar is not None:
        if not args.cifar.is_file():
            sys.exit(f"error: --cifar {args.cifar} is not a file; give an .npz with x_train, y_train, x_test, y_test.")
        cfg = RunConfig(dataset="npz", data_dir=str(args.cifar), model="vgg8", width=0.5, lr=0.002)
        per_checkpoint(cfg, load_dataset("npz", data_dir=str(args.cifar)), f"vgg8 x0.5 on {args.cifar.name}")
    if not args.skip_end_to_end:
        print(f"end to end ({args.iterations} iterations, default run; target <= 1.10 at 4096):")
        end_to_end(RunConfig(iterations=args.iterations), args.pairs)


if __name__ == "__main__":
    main()
