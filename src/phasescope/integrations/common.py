"""What every integration shares: the run folder, scalars for loggers, checkpointable state.

:class:`RunFolder` writes a tracker's files with the library's own writers
(:func:`phasescope.experiment.write_outputs`, :func:`phasescope.runs.write_json`), so a
callback's folder is a run folder like ``phasescope run``'s: ``config.json``,
``metrics.csv``, ``errors.npz``, ``phases.json`` after every checkpoint, ``curves.png`` at the
end; ``phasescope report`` and ``phasescope compare`` read it.

:func:`portable` turns a tracker's ``state_dict()`` into plain containers, numbers, strings and
tensors, so that frameworks that load checkpoints with ``torch.load(weights_only=True)``
(Lightning under torch >= 2.6) can restore it; :func:`restore` inverts it.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..extension import Decision
from ..tracker import METRIC_COLUMNS, PhaseTracker


def checkpoint_scalars(rows: list[dict], prefix: str = "phasescope") -> dict[str, float]:
    """``{prefix/layer/split/metric[/key=value...]: value}`` for the finite values of one checkpoint's
    rows (extra keys of extension rows, such as a transfer ``task``, end the name)."""
    out: dict[str, float] = {}
    for r in rows:
        v = r.get("value")
        if v is None or not math.isfinite(float(v)):
            continue
        extra = [f"{k}={r[k]}" for k in r if k not in METRIC_COLUMNS and r[k] is not None
                 and not (isinstance(r[k], float) and math.isnan(r[k]))]
        out["/".join([prefix, str(r["layer"]), str(r["split"]), str(r["metric"]), *extra])] = float(v)
    return out


def portable(obj: Any) -> Any:
    """``obj`` with numpy arrays/scalars and Decisions replaced by tensors, numbers and tagged dicts."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Decision):
        return {"__decision__": dataclasses.asdict(obj)}
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable(v) for v in obj)
    return obj


def restore(obj: Any) -> Any:
    """The inverse of :func:`portable`."""
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        if set(obj) == {"__decision__"}:
            return Decision(**obj["__decision__"])
        return {k: restore(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(restore(v) for v in obj)
    return obj


class RunFolder:
    """A run folder fed by a callback: ``start`` once, ``checkpoint`` after each measurement,
    ``finish`` at the end (draws ``curves.png``, records the status)."""

    def __init__(self, out: str | Path, *, source: str, title: str | None = None):
        self.out = Path(out)
        self.source, self.title = source, title
        self.t0 = time.perf_counter()  # reset by start(): seconds count from the start of training

    def start(self, tracker: PhaseTracker, model: nn.Module, **about: Any) -> None:
        from ..experiment import versions
        from ..runs import write_json

        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        name = type(model).__name__
        self.title = self.title or f"{name} ({self.source})"
        # The keys `phasescope report` and `phasescope compare` read, then what the callback knows.
        config = {"model": name, "dataset": about.pop("dataset", self.source), "seed": tracker.seed,
                  "layers": tracker.layers, "bootstrap": tracker.bootstrap, "confidence": tracker.confidence,
                  "min_effect": tracker.min_effect, "iterations": max(tracker.schedule) if tracker.schedule else 0}
        write_json(self.out / "config.json", {
            "config": config, "measurement": tracker.describe(),
            "model": {"name": name, "parameters": sum(p.numel() for p in model.parameters()),
                      "device": str(tracker.device)},
            "integration": {"source": self.source, **about}, "versions": versions(),
        })

    def checkpoint(self, tracker: PhaseTracker) -> None:
        from ..experiment import write_checkpoint

        write_checkpoint(self.out, tracker)

    def finish(self, tracker: PhaseTracker, status: str = "complete") -> dict:
        from ..experiment import write_outputs
        from ..runs import write_json

        _, _, payload = write_outputs(self.out, tracker, figure=True, title=self.title)
        payload["status"] = status
        payload["seconds"] = {"total": time.perf_counter() - self.t0,
                              "measurement": float(sum(tracker.timings.values()))}
        write_json(self.out / "phases.json", payload)
        return payload
