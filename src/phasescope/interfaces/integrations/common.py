"""What every integration shares: the run folder, scalars for loggers, checkpointable state.

A callback's run folder is written by the writer of ``phasescope run``,
:class:`phasescope.run.runfolder.RunWriter`: :func:`open_run` claims it (locked while the Trainer
trains; a folder holding another run is refused unless ``overwrite=True``; the callback's own
run continues when the Trainer resumes from its checkpoint), :func:`start_run` writes
config.json (the schema of ``phasescope run``, with an ``integration`` entry), then the
callback calls the writer's ``checkpoint`` after every measurement and ``finish`` and
``close`` at the end: ``metrics.csv`` and ``errors.npz`` after every checkpoint,
``phases.json``, ``curves.png`` and ``report.html`` at the end; ``phasescope report`` and
``phasescope compare`` read it.

:func:`portable` turns a tracker's ``state_dict()`` into plain containers, numbers, strings and
tensors, so that frameworks that load checkpoints with ``torch.load(weights_only=True)``
(Lightning under torch >= 2.6) can restore it; :func:`restore` inverts it.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...extension import Decision
from ...run.runfolder import RunWriter, config_document
from ...outputs.runs import Wording
from ...engine.tracker import METRIC_COLUMNS, PhaseTracker

# what a refusal tells the user to do, in each Trainer's terms
WORDING = {
    "lightning": Wording(out="out folder", overwrite="overwrite=True",
                         resume="ckpt_path=<a Trainer checkpoint of that run> to trainer.fit()"),
    "transformers": Wording(out="out folder", overwrite="overwrite=True",
                            resume="resume_from_checkpoint=<a Trainer checkpoint of that run> to trainer.train()"),
}


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


def open_run(out: str | Path, source: str, *, resume: bool, overwrite: bool) -> RunWriter:
    """Claim ``out`` for the ``source`` callback before training starts (see
    :meth:`phasescope.outputs.runs.RunFolder.claim`).

    ``resume``: the Trainer resumes from a checkpoint, so the callback's own run there (or an
    empty folder) continues. Otherwise a folder holding a run (``phasescope run``'s, another
    callback's, a finished one) is refused with a :class:`~phasescope.outputs.runs.RunFolderError` that
    names the folder, unless ``overwrite`` (only phasescope's files are deleted, and none when
    the folder holds others). A folder another process is writing is always refused."""
    wording = WORDING.get(source, Wording(out="out folder", overwrite="overwrite=True", resume=None))
    return RunWriter.claim(out, source, resume=resume, overwrite=overwrite, writer=source, wording=wording)


def run_config(tracker: PhaseTracker, model: nn.Module, source: str, **about: Any) -> dict:
    """config.json of a callback's run: the schema of ``phasescope run`` (``config`` with the keys
    ``report`` and ``compare`` read, ``data``, ``measurement``, ``model``, ``versions``) and
    ``integration``: the source and what the framework told (``about``, e.g. ``max_steps``)."""
    name = type(model).__name__
    dataset = about.pop("dataset", source)
    config = {"model": name, "dataset": dataset, "seed": tracker.seed, "layers": tracker.layers,
              "bootstrap": tracker.bootstrap, "confidence": tracker.confidence, "min_effect": tracker.min_effect,
              "iterations": max(tracker.schedule) if tracker.schedule else 0}
    data = {"name": dataset, "fit_samples": int(len(tracker.fit_x)), "test_samples": int(len(tracker.test_x)),
            "input_shape": list(tracker.fit_x.shape[1:]), "num_classes": tracker.num_classes}
    return config_document(config, data=data, measurement=tracker.describe(),
                           model={"name": name, "parameters": sum(p.numel() for p in model.parameters()),
                                  "device": str(tracker.device)},
                           integration={"source": source, **about})


def start_run(run: RunWriter, tracker: PhaseTracker, model: nn.Module, source: str, **about: Any) -> None:
    """Write config.json; a resumed tracker's measurements are written at once (the files hold
    what the Trainer's checkpoint held)."""
    run.start(run_config(tracker, model, source, **about), title=f"{type(model).__name__} ({source})")
    if tracker.measured:
        run.checkpoint(tracker)


def __getattr__(name: str) -> Any:
    if name == "RunFolder":  # the callbacks' own writer of earlier versions: now the one writer of every run
        warnings.warn("phasescope.interfaces.integrations.RunFolder is deprecated: use phasescope.run.runfolder.RunWriter "
                      "(claim, start, checkpoint, finish, close) or phasescope.interfaces.integrations.common.open_run.",
                      DeprecationWarning, stacklevel=2)
        return RunWriter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
