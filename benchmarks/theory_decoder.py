"""Does the theory's prediction depend on its decoder? The sweep of docs/theory.md
(atypical_fraction 0, 0.05, 0.1, 0.2, 0.3 x seeds 0, 1, 2, defaults otherwise) measured with
the shared ridge solver at relative ridge 0 (exact least squares; the theory's decoder) and
at ``auto`` (GCV, as ``phasescope run --ridge auto``), next to the numbers the SVD decoder
gave before the theory used the shared solver (docs/figures/theory/sweep-atypical_fraction.csv).

    python benchmarks/theory_decoder.py --out runs/theory-decoder

Writes OUT/ridge-0/ and OUT/ridge-auto/ (sweep folders) and OUT/comparison.csv, and prints
the table (relative increase and decrease of the logits' test reconstruction loss, mean ±
sd over seeds, significant increases; the softmax layer's increase).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from phasescope.theory import DataModel, Training
from phasescope.theory.sweep import run_sweep

HERE = Path(__file__).resolve().parents[1]
OLD = HERE / "docs" / "figures" / "theory" / "sweep-atypical_fraction.csv"
VALUES = [0, 0.05, 0.1, 0.2, 0.3]


def per_value(table: pd.DataFrame, label: str) -> pd.DataFrame:
    g = table.groupby("value", sort=True)
    pct = lambda c: g[c].agg(lambda v: f"{100 * v.mean():.1f} ± {100 * v.std(ddof=1):.1f}")
    return pd.DataFrame({"decoder": label, "decrease %": pct("relative_decrease"),
                         "increase %": pct("relative_increase"),
                         "significant increases": g["increase_significant"].agg(lambda v: f"{int(v.sum())}/{len(v)}"),
                         "min at": g["min_iteration"].agg(lambda v: ", ".join(str(int(x)) for x in v)),
                         "softmax increase %": pct("softmax_relative_increase")}).reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = []
    if OLD.exists():
        old = pd.read_csv(OLD)
        parts.append(per_value(old[old.seed.isin(seeds)], "SVD (before)"))
    for ridge in (0.0, "auto"):
        res = run_sweep(DataModel(), Training(decoder_ridge=ridge), "atypical_fraction", VALUES, seeds,
                        args.out / f"ridge-{ridge if ridge == 'auto' else 0}", overwrite=True, figure=False)
        parts.append(per_value(res.table, f"shared ridge {ridge}"))
    table = pd.concat(parts, ignore_index=True).rename(columns={"value": "f"}).sort_values(["f", "decoder"], kind="stable")
    table.to_csv(args.out / "comparison.csv", index=False)
    print(markdown(table))


def markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (without the optional tabulate package)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
