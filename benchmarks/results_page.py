"""docs/results.md: every measured setting in one page, generated from the committed result files.

    python benchmarks/results_page.py                   # reads docs/results/sources.toml, writes docs/results.md
    python benchmarks/results_page.py --check           # exit 1 if docs/results.md is not what the files give

Sources (docs/results/sources.toml says which, with the command that made each):

* run folders under docs/results/ (any folder with a phases.json; config.json gives the setting);
* tables of runs: a sweep's ``sweep.csv``, a ``--seeds`` run's ``seeds.csv``, copied under docs/;
* ``phasescope theory --sweep`` tables (docs/figures/theory/*.csv and the like).

Per setting (dataset, model, width, iterations, labels, decoder, device, layer) the page gives the
seeds, in how many all three phases were found (a significant decrease and a significant increase
after the minimum), the relative decrease and increase (mean ± sd over seeds; with one seed its 95%
paired-bootstrap interval), where the minimum was, the test accuracy, and what failed or was not
found. Nothing is typed in by hand except the sources file.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["dataset", "model", "width", "iterations", "labels", "decoder", "device", "layer"]


# ----------------------------------------------------------------------------------- reading
def dataset_name(cfg: dict) -> str:
    d = cfg.get("data", {})
    name = d.get("name") or cfg["config"]["dataset"]
    n = d.get("n_train")
    return f"{name} ({n:,} train)" if n else name


def device_of(cfg: dict) -> str:
    dev = cfg["config"].get("device", "auto")
    torch_version = cfg.get("versions", {}).get("torch", "")
    if dev.startswith("cuda") or "+cu" in torch_version:
        return "GPU"
    return "CPU"


def folder_rows(run: Path, meta: dict) -> list[dict]:
    ph = json.loads((run / "phases.json").read_text())
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else None
    c = cfg["config"] if cfg else {}
    base = {
        "dataset": meta.get("dataset") or (dataset_name(cfg) if cfg else "?"),
        "model": meta.get("model") or c.get("model", "?"),
        "width": float(meta.get("width", c.get("width", np.nan))),
        "iterations": int(meta.get("iterations", c.get("iterations", ph.get("checkpoints", [0])[-1]))),
        "labels": meta.get("labels") or (c.get("atypical") or "none"),
        "decoder": meta.get("decoder") or _decoder(c),
        "device": meta.get("device") or (device_of(cfg) if cfg else "?"),
        "seed": int(meta.get("seed", c.get("seed", 0))),
        "status": ph.get("status", "complete"),
        "final_test_accuracy": ph.get("final_accuracy", {}).get("test"),
        "final_train_accuracy": ph.get("final_accuracy", {}).get("train"),
        "source": meta.get("source", str(run.relative_to(ROOT))),
        "command": meta.get("command", ""),
        "note": meta.get("note", ""),
    }
    rows = []
    for layer, r in ph["layers"].items():
        rows.append({**base, "layer": layer, **_phase_fields(r)})
    return rows


def _decoder(c: dict) -> str:
    dec = c.get("decoder", "linear")
    ridge = c.get("relative_ridge", 0.1)
    if isinstance(ridge, list):
        ridge = ridge[0]
    return dec if dec != "linear" else f"linear (ridge {ridge})"


def _phase_fields(r: dict) -> dict:
    return {
        "phases": "+".join(p["name"] for p in r["phases"]),
        "decrease_significant": bool(r["decrease_significant"]),
        "increase_significant": bool(r["increase_significant"]),
        "min_iteration": r["min_iteration"],
        "min_value": r["min_value"]["value"] if isinstance(r["min_value"], dict) else r["min_value"],
        "relative_decrease": r["relative_decrease"]["value"],
        "relative_decrease_ci_low": r["relative_decrease"]["ci_low"],
        "relative_decrease_ci_high": r["relative_decrease"]["ci_high"],
        "relative_increase": r["relative_increase"]["value"],
        "relative_increase_ci_low": r["relative_increase"]["ci_low"],
        "relative_increase_ci_high": r["relative_increase"]["ci_high"],
    }


def table_rows(entry: dict) -> list[dict]:
    """Rows of a sweep.csv or seeds.csv: the table's columns, the entry's keys where the table has none."""
    df = pd.read_csv(ROOT / entry["path"])
    rows = []
    for r in df.to_dict("records"):
        status = r.get("status", "complete")
        phases = r.get("phases")
        three = r.get("three_phases")
        row = {
            "dataset": entry.get("dataset", "?"), "model": r.get("model", entry.get("model", "?")),
            "width": float(r.get("width", entry.get("width", np.nan))),
            "iterations": int(r.get("iterations", entry.get("iterations", 0))),
            "labels": _labels(r.get("atypical", entry.get("labels", "none"))),
            "decoder": entry.get("decoder", "linear (ridge 0.1)"), "device": entry.get("device", "?"),
            "seed": int(r["seed"]), "status": status if isinstance(status, str) else "complete",
            "final_test_accuracy": r.get("final_test_accuracy"), "final_train_accuracy": r.get("final_train_accuracy"),
            "source": entry["path"], "command": entry.get("command", ""), "note": entry.get("note", ""),
            "layer": r.get("layer"), "phases": phases if isinstance(phases, str) else "",
            "min_iteration": r.get("min_iteration"), "min_value": r.get("min_value"),
        }
        for k in ("relative_decrease", "relative_increase"):
            for s in ("", "_ci_low", "_ci_high"):
                row[k + s] = r.get(k + s)
        # tables store "all three phases" (decrease and increase significant); a phase that is
        # listed in the phases string was significant
        ph = row["phases"].split("+") if row["phases"] else []
        row["decrease_significant"] = "decrease" in ph
        row["increase_significant"] = "increase" in ph
        if isinstance(three, (bool, np.bool_)) and three and not (row["decrease_significant"] and row["increase_significant"]):
            row["decrease_significant"] = row["increase_significant"] = True
        rows.append(row)
    return rows


def _labels(v) -> str:
    return "none" if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else str(v)


def theory_rows(entry: dict) -> list[dict]:
    df = pd.read_csv(ROOT / entry["path"])
    rows = []
    for r in df.to_dict("records"):
        rows.append({"source": entry["path"], "command": entry.get("command", ""), "parameter": r["parameter"],
                     "value": r["value"], "seed": r["seed"], "phases": r["phases"],
                     "decrease_significant": bool(r["decrease_significant"]),
                     "increase_significant": bool(r["increase_significant"]),
                     "relative_decrease": r["relative_decrease"], "relative_increase": r["relative_increase"],
                     "relative_increase_ci_low": r["relative_increase_ci_low"],
                     "relative_increase_ci_high": r["relative_increase_ci_high"],
                     "min_iteration": r["min_iteration"], "extra": entry.get("fixed", "")})
    return rows


def collect(sources: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    meta = {str(ROOT / f["path"]): f for f in sources.get("folder", [])}
    rows = []
    runs = sorted(p.parent for p in (ROOT / "docs" / "results").rglob("phases.json"))
    for run in runs:
        parent = meta.get(str(run.parent), {})  # seed-N folders take their parent's entry
        m = {**parent, **meta.get(str(run), {})}
        if parent and "source" not in m:
            m["source"] = str(run.parent.relative_to(ROOT))
        rows += folder_rows(run, m)
    theory = []
    for t in sources.get("table", []):
        if t.get("format") == "theory":
            theory += theory_rows(t)
        else:
            rows += table_rows(t)
    return pd.DataFrame(rows), pd.DataFrame(theory)


# ----------------------------------------------------------------------------------- writing
def pct_sd(v: pd.Series) -> str:
    v = v.dropna().astype(float) * 100
    if v.empty:
        return "–"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def pct_ci(g: pd.DataFrame, k: str) -> str:
    r = g.iloc[0]
    v, lo, hi = r[k], r.get(k + "_ci_low"), r.get(k + "_ci_high")
    if pd.isna(v):
        return "–"
    return f"{100 * v:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if pd.notna(lo) and pd.notna(hi) else f"{100 * v:.1f}"


def setting_table(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    done = rows[rows.status == "complete"]
    for key, g in done.groupby(KEYS + ["source"], sort=False, dropna=False):
        n = len(g)
        three = int((g.decrease_significant & g.increase_significant).sum())
        missing = []
        if (~g.decrease_significant).any():
            missing.append(f"no significant decrease in {int((~g.decrease_significant).sum())}/{n}")
        if (~g.increase_significant).any():
            missing.append(f"no significant increase in {int((~g.increase_significant).sum())}/{n}")
        note = "; ".join(x for x in ["; ".join(missing), g.note.iloc[0]] if x)
        acc = g.final_test_accuracy.dropna().astype(float)
        out.append({
            "dataset": key[0], "model": key[1], "width": f"{key[2]:g}" if pd.notna(key[2]) else "–",
            "iterations": f"{int(key[3]):,}", "labels": key[4], "decoder": key[5], "device": key[6], "layer": key[7],
            "seeds": ", ".join(str(s) for s in sorted(g.seed.unique())),
            "all three phases": f"{three}/{n}",
            "decrease %": pct_sd(g.relative_decrease) if n > 1 else pct_ci(g, "relative_decrease"),
            "increase %": pct_sd(g.relative_increase) if n > 1 else pct_ci(g, "relative_increase"),
            "minimum at": ", ".join(str(int(m)) for m in g.min_iteration),
            "R_min": f"{g.min_value.astype(float).mean():.4g}",
            "test acc.": f"{acc.mean():.3f}" if len(acc) else "–",
            "not found / notes": note or "–",
            "source": key[8],
        })
    df = pd.DataFrame(out)
    order = df.assign(_w=[float(w) if w != "–" else 0 for w in df.width],
                      _i=[int(i.replace(",", "")) for i in df.iterations])
    return (df.loc[order.sort_values(["dataset", "model", "_w", "_i", "labels", "device", "source", "layer"],
                                     kind="stable").index].reset_index(drop=True))


def theory_table(theory: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (src, param, value), g in theory.groupby(["source", "parameter", "value"], sort=False):
        n = len(g)
        out.append({"sweep": Path(src).name, "other settings": g.extra.iloc[0] or "defaults",
                    "parameter": param, "value": value, "seeds": n,
                    "decrease": f"{int(g.decrease_significant.sum())}/{n}",
                    "increase": f"{int(g.increase_significant.sum())}/{n}",
                    "decrease %": pct_sd(g.relative_decrease), "increase %": pct_sd(g.relative_increase),
                    "minimum at": ", ".join(str(int(m)) for m in g.min_iteration)})
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)"
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def page(sources: dict, rows: pd.DataFrame, theory: pd.DataFrame) -> str:
    settings = setting_table(rows)
    failed = rows[rows.status != "complete"]
    cmds = (rows.drop_duplicates("source")[["source", "command"]].sort_values("source"))
    tcmds = theory.drop_duplicates("source")[["source", "command"]] if len(theory) else pd.DataFrame()
    n_runs = len(rows.drop_duplicates(["source", "seed", "dataset", "model", "width", "iterations", "labels", "decoder"]))
    parts = [
        "# Results: every measured setting",
        "",
        "Generated by `python benchmarks/results_page.py` from the result files committed under docs/ "
        "(listed in docs/results/sources.toml); do not edit by hand. "
        f"{n_runs} runs of networks on data, {len(settings)} settings x layers; "
        f"{len(theory)} runs of the single-layer theory.",
        "",
        "Per setting and tracked layer: the seeds; in how many seeds all three phases were found (a significant "
        "decrease to the minimum and a significant increase after it: paired-bootstrap 95% intervals, "
        "Bonferroni-adjusted, and a relative change above 2%); the relative decrease (R_0 - R_min)/R_0 and "
        "increase (R_max after min - R_min)/R_min of the test reconstruction loss in % (mean ± sd over seeds; "
        "for a single seed its 95% interval); the checkpoint of the minimum per seed; the final test accuracy "
        "(on the clean test labels); R_min the test reconstruction MSE at the minimum (mean; per input "
        "coordinate of the normalised input, so comparable within a dataset only). `labels` is the `--atypical` option (none = the data's own labels). "
        "GPU rows ran on one H200, CPU rows on a shared 2-core machine.",
        "",
        "## Networks on data",
        "",
        markdown(settings.drop(columns=["source"]).assign(source=settings.source)),
        "",
        "## Runs that failed",
        "",
        markdown(failed[["source", "seed", "layer", "status"]]) if len(failed) else
        "None of the runs in these files failed or diverged; settings where a phase was not found are marked "
        "in the table's last columns.",
        "",
    ]
    if len(theory):
        parts += ["## The single-layer theory (`phasescope theory`, docs/theory.md)", "",
                  "Decrease and increase of the test reconstruction loss from the logits (exact least squares), "
                  "mean ± sd over seeds; `decrease`/`increase`: seeds where the phase is significant.", "",
                  markdown(theory_table(theory)), ""]
    parts += ["## Not measured", "",
              markdown(pd.DataFrame(sources.get("not_measured", []))), "",
              "## Sources and the commands that made them", "",
              markdown(pd.concat([cmds, tcmds]) if len(tcmds) else cmds), ""]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=Path, default=ROOT / "docs" / "results" / "sources.toml")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--check", action="store_true", help="Compare with --out instead of writing it.")
    args = ap.parse_args()
    sources = tomllib.loads(args.sources.read_text())
    rows, theory = collect(sources)
    text = page(sources, rows, theory)
    if args.check:
        same = args.out.exists() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'out of date: run benchmarks/results_page.py'}")
        sys.exit(0 if same else 1)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(rows)} run x layer rows, {len(theory)} theory runs)")


if __name__ == "__main__":
    main()
