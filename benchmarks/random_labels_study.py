"""Random labels: the tables and the figure of docs/robustness.md's "Random labels" section.

Runs made with ``--atypical random-labels:1`` (every training label redrawn uniformly from the K
classes) are compared, layer by layer, with runs on the clean labels, and with the single-layer
theory at its analogue (``--atypical-kind other`` at f = (K-1)/K: every sample's label is the
prototype's class with probability 1/K, a uniformly random other class otherwise, which is what
redrawing every label uniformly does).

    python benchmarks/random_labels_study.py \\
        --runs "CNN, mnist-digits=SWEEP/runs" --runs "VGG-8 1/2, CIFAR-10 subset=SWEEP2/runs" \\
        --theory THEORY_SWEEP --out OUT --figure docs/figures/random-labels.png

A ``--runs`` FOLDER holds run folders (a sweep's ``runs/``; a folder per run); each finished run
(phases.json ``complete``) counts, grouped by its ``atypical`` option. ``--clean NAME=FOLDER`` adds
clean-label runs of a setting that live elsewhere (e.g. an earlier sweep). Writes OUT/layers.csv
(one row per run and layer), OUT/summary.csv (per setting, labels and layer), OUT/memorisation.csv
(training accuracy on the labels trained on, per checkpoint), OUT/alignment.csv (first layer
against the principal components of input patches) and prints the summaries as markdown.

The first-layer alignment (random-label training is known to align the first layer's weights with
the principal components of the inputs, Maennel et al. 2020): the filters of the first convolution
as vectors over (channel, kx, ky) patches; the input patches' principal components from 20,000
random training patches; the share of the filters' squared norm in the top k components, for the
initial weights (rebuilt from the seed as the run does), for the weights of the last checkpoint
(state.pt) and for their change (random directions put k / D of their norm there); and how diagonal
the filters' second-moment matrix is in the inputs' PC basis (share of its squared Frobenius norm on
the diagonal; 1 = its eigenvectors are the inputs' principal directions; "random": the mean over 200
Gaussian matrices of the same shape).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


# ------------------------------------------------------------------------------------------ runs
def finished_runs(folder: Path) -> list[Path]:
    folder = Path(folder)
    cands = [folder] if (folder / "phases.json").exists() else sorted(p for p in folder.iterdir() if p.is_dir())
    out = []
    for run in cands:
        try:
            if json.loads((run / "phases.json").read_text()).get("status") == "complete":
                out.append(run)
        except (OSError, ValueError):
            pass
    return out


def labels_of(cfg: dict) -> str:
    a = cfg["config"].get("atypical", "none") or "none"
    return "clean" if a == "none" else a


def run_rows(setting: str, run: Path) -> tuple[list[dict], pd.DataFrame]:
    """One row per tracked layer, and the run's training-accuracy curve."""
    cfg = json.loads((run / "config.json").read_text())
    ph = json.loads((run / "phases.json").read_text())
    c = cfg["config"]
    df = pd.read_csv(run / "metrics.csv")
    model = df[df.layer == "model"]
    acc = (model[(model.metric == "accuracy")].pivot_table(index="iteration", columns="split", values="value")
           .sort_index())
    rows = []
    for layer, r in ph["layers"].items():
        k_min = r["min_iteration"]
        rec = df[(df.layer == layer) & (df.split == "test") & (df.metric == "reconstruction_mse")].set_index("iteration")
        rows.append({
            "setting": setting, "labels": labels_of(cfg), "seed": c["seed"], "layer": layer,
            "iterations": c["iterations"], "run": run.name,
            "phases": "+".join(p["name"] for p in r["phases"]),
            "decrease_significant": r["decrease_significant"], "increase_significant": r["increase_significant"],
            "relative_decrease": r["relative_decrease"]["value"],
            "relative_decrease_ci": _ci(r["relative_decrease"]),
            "relative_increase": r["relative_increase"]["value"],
            "relative_increase_ci": _ci(r["relative_increase"]),
            "min_iteration": k_min, "max_after_min_iteration": r.get("max_after_min_iteration"),
            "start": float(rec.value.iloc[0]), "min": float(rec.value.loc[k_min]), "end": float(rec.value.iloc[-1]),
            "train_accuracy_at_min": float(acc["train"].get(k_min, np.nan)) if "train" in acc else np.nan,
            "final_train_accuracy": ph.get("final_accuracy", {}).get("train"),
            "final_test_accuracy": ph.get("final_accuracy", {}).get("test"),
        })
    curve = pd.DataFrame({"setting": setting, "labels": labels_of(cfg), "seed": c["seed"],
                          "iteration": acc.index.to_numpy(), "train_accuracy": acc["train"].to_numpy(),
                          "test_accuracy": acc["test"].to_numpy()})
    return rows, curve


