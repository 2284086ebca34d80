"""phasescope analyze on Ray: parallel efficiency and Ray's overhead per checkpoint.

A short run of the VGG-8 half-width preset (``cifar10-vgg8``) on the CIFAR-10 subset at
``--data`` (if present; else the default CNN on the embedded MNIST digits) saves its
checkpoints (``--save-checkpoints``: 0, 1, 2, 4, ... ``--iterations``). They are then measured
with ``phasescope analyze`` twice: one after another in this process (``--backend local``, one
torch thread) and as Ray tasks on an embedded local Ray, 2 at a time (``--cpus-per-run 1``).
Prints

* the times of both (each includes the integrity guard's read of every checkpoint and the
  final writes, the same in both), and ``ray.init``'s own start-up;
* parallel efficiency = sequential time / (2 x parallel time), with and without start-up;
* Ray's overhead per checkpoint: (2 x parallel time - the checkpoints' own time inside the
  workers) / K: worker start and imports, loading the data once per worker, scheduling,
  returning the results;
* the checkpoints' own times (load + measure, median) in both modes, and in Ray each worker's
  first checkpoint apart from the others (what the per-process cache and the warm-up leave);
* the load average (1, 5, 15 min) before and after each mode: the machine may be shared;
* whether the analysis agrees with the run's own metrics.csv (rtol 1e-5) in both modes.

    python benchmarks/bench_analyze.py [--iterations 128] [--points-per-octave 1] [--data /work/shared/data/cifar10_subset.npz]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SUBSET = Path("/work/shared/data/cifar10_subset.npz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=128, help="training steps (checkpoints: 0, 1, 2, 4, ...)")
    ap.add_argument("--points-per-octave", type=int, default=1,
                    help="checkpoints per doubling of the step (more checkpoints from the same short run)")
    ap.add_argument("--data", type=Path, default=SUBSET)
    ap.add_argument("--parallel", type=int, default=2, help="checkpoints at a time on Ray (CPUs of the local Ray)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from phasescope import RunConfig
    from phasescope.interfaces.analyze import analyze
    from phasescope.run.experiment import run_experiment
    from phasescope.run.presets import PRESETS

    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if args.data.exists():
        base = {**PRESETS["cifar10-vgg8"]["config"], "data_dir": str(args.data)}
        what = f"VGG-8 half width on {args.data.name}"
    else:
        base = {}
        what = "default CNN on the embedded MNIST digits (no CIFAR-10 subset)"
    cfg = RunConfig.from_dict({**base, "iterations": args.iterations, "save_checkpoints": True,
                               "points_per_octave": args.points_per_octave})
    print(f"{what}; {os.cpu_count()} CPUs here, load average {os.getloadavg()[0]:.1f} (a shared machine)", flush=True)
    t0 = time.perf_counter()
    run = run_experiment(cfg, out / "run", progress=False)
    ckpts = out / "run" / "checkpoints"
    k = len(list(ckpts.iterdir()))
    print(f"training with --save-checkpoints: {time.perf_counter() - t0:.1f} s, {k} checkpoints "
          f"(live measurement {run.seconds['measurement']:.1f} s)", flush=True)
    acfg = cfg.replace(save_checkpoints=False)

    print(f"load average before the sequential analysis: {load()}", flush=True)
    t0 = time.perf_counter()
    seq = analyze(ckpts, acfg, out / "local", backend="local", cpus_per_run=1, progress=False)
    t_seq = time.perf_counter() - t0
    print(f"sequential (local backend, 1 thread): {t_seq:.1f} s; load average after {load()}", flush=True)

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    ray.shutdown()
    t0, wall0 = time.perf_counter(), time.time()
    par = analyze(ckpts, acfg, out / "ray", backend="ray", num_cpus=args.parallel, cpus_per_run=1, progress=False)
    t_par = time.perf_counter() - t0
    inside = sum(sum(o["seconds"].values()) for o in par.outcomes.values())
    inside_seq = sum(sum(o["seconds"].values()) for o in seq.outcomes.values())
    print(f"Ray ({args.parallel} workers, 1 CPU each): {t_par:.1f} s, of which ray.init about {t_init:.1f} s; "
          f"load average after {load()}", flush=True)
    per = lambda res: [sum(o["seconds"].values()) for o in res.outcomes.values()]  # noqa: E731
    firsts, rest, seen = [], [], set()
    for o in sorted(par.outcomes.values(), key=lambda o: o.get("started", 0.0)):
        (rest if o["pid"] in seen else firsts).append(sum(o["seconds"].values()))
        seen.add(o["pid"])
    print(f"per checkpoint (load + measure, median): sequential {np.median(per(seq)):.2f} s, Ray workers "
          f"{np.median(per(par)):.2f} s (each worker's first: {', '.join(f'{t:.2f}' for t in firsts)} s; "
          f"the others {np.median(rest) if rest else float('nan'):.2f} s)")
    jobs = [(o["started"] - wall0, o["started"] - wall0 + sum(o["seconds"].values()))
            for o in par.outcomes.values() if "started" in o]
    warm = [(w["started"] - wall0, w["started"] - wall0 + w["seconds"]) for w in getattr(par, "warm_ups", [])]
    if jobs:
        print("Ray timeline (s from the call): "
              + (f"warm-ups {', '.join(f'{a:.1f}-{b:.1f}' for a, b in sorted(warm))}; " if warm else "")
              + f"checkpoints {min(a for a, _ in jobs):.1f}-{max(b for _, b in jobs):.1f}; "
              f"end {t_par:.1f} (final files and figures after the last checkpoint)")
    print(f"time inside the checkpoints' jobs: sequential {inside_seq:.1f} s, Ray workers {inside:.1f} s")
    eff = t_seq / (args.parallel * t_par)
    eff_no_init = t_seq / (args.parallel * max(t_par - t_init, 1e-9))
    print(f"parallel efficiency: {eff:.2f} ({eff_no_init:.2f} without Ray's start-up); speed-up {t_seq / t_par:.2f}x")
    print(f"steady state (the checkpoints' own work, no start-up or driver): sequential {inside_seq:.1f} s of work "
          f"against {inside:.1f} s in {args.parallel} workers: efficiency {inside_seq / inside:.2f}")
    print(f"fixed costs: driver (guard, data, final files and figures) {t_seq - inside_seq:.1f} s in both; "
          f"Ray start-up {t_init:.1f} s")
    print(f"Ray overhead per checkpoint: {(args.parallel * t_par - inside) / k:.2f} s "
          f"((2 x {t_par:.1f} s - {inside:.1f} s) / {k})")
    live = pd.read_csv(out / "run" / "metrics.csv")
    for name in ("local", "ray"):
        try:
            pd.testing.assert_frame_equal(pd.read_csv(out / name / "metrics.csv"), live, rtol=1e-5)
            print(f"{name}: metrics.csv agrees with the live run's (rtol 1e-5)")
        except AssertionError as e:
            print(f"{name}: metrics.csv DIFFERS from the live run's: {str(e).splitlines()[0]}")
    print(f"load average at the end {load()}; files in {out}")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
