"""``TransferProbes``: a tracker extension that probes frozen features for transfer tasks.

At every checkpoint, for every task and tracked layer, a fresh linear probe (the engine
of the tracker's label probes, :class:`~phasescope.engine.measure.probe.LinearProbe`) is fitted on
the frozen layer's features of the task's training inputs and scored on its training and
test inputs. Rows go to the tidy metrics as ``transfer_accuracy`` / ``transfer_loss`` with
a ``task`` column and bootstrap intervals; per-sample test correctness is kept for paired
intervals of the gaps in the ``transfer`` section of phases.json.

    tracker = PhaseTracker(model, layers, fit, test, extensions=[TransferProbes(tasks)])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ...config import ConfigError
from ...extension import Extension, Requires, RunSetup
from ...engine.measure.probe import LinearProbe
from ...engine.measure.ridge import DEFAULT_RIDGE
from ...engine.stats import Bootstrap
from .options import TransferOptions, validate_options
from .recommend import transfer_section, transfer_summary_rows
from .tasks import TransferError, TransferTask, build_tasks, parse_specs
from ...outputs.figures import TASK_COLOURS
from ...outputs.runs import by_iteration, read_json, write_npz


def _majority(y: torch.Tensor | None) -> dict:
    """The accuracy of always guessing the most frequent test class."""
    if y is None or not len(y):
        return {}
    return {"majority_test_accuracy": float(torch.bincount(torch.as_tensor(y).long()).max()) / len(y)}


class TransferProbes(Extension):
    name = "transfer"
    options = TransferOptions
    report_template = "extensions/transfer.html.j2"
    report_title, report_anchor, report_order = "Transfer", "transfer", 40

    @classmethod
    def check_config(cls, cfg) -> None:
        validate_options(cfg.transfer)
        if cls.name in (getattr(cfg, "extensions", None) or ()) and not cfg.transfer.tasks:
            raise ConfigError("the transfer extension needs tasks: --transfer colour (or --extension "
                              "transfer:tasks=colour+class-split); tasks: colour, class-split, switch:DATASET, npz:PATH.")

    @classmethod
    def from_config(cls, setup: RunSetup) -> list["TransferProbes"]:
        """The transfer probes of ``cfg.transfer.tasks``; a class-split task replaces ``setup.data``
        by the pre-training half of the classes."""
        cfg = setup.cfg
        validate_options(cfg.transfer)
        specs = parse_specs(cfg.transfer.tasks)
        if not specs:
            return []
        setup.data, tasks = build_tasks(specs, setup.data, fit_samples=cfg.fit_samples, test_samples=cfg.test_samples,
                                        seed=cfg.seed, download=cfg.download)
        return [cls(tasks, probe=cfg.probe, ridge=cfg.relative_ridge, bootstrap=cfg.bootstrap,
                    confidence=cfg.confidence, seed=cfg.seed)]

    @classmethod
    def draw_curves(cls, ax, df: pd.DataFrame, layer: str) -> None:
        """Test transfer accuracy of every task on the accuracy axis of ``layer``'s panel of curves.png."""
        s = df[(df.layer == layer) & (df.split == "test") & (df.metric == "transfer_accuracy")]
        for i, (task, g) in enumerate(s.groupby("task", sort=False) if "task" in s.columns else []):
            g = g.sort_values("iteration")
            ax.plot(g.iteration, g.value, "^v<>Dp"[i % 6] + "-", color=TASK_COLOURS[i % len(TASK_COLOURS)],
                    ms=2.5, label=f"transfer {task} (test)")

    @classmethod
    def report_context(cls, payload: dict) -> dict:
        """The transfer table, and where the kept weights are (the keeper serves transfer)."""
        section = payload.get("transfer")
        best = payload.get("best_features") if isinstance(payload.get("best_features"), dict) else None
        if not section and not best:
            return {"transfer": None}

        rows = transfer_summary_rows(section) if isinstance(section, dict) else []
        return {"transfer": {"rows": rows, "note": section.get("note") if isinstance(section, dict) else None,
                             "best": best}}
    FILE = "transfer.npz"  # per-sample test correctness, for rebuilding the gaps' paired intervals
    files = (FILE,)

    def __init__(self, tasks: Sequence[TransferTask], *, probe: str = "ridge", ridge: float = DEFAULT_RIDGE,
                 bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0):
        self.tasks = list(tasks)
        self.requires = Requires(fit_features=any(t.uses_tracker_inputs for t in self.tasks))
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise TransferError(f"Transfer task names must be unique; got {names}.")
        self.probe, self.ridge, self.seed = probe, ridge, seed
        self.bootstrap, self.confidence = bootstrap, confidence
        # task -> layer -> iteration -> per-sample test correctness (uint8, n_test)
        self.correct: dict[str, dict[str, dict[int, np.ndarray]]] = {n: {} for n in names}
        self._labels: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._boot = Bootstrap(bootstrap, confidence, seed)

    def restart(self) -> None:
        """Forget the checkpoints measured; keep the tasks' labels of the tracker's inputs and the
        bootstrap weights (see PhaseTracker.restart)."""
        self.correct = {n: {} for n in self.correct}

    def describe(self) -> dict:
        return {"probe": self.probe, "ridge": self.ridge, "tasks": {t.name: t.describe() for t in self.tasks}}

    # ------------------------------------------------------------------ measurement
    def _row(self, it: int, layer: str, split: str, metric: str, values: np.ndarray, task: str) -> dict:
        v, lo, hi = self._boot.estimate(values)
        return {"iteration": it, "layer": layer, "split": split, "metric": metric, "value": v,
                "ci_low": lo, "ci_high": hi, "task": task}

    def _data(self, task: TransferTask, ctx) -> tuple[dict, torch.Tensor, dict, torch.Tensor]:
        """Features (per layer) and labels of the task's train and test inputs at this checkpoint."""
        if task.uses_tracker_inputs:
            if task.name not in self._labels:
                self._labels[task.name] = (task.label_fn(ctx.fit_x), task.label_fn(ctx.test_x))
            y_fit, y_test = self._labels[task.name]
            H_fit = ctx.fit_features if ctx.fit_features is not None else ctx.features(ctx.fit_x)[1]
            H_test = ctx.test_features or ctx.features(ctx.test_x)[1]
            return H_fit, y_fit, H_test, y_test
        (x_fit, y_fit), (x_test, y_test) = task.train, task.test
        return ctx.features(x_fit)[1], y_fit, ctx.features(x_test)[1], y_test

    def measure(self, ctx) -> list[dict]:
        rows: list[dict] = []
        it = ctx.iteration
        for task in self.tasks:
            H_fit, y_fit, H_test, y_test = self._data(task, ctx)
            for layer in ctx.layers:
                probe = LinearProbe(self.probe, ridge=self.ridge, num_classes=task.num_classes, seed=self.seed,
                                    device=ctx.device).fit(H_fit[layer], y_fit)
                for split, H, y in (("train", H_fit[layer], y_fit), ("test", H_test[layer], y_test)):
                    correct, loss = probe.per_sample(H, y)
                    rows.append(self._row(it, layer, split, "transfer_accuracy", correct, task.name))
                    rows.append(self._row(it, layer, split, "transfer_loss", loss, task.name))
                    if split == "test":
                        self.correct[task.name].setdefault(layer, {})[it] = correct.astype(np.uint8)
        return rows

    # ------------------------------------------------------------------ summary and resume
    def _test_labels(self, task: TransferTask) -> torch.Tensor | None:
        return task.test[1] if task.test is not None else self._labels.get(task.name, (None, None))[1]

    def summarise(self, df: pd.DataFrame, payload: dict) -> dict:
        minimum = {n: p["min_iteration"] for n, p in payload.get("layers", {}).items()}
        info = {}
        for t in self.tasks:
            info[t.name] = {**t.describe(), **_majority(self._test_labels(t))}
        section = transfer_section(df, minimum, self.correct, info,
                                   confidence=self.confidence, n_boot=self.bootstrap, seed=self.seed)
        section["probe"] = self.probe
        return {"transfer": section}

    def write(self, out: Path, df: pd.DataFrame, payload: dict, *, figure: bool = False) -> list[Path]:
        arrays = {}
        for task, per in self.correct.items():
            for layer, its in per.items():
                arrays.update(by_iteration(its, f"{task}::{layer}", "correct", np.uint8))
        for t in self.tasks:
            y = self._test_labels(t)
            if y is not None:
                arrays[f"{t.name}::::test_labels"] = np.asarray(y)
        if not arrays:
            return []
        write_npz(Path(out) / self.FILE, arrays)
        return [Path(out) / self.FILE]

    @classmethod
    def summary_lines(cls, payload: dict) -> list[Any]:
        from rich.table import Table  # lazy: rich only for the summary printed by the command line

        rows = transfer_summary_rows(payload.get("transfer") or {})
        if not rows:
            return []
        table = Table(title="transfer accuracy (test) [95% CI] @ iteration", title_justify="left")
        for col in ("task", "layer", "untrained", "at reconstruction minimum", "at transfer peak", "at end",
                    "minimum - end (points)", "peak - minimum (points)"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["task"], r["layer"], r["at_start"], r["at_minimum"], r["at_peak"], r["at_end"],
                          r["min_minus_end"], r["peak_minus_min"])
        return [table, *(f"  {r['task']} / {r['layer']} (majority class: {r['majority']}): {r['advice']}" for r in rows)]

    @classmethod
    def rebuild(cls, run_dir: Path, df: pd.DataFrame, payload: dict) -> dict:
        """The ``transfer`` section from metrics.csv and transfer.npz (task descriptions from phases.json)."""
        if "transfer_accuracy" not in set(df.metric):
            return {}

        conf = read_json(Path(run_dir) / "config.json") if (Path(run_dir) / "config.json").exists() else {}
        cfg = conf.get("config", {})
        described = ((conf.get("measurement") or {}).get("extensions") or {}).get(cls.name) or {}
        info = {t: dict(v) for t, v in (described.get("tasks") or {}).items()}
        correct: dict = {}
        path = Path(run_dir) / cls.FILE
        if path.exists():
            with np.load(path) as z:
                for key in z.files:
                    task, layer, kind = key.split("::")
                    if kind == "iterations":
                        its, c = z[key].tolist(), z[f"{task}::{layer}::correct"]
                        correct.setdefault(task, {})[layer] = {int(i): c[k] for k, i in enumerate(its)}
                    elif kind == "test_labels":
                        info.setdefault(task, {}).update(_majority(torch.as_tensor(z[key])))
        minimum = {n: p["min_iteration"] for n, p in payload.get("layers", {}).items()}
        section = transfer_section(df, minimum, correct, info, confidence=cfg.get("confidence", 0.95),
                                   n_boot=cfg.get("bootstrap", 1000), seed=cfg.get("seed", 0))
        section["probe"] = described.get("probe")
        return {"transfer": section}

    def state_dict(self) -> dict:
        return {"correct": {t: {l: dict(v) for l, v in per.items()} for t, per in self.correct.items()}}

    def load_state_dict(self, state: dict) -> None:
        for t, per in state.get("correct", {}).items():
            self.correct[t] = {l: {int(k): np.asarray(v) for k, v in its.items()} for l, its in per.items()}
