"""Own training loop with a sharded PhaseTracker, run by ``torchrun --nproc_per_node 2`` (DDP on gloo,
CPU). Rank 0 also measures the same model at the same iterations with a second tracker,
``distributed=False``: what one process measures. Its run folder must equal the sharded one's.
(Every rank trains on the same batches, so DDP's averaged gradients are each rank's own and the
weights those of a single process too: run as a plain script, it writes the same folders.)

    own_loop.py OUT [--model cnn|mlp] [--fail-rank R] [--fail-at ITERATION] [--nonfinite]

OUT/run: the sharded tracker's run folder (rank 0); OUT/single: the one-process tracker's;
OUT/rank<r>.json: what each rank's sharded tracker holds (rows, decisions, phases);
OUT/rank<r>.error: the error a rank stopped with (then it exits 1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from phasescope import PhaseTracker
from phasescope.data import load_dataset
from phasescope.interfaces.integrations.common import open_run, start_run
from phasescope.run.models import build_model
from phasescope.reconstructions import Reconstructions
from phasescope.samples import SampleDynamics
from phasescope.stopping import BestFeaturesKeeper

SCHEDULE = [0, 1, 2, 4, 8, 16]
LAYERS = {"cnn": ["features.2", "features.3"], "mlp": ["features.2", "features.3"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--model", default="cnn")
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument("--fail-at", type=int, default=4)
    p.add_argument("--nonfinite", action="store_true", help="the failing rank's logits are NaN instead of raising")
    args = p.parse_args()
    sharded = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if sharded:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if sharded else 0
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        run(args, rank, sharded)
    except Exception as e:  # noqa: BLE001 - reported for the test, then the process fails
        (args.out / f"rank{rank}.error").write_text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        time.sleep(1.0)  # lets the other rank write its own report before torchrun stops it
        return 1
    if sharded:
        dist.destroy_process_group()
    return 0


def run(args, rank: int, sharded: bool) -> None:
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(args.model, data.input_shape, data.num_classes, width=0.5)
    armed = {"on": False}

    def forward(m, x):
        logits = m(x)
        if armed["on"] and rank == args.fail_rank:
            if args.nonfinite:
                return logits * float("nan")
            raise RuntimeError(f"injected failure on rank {rank}")
        return logits

    def build(**kw):
        extensions = [SampleDynamics(), BestFeaturesKeeper(layer=LAYERS[args.model][-1], n_boot=100)]
        if args.model == "cnn":
            extensions.append(Reconstructions(per_class=1))
        return PhaseTracker(model, LAYERS[args.model], (data.x_train[:300], data.y_train[:300]),
                            (data.x_test[:150], data.y_test[:150]), SCHEDULE, batch_size=64, bn_samples=200,
                            bootstrap=200, relative_ridge=[0.1, "auto"], extensions=extensions, forward=forward, **kw)

    tracker = build()
    single = build(distributed=False) if rank == 0 else None
    live = torch.nn.parallel.DistributedDataParallel(model) if sharded else model
    opt = torch.optim.SGD(live.parameters(), lr=0.05, momentum=0.9)
    folders = {}
    if rank == 0:  # one writer
        folders = {"run": (tracker, open_run(args.out / "run", "own loop", resume=False, overwrite=False)),
                   "single": (single, open_run(args.out / "single", "own loop", resume=False, overwrite=False))}
        for t, folder in folders.values():
            start_run(folder, t, model, "own loop")
    x, y = data.x_train[:512], data.y_train[:512]
    for t in range(max(SCHEDULE) + 1):
        armed["on"] = args.fail_rank is not None and t >= args.fail_at
        tracker.maybe_measure(live, t)
        if single is not None:
            single.maybe_measure(live, t)
        if t in SCHEDULE:
            for tr, folder in folders.values():
                folder.checkpoint(tr)
        if t == max(SCHEDULE):
            break
        rows = torch.arange(t * 32, t * 32 + 32) % len(x)  # the same batch on every rank
        live.train()
        loss = F.cross_entropy(live(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for tr, folder in folders.values():  # the run's last files; no figures (seconds of matplotlib, not compared)
        folder.finish(tr, "complete", figure=False, report=False)
        folder.close()
    mine = {"rows": tracker.results().to_dict("records"), "stop": str(tracker.stop),
            "decisions": {str(k): str(v) for k, v in tracker.decisions.items()},
            "phases": {n: r.to_dict() for n, r in tracker.phases().items()}}
    (args.out / f"rank{rank}.json").write_text(json.dumps(mine, default=float))
    if single is not None:
        (args.out / "single" / "decisions.json").write_text(
            json.dumps({str(k): str(v) for k, v in single.decisions.items()}))


if __name__ == "__main__":
    sys.exit(main())
