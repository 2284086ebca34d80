"""What a run pays to write its files after every checkpoint, side by side in one run.

At each checkpoint of one default run (``phasescope run``'s configuration), the same tracker's
files are written two ways into two scratch folders, in alternating order:

* **per checkpoint** (what a run does): :func:`phasescope.run.experiment.write_checkpoint`:
  metrics, errors and the files extensions must not lose, plus state.pt;
* **everything** (what runs did before): :func:`phasescope.run.experiment.write_outputs` without
  figures: metrics, errors, phase detection with bootstrap intervals, every extension's
  tables, phases.json, plus state.pt.

It prints the seconds of both per checkpoint and in total, with the measurement's own seconds
for scale.

    python benchmarks/bench_writes.py                   # default run, 4,096 iterations
    python benchmarks/bench_writes.py --iterations 1024
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from phasescope import RunConfig, run_experiment
from phasescope.run.experiment import write_checkpoint, write_outputs
from phasescope.outputs.runs import save_state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        a, b = Path(d) / "checkpoint", Path(d) / "everything"
        a.mkdir()
        b.mkdir()

        def timed(write, folder, tracker, it) -> float:
            t = time.perf_counter()
            write(folder, tracker)
            save_state(folder, {"iteration": it, "tracker": tracker.state_dict()})
            return time.perf_counter() - t

        def on_checkpoint(it: int, tracker) -> None:
            new = lambda: timed(write_checkpoint, a, tracker, it)  # noqa: E731
            old = lambda: timed(lambda f, tr: write_outputs(f, tr, figure=False), b, tracker, it)  # noqa: E731
            if len(rows) % 2:
                t_old, t_new = old(), new()
            else:
                t_new, t_old = new(), old()
            rows.append((it, t_new, t_old, tracker.timings[it]))

        t = time.perf_counter()
        result = run_experiment(RunConfig(iterations=args.iterations), Path(d) / "run", progress=False,
                                on_checkpoint=on_checkpoint)
        total = time.perf_counter() - t
    print(f"torch {torch.__version__}, {args.threads} thread(s); default run, {args.iterations} iterations, "
          f"{len(rows)} checkpoints")
    print(f"{'iteration':>9}  {'per checkpoint':>14}  {'everything':>10}  {'measurement':>11}")
    for it, n, o, m in rows:
        print(f"{it:>9}  {n:>13.3f}s  {o:>9.3f}s  {m:>10.3f}s")
    new, old, meas = (sum(r[k] for r in rows) for k in (1, 2, 3))
    print(f"{'total':>9}  {new:>13.3f}s  {old:>9.3f}s  {meas:>10.3f}s   (everything / per checkpoint: {old / new:.1f}x)")
    print(f"the run itself: {total:.1f} s (its per-checkpoint writes included; the two comparisons above are extra), "
          f"measurement {result.seconds['measurement']:.1f} s")


if __name__ == "__main__":
    main()
