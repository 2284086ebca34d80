"""What tracking costs a user, end to end and per checkpoint.

1. **End to end**: ``run_experiment`` as ``phasescope run`` does it (measurement, the
   per-sample extension, file writing after every checkpoint, figures at the end) against
   the same training with tracking off (same data, model, optimiser, batches), as pairs
   interleaved in alternating order; it prints every pair, the median and the minimum of
   the ratio. Target: <= 1.10 at the default schedule.
2. **Per checkpoint**, in forward-pass units: the tracker's time for one checkpoint
   (steady state, after the first) divided by one eval forward pass of the model over
   the measurement samples (fit + test). Target: <= 2 units. Settings: the default run
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
from pathlib import Path

import torch

from phasescope import RunConfig, run_experiment
from phasescope.data import load_dataset
from phasescope.experiment import build_tracker
from phasescope.measure.capture import iter_batches, prepare
from phasescope.models import build_model
from phasescope.samples import sample_extensions
from phasescope.training import BatchStream, make_optimizer, resolve_device, train


def training_alone(cfg: RunConfig, data) -> float:
    """Seconds of the same training with no tracking at all (model built the same way)."""
    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width).to(device)
    opt = make_optimizer(cfg, model.parameters())
    train(model, opt, BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed), cfg.iterations, device)
    return time.perf_counter() - t


def full_run(cfg: RunConfig, data) -> float:
    """Seconds of run_experiment: measurement, extensions, files and figures."""
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        run_experiment(cfg, Path(d) / "run", progress=False, data=data)
        return time.perf_counter() - t


def end_to_end(cfg: RunConfig, pairs: int) -> None:
    data = load_dataset(cfg.dataset)
    ratios = []
    for k in range(pairs):  # alternate which goes first, so drift of the machine's speed cancels
        if k % 2 == 0:
            off, on = training_alone(cfg, data), full_run(cfg, data)
        else:
            on, off = full_run(cfg, data), training_alone(cfg, data)
        ratios.append(on / off)
        print(f"  pair {k + 1}: tracking off {off:7.1f} s, phasescope run {on:7.1f} s, ratio {on / off:.3f}", flush=True)
    print(f"  end-to-end ratio at {cfg.iterations} iterations: median {statistics.median(ratios):.3f}, "
          f"min {min(ratios):.3f} over {pairs} pairs")


def forward_unit(model, tracker) -> float:
    """Seconds of one eval forward pass over the measurement samples (best of 3)."""
    frozen = prepare(model, "running", None, tracker.batch_size, tracker.device)
    x = torch.cat([tracker.fit_x, tracker.test_x])
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in iter_batches(frozen, tracker.layers, x, tracker.batch_size, tracker.device):
            pass
        best = min(best, time.perf_counter() - t)
    return best


def per_checkpoint(cfg: RunConfig, data, label: str, checkpoints: int = 4) -> None:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    tracker = build_tracker(cfg, model, data, torch.device("cpu"), sample_extensions(cfg, data))  # as a run has
    first = time.perf_counter()
    tracker.measure(model, 0)
    first = time.perf_counter() - first
    steady = []
    opt = make_optimizer(cfg, model.parameters())
    stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, seed=cfg.seed)
    for k in range(1, checkpoints + 1):
        train(model, opt, stream, 8 * k, torch.device("cpu"), start=8 * (k - 1))  # weights move between checkpoints
        t = time.perf_counter()
        tracker.measure(model, 8 * k)
        steady.append(time.perf_counter() - t)
    unit = forward_unit(model, tracker)
    s = statistics.median(steady)
    print(f"  {label}: {len(tracker.fit_x)} fit + {len(tracker.test_x)} test samples, layers {tracker.layers}, "
          f"BatchNorm recalibrated on {tracker.describe()['bn_samples']} samples")
    print(f"    one forward pass {unit:.3f} s; checkpoint: first {first:.3f} s = {first / unit:.2f} units, "
          f"steady state {s:.3f} s = {s / unit:.2f} units (median of {checkpoints})")


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
