"""The overhead budget (``--budget F``) on the default run, side by side with no budget.

Runs ``phasescope run``'s defaults (CNN on the embedded MNIST digits, 4,096 iterations) as a
library call, once with ``budget=F`` and once without, one torch thread (``--threads 1``), and
prints for each: the training time (the training loop's wall time less the time inside its
checkpoint hook, the same clock for both runs), the measurement time (the tracker's timings, as
phases.json's ``seconds.measurement``), the budget's calibration time, the overhead fraction
(measurement / training, and with the calibration), the checkpoints measured and whether the
phases were found, and the 1-minute load average before and after each run (the machine's
other jobs disturb both runs). Target: 0.05 +- 0.02 with ``--budget 0.05``, phases still found.

    python benchmarks/bench_budget.py                         # --budget 0.05 and none, 4096 iterations
    python benchmarks/bench_budget.py --budget 0.02 --iterations 1024
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from phasescope import RunConfig, run_experiment
from phasescope.run import experiment


def timed_run(cfg: RunConfig, out: Path) -> dict:
    """``run_experiment(cfg)`` with the training loop's own time recorded (excluding checkpoints)."""
    original = experiment.train
    clock: dict[str, float] = {}

    def train(*args, on_iteration=None, **kwargs):
        inside = [0.0]

        def hook(model, t):
            t0 = time.perf_counter()
            try:
                on_iteration(model, t)
            finally:
                inside[0] += time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            return original(*args, on_iteration=hook, **kwargs)
        finally:
            clock["training"] = time.perf_counter() - t0 - inside[0]
            clock["checkpoint_hook"] = inside[0]

    experiment.train = train
    load_before = os.getloadavg()[0]
    try:
        t0 = time.perf_counter()
        result = run_experiment(cfg, out, progress=False)
        wall = time.perf_counter() - t0
    finally:
        experiment.train = original
    load = (load_before, os.getloadavg()[0])  # 1-minute load average before and after (2 cores: over 2 = contended)
    payload = result.payload
    budget = payload.get("budget") or {}
    measurement = float(payload["seconds"]["measurement"])
    calibration = float(budget.get("calibration_seconds", 0.0))
    phases = {layer: [p["name"] for p in v.get("phases", [])] for layer, v in payload["layers"].items()}
    return {"wall": wall, "training": clock["training"], "measurement": measurement, "calibration": calibration,
            "fraction": measurement / clock["training"],
            "fraction_with_calibration": (measurement + calibration) / clock["training"],
            "checkpoints": len(result.metrics.iteration.unique()), "phases": phases,
            "found": all(any(n in ("decrease", "increase") for n in names) for names in phases.values()) and bool(phases),
            "budget": budget, "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--iterations", type=int, default=RunConfig().iterations)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--order", choices=("budget-first", "none-first"), default="budget-first")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = [("budget", args.budget), ("none", None)]
    if args.order == "none-first":
        runs.reverse()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, budget in runs:
            cfg = RunConfig(iterations=args.iterations, budget=budget)
            results[name] = timed_run(cfg, Path(tmp) / name)
    print(f"default run, {args.iterations} iterations, {args.threads} torch thread(s), {torch.__version__}")
    print(f"{'budget':>8} {'training s':>10} {'measure s':>9} {'calib s':>7} {'fraction':>8} {'+calib':>7} "
          f"{'ckpts':>5} {'wall s':>7} {'load':>9}  phases")
    for name, budget in runs:
        r = results[name]
        label = f"{budget:g}" if budget is not None else "none"
        phases = "; ".join(f"{layer}: {' '.join(names) or '-'}" for layer, names in r["phases"].items())
        print(f"{label:>8} {r['training']:10.1f} {r['measurement']:9.2f} {r['calibration']:7.2f} "
              f"{r['fraction']:8.3f} {r['fraction_with_calibration']:7.3f} {r['checkpoints']:5d} {r['wall']:7.1f} "
              f"{r['load'][0]:4.1f}-{r['load'][1]:<4.1f}  "
              f"{phases} (found: {'yes' if r['found'] else 'NO'})")
    b = results["budget"]["budget"]
    print(f"budget {args.budget:g}: chosen {b.get('chosen', {}).get('fit_samples')} fit / "
          f"{b.get('chosen', {}).get('test_samples')} test samples, {len(b.get('measured', []))} of "
          f"{len(b.get('chosen', {}).get('schedule', []))} scheduled checkpoints (skipped {b.get('skipped')}, beyond "
          f"the schedule {b.get('beyond_schedule')}), "
          f"{len(b.get('adjustments', []))} adjustment(s); its own clock: achieved {b.get('achieved', float('nan')):.3f} "
          f"({b.get('achieved_with_calibration', float('nan')):.3f} with calibration)")
    cal = b.get("calibration", {})
    print(f"calibration: {cal.get('step_seconds', float('nan')) * 1e3:.1f} ms per step (rounds "
          f"{[round(r * 1e3, 1) for r in cal.get('step_rounds', [])]} ms; the run's: "
          f"{1e3 * results['budget']['training'] / args.iterations:.1f} ms), measurements "
          f"{[round(m['measurement_seconds'], 3) for m in cal.get('measurements', [])]} s, predicted fraction "
          f"{cal.get('predicted_fraction', float('nan')):.3f}")
    for a in b.get("adjustments", []):
        print(f"  after {a['after_iteration']}: {a['action']} {a['remaining_before']} -> {a['remaining_after']} "
              f"remaining ({a.get('beyond_schedule', 0)} beyond the schedule; projected fraction "
              f"{a.get('projected_fraction_before', float('nan')):.3f} -> {a['projected_fraction']:.3f})")
    ok = abs(results["budget"]["fraction_with_calibration"] - args.budget) <= 0.02 and results["budget"]["found"]
    print(f"target {args.budget:g} +- 0.02 with phases found: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
