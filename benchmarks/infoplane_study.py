"""Study: does "compression" (falling I(X;T)) coincide with the rise of the reconstruction loss?

    python benchmarks/infoplane_study.py                         # all three runs, ~5-10 min on one busy CPU core
    python benchmarks/infoplane_study.py --parts tanh,relu --out runs/infoplane-study

Three runs on the embedded MNIST digits (4,000 training / 1,000 test images), each with
the information-plane extension (estimators binning, quantile, kde, kde-lower) on every
tracked layer:

  cnn    the default run (small CNN, SGD lr 0.01, batch 128) through the library,
         ``run_experiment(RunConfig(...), out, extensions=[InfoPlane(...)])``, tracking
         features.1, features.2 and features.3 (the default layer); shorter than the
         default 4,096 iterations (``--cnn-iterations``, 1,024) to fit a shared CPU;
  tanh   an MLP 784-256-64-16-4-10 with tanh, trained by a plain loop (as in
         examples/own_loop.py) with a PhaseTracker on its four hidden activations
         (SGD momentum 0.9, lr 0.01, batch 128, ``--mlp-iterations``, 2,048);
  relu   the same MLP with ReLU (same initialisation seed, same batches).

Writes, under ``--out``: one folder per run (metrics.csv, phases.json with the
``infoplane`` section, infoplane.png), and ``study.csv``: per run, layer and estimator,
the reconstruction minimum and rise, and where I(X;T) peaks and how it moves during
the rise (see ``phasescope.infoplane.compression_summary``). Prints it as a markdown table.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from phasescope import PhaseTracker, RunConfig, log_schedule, run_experiment
from phasescope.data import load_dataset
from phasescope.run.experiment import measurement_sets
from phasescope.infoplane import InfoPlane, plot_infoplane
from phasescope.outputs.figures import phases_payload
from phasescope.outputs.runs import write_json, write_metrics

ESTIMATORS = ("binning", "quantile", "kde", "kde-lower")
WIDTHS = (256, 64, 16, 4)  # hidden layers of the MLPs: the narrow ones are where binning can escape saturation


def mlp(activation: str, widths=WIDTHS, d_in: int = 784, classes: int = 10) -> nn.Sequential:
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    mods: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    prev = d_in
    for i, w in enumerate(widths, 1):
        mods += [(f"fc{i}", nn.Linear(prev, w)), (f"act{i}", act())]
        prev = w
    mods.append(("out", nn.Linear(prev, classes)))
    return nn.Sequential(OrderedDict(mods))


def run_mlp(activation: str, out: Path, iterations: int, seed: int, ext: InfoPlane) -> tuple[pd.DataFrame, dict, float]:
    """Plain training loop with a PhaseTracker (SGD momentum 0.9, lr 0.01, batch 128)."""
    data = load_dataset("mnist-digits", seed=seed)
    cfg = RunConfig(seed=seed)
    fit, test = measurement_sets(data, cfg)
    torch.manual_seed(seed)
    model = mlp(activation)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tracker = PhaseTracker(model, [f"act{i}" for i in range(1, len(WIDTHS) + 1)], fit, test, schedule=log_schedule(iterations),
                           extensions=[ext], seed=seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for it in range(iterations + 1):
        tracker.maybe_measure(model, it)
        if it == iterations:
            break
        idx = torch.randint(len(data.x_train), (128,), generator=g)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    df = tracker.results()
    payload = phases_payload(tracker.phases(), df)
    payload.update(ext.summarise(df, payload))
    payload["seconds"] = {"total": seconds, "measurement": float(sum(tracker.timings.values()))}
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(out, df)
    write_json(out / "phases.json", payload)
    plot_infoplane(df, payload, out / "infoplane.png", title=f"MLP 784-{'-'.join(map(str, WIDTHS))}-10 ({activation}) on mnist-digits")
    return df, payload, seconds


def run_cnn(out: Path, iterations: int, seed: int, ext: InfoPlane) -> tuple[pd.DataFrame, dict, float]:
    cfg = RunConfig(iterations=iterations, seed=seed, layers=["features.1", "features.2", "features.3"],
                    device="cpu", extra={"samples": {"enabled": False}})
    r = run_experiment(cfg, out, overwrite=True, progress=False, extensions=[ext])
    return r.metrics, r.payload, r.seconds["total"]


def study_rows(run: str, df: pd.DataFrame, payload: dict) -> list[dict]:
    rows = []
    for layer, entry in payload["infoplane"]["layers"].items():
        ph = payload["layers"].get(layer, {})
        for est, s in entry.get("estimators", {}).items():
            rows.append({
                "run": run, "layer": layer, "units": entry.get("reduction", {}).get("kept"), "estimator": est,
                "rec_min": ph.get("min_iteration"),
                "rec_increase": (ph.get("relative_increase") or {}).get("value"),
                "increase_significant": ph.get("increase_significant"),
                "mi_x_start": s["start"], "mi_x_at_min": s.get("at_minimum"), "mi_x_end": s["end"],
                "mi_x_peak_it": s["peak_iteration"], "mi_x_change_during_rise": s.get("change_during_increase"),
                "mi_x_fall_before_min": s.get("fall_before_minimum"), "mi_x_fall_during_rise": s.get("fall_during_increase"),
                "spearman_during_rise": s.get("spearman_during_increase"), "coincides": s.get("coincides"),
                "saturated": s.get("saturated"), "mi_y_at_min": s["mi_label"]["at_minimum"],
                "mi_y_end": s["mi_label"]["end"], "mi_y_peak_it": s["mi_label"]["peak_iteration"],
            })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/infoplane-study"))
    ap.add_argument("--parts", default="cnn,tanh,relu")
    ap.add_argument("--cnn-iterations", type=int, default=1024)
    ap.add_argument("--mlp-iterations", type=int, default=2048)
    ap.add_argument("--max-samples", type=int, default=2000)
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--noise", type=float, default=0.1, help="KDE noise variance relative to the layer's [0.1]")
    ap.add_argument("--bins", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    rows, seconds = [], {}
    for part in [p.strip() for p in a.parts.split(",") if p.strip()]:
        ext = InfoPlane(a.estimators, bins=a.bins, noise=a.noise, max_samples=a.max_samples, seed=a.seed)
        if part == "cnn":
            df, payload, s = run_cnn(a.out / "cnn", a.cnn_iterations, a.seed, ext)
        elif part in ("tanh", "relu"):
            df, payload, s = run_mlp(part, a.out / f"mlp-{part}", a.mlp_iterations, a.seed, ext)
        else:
            raise SystemExit(f"unknown part {part!r}; choose cnn, tanh, relu")
        seconds[part] = {"total": round(s, 1), "infoplane_per_checkpoint": payload["infoplane"]["seconds_per_checkpoint"],
                         "final_accuracy": payload.get("final_accuracy")}
        rows += study_rows(part, df, payload)
        print(f"{part}: {s:.0f} s, final accuracy {payload.get('final_accuracy')}", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(a.out / "study.csv", index=False, float_format="%.4g")
    (a.out / "seconds.json").write_text(json.dumps(seconds, indent=2) + "\n")
    print(table.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else table.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
