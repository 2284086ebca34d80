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
* with ``--window-run RUN`` (a run with ``--token-window K``), ``language-window.png``/``.csv``: per block,
  the recovery of each of the last K tokens over training.
* with ``--lags K``, ``language-lags.png``/``.csv``: at initialisation and at the end, how often the
  decoder recovers each of the last K tokens from the last position (``token_window=K``).
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


def ngram_levels(orders=(0, 1, 2, 3), k: float = 0.1) -> dict[int, float]:
    """Held-out cross-entropy (nats per character) of character n-gram models fitted on the training text
    (add-k smoothing): order 0 = unigram frequencies, order n = P(next | the n characters before)."""
    from phasescope.data import load_dataset

    d = load_dataset("shakespeare")
    from phasescope.data.text import CharVocabulary, shakespeare_text

    ids = CharVocabulary(d.classes).encode(shakespeare_text())
    v, n_train = d.num_classes, d.info["split"]["train_tokens"]
    train, test = ids[:n_train], ids[n_train:]
    out = {}
    for n in orders:
        def codes(a, length):
            c = np.zeros(len(a) - length + 1, dtype=np.int64)
            for j in range(length):
                c = c * v + a[j : len(a) - length + 1 + j]
            return c
        full_keys, full_counts = np.unique(codes(train, n + 1), return_counts=True)
        q = codes(test, n + 1)
        pos = np.clip(np.searchsorted(full_keys, q), 0, len(full_keys) - 1)
        num = np.where(full_keys[pos] == q, full_counts[pos], 0) + k
        if n:
            head_keys, head_counts = np.unique(codes(train[:-1], n), return_counts=True)
            h = q // v
            pos = np.clip(np.searchsorted(head_keys, h), 0, len(head_keys) - 1)
            den = np.where(head_keys[pos] == h, head_counts[pos], 0) + k * v
        else:
            den = len(train) + k * v
        out[n] = float(-np.log(num / den).mean())
    return out


def plot_curves(runs: list[dict], path: Path, levels: dict[int, float] | None = None) -> None:
    from matplotlib.figure import Figure

    from phasescope.outputs.figures import PHASE_COLOURS

    layers = [l for l in runs[0]["df"].layer.unique() if str(l).startswith("blocks")]
    fig = Figure(figsize=(4.2 * (len(layers) + 1), 10.4), layout="constrained")
    axes = fig.subplots(3, len(layers) + 1, squeeze=False)
    shades = ["-", "--", ":"]
    zoom = axes[1, -1]  # the first iterations of every block, relative to the initialisation
    for j, layer in enumerate(layers):
        ax, ax2 = axes[0, j], axes[2, j]
        zax = axes[1, j]
        for i, r in enumerate(runs):
            s = series(r["df"], layer, "test", "reconstruction_mse")
            s = s[s.iteration <= 32]
            rel = s.value / s.value.iloc[0]
            zax.plot(s.iteration, rel, shades[i % 3], color="#08519c", lw=1.4, label=f"seed {r['seed']}")
            zax.fill_between(s.iteration, s.ci_low / s.value.iloc[0], s.ci_high / s.value.iloc[0], color="#08519c",
                             alpha=0.1, lw=0)
        zax.axhline(1, color="#969696", lw=0.8)
        zax.set_ylim(0.8, 1.6)
        zax.set_title(f"{layer}: first 32 iterations")
        zax.set_ylabel("test MSE / MSE at initialisation")
        zax.set_xscale("symlog", linthresh=1, linscale=0.5)
        zax.set_xlim(0, 32)
        zax.grid(True, alpha=0.3)
        zax.set_xlabel("iteration")
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
    zoom.set_axis_off()
    zoom.text(0.02, 0.5, "Middle row: the first 32 iterations,\neach block's test reconstruction error\ndivided by "
              "its value at initialisation\n(bands: 95% intervals of the mean;\nthe phase test pairs the samples). Top row: phases of seed 0\nshaded (grey constant, green "
              "decrease,\nred increase); vertical lines: each\nseed's reconstruction minimum.",
              transform=zoom.transAxes, fontsize=9, va="center")
    ax, ax2 = axes[0, -1], axes[2, -1]
    for i, r in enumerate(runs):
        for split, colour in (("train", "#6a51a3"), ("test", "#252525")):
            s = series(r["df"], "model", split, "loss")
            ax.plot(s.iteration, s.value, shades[i % 3], color=colour, lw=1.4,
                    label=f"{'fit' if split == 'train' else 'held-out'} windows, seed {r['seed']}")
            a = series(r["df"], "model", split, "accuracy")
            ax2.plot(a.iteration, a.value, shades[i % 3], color=colour, lw=1.4, label=f"{split}, seed {r['seed']}")
    for n, level in (levels or {}).items():
        ax.axhline(level, color="#969696", lw=0.8, ls=":")
        ax.text(0.02, level, f"{n + 1}-gram", transform=ax.get_yaxis_transform(), fontsize=7, va="bottom",
                color="#636363")
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
    axes[2, 0].legend(fontsize=7)
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


