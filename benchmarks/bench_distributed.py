"""Time per checkpoint of a measurement sharded across 2 ranks against 1 rank, on the same samples.

Run: python benchmarks/bench_distributed.py [--fit 4000] [--test 2000] [--checkpoints 3] [--ranks 2]

VGG-8 at half width on the CIFAR-10 subset at ../shared/data/cifar10_subset.npz (or
``--data``) when it is there, else the default CNN on mnist-digits; ``--fit`` fit and
``--test`` test samples, the default layer, default settings (bootstrap 1000, BatchNorm
recalibrated on 1,024 samples, batches of 500). One thread per rank (gloo, CPU, forked
processes). Each configuration measures one warm-up checkpoint, then ``--checkpoints``
timed ones (each its own iteration, on weights nudged between them); the median of rank
0's ``tracker.timings`` is reported. The sharded results are checked to equal one
process's (1e-5 relative).

The share of a checkpoint that does not shrink with the ranks: the ridge solve and
probe fit of every layer (all ranks solve the same system), the bootstrap intervals and
phase detection (every rank holds every per-sample value), the copy of the model, and
the collectives; with 2 ranks the forward passes take half as long.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per rank, numpy's BLAS too
    os.environ[_v] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import multiprocessing as mp  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

SUBSET = Path("shared") / "data" / "cifar10_subset.npz"  # beside the project's folder, or one above it
CIFAR = next((p / SUBSET for p in Path(__file__).resolve().parents[1:] if (p / SUBSET).exists()),
             Path(__file__).resolve().parents[2] / SUBSET)


def load(args) -> tuple[str, torch.nn.Module, tuple, tuple]:
    from phasescope.run.models import build_model

    path = Path(args.data) if args.data else CIFAR
    if path.exists():
        d = np.load(path)
        x = torch.from_numpy(d["x_train"]).permute(0, 3, 1, 2).float() / 255.0
        xt = torch.from_numpy(d["x_test"]).permute(0, 3, 1, 2).float() / 255.0
        mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
        x, xt = (x - mean) / std, (xt - mean) / std
        y, yt = torch.from_numpy(d["y_train"]), torch.from_numpy(d["y_test"])
        torch.manual_seed(0)
        model = build_model("vgg8", (3, 32, 32), 10, width=0.5)
        what = f"vgg8 (width 0.5) on {path.name}"
    else:
        from phasescope.data import load_dataset

        data = load_dataset("mnist-digits")
        x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
        torch.manual_seed(0)
        model = build_model("cnn", data.input_shape, data.num_classes)
        what = "cnn on mnist-digits"
    n_fit, n_test = min(args.fit, len(x)), min(args.test, len(xt))
    return what, model, (x[:n_fit], y[:n_fit]), (xt[:n_test], yt[:n_test])


def measure(model, fit, test, checkpoints: int, distributed) -> tuple[list[float], list[float], pd.DataFrame]:
    """Wall seconds (tracker.timings) and CPU seconds of this process per timed checkpoint, and the results."""
    from phasescope import PhaseTracker
    from phasescope.run.models import default_layers

    torch.manual_seed(1)
    tracker = PhaseTracker(model, default_layers(model, tuple(fit[0].shape[1:])), fit, test,
                           list(range(checkpoints + 1)), distributed=distributed)
    cpu = []
    for it in range(checkpoints + 1):
        c0 = time.process_time()
        tracker.measure(model, it)
        cpu.append(time.process_time() - c0)
        with torch.no_grad():  # other weights at the next checkpoint (the same on every rank)
            for p in model.parameters():
                p.mul_(1.0 + 0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(it)))
    return [tracker.timings[it] for it in range(1, checkpoints + 1)], cpu[1:], tracker.results()


def _rank(rank, world, store, args, queue):
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    _, model, fit, test = load(args)
    times, cpu, df = measure(model, fit, test, args.checkpoints, "auto")
    queue.put((rank, times, cpu, df if rank == 0 else None))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", type=int, default=4000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--data", default=None, help="an .npz like ../shared/data/cifar10_subset.npz")
    args = ap.parse_args()
    torch.set_num_threads(1)
    what, model, fit, test = load(args)
    print(f"{what}: {len(fit[0])} fit / {len(test[0])} test samples, {args.checkpoints} timed checkpoints, "
          f"1 thread per rank, {os.cpu_count()} CPUs here")
    one, one_cpu, reference = measure(model, fit, test, args.checkpoints, False)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_rank, args=(r, args.ranks, store, args, queue)) for r in range(args.ranks)]
        for p in procs:
            p.start()
        got = {r: rest for r, *rest in (queue.get(timeout=1800) for _ in procs)}
        for p in procs:
            p.join()
    sharded, _, df = got[0]
    pd.testing.assert_frame_equal(reference, df, check_exact=False, rtol=1e-5, atol=0)
    t1, tn = statistics.median(one), statistics.median(sharded)
    c1 = statistics.median(one_cpu)
    cn = max(statistics.median(got[r][1]) for r in got)
    print(f"1 rank : {', '.join(f'{t:.2f}' for t in one)} s per checkpoint (median {t1:.2f} s; CPU {c1:.2f} s)")
    print(f"{args.ranks} ranks: {', '.join(f'{t:.2f}' for t in sharded)} s per checkpoint (median {tn:.2f} s; CPU of "
          f"the busiest rank {cn:.2f} s)")
    print(f"ratio {args.ranks} ranks / 1 rank: wall {tn / t1:.2f}, CPU per rank {cn / c1:.2f} (results equal to 1e-5)")
    print(f"load average now: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs (wall times "
          "need an idle CPU per rank)")


if __name__ == "__main__":
    main()
