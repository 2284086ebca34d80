"""Cost of the information-plane estimators (phasescope.infoplane) per checkpoint, in
forward-pass units.

    python benchmarks/bench_infoplane.py                      # small CNN on the embedded MNIST digits (the default run)
    python benchmarks/bench_infoplane.py --max-samples 4000   # every fit sample (KDE cost grows with N^2)

One unit = one forward pass of the (frozen) model over the measurement samples (the fit
and test subsets together: 4,000 + 1,000 on mnist-digits, whose test split has 1,000).
Trains the model for ``--steps`` iterations (a mid-training state), then, ``--repeats``
times with the variants interleaved (so that load on a shared machine hits them alike):

  forward        the unit: one forward pass over the measurement samples
  <estimators>   the InfoPlane extension alone (its own clock inside the tracker's
                 checkpoint: unit budget, sample subset, estimators), on the tracked layer's
                 features that the tracker already computed (no forward pass of its own)

and the tracker's whole checkpoint without the extension, for reference. One thread.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from phasescope.config import RunConfig
from phasescope.data import load_dataset
from phasescope.run.experiment import build_tracker, measurement_sets
from phasescope.infoplane import InfoPlane
from phasescope.engine.measure.capture import prepare
from phasescope.run.models import build_model
from phasescope.run.training import BatchStream, make_optimizer, train

VARIANTS = ["binning", "quantile", "kde", "kde,kde-lower", "binning,kde"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist-digits")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--fit-samples", type=int, default=4000)
    ap.add_argument("--test-samples", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=64, help="training steps before the measured checkpoint")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-samples", type=int, default=2000, help="InfoPlane sample budget [2000, its default]")
    ap.add_argument("--max-units", type=int, default=256, help="InfoPlane unit budget [256, its default]")
    a = ap.parse_args()
    torch.set_num_threads(1)

    cfg = RunConfig(dataset=a.dataset, model=a.model, width=a.width, fit_samples=a.fit_samples,
                    test_samples=a.test_samples, iterations=a.steps, device="cpu", bootstrap=1000)
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    device = torch.device("cpu")
    train(model, make_optimizer(cfg, model.parameters()), BatchStream(data.x_train, data.y_train, cfg.batch_size, 0),
          a.steps, device)

    (fit_x, _), (test_x, _) = measurement_sets(data, cfg)
    x_all = torch.cat([fit_x, test_x])
    baseline = build_tracker(cfg, model, data, device)
    frozen = prepare(model, cfg.bn_mode, fit_x, cfg.measure_batch_size, device)
    exts = {v: InfoPlane(v, max_samples=a.max_samples, max_units=a.max_units, seed=cfg.seed) for v in VARIANTS}
    trackers = {v: build_tracker(cfg, model, data, device, [e]) for v, e in exts.items()}
    forward, checkpoint = [], []
    own = {v: [] for v in VARIANTS}
    for r in range(a.repeats + 1):  # the first round warms up (allocator, imports) and is dropped
        t0 = time.perf_counter()
        baseline.features(frozen, x_all)
        fwd = time.perf_counter() - t0
        t0 = time.perf_counter()
        baseline.measure(model, 10_000 + r)
        ckpt = time.perf_counter() - t0
        for v, tracker in trackers.items():
            tracker.measure(model, 10_000 + r)
            if r:
                own[v].append(exts[v].timings[10_000 + r])
        if r:
            forward.append(fwd)
            checkpoint.append(ckpt)

    unit = statistics.median(forward)
    ext = exts["binning,kde"]
    layer = baseline.layers[0]
    red = ext.reduction[layer]
    print(f"{cfg.model} (width {cfg.width}) on {cfg.dataset}: {len(fit_x)} fit / {len(test_x)} test samples, "
          f"checkpoint after {a.steps} steps; tracked layer {layer} {baseline.layer_shapes[layer]} "
          f"({red['units']} features, {red['kept']} estimated: {red['method']}); "
          f"InfoPlane on {ext.samples_['n']} of the fit samples; {a.repeats} interleaved repeats, 1 thread")
    print(f"one unit = forward pass over {len(x_all)} samples: {unit:.3f} s (median; min {min(forward):.3f})")
    print(f"{'variant':<16}{'median s':>10}{'min s':>9}{'units':>8}")
    for v in VARIANTS:
        med = statistics.median(own[v])
        print(f"{v:<16}{med:>10.3f}{min(own[v]):>9.3f}{med / unit:>8.2f}")
    c = statistics.median(checkpoint)
    print(f"{'(tracker alone)':<16}{c:>10.3f}{min(checkpoint):>9.3f}{c / unit:>8.2f}  the checkpoint without InfoPlane")


if __name__ == "__main__":
    main()