def lag_profile(run: Path, lags: int, bootstrap: int = 200) -> pd.DataFrame:
    """How far back the last position's residual stream holds the tokens, at initialisation and at the end:
    the run's model (its initialisation rebuilt from the seed; its final weights from state.pt) measured once
    each with ``token_window=lags`` on the run's own fit and test windows (rows ``token_recovery@lag=J``)."""
    import torch

    from phasescope import PhaseTracker, RunConfig
    from phasescope.data import load_dataset
    from phasescope.run.experiment import measurement_sets
    from phasescope.run.models import build_model, default_layers
    from phasescope.outputs.runs import load_state

    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text())["config"])
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_size=cfg.train_size, seed=cfg.seed,
                        context=cfg.context)
    torch.manual_seed(cfg.seed)  # as run_experiment builds it: the run's initialisation
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.width)
    fit, test = measurement_sets(data, cfg)
    layers = ["embed", *[n for n in (cfg.layers or default_layers(model)) if n != "embed"]]
    state, _ = load_state(run)
    rows = []
    for when, weights in (("init", None), ("end", state["model"])):
        if weights is not None:
            model.load_state_dict(weights)
        t = PhaseTracker(model, layers, fit, test, schedule=[0], target="tokens", token_window=lags,
                         vocab_size=data.info["vocab_size"], bootstrap=bootstrap, seed=cfg.seed)
        t.measure(model, 0)
        df = t.results()
        df = df[(df.split == "test") & df.metric.str.startswith("token_recovery@lag=")]
        for r in df.itertuples():
            rows.append({"seed": cfg.seed, "when": when, "iteration": 0 if when == "init" else int(state["iteration"]),
                         "layer": r.layer, "lag": int(r.metric.split("=")[1]), "token_recovery": r.value,
                         "ci_low": r.ci_low, "ci_high": r.ci_high})
    return pd.DataFrame(rows)


