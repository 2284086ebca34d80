"""Drawing a figure leaves no global matplotlib state behind: the backend a user (or a
notebook) chose stays, and no pyplot figure is left open."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from phasescope.outputs.compare import LoadedRun, plot_compare, plot_seeds
from phasescope.outputs.figures import plot_curves
from phasescope.samples.report import plot_few, plot_samples
from phasescope.theory.figures import plot_sweep, plot_theory_curves

ITS = [0, 1, 2, 4, 8, 16]
CURVE = [0.30, 0.30, 0.25, 0.20, 0.22, 0.26]


def _rows(layer, split, metric, values, **extra):
    return [{"iteration": i, "layer": layer, "split": split, "metric": metric, "value": v,
             "ci_low": v - 0.01, "ci_high": v + 0.01, **extra} for i, v in zip(ITS, values)]


def _metrics(scale: float = 1.0) -> pd.DataFrame:
    rows = []
    for layer in ("features.3", "logits"):
        for split in ("test", "train"):
            rows += _rows(layer, split, "reconstruction_mse", [scale * v for v in CURVE])
        rows += _rows(layer, "test", "probe_accuracy", np.linspace(0.2, 0.9, len(ITS)))
    for split in ("train", "test"):
        rows += _rows("model", split, "accuracy", np.linspace(0.1, 1.0, len(ITS)))
        for g in ("typical", "atypical"):
            rows += _rows("model", split, f"loss_{g}", np.geomspace(2.0, 0.01, len(ITS)))
    for metric in ("grad_share_top10", "grad_share_top1", "grad_effective_fraction", "misclassified_fraction",
                   "gradient_share_atypical", "gradient_share_atypical_per_sample"):
        rows += _rows("model", "train", metric, np.linspace(0.1, 0.7, len(ITS)))
    rows += _rows("features.3", "test", "transfer_accuracy", np.linspace(0.3, 0.6, len(ITS)), task="colour")
    return pd.DataFrame(rows)


PHASES = {"phases": [{"name": "constant", "start": 0, "end": 1}, {"name": "decrease", "start": 1, "end": 4},
                     {"name": "increase", "start": 4, "end": 16}], "min_iteration": 4}


def _draw_everything(tmp: Path) -> list[Path]:
    df = _metrics()
    out = [plot_curves(df, {"features.3": PHASES, "logits": PHASES}, tmp / "curves.png", title="t")]
    runs = [LoadedRun(tmp / f"seed-{s}", {"seed": s}, _metrics(1 + 0.1 * s), {"layers": {"features.3": PHASES}})
            for s in (0, 1)]
    out.append(plot_compare(runs, tmp / "compare.png"))
    out.append(plot_seeds(runs, tmp / "seeds.png"))
    payload = {"layers": {"features.3": PHASES}, "samples": {"top10_half_iteration": 4}}
    out.append(plot_samples(df, payload, tmp / "samples.png"))
    table = pd.DataFrame({"index": np.arange(8), "label": np.arange(8) % 2,
                          "learned_at": [1, 2, None, 4, 8, 16, 2, None], "mean_loss": np.linspace(1, 0, 8)})
    images = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    out.append(plot_few(table, images, [0.5, 0.5, 0.5], [0.2, 0.2, 0.2], tmp / "few.png", per_class=2))
    out.append(plot_theory_curves(df, {"logits": PHASES}, tmp / "theory.png", atypical_fraction=0.1))
    sweep = pd.DataFrame([{"value": v, "seed": s, "relative_decrease": 0.2, "relative_decrease_ci_low": 0.1,
                           "relative_decrease_ci_high": 0.3, "relative_increase": 0.1 * v,
                           "relative_increase_ci_low": 0.05 * v, "relative_increase_ci_high": 0.15 * v,
                           "increase_significant": v > 0.1, "min_iteration": 4, "share_crossing_iteration": 8}
                          for v in (0.0, 0.1, 0.2) for s in (0, 1)])
    out.append(plot_sweep(sweep, "atypical_fraction", tmp / "sweep.png"))
    return out


@pytest.fixture
def other_backend():
    """A backend other than Agg (the one the drawing code used to force), restored afterwards."""
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.switch_backend("svg")
    yield "svg"
    plt.switch_backend(before)


def test_drawing_keeps_the_backend_and_leaves_no_pyplot_figure(tmp_path, other_backend):
    import matplotlib.pyplot as plt

    assert matplotlib.get_backend().lower() == other_backend
    paths = _draw_everything(tmp_path)
    assert matplotlib.get_backend().lower() == other_backend
    assert plt.get_fignums() == []
    for p in paths:  # real PNG files, of a plausible size
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, p


def test_report_does_not_import_pyplot():
    import ast

    import phasescope

    root = Path(phasescope.__file__).parent
    for rel in ("outputs/figures.py", "outputs/compare.py", "extensions/samples/report.py", "extensions/reconstructions.py",
                "extensions/infoplane.py", "extensions/ridge_sweep.py", "extensions/cka.py", "theory/figures.py"):
        tree = ast.parse((root / rel).read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module else []
            assert not any("pyplot" in n for n in names), rel
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "use" or getattr(node.func.value, "id", "") != "matplotlib", rel