def _ci(e: dict) -> str:
    v, lo, hi = (e.get(k) for k in ("value", "ci_low", "ci_high"))
    return "–" if v is None else f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _ms(v: pd.Series, pct: bool = True) -> str:
    v = v.dropna().astype(float) * (100 if pct else 1)
    if v.empty:
        return "–"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def summary(layers: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (setting, labels, layer), g in layers.groupby(["setting", "labels", "layer"], sort=False):
        n = len(g)
        out.append({"setting": setting, "labels": labels, "layer": layer, "seeds": n,
                    "iterations": int(g.iterations.iloc[0]),
                    "decrease": f"{int(g.decrease_significant.sum())}/{n}",
                    "increase": f"{int(g.increase_significant.sum())}/{n}",
                    "decrease %": _ms(g.relative_decrease), "increase %": _ms(g.relative_increase),
                    "increase per seed % [95% CI]": "; ".join(g.relative_increase_ci),
                    "min at": ", ".join(str(int(m)) for m in g.min_iteration),
                    "train acc. at min": f"{g.train_accuracy_at_min.mean():.2f}",
                    "final train acc.": f"{g.final_train_accuracy.astype(float).mean():.3f}",
                    "test acc.": f"{g.final_test_accuracy.astype(float).mean():.3f}"})
    return pd.DataFrame(out)


def memorisation(curves: pd.DataFrame) -> pd.DataFrame:
    """When the training accuracy (on the labels trained on) first reaches 0.5, 0.9, 0.99."""
    out = []
    for (setting, labels, seed), g in curves.groupby(["setting", "labels", "seed"], sort=False):
        g = g.sort_values("iteration")
        row = {"setting": setting, "labels": labels, "seed": seed}
        for t in (0.5, 0.9, 0.99):
            hit = g[g.train_accuracy >= t]
            row[f"train acc >= {t:g} at"] = int(hit.iteration.iloc[0]) if len(hit) else None
        row["final train acc."] = float(g.train_accuracy.iloc[-1])
        out.append(row)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------ first-layer PCA
def first_conv(state: dict) -> np.ndarray:
    """Weights of the first convolution, (filters, channel * kx * ky)."""
    for k, v in state.items():
        if k.endswith("weight") and v.ndim == 4:
            return v.detach().double().reshape(v.shape[0], -1).numpy()
    raise SystemExit("no convolution in the model state")


def patch_pcs(x: np.ndarray, k: int, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Principal directions and variances of n random k x k patches (zero-padded as the conv is)."""
    rng = np.random.default_rng(seed)
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    i = rng.integers(len(x), size=n)
    r = rng.integers(x.shape[2], size=n)
    c = rng.integers(x.shape[3], size=n)
    patches = np.stack([xp[a, :, b:b + k, d:d + k].reshape(-1) for a, b, d in zip(i, r, c)])
    patches = patches - patches.mean(0)
    evals, evecs = np.linalg.eigh(patches.T @ patches / n)
    order = np.argsort(evals)[::-1]
    return evecs[:, order], evals[order]


def top_share(w: np.ndarray, pcs: np.ndarray, k: int) -> float:
    """Share of the filters' squared norm in the top-k principal directions."""
    proj = w @ pcs[:, :k]
    return float((proj ** 2).sum() / (w ** 2).sum())


def diagonal_share(w: np.ndarray, pcs: np.ndarray) -> float:
    """How diagonal the filters' second-moment matrix W^T W is in the input PC basis: the share of its
    squared Frobenius norm on the diagonal (1 = the filters' covariance has the inputs' principal
    directions as its own eigenvectors, the alignment Maennel et al. report for random labels)."""
    a = pcs.T @ (w.T @ w) @ pcs
    return float((np.diag(a) ** 2).sum() / (a ** 2).sum())


def alignment_rows(setting: str, run: Path, ks=(1, 3)) -> list[dict]:
    import torch

    from phasescope.data import load_dataset
    from phasescope.run.models import build_model

    cfg = json.loads((run / "config.json").read_text())
    c = cfg["config"]
    data = load_dataset(c["dataset"], data_dir=c.get("data_dir"), train_size=c.get("train_size"), seed=c["seed"],
                        num_classes=c.get("num_classes"))
    torch.manual_seed(c["seed"])
    model = build_model(c["model"], data.input_shape, data.num_classes, c["width"])
    w0 = first_conv(model.state_dict())
    state = torch.load(run / "state.pt", map_location="cpu", weights_only=False)
    w1 = first_conv(state["model"])
    ksize = int(round(np.sqrt(w0.shape[1] / data.input_shape[0])))
    pcs, evals = patch_pcs(data.x_train.numpy(), ksize, seed=c["seed"])
    rows = []
    for k in ks:
        rows.append({"setting": setting, "labels": labels_of(cfg), "seed": c["seed"], "k": k, "D": w0.shape[1],
                     "iteration": int(state["iteration"]),
                     "input variance in top k": float(evals[:k].sum() / evals.sum()),
                     "random": k / w0.shape[1],
                     "initial weights": top_share(w0, pcs, k), "final weights": top_share(w1, pcs, k),
                     "change of weights": top_share(w1 - w0, pcs, k),
                     "diagonal share, random": float(np.mean([diagonal_share(g, pcs) for g in
                                                              np.random.default_rng(1).standard_normal((200, *w0.shape))])),
                     "diagonal share, initial": diagonal_share(w0, pcs),
                     "diagonal share, final": diagonal_share(w1, pcs),
                     "diagonal share, change": diagonal_share(w1 - w0, pcs)})
    return rows


# ---------------------------------------------------------------------------------------- theory
def theory_rows(folder: Path) -> pd.DataFrame:
    df = pd.read_csv(Path(folder) / "sweep.csv")
    return df


def theory_summary(t: pd.DataFrame) -> pd.DataFrame:
    out = []
    for v, g in t.groupby("value", sort=True):
        n = len(g)
        out.append({g.parameter.iloc[0]: v, "seeds": n,
                    "decrease": f"{int(g.decrease_significant.astype(bool).sum())}/{n}",
                    "increase": f"{int(g.increase_significant.astype(bool).sum())}/{n}",
                    "decrease %": _ms(g.relative_decrease), "increase %": _ms(g.relative_increase),
                    "min at": ", ".join(str(int(m)) for m in g.min_iteration),
                    "phases": "; ".join(g.phases)})
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------- figure
def plot(curves_rec: pd.DataFrame, mem: pd.DataFrame, align: pd.DataFrame, theory: Path | None, path: Path) -> None:
    from matplotlib.figure import Figure

    settings = list(dict.fromkeys(curves_rec.setting))
    ncol = len(settings) + (1 if theory else 0)
    fig = Figure(figsize=(4.4 * ncol, 7.2), layout="constrained")
    axes = fig.subplots(2, ncol, squeeze=False)
    cmap = __import__("matplotlib").colormaps["viridis"]
    for j, s in enumerate(settings):
        g = curves_rec[curves_rec.setting == s]
        layers = list(dict.fromkeys(g.layer))
        col = {l: cmap(0.85 * i / max(1, len(layers) - 1)) for i, l in enumerate(layers)}
        for (labels, layer, seed), h in g.groupby(["labels", "layer", "seed"], sort=False):
            h = h.sort_values("iteration")
            first = seed == g[(g.labels == labels) & (g.layer == layer)].seed.min()
            axes[0, j].plot(h.iteration, h.value / h.value.iloc[0], "-" if labels != "clean" else "--",
                            marker="o", ms=2, lw=1, color=col[layer],
                            label=f"{layer}, {'random labels' if labels != 'clean' else 'clean'}" if first else None)
        axes[0, j].set_title(f"{s}\ntest reconstruction MSE / value at 0 (solid: random labels)", fontsize=9)
        m = mem[mem.setting == s]
        for (labels, seed), h in m.groupby(["labels", "seed"], sort=False):
            h = h.sort_values("iteration")
            first = seed == m[m.labels == labels].seed.min()
            c = "C3" if labels != "clean" else "C0"
            axes[1, j].plot(h.iteration, h.train_accuracy, "-", marker="o", ms=2, lw=1, color=c,
                            label=f"train, {'random labels' if labels != 'clean' else 'clean'}" if first else None)
            axes[1, j].plot(h.iteration, h.test_accuracy, ":", lw=1, color=c,
                            label=f"test, {'random labels' if labels != 'clean' else 'clean'}" if first else None)
        axes[1, j].set_title(f"{s}\naccuracy on the labels trained on (dotted: clean test split)", fontsize=9)
    if theory:
        t = pd.read_csv(Path(theory) / "metrics.csv")
        t = t[(t.split == "test") & (t.metric == "reconstruction_mse") & (t.layer == "logits")]
        key = "atypical_fraction" if "atypical_fraction" in t else None
        fr = sorted(t[key].unique())
        others = iter(["C1", "C3", "C4", "C5", "C6"])
        tcol = {f: "C0" if f == 0 else next(others) for f in fr}
        tlab = {f: "f = 0 (clean)" if f == 0 else (f"f = {f:g} (= random labels, K = {int(round(1 / (1 - f)))})"
                                                  if abs(f - round(1 - 1 / round(1 / (1 - f)), 6)) < 1e-9 and f >= 0.5
                                                  else f"f = {f:g} mislabelled") for f in fr}
        for (f, seed), h in t.groupby([key, "seed"]):
            h = h.sort_values("iteration")
            axes[0, -1].plot(h.iteration, h.value / h.value.iloc[0], "-" if f > 0 else "--", lw=1, color=tcol[f],
                             label=tlab[f] if seed == t.seed.min() else None)
        axes[0, -1].set_title("single-layer theory, atypical-kind other\ntest reconstruction / value at 0", fontsize=9)
        tm = pd.read_csv(Path(theory) / "metrics.csv")
        tm = tm[(tm.metric == "accuracy") & (tm.split == "train")]
        for (f, seed), h in tm.groupby([key, "seed"]):
            h = h.sort_values("iteration")
            axes[1, -1].plot(h.iteration, h.value, "-" if f > 0 else "--", lw=1, color=tcol[f],
                             label=tlab[f] if seed == tm.seed.min() else None)
        axes[1, -1].set_title("single-layer theory: training accuracy (on the labels trained on)", fontsize=9)
    for ax in axes.ravel():
        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        ax.set_xlim(left=0)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join("–" if (isinstance(v, float) and np.isnan(v)) else
                                (f"{v:.3f}" if isinstance(v, float) else str(v)) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", action="append", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--theory", type=Path, default=None, help="A `phasescope theory --sweep` folder.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--no-alignment", action="store_true", help="Skip the first-layer PCA alignment.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves, recs, align = [], [], [], []
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        for run in finished_runs(Path(folder)):
            r, c = run_rows(name, run)
            rows += r
            curves.append(c)
            df = pd.read_csv(run / "metrics.csv")
            rec = df[(df.split == "test") & (df.metric == "reconstruction_mse") & df.layer.isin([x["layer"] for x in r])]
            recs.append(rec.assign(setting=name, labels=r[0]["labels"], seed=r[0]["seed"]))
            if not args.no_alignment and (run / "state.pt").exists():
                align += alignment_rows(name, run)
    layers, curves, recs = pd.DataFrame(rows), pd.concat(curves), pd.concat(recs)
    layers.to_csv(args.out / "layers.csv", index=False)
    curves.to_csv(args.out / "memorisation.csv", index=False)
    s = summary(layers)
    s.to_csv(args.out / "summary.csv", index=False)
    print("## Phases per layer\n\n" + markdown(s) + "\n")
    m = memorisation(curves)
    print("## Memorisation\n\n" + markdown(m) + "\n")
    if align:
        a = pd.DataFrame(align)
        a.to_csv(args.out / "alignment.csv", index=False)
        agg = (a.groupby(["setting", "labels", "k"], sort=False)
               [["D", "input variance in top k", "random", "initial weights", "final weights", "change of weights",
                 "diagonal share, random", "diagonal share, initial", "diagonal share, final", "diagonal share, change"]]
               .mean().reset_index())
        print("## First-layer alignment with the input patches' principal components (mean over seeds)\n\n"
              + markdown(agg) + "\n")
    if args.theory:
        t = theory_rows(args.theory)
        t.to_csv(args.out / "theory.csv", index=False)
        print("## Theory\n\n" + markdown(theory_summary(t)) + "\n")
    if args.figure:
        plot(recs, curves, pd.DataFrame(align), args.theory, args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