def plot_lags(lags: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    layers = sorted(dict.fromkeys(lags.layer), key=lambda n: (n != "embed", n))  # the embedding first
    fig = Figure(figsize=(4.0 * len(layers), 3.4), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, layer in zip(axes, layers):
        first = lags.seed.min()
        for (when, seed), g in lags[lags.layer == layer].groupby(["when", "seed"]):
            g = g.sort_values("lag")
            label = (f"end (iteration {int(g.iteration.iloc[0])})" if when == "end" else "initialisation")
            ax.plot(g.lag, g.token_recovery, "o-" if when == "end" else "s--", ms=3,
                    color="#08519c" if when == "end" else "#969696", label=label if seed == first else None)
        ax.set_title(layer)
        ax.set_xlabel("lag (tokens before the last)")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("token recovery (held-out windows)")
    axes[0].legend(fontsize=7)
    seeds = ", ".join(str(v) for v in sorted(lags.seed.unique()))
    fig.suptitle(f"Which earlier tokens the last position's residual stream holds (linear one-hot decoder; seeds {seeds})")
    fig.savefig(path, dpi=110)


def plot_window(r: dict, path: Path) -> pd.DataFrame:
    """A run with ``--token-window K``: per block, the window's reconstruction error (phases shaded) and the
    recovery of each of the last K tokens over training (rows ``token_recovery@lag=J``)."""
    from matplotlib.figure import Figure

    from phasescope.outputs.figures import PHASE_COLOURS

    df = r["df"]
    lag_rows = df[(df.split == "test") & df.metric.str.startswith("token_recovery@lag=")].copy()
    lag_rows["lag"] = lag_rows.metric.str.split("=").str[1].astype(int)
    layers = [l for l in df.layer.unique() if str(l).startswith("blocks")]
    k = int(lag_rows.lag.max()) + 1
    fig = Figure(figsize=(4.2 * len(layers), 6.6), layout="constrained")
    axes = fig.subplots(2, len(layers), squeeze=False)
    colours = ["#08306b", "#2171b5", "#6baed6", "#c6dbef", "#fdae6b", "#e6550d", "#a63603", "#7f2704"]
    for j, layer in enumerate(layers):
        ax, ax2 = axes[0, j], axes[1, j]
        s = series(df, layer, "test", "reconstruction_mse")
        ax.plot(s.iteration, s.value, "-", color="#252525", lw=1.4, label=f"last {k} tokens")
        ax.fill_between(s.iteration, s.ci_low, s.ci_high, color="#252525", alpha=0.12, lw=0)
        for q in (r["phases"].get("layers") or {}).get(layer, {}).get("phases", []):
            ax.axvspan(q["start"], q["end"], color=PHASE_COLOURS.get(q["name"], "#ddd"), alpha=0.25, lw=0)
        for lag in range(k):
            m = series(df, layer, "test", f"reconstruction_mse@lag={lag}")
            ax.plot(m.iteration, m.value, "--", color=colours[lag % len(colours)], lw=1, label=f"lag {lag}")
            g = lag_rows[(lag_rows.layer == layer) & (lag_rows.lag == lag)].sort_values("iteration")
            ax2.plot(g.iteration, g.value, "-", color=colours[lag % len(colours)], lw=1.5, label=f"lag {lag}")
        ax.set_title(f"{layer}: the last {k} tokens")
        ax.set_ylabel("test MSE per one-hot entry")
        ax2.set_ylabel("token recovery (held-out windows)")
        ax2.set_ylim(0, 1.02)
        for a in (ax, ax2):
            a.set_xscale("symlog", linthresh=1, linscale=0.5)
            a.set_xlim(left=0)
            a.grid(True, alpha=0.3)
            a.set_xlabel("iteration")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle(f"The last {k} tokens in the residual stream at the last position (seed {r['seed']}; lag J = J tokens "
                 "before the last)")
    fig.savefig(path, dpi=110)
    return lag_rows.pivot_table(index="iteration", columns=["layer", "lag"], values="value")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="a --seeds folder (seed-N inside) or one run folder")
    ap.add_argument("--out", type=Path, default=Path("docs/language"))
    ap.add_argument("--lags", type=int, default=0, help="also measure the last K tokens at initialisation and at "
                    "the end of each run (language-lags.png, language-lags.csv) [0: no]")
    ap.add_argument("--window-run", type=Path, default=None, help="a run with --token-window K: draws "
                    "language-window.png (per block, each of the last K tokens over training)")
    a = ap.parse_args()
    runs = [load(p) for p in runs_of(a.folder)]
    a.out.mkdir(parents=True, exist_ok=True)
    layers = pd.concat([layer_table(r) for r in runs], ignore_index=True)
    layers.to_csv(a.out / "language.csv", index=False)
    levels = ngram_levels()
    print("held-out cross-entropy of character n-gram models (nats):",
          ", ".join(f"{n + 1}-gram {v:.3f}" for n, v in levels.items()))
    plot_curves(runs, a.out / "language-curves.png", levels)
    with_samples = [r for r in runs if "samples" in r]
    if with_samples:
        curves = pd.concat([learned_curves(r) for r in with_samples], ignore_index=True)
        grp = pd.concat([group_table(r) for r in with_samples], ignore_index=True)
        grp.to_csv(a.out / "language-groups.csv", index=False)
        plot_few(curves, with_samples, a.out / "language-few.png")
        print(markdown(grp))
    print(markdown(layers))
    if a.window_run is not None:
        w = load(a.window_run)
        table = plot_window(w, a.out / "language-window.png")
        table.to_csv(a.out / "language-window.csv")
        print(markdown(layer_table(w)))
    if a.lags:
        lag = pd.concat([lag_profile(r["run"], a.lags) for r in runs], ignore_index=True)
        lag.to_csv(a.out / "language-lags.csv", index=False)
        plot_lags(lag, a.out / "language-lags.png")
        print(markdown(lag.pivot_table(index=["when", "layer"], columns="lag", values="token_recovery").reset_index()))


def markdown(df: pd.DataFrame) -> str:
    """A markdown table (no tabulate needed)."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
