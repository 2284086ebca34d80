"""Transfer accuracy at the reconstruction minimum, at the transfer peak and at the end,
over several seeds (the measurement behind issue 6's figures).

    python benchmarks/transfer_seeds.py --out runs/bench/digits-switch --seeds 0,1,2 \
        dataset=mnist-digits transfer=switch:digits

Every ``key=value`` is a RunConfig field (``transfer``, ``keep_best`` go to ``extra``).
Runs whose folder already holds a finished phases.json are reused. Prints, and writes
to ``OUT/aggregate.csv``, one row per (task, layer, quantity): mean over seeds with a
95% t-interval, and the per-seed values.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from phasescope.config import RunConfig
from phasescope.run.experiment import run_experiment
from phasescope.outputs.runs import read_metrics
from phasescope.transfer import aggregate_runs

EXTRA = ("transfer", "keep_best", "stop_on_increase", "keep_layer")


def _value(text: str, default):
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, (int, float)):
        return type(default)(text)
    for cast in (int, float):  # fields that default to None (train_size, ...) or strings
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


def parse_overrides(items: list[str]) -> dict:
    fields = RunConfig().to_dict()
    out: dict = {"extra": {}}
    for item in items:
        key, _, value = item.partition("=")
        if key in EXTRA:
            out["extra"][key] = value.split(",") if key == "transfer" else value.lower() in ("1", "true", "yes")
        elif key in fields:
            out[key] = _value(value, fields[key])
        else:
            sys.exit(f"unknown key {key!r}; use RunConfig fields or {', '.join(EXTRA)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = parse_overrides(args.overrides)
    tables, minima = [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        run = args.out / f"seed{seed}"
        done = run / "phases.json"
        if not (done.exists() and json.loads(done.read_text()).get("status") == "complete"):
            cfg = RunConfig.from_dict({**RunConfig().to_dict(), **base, "seed": seed})
            res = run_experiment(cfg, run, overwrite=True, progress=False)
            print(f"seed {seed}: {res.status}, {res.seconds['total']:.0f} s", flush=True)
        payload = json.loads(done.read_text())
        tables.append(read_metrics(run))
        minima.append({n: p["min_iteration"] for n, p in payload["layers"].items()})
    agg = aggregate_runs(tables, minima)
    agg.to_csv(args.out / "aggregate.csv", index=False)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.max_rows", 200):
        shown = agg.assign(values=agg["values"].map(lambda v: " ".join(f"{x:.4g}" for x in v)))
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
