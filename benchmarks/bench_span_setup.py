"""The input span's one-time set-up, one process against ranks that split it.

Run: python benchmarks/bench_span_setup.py [--fit 2000] [--test 1000] [--dim 60000] [--ranks 2]

Random inputs (``--fit`` x ``--dim`` and ``--test`` x ``--dim`` float32, the same in every process),
one thread per process. One process builds :class:`~phasescope.engine.measure.span.InputSpan` of the
fit inputs (the lower triangle of their Gram matrix, its eigendecomposition) and projects the test
inputs, as a tracker does at its first checkpoint; then ``--ranks`` forked processes (gloo) do the
same the way a sharded tracker does: each rank forms its row blocks of the Gram matrix, the blocks
are summed over the ranks, and each rank projects its share of the test inputs, gathered after.
Every rank then holds the one process's span (checked: coordinates equal to 1e-9 relative).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per process
    os.environ[_v] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import multiprocessing as mp  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402


def data(args):
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(args.fit // 2, args.dim, generator=g)  # inputs of lower rank than the samples, as images
    mix = lambda n: torch.randn(n, args.fit // 2, generator=g) @ basis + 0.01 * torch.randn(n, args.dim, generator=g)
    return mix(args.fit), mix(args.test)


def one(args, queue):
    from phasescope.engine.measure.span import InputSpan

    torch.set_num_threads(1)
    fit, test = data(args)
    t0 = time.perf_counter()
    span = InputSpan(fit)
    proj = span.project(test)
    queue.put(("one", time.perf_counter() - t0, span.coords.numpy(), proj.coords.numpy()))


def rank(r, args, store, queue):
    import torch.distributed as dist

    from phasescope.engine.measure.distributed import Shard
    from phasescope.engine.measure.span import InputSpan

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=r, world_size=args.ranks,
                            timeout=datetime.timedelta(seconds=600))
    sh = Shard(dist.group.WORLD, 100)
    fit, test = data(args)
    dist.barrier()
    t0 = time.perf_counter()
    span = InputSpan(fit, part=(sh.rank, sh.world), all_reduce=lambda G: sh.all_reduce([G])[0])
    local = span.project(test[sh.share(len(test))])
    coords = sh.gather(local.coords, len(test))
    sh.gather(local.residual, len(test))
    seconds = time.perf_counter() - t0
    if r == 0:
        queue.put(("ranks", seconds, span.coords.numpy(), coords.numpy()))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=60000)
    ap.add_argument("--ranks", type=int, default=2)
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    got = {}
    p = ctx.Process(target=one, args=(args, queue))
    p.start()
    got["one"] = queue.get()[1:]
    p.join()
    with tempfile.TemporaryDirectory() as d:
        store = Path(d) / "store"
        procs = [ctx.Process(target=rank, args=(r, args, store, queue)) for r in range(args.ranks)]
        for q in procs:
            q.start()
        got["ranks"] = queue.get()[1:]
        for q in procs:
            q.join()
    (t1, c1, p1), (tr, cr, pr) = got["one"], got["ranks"]
    err = max(float(abs(c1 - cr).max() / abs(c1).max()), float(abs(p1 - pr).max() / abs(p1).max()))
    print(f"{args.fit} fit / {args.test} test inputs of {args.dim:,} values, one thread per process, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"  one process: {t1:.1f} s; {args.ranks} ranks: {tr:.1f} s ({t1 / tr:.2f}x); "
          f"coordinates equal to {err:.1e} relative")


if __name__ == "__main__":
    main()
