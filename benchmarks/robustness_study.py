"""Is the rise real? The tables of docs/robustness.md from run folders.

1. Decoder robustness: runs made with ``--ridge 0.1,1e-4,1e-3,0.01,1,auto`` (one folder per
   seed); per relative ridge, whether each phase survives (initial constant stretch,
   significant decrease, significant increase), the relative decrease and increase with their
   95% bootstrap intervals, and where the minimum is.
2. Atypicality: runs made with ``--atypical label-noise:F`` (F = 0 is a plain run); per F the
   relative increase, the made-atypical samples' share of the last-layer gradient (sum of
   their per-sample gradient norms over all followed samples') at the reconstruction minimum
   and at the end, and when they are learned (samples.parquet's ``learned_at``).

    python benchmarks/robustness_study.py \\
        --ridge mnist=runs/robust/mnist-ridge --ridge vgg8-cifar=runs/robust/vgg-ridge \\
        --atypical 0=runs/robust/mnist-ridge --atypical 0.1=runs/robust/atyp/label-noise-0.1 \\
        --atypical 0.4=runs/robust/atyp/label-noise-0.4 --out runs/robust/study \\
        --figure docs/figures/atypical.png

Each FOLDER holds seed-N run folders (or is a run folder). Writes OUT/ridge_seeds.csv,
OUT/ridge_summary.csv, OUT/atypical_seeds.csv, OUT/atypical_summary.csv and prints the
summaries as markdown tables.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def run_folders(folder: Path) -> list[Path]:
    folder = Path(folder)
    if (folder / "phases.json").exists():
        return [folder]
    subs = sorted((p for p in folder.glob("seed-*") if _complete(p)), key=lambda p: int(p.name.split("-")[1]))
    if not subs:
        raise SystemExit(f"{folder}: no finished run (phases.json) in it or in its seed-N folders.")
    return subs


def _complete(run: Path) -> bool:
    """A finished run: phases.json says ``complete`` (it is rewritten at every checkpoint meanwhile)."""
    try:
        return json.loads((run / "phases.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def _read(run: Path) -> tuple[dict, dict]:
    return json.loads((run / "config.json").read_text()), json.loads((run / "phases.json").read_text())


def _pct(e: dict) -> str:
    v, lo, hi = (e.get(k) for k in ("value", "ci_low", "ci_high"))
    if v is None:
        return "–"
    return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else f"{100 * v:.1f}"


def _mean_sd(v: pd.Series) -> str:
    v = v.dropna()
    return "–" if v.empty else f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f}" if len(v) > 1 else f"{100 * v.mean():.1f}"


# ---------------------------------------------------------------------------------- 1. ridges
def ridge_rows(name: str, folder: Path) -> list[dict]:
    rows = []
    for run in run_folders(folder):
        cfg, ph = _read(run)
        sweep = ph.get("ridge_sweep")
        if not sweep:
            raise SystemExit(f"{run}: no ridge_sweep in phases.json (run it with --ridge 0.1,1e-4,...).")
        df = pd.read_csv(run / "metrics.csv")
        for ridge, per_layer in sweep["per_ridge"].items():
            for layer, r in per_layer.items():
                names = [p["name"] for p in r["phases"]]
                lam_metric = "decoder_lambda" if ridge == sweep["main"] else f"decoder_lambda@ridge={ridge}"
                dof_metric = "decoder_dof" if ridge == sweep["main"] else f"decoder_dof@ridge={ridge}"
                dof = df[(df.layer == layer) & (df.metric == dof_metric)]
                rows.append({
                    "study": name, "seed": cfg["config"]["seed"], "ridge": ridge, "main": ridge == sweep["main"],
                    "layer": layer, "phases": "+".join(names),
                    "constant": bool(names and names[0] == "constant"),
                    "decrease": r["decrease_significant"], "increase": r["increase_significant"],
                    "relative_decrease": r["relative_decrease"]["value"],
                    "relative_decrease_ci": _pct(r["relative_decrease"]),
                    "relative_increase": r["relative_increase"]["value"],
                    "relative_increase_ci": _pct(r["relative_increase"]),
                    "min_iteration": r["min_iteration"],
                    "dof_at_min": float(dof[dof.iteration == r["min_iteration"]].value.mean()) if len(dof) else np.nan,
                    "final_test_accuracy": ph.get("final_accuracy", {}).get("test"),
                })
    return rows


def ridge_summary(seeds: pd.DataFrame) -> pd.DataFrame:
    order = {r: i for i, r in enumerate(["0.0001", "0.001", "0.01", "0.1", "1", "auto"])}
    out = []
    for (study, layer, ridge), g in seeds.groupby(["study", "layer", "ridge"], sort=False):
        n = len(g)
        out.append({"study": study, "layer": layer, "ridge": ridge, "seeds": n,
                    "initial constant": f"{int(g.constant.sum())}/{n}",
                    "decrease": f"{int(g.decrease.sum())}/{n}", "increase": f"{int(g.increase.sum())}/{n}",
                    "decrease %": _mean_sd(g.relative_decrease), "increase %": _mean_sd(g.relative_increase),
                    "increase per seed % [95% CI]": "; ".join(g.relative_increase_ci),
                    "min at": ", ".join(str(int(m)) for m in g.min_iteration),
                    "dof at min": f"{g.dof_at_min.mean():.0f}" if g.dof_at_min.notna().any() else "–",
                    "_order": order.get(ridge, 99)})
    return (pd.DataFrame(out).sort_values(["study", "layer", "_order"], kind="stable").drop(columns="_order")
            .reset_index(drop=True))


# ---------------------------------------------------------------------------------- 2. atypicality
def atypical_rows(fraction: float, folder: Path, layer: str | None = None) -> tuple[list[dict], list[dict]]:
    rows, curves = [], []
    for run in run_folders(folder):
        cfg, ph = _read(run)
        lay = layer or list(ph["layers"])[-1]
        r = ph["layers"][lay]
        z = np.load(run / "samples.npz")
        its, index, g, correct = z["iterations"], z["index"], z["grad_norm"], z["correct"].astype(bool)
        mask_file = run / "atypical.npz"
        if mask_file.exists():
            with np.load(mask_file) as m:
                atyp = m["mask"][index]
        else:  # a plain run: nothing was made atypical
            atyp = np.zeros(len(index), bool)
        share = g[:, atyp].sum(1) / g.sum(1)  # (K,) share of the per-sample gradient norms
        k_min = int(np.searchsorted(its, r["min_iteration"]))
        table = pd.read_parquet(run / "samples.parquet")
        la = table["learned_at"].astype("float64")
        at = table["atypical"].to_numpy(bool) if "atypical" in table else np.zeros(len(table), bool)
        acc_atyp = correct[:, atyp].mean(1) if atyp.any() else np.full(len(its), np.nan)
        row = {
            "fraction": fraction, "seed": cfg["config"]["seed"], "layer": lay,
            "phases": "+".join(p["name"] for p in r["phases"]), "increase_significant": r["increase_significant"],
            "relative_decrease": r["relative_decrease"]["value"], "relative_increase": r["relative_increase"]["value"],
            "relative_increase_ci": _pct(r["relative_increase"]), "min_iteration": r["min_iteration"],
            "n_atypical": int(atyp.sum()), "n_followed": int(len(atyp)),
            "share_at_min": float(share[k_min]) if atyp.any() else np.nan,
            "share_at_end": float(share[-1]) if atyp.any() else np.nan,
            "share_after_min_max": float(share[k_min:].max()) if atyp.any() else np.nan,
            "atypical_fit_at_min": float(acc_atyp[k_min]), "atypical_fit_at_end": float(acc_atyp[-1]),
            "typical_fit_at_min": float(correct[k_min, ~atyp].mean()),
            "learned_at_median_atypical": float(np.nanmedian(la[at])) if at.any() and la[at].notna().any() else np.nan,
            "learned_at_median_typical": float(np.nanmedian(la[~at])),
            "never_learned_atypical": float(la[at].isna().mean()) if at.any() else np.nan,
            "final_train_accuracy": ph.get("final_accuracy", {}).get("train"),
            "final_test_accuracy": ph.get("final_accuracy", {}).get("test"),
        }
        rows.append(row)
        df = pd.read_csv(run / "metrics.csv")
        rec = df[(df.layer == lay) & (df.split == "test") & (df.metric == "reconstruction_mse")].sort_values("iteration")
        for k, it in enumerate(its):
            v = rec[rec.iteration == it].value
            curves.append({"fraction": fraction, "seed": row["seed"], "iteration": int(it),
                           "reconstruction": float(v.iloc[0]) if len(v) else np.nan,
                           "share": float(share[k]) if atyp.any() else np.nan,
                           "atypical_fit": float(acc_atyp[k]), "typical_fit": float(correct[k, ~atyp].mean())})
    return rows, curves


def atypical_summary(seeds: pd.DataFrame) -> pd.DataFrame:
    out = []
    for f, g in seeds.groupby("fraction", sort=True):
        n = len(g)
        fmt = lambda c, pct=True: ("–" if g[c].isna().all() else
                                   f"{g[c].mean() * (100 if pct else 1):.{1 if pct else 2}f}"
                                   + (f" ± {g[c].std(ddof=1) * (100 if pct else 1):.{1 if pct else 2}f}" if n > 1 else ""))
        out.append({"F": f, "seeds": n, "increase": f"{int(g.increase_significant.sum())}/{n}",
                    "increase %": _mean_sd(g.relative_increase),
                    "increase per seed % [95% CI]": "; ".join(g.relative_increase_ci),
                    "decrease %": _mean_sd(g.relative_decrease),
                    "min at": ", ".join(str(int(m)) for m in g.min_iteration),
                    "atypical share of gradient at min": fmt("share_at_min", False),
                    "largest after min": fmt("share_after_min_max", False),
                    "at end": fmt("share_at_end", False),
                    "atypical / typical fit at min %": (("–" if g.atypical_fit_at_min.isna().all() else
                                                         f"{100 * g.atypical_fit_at_min.mean():.0f}")
                                                        + f" / {100 * g.typical_fit_at_min.mean():.0f}"),
                    "atypical learned at (median)": ("–" if g.learned_at_median_atypical.isna().all() else
                                                     ", ".join(f"{v:.0f}" for v in g.learned_at_median_atypical)),
                    "typical learned at (median)": ", ".join(f"{v:.0f}" for v in g.learned_at_median_typical),
                    "atypical never learned %": fmt("never_learned_atypical"),
                    "test accuracy": f"{g.final_test_accuracy.mean():.3f}"})
    return pd.DataFrame(out)


def plot_atypical(curves: pd.DataFrame, seeds: pd.DataFrame, path: Path, setting: str = "CNN on mnist-digits") -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    fracs = sorted(curves.fraction.unique())
    cmap = __import__("matplotlib").colormaps["plasma"]
    colour = {f: cmap(0.85 * i / max(1, len(fracs) - 1)) for i, f in enumerate(fracs)}
    for f in fracs:
        for s, g in curves[curves.fraction == f].groupby("seed"):
            g = g.sort_values("iteration")
            lab = f"F = {f:g}" if s == g.seed.min() and s == curves[curves.fraction == f].seed.min() else None
            axes[0].plot(g.iteration, g.reconstruction / g.reconstruction.iloc[0], "o-", ms=2, lw=1, color=colour[f],
                         label=lab)
            if f > 0:
                axes[1].plot(g.iteration, g.share, "o-", ms=2, lw=1, color=colour[f], label=lab)
                axes[1].axhline(f, color=colour[f], ls=":", lw=0.8)
                axes[2].plot(g.iteration, g.atypical_fit, "o-", ms=2, lw=1, color=colour[f], label=lab)
                axes[2].plot(g.iteration, g.typical_fit, "--", lw=0.8, color=colour[f])
            m = seeds[(seeds.fraction == f) & (seeds.seed == s)].min_iteration
            if len(m):
                for ax in axes:
                    ax.axvline(int(m.iloc[0]), color=colour[f], lw=0.5, alpha=0.5)
    titles = ("test reconstruction MSE / value at iteration 0",
              "made-atypical share of last-layer gradient (dotted: F)",
              "training accuracy: made-atypical (solid), typical (dashed)")
    for ax, t in zip(axes, titles):
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        ax.set_xlim(left=0)
        ax.set_xlabel("iteration")
        ax.set_title(t, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{setting} with F of the training labels replaced by another class "
                 "(thin vertical lines: reconstruction minimum of each run)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ridge", action="append", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--atypical", action="append", default=[], metavar="F=FOLDER")
    ap.add_argument("--layer", default=None, help="Tracked layer of the atypicality study [the last].")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--figure", type=Path, default=None, help="Where to draw the atypicality figure.")
    ap.add_argument("--setting", default="CNN on mnist-digits", help="What the atypicality runs trained (figure title).")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.ridge:
        seeds = pd.DataFrame([r for spec in args.ridge for r in ridge_rows(*_split(spec))])
        seeds.to_csv(args.out / "ridge_seeds.csv", index=False)
        summary = ridge_summary(seeds)
        summary.to_csv(args.out / "ridge_summary.csv", index=False)
        print("## Decoder ridge\n\n" + markdown(summary) + "\n")
    if args.atypical:
        rows, curves = [], []
        for spec in args.atypical:
            f, folder = _split(spec)
            a, c = atypical_rows(float(f), folder, args.layer)
            rows += a
            curves += c
        seeds, curves = pd.DataFrame(rows), pd.DataFrame(curves)
        seeds.to_csv(args.out / "atypical_seeds.csv", index=False)
        curves.to_csv(args.out / "atypical_curves.csv", index=False)
        summary = atypical_summary(seeds)
        summary.to_csv(args.out / "atypical_summary.csv", index=False)
        print("## Atypicality (label noise)\n\n" + markdown(summary) + "\n")
        if args.figure:
            plot_atypical(curves, seeds, args.figure, args.setting)
            print(f"figure: {args.figure}")


def _split(spec: str) -> tuple[str, Path]:
    name, sep, folder = spec.partition("=")
    if not sep:
        raise SystemExit(f"{spec!r}: give NAME=FOLDER.")
    return name, Path(folder)


if __name__ == "__main__":
    main()
