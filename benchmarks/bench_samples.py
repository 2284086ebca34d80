"""Extra cost of the per-sample dynamics (phasescope.extensions.samples) at one checkpoint, side by side.

    python benchmarks/bench_samples.py        # small CNN on the embedded MNIST digits (the CLI default)
    python benchmarks/bench_samples.py --dataset cifar10 --data-dir ../shared/data/cifar10_subset.npz \
        --model vgg8 --width 0.5 --lr 0.002 --train-size 4000

Trains the model for ``--steps`` iterations (a mid-training state), then measures that
checkpoint ``--repeats`` times, the variants interleaved so that load on a shared machine
hits them alike:

  baseline       PhaseTracker, no extension
  samples        + SampleDynamics on the fit subset: the final Linear's input is captured
                 in the tracker's own forward pass (what `phasescope run` does)
  samples+fwd    + SampleDynamics(data=fit set): its own extra forward pass (the cost
                 without the capture, e.g. for data other than the fit subset)

and, for reference, per-sample autograd (one backward per sample) on ``--autograd-n``
samples, extrapolated to the fit set. One thread (torch.set_num_threads(1)).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from phasescope.config import RunConfig
from phasescope.data import load_dataset
from phasescope.run.experiment import build_tracker, measurement_sets
from phasescope.engine.measure.capture import prepare
from phasescope.run.models import build_model
from phasescope.extensions.samples import SampleDynamics
from phasescope.run.training import BatchStream, make_optimizer, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist-digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--fit-samples", type=int, default=4000)
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=64, help="training steps before the measured checkpoint")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--autograd-n", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(1)

    cfg = RunConfig(dataset=a.dataset, data_dir=a.data_dir, model=a.model, width=a.width, lr=a.lr,
                    train_size=a.train_size, fit_samples=a.fit_samples, test_samples=a.test_samples,
                    iterations=a.steps, device="cpu")
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_size=cfg.train_size, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    device = torch.device("cpu")
    train(model, make_optimizer(cfg, model.parameters()), BatchStream(data.x_train, data.y_train, cfg.batch_size, 0),
          a.steps, device)

    (fit_x, fit_y), _ = measurement_sets(data, cfg)
    extensions = {"baseline": [], "samples": [SampleDynamics()], "samples+fwd": [SampleDynamics(data=(fit_x, fit_y))]}
    variants = {name: (build_tracker(cfg, model, data, device, ext), ext) for name, ext in extensions.items()}
    times = {n: [] for n in variants}
    own = {n: [] for n in variants}
    for r in range(a.repeats + 1):  # the first round warms up (allocator, imports) and is dropped
        for name, (tracker, ext) in variants.items():
            t0 = time.perf_counter()
            tracker.measure(model, 10_000 + r)
            if r:
                times[name].append(time.perf_counter() - t0)
                own[name].append(ext[0].timings[10_000 + r] if ext else 0.0)

    # Files the extension writes after every checkpoint (samples.parquet + samples.npz, no figures).
    tracker, ext = variants["samples"]
    write_s = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeats + 1):
            t0 = time.perf_counter()
            ext[0].write(Path(tmp), tracker.results(), {"layers": {}}, figure=False)
            write_s.append(time.perf_counter() - t0)
    write_s = write_s[1:]

    # Reference: per-sample autograd of the final Linear's gradient on a few samples.
    frozen = prepare(model, cfg.bn_mode, fit_x, cfg.measure_batch_size, device)
    head = frozen.head[-1]
    params = [head.weight.requires_grad_(True), head.bias.requires_grad_(True)]
    n = min(a.autograd_n, len(fit_x))
    t0 = time.perf_counter()
    for i in range(n):
        torch.autograd.grad(F.cross_entropy(frozen(fit_x[i : i + 1]), fit_y[i : i + 1]), params)
    autograd_full = (time.perf_counter() - t0) / n * len(fit_x)

    base, base_min = statistics.median(times["baseline"]), min(times["baseline"])
    print(f"{cfg.model} (width {cfg.width}) on {cfg.dataset}: {len(fit_x)} fit / {a.test_samples} test samples, "
          f"checkpoint after {a.steps} steps; {a.repeats} interleaved repeats, 1 thread")
    print("seconds per checkpoint (median and min over repeats; on a shared machine the min is the steadier)")
    print(f"{'variant':<14}{'median':>9}{'min':>9}{'extra (min)':>13}{'extra %':>9}{'in extension':>14}")
    for name in variants:
        med, lo = statistics.median(times[name]), min(times[name])
        print(f"{name:<14}{med:>9.3f}{lo:>9.3f}{lo - base_min:>13.3f}{100 * (lo - base_min) / base_min:>8.1f}%"
              f"{statistics.median(own[name]):>14.3f}")
    w = statistics.median(write_s)
    print(f"{'+ files':<14}{w:>9.3f}{min(write_s):>9.3f}{'':>13}{100 * w / base:>8.1f}%{'':>14}"
          f"  samples.parquet + .npz, written after each checkpoint ({len(ext[0].iterations)} recorded here)")
    print(f"{'autograd ref.':<14}{autograd_full:>9.3f}{'':>9}{'':>13}{100 * autograd_full / base:>8.1f}%{'':>14}"
          f"  one backward per sample: {n} samples timed, extrapolated to {len(fit_x)}")

if __name__ == "__main__":
    main()
