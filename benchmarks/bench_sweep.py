"""phasescope sweep on Ray: parallel efficiency and Ray's per-run overhead.

The same 8 short runs (default CNN on the embedded MNIST digits, seeds 0-7) once one after
another in this process (``--backend local``, one torch thread) and once as Ray tasks on an
embedded local Ray, 2 at a time (``--cpus-per-run 1``). Prints

* ``ray.init`` time (start-up, paid once per sweep) and ``ray.shutdown`` time;
* parallel efficiency = sequential time / (2 x parallel time), without and with start-up;
* Ray's per-run overhead: (2 x parallel time - the runs' own time inside the Ray workers) / 8,
  i.e. what each run costs beyond its own work (worker start and imports, scheduling,
  result collection); and a no-op task's round trip;
* whether the runs' metrics are identical in both modes.

    python benchmarks/bench_sweep.py [--iterations 512] [--runs 8] [--out /tmp/bench-sweep]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=512)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time on Ray (CPUs of the local Ray)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import ray

    from phasescope.interfaces.sweep import load_spec, run_sweep
    from phasescope.interfaces.sweep.backends import read_status, status_path

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "bench.toml").write_text(textwrap.dedent(f"""\
        description = "bench: default CNN, {args.iterations} iterations, {args.runs} seeds"
        iterations = {args.iterations}
        [grid]
        seed = {list(range(args.runs))}
        """))
    spec = load_spec(out / "bench.toml")

    t = time.perf_counter()
    seq = run_sweep(spec, out / "sequential", backend="local", cpus_per_run=1, progress=False)
    t_seq = time.perf_counter() - t
    assert seq.exit_code == 0, seq.failed

    t = time.perf_counter()
    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t

    @ray.remote(num_cpus=1)
    def noop() -> int:
        return 0

    ray.get([noop.remote() for _ in range(args.parallel)])  # workers up
    t = time.perf_counter()
    for _ in range(20):
        ray.get(noop.remote())
    t_noop = (time.perf_counter() - t) / 20
    ray.shutdown()  # the sweep below starts from a fresh Ray: worker start-up counts as overhead

    t = time.perf_counter()
    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
    t_init2 = time.perf_counter() - t
    t = time.perf_counter()
    par = run_sweep(spec, out / "parallel", backend="ray", cpus_per_run=1, progress=False)
    t_par = time.perf_counter() - t
    t = time.perf_counter()
    ray.shutdown()
    t_shutdown = time.perf_counter() - t
    assert par.exit_code == 0, par.failed

    inside = []
    for r in spec.runs:
        doc = read_status(status_path(out / "parallel", r.name))
        inside.append(doc["finished"] - doc["started"])
    seq_runs = [read_status(status_path(out / "sequential", r.name)) for r in spec.runs]
    seq_inside = [d["finished"] - d["started"] for d in seq_runs]
    same = all(pd.read_csv(out / "sequential" / "runs" / r.name / "metrics.csv").equals(
        pd.read_csv(out / "parallel" / "runs" / r.name / "metrics.csv")) for r in spec.runs)
    p = args.parallel
    result = {
        "runs": args.runs, "iterations": args.iterations, "parallel": p,
        "sequential_s": round(t_seq, 1), "parallel_s": round(t_par, 1),
        "ray_init_s": round(t_init, 2), "ray_init_again_s": round(t_init2, 2), "ray_shutdown_s": round(t_shutdown, 2),
        "efficiency": round(t_seq / (p * t_par), 3),
        "efficiency_with_startup": round(t_seq / (p * (t_par + t_init2 + t_shutdown)), 3),
        "run_mean_s_sequential": round(sum(seq_inside) / len(seq_inside), 2),
        "run_mean_s_in_ray": round(sum(inside) / len(inside), 2),
        "ray_overhead_per_run_s": round((p * t_par - sum(inside)) / args.runs, 2),
        "noop_task_roundtrip_ms": round(1000 * t_noop, 2),
        "identical_metrics": same,
    }
    print(json.dumps(result, indent=2))
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nsequential {t_seq:.1f} s, {p} in parallel on Ray {t_par:.1f} s (+ ray.init {t_init2:.1f} s, shutdown "
          f"{t_shutdown:.1f} s): efficiency {result['efficiency']:.2f} ({result['efficiency_with_startup']:.2f} "
          f"with start-up); Ray overhead per run {result['ray_overhead_per_run_s']:.2f} s; files in {out}")


if __name__ == "__main__":
    main()
