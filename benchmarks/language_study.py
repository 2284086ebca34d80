"""Study: the learning phases of a small GPT on Tiny Shakespeare, read from `phasescope run` folders.

    phasescope run --dataset shakespeare --model gpt --iterations 5000 --points-per-octave 2 \\
        --seeds 0,1,2 --threads 1 --out runs/lm-study
    python benchmarks/language_study.py runs/lm-study --out docs/language

Reads every ``seed-N`` folder under the given folder (or one run folder) and writes, under ``--out``:

* ``language-curves.png``: per block, the test reconstruction error of the last token's one-hot
  (mean over the 65 entries, 95% band, phases shaded) with the token recovery on a second axis,
  beside the model's next-token loss (fit and held-out windows) and the probe's accuracy;
  one line per seed.
* ``language-few.png``: when next tokens are learned, by group: the share of followed fit windows
  whose next-token prediction is correct (and stays correct: "learned") at each checkpoint, for
  frequent / medium / rare next characters (terciles of the training-text frequency) and for
  rare continuations (the next character follows the window's last three characters in under 5%
  of the training text); the reconstruction minima marked.
* ``language.csv``: per seed and block the phases, the reconstruction minimum and the rise after
  it, token recovery at start, minimum and end; ``language-groups.csv``: per seed and group the
  median learned-at, the never-learned and the forgotten-at-least-once shares.

The per-window dynamics come from the samples extension (samples.npz: correctness per checkpoint;
samples.parquet: learned_at, forgotten and the marks target_frequency and
continuation_probability that the text dataset attaches to every window); the grouping is done
here, not in phasescope.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

RARE = 0.05  # a continuation is rare when P(next | last 3 characters) in the training text is below this
GROUPS = ("frequent", "medium", "rare character", "rare continuation", "all")
COLOURS = {"frequent": "#2b8cbe", "medium": "#74a9cf", "rare character": "#f768a1", "rare continuation": "#ae017e",
           "all": "#252525"}


def runs_of(folder: Path) -> list[Path]:
    subs = sorted((p for p in folder.glob("seed-*") if (p / "metrics.csv").exists()), key=lambda p: int(p.name[5:]))
    return subs or [folder]


def load(run: Path) -> dict:
    df = pd.read_csv(run / "metrics.csv")
    phases = json.loads((run / "phases.json").read_text()) if (run / "phases.json").exists() else {"layers": {}}
    cfg = json.loads((run / "config.json").read_text())
    out = {"run": run, "seed": cfg["config"]["seed"], "df": df, "phases": phases, "config": cfg}
    if (run / "samples.npz").exists():
        with np.load(run / "samples.npz") as z:
            out["samples"] = {k: z[k] for k in z.files}
        table = run / "samples.parquet"
        out["table"] = pd.read_parquet(table) if table.exists() else pd.read_csv(run / "samples.csv")
    return out


def series(df: pd.DataFrame, layer: str, split: str, metric: str) -> pd.DataFrame:
    return df[(df.layer == layer) & (df.split == split) & (df.metric == metric)].sort_values("iteration")


def groups(table: pd.DataFrame, train_frequency: pd.Series) -> dict[str, np.ndarray]:
    """Boolean masks over the followed windows, by the next character's frequency tercile (terciles of the
    frequency over the followed windows) and by rare continuation."""
    f = table.target_frequency.to_numpy()
    lo, hi = np.quantile(f, [1 / 3, 2 / 3])
    p = table.continuation_probability.to_numpy()
    return {"frequent": f > hi, "medium": (f > lo) & (f <= hi), "rare character": f <= lo,
            "rare continuation": np.nan_to_num(p, nan=1.0) < RARE, "all": np.ones(len(f), bool)}


def learned_curves(r: dict) -> pd.DataFrame:
    """Per checkpoint and group: the share of windows correct then and at every later checkpoint."""
    s, table = r["samples"], r["table"]
    correct = s["correct"].astype(bool)  # (K, n) in checkpoint order
    stays = np.flip(np.logical_and.accumulate(np.flip(correct, 0), 0), 0)  # correct from k to the end
    masks = groups(table, None)
    rows = []
    for k, it in enumerate(s["iterations"]):
        for g, m in masks.items():
            rows.append({"seed": r["seed"], "iteration": int(it), "group": g, "learned": float(stays[k, m].mean()),
                         "correct": float(correct[k, m].mean()), "n": int(m.sum())})
    return pd.DataFrame(rows)


def group_table(r: dict) -> pd.DataFrame:
    table = r["table"]
    learned = table.learned_at.astype("float64").to_numpy()
    rows = []
    for g, m in groups(table, None).items():
        la = learned[m]
        rows.append({"seed": r["seed"], "group": g, "n": int(m.sum()),
                     "median_learned_at": float(np.nanmedian(la)) if np.isfinite(la).any() else None,
                     "never_learned": float(np.isnan(la).mean()),
                     "forgotten_at_least_once": float((table.forgotten.to_numpy()[m] > 0).mean()),
                     "final_correct": float(table.final_correct.to_numpy()[m].mean())})
    return pd.DataFrame(rows)


def layer_table(r: dict) -> pd.DataFrame:
    df, rows = r["df"], []
    for layer, p in (r["phases"].get("layers") or {}).items():
        rec = series(df, layer, "test", "reconstruction_mse").set_index("iteration").value
        tok = series(df, layer, "test", "token_recovery").set_index("iteration").value
        m = p["min_iteration"]
        rows.append({"seed": r["seed"], "layer": layer, "phases": " ".join(f"{q['name']} {q['start']}-{q['end']}"
                                                                          for q in p["phases"]),
                     "min_iteration": m, "mse_start": rec.iloc[0], "mse_min": rec.loc[m], "mse_end": rec.iloc[-1],
                     "rise": p["relative_increase"]["value"], "rise_significant": p["increase_significant"],
                     "recovery_start": tok.iloc[0], "recovery_at_min": tok.loc[m], "recovery_end": tok.iloc[-1]})
    return pd.DataFrame(rows)


def plot_curves(runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    from phasescope.report import PHASE_COLOURS

    layers = [l for l in runs[0]["df"].layer.unique() if str(l).startswith("blocks")]
    fig = Figure(figsize=(4.2 * (len(layers) + 1), 7.2), layout="constrained")
    axes = fig.subplots(2, len(layers) + 1, squeeze=False)
    shades = ["-", "--", ":"]
    for j, layer in enumerate(layers):
        ax, ax2 = axes[0, j], axes[1, j]
        for i, r in enumerate(runs):
            s = series(r["df"], layer, "test", "reconstruction_mse")
            ax.plot(s.iteration, s.value, shades[i % 3], color="#08519c", lw=1.4, label=f"seed {r['seed']}")
            ax.fill_between(s.iteration, s.ci_low, s.ci_high, color="#08519c", alpha=0.12, lw=0)
            if i == 0:
                for q in (r["phases"].get("layers") or {}).get(layer, {}).get("phases", []):
                    ax.axvspan(q["start"], q["end"], color=PHASE_COLOURS.get(q["name"], "#ddd"), alpha=0.25, lw=0)
            m = (r["phases"].get("layers") or {}).get(layer, {}).get("min_iteration")
            if m is not None:
                ax.axvline(m, color="#08519c", lw=0.8, ls=shades[i % 3], alpha=0.6)
            t = series(r["df"], layer, "test", "token_recovery")
            ax2.plot(t.iteration, t.value, shades[i % 3], color="#238b45", lw=1.4, label=f"token recovery, seed {r['seed']}")
            p = series(r["df"], layer, "test", "probe_accuracy")
            ax2.plot(p.iteration, p.value, shades[i % 3], color="#d94801", lw=1.2,
                     label=f"next-token probe, seed {r['seed']}")
        ax.set_title(f"{layer}: reconstruction of the last token")
        ax.set_ylabel("test MSE per one-hot entry")
        ax2.set_ylabel("accuracy (held-out windows)")
        ax2.set_ylim(0, 1.02)
        for a in (ax, ax2):
            a.set_xscale("symlog", linthresh=1, linscale=0.5)
            a.set_xlim(left=0)
            a.grid(True, alpha=0.3)
            a.set_xlabel("iteration")
    ax, ax2 = axes[0, -1], axes[1, -1]
    for i, r in enumerate(runs):
        for split, colour in (("train", "#6a51a3"), ("test", "#252525")):
            s = series(r["df"], "model", split, "loss")
            ax.plot(s.iteration, s.value, shades[i % 3], color=colour, lw=1.4,
                    label=f"{'fit' if split == 'train' else 'held-out'} windows, seed {r['seed']}")
            a = series(r["df"], "model", split, "accuracy")
            ax2.plot(a.iteration, a.value, shades[i % 3], color=colour, lw=1.4, label=f"{split}, seed {r['seed']}")
    ax.set_title("model: next-token loss (last position)")
    ax.set_ylabel("cross-entropy (nats)")
    ax2.set_title("model: next-token accuracy")
    ax2.set_ylim(0, 1.02)
    for a in (ax, ax2):
        a.set_xscale("symlog", linthresh=1, linscale=0.5)
        a.set_xlim(left=0)
        a.grid(True, alpha=0.3)
        a.set_xlabel("iteration")
        a.legend(fontsize=7)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("GPT (4 x 128) on Tiny Shakespeare: the last token in the residual stream, per block")
    fig.savefig(path, dpi=110)


def plot_few(curves: pd.DataFrame, runs: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    shades = ["-", "--", ":"]
    for i, seed in enumerate(sorted(curves.seed.unique())):
        c = curves[curves.seed == seed]
        for g in GROUPS:
            s = c[c.group == g]
            n = int(s.n.iloc[0]) if len(s) else 0
            ax.plot(s.iteration, s.learned, shades[i % 3], color=COLOURS[g], lw=1.5,
                    label=f"{g} (n={n})" if i == 0 else None)
            ax2.plot(s.iteration, s.correct, shades[i % 3], color=COLOURS[g], lw=1.5)
    for r in runs:
        for layer, p in (r["phases"].get("layers") or {}).items():
            for a in (ax, ax2):
                a.axvline(p["min_iteration"], color="#969696", lw=0.6, ls=":")
    ax.set_title("learned (correct from here on)")
    ax2.set_title("correct at the checkpoint")
    for a in (ax, ax2):
        a.set_xscale("symlog", linthresh=1, linscale=0.5)
        a.set_xlim(left=0)
        a.set_ylim(0, 1.02)
        a.grid(True, alpha=0.3)
        a.set_xlabel("iteration")
        a.set_ylabel("share of followed fit windows")
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Next-character prediction by group (dotted grey: the blocks' reconstruction minima)")
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a --seeds folder (seed-N inside) or one run folder")
    ap.add_argument("--out", type=Path, default=Path("docs/language"))
    a = ap.parse_args()
    runs = [load(p) for p in runs_of(a.folder)]
    a.out.mkdir(parents=True, exist_ok=True)
    layers = pd.concat([layer_table(r) for r in runs], ignore_index=True)
    layers.to_csv(a.out / "language.csv", index=False)
    plot_curves(runs, a.out / "language-curves.png")
    with_samples = [r for r in runs if "samples" in r]
    if with_samples:
        curves = pd.concat([learned_curves(r) for r in with_samples], ignore_index=True)
        grp = pd.concat([group_table(r) for r in with_samples], ignore_index=True)
        grp.to_csv(a.out / "language-groups.csv", index=False)
        plot_few(curves, with_samples, a.out / "language-few.png")
        print(markdown(grp))
    print(markdown(layers))


def markdown(df: pd.DataFrame) -> str:
    """A markdown table (no tabulate needed)."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
