"""Effect on the curve of recalibrating BatchNorm on a subset of the fit samples.

Trains one model and measures every checkpoint twice, side by side on the same weights:
with BatchNorm statistics recalibrated on all fit samples and on a seeded subset
(``--bn-samples``, default 1,024, the tracker's default). Prints, per checkpoint, both test
reconstruction losses and their difference in units of the interval half-width.

    python benchmarks/bn_subset_effect.py                                    # default run, 512 iterations
    python benchmarks/bn_subset_effect.py --cifar PATH.npz --iterations 1024 # VGG-8 x0.5 on a CIFAR-10 .npz
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from phasescope import PhaseTracker, RunConfig, log_schedule
from phasescope.data import load_dataset
from phasescope.run.experiment import measurement_sets
from phasescope.run.models import build_model, default_layers
from phasescope.run.training import BatchStream, make_optimizer, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=512)
    ap.add_argument("--bn-samples", type=int, default=1024)
    ap.add_argument("--cifar", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.cifar:
        cfg = RunConfig(dataset="npz", data_dir=str(args.cifar), model="vgg8", width=0.5, lr=0.002,
                        iterations=args.iterations)
        data = load_dataset("npz", data_dir=str(args.cifar))
    else:
        cfg = RunConfig(iterations=args.iterations)
        data = load_dataset(cfg.dataset)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    fit, test = measurement_sets(data, cfg)[:2]
    kw = dict(schedule=log_schedule(cfg.iterations), bootstrap=cfg.bootstrap, seed=cfg.seed)
    trackers = {"all": PhaseTracker(model, default_layers(model), fit, test, bn_samples=None, **kw),
                "subset": PhaseTracker(model, default_layers(model), fit, test, bn_samples=args.bn_samples, **kw)}
    seconds = {k: 0.0 for k in trackers}

    def hook(m, t):
        for k, tr in trackers.items():
            t0 = time.perf_counter()
            tr.maybe_measure(m, t)
            seconds[k] += time.perf_counter() - t0

    train(model, make_optimizer(cfg, model.parameters()), BatchStream(data.x_train, data.y_train, cfg.batch_size, cfg.seed),
          cfg.iterations, torch.device("cpu"), on_iteration=hook)
    layer = default_layers(model)[0]
    res = {}
    for k, tr in trackers.items():
        df = tr.results()
        res[k] = df[(df.metric == "reconstruction_mse") & (df.split == "test") & (df.layer == layer)].set_index("iteration")
    print(f"{cfg.model} on {cfg.dataset}: layer {layer}, {len(fit[0])} fit samples, BatchNorm on all vs "
          f"{args.bn_samples}; measurement {seconds['all']:.1f} s vs {seconds['subset']:.1f} s")
    print(f"{'iteration':>9} {'all':>9} {'subset':>9} {'diff / CI half-width':>22}")
    z = []
    for it in res["all"].index:
        a, b = res["all"].loc[it], res["subset"].loc[it]
        half = (a.ci_high - a.ci_low) / 2
        z.append((b.value - a.value) / half)
        print(f"{it:>9} {a.value:>9.4f} {b.value:>9.4f} {z[-1]:>+22.2f}")
    print(f"largest |difference| = {np.max(np.abs(z)):.2f} interval half-widths")
    pa, pb = (trackers[k].phases()[layer] for k in ("all", "subset"))
    print(f"phases (all):    {[(p.name, p.start, p.end) for p in pa.phases]}, minimum {pa.min_iteration}")
    print(f"phases (subset): {[(p.name, p.start, p.end) for p in pb.phases]}, minimum {pb.min_iteration}")


if __name__ == "__main__":
    main()
