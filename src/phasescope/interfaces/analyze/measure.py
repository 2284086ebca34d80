"""Measuring one checkpoint (the unit of work of a worker) and putting the checkpoints together.

:func:`measure_checkpoint` is what a Ray task (or the local loop) runs: load the data (cached
per process), build the model with the checkpoint's weights, build a fresh tracker exactly as
``phasescope run`` does (same data, same measurement subsets, same extensions, same seeds),
measure at the checkpoint's step and return the tracker's state: the tidy rows, the per-sample
test errors and the extensions' per-checkpoint records. The decoder and probe are fitted
inside and never leave the worker.

Every measurement is a function of the weights alone (the tracker works on a frozen,
BatchNorm-recalibrated copy, seeds its bootstrap by the run's seed and forks the RNG), so
measuring checkpoints one by one in any order, on any worker, gives what the live tracker
recorded; :func:`merge_states` concatenates the per-checkpoint states in step order into
the state the live tracker would have after all of them.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import torch

from .load import CheckpointError, Source, build_model_for

# extensions whose state follows the convention merge_states relies on (see there)
MERGEABLE = ("samples", "reconstructions", "infoplane", "ridge_sweep", "transfer")
_DATA_CACHE: dict[str, Any] = {}  # one dataset per worker process (the last one asked for)
DATA_KEYS = ("dataset", "data_dir", "train_size", "seed", "download", "num_classes", "context", "synthetic",
             "atypical")


def load_data(cfg):
    """The data exactly as ``phasescope run`` prepares it (atypical samples included), cached per process."""
    from ...data import load_dataset
    from ...data.atypical import apply_atypical
    from ...run.experiment import _synthetic_knobs

    key = json.dumps({k: getattr(cfg, k) for k in DATA_KEYS}, sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, train_size=cfg.train_size, seed=cfg.seed,
                            download=cfg.download, num_classes=cfg.num_classes, context=cfg.context,
                            **_synthetic_knobs(cfg))
        _DATA_CACHE[key] = apply_atypical(data, cfg.atypical, cfg.seed)
    return _DATA_CACHE[key]


def forget_data() -> None:
    _DATA_CACHE.clear()


def prepare(cfg):
    """(cfg with the sizes the data allow, data to measure on, fresh extensions, what was adjusted):
    the steps of ``experiment._run`` before the model is built, in the same order."""
    from ...run.experiment import clamp_to_data
    from ...registry import run_extensions

    data = load_data(cfg)
    changes: dict = {}
    extensions: list = []
    for stage in ("data", "pre-training data"):  # a class-split transfer task splits the data
        cfg, more = clamp_to_data(cfg, data)
        changes.update(more)
        if stage == "data":
            data, extensions = run_extensions(cfg, data, [])
    unknown = [e.name for e in extensions if e.name not in MERGEABLE]
    if unknown:
        raise ValueError(f"phasescope analyze cannot measure {', '.join(unknown)} from saved checkpoints: "
                         "it acts during training (keep_best, stop_on_increase). Drop those options.")
    return cfg, data, extensions, changes


def model_forward(source: Source, data) -> Any:
    """How the tracker calls the checkpoints' model: as ``phasescope run`` does (None), or, for a
    Hugging Face causal LM on text (``--hf`` with a text dataset), ``model(input_ids=x).logits[:, -1]``."""
    from ...data.text import is_text
    from ...engine.layers import causal_lm_forward

    return causal_lm_forward if source.kind == "hf" and is_text(data) else None


def make_tracker(cfg, model, data, extensions, steps, source: Source | None = None):
    """The tracker of ``phasescope run`` (experiment.build_tracker), scheduled at the checkpoints' ``steps``."""
    from ...run.experiment import build_tracker
    from ...run.training import resolve_device

    device = resolve_device(cfg.device)
    tracker = build_tracker(cfg, model.to(device), data, device, extensions,
                            forward=model_forward(source or Source(), data))
    tracker.schedule = sorted(set(int(s) for s in steps))
    return tracker


def measure_checkpoint(job: dict) -> dict:
    """Measure one checkpoint. ``job``: config (RunConfig dict), source (:class:`Source` dict),
    checkpoint (discovery dict: step, path, format, name, weights), threads. Returns
    {step, name, status (measured | failed), message, state, seconds, pid, node}; an error is
    an outcome, never an exception (a dead worker is Ray's to retry)."""
    import warnings

    from ...config import RunConfig

    t0 = time.perf_counter()
    ckpt = job["checkpoint"]
    out = {"step": ckpt["step"], "name": ckpt["name"], "status": "failed", "message": "", "state": None,
           "pid": os.getpid(), "host": socket.gethostname(), "node": _node_id()}
    if job.get("threads"):
        torch.set_num_threads(max(1, int(job["threads"])))
    try:
        with warnings.catch_warnings():  # the driver has said what there is to say (feature counts, ...)
            warnings.simplefilter("ignore")
            cfg, data, extensions, _ = prepare(RunConfig.from_dict(job["config"]))
            model = build_model_for(Source.from_dict(job["source"]), cfg, data, ckpt)
            t1 = time.perf_counter()
            tracker = make_tracker(cfg, model, data, extensions, [ckpt["step"]], Source.from_dict(job["source"]))
            tracker.measure(model, int(ckpt["step"]))
        del model
        out.update(status="measured", state=tracker.state_dict(),
                   seconds={"load": t1 - t0, "measure": time.perf_counter() - t1})
    except CheckpointError as e:
        out["message"] = str(e)
    except Exception as e:  # noqa: BLE001 - one checkpoint's failure is recorded; the others go on
        out["message"] = f"{type(e).__name__}: {e}"
    out.setdefault("seconds", {"load": time.perf_counter() - t0, "measure": 0.0})
    return out


def _node_id() -> str | None:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not in a Ray worker
        pass
    return None


# ---------------------------------------------------------------------- putting checkpoints together
def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        if all(isinstance(k, int) for k in (*a, *b)):  # keyed by iteration: the union
            return {**a, **b}
        return {k: (_merge(a[k], b[k]) if k in a and k in b else (b[k] if k in b else a[k])) for k in {**a, **b}}
    if isinstance(a, list) and isinstance(b, list):  # per-checkpoint records in checkpoint order
        return a + b
    return b  # settings and "the latest checkpoint's" values (e.g. typicality at the end)


def merge_states(states: dict[int, dict]) -> dict:
    """The tracker state after all checkpoints of ``states`` ({step: state of that checkpoint
    alone}), as the live tracker would hold it after measuring them in step order.

    The convention every extension in :data:`MERGEABLE` follows: what accumulates per
    checkpoint is a list in checkpoint order or a dict keyed by the (int) iteration, at any
    depth below string keys; anything else is a setting or "the latest checkpoint's" value."""
    merged: dict | None = None
    for step in sorted(states):
        merged = states[step] if merged is None else _merge(merged, states[step])
    if merged is None:
        return {"rows": [], "errors": {}, "timings": {}, "decisions": {}, "extensions": {}}
    last = states[max(states)].get("settings")
    if last is not None:  # the settings of a tracker that measured exactly these checkpoints
        merged["settings"] = {**last, "schedule": sorted(int(s) for s in states)}
    return merged
